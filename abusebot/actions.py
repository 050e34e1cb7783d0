"""Moderation actions: the one layer that decides *how* to act on anyone's behalf.

Commands, protections and policy lists all call :class:`Moderation`. Each action:

1. checks :func:`abusebot.safety.refusal` for every room in scope (and refuses as a whole);
2. records, in one transaction, the infraction (``pending``), the intents that carry it out
   (the ban in each room, the user's notice) and the replay claim of its source event;
3. has the :class:`~abusebot.outbox.Outbox` carry the intents out (for bans, a notice goes
   first when a DM room exists, so the user hears it from us);
4. moves the infraction to ``active`` (or ``failed``: never deleted), schedules its lift, and
   records its management-room line as one more intent, in one transaction.

A crash anywhere in between leaves a ``pending`` infraction with its intents: :meth:`Moderation.resume`
carries out what was not answered and settles it at the next start, before new events. The
same request again (a replayed command or violation) finds its record and acts no more.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import structlog

from abusebot.audit import Message, action_line, fit, scope_label, user_notice
from abusebot.config import Config
from abusebot.ledger import ALL_ROOMS, Infraction, IntentRow, Ledger, NewIntent, Recorded
from abusebot.matrix import Api, HomeserverUnavailable, MatrixError, Priority
from abusebot.outbox import Outbox, Result, intent
from abusebot.rooms import ACTIVE, RoomStore
from abusebot.safety import ACTION_POWERS, Staff, beyond_reach, can_command, cannot_act, refusal

log = structlog.get_logger("abusebot.actions")

#: How long a DM may hold up a ban (it is sent first, but a slow DM must not shield a spammer).
DM_BEFORE_BAN_TIMEOUT = 0.5


@attrs.frozen
class Scope:
    """Where an action applies: all protected rooms (``key == "*"``) or one room."""

    key: str
    rooms: tuple[str, ...]

    @classmethod
    def everywhere(cls, store: RoomStore) -> Scope:
        """All protected rooms."""
        return cls(ALL_ROOMS, tuple(store.protected))

    @classmethod
    def room(cls, room_id: str) -> Scope:
        """One room."""
        return cls(room_id, (room_id,))


@attrs.frozen
class Outcome:
    """What happened: ``summary`` in words for the command reply, ``line`` the audit line (in the
    management room the reply *is* the audit line: one message per action)."""

    ok: bool
    summary: str
    infraction: Infraction | None = None
    refused: bool = False
    line: Message | None = None


@attrs.frozen
class Actor:
    """Who asks: a moderator's user id or a protection/list name, and where the request came from."""

    name: str
    origin: str  # command | protection | policy_list | system
    event_id: str | None = None
    #: True for a command from a protected room's admin: they may touch only users below their
    #: own power level there (management-room moderators keep the bot's reach).
    bounded: bool = False
    #: True for a command typed in the management room: its reply is the audit line, so the
    #: action posts no second message there.
    reply_is_audit: bool = False
    #: The room of the request's event (a command's reply goes there).
    room_id: str | None = None
    #: The thread the command was typed in (a case's thread in the management room), if any.
    thread: str | None = None
    #: The command as typed, its line breaks kept (what a relayed reply says).
    text: str | None = None
    #: When the request was made (its event's server time, ms), if known.
    at: int | None = None

    @property
    def commander(self) -> str | None:
        """The user whose power level bounds this request's reach, or ``None``."""
        return self.name if self.bounded else None


