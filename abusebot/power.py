"""Power levels, read defensively, including room version 12 creators.

In room v12 (MSC4289) the room's creators have unlimited power and are *absent* from
``users``; matrix-nio's ``get_user_level`` would call them level 0. We count them as
:data:`CREATOR_LEVEL`, above anything the bot can have, so the bot never acts on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from abusebot.events import MAX_INT

#: Power of a v12 room creator: higher than any power level an event can carry.
CREATOR_LEVEL = MAX_INT + 1


def _level(value: Any, default: int) -> int:
    # Power levels must be integers; bools, floats and strings are ignored, extremes clamped
    # (CVE-2025-59047 was a panic on Int::Min).
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return max(-MAX_INT, min(MAX_INT, value))


@attrs.frozen
class PowerLevels:
    """The parts of ``m.room.power_levels`` moderation needs, with spec defaults."""

    users: Mapping[str, int] = attrs.field(factory=dict)
    users_default: int = 0
    events_default: int = 0
    state_default: int = 50
    ban: int = 50
    kick: int = 50
    redact: int = 50
    invite: int = 0
    events: Mapping[str, int] = attrs.field(factory=dict)
    creators: frozenset[str] = frozenset()

    @classmethod
    def from_content(cls, content: Any, creators: Iterable[str] = ()) -> PowerLevels:
        """Build from event content; a missing or malformed event gives the spec defaults."""
        if not isinstance(content, Mapping):
            content = {}
        users_raw = content.get("users")
        users: dict[str, int] = {}
        if isinstance(users_raw, Mapping):
            for user, level in users_raw.items():
                if isinstance(user, str) and isinstance(level, int) and not isinstance(level, bool):
                    users[user] = _level(level, 0)
        events_raw = content.get("events")
        events: dict[str, int] = {}
        if isinstance(events_raw, Mapping):
            for event_type, level in events_raw.items():
                if isinstance(event_type, str) and isinstance(level, int) and not isinstance(level, bool):
                    events[event_type] = _level(level, 0)
        return cls(
            users=users,
            users_default=_level(content.get("users_default"), 0),
            events_default=_level(content.get("events_default"), 0),
            state_default=_level(content.get("state_default"), 50),
            ban=_level(content.get("ban"), 50),
            kick=_level(content.get("kick"), 50),
            redact=_level(content.get("redact"), 50),
            invite=_level(content.get("invite"), 0),
            events=events,
            creators=frozenset(creators),
        )

    def user_level(self, user_id: str) -> int:
        """The user's power level; v12 creators rank above every possible level."""
        if user_id in self.creators:
            return CREATOR_LEVEL
        return self.users.get(user_id, self.users_default)

    def event_level(self, event_type: str, *, state: bool) -> int:
        """The level needed to send ``event_type``."""
        return self.events.get(event_type, self.state_default if state else self.events_default)

    def muted_level(self) -> int:
        """A level that cannot send messages: one below ``events_default`` (and the message level)."""
        return min(self.events_default, self.events.get("m.room.message", self.events_default)) - 1


def creators_from_create_event(create: Mapping[str, Any] | None) -> frozenset[str]:
    """Room v12+ creators: the create event's sender plus ``additional_creators``."""
    if not isinstance(create, Mapping):
        return frozenset()
    content = create.get("content")
    if not isinstance(content, Mapping):
        return frozenset()
    version = content.get("room_version", "1")
    if not isinstance(version, str) or not _privileged_creators(version):
        return frozenset()
    creators: set[str] = set()
    sender = create.get("sender")
    if isinstance(sender, str):
        creators.add(sender)
    extra = content.get("additional_creators")
    if isinstance(extra, list):
        creators.update(user for user in extra if isinstance(user, str))
    return frozenset(creators)


def _privileged_creators(version: str) -> bool:
    # Numbered versions from 12 on, plus the unstable "hydra" identifiers that introduced it.
    if version.isdigit():
        return int(version) >= 12
    return "hydra" in version
