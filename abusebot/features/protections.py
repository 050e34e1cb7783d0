"""The protections (spam, flood, join waves…) and the escalation ladder, as a feature, with its
``!mod protections`` command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import yaml

from abusebot.actions import Actor
from abusebot.audit import Message, bullet_list
from abusebot.commands import Authorized, CommandHandler, Parsed, Spec, UsageError, text_message
from abusebot.config import ConfigError
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

    def commands(self) -> Sequence[Spec]:
        """``!mod protections``."""
        return [
            Spec(
                "protections",
                "protections [enable <name> | disable <name> | mode <name> act|observe | set <name> <key> <value>]",
                "List the protections, or change one (persisted).",
                parse_protections,
                self.command,
                room_admins=False,
                scoped=False,
            )
        ]

    async def command(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        """``!mod protections``: list, or change one protection (validated, persisted)."""
        pipeline = self.pipeline
        if not parsed.words:
            return bullet_list("Protections:", pipeline.describe())
        verb, name, *rest = parsed.words
        if name not in pipeline.setups:
            raise UsageError("protections", f"unknown protection {name!r}; known: {', '.join(sorted(pipeline.setups))}")
        try:
            if verb in ("enable", "disable"):
                await pipeline.set_enabled(name, verb == "enable")
            elif verb == "mode":
                await pipeline.set_mode(name, rest[0].lower())
            else:
                key, raw = rest
                try:
                    value = yaml.safe_load(raw)
                except yaml.YAMLError as err:
                    raise UsageError("protections", f"cannot read the value {raw!r}") from err
                await pipeline.set_value(name, key, value)
        except ConfigError as err:
            raise UsageError("protections", str(err)) from err
        await handler.moderation.ledger.audit(
            actor=actor.name,
            action="protections_" + verb,
            outcome="done",
            detail={"words": list(parsed.words)},
            event_id=actor.event_id,
        )
        line = next(line for line in pipeline.describe() if line.startswith(f"{name}:"))
        return text_message(f"✅ {line}")

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


def parse_protections(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    """``protections [enable|disable <name> | mode <name> act|observe | set <name> <key> <value>]``."""
    if not args:
        return Parsed("protections")
    verb = args[0].lower()
    shapes = {"enable": 2, "disable": 2, "mode": 3}
    if verb in shapes:
        if len(args) != shapes[verb]:
            raise UsageError("protections", f"'{verb}' takes {shapes[verb] - 1} argument(s)")
        if verb == "mode" and args[2].lower() not in ("act", "observe"):
            raise UsageError("protections", "the mode is act or observe")
        return Parsed("protections", words=(verb, *args[1:]))
    if verb == "set":
        if len(args) < 4:
            raise UsageError("protections", "set needs a protection, a key and a value")
        return Parsed("protections", words=("set", args[1], args[2], " ".join(args[3:])))
    raise UsageError("protections", f"unknown sub-command {args[0][:30]!r}")


@feature("protections")
def build(services: Any) -> Feature:
    """The protections, on the bot's pipeline; join-wave unlocks are scheduler jobs."""
    services.scheduler.register("unlock", services.pipeline.executor.unlock_job, "restoring a room's join rule")
    return ProtectionsFeature(services.pipeline)
