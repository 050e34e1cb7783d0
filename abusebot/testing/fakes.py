"""Small typed fakes of the homeserver edge for unit tests.

:class:`FakeHomeserver` keeps room state the way a homeserver does (membership, power levels,
join rules, ACLs) and records every write, so the outbox, moderation and the scheduler can be
checked against what "the homeserver" ends up holding. It subclasses the real :class:`Api`
(so a method the code calls and the fake lacks is the real one, which fails loudly without a
transport) and answers reads through a fake :class:`Homeserver` facade.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

from abusebot.matrix import Api, MatrixError

#: A test's hook into a write: awaited with the write's kind ("ban", "state", "send",
#: "create_room", ...) and its room. It may read the ledger, or raise: a :class:`MatrixError`
#: before the write fails it; anything raised after it is a crash before the answer came back.
WriteHook = Callable[[str, str], Awaitable[None]]


class FakeReads:
    """The read half (``api.hs``): state events and ``/messages`` from the fake's rooms."""

    def __init__(self, server: FakeHomeserver) -> None:
        self.server = server
        self.user_id = server.bot

    async def state_event(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        await self.server.tick()
        event = self.server.state.get(room_id, {}).get((event_type, state_key))
        return None if event is None else copy.deepcopy(event["content"])

    async def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        await self.server.tick()
        if "/rooms/" in path and ("/state/" in path or "/event/" in path):
            room_id, rest = unquote(path.split("/rooms/")[1].split("/")[0]), path.split("/rooms/")[1].split("/")[1:]
            if rest[0] == "state":  # a whole state event (format=event)
                event = self.server.state.get(room_id, {}).get(
                    (unquote(rest[1]), unquote(rest[2]) if len(rest) > 2 else "")
                )
            else:  # /event/{id}: any event the fake made, with what it replaced
                event = self.server.events.get(unquote(rest[1]))
            if event is None:
                raise MatrixError(404, {"errcode": "M_NOT_FOUND"})
            return copy.deepcopy(event)
        if path.endswith("/joined_rooms"):
            return {"joined_rooms": sorted(self.server.state)}
        raise MatrixError(404, {"errcode": "M_UNRECOGNIZED", "error": path})

    async def joined_rooms(self) -> list[str]:
        """Every room the fake server holds state for."""
        return sorted(self.server.state)

    async def messages(self, room_id: str, start: str | None, **kwargs: Any) -> dict[str, Any]:
        await self.server.tick()
        return {"chunk": list(reversed(self.server.timeline.get(room_id, []))), "end": None}


class FakeHomeserver(Api):
    """Writes that change the fake's state; every call yields to the loop (as I/O does), so
    concurrent read-modify-writes interleave as they would against a real server."""

    def __init__(self, bot: str = "@bot:example.org") -> None:
        self.bot = bot
        self.state: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.timeline: dict[str, list[dict[str, Any]]] = {}
        self.writes: list[tuple[str, str, Any]] = []
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.redacted: list[str] = []
        self.txns: set[tuple[str, str]] = set()
        self.fail: dict[str, MatrixError] = {}
        #: Every state event the fake made, by id (``/event/{id}``).
        self.events: dict[str, dict[str, Any]] = {}
        #: Awaited before each write takes effect, and after it took effect (see :data:`WriteHook`).
        self.before_write: WriteHook | None = None
        self.after_write: WriteHook | None = None
        self._ids = itertools.count(1)
        self.hs = FakeReads(self)  # type: ignore[assignment]

    async def tick(self) -> None:
        await asyncio.sleep(0)

    # -- setting up ---------------------------------------------------------------------------------

    def put(self, room_id: str, event_type: str, content: Mapping[str, Any], state_key: str = "") -> str:
        """Set a state event directly (test set-up, or "someone else" changing it)."""
        event_id = f"$e{next(self._ids)}"
        room = self.state.setdefault(room_id, {})
        previous = room.get((event_type, state_key))
        event: dict[str, Any] = {
            "event_id": event_id,
            "type": event_type,
            "state_key": state_key,
            "content": copy.deepcopy(dict(content)),
        }
        if previous is not None:
            event["unsigned"] = {"replaces_state": previous["event_id"]}
        room[(event_type, state_key)] = event
        self.events[event_id] = event
        return event_id

    def membership(self, room_id: str, user: str) -> str | None:
        event = self.state.get(room_id, {}).get(("m.room.member", user))
        return None if event is None else str(event["content"].get("membership"))

    def users(self, room_id: str) -> dict[str, int]:
        event = self.state.get(room_id, {}).get(("m.room.power_levels", ""))
        return dict((event or {}).get("content", {}).get("users", {}))

    def state_events(self, room_id: str) -> list[dict[str, Any]]:
        """The room's state as raw events (to give a :class:`RoomStore` the same state)."""
        return [copy.deepcopy(event) for event in self.state.get(room_id, {}).values()]

    async def _check(self, what: str, room_id: str) -> None:
        if self.before_write is not None:
            await self.before_write(what, room_id)
        if what in self.fail:
            raise self.fail[what]

    async def _done(self, what: str, room_id: str) -> None:
        if self.after_write is not None:
            await self.after_write(what, room_id)

    # -- the write API --------------------------------------------------------------------------------

    async def ban(self, room_id: str, user_id: str, reason: str, priority: int = 0) -> None:
        await self.tick()
        await self._check("ban", room_id)
        self.writes.append(("ban", room_id, user_id))
        self.put(room_id, "m.room.member", {"membership": "ban", "reason": reason}, user_id)
        await self._done("ban", room_id)

    async def unban(self, room_id: str, user_id: str, reason: str, priority: int = 0) -> None:
        await self.tick()
        await self._check("unban", room_id)
        if self.membership(room_id, user_id) != "ban":
            raise MatrixError(403, {"errcode": "M_FORBIDDEN", "error": "not banned"})
        self.writes.append(("unban", room_id, user_id))
        self.put(room_id, "m.room.member", {"membership": "leave"}, user_id)
        await self._done("unban", room_id)

    async def kick(self, room_id: str, user_id: str, reason: str, priority: int = 0) -> None:
        await self.tick()
        await self._check("kick", room_id)
        if self.membership(room_id, user_id) not in ("join", "invite", "knock"):
            raise MatrixError(403, {"errcode": "M_FORBIDDEN", "error": "not in the room"})
        self.writes.append(("kick", room_id, user_id))
        self.put(room_id, "m.room.member", {"membership": "leave"}, user_id)
        await self._done("kick", room_id)

    async def redact(self, room_id: str, event_id: str, reason: str, txn: str | None = None, priority: int = 0) -> None:
        await self.tick()
        await self._check("redact", room_id)
        if (room_id, txn or "") in self.txns:
            return
        self.txns.add((room_id, txn or ""))
        self.writes.append(("redact", room_id, event_id))
        self.redacted.append(event_id)
        await self._done("redact", room_id)

    async def put_state(
        self, room_id: str, event_type: str, state_key: str, content: Mapping[str, Any], priority: int = 0
    ) -> str:
        await self.tick()
        await self._check("state", room_id)
        self.writes.append(("state", room_id, (event_type, state_key)))
        event_id = self.put(room_id, event_type, content, state_key)
        await self._done("state", room_id)
        return event_id

    async def send(
        self,
        room_id: str,
        content: Mapping[str, Any],
        *,
        event_type: str = "m.room.message",
        txn: str | None = None,
        priority: int = 0,
    ) -> str:
        await self.tick()
        await self._check("send", room_id)
        if txn is not None and (room_id, txn) in self.txns:
            return "$dedup"
        if txn is not None:
            self.txns.add((room_id, txn))
        self.sent.append((room_id, dict(content)))
        await self._done("send", room_id)
        return f"$m{next(self._ids)}"

    async def create_room(self, body: Mapping[str, Any]) -> str:
        await self.tick()
        await self._check("create_room", "")
        room_id = f"!dm{next(self._ids)}:example.org"
        self.writes.append(("create_room", room_id, dict(body)))
        self.put(room_id, "m.room.name", {"name": body.get("name", "")})
        for user in body.get("invite", []):
            self.put(room_id, "m.room.member", {"membership": "invite"}, user)
        await self._done("create_room", room_id)
        return room_id
