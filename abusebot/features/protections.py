"""The protections (spam, flood, join waves…) and the escalation ladder, as a feature."""

from __future__ import annotations

from typing import Any, ClassVar

from abusebot.events import Event
from abusebot.host import Feature, Role, feature
from abusebot.pipeline import Pipeline


class ProtectionsFeature(Feature):
    """Every event of a protected room through every enabled protection (:mod:`abusebot.pipeline`)."""

    name: ClassVar[str] = "protections"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.PROTECTED})

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def start(self) -> None:
        """Know which rooms a join-wave lock holds (their restores are jobs already)."""
        await self.pipeline.executor.resume_locks()

    async def handle(self, event: Event) -> None:
        """Run the protections on one event."""
        await self.pipeline.handle(event)

    def status(self) -> list[str]:
        """The enabled protections and their modes."""
        setups = self.pipeline.setups
        enabled = [f"{n} ({s.mode})" for n, s in sorted(setups.items()) if s.enabled]
        disabled = [n for n, s in sorted(setups.items()) if not s.enabled]
        return [
            "Protections: "
            + (", ".join(enabled) if enabled else "none enabled")
            + (f"; off: {', '.join(disabled)}" if disabled else "")
            + " (details: !mod protections)"
        ]


@feature("protections")
def build(services: Any) -> Feature:
    """The protections, on the bot's pipeline; join-wave unlocks are scheduler jobs."""
    services.scheduler.register("unlock", services.pipeline.executor.unlock_job, "restoring a room's join rule")
    return ProtectionsFeature(services.pipeline)
