"""The one durable write path: every write to the homeserver is an intent in the ledger first.

Order, always: **record** what will be done (an outbox row, in the same transaction as the
infraction or audit rows that motivate it), **do** it idempotently, **mark** it done or failed.
Never the other way round. A crash between record and mark leaves a ``pending`` row, which
:meth:`Outbox.resume` carries out at the next start, before any new event is handled.

Idempotent, kind by kind:

* ``ban`` / ``unban`` / ``kick``: a refusal is checked against the membership in force; a ban
  already in place (or a user already gone) counts as done.
* ``redact`` / ``send`` / ``dm``: the transaction id derives from the row's key, so a resent
  request is deduplicated by the homeserver. A ``dm`` whose room creation was cut short finds
  the room it created instead of making a second one.
* ``power`` / ``join_rule`` / ``acl``: a change, not a whole state event. It is applied to a
  fresh read, under one lock per (room, event type), so concurrent changes never lose each
  other; ``only_if`` makes a restore a no-op when someone changed the value since; a mute's
  previous level is recorded before its write, so a resumed mute restores the right level.

Nothing else in abusebot calls the write API (a test greps for it): protections, policy lists,
commands, the scheduler and features produce intents, :class:`Outbox` executes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import structlog

from abusebot.ledger import Infraction, IntentRow, Ledger, NewIntent
from abusebot.matrix import API, Api, HomeserverUnavailable, MatrixError, Priority, q, txn_id
from abusebot.power import PowerLevels

log = structlog.get_logger("abusebot.outbox")

#: The name a DM room created for notices gets (and how a cut-short creation is found again).
DM_ROOM_NAME = "Moderation notices"
#: Times a power-level change is applied again after someone else's write crossed it.
CONFLICT_RETRIES = 3
#: Every kind of intent the executor knows.
KINDS = ("ban", "unban", "kick", "redact", "send", "dm", "power", "join_rule", "acl", "state")
#: State event types whose changes are serialised (a read-modify-write each).
SERIALISED = {"power": "m.room.power_levels", "join_rule": "m.room.join_rules", "acl": "m.room.server_acl"}
DEFAULT_PRIORITY = {
    "ban": Priority.BAN,
    "unban": Priority.MEMBERSHIP,
    "kick": Priority.MEMBERSHIP,
    "power": Priority.MEMBERSHIP,
    "redact": Priority.REDACT,
    "join_rule": Priority.BAN,
    "acl": Priority.BAN,
    "state": Priority.STATE,
    "send": Priority.MESSAGE,
    "dm": Priority.MESSAGE,
}


@attrs.frozen
class Result:
    """How an intent ended: ``ok``; what it learned (an event id, a previous level); why not."""

    ok: bool
    value: Mapping[str, Any] = attrs.field(factory=dict)
    error: str | None = None


def intent(
    kind: str, room_id: str, *, key: str | None = None, priority: int | None = None, **payload: Any
) -> NewIntent:
    """A :class:`NewIntent` with the kind's default priority."""
    if kind not in KINDS:
        raise ValueError(f"unknown intent kind {kind!r}")
    return NewIntent(kind, room_id, payload, DEFAULT_PRIORITY[kind] if priority is None else priority, key)


