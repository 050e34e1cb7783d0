"""Reports, ModMail and confidential appeals: members reach the moderators privately, and each
conversation is a case (:mod:`abusebot.cases`) with a transcript and an outcome.

Where a case comes from (its *channel*):

* ``modmail``: a member writes in their direct chat with the bot (one they opened, or the room the
  bot sent them a notice in). The first message with no open case opens one; the bot answers
  there with ``case #N`` and posts a root message in the management room; every later message of
  theirs goes into that root's thread. ``appeal [#]<id> <why…>`` there opens an *appeal* case.
* ``report``: in a protected room, a member replies to a message with ``!report [reason…]``. The
  bot redacts the ``!report`` at once (the room never sees who reported), opens a case about the
  reported message and tells the reporter privately.
* ``mention``: a message in a protected room says ``@moderators`` (the configured words) or
  mentions the bot: an urgent alert that pings every moderator.
* ``homeserver``: with ``poll_homeserver_reports``, Synapse's event reports about protected rooms.

The moderators answer in the thread with ``!mod reply <text…>`` (relayed, signed "— the
moderation team" when ``anonymous_staff``); anything else a moderator writes there is an internal
note, kept in the transcript and never relayed. Case content never leaves the management room:
every case command is management-room only, and the reported person is never told anything.

Durability, in order: the case and its message are recorded (keyed by the event, so a replay
finds them), then each post goes out as an outbox intent keyed by the case or the message (a
resent one is deduplicated), then its event id is noted. A restart in the middle finds the
case and goes on: the thread continues.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import html
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import attrs
import structlog

from abusebot.actions import Actor, redact_intent
from abusebot.audit import Message, bullet_list, cited_rules, pill, room_pill, scope_label, when
from abusebot.cases import (
    CLOSE_OUTCOMES,
    MIGRATIONS,
    AppealRequest,
    Case,
    CaseStore,
    NewCase,
    excerpt,
    mentions_word,
    parse_appeal,
    strip_invisible,
)
from abusebot.commands import (
    USER_ID,
    Authorized,
    CommandHandler,
    Parsed,
    Reaction,
    Spec,
    UsageError,
    command_text,
    number_word,
    text_message,
)
from abusebot.events import Event, relation
from abusebot.host import Feature, Role, feature
from abusebot.ledger import Infraction, NewIntent, now_ms
from abusebot.matrix import API, HomeserverUnavailable, MatrixError, q

log = structlog.get_logger("abusebot.cases")

#: A member's messages passed on per minute; more get one polite answer a minute.
MESSAGES_PER_MINUTE = 10
#: Reports one member may make per 10 minutes, and have open at once.
REPORTS_PER_10_MIN = 10
MAX_OPEN_REPORTS = 10
#: An urgent mention from someone who called within this long joins their case (no new ping).
MENTION_WINDOW_MS = 10 * 60_000
#: At most one ping of every moderator per room this often; later alerts come without the pings.
PING_EVERY_S = 60.0
#: Polite answers of one sort to one person at most this often (a flood gets one).
TELL_EVERY_S = 60.0
#: What a relayed message may say (it must fit one event with its frame).
MAX_RELAYED = 4000
POLL_EVERY_S = 30.0
SANCTIONS = ("warning", "mute", "kick", "ban")
KIND_LABEL = {
    "modmail": "ModMail",
    "report": "report",
    "appeal": "appeal",
    "mention": "urgent mention",
    "second_chance": "second chance",
}


@attrs.frozen
class MemberRequest:
    """A request of another feature that a member writes in their direct chat (``second chance
    <why…>``, say): the cases feature hands it the messages it :attr:`asks` for, after the
    blocks and the rate limit, and a replay of the one that opened a case of :attr:`kind`."""

    kind: str
    asks: Callable[[str], bool]
    #: (the event, its sender, its text): idempotent per event (a replay runs it again).
    handle: Callable[[Event, str, str], Awaitable[None]]
    #: The case's root in the management room, and what its opener is told.
    root: Callable[[Case], Awaitable[Message]]
    ack: Callable[[Case], Message]


def _link(room_id: str, event_id: str) -> str:
    return f"https://matrix.to/#/{quote(room_id, safe='!:')}/{quote(event_id, safe='$')}"


def lines_message(*parts: str | None) -> Message:
    """A message of plain lines (escaped for HTML, line breaks kept)."""
    lines = [part for part in parts if part]
    return Message("\n".join(lines), "<br>".join(html.escape(line).replace("\n", "<br>") for line in lines))


def _quote(text: str, limit: int = MAX_RELAYED) -> str:
    text = strip_invisible(text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CasesFeature(Feature):
    """ModMail, reports, urgent mentions, homeserver reports and appeals, as cases."""

    name: ClassVar[str] = "cases"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.DIRECT, Role.MANAGEMENT, Role.PROTECTED})
    event_types: ClassVar[frozenset[str] | None] = frozenset({"m.room.message"})
    migrations: ClassVar[tuple[str, ...]] = MIGRATIONS

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.config = bot.config
        self.cases = CaseStore(bot.ledger)
        self._lanes: dict[str, asyncio.Lock] = {}
        self._recent: dict[str, collections.deque[float]] = {}
        self._reports: dict[str, collections.deque[float]] = {}
        self._told: dict[tuple[str, str], float] = {}
        self._pinged: dict[str, float] = {}
        self._poller: asyncio.Task[None] | None = None
        self._open: dict[str, int] = {}
        self._poll_problem: str | None = None
        #: (lower-cased words to look for in a body, the bot's id as a pill may write it).
        self._needles: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        #: Other features' requests in the direct chats (:class:`MemberRequest`).
        self.requests: list[MemberRequest] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Count the open cases, and start polling the homeserver's reports when asked to."""
        await self._count()
        if self.config.reports.poll_homeserver_reports:
            self._poller = asyncio.create_task(self._poll_forever(), name="homeserver reports")

    async def ready(self) -> None:
        """Finish what a crash cut short (a root posted, its id not noted); once every feature
        has started, so that a root another feature renders (a second chance) is its own."""
        for case in await self.cases.roots_missing():
            with contextlib.suppress(Exception):
                # A root that failed before is tried under a fresh key (a failure is final for its key).
                await self._root(case) or await self._root(case, retry=f"start:{now_ms() // 60_000}")

    async def stop(self) -> None:
        """Stop polling."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller

    def status(self) -> list[str]:
        """One line: the open cases by kind."""
        total = sum(self._open.values())
        parts = ", ".join(f"{count} {KIND_LABEL[kind]}" for kind, count in sorted(self._open.items()) if count)
        line = f"Cases: {total} open" + (f" ({parts})" if parts else "")
        return [line + (f"; homeserver reports: {self._poll_problem}" if self._poll_problem else "")]

    async def _count(self) -> None:
        rows = await self.bot.ledger.fetch("SELECT kind, COUNT(*) FROM cases WHERE state = 'open' GROUP BY kind")
        self._open = {str(kind): int(count) for kind, count in rows}

    # -- routing -------------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        """A message in a direct chat (ModMail), the management room (a case's thread) or a
        protected room (``!report``, an urgent mention)."""
        room = event.room_id
        if room == self.bot.store.management_id:
            await self._staff_message(event)
        elif self.bot.store.is_protected(room):
            if self._may_concern_us(event):
                if (event.body or "").lstrip().lower().startswith(self.config.reports.command.lower()):
                    # The !report line goes at once, not after the reporter's earlier work.
                    self.bot.spawn(self._send_quietly(redact_intent(room, event.event_id, "")))
                self._spawn(event.sender, self._room_message(event))
        elif self.config.modmail.enabled and Role.DIRECT in self.bot.host.roles_of(room):
            self._spawn(event.sender, self._member_message(event))

    def _spawn(self, lane: str, work: Awaitable[None]) -> None:
        """Run ``work`` off the sync loop, in order with the rest of its sender's (one person's
        messages in several chats at once meet the limits one after the other; the batch's
        checkpoint waits for it: a crash replays the event)."""

        async def run() -> None:
            async with self._lanes.setdefault(lane, asyncio.Lock()):
                try:
                    await work
                except Exception as err:  # logged by name; never the loop's problem
                    log.exception("case_handling_failed", room_id=lane, error=repr(err))

        self.bot.spawn(run())

    def _may_concern_us(self, event: Event) -> bool:
        """A cheap look before the real parse (it runs on every message of every protected room):
        a ``!report``, a mention word, or the bot named."""
        body = event.body
        if not body or event.sender == self.bot.hs.user_id:
            return False
        if self._needles is None:
            bot_id = self.bot.hs.user_id
            reports = self.config.reports
            words = (reports.command, *reports.urgent_mentions, bot_id[1:].split(":", 1)[0])
            self._needles = (tuple(word.lower() for word in words), (bot_id, q(bot_id)))
        words, pills = self._needles
        lowered = body[:5000].lower()
        if any(word in lowered for word in words):
            return True
        formatted = event.formatted_body
        if formatted and any(pill in formatted for pill in pills):
            return True
        mentions = event.content.get("m.mentions")
        users = mentions.get("user_ids") if isinstance(mentions, Mapping) else None
        return isinstance(users, list) and self.bot.hs.user_id in users

    # -- sending -------------------------------------------------------------------------------

    async def _send_quietly(self, new: NewIntent) -> None:
        await self._send(new)

    async def _send(self, new: NewIntent) -> tuple[str | None, Mapping[str, Any]]:
        """Carry out one keyed send: the event id it made (``None`` when it failed) and what it learned."""
        result = await self.bot.outbox.do(new)
        if not result.ok:
            log.warning("case_send_failed", key=new.key, error=result.error)
            return None, {}
        event_id = result.value.get("event_id")
        return (event_id if isinstance(event_id, str) else None), result.value

    async def tell(self, case: Case | None, user: str, room: str | None, message: Message, key: str) -> str | None:
        """Say ``message`` to ``user``: in ``room`` when it is their direct chat, else in the room
        the bot sends them notices in (made once). Returns the room it went to."""
        if room is not None and self._direct_user(room) == user:
            # Invited back first when they left it: an answer they wait for must reach them.
            new = self.bot.moderation.send_intent(room, message, key=key, mentions=[], reinvite=user)
            event_id, _ = await self._send(new)
            return room if event_id else None
        event_id, value = await self._send(self.bot.moderation.dm_intent(user, message, key=key, reinvite=True))
        where = value.get("room_id")
        if case is not None and isinstance(where, str) and case.chat_room is None:
            await self.cases.set_chat(case.id, where)
        return where if isinstance(where, str) and event_id else None

    async def _tell_once(self, user: str, room: str | None, what: str, text: str, event: Event) -> None:
        """A polite answer of one sort, at most once per :data:`TELL_EVERY_S` per person."""
        now = time.monotonic()
        if now - self._told.get((user, what), -TELL_EVERY_S) < TELL_EVERY_S:
            return
        self._told[(user, what)] = now
        if len(self._told) > 10_000:
            self._told = {k: v for k, v in self._told.items() if now - v < TELL_EVERY_S}
        await self.tell(None, user, room, lines_message(text), key=f"case-answer:{event.event_id}")

    # -- the management side: roots and threads ------------------------------------------------

    async def _first_text(self, case: Case) -> str:
        rows = await self.bot.ledger.fetch(
            "SELECT body FROM case_messages WHERE case_id = ? ORDER BY id LIMIT 1", (case.id,)
        )
        return str(rows[0][0]) if rows else ""

    async def _root_message(self, case: Case) -> tuple[Message, list[str]]:
        """The management-room message a case's thread hangs from, and whom it pings."""
        prefix, store = self.config.command_prefix, self.bot.store
        first = _quote(await self._first_text(case))
        hint = (
            f"Answer in this thread with {prefix} reply <text…>; anything else said in the thread stays "
            "among the moderators."
        )
        people = await self.cases.people(case.id)
        named = ", ".join(people["named"]) or "someone"
        where = store.label(case.subject_room) if case.subject_room else ""
        link = _link(case.subject_room, case.subject_event) if case.subject_room and case.subject_event else ""
        if case.kind == "modmail":
            message = lines_message(f"📨 ModMail — case #{case.id} from {case.opener}:", first, hint)
            return message, []
        if case.kind == "appeal":
            return await self._appeal_root(case, first), []
        request = self._request_of(case.kind)
        if request is not None:
            return await request.root(case), []
        if case.kind == "report":
            how = "reported to the homeserver" if case.channel == "homeserver" else "reported"
            reporters = len(people["reporter"])
            message = lines_message(
                f"🚩 Report — case #{case.id}: a message of {named} in {where}, {how} "
                f"({reporters} reporter{'s' if reporters != 1 else ''}).",
                link,
                f"Excerpt: «{case.excerpt or ''}»",
                f"Reported by {case.opener}: {first or 'no reason given'}",
                f"Close it with {prefix} case close {case.id} actioned|no-action|duplicate|invalid [note…].",
            )
            return message, []
        if case.kind != "mention":  # a kind whose feature is not loaded: a plain line, never an alert
            return lines_message(
                f"📁 {KIND_LABEL.get(case.kind, case.kind)} — case #{case.id} from {case.opener}:", first
            ), []
        pinged = self._ping_allowed(case.subject_room or "")
        moderators = self.bot.moderation.staff.moderators() if pinged else []
        plain = lines_message(
            f"🚨 Urgent — case #{case.id}: {case.opener} called the moderators in {where}:",
            f"«{case.excerpt or ''}»",
            link,
            ("Moderators: " + ", ".join(moderators)) if moderators else None,
        ).plain
        markup = "<br>".join(
            [
                html.escape(f"🚨 Urgent — case #{case.id}: {case.opener} called the moderators in ")
                + (room_pill(case.subject_room, where) if case.subject_room else "")
                + ":",
                html.escape(f"«{case.excerpt or ''}»"),
                f'<a href="{html.escape(link, quote=True)}">{html.escape(link)}</a>' if link else "",
                ("Moderators: " + ", ".join(pill(user) for user in moderators)) if moderators else "",
            ]
        )
        return Message(plain, markup), moderators

    def _ping_allowed(self, room: str) -> bool:
        now = time.monotonic()
        if now - self._pinged.get(room, -PING_EVERY_S) < PING_EVERY_S:
            return False
        self._pinged[room] = now
        return True

    async def _appeal_root(self, case: Case, first: str) -> Message:
        inf = await self.bot.ledger.get_infraction(case.infraction_id) if case.infraction_id is not None else None
        prefix = self.config.command_prefix
        decision = "the decision is no longer in the ledger"
        if inf is not None:
            decision = (
                f"#{inf.id}: {inf.kind}, {scope_label(inf.scope, {inf.scope: self.bot.store.label(inf.scope)})}, "
                f"{when(inf.created_at)}, "
                f"reason: {inf.reason or 'none given'}, decided by {inf.actor} ({inf.origin}); now {inf.state}"
            )
        return lines_message(
            f"⚖️ Appeal — case #{case.id} from {case.opener}",
            f"Decision appealed: {decision}",
            f"Their reason: {_quote(case.appeal_reason or '')}",
            f"Decide with {prefix} appeal {case.id} uphold|overturn [reason…] (the reason is told to them).",
        )

    async def _root(self, case: Case, retry: str = "") -> str | None:
        """The case's root in the management room: posted once (keyed by the case), its id noted."""
        fresh = await self.cases.get(case.id)
        if fresh is not None and fresh.root_event:
            return fresh.root_event
        message, pings = await self._root_message(case)
        key = f"case-root:{case.id}" + (f":{retry}" if retry else "")
        management = self.bot.store.management_id
        # An alert that pings is a text: push rules never notify of a notice, mentions or not.
        msgtype = "m.text" if pings else "m.notice"
        new = self.bot.moderation.send_intent(management, message, key=key, mentions=pings, msgtype=msgtype)
        event_id, _ = await self._send(new)
        if event_id is None and not retry:
            return None
        if event_id is not None:
            await self.cases.set_root(case.id, event_id)
        return event_id

    async def _to_thread(self, case: Case, message_id: int, message: Message) -> None:
        """A later message of the case, in its thread (posting the root first if it is missing)."""
        root = await self._root(case) or await self._root(case, retry=str(message_id))
        if root is None:
            log.warning("case_thread_unreachable", case=case.id)
            return
        new = self.bot.moderation.send_intent(
            self.bot.store.management_id, message, key=f"case-msg:{message_id}", thread=root, mentions=[]
        )
        event_id, _ = await self._send(new)
        if event_id is not None:
            await self.cases.set_relayed(message_id, event_id)

    async def announce(self, case: Case) -> None:
        """A new case: its root for the moderators, and ``case #N`` for whoever opened it."""
        await self._root(case) or await self._root(case, retry="again")
        ack = self._ack(case)
        if ack is not None:
            await self.tell(case, case.opener, case.chat_room, ack, key=f"case-ack:{case.id}")
        await self._count()

    def _request_of(self, kind: str) -> MemberRequest | None:
        return next((request for request in self.requests if request.kind == kind), None)

    def _ack(self, case: Case) -> Message | None:
        request = self._request_of(case.kind)
        if request is not None:
            return request.ack(case)
        if case.kind == "modmail":
            return lines_message(
                f"Thank you — your message to the moderators is case #{case.id}.",
                "They will answer you here; everything you write here is added to your case.",
            )
        if case.kind == "appeal":
            return lines_message(
                f"Your appeal of decision #{case.infraction_id} is case #{case.id}.",
                "The moderators will consider it and tell you their decision here.",
            )
        if case.kind == "report" and case.channel == "report":
            where = self.bot.store.label(case.subject_room) if case.subject_room else "a room"
            return lines_message(
                f"Thank you — your report of a message in {where} is case #{case.id}.",
                "The moderators will look at it; the person you reported is not told who reported it.",
            )
        return None

    async def _staff_message(self, event: Event) -> None:
        """In a case's thread: a command belongs to the case; anything else a moderator writes is
        an internal note (kept, never relayed)."""
        root, _ = relation(event.content)
        if root is None or not self.bot.moderation.staff.is_moderator(event.sender):
            return
        case = await self.cases.by_root(root)
        if case is None:
            return
        if self.bot.commands.is_command(event) is not None:
            await self.cases.command_in_thread(event.event_id, case.id)
            return
        body = event.body or f"({event.msgtype or 'a message'})"
        await self.cases.add_message(case.id, event.event_id, event.sender, "note", strip_invisible(body))

    # -- ModMail and appeals: the member's side ------------------------------------------------

    def _direct_user(self, room_id: str) -> str | None:
        direct = self.bot.host.features.get("direct_chats")
        return direct.user_of(room_id) if direct is not None else None

    @staticmethod
    def _text_of(event: Event) -> str | None:
        if event.msgtype in ("m.text", "m.notice", "m.emote") and event.body is not None:
            return strip_invisible(event.body).strip() or None
        if event.msgtype in ("m.image", "m.file", "m.video", "m.audio"):
            name = excerpt(event.body, 80) if event.body else "unnamed"
            return f"(an attachment, {event.msgtype[2:]} {name!r}: attachments are not passed on)"
        return None

    def _within_rate(self, bucket: dict[str, collections.deque[float]], user: str, limit: int, window: float) -> bool:
        now = time.monotonic()
        times = bucket.setdefault(user, collections.deque())
        while times and now - times[0] > window:
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True

    async def _member_message(self, event: Event) -> None:
        room = event.room_id
        user = self._direct_user(room)
        if user is None or event.sender != user:
            return
        text = self._text_of(event)
        if text is None:
            return
        replayed = await self.cases.by_message(event.event_id)
        if replayed is not None:
            await self._follow_up(replayed, event, text)
            return
        if await self.cases.blocked(user):
            await self._tell_once(
                user, room, "blocked", "Your messages are not passed on to the moderators at the moment.", event
            )
            return
        if not self._within_rate(self._recent, user, MESSAGES_PER_MINUTE, 60.0):
            await self._tell_once(
                user,
                room,
                "slow",
                "You are writing faster than the moderators can read: that message was not passed on. "
                "Please wait a minute, then write again.",
                event,
            )
            return
        for request in self.requests:
            if request.asks(text):
                await request.handle(event, user, text)
                return
        case = await self.cases.open_in_chat(room, user)
        appeal = parse_appeal(text)
        # Within an open case only "appeal #N …" is an appeal: "appeal or not, here is more"
        # is more for the case.
        if appeal is not None and (case is None or appeal.infraction_id is not None):
            await self._appeal(event, user, appeal, text)
            return
        if case is not None:
            message_id, _ = await self.cases.add_message(case.id, event.event_id, user, "user", text)
            await self._to_thread(case, message_id, lines_message(f"{user}:", _quote(text)))
            return
        if await self.cases.open_count(user) >= self.config.modmail.max_open_cases:
            await self._tell_once(
                user,
                room,
                f"too many:{room}",
                f"You already have {self.config.modmail.max_open_cases} open cases with the moderators; they "
                "will answer you there. Please wait for an answer before opening another.",
                event,
            )
            return
        case, _ = await self.cases.open_case(
            NewCase("modmail", "modmail", user, source_key=event.event_id, chat_room=room),
            (event.event_id, user, "user", text),
        )
        log.info("case_opened", case=case.id, kind="modmail", room_id=room)
        await self.announce(case)

    async def _follow_up(self, case: Case, event: Event, text: str) -> None:
        """A replayed message: finish what its first handling began (every step is keyed)."""
        request = self._request_of(case.kind)
        if case.source_key == event.event_id and request is not None:
            await request.handle(event, event.sender, text)
            return
        if case.source_key == event.event_id:
            await self.announce(case)
            return
        message_id = await self.cases.message_id(event.event_id)
        if message_id is not None:
            await self._to_thread(case, message_id, lines_message(f"{event.sender}:", _quote(text)))

    async def _appeal(self, event: Event, user: str, request: AppealRequest, text: str) -> None:
        room = event.room_id
        key = f"case-answer:{event.event_id}"
        if not request.reason:
            ref = f"#{request.infraction_id}" if request.infraction_id is not None else "#<number>"
            await self.tell(None, user, room, lines_message(f"Please add why you appeal: appeal {ref} <why…>"), key)
            return
        inf, refusal = await self._appealable(user, request.infraction_id)
        if inf is None:
            await self.tell(None, user, room, lines_message(refusal or "I cannot open that appeal."), key)
            return
        existing = await self.cases.open_appeal_of(inf.id)
        if existing is not None:
            text_ = (
                f"You already have an open appeal of decision #{inf.id} (case #{existing.id}); "
                "the moderators will answer you there."
            )
            await self.tell(None, user, room, lines_message(text_), key)
            return
        if await self.cases.open_count(user) >= self.config.modmail.max_open_cases:
            await self.tell(
                None,
                user,
                room,
                lines_message(
                    f"You already have {self.config.modmail.max_open_cases} open cases; please wait for an answer."
                ),
                key,
            )
            return
        try:
            case, _ = await self.cases.open_case(
                NewCase(
                    "appeal",
                    "modmail",
                    user,
                    source_key=event.event_id,
                    chat_room=room,
                    infraction_id=inf.id,
                    appeal_reason=request.reason[:2000],
                ),
                (event.event_id, user, "user", text),
            )
        except sqlite3.IntegrityError:  # the same appeal from two chats at once: one case
            await self.tell(
                None, user, room, lines_message(f"You already have an open appeal of decision #{inf.id}."), key
            )
            return
        log.info("case_opened", case=case.id, kind="appeal", infraction=inf.id)
        await self.announce(case)

    async def _appealable(self, user: str, infraction_id: int | None) -> tuple[Infraction | None, str | None]:
        """The infraction ``user`` may appeal, or why not (said politely; a note, someone else's
        decision and a missing one read the same, so nothing is revealed)."""
        if infraction_id is None:
            in_force = [inf for inf in await self.bot.ledger.active(user) if inf.kind in ("mute", "ban")]
            if not in_force:
                return None, (
                    "You have no sanction in force. To appeal an earlier decision, write: appeal #<number> <why…> "
                    "(the number is in the notice you received)."
                )
            return max(in_force, key=lambda inf: inf.id), None
        inf = await self.bot.ledger.get_infraction(infraction_id)
        if inf is None or inf.subject != user or inf.kind not in SANCTIONS or inf.state in ("pending", "failed"):
            return None, (
                f"I found no decision #{infraction_id} concerning you. The number is in the notice you received "
                "(Reference: #…)."
            )
        if inf.state == "pardoned":
            return None, f"Decision #{infraction_id} has already been withdrawn; there is nothing to appeal."
        return inf, None

    # -- reports and urgent mentions in the protected rooms -------------------------------------

    async def _room_message(self, event: Event) -> None:
        text = command_text(event)
        if not text:
            return
        first = text.split(maxsplit=1)[0].lower()
        if first == self.config.reports.command.lower():
            await self._report(event, text)
        elif first != self.config.command_prefix.lower() and self._urgent(event, text):
            await self._mention(event, text)

    def _urgent(self, event: Event, text: str) -> bool:
        bot_id = self.bot.hs.user_id
        if mentions_word(text, self.config.reports.urgent_mentions) or mentions_word(text, [bot_id]):
            return True
        mentions = event.content.get("m.mentions")
        users = mentions.get("user_ids") if isinstance(mentions, Mapping) else None
        # A reply to the bot mentions it by itself: that is no call for help.
        return isinstance(users, list) and bot_id in users and relation(event.content)[1] is None

    async def _report(self, event: Event, text: str) -> None:
        room, reporter = event.room_id, event.sender
        # At once, before anything else, and without a reason the room could read: the room
        # must not see who reported, nor that a report was made.
        await self._send(redact_intent(room, event.event_id, ""))
        _, target = relation(event.content)
        reason = text[len(self.config.reports.command) :].strip()[:500]
        key = f"case-answer:{event.event_id}"
        replayed = await self.cases.by_message(event.event_id)
        if replayed is not None:
            if replayed.source_key == event.event_id:
                await self.announce(replayed)
            else:
                await self._joined_report(replayed, event, reporter, reason)
            return
        if await self.cases.blocked(reporter):
            await self._tell_once(reporter, None, "blocked", "Your reports are not passed on at the moment.", event)
            return
        if not self._within_rate(self._reports, reporter, REPORTS_PER_10_MIN, 600.0):
            slow = "You have sent many reports in a short time; please wait a few minutes."
            await self._tell_once(reporter, None, "reports", slow, event)
            return
        if target is None:
            usage = (
                f"To report a message, reply to it with: {self.config.reports.command} [reason…]. "
                "I remove that line at once, so nobody sees who reported."
            )
            await self.tell(None, reporter, None, lines_message(usage), key)
            return
        existing = await self.cases.open_report_of(room, target)
        if existing is not None:
            await self._joined_report(existing, event, reporter, reason)
            return
        fetched = await self._fetch(room, target)
        if fetched is None:
            await self.tell(None, reporter, None, lines_message("I could not find the message you replied to."), key)
            return
        if await self.cases.open_count(reporter, ("report",)) >= MAX_OPEN_REPORTS:
            many = "You have many open reports; the moderators will get to them."
            await self._tell_once(reporter, None, "reports", many, event)
            return
        sender, body = fetched
        new = _report_case("report", reporter, event.event_id, room, target, sender, body)
        try:
            case, _ = await self.cases.open_case(new, (event.event_id, reporter, "report", reason or "no reason given"))
        except sqlite3.IntegrityError:  # reported at the same moment through the homeserver
            joined = await self.cases.open_report_of(room, target)
            if joined is not None:
                await self._joined_report(joined, event, reporter, reason)
            return
        log.info("case_opened", case=case.id, kind="report", room_id=room)
        await self.announce(case)

    async def _joined_report(self, case: Case, event: Event, reporter: str, reason: str) -> None:
        """Another report of a reported message: one more reporter on its case."""
        await self.cases.add_person(case.id, reporter, "reporter", reporter)
        message_id, _ = await self.cases.add_message(
            case.id, event.event_id, reporter, "report", reason or "no reason given"
        )
        count = len((await self.cases.people(case.id))["reporter"])
        line = f"Reported again by {reporter} ({count} reporters): {reason or 'no reason given'}"
        await self._to_thread(case, message_id, lines_message(line))
        where = self.bot.store.label(event.room_id)
        ack = lines_message(
            f"Thank you — your report of a message in {where} is case #{case.id}.",
            "The moderators will look at it; the person you reported is not told who reported it.",
        )
        await self.tell(None, reporter, None, ack, key=f"case-answer:{event.event_id}")

    async def _fetch(self, room_id: str, event_id: str) -> tuple[str, str] | None:
        """(sender, text) of an event of a room the bot is in, decrypted when it can."""
        try:
            raw = await self.bot.hs.request("GET", f"{API}/rooms/{q(room_id)}/event/{q(event_id)}")
        except (MatrixError, HomeserverUnavailable) as err:
            log.info("reported_event_unavailable", room_id=room_id, event_id=event_id, error=str(err))
            return None
        if not isinstance(raw, Mapping) or not isinstance(raw.get("sender"), str):
            return None
        if raw.get("type") == "m.room.encrypted" and self.bot.crypto is not None:
            clear, _ = self.bot.crypto.decrypt(raw, room_id)
            if clear is None:
                return str(raw["sender"]), "(encrypted; I cannot read it)"
            raw = clear
        content = raw.get("content")
        body = content.get("body") if isinstance(content, Mapping) else None
        if not isinstance(body, str):
            body = "(no text: removed, or not a text message)"
        return str(raw["sender"]), body

    async def _mention(self, event: Event, text: str) -> None:
        room, user = event.room_id, event.sender
        replayed = await self.cases.by_message(event.event_id)
        if replayed is not None:
            if replayed.source_key == event.event_id:
                await self.announce(replayed)
            else:  # a later call, recorded before a crash: its line in the thread (keyed)
                message_id = await self.cases.message_id(event.event_id)
                if message_id is not None:
                    line = f"{user} again, in {self.bot.store.label(room)}: «{excerpt(text)}»"
                    await self._to_thread(replayed, message_id, lines_message(line, _link(room, event.event_id)))
            return
        if await self.cases.blocked(user) or not self._within_rate(self._recent, user, MESSAGES_PER_MINUTE, 60.0):
            return  # a blocked member, or one calling faster than anyone reads: not passed on
        recent = await self.cases.recent_mention(user, now_ms() - MENTION_WINDOW_MS)
        if recent is not None:
            message_id, _ = await self.cases.add_message(recent.id, event.event_id, user, "user", text)
            line = f"{user} again, in {self.bot.store.label(room)}: «{excerpt(text)}»"
            await self._to_thread(recent, message_id, lines_message(line, _link(room, event.event_id)))
            return
        case, _ = await self.cases.open_case(
            NewCase(
                "mention",
                "mention",
                user,
                source_key=event.event_id,
                subject_room=room,
                subject_event=event.event_id,
                excerpt=excerpt(text),
            ),
            (event.event_id, user, "user", text),
        )
        log.info("case_opened", case=case.id, kind="mention", room_id=room)
        await self.announce(case)

    # -- the homeserver's reports ----------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_reports()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.exception("report_poll_failed", error=repr(err))
            await asyncio.sleep(POLL_EVERY_S)

    async def poll_reports(self) -> int:
        """Read Synapse's event reports newer than the persisted position (newest first, page by
        page, down to it), and make those about protected rooms cases, oldest first. A first poll
        only takes the position: older reports were for the homeserver's admins. Returns how many
        became cases."""
        cursor_text = await self.bot.ledger.get_kv("cases:homeserver_report")
        cursor = int(cursor_text) if cursor_text and cursor_text.isdigit() else None
        collected: list[Mapping[str, Any]] = []
        start = 0
        while True:
            try:
                reply = await self.bot.hs.request(
                    "GET",
                    "/_synapse/admin/v1/event_reports",
                    query={"from": str(start), "limit": "100", "dir": "b"},
                )
            except MatrixError as err:
                if self._poll_problem is None:
                    self._poll_problem = f"cannot read them ({err}); is the bot account a Synapse admin?"
                    await self.bot.moderation.post(lines_message(f"⚠️ I cannot read the homeserver's reports: {err}."))
                return 0
            self._poll_problem = None
            reports = reply.get("event_reports") if isinstance(reply, Mapping) else None
            if not isinstance(reports, list):
                return 0
            reached = False
            for report in reports:
                number = report.get("id") if isinstance(report, Mapping) else None
                if not isinstance(number, int) or isinstance(number, bool):
                    continue
                if cursor is not None and number <= cursor:
                    reached = True
                    break
                collected.append(report)
            token = reply.get("next_token")
            if reached or cursor is None or not isinstance(token, int) or not reports:
                break
            start = token
        if cursor is None:
            newest = max((int(r["id"]) for r in collected), default=0)
            await self.bot.ledger.set_kv("cases:homeserver_report", str(newest))
            log.info("report_poll_started", position=newest)
            return 0
        made = 0
        for report in sorted(collected, key=lambda r: int(r["id"])):
            if await self._homeserver_report(report):
                made += 1
            await self.bot.ledger.set_kv("cases:homeserver_report", str(int(report["id"])))
        return made

    async def _homeserver_report(self, report: Mapping[str, Any]) -> bool:
        """One of the homeserver's reports: a case when it is about a protected room (the same
        limits and blocks as ``!report``); True when it became or joined one."""
        fields = {key: report.get(key) for key in ("room_id", "event_id", "user_id", "sender")}
        if not all(isinstance(value, str) for value in fields.values()):
            return False
        room, target, reporter, sender = (str(fields[k]) for k in ("room_id", "event_id", "user_id", "sender"))
        if not self.bot.store.is_protected(room):
            return False
        reason = report.get("reason")
        reason = reason[:500] if isinstance(reason, str) and reason.strip() else "no reason given"
        source = f"homeserver:{int(report['id'])}"
        existing = await self.cases.by_source(source)
        if existing is not None:
            await self.announce(existing)
            return True
        if await self.cases.blocked(reporter) or not self._within_rate(
            self._reports, reporter, REPORTS_PER_10_MIN, 600.0
        ):
            log.info("homeserver_report_not_passed_on", report=source, why="blocked or too many")
            return False
        async with self._lanes.setdefault(reporter, asyncio.Lock()):  # in turn with their !report lines
            joined = await self.cases.open_report_of(room, target)
            if joined is None:
                if await self.cases.open_count(reporter, ("report",)) >= MAX_OPEN_REPORTS:
                    log.info("homeserver_report_not_passed_on", report=source, why="too many open reports")
                    return False
                fetched = await self._fetch(room, target)
                body = fetched[1] if fetched else "(I could not read the message)"
                new = _report_case("homeserver", reporter, source, room, target, sender, body)
                try:
                    case, _ = await self.cases.open_case(new, (source, reporter, "report", reason))
                except sqlite3.IntegrityError:  # a !report of it came at the same moment
                    joined = await self.cases.open_report_of(room, target)
                else:
                    log.info("case_opened", case=case.id, kind="report", channel="homeserver", room_id=room)
                    await self.announce(case)
                    return True
            if joined is None:
                return False
            await self.cases.add_person(joined.id, reporter, "reporter", reporter)
            message_id, _ = await self.cases.add_message(joined.id, source, reporter, "report", reason)
            count = len((await self.cases.people(joined.id))["reporter"])
            line = f"Reported to the homeserver too, by {reporter} ({count} reporters): {reason}"
            await self._to_thread(joined, message_id, lines_message(line))
            return True

    # -- commands ------------------------------------------------------------------------------

    def commands(self) -> Sequence[Spec]:
        """``reply``, ``cases``, ``case``, ``appeal``, ``modmail``: all in the management room only."""
        return [
            Spec(
                "reply",
                "reply [case] <text…>",
                "Answer a case's author (in the case's thread the number is not needed); signed as configured.",
                _parse_reply,
                self._reply,
                room_admins=False,
                scoped=False,
            ),
            Spec(
                "cases",
                "cases [open|closed|all]",
                "List the cases (reports, ModMail, appeals, urgent mentions), newest first.",
                _parse_cases,
                self._cases,
                room_admins=False,
                scoped=False,
            ),
            Spec(
                "case",
                "case <N> | case close <N> actioned|no-action|duplicate|invalid [note…] | case link <N> "
                "<infraction-id> | case name <N> <user>",
                "Show a case; close it (the author is told it is closed, never the note); link an infraction; "
                "name a person in it.",
                _parse_case,
                self._case,
                room_admins=False,
                scoped=False,
            ),
            Spec(
                "appeal",
                "appeal <case> uphold|overturn [reason…]",
                "Decide an appeal: overturn pardons the decision and lifts what is in force; uphold keeps it. "
                "The author is told the decision and the reason.",
                _parse_appeal_decision,
                self._decide,
                room_admins=False,
                scoped=False,
            ),
            Spec(
                "modmail",
                "modmail block|unblock <user> [reason…]",
                "Stop a user from opening cases, or let them again.",
                _parse_modmail,
                self._modmail,
                room_admins=False,
                scoped=False,
            ),
        ]

    async def _case_or_usage(self, command: str, number: int) -> Case:
        case = await self.cases.get(number)
        if case is None:
            raise UsageError(command, f"there is no case #{number}")
        return case

    async def _reply(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        in_thread = await self.cases.by_root(actor.thread) if actor.thread else None
        number = int(parsed.words[0]) if parsed.words else None
        text = _reply_text(actor.text or "", self.config.command_prefix)
        if in_thread is not None:
            # In a case's thread the answer is for that case: a number in front is its own
            # (dropped), or the start of the text ("2 of us are looking…"), never another case.
            case = in_thread
            if number == in_thread.id:
                text = _drop_number(text)
        elif number is not None:
            case = await self._case_or_usage("reply", number)
            text = _drop_number(text)
        else:
            raise UsageError("reply", "which case? Write the number, or answer in the case's thread")
        if not text:
            raise UsageError("reply", "what should the answer say?")
        if not case.open:
            return text_message(f"⛔ Case #{case.id} is closed ({case.outcome}); nothing was sent.")
        assert actor.event_id is not None
        await self.cases.add_message(case.id, actor.event_id, actor.name, "reply", text)
        signature = "— the moderation team" if self.config.modmail.anonymous_staff else f"— {self._name_of(actor.name)}"
        sent = await self.tell(
            case, case.opener, case.chat_room, lines_message(_quote(text), signature), f"case-reply:{actor.event_id}"
        )
        await self.bot.ledger.audit(
            actor=actor.name,
            action="case_reply",
            outcome="done" if sent else "failed",
            event_id=actor.event_id,
            detail={"case": case.id},
        )
        if sent is None:
            return text_message(f"⚠️ The answer to case #{case.id} is in its transcript, but I could not deliver it.")
        return Reaction("✅", "✅")

    def _name_of(self, user: str) -> str:
        store = self.bot.store
        member = store.room(store.management_id).content("m.room.member", user)
        name = member.get("displayname")
        return f"{name} ({user})" if isinstance(name, str) and name.strip() else user

    async def _cases(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        which = parsed.words[0] if parsed.words else "open"
        cases, total = await self.cases.listing(which)
        head = f"{total} {'' if which == 'all' else which + ' '}case(s)" + (", the newest 50:" if total > 50 else ":")
        return bullet_list(head, [self._summary(case) for case in cases], limit=50)

    def _summary(self, case: Case) -> str:
        via = "" if case.channel == case.kind else f" via {case.channel}"
        state = "open" if case.open else f"closed: {case.outcome}"
        where = f" in {self.bot.store.label(case.subject_room)}" if case.subject_room else ""
        return f"#{case.id} {KIND_LABEL[case.kind]}{via} from {case.opener}{where}, {when(case.opened_at)} — {state}"

    async def _case(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        verb, number = parsed.words[0], int(parsed.words[1])
        case = await self._case_or_usage("case", number)
        if verb == "show":
            return await self._details(case)
        if verb == "link":
            inf_id = parsed.infraction_id
            assert inf_id is not None
            if await self.bot.ledger.get_infraction(inf_id) is None:
                raise UsageError("case", f"there is no infraction #{inf_id}")
            added = await self.cases.link(case.id, inf_id, actor.name)
            await self._audit(actor, "case_link", case, {"infraction": inf_id})
            return text_message(
                f"✅ Infraction #{inf_id} {'linked to' if added else 'was already linked to'} case #{case.id}."
            )
        if verb == "name":
            user = parsed.user
            assert user is not None
            added = await self.cases.add_person(case.id, user, "named", actor.name)
            await self._audit(actor, "case_name", case, {"user": user})
            return text_message(f"✅ {user} {'is now named in' if added else 'was already named in'} case #{case.id}.")
        outcome = parsed.words[2]
        if case.kind == "second_chance" and case.open:
            raise UsageError("case", f"case #{case.id} is a second chance: its vote decides it")
        if case.kind == "appeal" and case.open and outcome == "actioned":
            raise UsageError(
                "case", f"decide an appeal with {self.config.command_prefix} appeal {case.id} uphold|overturn"
            )
        closed = await self.cases.close(case.id, outcome, actor.name, parsed.reason, actor.event_id)
        if not closed and case.decided_by_event != actor.event_id:
            return text_message(f"⛔ Case #{case.id} is already closed ({case.outcome}).")
        if closed:  # not again when a crash made the command run twice
            await self._audit(actor, "case_close", case, {"outcome": outcome})
            await self._count()
        told = self._closed_text(case)
        if told is not None:
            await self.tell(case, case.opener, case.chat_room, told, key=f"case-closed:{case.id}")
            if case.kind == "report":  # everyone who reported it was told its number
                for reporter in (await self.cases.people(case.id))["reporter"]:
                    if reporter != case.opener:
                        await self.tell(None, reporter, None, told, key=f"case-closed:{case.id}:{reporter}")
        return text_message(f"✅ Closed case #{case.id} as {outcome}" + (" (the author was told)." if told else "."))

    def _closed_text(self, case: Case) -> Message | None:
        if case.kind in ("modmail", "appeal"):
            return lines_message(
                f"Your case #{case.id} with the moderators is closed. If you need them again, write here.",
                "— the moderation team",
            )
        if case.kind == "report" and case.channel == "report":
            return lines_message(
                f"Your report (case #{case.id}) is closed. Thank you for reporting it.", "— the moderation team"
            )
        return None

    async def _details(self, case: Case) -> Message:
        people = await self.cases.people(case.id)
        infractions = await self.cases.infractions(case.id)
        counts = await self.cases.transcript_counts(case.id)
        total = sum(counts.values())
        answered = (
            f"first answer {round((case.first_answer_at - case.opened_at) / 60000)} min after opening"
            if case.first_answer_at
            else "not answered yet"
        )
        lines = [
            f"Case #{case.id}: {KIND_LABEL[case.kind]}, channel {case.channel}, "
            + ("open" if case.open else f"closed as {case.outcome} by {case.closed_by} on {when(case.closed_at)}"),
            f"Opened by {case.opener} on {when(case.opened_at)}; {answered}",
        ]
        if case.subject_room:
            where = self.bot.store.label(case.subject_room)
            link = _link(case.subject_room, case.subject_event) if case.subject_event else ""
            lines.append(f"About a message in {where}: {link} «{case.excerpt or ''}»")
        if case.kind == "appeal":
            lines.append(f"Appeal of infraction #{case.infraction_id}: {_quote(case.appeal_reason or '', 500)}")
        lines.append("People named: " + (", ".join(people["named"]) or "none"))
        if people["reporter"]:
            lines.append(f"Reporters: {len(people['reporter'])}: " + ", ".join(people["reporter"]))
        lines.append(
            "Linked infractions: "
            + (", ".join(f"#{i} ({kind}, {state})" for i, kind, state in infractions) if infractions else "none")
        )
        parts = ", ".join(f"{counts[k]} {label}" for k, label in _TRANSCRIPT if counts.get(k))
        lines.append(f"Transcript: {total} message(s)" + (f" ({parts})" if parts else ""))
        if case.close_note:
            lines.append(f"Closing note: {case.close_note}")
        return lines_message(*lines)

    async def _decide(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        number, decision = int(parsed.words[0]), parsed.words[1]
        case = await self._case_or_usage("appeal", number)
        if case.kind != "appeal":
            raise UsageError("appeal", f"case #{case.id} is a {KIND_LABEL[case.kind]}, not an appeal")
        rerun = not case.open and case.decided_by_event == actor.event_id
        if not case.open and not rerun:
            return text_message(f"⛔ Case #{case.id} is already closed ({case.outcome}).")
        assert case.infraction_id is not None
        inf = await self.bot.ledger.get_infraction(case.infraction_id)
        if inf is None:
            raise UsageError("appeal", f"infraction #{case.infraction_id} is gone from the ledger")
        reason = parsed.reason
        outcome = "overturned" if decision == "overturn" else "upheld"
        if outcome == "upheld" and inf.state == "pardoned" and not rerun:
            raise UsageError("appeal", f"decision #{inf.id} was pardoned since: overturn the appeal, or close the case")
        lines: list[str] = []
        if outcome == "overturned":
            # Off our published list first (else our own list bans them again when they come
            # back), then lifted, and the case closed last: a crash anywhere runs the command
            # again, and each step finds itself done.
            if inf.kind == "ban" and inf.scope == "*" and await self.bot.policies.unpublish(inf.subject):
                lines.append("removed from our policy list")
            if inf.state != "pardoned":
                why = reason or f"appeal case #{case.id} overturned"
                done = await self.bot.moderation.pardon(inf.id, why, actor)
                if not done.ok:
                    if lines:  # still in force: back on our list, as before
                        await self.bot.policies.publish_ban(inf.subject, inf.reason or "banned by the moderators")
                    return text_message(f"⚠️ Case #{case.id} stays open: {done.summary}")
                lines.insert(0, done.summary)
        if not rerun:
            await self.cases.close(case.id, outcome, actor.name, reason, actor.event_id)
            await self._audit(actor, "appeal_decided", case, {"outcome": outcome, "infraction": inf.id})
            await self._count()
        told = self._decision_text(case, inf, outcome, reason)
        await self.tell(case, case.opener, case.chat_room, told, key=f"case-decision:{case.id}")
        head = f"✅ Appeal case #{case.id}: decision #{inf.id} {outcome}; {case.opener} was told."
        return text_message(" ".join([head, *lines]))

    def _decision_text(self, case: Case, inf: Infraction, outcome: str, reason: str) -> Message:
        what = f"Your appeal (case #{case.id}) of decision #{inf.id} ({inf.kind})"
        if outcome == "overturned":
            head = f"{what} was accepted: the decision is overturned and no longer in force."
        else:
            head = f"{what} was considered, and the decision stands."
        rules = [rule.cite() for rule in cited_rules(f"{inf.reason} {reason}", self.config.rules)]
        return lines_message(
            head, f"The moderators' reason: {reason}" if reason else None, *rules, "— the moderation team"
        )

    async def _modmail(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        verb, user = parsed.words[0], parsed.user
        assert user is not None
        if verb == "block":
            changed = await self.cases.block(user, actor.name, parsed.reason)
            text = f"✅ {user} can no longer open cases." if changed else f"{user} was already blocked."
        else:
            changed = await self.cases.unblock(user)
            text = f"✅ {user} may open cases again." if changed else f"{user} was not blocked."
        await self.bot.ledger.audit(
            actor=actor.name,
            action=f"modmail_{verb}",
            outcome="done" if changed else "unchanged",
            subject=user,
            reason=parsed.reason or None,
            event_id=actor.event_id,
        )
        return text_message(text)

    async def _audit(self, actor: Actor, action: str, case: Case, detail: Mapping[str, Any]) -> None:
        await self.bot.ledger.audit(
            actor=actor.name, action=action, outcome="done", event_id=actor.event_id, detail={"case": case.id, **detail}
        )


_TRANSCRIPT = (("user", "from the author"), ("report", "reports"), ("reply", "answers"), ("note", "internal notes"))
_REPLY_HEAD = re.compile(r"^\s*\S+\s+reply\b[ \t]*", re.IGNORECASE)
_NUMBER_HEAD = re.compile(r"^#?\d{1,18}(?:\s+|$)")


def _report_case(channel: str, reporter: str, source: str, room: str, target: str, sender: str, body: str) -> NewCase:
    """A report case about ``target`` (by ``sender``, in ``room``), from ``!report`` or the homeserver."""
    return NewCase(
        "report",
        channel,
        reporter,
        source_key=source,
        subject_room=room,
        subject_event=target,
        excerpt=excerpt(body),
        named=(sender,),
        reporters=(reporter,),
    )


def _reply_text(typed: str, prefix: str) -> str:
    """What ``!mod reply [N] <text…>`` says, its line breaks kept (the number still in front)."""
    return _REPLY_HEAD.sub("", typed, count=1).strip()


def _drop_number(text: str) -> str:
    return _NUMBER_HEAD.sub("", text, count=1).strip()


def _number(word: str, command: str, what: str = "case") -> int:
    return number_word(word, command, f"a {what} number")


def _parse_reply(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if not args:
        raise UsageError(name, "what should the answer say?")
    raw = args[0].lstrip("#")
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return Parsed(name, words=(raw,))
    return Parsed(name)


def _parse_cases(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if len(args) > 1 or (args and args[0].lower() not in ("open", "closed", "all")):
        raise UsageError(name, "list open, closed or all cases")
    return Parsed(name, words=(args[0].lower(),) if args else ())


def _parse_case(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if not args:
        raise UsageError(name, "which case? Give its number")
    verb = args[0].lower()
    if verb not in ("close", "link", "name"):
        if len(args) != 1:
            raise UsageError(name, f"unknown sub-command {args[0][:30]!r}")
        return Parsed(name, words=("show", str(_number(args[0], name))))
    if len(args) < 2:
        raise UsageError(name, f"case {verb} needs a case number")
    number = str(_number(args[1], name))
    if verb == "close":
        if len(args) < 3 or args[2].lower() not in CLOSE_OUTCOMES:
            raise UsageError(name, "close it as actioned, no-action, duplicate or invalid")
        return Parsed(name, words=(verb, number, args[2].lower()), reason=" ".join(args[3:])[:1000])
    if len(args) != 3:
        raise UsageError(
            name, f"case {verb} takes a case number and one {'infraction id' if verb == 'link' else 'user'}"
        )
    if verb == "link":
        return Parsed(name, words=(verb, number), infraction_id=_number(args[2], name, "infraction"))
    if not USER_ID.fullmatch(args[2]):
        raise UsageError(name, f"{args[2][:60]!r} is not a user id (write @user:server or mention them)")
    return Parsed(name, words=(verb, number), user=args[2])


def _parse_appeal_decision(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if len(args) < 2:
        raise UsageError(name, "which case, and uphold or overturn?")
    number = str(_number(args[0], name))
    decision = args[1].lower()
    if decision not in ("uphold", "overturn"):
        raise UsageError(name, f"{args[1][:30]!r}: decide uphold or overturn")
    return Parsed(name, words=(number, decision), reason=" ".join(args[2:])[:1000])


def _parse_modmail(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if not args or args[0].lower() not in ("block", "unblock"):
        raise UsageError(name, "block or unblock?")
    if len(args) < 2 or not USER_ID.fullmatch(args[1]):
        raise UsageError(name, "which user? Write @user:server or mention them.")
    return Parsed(name, words=(args[0].lower(),), user=args[1], reason=" ".join(args[2:])[:1000])


@feature("cases")
def build(bot: Any) -> Feature:
    """Reports, ModMail and appeals."""
    return CasesFeature(bot)
