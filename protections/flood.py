"""Flood: too many messages from one user, in one room or across the protected rooms."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from abusebot.events import Event
from protections import Context, Evidence, Intent, Protection, Violation
from protections._window import Windows, event_time

_positive = attrs.validators.ge(1)


@attrs.frozen
class FloodSettings:
    """Limits: ``max_messages`` per ``per_seconds`` in one room; ``cross_room_max_messages`` in all."""

    max_messages: int = attrs.field(default=10, validator=_positive)
    per_seconds: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    cross_room_max_messages: int = attrs.field(default=15, validator=_positive)


class Flood(Protection):
    """Redact a flood and escalate the sender; redactions, state and reactions do not count."""

    name = "flood"
    description = "more than max_messages messages in per_seconds (in one room, or across rooms)"
    Settings = FloodSettings
    # Messages and stickers only: counting redactions punished users whose clients auto-delete
    # (Draupnir#187), and counting state or reactions punishes ordinary use.
    # Encrypted events and polls count too: in an unencrypted room, 25 "unable to decrypt" lines
    # are a flood like any other.
    event_types = frozenset(
        {"m.room.message", "m.sticker", "m.room.encrypted", "m.poll.start", "org.matrix.msc3381.poll.start"}
    )

    def __init__(self) -> None:
        self.per_room = Windows()
        self.across = Windows()

    async def check(self, event: Event, settings: FloodSettings, ctx: Context) -> Sequence[Intent]:
        """Count the message; report a violation when a window overflows."""
        if event.late:
            return []  # counted once already, when it arrived unreadable
        at = event_time(event.origin_server_ts, ctx.now())
        key = (event.room_id, event.sender)
        window = self.per_room.add(key, at, event.event_id, settings.per_seconds)
        # Items carry their room so a violation can remove the user's burst in every room.
        across = self.across.add(event.sender, at, f"{event.room_id}\n{event.event_id}", settings.per_seconds)
        if len(window) > settings.max_messages:
            self.per_room.clear(key)
            self.across.clear(event.sender)
            return [self._violation(event, across, "flood", settings.max_messages, settings.per_seconds)]
        if len(across) > settings.cross_room_max_messages:
            self.across.clear(event.sender)
            return [
                self._violation(
                    event, across, "flood across rooms", settings.cross_room_max_messages, settings.per_seconds
                )
            ]
        return []

    @staticmethod
    def _violation(event: Event, across: Sequence[tuple[float, str]], what: str, limit: int, per: float) -> Violation:
        """The violation, removing the user's whole burst: every message of theirs in the window,
        in every protected room (a flood in one room is often the same flood in the next)."""
        located = [tuple(item.split("\n", 1)) for _, item in across]
        others = tuple(eid for room, eid in located if room == event.room_id and eid != event.event_id)
        elsewhere = tuple((room, eid) for room, eid in located if room != event.room_id)
        count = len(others) + 1 if what == "flood" else len(located)
        return Violation(
            rule=f"flood: more than {limit} messages in {per:g}s" + (" across rooms" if what != "flood" else ""),
            user=event.sender,
            room_id=event.room_id,
            evidence=Evidence(event.event_id, f"{count} messages in {per:g}s"),
            also_redact=others,
            also_redact_elsewhere=elsewhere,
            sweep_s=per,
        )
