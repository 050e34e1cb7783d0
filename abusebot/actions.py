"""Moderation actions: the one layer that acts on the homeserver on behalf of anyone.

Commands, protections and policy lists all call :class:`Moderation`. Each action:

1. checks :func:`abusebot.safety.refusal` for every room in scope (and refuses as a whole);
2. records the infraction in the ledger before acting (state ``pending``);
3. tells the user by direct message, politely (for bans *before* the ban);
4. acts through the write queue, room by room;
5. moves the infraction to ``active`` (or ``failed``: never deleted), schedules its lift;
6. posts the audit line to the management room.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import structlog

from abusebot.audit import Message, action_line, fit, scope_label, user_notice
from abusebot.config import Config
from abusebot.ledger import ALL_ROOMS, Infraction, Ledger, now_ms
from abusebot.matrix import Api, HomeserverUnavailable, MatrixError, Priority
from abusebot.power import PowerLevels
from abusebot.rooms import RoomStore
from abusebot.safety import ACTION_POWERS, Staff, beyond_reach, cannot_act, refusal

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

    @property
    def commander(self) -> str | None:
        """The user whose power level bounds this request's reach, or ``None``."""
        return self.name if self.bounded else None


class Moderation:
    """Bans, kicks, mutes, redactions, warnings and notes, recorded and reported."""

    def __init__(self, *, config: Config, ledger: Ledger, api: Api, store: RoomStore, bot_user_id: str) -> None:
        self.config = config
        self.ledger = ledger
        self.api = api
        self.store = store
        self.bot_user_id = bot_user_id
        # Per user, so one slow DM-room creation does not queue everyone else's notices.
        self._dm_locks: dict[str, asyncio.Lock] = {}
        self.wake_scheduler: asyncio.Event = asyncio.Event()

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
        bot is never turned against the community's own staff.
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
            reason = refusal(subject, room, staff, commander)
            if reason:
                return reason
        return None

    def reachable(self, scope: Scope, action: str) -> tuple[Scope, dict[str, str]]:
        """``scope`` narrowed to the rooms where the bot has the power for ``action``, and why
        each other room is left out (named in the reply: the bot acts where it can)."""
        skipped: dict[str, str] = {}
        rooms: list[str] = []
        for room_id in scope.rooms:
            why = cannot_act(self.store.room(room_id), self.bot_user_id, action)
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
        """"not in: Go (I lack the power to ban (needs 50, I have 0))" for the reply."""
        return "not in: " + "; ".join(f"{self.store.label(room)} ({why})" for room, why in skipped.items())

    async def report(self, actor: Actor, line: Message) -> None:
        """Post an action's audit line, unless the command's reply in the management room is it."""
        if not actor.reply_is_audit:
            await self.post(line)

    async def post(self, message: Message) -> None:
        """Post to the management room; never raises (the ledger already has the record)."""
        try:
            await self.api.send(self.store.management_id, fit(message).content())
        except (MatrixError, HomeserverUnavailable) as err:
            log.error("management_post_failed", error=str(err))

    async def tell_user(self, user_id: str, message: Message) -> bool:
        """DM the user (creating the DM room once); True when the message was sent."""
        if not self.config.notify_users:
            return False
        try:
            async with self._dm_locks.setdefault(user_id, asyncio.Lock()):
                room_id = await self.dm_room(user_id)
                if room_id is None:
                    room_id = await self.api.create_room(
                        {
                            "invite": [user_id],
                            "is_direct": True,
                            "preset": "trusted_private_chat",
                            "name": "Moderation notices",
                        }
                    )
                    await self.ledger.set_kv(f"dm_room:{user_id}", room_id)
            await self.api.send(room_id, message.content())
            return True
        except (MatrixError, HomeserverUnavailable) as err:
            log.warning("dm_failed", user_id=user_id, error=str(err))
            return False

    async def dm_room(self, user_id: str) -> str | None:
        """The room the bot DMs ``user_id`` in, if it made one already."""
        return await self.ledger.get_kv(f"dm_room:{user_id}")

    def _notice(
        self,
        kind: str,
        scope: Scope,
        reason: str | None,
        duration_s: int | None,
        infraction: Infraction | None,
        next_step: str | None = None,
    ) -> Message:
        return user_notice(
            kind=kind,
            where=self.where(scope),
            reason=reason,
            duration_s=duration_s,
            rules_url=self.config.rules_url,
            infraction_id=infraction.id if infraction else None,
            next_step=next_step,
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
    ) -> Infraction:
        """Record the infraction as pending, before acting (a crash leaves it visible, never lost)."""
        return await self.ledger.add_infraction(
            subject=subject,
            kind=kind,
            scope=scope.key,
            reason=reason,
            actor=actor.name,
            origin=actor.origin,
            expires_at=now_ms() + duration_s * 1000 if duration_s else None,
            rule=rule,
            level=level,
            source_event=actor.event_id,
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

    async def _per_room(self, rooms: Sequence[str], operation: Any) -> tuple[list[str], dict[str, str]]:
        """Run ``operation(room_id)`` in every room concurrently; return (done, {room: error})."""
        results = await asyncio.gather(*(operation(room) for room in rooms), return_exceptions=True)
        done: list[str] = []
        failed: dict[str, str] = {}
        for room, result in zip(rooms, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, MatrixError | HomeserverUnavailable):
                    log.error("room_action_crashed", room_id=room, error=repr(result))
                failed[room] = str(result)
            else:
                done.append(room)
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
    ) -> Outcome:
        """Settle the infraction's state from the per-room results, report it, build the reply."""
        skipped = skipped or {}
        detail: dict[str, Any] = {"rooms_done": done, "rooms_failed": failed}
        if skipped:
            detail["rooms_skipped"] = skipped
        if dm_sent is not None:
            detail["dm_sent"] = dm_sent
        if done or not (scope.rooms or skipped):
            infraction = await self.ledger.update_infraction(
                infraction.id,
                state="active",
                actor=actor.name,
                undo=undo,
                schedule_lift=infraction.expires_at is not None,
                detail=detail,
            )
            self.wake_scheduler.set()
        else:
            infraction = await self.ledger.update_infraction(
                infraction.id, state="failed", actor=actor.name, undo=undo, detail=detail
            )
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
            verb=verb if infraction.state != "failed" else f"FAILED to {verb.lower()}",
            actor=actor.name,
            subject=infraction.subject,
            where=self.where(scope),
            reason=infraction.reason,
            infraction=infraction,
            extra=extra,
        )
        if not quiet:
            await self.report(actor, line)
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
    ) -> Outcome:
        """A warning: recorded, told to the user, posted."""
        refused = await self._refused("warning", subject, scope, actor)
        if refused:
            return refused
        infraction = await self._record("warning", subject, reason, actor, scope, rule=rule, level=level)
        if on_enforced is not None:
            on_enforced()
        dm = await self.tell_user(subject, self._notice("warning", scope, reason, None, infraction, next_step))
        return await self._finish(
            infraction, verb="Warned", actor=actor, scope=Scope(scope.key, ()), done=[], failed={}, dm_sent=dm, why=why
        )

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
    ) -> Outcome:
        """Ban in every room of ``scope``; temporary when ``duration_s`` is given.

        ``notify=False`` skips the DM (policy-list bans of spammers); ``quiet=True`` skips the
        management-room line (the caller posts one summary for many bans); ``on_enforced`` is
        called once the homeserver has answered the bans, before the notice and the line.
        """
        refused = await self._refused("ban", subject, scope, actor)
        if refused:
            return refused
        scope, skipped = self.reachable(scope, "ban")
        if skipped and not scope.rooms:
            return await self._nowhere("ban", subject, scope, actor, skipped)
        infraction = await self._record(
            "ban", subject, reason, actor, scope, duration_s=duration_s, rule=rule, level=level
        )
        # Tell them first when a DM room exists (one quick send). Creating a DM room costs a
        # homeserver several hundred ms, and a spammer must not stay in the room that long; the
        # DM room is not a protected room, so the banned user can still read a notice sent after.
        notice = self._notice("ban", scope, reason, duration_s, infraction, next_step)
        dm_sent: bool | None = None
        dm_first = notify and await self.dm_room(subject) is not None
        if dm_first:
            with contextlib.suppress(asyncio.TimeoutError):
                dm_sent = await asyncio.wait_for(self.tell_user(subject, notice), DM_BEFORE_BAN_TIMEOUT)
        done, failed = await self._per_room(scope.rooms, lambda room: self.api.ban(room, subject, reason))
        if on_enforced is not None:
            on_enforced()
        if notify and not dm_first:
            dm_sent = await self.tell_user(subject, notice)
        if done:
            await self._supersede(subject, "ban", scope, actor, infraction.id)
        return await self._finish(
            infraction,
            verb="Banned",
            actor=actor,
            scope=scope,
            done=done,
            failed=failed,
            dm_sent=dm_sent,
            quiet=quiet,
            skipped=skipped,
            why=why,
        )

    async def unban(self, subject: str, reason: str, actor: Actor, scope: Scope) -> Outcome:
        """Lift bans in ``scope`` and close the matching ban infractions."""
        refused = await self._out_of_reach("unban", subject, scope, actor)
        if refused:
            return refused
        scope, skipped = self.reachable(scope, "unban")
        banned = [room for room in scope.rooms if await self._membership(room, subject) == "ban"]
        active = [inf for inf in await self.ledger.active(subject, "ban") if scope.key in (ALL_ROOMS, inf.scope)]
        if not banned and not active:
            return Outcome(False, f"{subject} is not banned in {self.where(scope)}.")
        done, failed = await self._per_room(banned, lambda room: self.api.unban(room, subject, reason))
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
        reach, skipped = self.reachable(scope, "kick")
        present = [r for r in reach.rooms if await self._membership(r, subject) in ("join", "invite", "knock")]
        if not present:
            if skipped:
                return await self._nowhere("kick", subject, scope, actor, skipped)
            return Outcome(False, f"{subject} is not in {self.where(scope)}.")
        infraction = await self._record("kick", subject, reason, actor, scope)
        dm = await self.tell_user(subject, self._notice("kick", scope, reason, None, infraction))
        done, failed = await self._per_room(present, lambda room: self.api.kick(room, subject, reason))
        return await self._finish(
            infraction,
            verb="Kicked",
            actor=actor,
            scope=Scope(scope.key, tuple(present)),
            done=done,
            failed=failed,
            dm_sent=dm,
            skipped=skipped,
        )

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
    ) -> Outcome:
        """Set the user's power level below ``events_default`` in each room, remembering the old one."""
        refused = await self._refused("mute", subject, scope, actor)
        if refused:
            return refused
        scope, skipped = self.reachable(scope, "mute")
        if skipped and not scope.rooms:
            return await self._nowhere("mute", subject, scope, actor, skipped)
        infraction = await self._record(
            "mute", subject, reason, actor, scope, duration_s=duration_s, rule=rule, level=level
        )
        # An active mute already holds the level to restore; carry it over instead of the muted one.
        carried: dict[str, Any] = {}
        for inf in await self.ledger.active(subject, "mute"):
            if inf.scope == scope.key:
                carried.update(inf.undo.get("rooms", {}))
        undo_rooms: dict[str, Any] = {}

        async def mute_in(room_id: str) -> None:
            content = await self.api.hs.state_event(room_id, "m.room.power_levels") or {}
            levels = PowerLevels.from_content(content)
            muted = levels.muted_level()
            users = dict(content.get("users") or {})
            previous = carried.get(room_id, {}).get("previous", users.get(subject))
            if room_id in carried:
                muted = carried[room_id].get("muted_level", muted)
            users[subject] = muted
            await self.api.put_state(
                room_id, "m.room.power_levels", "", {**content, "users": users}, priority=Priority.MEMBERSHIP
            )
            undo_rooms[room_id] = {"previous": previous, "muted_level": muted}

        done, failed = await self._per_room(scope.rooms, mute_in)
        if on_enforced is not None:
            on_enforced()
        if done:
            await self._supersede(subject, "mute", scope, actor, infraction.id)
        dm = (
            await self.tell_user(subject, self._notice("mute", scope, reason, duration_s, infraction, next_step))
            if done
            else None
        )
        return await self._finish(
            infraction,
            verb="Muted",
            actor=actor,
            scope=scope,
            done=done,
            failed=failed,
            undo={"rooms": undo_rooms},
            dm_sent=dm,
            skipped=skipped,
            why=why,
        )

    async def _restore_levels(self, subject: str, undo: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """Put back the power levels a mute replaced, where nobody changed them since."""
        rooms = dict(undo.get("rooms", {}))

        async def restore(room_id: str) -> None:
            content = await self.api.hs.state_event(room_id, "m.room.power_levels") or {}
            users = dict(content.get("users") or {})
            entry = rooms[room_id]
            if users.get(subject) != entry.get("muted_level"):
                return  # changed by someone since: theirs is the newer decision
            previous = entry.get("previous")
            if previous is None:
                users.pop(subject, None)
            else:
                users[subject] = previous
            await self.api.put_state(
                room_id, "m.room.power_levels", "", {**content, "users": users}, priority=Priority.MEMBERSHIP
            )

        return await self._per_room(list(rooms), restore)

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

        async def redact_in(room_id: str) -> int:
            events = await self.recent_events(room_id, subject, count)
            await asyncio.gather(*(self.api.redact(room_id, event_id, reason) for event_id in events))
            return len(events)

        results = await asyncio.gather(*(redact_in(room) for room in scope.rooms), return_exceptions=True)
        total = sum(r for r in results if isinstance(r, int))
        failed = {room: str(r) for room, r in zip(scope.rooms, results, strict=True) if isinstance(r, BaseException)}
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

    async def pardon(self, infraction_id: int, reason: str, actor: Actor) -> Outcome:
        """Revoke an infraction: lift what is still in force; the record stays, marked pardoned."""
        inf = await self.ledger.get_infraction(infraction_id)
        if inf is None:
            return Outcome(False, f"There is no infraction #{infraction_id}.")
        if inf.state == "pardoned":
            return Outcome(False, f"Infraction #{infraction_id} is already pardoned.")
        failed: dict[str, str] = {}
        if inf.state == "active" and inf.kind in ("ban", "mute"):
            _, failed = await self.undo(inf)
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

    def rooms_of(self, inf: Infraction) -> list[str]:
        """The rooms an infraction's scope covers now."""
        return list(self.store.protected) if inf.scope == ALL_ROOMS else [inf.scope]

    async def undo(self, inf: Infraction) -> tuple[list[str], dict[str, str]]:
        """Lift a ban or mute on the homeserver (no ledger change); returns (done, failed)."""
        if inf.kind == "mute":
            return await self._restore_levels(inf.subject, dict(inf.undo))
        if inf.kind == "ban":
            rooms = [r for r in self.rooms_of(inf) if await self._membership(r, inf.subject) == "ban"]
            return await self._per_room(rooms, lambda room: self.api.unban(room, inf.subject, f"#{inf.id} expired"))
        return [], {}

    async def expire(self, inf: Infraction) -> bool:
        """Lift an expired temporary sanction; True when it is fully lifted."""
        done, failed = await self.undo(inf)
        if failed:
            return False
        await self.ledger.update_infraction(
            inf.id,
            state="expired",
            actor=self.bot_user_id,
            reason="the sanction's time is over",
            detail={"rooms_done": done},
        )
        verb = "Unbanned" if inf.kind == "ban" else "Unmuted"
        line = action_line(
            verb=verb,
            actor=self.bot_user_id,
            subject=inf.subject,
            where=self.where(Scope(inf.scope, ())),
            reason=f"temporary {inf.kind} #{inf.id} expired",
        )
        await self.post(line)
        kind = "unban" if inf.kind == "ban" else "unmute"
        await self.tell_user(
            inf.subject, self._notice(kind, Scope(inf.scope, ()), "the sanction's time is over", None, None)
        )
        return True

    async def _membership(self, room_id: str, user_id: str) -> str | None:
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