class Outbox:
    """Records intents and carries them out, once each."""

    def __init__(self, ledger: Ledger, api: Api) -> None:
        self.ledger = ledger
        self.api = api
        self._state_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._dm_locks: dict[str, asyncio.Lock] = {}
        #: Rows being executed in this process, with their outcome: a second ``run`` of one row
        #: (a replay racing its original) waits for the first instead of acting twice.
        self._running: dict[int, asyncio.Future[Result]] = {}
        self.failed_count = 0
        self.done_count = 0
        #: Told each intent's kind and whether it succeeded (the metrics), when set.
        self.on_result: Callable[[str, bool], None] | None = None
        #: Told (user, room) when a notices room is made or found: the user's replies there are
        #: read (ModMail, appeals), so the room must be known before they come.
        self.dm_room_listeners: list[Callable[[str, str], None]] = []
        #: Rows running behind everything (:meth:`run_behind`).
        self.background: set[asyncio.Task[None]] = set()

    # -- recording and running ---------------------------------------------------------------------

    async def do(self, new: NewIntent, claim: tuple[str, str] | None = None) -> Result:
        """Record one intent and carry it out."""
        [row] = await self.ledger.add_intents([new], claim)
        return await self.run_one(row)

    async def do_all(self, intents: Sequence[NewIntent]) -> list[Result]:
        """Record intents in one transaction and carry them out concurrently."""
        rows = await self.ledger.add_intents(intents)
        return await self.run(rows)

    async def run(self, rows: Sequence[IntentRow]) -> list[Result]:
        """Carry out recorded rows concurrently; one result per row, in order."""
        return list(await asyncio.gather(*(self.run_one(row) for row in rows)))

    async def run_one(self, row: IntentRow) -> Result:
        """Carry out one row (at most once at a time in this process); a row already answered
        gives its recorded result without acting again."""
        if row.state != "pending":
            return Result(row.state == "done", row.result, row.error)
        running = self._running.get(row.id)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._running[row.id] = future
        try:
            # Read again now that this run holds the row: a snapshot taken before another run
            # marked it must not act a second time, and a resumed mute must see what was noted.
            fresh = await self.ledger.intent(row.id)
            if fresh is None or fresh.state != "pending":
                answered = Result(fresh is not None and fresh.state == "done", *(_recorded(fresh)))
                future.set_result(answered)
                return answered
            row = fresh
            lifted = await self._lifted(row)
            if lifted is not None:
                # A sanction lifted before this part of it ran (a room protected later, its bans
                # queued behind everything): doing it now would outlive the lift for good.
                stale = f"not done: #{lifted.id} is {lifted.state}"
                await self.ledger.finish_intent(row.id, "failed", error=stale)
                answered = Result(False, error=stale)
                future.set_result(answered)
                log.info("intent_dropped", intent_id=row.id, kind=row.kind, room_id=row.room_id, why=stale)
                return answered
            try:
                result = await self._execute(row)
            except (MatrixError, HomeserverUnavailable) as err:
                result = Result(False, error=str(err))
            except Exception as err:  # a bug in one intent never takes the others down
                log.exception("intent_crashed", intent_id=row.id, kind=row.kind, error=repr(err))
                result = Result(False, error=f"{type(err).__name__}: {err}")
            await self.ledger.finish_intent(row.id, "done" if result.ok else "failed", dict(result.value), result.error)
        except BaseException:
            future.cancel()  # cut short (cancelled, or the process dies): the row stays pending
            raise
        finally:
            # Only once the row is marked: a second run of it until then waits instead of acting.
            self._running.pop(row.id, None)
        if result.ok and row.kind == "ban":
            await self._undo_if_lifted(row)
        if self.on_result is not None:
            self.on_result(row.kind, result.ok)
        if result.ok:
            self.done_count += 1
        else:
            self.failed_count += 1
            log.warning("intent_failed", intent_id=row.id, kind=row.kind, room_id=row.room_id, error=result.error)
        future.set_result(result)
        return result

    async def _undo_if_lifted(self, row: IntentRow) -> None:
        """A sanction's ban that landed after its lift had looked (the lift did not see it) is
        lifted here too, unless another ban in force covers the room."""
        lifted = await self._lifted(row)
        if lifted is None:
            return
        user = str(row.payload["user"])
        if any(other.scope in ("*", row.room_id) for other in await self.ledger.active(user, "ban")):
            return
        await self.do(intent("unban", row.room_id, user=user, reason=f"#{lifted.id} {lifted.state}"))

    async def _lifted(self, row: IntentRow) -> Infraction | None:
        """The infraction of ``row``, a sanction's own ban or mute in one room, when it is no
        longer pending or in force (the row must not run, or be undone); else ``None``."""
        if row.infraction_id is None or row.kind not in ("ban", "power") or not row.key.startswith(("ban:", "mute:")):
            return None
        inf = await self.ledger.get_infraction(row.infraction_id)
        return None if inf is None or inf.state in ("pending", "active") else inf

    async def resume(self) -> int:
        """Carry out every intent left ``pending`` (by a crash); returns how many there were.
        Those queued behind everything (a new room's bans of people not in it, perhaps
        thousands) go on in the background: the bot answers and protects meanwhile."""
        rows = await self.ledger.pending_intents()
        if rows:
            later = [row for row in rows if row.priority >= Priority.BACKGROUND]
            log.info("outbox_resume", pending=len(rows), background=len(later))
            self.run_behind(later)
            await self.run([row for row in rows if row.priority < Priority.BACKGROUND])
        return len(rows)

    def run_behind(self, rows: Sequence[IntentRow]) -> None:
        """Carry out recorded rows in the background, not waited for (hundreds of bans of
        people not in a room take the homeserver minutes). Cut short by a stop, they stay
        pending for the next start."""
        if rows:
            task = asyncio.create_task(self._run_behind(rows))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def _run_behind(self, rows: Sequence[IntentRow]) -> None:
        try:
            results = await self.run(rows)
        except Exception as err:  # left pending: the next start tries again
            log.exception("background_intents_failed", rows=len(rows), error=repr(err))
            return
        done = sum(result.ok for result in results)
        log.info("background_intents_done", rows=len(rows), done=done, failed=len(rows) - done)

    # -- the kinds -----------------------------------------------------------------------------------

    async def _execute(self, row: IntentRow) -> Result:
        p = row.payload
        if row.kind in ("ban", "unban", "kick"):
            return await self._membership(row.kind, row.room_id, str(p["user"]), str(p.get("reason", "")), row.priority)
        if row.kind == "redact":
            await self.api.redact(
                row.room_id, str(p["event_id"]), str(p.get("reason", "")), txn=txn_id(row.key), priority=row.priority
            )
            return Result(True)
        if row.kind == "send":
            if isinstance(p.get("reinvite"), str):
                await self._reinvite(row.room_id, str(p["reinvite"]))
            event_id = await self.api.send(
                row.room_id,
                dict(p["content"]),
                event_type=str(p.get("event_type", "m.room.message")),
                txn=txn_id(row.key),
                priority=row.priority,
            )
            return Result(True, {"event_id": event_id})
        if row.kind == "dm":
            return await self._dm(row)
        if row.kind in SERIALISED:
            async with self.state_lock(row.room_id, SERIALISED[row.kind]):
                return await self._change_state(row)
        if row.kind == "state":
            event_id = await self.api.put_state(
                row.room_id, str(p["event_type"]), str(p.get("state_key", "")), dict(p["content"]), row.priority
            )
            return Result(True, {"event_id": event_id})
        return Result(False, error=f"unknown intent kind {row.kind!r}")

    async def _membership(self, action: str, room_id: str, user: str, reason: str, priority: int) -> Result:
        try:
            if action == "ban":
                await self.api.ban(room_id, user, reason, priority)
            elif action == "unban":
                await self.api.unban(room_id, user, reason, priority)
            else:
                await self.api.kick(room_id, user, reason, priority)
            return Result(True)
        except MatrixError:
            membership = await self._current_membership(room_id, user)
            if membership == "unknown":
                raise
            already = {
                "ban": membership == "ban",
                "unban": membership != "ban",
                "kick": membership in ("leave", "ban", None),
            }[action]
            if already:
                return Result(True, {"already": membership or "none"})
            raise

    async def _current_membership(self, room_id: str, user: str) -> str | None:
        try:
            content = await self.api.hs.state_event(room_id, "m.room.member", user)
        except (MatrixError, HomeserverUnavailable):
            return "unknown"
        value = (content or {}).get("membership")
        return value if isinstance(value, str) else None

    def state_lock(self, room_id: str, event_type: str) -> asyncio.Lock:
        """The lock that serialises read-modify-writes of one state event."""
        return self._state_locks.setdefault((room_id, event_type), asyncio.Lock())

    async def _change_state(self, row: IntentRow) -> Result:
        """Apply a power-level, join-rule or ACL change to a fresh read (the caller holds the lock)."""
        p = row.payload
        event_type = SERIALISED[row.kind]
        if row.kind == "power":
            return await self._change_power(row)
        if row.kind == "join_rule":
            whole = await self._state_event_whole(row.room_id, event_type)
            found_event = whole.get("event_id")
            found_rule = (
                (whole.get("content") or {}).get("join_rule") if isinstance(whole.get("content"), Mapping) else None
            )
            if "only_if_event" in p and p["only_if_event"] is not None and found_event != p["only_if_event"]:
                return Result(True, {"left_alone": True, "found": found_rule})
            if "only_if_rule" in p and found_rule != p["only_if_rule"]:
                return Result(True, {"left_alone": True, "found": found_rule})
            content = dict(p["content"])
            event_id = await self.api.put_state(row.room_id, event_type, "", content, row.priority)
            return Result(True, {"event_id": event_id, "found": found_rule})
        # acl: the wanted ACL, unless it is already in force
        current = await self.api.hs.state_event(row.room_id, event_type) or {}
        wanted = dict(p["content"])
        if {k: current.get(k) for k in wanted} == wanted:
            return Result(True, {"unchanged": True})
        event_id = await self.api.put_state(row.room_id, event_type, "", wanted, row.priority)
        return Result(True, {"event_id": event_id})

    async def _change_power(self, row: IntentRow) -> Result:
        """Set one user's level on a fresh read. Matrix has no compare-and-swap, so a write by
        someone else between our read and our write would be lost: the event our write replaced
        tells. If it is not the one we read, our change is applied again on top of theirs."""
        p = row.payload
        user = str(p["user"])
        read = await self._state_event_whole(row.room_id, "m.room.power_levels")
        current = _content(read)
        users = dict(current.get("users") or {})
        before = users.get(user)
        noted = dict(row.result)
        if "previous" not in noted:
            # Record what we replace before replacing it: a resumed mute must not take its own
            # muted level for the user's old one. A mute of someone already muted carries the
            # level from before the first mute (``carry_previous``), not the muted one.
            previous = p.get("carry_previous", before)
            noted = {"previous": previous, "had_entry": user in users}
            await self.ledger.note_intent(row.id, noted)
        if "only_if" in p and before != p["only_if"]:
            return Result(True, {**noted, "left_alone": True, "found": before})
        level = p.get("level")
        if level == "muted":
            level = PowerLevels.from_content(current).muted_level()
        read_id = read.get("event_id")
        for _attempt in range(CONFLICT_RETRIES):
            users = dict(current.get("users") or {})
            if level is None:
                users.pop(user, None)
            else:
                users[user] = level
            if users == dict(current.get("users") or {}):
                return Result(True, {**noted, "level": level, "unchanged": True})
            event_id = await self.api.put_state(
                row.room_id, "m.room.power_levels", "", {**current, "users": users}, row.priority
            )
            replaced = await self._replaced(row.room_id, event_id)
            if replaced is None or read_id is None or replaced == read_id:
                return Result(True, {**noted, "level": level})
            # Someone wrote between our read and our write: theirs is the event we replaced.
            log.warning("state_write_conflict", room_id=row.room_id, ours=event_id, theirs=replaced)
            theirs = await self._event(row.room_id, replaced)
            current, read_id = _content(theirs), replaced
            if "users" not in current:
                break
        return Result(True, {**noted, "level": level, "conflict": True})

    async def _replaced(self, room_id: str, event_id: str) -> str | None:
        """The state event ``event_id`` replaced (the homeserver says, in ``unsigned``)."""
        event = await self._event(room_id, event_id)
        unsigned = event.get("unsigned")
        replaced = unsigned.get("replaces_state") if isinstance(unsigned, Mapping) else None
        return replaced if isinstance(replaced, str) else None

    async def _event(self, room_id: str, event_id: str) -> Mapping[str, Any]:
        try:
            reply = await self.api.hs.request("GET", f"{API}/rooms/{q(room_id)}/event/{q(event_id)}")
        except MatrixError:
            return {}
        return reply if isinstance(reply, Mapping) else {}

    async def _state_event_whole(self, room_id: str, event_type: str) -> Mapping[str, Any]:
        """The state event with its id (who set it tells whether it is still ours)."""
        try:
            reply = await self.api.hs.request(
                "GET", f"{API}/rooms/{q(room_id)}/state/{q(event_type)}/", query={"format": "event"}
            )
        except MatrixError as err:
            if err.status == 404:
                return {}
            raise
        return reply if isinstance(reply, Mapping) else {}

    async def _dm(self, row: IntentRow) -> Result:
        user = str(row.payload["user"])
        async with self._dm_locks.setdefault(user, asyncio.Lock()):
            room_id = await self.ledger.dm_room(user)
            known = room_id is not None
            if room_id is None and row.result.get("creating"):
                room_id = await self._find_dm_room(user)  # a creation cut short by a crash
            if room_id is None:
                await self.ledger.note_intent(row.id, {"creating": True})
                room_id = await self.api.create_room(
                    {"invite": [user], "is_direct": True, "preset": "trusted_private_chat", "name": DM_ROOM_NAME}
                )
            await self.ledger.set_dm_room(user, room_id)
            for listener in self.dm_room_listeners:
                listener(user, room_id)
            if known and row.payload.get("reinvite"):
                await self._reinvite(room_id, user)  # they left it: what is sent must reach them
        event_id = await self.api.send(
            room_id, dict(row.payload["content"]), txn=txn_id(row.key), priority=row.priority
        )
        return Result(True, {"event_id": event_id, "room_id": room_id})

    async def _reinvite(self, room_id: str, user: str) -> None:
        """Invite ``user`` back to a room of theirs they left, so what is sent there reaches them."""
        if await self._current_membership(room_id, user) in ("leave", None):
            await self.api.invite(room_id, user)

    async def _find_dm_room(self, user: str) -> str | None:
        """The notices room the bot made for ``user`` before a crash, if the homeserver has one."""
        for room_id in await self.api.hs.joined_rooms():
            with contextlib.suppress(MatrixError, HomeserverUnavailable):
                name = await self.api.hs.state_event(room_id, "m.room.name") or {}
                member = await self.api.hs.state_event(room_id, "m.room.member", user) or {}
                if name.get("name") == DM_ROOM_NAME and member.get("membership") in ("invite", "join", "leave"):
                    return str(room_id)
        return None


def _content(event: Mapping[str, Any]) -> dict[str, Any]:
    content = event.get("content")
    return dict(content) if isinstance(content, Mapping) else {}


def _recorded(row: IntentRow | None) -> tuple[Mapping[str, Any], str | None]:
    return ({}, "the intent is gone") if row is None else (row.result, row.error)


def text_content(text: str) -> dict[str, Any]:
    """A plain notice's content (HTML-escaped for the formatted body)."""
    return {
        "msgtype": "m.notice",
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": html.escape(text),
    }
