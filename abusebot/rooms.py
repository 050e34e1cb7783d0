"""Room state as the bot knows it, kept from raw sync responses.

matrix-nio applies the sync's ``state`` block but dispatches callbacks only for timeline events,
so joins that arrive in a gappy sync are invisible to callbacks. We keep our own state map per
room and update it from both blocks, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from abusebot.power import PowerLevels, creators_from_create_event


class RoomState:
    """The current state events of one room, keyed by ``(type, state_key)``."""

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self._events: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._power: PowerLevels | None = None

    def apply(self, raw: Mapping[str, Any]) -> bool:
        """Apply one raw state event; False (and no change) when it is not a usable state event."""
        event_type, state_key = raw.get("type"), raw.get("state_key")
        if not isinstance(event_type, str) or not isinstance(state_key, str):
            return False
        if not isinstance(raw.get("content"), Mapping):
            return False
        self._events[(event_type, state_key)] = raw
        if event_type in ("m.room.power_levels", "m.room.create"):
            self._power = None
        return True

    def apply_all(self, events: Iterable[Any]) -> None:
        """Apply a list of raw events, skipping anything that is not a usable state event."""
        for raw in events:
            if isinstance(raw, Mapping):
                self.apply(raw)

    def get(self, event_type: str, state_key: str = "") -> Mapping[str, Any] | None:
        """The raw state event, or ``None``."""
        return self._events.get((event_type, state_key))

    def content(self, event_type: str, state_key: str = "") -> Mapping[str, Any]:
        """The state event's content, or an empty mapping."""
        event = self.get(event_type, state_key)
        content = event.get("content") if event else None
        return content if isinstance(content, Mapping) else {}

    @property
    def power_levels(self) -> PowerLevels:
        """Parsed power levels, with v12 creators (cached until either event changes)."""
        if self._power is None:
            creators = creators_from_create_event(self.get("m.room.create"))
            self._power = PowerLevels.from_content(self.content("m.room.power_levels"), creators)
        return self._power

    def membership(self, user_id: str) -> str | None:
        """``join``, ``invite``, ``leave``, ``ban``, ``knock`` or ``None`` when never seen."""
        value = self.content("m.room.member", user_id).get("membership")
        return value if isinstance(value, str) else None

    def members(self, membership: str = "join") -> list[str]:
        """Users whose current membership is ``membership``."""
        return [
            key
            for (event_type, key), event in self._events.items()
            if event_type == "m.room.member" and event.get("content", {}).get("membership") == membership
        ]

    @property
    def room_version(self) -> str:
        """The room version from the create event (``1`` when absent)."""
        value = self.content("m.room.create").get("room_version", "1")
        return value if isinstance(value, str) else "1"

    @property
    def name(self) -> str | None:
        """The room's name or canonical alias, for messages."""
        name = self.content("m.room.name").get("name")
        if isinstance(name, str) and name.strip():
            return name.strip()
        alias = self.content("m.room.canonical_alias").get("alias")
        return alias if isinstance(alias, str) else None


class RoomStore:
    """All rooms the bot has state for, and which of them it protects or takes commands in."""

    def __init__(self) -> None:
        self._rooms: dict[str, RoomState] = {}
        self.management_id: str = ""
        #: Protected room ids, in the order they were added (dict as an ordered set).
        self._protected: dict[str, None] = {}

    @property
    def protected(self) -> list[str]:
        """The protected room ids."""
        return list(self._protected)

    def protect(self, room_id: str) -> bool:
        """Add a protected room; False when it already was."""
        if room_id in self._protected:
            return False
        self._protected[room_id] = None
        return True

    def unprotect(self, room_id: str) -> None:
        """Stop protecting a room."""
        self._protected.pop(room_id, None)

    def is_protected(self, room_id: str) -> bool:
        """True for a protected room."""
        return room_id in self._protected

    def label(self, room_id: str) -> str:
        """A room's name (or alias) for messages, else its id."""
        state = self._rooms.get(room_id)
        return (state.name if state else None) or room_id

    def room(self, room_id: str) -> RoomState:
        """The state of ``room_id``, created empty on first use."""
        state = self._rooms.get(room_id)
        if state is None:
            state = self._rooms[room_id] = RoomState(room_id)
        return state

    def known(self, room_id: str) -> bool:
        """True when we hold state for ``room_id``."""
        return room_id in self._rooms

    def forget(self, room_id: str) -> None:
        """Drop a room we left."""
        self._rooms.pop(room_id, None)
