"""Protected Spaces: every child room of each Space in ``protected_spaces``, and of its
sub-Spaces, is protected like a configured room.

* A child is an ``m.space.child`` state event of the Space whose ``via`` is a non-empty list of
  servers (an empty ``via`` or content is a child removed). A child created as a Space
  (``type: m.space``) is a sub-Space: walked in turn, watched, never protected. The Spaces
  themselves are watched (their child events handled), not protected: no protection runs there.
* The bot joins each child itself (one it cannot join, invite-only say, is reported and joined
  once the bot is invited). Rooms that are the management room, a policy list or a direct chat
  are never protected because a Space names them. A walk stops at :data:`MAX_ROOMS` rooms, so a
  sub-Space run by someone else cannot make the bot join the world.
* A child added while running is protected within the sync that brings the change; one removed
  stops being protected (unless the config or an upgrade protects it too). Both are said in the
  management room. A room that becomes protected gets every ban and mute in force everywhere,
  policy-list bans included (:meth:`abusebot.actions.Moderation.reach_rooms`).
* Durable in order: a room about to be protected is recorded ``adding`` first, then protected
  and given the sanctions (keyed intents, each done once), then marked ``protected``. A crash in
  between leaves ``adding``, and the next start does it all again, which acts only where it had
  not. A room the ledger knows as protected is protected again at start before any event, and
  only what changed while the bot was away is announced.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import structlog

from abusebot.audit import Message, bullet_list
from abusebot.events import Event
from abusebot.host import Feature, Role, feature
from abusebot.ledger import now_ms
from abusebot.matrix import HomeserverUnavailable, MatrixError

log = structlog.get_logger("abusebot.spaces")

ROLE = "space"
#: Why a room is protected, in the room store's terms (``!mod rooms`` names the Space).
ORIGIN = "space"
#: Rooms and sub-Spaces one walk may take in, all Spaces together.
MAX_ROOMS = 1000
#: Joins at once while walking (a first start with a large Space).
JOIN_CONCURRENCY = 8

MIGRATIONS = (
    """
    CREATE TABLE space_rooms (
        room_id   TEXT PRIMARY KEY,
        space_id  TEXT NOT NULL,
        kind      TEXT NOT NULL CHECK (kind IN ('room', 'space')),
        state     TEXT NOT NULL CHECK (state IN ('adding', 'protected', 'watched', 'unjoinable', 'removed')),
        detail    TEXT,
        since     INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)


@attrs.frozen
class Found:
    """One room a walk reached: the Space that names it (the first found), and what it is."""

    space_id: str
    kind: str  # "room" | "space" | "unjoinable" | "skipped"
    detail: str | None = None


