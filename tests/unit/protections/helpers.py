"""Small fakes for protection unit tests: events and a context with a settable clock."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from abusebot.events import Event, parse_event
from abusebot.rooms import RoomState

_ids = itertools.count()


def message(sender: str, body: Any = "hello", room: str = "!room", ts: int = 0, **content: Any) -> Event:
    """A parsed ``m.room.message`` event."""
    raw = {
        "event_id": f"$e{next(_ids)}",
        "sender": sender,
        "type": "m.room.message",
        "origin_server_ts": ts,
        "content": {"msgtype": "m.text", "body": body, **content},
    }
    event = parse_event(raw, room)
    assert event is not None
    return event


def member(user: str, membership: str = "join", prev: str | None = None, room: str = "!room", ts: int = 0) -> Event:
    """A parsed ``m.room.member`` event (``prev`` is the previous membership)."""
    raw: dict[str, Any] = {
        "event_id": f"$m{next(_ids)}",
        "sender": user,
        "type": "m.room.member",
        "state_key": user,
        "origin_server_ts": ts,
        "content": {"membership": membership},
    }
    if prev is not None:
        raw["unsigned"] = {"prev_content": {"membership": prev}}
    event = parse_event(raw, room)
    assert event is not None
    return event


class FakeContext:
    """A context whose clock the test moves."""

    bot_user_id = "@bot:test"

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.clock = now
        self.joins: dict[tuple[str, str], float] = {}
        self._rooms: dict[str, RoomState] = {}

    def now(self) -> float:
        return self.clock

    def room(self, room_id: str) -> RoomState:
        return self._rooms.setdefault(room_id, RoomState(room_id))

    def rooms(self) -> Sequence[str]:
        return list(self._rooms)

    def joined_at(self, room_id: str, user_id: str) -> float | None:
        return self.joins.get((room_id, user_id))
