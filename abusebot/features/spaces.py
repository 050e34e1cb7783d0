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
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import structlog

from abusebot.audit import Message
from abusebot.commands import ORIGIN_WORDS
from abusebot.events import Event
from abusebot.host import Feature, Role, feature
from abusebot.ledger import now_ms
from abusebot.matrix import HomeserverUnavailable, MatrixError

log = structlog.get_logger("abusebot.spaces")

ROLE = "space"
#: Why a room is protected, in the room store's terms (``!mod rooms`` names the Space).
ORIGIN = "space"
#: Why a room named only by a sub-Space is protected (its admins are no staff of ours).
SUB_ORIGIN = "subspace"
#: Rooms and sub-Spaces one walk may take in, all Spaces together.
MAX_ROOMS = 1000
#: Joins at once while walking (a first start with a large Space).
JOIN_CONCURRENCY = 8
#: How long a child the bot could not join is left alone (an invite, or the next start, tries
#: at once).
RETRY_S = 600.0
#: Labels and errors in the management room are cut to this (a room name may be 64 KB).
LABEL_CHARS = 80

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
    event_types: ClassVar[frozenset[str] | None] = frozenset({"m.space.child", "m.room.tombstone"})
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
        self._dirty = False
        self._draining = False
        self._replaced: dict[str, str] = {}
        #: The configured Spaces' ids, joined or not (a room one names directly is vouched for).
        self._configured_ids: set[str] = set()
        #: Sub-Spaces the bot is shut out of, walked as they last stood, and why.
        self.shut_out: dict[str, Found] = {}
        #: Children the bot could not join → when it may try again (each change of a Space
        #: would otherwise try every one of them again, through servers the Space names).
        self._retry: dict[str, float] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Say how to tell a watched Space (the walk waits for :meth:`ready`)."""
        self.bot.host.add_role(ROLE, lambda room: room in self.spaces)

    async def ready(self) -> None:
        """Once every feature has started (the lists loaded, the direct chats known: a Space
        naming one must find it is one), protect again what the ledger says was protected, then
        join the Spaces and walk them; what changed while the bot was away is said."""
        if not self.configured:
            return
        try:
            await self._protect_again()
        except Exception as err:  # the bot runs on; the next change of a Space walks again
            self.root_problems["*"] = f"walking the Spaces failed ({_short(repr(err))}); I walk them at the next change"
            log.exception("space_walk_failed", error=repr(err))

    async def _protect_again(self) -> None:
        for space in self.configured:
            await self._join_root(space)
        known = await self._rows()
        joined = set(await self.bot.hs.joined_rooms())
        again = [room for room, row in known.items() if row["state"] == "protected" and room in joined]
        for room in list(again):
            try:
                await self.bot.ensure_state(room)
            except (MatrixError, HomeserverUnavailable) as err:  # the walk tries it as new
                log.warning("space_room_unread", room_id=room, error=str(err))
                again.remove(room)
                continue
            self.rooms[room] = str(known[room]["space_id"])
            self.bot.store.protect(room, origin=self._origin(self.rooms[room]))
        await self.reconcile(announce=False)
        # Those protected before: bans in force and the lists' rules meet whoever came while the
        # bot was away (the rest of every sanction reached them when they were first protected).
        still = [room for room in again if room in self.rooms]
        await self.bot.moderation.reach_rooms(still)
        for room in still:
            await self.bot.policies.apply_to_room(room)

    async def _join_root(self, space: str) -> None:
        wanted = await self.bot.hs.room_id(space)
        if wanted is not None:
            wanted = _latest(wanted, await self.bot.ledger.room_upgrades())
            self.unjoined.add(wanted)
            self._configured_ids.add(wanted)
        try:
            room_id = await self.bot.join_watched(wanted or space)
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
        """A child added, changed or removed in a watched Space: walk again, as part of this
        sync batch (the batch's checkpoint waits for it), once however many changes it brings.
        A Space upgraded (a tombstone) is followed: its replacement is watched instead."""
        if event.type == "m.room.tombstone":
            replacement = event.content.get("replacement_room")
            if event.state_key != "" or not isinstance(replacement, str) or not replacement.startswith("!"):
                return
            await self._follow_upgrade(event.room_id, replacement)
        self._dirty = True
        if not self._draining:
            self._draining = True
            self.bot.spawn(self._drain())

    async def _follow_upgrade(self, old: str, new: str) -> None:
        """Watch ``new``, the Space ``old`` was upgraded to (a root's replacement is the root)."""
        try:
            joined = await self.bot.join_watched(new)
        except (MatrixError, HomeserverUnavailable) as err:
            log.error("space_upgrade_unjoined", old=old, new=new, error=str(err))
            text = f"⚠️ The Space {self._label(old)} was upgraded to {new}, but I cannot join it: {_short(str(err))}"
            await self.bot.moderation.post(Message(text, html.escape(text)))
            return
        if not self.bot.store.room(joined).is_space:
            return
        await self.bot.ledger.record_upgrade(old, joined, protect=False)
        for space, root in list(self.roots.items()):
            if root == old:
                self.roots[space] = joined
                self._configured_ids.add(joined)
        self.spaces[joined] = self.spaces.get(old, joined)
        log.info("space_upgrade_followed", old=old, new=joined)

    async def _drain(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                await self.reconcile(announce=True)
        except Exception as err:  # the next change walks again; the loop goes on
            log.exception("space_walk_failed", error=repr(err))
        finally:
            self._draining = False

    def wants_invite(self, room_id: str, inviter: str, direct: bool) -> bool:
        """An invite to a child or a configured Space the bot could not join."""
        if direct:
            return False
        unjoined = room_id in self.problems and self.problems[room_id].kind == "unjoinable"
        return unjoined or room_id in self.unjoined or room_id in self.shut_out

    async def accepted(self, room_id: str, inviter: str) -> None:
        """Joined after an invite: a configured Space is watched, a child protected."""
        log.info("space_room_invited", room_id=room_id, inviter=inviter)
        if room_id in self.unjoined:
            for space in self.configured:
                if await self.bot.hs.room_id(space) == room_id:
                    await self._join_root(space)
        self._retry.pop(room_id, None)
        try:
            await self.reconcile(announce=True)
        except Exception as err:  # an invite's walk failing never stops the sync loop
            log.exception("space_walk_failed", error=repr(err))

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

    async def reconcile(self, *, announce: bool) -> None:
        """Walk the Spaces, protect what they name now and stop protecting what they no longer
        name, each change said in the management room (one walk at a time)."""
        async with self._lock:
            self.root_problems.pop("*", None)
            for space in self.configured:
                if space not in self.roots:
                    await self._join_root(space)  # it could not be joined before: try again
            found = await self._walk()
            await self._apply(found, announce=announce)

    async def _walk(self) -> dict[str, Found]:
        """Every room and sub-Space reachable from the roots, breadth first, each joined (a
        sub-Space must be, to be watched; a room, to know it is not a Space)."""
        found: dict[str, Found] = {}
        replaced = self._replaced = await self.bot.ledger.room_upgrades()
        joined = set(await self.bot.hs.joined_rooms())
        level = list(dict.fromkeys(self.roots.values()))
        seen = set(level)
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)
        taken = 0  # rooms and sub-Spaces the bot is in, so far
        while level:
            wanted: list[tuple[str, str, list[str]]] = []
            for space in level:
                for named, via in self.bot.store.room(space).space_children().items():
                    # A child upgraded since the Space named it: its replacement is the child.
                    child = _latest(named, replaced)
                    if child in seen:
                        continue
                    seen.add(child)
                    known = child in self.rooms or child in self.spaces
                    # Only what the bot is in counts toward the cap (a Space full of rooms that
                    # do not exist pushes out nothing), and a room it protects stays protected.
                    if taken + len(wanted) >= MAX_ROOMS and not known:
                        found[child] = Found(space, "skipped", f"over the limit of {MAX_ROOMS} rooms from Spaces")
                        continue
                    skip = self._not_protectable(child)
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
                taken += what.kind in ("room", "space")
                if what.kind == "space":
                    level.append(child)
            if len(found) > 20:
                log.info("walking_spaces", rooms=len(found))
        return found

    def _not_protectable(self, room_id: str) -> str | None:
        """Why a Space's child is never protected because the Space names it, or ``None``."""
        bot = self.bot
        if room_id == bot.store.management_id:
            return "the management room"
        if bot.policies.is_list_room(room_id) or room_id == bot.policies.publish_room:
            return "a policy list"
        if Role.DIRECT in bot.host.roles_of(room_id):
            return "a direct chat with me"
        return None

    async def _classify(self, room_id: str, space: str, via: Sequence[str], joined: set[str]) -> Found:
        """Join ``room_id`` when the bot is not in it (a room's earlier history stays history),
        and tell a sub-Space from a room."""
        store = self.bot.store
        if store.is_protected(room_id):
            return Found(space, "room")  # protected already (the config, an upgrade): still a room
        shut = store.known(room_id) and store.room(room_id).is_space
        if room_id not in joined and self._retry.get(room_id, 0.0) > time.monotonic():
            earlier = self.problems.get(room_id) or self.shut_out.get(room_id)
            detail = earlier.detail if earlier and earlier.detail else "I cannot join it; invite me"
            return Found(space, "space" if shut else "unjoinable", detail)
        try:
            if room_id in joined:
                await self.bot.ensure_state(room_id)
            else:
                await self.bot.join_watched(room_id, via=via)
        except (MatrixError, HomeserverUnavailable) as err:
            self._retry[room_id] = time.monotonic() + RETRY_S
            if shut:
                # A sub-Space that shut the bot out: walked as it last stood, as a root is.
                return Found(space, "space", f"I am no longer in it ({_short(str(err))}); invite me")
            return Found(space, "unjoinable", f"I cannot join it: {_short(str(err))}; invite me")
        self._retry.pop(room_id, None)
        return Found(space, "space" if store.room(room_id).is_space else "room")

    async def _apply(self, found: Mapping[str, Found], *, announce: bool) -> None:
        """Make the protected rooms what the walk found, in durable order, and say what changed:
        each room is recorded ``adding``, protected (with the sanctions in force), its line
        recorded to be posted, then marked ``protected``; a crash anywhere redoes it at start,
        and the line, keyed by the room and when its adding began, is posted once."""
        store = self.bot.store
        self.spaces = {**{root: root for root in self.roots.values()}}
        self.spaces.update({room: what.space_id for room, what in found.items() if what.kind == "space"})
        self.problems = {room: what for room, what in found.items() if what.kind in ("unjoinable", "skipped")}
        self.shut_out = {room: what for room, what in found.items() if what.kind == "space" and what.detail}
        for room, what in self.problems.items():
            if what.kind == "skipped":
                log.info("space_room_skipped", room_id=room, why=what.detail)
        rows = await self._rows()
        # At a first start the start line says it all; after that, whatever changed is said.
        say = announce or bool(rows)
        for room, what in found.items():
            if what.kind != "room":
                continue
            if room in self.rooms:
                if self.rooms[room] != what.space_id:  # still named, now by another Space
                    self._move(room, what.space_id)
                    await self._record(room, what, "protected")
                continue
            since = await self._record(room, what, "adding")
            try:
                new = await self.bot.protect_room(room, self._origin(what.space_id))
            except (MatrixError, HomeserverUnavailable) as err:
                self.problems[room] = Found(what.space_id, "unjoinable", f"I cannot join it: {_short(str(err))}")
                await self._record(room, self.problems[room], "unjoinable")
                continue
            self.rooms[room] = what.space_id
            line = f"🛡️ Now protecting {self._room(room)}, a room of the Space {self._label(what.space_id)}."
            posts = await self._line(f"space-added:{room}:{since}", line) if say and new else []
            await self._record(room, what, "protected")
            await self.bot.outbox.run(posts)
            log.info("space_room_protected", room_id=room, space_id=what.space_id)
        # A Space the bot cannot read (not joined, a sub-Space it was shut out of before its
        # state was known) hides its rooms from this walk: they are not taken as removed.
        blind = bool(self.root_problems) or any(
            rows.get(room, {}).get("kind") == "space" for room, what in found.items() if what.kind == "unjoinable"
        )
        if blind:
            log.warning("space_walk_incomplete", rooms_kept=len([r for r in self.rooms if r not in found]))
        for room in [room for room in self.rooms if not blind and found.get(room, Found("", "")).kind != "room"]:
            space = self.rooms.pop(room)
            gone = store.unprotect(room, self._origin(space))
            since = rows.get(room, {}).get("since", 0)
            kept = "" if gone else f" ({', '.join(ORIGIN_WORDS.get(o, o) for o in store.origins(room))})"
            line = f"➖ {self._room(room)} is no longer a room of the Space {self._label(space)}: " + (
                "I stopped protecting it." if gone else f"it stays protected{kept}."
            )
            if room in self._replaced:
                line = f"{self._room(room)} was upgraded to {self._replaced[room]}: its replacement is the room now."
            posts = await self._line(f"space-removed:{room}:{since}", line)
            await self._record(room, Found(space, "room"), "removed")
            await self.bot.outbox.run(posts)
            log.info("space_room_unprotected", room_id=room, space_id=space, still_protected=not gone)
        for room, what in self.problems.items():
            if what.kind != "unjoinable" or rows.get(room, {}).get("state") == "unjoinable":
                continue
            since = await self._record(room, what, "unjoinable")
            if say:
                line = f"⚠️ {room}, a room of the Space {self._label(what.space_id)}: {what.detail}."
                await self.bot.outbox.run(await self._line(f"space-unjoinable:{room}:{since}", line))
        for room, row in rows.items():
            if row["kind"] == "space" and row["state"] == "watched" and room not in self.spaces:
                await self._record(room, Found(str(row["space_id"]), "space"), "removed")
                log.info("space_unwatched", room_id=room)
        for room, what in found.items():
            if what.kind == "space" and rows.get(room, {}).get("state") != "watched":
                await self._record(room, what, "watched")
                log.info("space_watched", room_id=room, space_id=what.space_id)

    def _origin(self, space_id: str) -> str:
        """``space`` for a room a configured Space names itself, ``subspace`` for one named only
        further down (see :meth:`abusebot.rooms.RoomStore.vouched`)."""
        return ORIGIN if space_id in self.roots.values() or space_id in self._configured_ids else SUB_ORIGIN

    def _move(self, room: str, space_id: str) -> None:
        store = self.bot.store
        before, after = self._origin(self.rooms[room]), self._origin(space_id)
        store.protect(room, origin=after)
        if before != after:
            store.unprotect(room, before)
        self.rooms[room] = space_id

    async def _line(self, key: str, line: str) -> list[Any]:
        """Record one line for the management room, keyed (a redo posts it once)."""
        message = Message(line, html.escape(line))
        return list(await self.bot.ledger.add_intents([self.bot.moderation.post_intent(message, key=key)]))

    # -- the ledger ----------------------------------------------------------------------------

    async def _rows(self) -> dict[str, dict[str, Any]]:
        rows = await self.bot.ledger.fetch("SELECT room_id, space_id, kind, state, detail, since FROM space_rooms")
        return {
            row[0]: {"space_id": row[1], "kind": row[2], "state": row[3], "detail": row[4], "since": row[5]}
            for row in rows
        }

    async def _record(self, room_id: str, what: Found, state: str) -> int:
        """Upsert the room's row; returns since when it has been in ``state``."""
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
            async with db.execute("SELECT since FROM space_rooms WHERE room_id = ?", (room_id,)) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- what it says --------------------------------------------------------------------------

    def _label(self, room_id: str) -> str:
        return _short(str(self.bot.store.label(room_id)))

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
        for room, what in sorted(self.shut_out.items()):
            lines.append(f"the sub-Space {self._room(room)}: {what.detail}; I keep its rooms as it last listed them")
        for room, what in sorted(self.problems.items()):
            if what.kind == "unjoinable":
                lines.append(f"{room} (in the Space {self._label(what.space_id)}): {what.detail}")
        skipped = sum(1 for what in self.problems.values() if what.kind == "skipped")
        if skipped:
            lines.append(f"{skipped} room(s) named by a Space that I do not protect (see the log)")
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


def _latest(room_id: str, replaced: Mapping[str, str]) -> str:
    """The room ``room_id`` became through its upgrades (a few at most; a loop stops)."""
    for _ in range(10):
        if room_id not in replaced:
            break
        room_id = replaced[room_id]
    return room_id


def _short(text: str) -> str:
    """``text`` cut to :data:`LABEL_CHARS` (a room name or an error chosen by someone else)."""
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


@feature("spaces")
def _factory(bot: Any) -> Feature:
    return SpacesFeature(bot)