class SpacesFeature(Feature):
    """Watches the configured Spaces and protects their rooms."""

    name: ClassVar[str] = "spaces"
    roles: ClassVar[frozenset[Role | str]] = frozenset({ROLE})
    event_types: ClassVar[frozenset[str] | None] = frozenset({"m.space.child"})
    migrations: ClassVar[tuple[str, ...]] = MIGRATIONS

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.configured: tuple[str, ...] = bot.config.protected_spaces
        #: Configured Space (as written) → its id, once resolved and joined.
        self.roots: dict[str, str] = {}
        #: Why a configured Space is not watched (cannot resolve or join it, removed from it).
        self.root_problems: dict[str, str] = {}
        #: Ids of configured Spaces the bot is not in (an invite to one is accepted).
        self.unjoined: set[str] = set()
        #: Every Space watched (the roots and their sub-Spaces) → the Space naming it.
        self.spaces: dict[str, str] = {}
        #: Rooms protected because a Space names them → that Space.
        self.rooms: dict[str, str] = {}
        #: The last walk's rooms that could not be joined or were left out, and why.
        self.problems: dict[str, Found] = {}
        self._lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Protect again what the ledger says was protected, then join the Spaces and walk them;
        what changed while the bot was away is announced in one message."""
        self.bot.host.add_role(ROLE, lambda room: room in self.spaces)
        if not self.configured:
            return
        known = await self._rows()
        joined = set(await self.bot.hs.joined_rooms())
        again = [room for room, row in known.items() if row["state"] == "protected" and room in joined]
        for room in again:
            await self.bot.ensure_state(room)
            self.bot.store.protect(room, origin=ORIGIN)
            self.rooms[room] = str(known[room]["space_id"])
        for space in self.configured:
            await self._join_root(space)
        changes = await self.reconcile(announce=False)
        # Those protected before: bans in force and the lists' rules meet whoever came while the
        # bot was away (the rest of every sanction reached them when they were first protected).
        still = [room for room in again if room in self.rooms]
        await self.bot.moderation.reach_rooms(still)
        for room in still:
            await self.bot.policies.apply_to_room(room)
        if changes:
            await self.bot.moderation.post(_changes_message("Spaces, since I last ran:", changes))

    async def _join_root(self, space: str) -> None:
        wanted = await self.bot.hs.room_id(space)
        if wanted is not None:
            self.unjoined.add(wanted)
        try:
            room_id = await self.bot.join_watched(space)
        except (MatrixError, HomeserverUnavailable) as err:
            self.root_problems[space] = f"I cannot join the Space {space}: {err}; invite me"
            log.error("space_unjoined", space=space, error=str(err))
            return
        self.unjoined.discard(room_id)
        if not self.bot.store.room(room_id).is_space:
            self.root_problems[space] = f"{space} is not a Space (its create event has no type m.space)"
            log.error("space_not_a_space", space=space, room_id=room_id)
            return
        self.roots[space] = room_id
        self.spaces[room_id] = room_id
        self.root_problems.pop(space, None)

    async def handle(self, event: Event) -> None:
        """A child added, changed or removed in a watched Space: walk again, said when it changes
        what is protected."""
        changes = await self.reconcile(announce=True)
        if changes:
            await self.bot.moderation.post(_changes_message(f"Space {self._label(event.room_id)} changed:", changes))

    def wants_invite(self, room_id: str, inviter: str, direct: bool) -> bool:
        """An invite to a child or a configured Space the bot could not join."""
        if direct:
            return False
        unjoined = room_id in self.problems and self.problems[room_id].kind == "unjoinable"
        return unjoined or room_id in self.unjoined

    async def accepted(self, room_id: str, inviter: str) -> None:
        """Joined after an invite: a configured Space is watched, a child protected."""
        log.info("space_room_invited", room_id=room_id, inviter=inviter)
        if room_id in self.unjoined:
            for space in self.configured:
                if await self.bot.hs.room_id(space) == room_id:
                    await self._join_root(space)
        changes = await self.reconcile(announce=True)
        if changes:
            await self.bot.moderation.post(_changes_message("Spaces, after an invite:", changes))

    async def room_left(self, room_id: str) -> None:
        """Removed from a watched Space: its rooms stay protected as the Space last said, and an
        invite brings the bot back."""
        if room_id not in self.spaces:
            return
        for space, root in self.roots.items():
            if root == room_id:
                self.unjoined.add(room_id)
                self.root_problems[space] = (
                    f"I am no longer in the Space {space}; I keep its rooms as it last listed them"
                )
        text = (
            f"⚠️ I am no longer in the Space {self._label(room_id)} ({room_id}): I keep protecting its rooms"
            " as it last listed them, and follow it again when invited."
        )
        log.error("space_left", room_id=room_id)
        await self.bot.moderation.post(Message(text, html.escape(text)))

    # -- the walk ------------------------------------------------------------------------------

    async def reconcile(self, *, announce: bool) -> list[str]:
        """Walk the Spaces, protect what they name now and stop protecting what they no longer
        name; returns the lines that say what changed (one walk at a time)."""
        async with self._lock:
            found = await self._walk()
            return await self._apply(found, announce=announce)

    async def _walk(self) -> dict[str, Found]:
        """Every room and sub-Space reachable from the roots, breadth first, each joined (a
        sub-Space must be, to be watched; a room, to know it is not a Space)."""
        found: dict[str, Found] = {}
        replaced = await self.bot.ledger.room_upgrades()
        joined = set(await self.bot.hs.joined_rooms())
        level = list(dict.fromkeys(self.roots.values()))
        seen = set(level)
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)
        while level:
            wanted: list[tuple[str, str, list[str]]] = []
            for space in level:
                for child, via in self.bot.store.room(space).space_children().items():
                    if child in seen:
                        continue
                    seen.add(child)
                    if len(seen) > MAX_ROOMS:
                        found[child] = Found(space, "skipped", f"over the limit of {MAX_ROOMS} rooms from Spaces")
                        continue
                    skip = self._not_protectable(child, replaced)
                    if skip:
                        found[child] = Found(space, "skipped", skip)
                        continue
                    wanted.append((child, space, via))

            async def one(child: str, space: str, via: list[str]) -> tuple[str, Found]:
                async with gate:
                    return child, await self._classify(child, space, via, joined)

            level = []
            for child, what in await asyncio.gather(*(one(*item) for item in wanted)):
                found[child] = what
                if what.kind == "space":
                    level.append(child)
            if len(found) > 20:
                log.info("walking_spaces", rooms=len(found))
        return found

    def _not_protectable(self, room_id: str, replaced: Mapping[str, str]) -> str | None:
        """Why a Space's child is never protected because the Space names it, or ``None``."""
        bot = self.bot
        if room_id == bot.store.management_id:
            return "the management room"
        if bot.policies.is_list_room(room_id) or room_id == bot.policies.publish_room:
            return "a policy list"
        if Role.DIRECT in bot.host.roles_of(room_id):
            return "a direct chat with me"
        if room_id in replaced:
            return f"upgraded to {replaced[room_id]}, which I protect instead"
        return None

    async def _classify(self, room_id: str, space: str, via: Sequence[str], joined: set[str]) -> Found:
        """Join ``room_id`` when the bot is not in it (a room's earlier history stays history),
        and tell a sub-Space from a room."""
        store = self.bot.store
        if store.is_protected(room_id):
            return Found(space, "room")  # protected already (the config, an upgrade): still a room
        try:
            if room_id in joined:
                await self.bot.ensure_state(room_id)
            else:
                await self.bot.join_watched(room_id, via=via)
        except (MatrixError, HomeserverUnavailable) as err:
            return Found(space, "unjoinable", f"I cannot join it: {err}; invite me")
        return Found(space, "space" if store.room(room_id).is_space else "room")

    async def _apply(self, found: Mapping[str, Found], *, announce: bool) -> list[str]:
        """Make the protected rooms what the walk found, in durable order, and say what changed."""
        store = self.bot.store
        changes: list[str] = []
        self.spaces = {**{root: root for root in self.roots.values()}}
        self.spaces.update({room: what.space_id for room, what in found.items() if what.kind == "space"})
        self.problems = {room: what for room, what in found.items() if what.kind in ("unjoinable", "skipped")}
        rows = await self._rows()
        for room, what in found.items():
            if what.kind != "room" or room in self.rooms:
                continue
            await self._record(room, what, "adding")
            try:
                new = await self.bot.protect_room(room, ORIGIN)
            except (MatrixError, HomeserverUnavailable) as err:
                self.problems[room] = Found(what.space_id, "unjoinable", f"I cannot join it: {err}; invite me")
                await self._record(room, self.problems[room], "unjoinable")
                continue
            self.rooms[room] = what.space_id
            await self._record(room, what, "protected")
            was = rows.get(room, {}).get("state")
            if new or was != "protected":
                space = self._label(what.space_id)
                changes.append(f"🛡️ Now protecting {self._room(room)}, a room of the Space {space}.")
            log.info("space_room_protected", room_id=room, space_id=what.space_id)
        for room in [room for room in self.rooms if found.get(room, Found("", "")).kind != "room"]:
            space = self.rooms.pop(room)
            gone = store.unprotect(room, ORIGIN)
            await self._record(room, Found(space, "room"), "removed")
            kept = "" if gone else f"; still protected ({', '.join(_origin_words(store.origins(room)))})"
            changes.append(
                f"➖ {self._room(room)} is no longer a room of the Space {self._label(space)}: "
                + ("I stopped protecting it." if gone else f"it stays protected{kept}.")
            )
            log.info("space_room_unprotected", room_id=room, space_id=space, still_protected=not gone)
        for room, what in self.problems.items():
            if rows.get(room, {}).get("state") != "unjoinable" and what.kind == "unjoinable":
                changes.append(f"⚠️ {room}, a room of the Space {self._label(what.space_id)}: {what.detail}.")
            if what.kind == "unjoinable":
                await self._record(room, what, "unjoinable")
        for room, row in rows.items():
            if row["state"] == "watched" and room not in self.spaces:
                await self._record(room, Found(str(row["space_id"]), "space"), "removed")
                changes.append(f"No longer watching the Space {self._label(room)}: no protected Space names it now.")
        for room, what in found.items():
            if what.kind == "space" and rows.get(room, {}).get("state") != "watched":
                await self._record(room, what, "watched")
                if announce or rows:
                    changes.append(f"Watching the sub-Space {self._label(room)} of {self._label(what.space_id)}.")
        if not announce:
            # At start, the start line says what is protected and what cannot be joined; what
            # changed while the bot was away is said apart, and at a first start nothing did.
            changes = [line for line in changes if rows and not line.startswith("⚠️")]
        return changes

    # -- the ledger ----------------------------------------------------------------------------

    async def _rows(self) -> dict[str, dict[str, Any]]:
        rows = await self.bot.ledger.fetch("SELECT room_id, space_id, kind, state, detail FROM space_rooms")
        return {row[0]: {"space_id": row[1], "kind": row[2], "state": row[3], "detail": row[4]} for row in rows}

    async def _record(self, room_id: str, what: Found, state: str) -> None:
        kind = "space" if what.kind == "space" else "room"
        async with self.bot.ledger.transaction() as db:
            await db.execute(
                "INSERT INTO space_rooms (room_id, space_id, kind, state, detail, since) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (room_id) DO UPDATE SET space_id = excluded.space_id, kind = excluded.kind,"
                " detail = excluded.detail,"
                " since = CASE WHEN state = excluded.state THEN since ELSE excluded.since END,"
                " state = excluded.state",
                (room_id, what.space_id, kind, state, what.detail, now_ms()),
            )

    # -- what it says --------------------------------------------------------------------------

    def _label(self, room_id: str) -> str:
        return str(self.bot.store.label(room_id))

    def _room(self, room_id: str) -> str:
        label = self._label(room_id)
        return label if label == room_id else f"{label} ({room_id})"

    def origin_of(self, room_id: str) -> str | None:
        """``Space <name>`` for a room a Space names, for ``!mod rooms``."""
        space = self.rooms.get(room_id)
        return None if space is None else f"Space {self._label(space)}"

    def room_problems(self) -> list[str]:
        """The Spaces and children the bot could not get, for the start, status and rooms."""
        lines = list(self.root_problems.values())
        for room, what in sorted(self.problems.items()):
            if what.kind == "unjoinable":
                lines.append(f"{room} (in the Space {self._label(what.space_id)}): {what.detail}")
        skipped = [room for room, what in self.problems.items() if what.kind == "skipped"]
        if skipped:
            lines.append(f"{len(skipped)} room(s) named by a Space that I do not protect (see the log)")
            for room in skipped:
                log.info("space_room_skipped", room_id=room, why=self.problems[room].detail)
        return lines

    def status(self) -> list[str]:
        """One line: the Spaces watched and the rooms they give."""
        if not self.configured:
            return []
        unjoined = sum(1 for what in self.problems.values() if what.kind == "unjoinable")
        line = f"Spaces: {len(self.spaces)} watched; {len(self.rooms)} room(s) protected from them"
        if unjoined or self.root_problems:
            line += f"; ⚠️ {unjoined + len(self.root_problems)} I cannot join (!mod rooms)"
        return [line]


def _origin_words(origins: Sequence[str]) -> list[str]:
    words = {"config": "in the config", "upgrade": "a room upgrade", ORIGIN: "a Space"}
    return [words.get(origin, origin) for origin in origins]


def _changes_message(head: str, changes: Sequence[str]) -> Message:
    return bullet_list(head, list(changes), limit=30, html_items=[html.escape(line) for line in changes])


@feature("spaces")
def _factory(bot: Any) -> Feature:
    return SpacesFeature(bot)