class Moderation:
    """Bans, kicks, mutes, redactions, warnings and notes, recorded and reported."""

    def __init__(
        self,
        *,
        config: Config,
        ledger: Ledger,
        api: Api,
        store: RoomStore,
        bot_user_id: str,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.api = api
        self.outbox = outbox or Outbox(ledger, api)
        self.store = store
        self.bot_user_id = bot_user_id
        self.wake_scheduler: asyncio.Event = asyncio.Event()
        #: Infractions being carried out in this process, with their outcome to come.
        self._settling: dict[int, asyncio.Future[Outcome]] = {}

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def staff(self) -> Staff:
        """The bot and the moderators, as the management room says now."""
        return Staff(
            bot_user_id=self.bot_user_id,
            management=self.store.room(self.store.management_id),
            moderator_level=self.config.moderator_power_level,
        )

    def check(self, subject: str, scope: Scope, actor: Actor | None = None, action: str = "ban") -> str | None:
        """The refusal for acting on ``subject`` anywhere in ``scope`` (for ``actor``), or ``None``.

        Rooms where the bot lacks the power for ``action`` are left out here: they cannot be
        acted in, which :meth:`reachable` reports, but they do not shield the user elsewhere.
        A user out of reach in any room (its admin or creator) is out of reach everywhere: the
        bot is never turned against the community's own staff. A room the community does not
        vouch for (reached through a sub-Space, :meth:`RoomStore.vouched`) shields a user only
        there: :meth:`reachable` leaves it out for them.
        """
        staff = self.staff
        reason = refusal(subject, None, staff)
        if reason:
            return reason
        commander = actor.commander if actor is not None else None
        # A warning needs no power of its own; the rooms that count are those the bot moderates.
        power_of = action if ACTION_POWERS.get(action) else "ban"
        for room_id in scope.rooms:
            room = self.store.room(room_id)
            if cannot_act(room, self.bot_user_id, power_of):
                continue
            if commander is None and not self.store.vouched(room_id) and len(scope.rooms) > 1:
                continue  # out of reach there only (see :meth:`reachable`)
            reason = refusal(subject, room, staff, commander)
            if reason:
                return reason
        return None

    def reachable(self, scope: Scope, action: str, subject: str | None = None) -> tuple[Scope, dict[str, str]]:
        """``scope`` narrowed to the rooms where the bot has the power for ``action`` (and, for
        ``subject``, the rooms not vouched for where they are out of reach), and why each other
        room is left out (named in the reply: the bot acts where it can)."""
        skipped: dict[str, str] = {}
        rooms: list[str] = []
        staff = self.staff if subject is not None else None
        for room_id in scope.rooms:
            why = cannot_act(self.store.room(room_id), self.bot_user_id, action)
            if why is None and staff is not None and subject is not None and not self.store.vouched(room_id):
                why = refusal(subject, self.store.room(room_id), staff)
            if why:
                skipped[room_id] = why
            else:
                rooms.append(room_id)
        return Scope(scope.key, tuple(rooms)), skipped

    @property
    def community(self) -> str:
        """The community's name for people: ``community.name``, else the first protected room's."""
        if self.config.community_name:
            return self.config.community_name
        for room_id in self.store.protected:
            name = self.store.room(room_id).name
            if name:
                return name
        return "our community"

    def where(self, scope: Scope) -> str:
        """A human label for a scope: the community's name, or one room's."""
        return self.label_scope(scope.key)

    def label_scope(self, key: str) -> str:
        """A human label for a scope key (``*``: the community's name; else the room's)."""
        if key == ALL_ROOMS:
            return self.community
        return scope_label(key, {key: self.store.label(key)})

    def skipped_text(self, skipped: dict[str, str]) -> str:
        """ "not in: Go (I lack the power to ban (needs 50, I have 0))" for the reply."""
        return "not in: " + "; ".join(f"{self.store.label(room)} ({why})" for room, why in skipped.items())

    async def report(self, actor: Actor, line: Message) -> None:
        """Post an action's audit line, unless the command's reply in the management room is it."""
        if not actor.reply_is_audit:
            await self.post(line)

    def post_intent(self, message: Message, key: str | None = None, reply_to: str | None = None) -> NewIntent:
        """The intent of posting ``message`` to the management room (cut to fit one event)."""
        return self.send_intent(self.store.management_id, message, key=key, reply_to=reply_to)

    @staticmethod
    def send_intent(
        room_id: str,
        message: Message,
        key: str | None = None,
        reply_to: str | None = None,
        thread: str | None = None,
        mentions: Sequence[str] | None = None,
        msgtype: str = "m.notice",
        reinvite: str | None = None,
    ) -> NewIntent:
        """The intent of sending ``message`` to ``room_id`` (as a reply to ``reply_to``, in the
        thread of ``thread``). ``mentions``: the users it notifies (``m.mentions``; none when
        empty, so no word in a relayed text can ping the room); ``None`` leaves it to clients.
        ``msgtype``: a notice by default (push rules never notify of one); ``m.text`` to notify.
        ``reinvite``: a user invited back first when they left the room (an answer they wait for)."""
        content: dict[str, Any] = fit(message).content(msgtype)
        if thread is not None:
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": thread,
                "is_falling_back": reply_to is None,
                "m.in_reply_to": {"event_id": reply_to or thread},
            }
        elif reply_to is not None:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        if mentions is not None:
            content["m.mentions"] = {"user_ids": sorted(set(mentions))} if mentions else {}
        if reinvite is not None:
            return intent("send", room_id, key=key, content=content, reinvite=reinvite)
        return intent("send", room_id, key=key, content=content)

    async def post(self, message: Message) -> None:
        """Post to the management room; never raises (the ledger already has the record)."""
        result = await self.outbox.do(self.post_intent(message))
        if not result.ok:
            log.error("management_post_failed", error=result.error)

    def dm_intent(self, user_id: str, message: Message, key: str | None = None, reinvite: bool = False) -> NewIntent:
        """The intent of telling ``user_id`` by direct message (the room made once; ``reinvite``:
        invited back first when they left it — an answer they are waiting for)."""
        if reinvite:
            return intent("dm", "", key=key, user=user_id, content=message.content(), reinvite=True)
        return intent("dm", "", key=key, user=user_id, content=message.content())

    async def tell_user(self, user_id: str, message: Message) -> bool:
        """DM the user (creating the DM room once); True when the message was sent."""
        if not self.config.notify_users:
            return False
        result = await self.outbox.do(self.dm_intent(user_id, message))
        if not result.ok:
            log.warning("dm_failed", user_id=user_id, error=result.error)
        return result.ok

    async def dm_room(self, user_id: str) -> str | None:
        """The room the bot DMs ``user_id`` in, if it made one already."""
        return await self.ledger.dm_room(user_id)

    def _notice(
        self,
        kind: str,
        scope: Scope,
        reason: str | None,
        duration_s: int | None,
        infraction_id: int | None,
        next_step: str | None = None,
    ) -> Message:
        return user_notice(
            kind=kind,
            where=self.where(scope),
            reason=reason,
            duration_s=duration_s,
            rules_url=self.config.rules_url,
            infraction_id=infraction_id,
            next_step=next_step,
            appeal=self.config.modmail.enabled,
            rules=self.config.rules,
        )

    async def _refused(self, action: str, subject: str, scope: Scope, actor: Actor) -> Outcome | None:
        """The refusal (recorded and explained) when the bot must not act on ``subject``, else None."""
        why = self.check(subject, scope, actor, action)
        return await self._refuse(action, subject, scope, actor, why) if why else None

    async def _out_of_reach(self, action: str, subject: str, scope: Scope, actor: Actor) -> Outcome | None:
        """For lifting actions (unban, unmute), which the bot may do for anyone: a room admin's
        request still stops at their own power level, as Matrix's own unban rule does."""
        if actor.commander is None:
            return None
        for room_id in scope.rooms:
            why = beyond_reach(subject, self.store.room(room_id), actor.commander)
            if why:
                return await self._refuse(action, subject, scope, actor, why)
        return None

    async def _record(
        self,
        kind: str,
        subject: str,
        reason: str,
        actor: Actor,
        scope: Scope,
        *,
        duration_s: int | None = None,
        rule: str | None = None,
        level: int | None = None,
        intents: Callable[[int], Sequence[NewIntent]] | None = None,
        claim: str | None = None,
    ) -> Recorded:
        """Record the infraction as pending with the intents that carry it out, before acting:
        a crash leaves it to resume, never lost, never done twice."""
        return await self.ledger.record_infraction(
            subject=subject,
            kind=kind,
            scope=scope.key,
            reason=reason,
            actor=actor.name,
            origin=actor.origin,
            lasts_ms=duration_s * 1000 if duration_s else None,
            rule=rule,
            level=level,
            source_event=actor.event_id,
            source_room=actor.room_id,
            intents=intents,
            claim=(actor.event_id, claim) if claim and actor.event_id else None,
        )

    async def _record_sanction(
        self,
        kind: str,
        subject: str,
        reason: str,
        actor: Actor,
        scope: Scope,
        in_room: Callable[[str, int], NewIntent],
        *,
        notify: bool,
        duration_s: int | None = None,
        next_step: str | None = None,
        rule: str | None = None,
        level: int | None = None,
        claim: str | None = None,
    ) -> Recorded:
        """Record a sanction with its intent in each room of ``scope`` and, when ``notify``, the
        user's notice (which names the infraction, so it is built inside the transaction)."""

        def intents(infraction_id: int) -> list[NewIntent]:
            rows = [in_room(room, infraction_id) for room in scope.rooms]
            if notify:
                notice = self._notice(kind, scope, reason, duration_s, infraction_id, next_step)
                rows.append(self.dm_intent(subject, notice, key=f"dm:{infraction_id}"))
            return rows

        return await self._record(
            kind,
            subject,
            reason,
            actor,
            scope,
            duration_s=duration_s,
            rule=rule,
            level=level,
            intents=intents,
            claim=claim,
        )

    async def _refuse(self, action: str, subject: str, scope: Scope, actor: Actor, why: str) -> Outcome:
        await self.ledger.audit(
            actor=actor.name,
            action=action,
            outcome="refused",
            subject=subject,
            room=scope.key,
            reason=why,
            event_id=actor.event_id,
        )
        log.info("action_refused", action=action, subject=subject, actor=actor.name, why=why)
        if actor.origin == "protection":  # nobody is waiting for a reply: the moderators are told
            text = f"⛔ {actor.name} would have applied a {action} to {subject}, but I refused: {why}"
            await self.post(Message(text, html.escape(text)))
        return Outcome(False, f"Refused: {why}", refused=True)

    @staticmethod
    def _settled(rows: Sequence[IntentRow | NewIntent], results: Sequence[Result]) -> tuple[list[str], dict[str, str]]:
        """(rooms done, {room: error}) from intents and their results."""
        done: list[str] = []
        failed: dict[str, str] = {}
        for row, result in zip(rows, results, strict=True):
            if result.ok:
                done.append(row.room_id)
            else:
                failed[row.room_id] = result.error or "failed"
        return done, failed

    async def _finish(
        self,
        infraction: Infraction,
        *,
        verb: str,
        actor: Actor,
        scope: Scope,
        done: list[str],
        failed: dict[str, str],
        undo: dict[str, Any] | None = None,
        dm_sent: bool | None = None,
        quiet: bool = False,
        skipped: dict[str, str] | None = None,
        why: str | None = None,
        reply: tuple[str, str] | None = None,
    ) -> Outcome:
        """Settle the infraction's state from the per-room results and record its line as an
        intent in the same transaction; then post it. ``reply`` (room, event): the line also
        answers that command (a resumed command's reply, deduplicated by its key)."""
        skipped = skipped or {}
        detail: dict[str, Any] = {"rooms_done": done, "rooms_failed": failed}
        if skipped:
            detail["rooms_skipped"] = skipped
        if dm_sent is not None:
            detail["dm_sent"] = dm_sent
        ok = bool(done or not (scope.rooms or skipped))
        extra = []
        if why:
            extra.append(f"why: {why}")
        if failed:
            extra.append("failed in: " + ", ".join(f"{self.store.label(r)} ({e})" for r, e in failed.items()))
        if skipped:
            extra.append(self.skipped_text(skipped))
        if dm_sent is False:
            extra.append("the user could not be notified")
        line = action_line(
            verb=verb if ok else f"FAILED to {INFINITIVES.get(infraction.kind, verb.lower())}",
            actor=actor.name,
            subject=infraction.subject,
            where=self.where(scope),
            reason=infraction.reason,
            infraction=attrs.evolve(infraction, state="active" if ok else "failed"),
            extra=extra,
        )
        posts: list[NewIntent] = []
        if reply is not None:
            room, event_id = reply
            posts.append(self.send_intent(room, _marked(ok, line), key=f"reply:{event_id}", reply_to=event_id))
        if not quiet and not actor.reply_is_audit and (reply is None or reply[0] != self.store.management_id):
            posts.append(self.post_intent(line))
        infraction = await self.ledger.update_infraction(
            infraction.id,
            state="active" if ok else "failed",
            actor=actor.name,
            undo=undo,
            schedule_lift=ok and infraction.expires_at is not None,
            detail=detail,
            intents=posts,
            claim=(reply[1], "command") if reply is not None else None,
        )
        if ok:
            self.wake_scheduler.set()
        if posts:
            await self._run_pending(infraction.id)
        log.info(
            "action",
            action=infraction.kind,
            subject=infraction.subject,
            actor=actor.name,
            infraction_id=infraction.id,
            state=infraction.state,
            rooms=len(done),
            failed=len(failed),
            skipped=len(skipped),
        )
        return Outcome(infraction.state != "failed", line.plain, infraction, line=line)

    async def _run_pending(self, infraction_id: int) -> None:
        """Carry out the infraction's intents still pending (its line and reply, just recorded)."""
        pending = [row for row in await self.ledger.intents_for(infraction_id) if row.state == "pending"]
        if pending:
            await self.outbox.run(pending)

    # -- carrying out and resuming ------------------------------------------------------------------

    async def _carry_out(
        self,
        rec: Recorded,
        *,
        actor: Actor,
        scope: Scope,
        dm_first: bool = False,
        on_enforced: Callable[[], None] | None = None,
        skipped: dict[str, str] | None = None,
        why: str | None = None,
        quiet: bool = False,
        reply: tuple[str, str] | None = None,
    ) -> Outcome:
        """Carry out a recorded infraction's intents and settle it (once, even when a replay
        asks for the same record while the first run is still going)."""
        inf = rec.infraction
        running = self._settling.get(inf.id)
        if running is not None:
            return await asyncio.shield(running)
        if not rec.fresh and inf.state != "pending":
            return _already(inf)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._settling[inf.id] = future
        try:
            outcome = await self._settle(
                inf,
                list(rec.intents),
                actor=actor,
                scope=scope,
                dm_first=dm_first,
                on_enforced=on_enforced,
                skipped=skipped,
                why=why,
                quiet=quiet,
                reply=reply,
            )
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: the caller gets it raised below
            raise
        finally:
            self._settling.pop(inf.id, None)
        future.set_result(outcome)
        return outcome

    async def _settle(
        self,
        inf: Infraction,
        rows: list[IntentRow],
        *,
        actor: Actor,
        scope: Scope,
        dm_first: bool,
        on_enforced: Callable[[], None] | None,
        skipped: dict[str, str] | None,
        why: str | None,
        quiet: bool,
        reply: tuple[str, str] | None,
    ) -> Outcome:
        primary_kind = PRIMARY.get(inf.kind)
        primary = [r for r in rows if r.kind == primary_kind]
        dms = [r for r in rows if r.kind == "dm"]
        dm_task: asyncio.Future[list[Result]] | None = None
        if dms and dm_first:
            # Tell them first when a DM room exists (one quick send); a slow DM must not shield
            # a spammer, so the ban goes out after DM_BEFORE_BAN_TIMEOUT at the latest.
            dm_task = asyncio.ensure_future(self.outbox.run(dms))
            await asyncio.wait({dm_task}, timeout=DM_BEFORE_BAN_TIMEOUT)
        results = await self.outbox.run(primary)
        if on_enforced is not None:
            on_enforced()
        done, failed = self._settled(primary, results)
        ok = bool(done) or not primary
        dm_sent: bool | None = None
        if dm_task is not None:
            dm_sent = all(result.ok for result in await dm_task)
        elif dms and ok:
            dm_sent = all(result.ok for result in await self.outbox.run(dms))
        elif dms:
            for row in dms:
                await self.ledger.finish_intent(row.id, "failed", error="not sent: the sanction did not take")
        undo: dict[str, Any] | None = None
        if inf.kind == "mute":
            undo = {
                "rooms": {
                    row.room_id: mute_entry(result.value)
                    for row, result in zip(primary, results, strict=True)
                    if result.ok
                }
            }
        if done and inf.kind in ("ban", "mute"):
            await self._supersede(inf.subject, inf.kind, Scope(inf.scope, ()), actor, inf.id)
        return await self._finish(
            inf,
            verb=VERBS[inf.kind],
            actor=actor,
            scope=Scope(scope.key, tuple(r.room_id for r in primary)) if primary else Scope(scope.key, ()),
            done=done,
            failed=failed,
            undo=undo,
            dm_sent=dm_sent,
            quiet=quiet,
            skipped=skipped,
            why=why,
            reply=reply,
        )

    async def resume(self) -> int:
        """At start, before new events: finish what a crash left half done. Returns how many
        infractions were resumed.

        1. Redactions first (pending and tied to no infraction): spam must not wait behind notices.
        2. Each ``pending`` infraction, a few at a time, *checked again*: the commander must
           still be allowed to command (a moderator demoted while the bot was down is not
           obeyed) and the subject must still be fair game (someone made a moderator meanwhile
           is not banned). A refused one is undone where it had already taken hold, and ends
           ``failed`` with the reason, said in the management room (and to the commander).
           A record from before the outbox (no intents) gets its intents now.
        3. Every other pending intent.
        """
        pending_rows = await self.ledger.pending_intents()
        await self.outbox.run([r for r in pending_rows if r.kind == "redact" and r.infraction_id is None])
        pending = await self.ledger.pending_infractions()
        gate = asyncio.Semaphore(RESUME_CONCURRENCY)

        async def one(inf: Infraction) -> None:
            async with gate:
                try:
                    await self._resume_one(inf)
                except Exception as err:  # one bad record never keeps the others from resuming
                    log.exception("infraction_resume_failed", infraction_id=inf.id, error=repr(err))

        await asyncio.gather(*(one(inf) for inf in pending))
        await self.outbox.resume()
        return len(pending)

    async def _resume_one(self, inf: Infraction) -> None:
        actor = Actor(inf.actor, inf.origin, inf.source_event, room_id=inf.source_room)
        reply = (
            (inf.source_room, inf.source_event)
            if inf.origin == "command" and inf.source_room and inf.source_event
            else None
        )
        rows = await self.ledger.intents_for(inf.id)
        primary_kind = PRIMARY.get(inf.kind)
        if primary_kind and not any(r.kind == primary_kind for r in rows):
            rows = await self._legacy_intents(inf, primary_kind)
        primary = [r for r in rows if r.kind == primary_kind]
        why = self._resume_refusal(inf, Scope(inf.scope, tuple(r.room_id for r in primary)))
        if why:
            await self._refuse_resumed(inf, rows, why, reply)
            return
        outcome = await self._carry_out(
            Recorded(inf, tuple(rows), fresh=True),
            actor=attrs.evolve(actor, bounded=inf.origin == "command" and inf.source_room != self.store.management_id),
            scope=Scope(inf.scope, tuple(r.room_id for r in primary)),
            reply=reply,
        )
        log.info("infraction_resumed", infraction_id=inf.id, kind=inf.kind, subject=inf.subject, ok=outcome.ok)

    def _resume_refusal(self, inf: Infraction, scope: Scope) -> str | None:
        """Why a resumed infraction must not go on now, or ``None``."""
        if inf.origin == "command":
            room = inf.source_room or self.store.management_id
            management = room == self.store.management_id
            if not can_command(inf.actor, self.store.room(room), self.staff, management=management):
                return f"{inf.actor} may no longer command me there"
            commander = None if management else inf.actor
        else:
            commander = None
        action = "warning" if inf.kind == "warning" else inf.kind
        if inf.kind == "note":
            return None
        return self.check(inf.subject, scope, Actor(inf.actor, inf.origin, bounded=commander is not None), action)

    async def _legacy_intents(self, inf: Infraction, primary_kind: str) -> list[IntentRow]:
        """A pending record from before the outbox: what it meant to do, as intents now. Its first
        write may have landed (a crash-left mute holds the muted level): a ban or a kick again is
        harmless; a mute's previous level is unknown, so its lift restores the room's default."""
        rooms = self.rooms_of(inf)
        if primary_kind == "power":
            rows = [
                intent("power", r, key=f"mute:{inf.id}:{r}", user=inf.subject, level="muted", carry_previous=None)
                for r in rooms
            ]
        else:
            rows = [
                intent(primary_kind, r, key=f"{primary_kind}:{inf.id}:{r}", user=inf.subject, reason=inf.reason)
                for r in rooms
            ]
        await self.ledger.add_intents(rows, infraction_id=inf.id)
        log.warning("legacy_infraction_resumed", infraction_id=inf.id, kind=inf.kind, rooms=len(rooms))
        return await self.ledger.intents_for(inf.id)

    async def _refuse_resumed(
        self, inf: Infraction, rows: Sequence[IntentRow], why: str, reply: tuple[str, str] | None
    ) -> None:
        """Stop a resumed infraction: its unanswered intents fail, what took hold is undone."""
        for row in rows:
            if row.state == "pending":
                await self.ledger.finish_intent(row.id, "failed", error=f"refused at restart: {why}")
        fresh = {row.id: row for row in await self.ledger.intents_for(inf.id)}
        applied = [row for row in fresh.values() if row.state == "done" and row.kind == PRIMARY.get(inf.kind)]
        if inf.kind == "ban" and applied:
            await self.outbox.do_all(
                [intent("unban", r.room_id, user=inf.subject, reason=f"#{inf.id} refused: {why}") for r in applied]
            )
        elif inf.kind == "mute" and applied:
            await self.outbox.do_all(
                [
                    intent(
                        "power",
                        r.room_id,
                        user=inf.subject,
                        level=r.result.get("previous"),
                        only_if=r.result.get("level"),
                    )
                    for r in applied
                ]
            )
        text = f"⛔ Not carried out after my restart: {inf.kind} #{inf.id} of {inf.subject} ({why})."
        message = Message(text, html.escape(text))
        posts = [self.post_intent(message)]
        if reply is not None and reply[0] != self.store.management_id:
            posts.append(self.send_intent(reply[0], message, key=f"reply:{reply[1]}", reply_to=reply[1]))
        elif reply is not None:
            posts = [self.send_intent(reply[0], message, key=f"reply:{reply[1]}", reply_to=reply[1])]
        await self.ledger.update_infraction(
            inf.id,
            state="failed",
            actor=self.bot_user_id,
            reason=f"refused at restart: {why}",
            intents=posts,
            claim=(reply[1], "command") if reply is not None else None,
        )
        await self._run_pending(inf.id)
        log.warning("infraction_refused_at_resume", infraction_id=inf.id, why=why)

    async def _nowhere(self, action: str, subject: str, scope: Scope, actor: Actor, skipped: dict[str, str]) -> Outcome:
        """The reply when the bot can act in none of the rooms (recorded as a failure)."""
        text = f"Could not {action} {subject} anywhere: {self.skipped_text(skipped)}"
        await self.ledger.audit(
            actor=actor.name,
            action=action,
            outcome="failed",
            subject=subject,
            room=scope.key,
            reason="no room where I have the power",
            event_id=actor.event_id,
            detail={"rooms_skipped": skipped},
        )
        return Outcome(False, text, line=Message(text, html.escape(text)))

    async def _supersede(self, subject: str, kind: str, scope: Scope, actor: Actor, new_id: int) -> list[Infraction]:
        """Mark the subject's older active infractions of ``kind`` in the same scope as lifted."""
        old = [inf for inf in await self.ledger.active(subject, kind) if inf.scope == scope.key and inf.id != new_id]
        for inf in old:
            await self.ledger.update_infraction(
                inf.id,
                state="lifted",
                actor=actor.name,
                cancel_jobs=True,
                reason=f"superseded by #{new_id}",
            )
        return old

    # -- record-only ------------------------------------------------------------------------------

    async def note(self, subject: str, text: str, actor: Actor) -> Outcome:
        """A private note on a user: recorded, posted, not told to the user."""
        if subject == self.bot_user_id:
            return await self._refuse("note", subject, Scope(ALL_ROOMS, ()), actor, "I will not act on myself.")
        infraction = await self.ledger.add_infraction(
            subject=subject,
            kind="note",
            scope=ALL_ROOMS,
            reason=text,
            actor=actor.name,
            origin=actor.origin,
            state="active",
            source_event=actor.event_id,
        )
        line = action_line(
            verb="Noted", actor=actor.name, subject=subject, where="the record", reason=text, infraction=infraction
        )
        await self.report(actor, line)
        return Outcome(True, line.plain, infraction, line=line)

    async def warn(
        self,
        subject: str,
        reason: str,
        actor: Actor,
        scope: Scope,
        *,
        rule: str | None = None,
        level: int | None = None,
        next_step: str | None = None,
        on_enforced: Callable[[], None] | None = None,
        why: str | None = None,
        claim: str | None = None,
    ) -> Outcome:
        """A warning: recorded, told to the user, posted."""
        refused = await self._refused("warning", subject, scope, actor)
        if refused:
            return refused

        def intents(infraction_id: int) -> list[NewIntent]:
            notice = self._notice("warning", scope, reason, None, infraction_id, next_step)
            return [self.dm_intent(subject, notice)] if self.config.notify_users else []

        rec = await self._record(
            "warning", subject, reason, actor, scope, rule=rule, level=level, intents=intents, claim=claim
        )
        return await self._carry_out(rec, actor=actor, scope=Scope(scope.key, ()), on_enforced=on_enforced, why=why)

    # -- bans -------------------------------------------------------------------------------------

    async def ban(
        self,
        subject: str,
        reason: str,
        actor: Actor,
        scope: Scope,
        *,
        duration_s: int | None = None,
        rule: str | None = None,
        level: int | None = None,
        next_step: str | None = None,
        notify: bool = True,
        quiet: bool = False,
        on_enforced: Callable[[], None] | None = None,
        why: str | None = None,
        claim: str | None = None,
    ) -> Outcome:
        """Ban in every room of ``scope``; temporary when ``duration_s`` is given.

        ``notify=False`` skips the DM (policy-list bans of spammers); ``quiet=True`` skips the
        management-room line (the caller posts one summary for many bans); ``on_enforced`` is
        called once the homeserver has answered the bans, before the notice and the line.
        """
        refused = await self._refused("ban", subject, scope, actor)
        if refused:
            return refused
        scope, skipped = self.reachable(scope, "ban", subject)
        if skipped and not scope.rooms:
            return await self._nowhere("ban", subject, scope, actor, skipped)
        notify = notify and self.config.notify_users
        # Tell them first when a DM room exists (one quick send). Creating a DM room costs a
        # homeserver several hundred ms, and a spammer must not stay in the room that long; the
        # DM room is not a protected room, so the banned user can still read a notice sent after.
        dm_first = notify and await self.dm_room(subject) is not None

        def in_room(room: str, infraction_id: int) -> NewIntent:
            return intent("ban", room, key=f"ban:{infraction_id}:{room}", user=subject, reason=reason)

        rec = await self._record_sanction(
            "ban",
            subject,
            reason,
            actor,
            scope,
            in_room,
            notify=notify,
            duration_s=duration_s,
            next_step=next_step,
            rule=rule,
            level=level,
            claim=claim,
        )
        return await self._carry_out(
            rec,
            actor=actor,
            scope=scope,
            dm_first=dm_first,
            on_enforced=on_enforced,
            skipped=skipped,
            why=why,
            quiet=quiet,
        )

    async def unban(self, subject: str, reason: str, actor: Actor, scope: Scope) -> Outcome:
        """Lift bans in ``scope`` and close the matching ban infractions."""
        refused = await self._out_of_reach("unban", subject, scope, actor)
        if refused:
            return refused
        scope, skipped = self.reachable(scope, "unban")
        active = [inf for inf in await self.ledger.active(subject, "ban") if scope.key in (ALL_ROOMS, inf.scope)]
        rooms = list(scope.rooms)
        if scope.key == ALL_ROOMS:
            for inf in active:
                rooms += [r for r in await self._reached_beyond(inf) if r not in rooms]
        banned = [room for room in rooms if await self.membership(room, subject) == "ban"]
        if not banned and not active:
            return Outcome(False, f"{subject} is not banned in {self.where(scope)}.")
        rows = [intent("unban", room, user=subject, reason=reason) for room in banned]
        done, failed = self._settled(rows, await self.outbox.do_all(rows))
        for inf in active:
            await self.ledger.update_infraction(
                inf.id, state="lifted", actor=actor.name, reason=reason, cancel_jobs=True, detail={"rooms_done": done}
            )
        await self.ledger.audit(
            actor=actor.name,
            action="unban",
            outcome="failed" if failed and not done else "done",
            subject=subject,
            room=scope.key,
            reason=reason,
            event_id=actor.event_id,
            detail={"rooms_done": done, "rooms_failed": failed, "infractions_lifted": [inf.id for inf in active]},
        )
        extra = [f"lifted infraction(s) {', '.join('#' + str(inf.id) for inf in active)}"] if active else []
        if failed:
            extra.append("failed in: " + ", ".join(self.store.label(r) for r in failed))
        if skipped:
            extra.append(self.skipped_text(skipped))
        line = action_line(
            verb="Unbanned", actor=actor.name, subject=subject, where=self.where(scope), reason=reason, extra=extra
        )
        await self.report(actor, line)
        if done:
            await self.tell_user(subject, self._notice("unban", scope, reason, None, None))
        return Outcome(not failed, line.plain, line=line)

    async def kick(self, subject: str, reason: str, actor: Actor, scope: Scope) -> Outcome:
        """Kick from every room of ``scope`` where the user is present."""
        refused = await self._refused("kick", subject, scope, actor)
        if refused:
            return refused
        reach, skipped = self.reachable(scope, "kick", subject)
        present = [r for r in reach.rooms if await self.membership(r, subject) in ("join", "invite", "knock")]
        if not present:
            if skipped:
                return await self._nowhere("kick", subject, scope, actor, skipped)
            return Outcome(False, f"{subject} is not in {self.where(scope)}.")
        present_scope = Scope(scope.key, tuple(present))

        def in_room(room: str, infraction_id: int) -> NewIntent:
            return intent("kick", room, key=f"kick:{infraction_id}:{room}", user=subject, reason=reason)

        rec = await self._record_sanction(
            "kick", subject, reason, actor, present_scope, in_room, notify=self.config.notify_users
        )
        # The notice goes first: once kicked, the user still reads the DM room (not a protected one).
        return await self._carry_out(rec, actor=actor, scope=present_scope, dm_first=True, skipped=skipped)

    # -- mutes ------------------------------------------------------------------------------------

    async def mute(
        self,
        subject: str,
        reason: str,
        actor: Actor,
        scope: Scope,
        *,
        duration_s: int | None,
        rule: str | None = None,
        level: int | None = None,
        next_step: str | None = None,
        on_enforced: Callable[[], None] | None = None,
        why: str | None = None,
        claim: str | None = None,
    ) -> Outcome:
        """Set the user's power level below ``events_default`` in each room, remembering the old one."""
        refused = await self._refused("mute", subject, scope, actor)
        if refused:
            return refused
        scope, skipped = self.reachable(scope, "mute", subject)
        if skipped and not scope.rooms:
            return await self._nowhere("mute", subject, scope, actor, skipped)
        # An active mute already holds the level to restore; carry it over instead of the muted one.
        carried: dict[str, Any] = {}
        for inf in await self.ledger.active(subject, "mute"):
            if inf.scope == scope.key:
                carried.update(inf.undo.get("rooms", {}))
        notify = self.config.notify_users

        def in_room(room: str, infraction_id: int) -> NewIntent:
            entry = carried.get(room)
            # A second mute keeps the level from before the first: that is what an unmute restores.
            extra = (
                {"carry_previous": entry.get("previous"), "level": entry.get("muted_level", "muted")}
                if isinstance(entry, dict)
                else {"level": "muted"}
            )
            return intent("power", room, key=f"mute:{infraction_id}:{room}", user=subject, **extra)

        rec = await self._record_sanction(
            "mute",
            subject,
            reason,
            actor,
            scope,
            in_room,
            notify=notify,
            duration_s=duration_s,
            next_step=next_step,
            rule=rule,
            level=level,
            claim=claim,
        )
        return await self._carry_out(rec, actor=actor, scope=scope, on_enforced=on_enforced, skipped=skipped, why=why)

    async def _restore_levels(self, subject: str, undo: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """Put back the power levels a mute replaced, where nobody changed them since."""
        rows = [
            intent("power", room_id, user=subject, level=entry.get("previous"), only_if=entry.get("muted_level"))
            for room_id, entry in dict(undo.get("rooms", {})).items()
            if isinstance(entry, dict)
        ]
        return self._settled(rows, await self.outbox.do_all(rows))

    async def unmute(self, subject: str, reason: str, actor: Actor, scope: Scope) -> Outcome:
        """Restore the levels of the subject's active mutes in ``scope``."""
        refused = await self._out_of_reach("unmute", subject, scope, actor)
        if refused:
            return refused
        active = [inf for inf in await self.ledger.active(subject, "mute") if scope.key in (ALL_ROOMS, inf.scope)]
        if not active:
            return Outcome(False, f"{subject} has no active mute in {self.where(scope)}.")
        if actor.commander is not None:
            # Matrix lets nobody grant a level at or above their own: an admin's unmute may not
            # hand back a level they could not have given.
            for inf in active:
                for room_id, entry in dict(inf.undo.get("rooms", {})).items():
                    previous = entry.get("previous") if isinstance(entry, dict) else None
                    own = self.store.room(room_id).power_levels.user_level(actor.commander)
                    if isinstance(previous, int) and previous >= own:
                        why = f"unmuting {subject} would restore power level {previous}, not below yours ({own})."
                        return await self._refuse("unmute", subject, scope, actor, why)
        all_done: list[str] = []
        all_failed: dict[str, str] = {}
        for inf in active:
            done, failed = await self._restore_levels(subject, dict(inf.undo))
            all_done += done
            all_failed.update(failed)
            if not failed:
                await self.ledger.update_infraction(
                    inf.id,
                    state="lifted",
                    actor=actor.name,
                    reason=reason,
                    cancel_jobs=True,
                    detail={"rooms_done": done},
                )
        await self.ledger.audit(
            actor=actor.name,
            action="unmute",
            outcome="failed" if all_failed else "done",
            subject=subject,
            room=scope.key,
            reason=reason,
            event_id=actor.event_id,
            detail={"rooms_done": all_done, "rooms_failed": all_failed},
        )
        extra = [f"lifted infraction(s) {', '.join('#' + str(inf.id) for inf in active)}"]
        if all_failed:
            extra.append("failed in: " + ", ".join(self.store.label(r) for r in all_failed))
        line = action_line(
            verb="Unmuted", actor=actor.name, subject=subject, where=self.where(scope), reason=reason, extra=extra
        )
        await self.report(actor, line)
        if not all_failed:
            await self.tell_user(subject, self._notice("unmute", scope, reason, None, None))
        return Outcome(not all_failed, line.plain, line=line)

    # -- redactions -------------------------------------------------------------------------------

    async def redact(self, subject: str, count: int, reason: str, actor: Actor, scope: Scope) -> Outcome:
        """Redact the user's ``count`` most recent messages in each room of ``scope``."""
        refused = await self._refused("redact", subject, scope, actor)
        if refused:
            return refused
        scope, skipped = self.reachable(scope, "redact")
        if skipped and not scope.rooms:
            return await self._nowhere("redact", subject, scope, actor, skipped)

        plan, failed = await self._redaction_plan(subject, count, actor, scope)

        async def redact_in(room_id: str) -> int:
            results = await self.outbox.do_all([redact_intent(room_id, event_id, reason) for event_id in plan[room_id]])
            errors = [r.error for r in results if not r.ok]
            if errors and len(errors) == len(results):
                raise MatrixError(500, {"error": errors[0] or "redaction failed"})
            return len(results) - len(errors)

        rooms = [room for room in scope.rooms if room in plan]
        results = await asyncio.gather(*(redact_in(room) for room in rooms), return_exceptions=True)
        total = sum(r for r in results if isinstance(r, int))
        failed.update({room: str(r) for room, r in zip(rooms, results, strict=True) if isinstance(r, BaseException)})
        await self.ledger.audit(
            actor=actor.name,
            action="redact",
            outcome="failed" if failed and not total else "done",
            subject=subject,
            room=scope.key,
            reason=reason,
            event_id=actor.event_id,
            detail={"redacted": total, "rooms_failed": failed},
        )
        extra = [f"{total} message(s) removed"]
        if failed:
            extra.append("failed in: " + ", ".join(self.store.label(r) for r in failed))
        if skipped:
            extra.append(self.skipped_text(skipped))
        line = action_line(
            verb="Redacted messages of",
            actor=actor.name,
            subject=subject,
            where=self.where(scope),
            reason=reason,
            extra=extra,
        )
        await self.report(actor, line)
        if total:
            await self.tell_user(subject, self._notice("redact", scope, reason, None, None))
        return Outcome(not failed, line.plain, line=line)

    async def _redaction_plan(
        self, subject: str, count: int, actor: Actor, scope: Scope
    ) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Which events a redaction command removes, per room, chosen once: the choice is recorded
        before the first redaction, so a command run again after a crash redacts those same
        events (not the next ``count`` older ones). Returns (plan, {room: why it failed})."""
        if actor.event_id is not None:
            for row in await self.ledger.audit_rows_for_event(actor.event_id, "redact:plan"):
                detail = json.loads(row["detail"] or "{}")
                events = detail.get("events")
                if isinstance(events, dict):
                    return {str(k): [str(e) for e in v] for k, v in events.items()}, dict(detail.get("failed", {}))
        found = await asyncio.gather(
            *(self.recent_events(room, subject, count) for room in scope.rooms), return_exceptions=True
        )
        plan = {room: ids for room, ids in zip(scope.rooms, found, strict=True) if isinstance(ids, list)}
        failed = {
            room: str(err) for room, err in zip(scope.rooms, found, strict=True) if isinstance(err, BaseException)
        }
        await self.ledger.audit(
            actor=actor.name,
            action="redact:plan",
            outcome="requested",
            subject=subject,
            room=scope.key,
            event_id=actor.event_id,
            detail={"events": plan, "failed": failed, "count": count},
        )
        return plan, failed

    async def recent_events(self, room_id: str, sender: str, count: int, max_pages: int = 10) -> list[str]:
        """Ids of ``sender``'s latest unredacted, non-state events in ``room_id``, newest first."""
        found: list[str] = []
        token: str | None = None
        for _ in range(max_pages):
            page = await self.api.hs.messages(room_id, token, limit=100, sync_filter={"senders": [sender]})
            chunk = page.get("chunk") or []
            for raw in chunk:
                # Re-check the sender ourselves: a homeserver that ignores the filter must not
                # make us redact someone else's messages (Draupnir#1072).
                if not isinstance(raw, dict) or raw.get("sender") != sender or "state_key" in raw:
                    continue
                if raw.get("type") == "m.room.redaction" or not raw.get("content"):
                    continue
                found.append(str(raw["event_id"]))
                if len(found) >= count:
                    return found
            token = page.get("end")
            if not token or not chunk:
                break
        return found

    # -- pardon and expiry ------------------------------------------------------------------------

    # -- pardon and expiry ------------------------------------------------------------------------

    async def pardon(self, infraction_id: int, reason: str, actor: Actor) -> Outcome:
        """Revoke an infraction: lift what is still in force; the record stays, marked pardoned."""
        inf = await self.ledger.get_infraction(infraction_id)
        if inf is None:
            return Outcome(False, f"There is no infraction #{infraction_id}.")
        if inf.state == "pardoned":
            return Outcome(False, f"Infraction #{infraction_id} is already pardoned.")
        failed: dict[str, str] = {}
        if inf.state == "active" and inf.kind in ("ban", "mute"):
            _, failed = await self.undo(inf, reason=f"#{inf.id} pardoned")
        if failed:
            await self.ledger.audit(
                actor=actor.name,
                action="pardon",
                outcome="failed",
                subject=inf.subject,
                infraction_id=inf.id,
                reason=reason,
                detail={"rooms_failed": failed},
            )
            return Outcome(False, f"Could not lift #{inf.id} in: {', '.join(failed)}. Try again later.")
        inf = await self.ledger.update_infraction(
            inf.id, state="pardoned", actor=actor.name, reason=reason, cancel_jobs=True
        )
        line = action_line(
            verb="Pardoned",
            actor=actor.name,
            subject=inf.subject,
            where=self.where(Scope(inf.scope, ())),
            reason=reason,
            extra=[f"infraction #{inf.id} ({inf.kind})"],
        )
        await self.report(actor, line)
        return Outcome(True, line.plain, inf, line=line)

    async def reach_rooms(self, rooms: Sequence[str], *, everyone: bool = False) -> int:
        """Bans in force everywhere reach every member (joined, invited or knocking) of
        ``rooms``: at start every protected room (a crash may have come between a room's join
        and this), and a ban typed while the bot was still joining a room lands there so.

        ``everyone``: ``rooms`` just became protected (a Space's new child, an upgrade, a late
        join, an invite), so *every* sanction in force everywhere is applied there, not only to
        those present: each ban (policy-list bans included, someone not in the room is banned
        before they can come), then each mute. Each is an intent of the sanction's own
        infraction, keyed by room, so a restart finishes it without doing anything twice and
        the sanction's lift reaches the room too. Members first, the rest behind every other
        write, in the background (recorded first; a restart resumes what is left). Returns how
        many bans of members were made."""
        present = {
            room_id: [u for u, m in self.store.room(room_id).memberships().items() if m in ACTIVE] for room_id in rooms
        }
        banned = await self.ledger.bans_everywhere(u for users in present.values() for u in users)
        rows: list[IntentRow] = []
        later: list[IntentRow] = []
        mutes: list[tuple[Infraction, IntentRow]] = []

        async def ban(inf: Infraction, room_id: str, user: str, priority: int | None = None) -> list[IntentRow]:
            new = intent("ban", room_id, key=f"ban:{inf.id}:{room_id}", priority=priority, user=user, reason=inf.reason)
            return await self.ledger.add_intents([new], infraction_id=inf.id)

        for room_id, users in present.items():
            for user in sorted(set(users) & banned.keys()):
                if not self.check(user, Scope.room(room_id)):
                    rows += await ban(banned[user], room_id, user)
        if everyone:
            bans = await self.ledger.active_everywhere("ban")
            muted = await self.ledger.active_everywhere("mute")
            for room_id, users in present.items():
                here = set(users)
                # Where the bot lacks the power, every write would fail: the room is reported
                # as lacking it (``!mod rooms``), and nothing is queued there to fail.
                can_ban = cannot_act(self.store.room(room_id), self.bot_user_id, "ban") is None
                can_mute = cannot_act(self.store.room(room_id), self.bot_user_id, "mute") is None
                for inf in bans if can_ban else ():
                    if inf.subject not in here and not self.check(inf.subject, Scope.room(room_id)):
                        later += await ban(inf, room_id, inf.subject, Priority.BACKGROUND)
                for inf in muted if can_mute else ():
                    if self.check(inf.subject, Scope.room(room_id), action="mute"):
                        continue
                    mute = intent("power", room_id, key=f"mute:{inf.id}:{room_id}", user=inf.subject, level="muted")
                    mutes += [(inf, row) for row in await self.ledger.add_intents([mute], infraction_id=inf.id)]
            # A room protected again, or given the power since: what failed there before is owed.
            rows = await self.ledger.reopen_intents(rows)
            later = await self.ledger.reopen_intents(later)
            reopened = await self.ledger.reopen_intents([row for _, row in mutes])
            mutes = [(inf, row) for (inf, _), row in zip(mutes, reopened, strict=True)]
        results = await self.outbox.run(rows)
        made = sum(result.ok for result in results)
        mute_results = await self.outbox.run([row for _, row in mutes])
        for (inf, row), result in zip(mutes, mute_results, strict=True):
            if result.ok:
                await self._mute_reached(inf, row.room_id, result.value)
        if rows or mutes:
            log.info(
                "sanctions_reach_rooms",
                rooms=len(rooms),
                bans=made,
                failed=len(rows) - made,
                mutes=sum(result.ok for result in mute_results),
                later=len(later),
            )
        # Hundreds of bans of people not there take the homeserver minutes: they must not hold
        # up the sync batch (nor the line saying the room is protected).
        self.outbox.run_behind(later)
        return made

    async def _mute_reached(self, inf: Infraction, room_id: str, value: Mapping[str, Any]) -> None:
        """A mute in force everywhere now holds in a room protected later: its lift must restore
        the level there too. Lifted meanwhile (its lift did not know of the room), it is undone
        there at once."""
        entry = mute_entry(value)
        if await self.ledger.mute_reached(inf.id, room_id, entry, actor=self.bot_user_id):
            return
        await self.outbox.do_all(
            [intent("power", room_id, user=inf.subject, level=entry["previous"], only_if=entry["muted_level"])]
        )

    async def _applied_in(self, inf: Infraction, kind: str) -> dict[str, Mapping[str, Any]]:
        """The rooms where ``inf``'s own ``kind`` intents took hold, with their results (a room
        protected later, perhaps no longer protected; a result a crash kept from its undo)."""
        return {
            row.room_id: row.result
            for row in await self.ledger.intents_for(inf.id)
            if row.kind == kind and row.state == "done" and row.key.startswith(f"{PRIMARY_KEY[kind]}:{inf.id}:")
        }

    def rooms_of(self, inf: Infraction) -> list[str]:
        """The rooms an infraction's scope covers now."""
        return list(self.store.protected) if inf.scope == ALL_ROOMS else [inf.scope]

    async def undo(self, inf: Infraction, reason: str | None = None) -> tuple[list[str], dict[str, str]]:
        """Lift a ban or mute on the homeserver (no ledger change), except in the rooms another
        sanction of the same kind in force still covers (a room's own ban outlives the lift of
        a ban everywhere); returns (done, failed)."""
        others = [other for other in await self.ledger.active(inf.subject, inf.kind) if other.id != inf.id]
        if any(other.scope == ALL_ROOMS for other in others):
            return [], {}
        covered = {other.scope for other in others}
        if inf.kind == "mute":
            undo = dict(inf.undo)
            recorded = dict(undo.get("rooms", {}))
            # A room the mute reached later whose entry a crash kept from the undo: its intent's result.
            for room, result in (await self._applied_in(inf, "power")).items():
                if inf.scope == ALL_ROOMS and room not in recorded and "previous" in result:
                    recorded[room] = mute_entry(result)
            kept = {room: entry for room, entry in recorded.items() if room not in covered}
            return await self._restore_levels(inf.subject, {**undo, "rooms": kept})
        if inf.kind == "ban":
            # The rooms it covers now, and those it reached that are no longer protected.
            rooms = [
                r
                for r in dict.fromkeys([*self.rooms_of(inf), *await self._reached_beyond(inf)])
                if r not in covered and await self.membership(r, inf.subject) == "ban"
            ]
            why = reason or f"#{inf.id} expired"
            rows = [intent("unban", room, user=inf.subject, reason=why) for room in rooms]
            return self._settled(rows, await self.outbox.do_all(rows))
        return [], {}

    async def expire(self, inf: Infraction) -> bool:
        """Lift an expired temporary sanction; True when it is fully lifted."""
        done, failed = await self.undo(inf)
        if failed:
            return False
        verb = "Unbanned" if inf.kind == "ban" else "Unmuted"
        line = action_line(
            verb=verb,
            actor=self.bot_user_id,
            subject=inf.subject,
            where=self.where(Scope(inf.scope, ())),
            reason=f"temporary {inf.kind} #{inf.id} expired",
        )
        kind = "unban" if inf.kind == "ban" else "unmute"
        posts = [self.post_intent(line, key=f"expired:{inf.id}")]
        if self.config.notify_users:
            notice = self._notice(kind, Scope(inf.scope, ()), "the sanction's time is over", None, None)
            posts.append(self.dm_intent(inf.subject, notice, key=f"dm-expired:{inf.id}"))
        await self.ledger.update_infraction(
            inf.id,
            state="expired",
            actor=self.bot_user_id,
            reason="the sanction's time is over",
            detail={"rooms_done": done},
            intents=posts,
        )
        await self._run_pending(inf.id)
        return True

    async def _reached_beyond(self, inf: Infraction) -> list[str]:
        """The rooms ``inf``'s ban took hold in that a lift must reach besides the protected
        ones (a child taken out of a Space): its ban, its lift, while the bot is there and may
        unban (a room where it lost the power is left out, as a protected one is)."""
        return [
            room_id
            for room_id in await self._applied_in(inf, "ban")
            if self.store.known(room_id)
            and self.store.room(room_id).membership(self.bot_user_id) == "join"
            and cannot_act(self.store.room(room_id), self.bot_user_id, "unban") is None
        ]

    async def membership(self, room_id: str, user_id: str) -> str | None:
        """The user's membership, read fresh from the homeserver (our cache may lag)."""
        try:
            content = await self.api.hs.state_event(room_id, "m.room.member", user_id)
        except (MatrixError, HomeserverUnavailable):
            return self.store.room(room_id).membership(user_id)
        value = (content or {}).get("membership")
        return value if isinstance(value, str) else None

    async def mark_source(self, actor: Actor, action: str) -> bool:
        """Claim ``(event_id, action)`` so a replayed sync batch does not act twice."""
        if actor.event_id is None:
            return True
        return await self.ledger.mark_processed(actor.event_id, action)


#: Infractions settled at once at start.
RESUME_CONCURRENCY = 8
#: The intent kind that carries out each kind of infraction in a room.
PRIMARY = {"ban": "ban", "mute": "power", "kick": "kick"}


def mute_entry(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a mute's undo keeps of one room, from its power intent's result: the level to
    restore, and the muted level it set (restored only while that is still the level)."""
    return {"previous": result.get("previous"), "muted_level": result.get("level")}


#: How a sanction's own intents are keyed (``<prefix>:<infraction id>:<room>``), by intent kind.
PRIMARY_KEY = {"ban": "ban", "power": "mute", "kick": "kick"}
VERBS = {"ban": "Banned", "mute": "Muted", "kick": "Kicked", "warning": "Warned", "note": "Noted"}
#: The same, for a line saying it failed ("FAILED to ban", not "FAILED to banned").
INFINITIVES = {"ban": "ban", "mute": "mute", "kick": "kick", "warning": "warn", "note": "note"}


def redact_intent(room_id: str, event_id: str, reason: str, priority: int | None = None) -> NewIntent:
    """The intent of redacting one event: one per event, so a second redaction of it (a replay,
    two protections, a moderator's sweep) is the first one."""
    return intent(
        "redact", room_id, key=f"redact:{room_id}:{event_id}", priority=priority, event_id=event_id, reason=reason
    )


def _marked(ok: bool, line: Message) -> Message:
    mark = "✅" if ok else "⚠️"
    return Message(f"{mark} {line.plain}", f"{mark} {line.html}")


def _already(inf: Infraction) -> Outcome:
    """The outcome of a request recorded before (a replay): what happened then, acted no more."""
    text = f"Already handled: infraction #{inf.id} ({inf.kind} of {inf.subject}, {inf.state})."
    return Outcome(inf.state not in ("failed",), text, inf, line=Message(text, html.escape(text)))
