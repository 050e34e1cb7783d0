"""Room state as the bot knows it, kept from raw sync responses.

matrix-nio applies the sync's ``state`` block but dispatches callbacks only for timeline events,
so joins that arrive in a gappy sync are invisible to callbacks. We keep our own state map per
room and update it from both blocks, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from abusebot.power import PowerLevels, creators_from_create_event

#: What a stored state event keeps: enough to read it and to know who set it. ``unsigned``
#: (``prev_content``, ages, relations) can be as big as the event and is never read from state.
KEPT_FIELDS = ("type", "state_key", "sender", "content", "event_id", "origin_server_ts")
#: Policy rules are kept once, in the rule index (:mod:`policies.matcher`), not in room state.
POLICY_RULE_PREFIXES = ("m.policy.rule.", "m.room.rule.", "org.matrix.mjolnir.rule.")


#: Memberships that put someone in a room's reach: a member, someone invited, someone knocking.
ACTIVE = frozenset({"join", "invite", "knock"})


class RoomState:
    """The current state events of one room, keyed by ``(type, state_key)``, with an index of
    memberships (so listing a room's members costs its members, not its whole state)."""

    __slots__ = ("_events", "_memberships", "_mixed_case", "_power", "member_version", "room_id")

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self._events: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._memberships: dict[str, str] = {}
        #: Member ids with capitals (rare, older accounts): a rule, which ignores case, must find
        #: them without scanning everyone.
        self._mixed_case: set[str] = set()
        #: Bumped on every membership change (callers cache what depends on who is in the room).
        self.member_version = 0
        self._power: PowerLevels | None = None

    def apply(self, raw: Mapping[str, Any]) -> bool:
        """Apply one raw state event; False (and no change) when it is not a usable state event."""
        event_type, state_key = raw.get("type"), raw.get("state_key")
        if not isinstance(event_type, str) or not isinstance(state_key, str):
            return False
        content = raw.get("content")
        if not isinstance(content, Mapping):
            return False
        if event_type.startswith(POLICY_RULE_PREFIXES):
            return True  # applied where rules live; a list room's state is not kept twice
        self._events[(event_type, state_key)] = {k: raw[k] for k in KEPT_FIELDS if k in raw}
        if event_type == "m.room.member":
            membership = content.get("membership")
            if isinstance(membership, str):
                self._memberships[state_key] = membership
                if state_key != state_key.lower():
                    self._mixed_case.add(state_key)
            else:
                self._memberships.pop(state_key, None)
                self._mixed_case.discard(state_key)
            self.member_version += 1
        elif event_type in ("m.room.power_levels", "m.room.create"):
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
        return self._memberships.get(user_id)

    def members(self, membership: str = "join") -> list[str]:
        """Users whose current membership is ``membership``."""
        return [user for user, value in self._memberships.items() if value == membership]

    def mixed_case(self) -> frozenset[str]:
        """Ids in this room's state that are not all lowercase."""
        return frozenset(self._mixed_case)

    def memberships(self) -> Mapping[str, str]:
        """Every user the room's state names, with their membership (read-only view)."""
        return self._memberships

    def space_children(self) -> dict[str, list[str]]:
        """The rooms this room names as its Space children, each with its ``via``: the
        ``m.space.child`` events whose ``via`` is a non-empty list of server names (an empty or
        missing ``via`` is a removed child), keyed by a room id. In the order the ids sort, so a
        walk is the same each time."""
        children: dict[str, list[str]] = {}
        for (event_type, state_key), event in self._events.items():
            if event_type != "m.space.child" or not state_key.startswith("!") or len(state_key) > 255:
                continue
            via = event.get("content", {}).get("via")
            if isinstance(via, list) and via and all(isinstance(server, str) and server for server in via):
                children[state_key] = list(via)
        return dict(sorted(children.items()))

    @property
    def is_space(self) -> bool:
        """True when the room was created as a Space (``type: m.space`` in its create event)."""
        return self.content("m.room.create").get("type") == "m.space"

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
        #: Protected room ids, in the order they were added, each with why it is protected
        #: (``config``, ``upgrade``, ``space``, ``subspace``): it stays protected while any holds.
        self._protected: dict[str, set[str]] = {}
        #: Protected rooms the bot is still joining: their events are routed as a protected
        #: room's (none can arrive before the join), but nothing acts in them until joined.
        self._joining: set[str] = set()

    @property
    def protected(self) -> list[str]:
        """The protected room ids the bot is in (the rooms actions reach)."""
        if not self._joining:
            return list(self._protected)
        return [room_id for room_id in self._protected if room_id not in self._joining]

    @property
    def joining(self) -> int:
        """How many protected rooms the bot is still joining."""
        return len(self._joining)

    def protect(self, room_id: str, *, joining: bool = False, origin: str = "config") -> bool:
        """Add a protected room (``joining``: not joined yet, see :meth:`joined`), protected
        because of ``origin``; False when it already was (the origin is added all the same)."""
        if joining and room_id not in self._protected:
            self._joining.add(room_id)
        origins = self._protected.get(room_id)
        if origins is not None:
            origins.add(origin)
            return False
        self._protected[room_id] = {origin}
        return True

    def vouched(self, room_id: str) -> bool:
        """Whether the community vouches for ``room_id``'s admins: the config names it, an upgrade
        of one it vouched for made it, or a configured Space names it directly. A room reached
        only through a sub-Space (``subspace``), which someone else may run, is protected, but
        its admins are no staff of ours: being out of the bot's reach there shields nobody
        anywhere else."""
        return bool(self._protected.get(room_id, set()) - {"subspace"})

    def origins(self, room_id: str) -> list[str]:
        """Why ``room_id`` is protected (sorted; empty when it is not)."""
        return sorted(self._protected.get(room_id, ()))

    def joined(self, room_id: str) -> None:
        """A protected room that was being joined is joined: actions reach it from now on."""
        self._joining.discard(room_id)

    def unprotect(self, room_id: str, origin: str | None = None) -> bool:
        """Stop protecting a room (``origin``: only for that reason; it stays protected while
        another holds). True when the room is no longer protected."""
        origins = self._protected.get(room_id)
        if origins is None:
            return True
        if origin is not None:
            origins.discard(origin)
            if origins:
                return False
        del self._protected[room_id]
        self._joining.discard(room_id)
        return True

    def is_protected(self, room_id: str) -> bool:
        """True for a protected room (joined, or being joined)."""
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
