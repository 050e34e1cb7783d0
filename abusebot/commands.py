"""``!mod`` commands: one authorization checkpoint, then parsing, then the actions layer.

The order matters and is pinned by tests: :func:`authorize` runs on every message that starts
with the prefix *before* any parsing. Mjolnir's CVE-2025-24024 (commands accepted from any room)
came from moving such a check; here it is one function, called from one place.
"""

from __future__ import annotations

import asyncio
import difflib
import html
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote

import attrs
import structlog

from abusebot.actions import Actor, Moderation, Outcome, Scope
from abusebot.audit import Message, bullet_list, history_message, room_pill, standing_line
from abusebot.cases import strip_invisible
from abusebot.durations import EXAMPLES, DurationError, mentions_a_duration, take_duration
from abusebot.escalation import Ladder
from abusebot.events import Event, parse_event, relation
from abusebot.ledger import Job, now_ms
from abusebot.matrix import HomeserverUnavailable, MatrixError
from abusebot.outbox import intent
from abusebot.pipeline import Pipeline
from abusebot.rooms import RoomStore
from abusebot.safety import can_command, room_problems
from policies.lists import PolicyManager

log = structlog.get_logger("abusebot.commands")

USER_ID = re.compile(r"@[^\s:]{1,255}:[A-Za-z0-9.\-\[\]:]{1,255}")
# Room ids may lack a server part (room v12); aliases always have one.
ROOM_REF = re.compile(r"![^\s:]{1,255}(?::[A-Za-z0-9.\-\[\]:]{1,255})?|#[^\s:]{1,255}:[A-Za-z0-9.\-\[\]:]{1,255}")
MATRIX_TO = re.compile(r"^https://matrix\.to/#/(@[^?/]+)")
MAX_REASON = 1000
DEFAULT_REDACT_COUNT = 25
MAX_REDACT_COUNT = 1000
#: A command not answered after this long is looked at again by the scheduler.
COMMAND_WATCHDOG_MS = 10 * 60_000


# -- the checkpoint ----------------------------------------------------------------------------


@attrs.frozen
class Authorized:
    """A command the bot will obey, and the rooms it may touch."""

    sender: str
    scope: Scope
    management: bool


def authorize(event: Event, store: RoomStore, moderation: Moderation) -> Authorized | None:
    """Who may command the bot, and where: the only authorization check, run before parsing.

    * the management room: its moderators (power level ≥ the configured level), scope all rooms;
    * a protected room: users whose power level there allows banning, scope that room only;
    * anywhere else, or anyone else: ``None`` (never obeyed).
    """
    if event.sender == moderation.bot_user_id:
        return None
    staff = moderation.staff
    if event.room_id == store.management_id:
        if can_command(event.sender, store.room(event.room_id), staff, management=True):
            return Authorized(event.sender, Scope.everywhere(store), management=True)
        return None
    if store.is_protected(event.room_id) and can_command(
        event.sender, store.room(event.room_id), staff, management=False
    ):
        return Authorized(event.sender, Scope.room(event.room_id), management=False)
    return None


# -- text extraction ---------------------------------------------------------------------------


class _PillText(HTMLParser):
    """HTML to text, replacing user mention pills with their user id and dropping reply quotes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._pill_depth = 0
        self._reply_depth = 0

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        if tag == "mx-reply":
            self._reply_depth += 1
        elif tag == "a" and not self._reply_depth:
            href = dict(attrs_).get("href") or ""
            # Clients percent-encode the user id in pills (matrix.to/#/%40alice%3Aexample.org).
            match = MATRIX_TO.match(unquote(href))
            if match:
                self.parts.append(f" {match.group(1)} ")
                self._pill_depth += 1
        elif tag in ("br", "p", "div"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "mx-reply" and self._reply_depth:
            self._reply_depth -= 1
        elif tag == "a" and self._pill_depth:
            self._pill_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._pill_depth and not self._reply_depth:
            self.parts.append(data)


def command_text(event: Event) -> str | None:
    """The command as typed, with pills turned into user ids; ``None`` for non-text events."""
    if event.type != "m.room.message" or event.msgtype not in ("m.text", "m.notice", None):
        return None
    if event.formatted_body and event.content.get("format") == "org.matrix.custom.html":
        parser = _PillText()
        try:
            parser.feed(event.formatted_body)
            parser.close()
            return _clean("".join(parser.parts))
        except Exception:  # malformed HTML: fall back to the plain body
            pass
    if event.body is None:
        return None
    lines = [line for line in event.body.splitlines() if not line.startswith("> ")]
    return _clean(" ".join(lines))


def command_lines(event: Event) -> str | None:
    """The plain body of a command with its line breaks kept (reply quotes dropped, invisible
    format characters removed): what a moderator's relayed answer says, as they wrote it."""
    if event.body is None:
        return None
    lines = [line for line in event.body.splitlines() if not line.startswith("> ")]
    return strip_invisible("\n".join(lines).strip())


def _clean(text: str) -> str:
    """Collapse whitespace and drop invisible format characters (zero-width, bidi controls):
    a client that appends one must not turn ``!mod status`` into an unknown command."""
    if not text.isascii():
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.split())


# -- parsing -----------------------------------------------------------------------------------


class UsageError(Exception):
    """The command was malformed; the reply shows the usage."""

    def __init__(self, command: str, problem: str) -> None:
        self.command = command
        self.problem = problem
        super().__init__(problem)


#: Parses a command's words (after ``--room`` and the flags are taken out): (name, args, room, flags).
Parser = Callable[[str, list[str], "str | None", frozenset[str]], "Parsed"]
#: Runs a parsed, authorized command: (handler, parsed, auth, actor) → the reply.
Runner = Callable[["CommandHandler", "Parsed", "Authorized", Actor], Awaitable[Message]]
#: Looks at a parsed, authorized command before it runs: an answer instead of running it, or ``None``.
Guard = Callable[["Parsed", "Authorized", Actor], Awaitable["Message | None"]]
#: More lines for ``!mod history <user>`` (a feature's record of them: a second chance, say).
HistoryNotes = Callable[[str], Awaitable[list[str]]]


@attrs.frozen
class Spec:
    """One row of the one command table: its usage line, what it does, who may use it where, the
    flags it takes, how its words are parsed and what runs it. Features add rows of their own."""

    name: str
    usage: str
    help: str
    parse: Parser
    run: Runner
    room_admins: bool = True
    flags: frozenset[str] = frozenset()
    #: Whether ``--room`` makes sense (shown in its help).
    scoped: bool = True


#: Flags some commands take; anything else starting with -- is part of the reason.
FLAGS = frozenset({"--list", "--no-list", "--dont-apply", "--allow", "--no-auto-unban"})


@attrs.frozen
class Parsed:
    """A parsed command."""

    name: str
    user: str | None = None
    duration_s: int | None = None
    count: int | None = None
    infraction_id: int | None = None
    reason: str = ""
    room: str | None = None
    topic: str | None = None
    words: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()


def _take_room_flag(words: list[str], command: str) -> tuple[list[str], str | None]:
    room = None
    rest: list[str] = []
    iterator = iter(words)
    for word in iterator:
        if word == "--room":
            value = next(iterator, None)
            if value is None or not ROOM_REF.fullmatch(value):
                raise UsageError(command, "--room needs a room id (!id) or alias (#name:server)")
            room = value
        elif word.startswith("--room="):
            room = word.split("=", 1)[1]
            if not ROOM_REF.fullmatch(room):
                raise UsageError(command, "--room needs a room id (!id) or alias (#name:server)")
        else:
            rest.append(word)
    return rest, room


def _user(words: list[str], command: str) -> str:
    if not words:
        raise UsageError(command, "which user? Write @user:server or mention them.")
    if not USER_ID.fullmatch(words[0]):
        raise UsageError(command, f"{words[0]!r} is not a user id (write @user:server or mention them)")
    return words[0]


def _reason(words: list[str]) -> str:
    text = " ".join(words).strip()
    return text[:MAX_REASON]


def _typos(a: str, b: str) -> int:
    """Edits between two words, a swap of neighbours counting as one (the typo people make)."""
    previous, current = list(range(len(b) + 1)), [0] * (len(b) + 1)
    before: list[int] = []
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        before, previous = previous, current
    return previous[len(b)]


def closest(word: str, names: list[str]) -> list[str]:
    """The command a mistyped ``word`` most likely meant: the fewest typos (``stauts`` is one
    swap from ``status``), then the same length, then the most alike; none when far off."""
    word = word.lower()
    scored = [
        (_typos(word, name), abs(len(name) - len(word)), -difflib.SequenceMatcher(None, word, name).ratio(), name)
        for name in names
    ]
    best = min(scored, default=None)
    if best is None or best[0] > max(1, len(word) // 3):
        return difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return [best[3]]


def parse_command(text: str, prefix: str = "!mod", table: Mapping[str, Spec] | None = None) -> Parsed:
    """Parse ``text`` (which starts with ``prefix``) or raise :class:`UsageError`."""
    table = SPECS if table is None else table
    words = text.split()
    if not words or words[0].lower() != prefix.lower():
        raise UsageError("help", f"commands start with {prefix}")
    if len(words) == 1:
        return Parsed("help")
    name = words[1].lower()
    if name not in table:
        close = closest(name, list(table)) if name.isalpha() else []
        hint = f"; did you mean {prefix} {close[0]}?" if close else ""
        raise UsageError("help", f"unknown command {words[1][:40]!r}{hint}")
    args, room = _take_room_flag(words[2:], name)
    flags = frozenset(word for word in args if word in FLAGS)
    args = [word for word in args if word not in FLAGS]
    stray = flags - table[name].flags
    if stray:
        raise UsageError(name, f"{name} does not take {', '.join(sorted(stray))}")
    if {"--list", "--no-list"} <= flags:
        raise UsageError(name, "--list and --no-list contradict each other")
    return table[name].parse(name, args, room, flags)


def _parse_help(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    return Parsed(name, topic=args[0].lower() if args else None)


def _parse_nothing(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if args:
        raise UsageError(name, f"{name} takes nothing more")
    return Parsed(name, room=room)


def _parse_room(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if len(args) != 1 or not ROOM_REF.fullmatch(args[0]):
        raise UsageError(name, "which room? Give its id (!id) or alias (#name:server)")
    return Parsed(name, room=args[0])


def number_word(word: str, command: str, what: str) -> int:
    """``12`` or ``#12`` as a number (ASCII digits only: ``"²".isdigit()`` is true), or a
    :class:`UsageError` saying the word is not ``what`` ("an infraction id", "a case number")."""
    raw = word.lstrip("#")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise UsageError(command, f"{word[:30]!r} is not {what}")
    return int(raw)


def _parse_infraction(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if not args:
        raise UsageError(name, "which infraction? Give its id, e.g. 12 or #12.")
    return Parsed(
        name, infraction_id=number_word(args[0], name, "an infraction id"), reason=_reason(args[1:]), room=room
    )


def _parse_user(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    """``<user> [reason…]`` (unmute, kick, unban, history)."""
    return Parsed(name, user=_user(args, name), reason=_reason(args[1:]), room=room)


def _parse_user_text(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    """``<user> <text…>``: the text is required (warn, note)."""
    user = _user(args, name)
    if not args[1:]:
        raise UsageError(name, "a reason is required" if name == "warn" else "what should the note say?")
    return Parsed(name, user=user, reason=_reason(args[1:]), room=room)


def _parse_sanction(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    """``<user> [duration] [reason…]`` (mute needs the duration)."""
    user = _user(args, name)
    rest = args[1:]
    # Never guessed: a duration it clearly is, or a refusal; a failed one is never a reason.
    try:
        duration, used = take_duration(rest)
    except DurationError as err:
        raise UsageError(name, str(err)) from err
    if name == "mute" and duration is None:
        word = f"{rest[0][:40]!r} is not a duration; " if rest else ""
        raise UsageError(name, f"{word}how long? ({EXAMPLES})")
    misplaced = mentions_a_duration(rest[used:]) if duration is None else None
    if misplaced:
        raise UsageError(
            name,
            f"the reason says {misplaced!r}: write the duration right after the user "
            "(a ban without one is permanent), or reword the reason",
        )
    return Parsed(name, user=user, duration_s=duration, reason=_reason(rest[used:]), room=room, flags=flags)


def _parse_redact(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    user = _user(args, name)
    rest = args[1:]
    count = DEFAULT_REDACT_COUNT
    if rest:
        # ASCII only: "²".isdigit() is True but int("²") raises; long strings would hit int()'s digit limit.
        word = rest[0]
        if not (word.isascii() and word.isdigit()) or len(word) > 6 or not 1 <= int(word) <= MAX_REDACT_COUNT:
            raise UsageError(name, f"count must be a number from 1 to {MAX_REDACT_COUNT}")
        count = int(rest[0])
        if len(rest) > 1:
            raise UsageError(name, "redact takes only a user and a count")
    return Parsed(name, user=user, count=count, room=room)


def help_message(prefix: str, topic: str | None, table: Mapping[str, Spec] | None = None) -> Message:
    """The help text: all commands, or one."""
    table = SPECS if table is None else table
    if topic and topic in table:
        spec = table[topic]
        plain = f"{prefix} {spec.usage}\n{spec.help}"
        if spec.scoped:
            plain += "\nBy default this acts in all protected rooms; add --room ROOM to narrow it."
        return Message(plain, "<br>".join(html.escape(line) for line in plain.splitlines()))
    lines = [f"{prefix} {spec.usage} — {spec.help}" for spec in table.values()]
    head = "Commands (users as @user:server or a mention; durations like 30s, 10m, 2h, 7d, 4w):"
    plain = "\n".join([head, *lines])
    items = "".join(
        f"<li><code>{html.escape(prefix + ' ' + s.usage)}</code> — {html.escape(s.help)}</li>" for s in table.values()
    )
    return Message(plain, f"<p>{html.escape(head)}</p><ul>{items}</ul>")


def usage_message(prefix: str, err: UsageError, table: Mapping[str, Spec] | None = None) -> Message:
    """A clear error with the usage line."""
    table = SPECS if table is None else table
    spec = table.get(err.command, table["help"])
    plain = f"⚠️ {err.problem}\nUsage: {prefix} {spec.usage}"
    if err.command == "help":
        plain += f"\nSay '{prefix} help' for the list of commands."
    return Message(plain, "<br>".join(html.escape(line) for line in plain.splitlines()))


# -- dispatch ----------------------------------------------------------------------------------

StatusProvider = Callable[[], Awaitable[Message]]


class CommandHandler:
    """Turns authorized command events into actions and replies."""

    def __init__(
        self,
        moderation: Moderation,
        store: RoomStore,
        prefix: str,
        status: StatusProvider,
        pipeline: Pipeline | None = None,
        policies: PolicyManager | None = None,
    ) -> None:
        self.moderation = moderation
        self.store = store
        self.prefix = prefix
        self.status = status
        self.pipeline = pipeline
        self.policies = policies
        #: The one command table: the core's rows and every feature's (:meth:`add`).
        self.table: dict[str, Spec] = dict(SPECS)
        #: Commands in flight (event id → task) and one lane (a lock) per room.
        self._running: dict[str, asyncio.Task[None]] = {}
        self._lanes: dict[str, asyncio.Lock] = {}
        #: Command name → what looks at it before it runs (:meth:`guard`).
        self.guards: dict[str, list[Guard]] = {}
        #: What adds lines to ``!mod history``.
        self.history_notes: list[HistoryNotes] = []
        #: For ``!mod rooms``: the rooms the features could not get, and why a feature protects
        #: a room (the bot points these at its host).
        self.room_notes: Callable[[], list[str]] = list
        self.room_origins: Callable[[str], list[str]] = lambda room_id: []

    def guard(self, names: Sequence[str], check: Guard) -> None:
        """Have ``check`` look at every ``names`` command (after the authorization, before it runs)."""
        for name in names:
            self.guards.setdefault(name, []).append(check)

    def add(self, spec: Spec) -> None:
        """Add a feature's command to the table (names are unique)."""
        if spec.name in self.table:
            raise ValueError(f"a command named {spec.name!r} already exists")
        self.table[spec.name] = spec

    def is_command(self, event: Event) -> str | None:
        """The command text when ``event`` addresses the bot, else ``None``."""
        if event.type != "m.room.message":
            return None
        text = command_text(event)
        if text is None:
            return None
        first = text.split(maxsplit=1)[0].lower() if text.strip() else ""
        return text if first == self.prefix.lower() else None

    async def handle(self, event: Event) -> bool:
        """Handle one event; True only when it was a command the sender may give here.

        Anything else — including a ``!mod`` line from someone who may not command the bot —
        returns False, so the caller passes it to the policy lists and every protection like
        any other message: the prefix is no shield.
        """
        text = self.is_command(event)
        if text is None:
            return False
        auth = authorize(event, self.store, self.moderation)  # before any parsing
        if auth is None:
            await self.moderation.ledger.audit(
                actor=event.sender,
                action="command",
                outcome="ignored",
                room=event.room_id,
                reason="sender may not command the bot here",
                event_id=event.event_id,
                detail={"text": text[:200]},
            )
            log.info("command_ignored", sender=event.sender, room_id=event.room_id, event_id=event.event_id)
            return False
        # Claimed once answered (with the reply, or with the infraction a crash left to resume):
        # a command replayed before that runs again, and its actions find their own records.
        if await self.moderation.ledger.is_processed(event.event_id, "command"):
            log.info("command_replayed", event_id=event.event_id)
            return True
        # Recorded before the sync checkpoint moves past it, run off the sync loop: a long
        # command (a 1,000-message redaction, a ban across 500 rooms) never holds up the
        # protections. Commands of one room run in the order they were given.
        await self.moderation.ledger.add_job(
            "command", event.event_id, now_ms() + COMMAND_WATCHDOG_MS, {"event": dict(event.raw), "room": event.room_id}
        )
        self._start(event, text, auth)
        return True

    def _start(self, event: Event, text: str, auth: Authorized) -> None:
        if event.event_id in self._running:
            return
        task = asyncio.create_task(self._run_in_lane(event, text, auth), name=f"command {event.event_id}")
        self._running[event.event_id] = task
        task.add_done_callback(lambda _: self._running.pop(event.event_id, None))

    async def _run_in_lane(self, event: Event, text: str, auth: Authorized) -> None:
        async with self._lanes.setdefault(event.room_id, asyncio.Lock()):
            try:
                await self.execute(event, text, auth)
            except Exception as err:  # logged by name; the job stays pending and is retried
                log.exception("command_crashed", event_id=event.event_id, error=repr(err))
                return
            await self.moderation.ledger.complete_job("command", event.event_id)

    async def drain(self) -> None:
        """Wait for every command in flight (tests, and a clean stop)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def close(self) -> None:
        """Stop the commands in flight: their jobs stay pending, so the next start runs them."""
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def resume(self) -> int:
        """At start: run again the commands a crash cut short (recorded, never answered)."""
        resumed = 0
        for job in await self.moderation.ledger.pending_jobs("command"):
            if await self._rerun(job):
                resumed += 1
        return resumed

    async def command_job(self, job: Job) -> bool:
        """The scheduler's handler for a command still unanswered after the watchdog time."""
        if job.key in self._running:
            return False  # still running: looked at again later (and said so after a while)
        await self._rerun(job)
        return True

    async def _rerun(self, job: Job) -> bool:
        if await self.moderation.ledger.is_processed(job.key, "command"):
            await self.moderation.ledger.complete_job("command", job.key)
            return False
        raw, room = job.payload.get("event"), job.payload.get("room")
        event = parse_event(raw, room) if isinstance(raw, dict) and isinstance(room, str) else None
        text = self.is_command(event) if event is not None else None
        # Authorized again, now: a moderator demoted meanwhile is not obeyed.
        auth = authorize(event, self.store, self.moderation) if event is not None and text else None
        if event is not None and text is not None and auth is None:
            # Said, not silent: the sender sees why their command did nothing.
            await self.moderation.ledger.audit(
                actor=event.sender,
                action="command",
                outcome="refused",
                room=event.room_id,
                reason="after a restart: the sender may no longer command the bot here",
                event_id=event.event_id,
            )
            await self.reply(event, text_message("⛔ Not run after my restart: you may no longer command me here."))
        if event is None or text is None or auth is None:
            await self.moderation.ledger.complete_job("command", job.key)
            return False
        log.info("command_resumed", event_id=event.event_id)
        self._start(event, text, auth)
        return True

    async def execute(self, event: Event, text: str, auth: Authorized) -> None:
        """Parse and run an authorized command, and reply (once, however often it is run)."""
        actor = Actor(
            auth.sender,
            "command",
            event.event_id,
            bounded=not auth.management,
            reply_is_audit=auth.management,
            room_id=event.room_id,
            thread=relation(event.content)[0],
            text=command_lines(event),
            at=event.origin_server_ts or None,
        )
        started = time.perf_counter()
        try:
            parsed = parse_command(text, self.prefix, self.table)
            reply = await self._run(parsed, auth, actor)
        except UsageError as err:
            reply = usage_message(self.prefix, err, self.table)
        except (MatrixError, HomeserverUnavailable) as err:
            reply = Message(f"⚠️ The homeserver refused: {err}", html.escape(f"⚠️ The homeserver refused: {err}"))
        except Exception as err:
            log.exception("command_crashed", event_id=event.event_id)
            text_ = f"⚠️ Something went wrong handling that command ({type(err).__name__}); it is logged."
            reply = Message(text_, html.escape(text_))
        await self.reply(event, reply)
        log.info(
            "command",
            sender=event.sender,
            room_id=event.room_id,
            event_id=event.event_id,
            command=text.split()[1] if len(text.split()) > 1 else "help",
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def reply(self, event: Event, message: Message) -> None:
        """Reply to the command event (as a rich reply, in its thread when it was typed in one;
        a :class:`Reaction` as a reaction), cut to fit one event; one reply per command, however
        often it is replayed, and the command claimed with it."""
        m = self.moderation
        key = f"reply:{event.event_id}"
        if isinstance(message, Reaction):
            relates = {"rel_type": "m.annotation", "event_id": event.event_id, "key": message.plain}
            reply = intent("send", event.room_id, key=key, event_type="m.reaction", content={"m.relates_to": relates})
        else:
            thread = relation(event.content)[0]
            reply = m.send_intent(event.room_id, message, key=key, reply_to=event.event_id, thread=thread)
        result = await m.outbox.do(reply, claim=(event.event_id, "command"))
        if not result.ok:
            log.error("reply_failed", event_id=event.event_id, error=result.error)

    async def _scope(self, parsed: Parsed, auth: Authorized) -> Scope:
        if parsed.room is None:
            return auth.scope
        room_id = parsed.room
        if room_id.startswith("#"):
            try:
                room_id = await self.moderation.api.hs.resolve_alias(room_id)
            except (MatrixError, HomeserverUnavailable) as err:
                raise UsageError(parsed.name, f"cannot resolve {parsed.room}: {err}") from err
        if room_id not in auth.scope.rooms:
            raise UsageError(parsed.name, f"{parsed.room} is not a protected room you may act in")
        return Scope.room(room_id)

    async def _run(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        spec = self.table[parsed.name]
        if parsed.name != "help" and not auth.management and not spec.room_admins:
            text = f"{self.prefix} {parsed.name} is only available in the management room."
            return Message(text, html.escape(text))
        for check in self.guards.get(parsed.name, ()):
            answer = await check(parsed, auth, actor)
            if answer is not None:
                return answer
        return await spec.run(self, parsed, auth, actor)

    @property
    def ladder(self) -> Ladder | None:
        """The escalation ladder, when the protections are loaded."""
        return self.pipeline.ladder if self.pipeline else None

    async def _standing(self, user: str, reply: Message, auth: Authorized, outcome: Outcome) -> Message:
        """The reply with the user's standing on the ladder: confidential, shown in the management
        room only."""
        ladder = self.ladder
        if ladder is None or not auth.management or not outcome.ok or outcome.infraction is None:
            return reply
        count, step = ladder.standing(await self.moderation.ledger.history(user, limit=500), now_ms())
        standing = standing_line(count, str(step), ladder.decay_days)
        return Message(f"{reply.plain}\n{standing.plain}", f"{reply.html}<br>{standing.html}")

    async def _help(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        return help_message(self.prefix, parsed.topic, self.table)

    async def _status(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        return await self.status()

    async def _rooms(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        return self.rooms_message()

    async def _history(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        m, user, ladder = self.moderation, _the_user(parsed), self.ladder
        infractions = await m.ledger.history(user, limit=500)
        standing = None
        if ladder is not None:
            count, step = ladder.standing(infractions, now_ms())
            standing = standing_line(count, str(step), ladder.decay_days)
        total = await m.ledger.count_for(user)
        message = history_message(user, infractions[:25], total, standing=standing, ladder=ladder, where=m.label_scope)
        notes = [line for notes in self.history_notes for line in await notes(user)]
        if not notes:
            return message
        return Message(
            "\n".join([message.plain, *notes]), "<br>".join([message.html, *(html.escape(n) for n in notes)])
        )

    async def _pardon(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        assert parsed.infraction_id is not None
        outcome = await self.moderation.pardon(parsed.infraction_id, parsed.reason or "pardoned", actor)
        inf = outcome.infraction
        # A pardoned ban everywhere leaves our published list too: else our own list bans them again.
        published = outcome.ok and inf is not None and inf.kind == "ban" and inf.scope == "*"
        if published and self.policies is not None and inf is not None and await self.policies.unpublish(inf.subject):
            outcome = _amend(outcome, "removed from our policy list")
        return _reply(outcome)

    async def _note(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        return _reply(await self.moderation.note(_the_user(parsed), parsed.reason, actor))

    # Moderators choose the level: each command does what was typed. The ladder drives only the
    # bot's own actions; here it informs (the standing line of the reply).

    async def _warn(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        user, ladder = _the_user(parsed), self.ladder
        level = ladder.level_for("warning", None) if ladder else None
        outcome = await self.moderation.warn(user, parsed.reason, actor, await self._scope(parsed, auth), level=level)
        return await self._standing(user, _reply(outcome), auth, outcome)

    async def _mute(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        user, ladder = _the_user(parsed), self.ladder
        outcome = await self.moderation.mute(
            user,
            parsed.reason or "no reason given",
            actor,
            await self._scope(parsed, auth),
            duration_s=parsed.duration_s,
            level=ladder.level_for("mute", parsed.duration_s) if ladder else None,
        )
        return await self._standing(user, _reply(outcome), auth, outcome)

    async def _unmute(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        scope = await self._scope(parsed, auth)
        outcome = await self.moderation.unmute(
            _the_user(parsed), parsed.reason or "unmuted by a moderator", actor, scope
        )
        return _reply(outcome)

    async def _kick(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        user = _the_user(parsed)
        scope = await self._scope(parsed, auth)
        outcome = await self.moderation.kick(user, parsed.reason or "no reason given", actor, scope)
        return await self._standing(user, _reply(outcome), auth, outcome)

    async def _ban(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        user, ladder, scope = _the_user(parsed), self.ladder, await self._scope(parsed, auth)
        reason = parsed.reason
        outcome = await self.moderation.ban(
            user,
            reason or "no reason given",
            actor,
            scope,
            duration_s=parsed.duration_s,
            level=ladder.level_for("ban", parsed.duration_s) if ladder else None,
        )
        if outcome.ok and self._publishes(parsed, scope):
            assert self.policies is not None
            await self.policies.publish_ban(user, reason or "banned by the moderators")
            outcome = _amend(outcome, "published to our policy list")
        return await self._standing(user, _reply(outcome), auth, outcome)

    async def _unban(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        user, scope = _the_user(parsed), await self._scope(parsed, auth)
        outcome = await self.moderation.unban(user, parsed.reason or "unbanned by a moderator", actor, scope)
        if self.policies is not None and scope.key == "*" and await self.policies.unpublish(user):
            outcome = _amend(outcome, "removed from our policy list")
        return _reply(outcome)

    async def _redact(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        scope = await self._scope(parsed, auth)
        count = parsed.count or DEFAULT_REDACT_COUNT
        return _reply(await self.moderation.redact(_the_user(parsed), count, "removed by a moderator", actor, scope))

    def rooms_message(self) -> Message:
        """``!mod rooms``: each protected room with why it is protected (config, a Space, a room
        upgrade) and the bot's power there, the powers it lacks where it lacks one, then the
        rooms it should protect and could not join."""
        bot = self.moderation.bot_user_id
        problems = room_problems(self.store, bot)
        rooms = self.store.protected
        unjoined = self.room_notes()
        head = f"Protecting {len(rooms)} room(s); {len(problems)} with a problem."
        if unjoined:
            head += f" {len(unjoined)} I should protect and cannot:"

        def state(room_id: str) -> str:
            origins = [
                *(ORIGIN_WORDS[o] for o in self.store.origins(room_id) if o in ORIGIN_WORDS),
                *self.room_origins(room_id),
            ]
            level = self.store.room(room_id).power_levels.user_level(bot)
            lacks = "missing " + ", ".join(problems[room_id]) if room_id in problems else "all powers I need"
            return f"from {', '.join(origins) or 'an invite'}; my power {level}; {lacks}"

        lines = [*(f"⚠️ {line}" for line in unjoined), *(f"{self.store.label(r)} ({r}): {state(r)}" for r in rooms)]
        rich = [
            *(f"⚠️ {html.escape(line)}" for line in unjoined),
            *(f"{room_pill(r, self.store.label(r))}: {html.escape(state(r))}" for r in rooms),
        ]
        return bullet_list(head, lines, limit=60, html_items=rich)

    async def _unlock(self, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        """``!mod unlock <room>``: end a join-wave lock now."""
        if self.pipeline is None:
            return text_message("No protections are loaded.")
        scope = await self._scope(parsed, auth)
        room_id = scope.rooms[0] if scope.rooms else str(parsed.room)
        if not await self.pipeline.executor.unlock_now(room_id):
            raise UsageError("unlock", f"{self.store.label(room_id)} is not locked by me")
        await self.moderation.ledger.audit(
            actor=actor.name, action="unlock_room", outcome="requested", room=room_id, event_id=actor.event_id
        )
        return text_message(f"✅ Ended the join-wave lock of {self.store.label(room_id)}.")

    def _publishes(self, parsed: Parsed, scope: Scope) -> bool:
        """Whether a ban goes to our published list: --list always, --no-list never, and by default
        permanent bans when a list is set (a temporary ban is not for other communities). Never a
        ban narrowed to one room: we apply our own list, so it would become a ban everywhere."""
        if self.policies is None or self.policies.publish_room is None or "--no-list" in parsed.flags:
            return False
        if scope.key != "*":
            return False
        return "--list" in parsed.flags or parsed.duration_s is None


#: How ``!mod rooms`` names why the core protects a room (a feature names its own: a Space).
ORIGIN_WORDS = {"config": "config", "upgrade": "room upgrade"}


class Reaction(Message):
    """A command's answer given as a reaction to it (``plain`` is the key, e.g. ✅)."""


def text_message(text: str) -> Message:
    """A plain line as a message (HTML-escaped)."""
    return Message(text, html.escape(text))


def _reply(outcome: Outcome) -> Message:
    """The reply to a command: a mark, then the action's line (in the management room it is the
    only message the action posts)."""
    mark = "✅" if outcome.ok else ("⛔" if outcome.refused else "⚠️")
    if outcome.line is not None:
        return Message(f"{mark} {outcome.line.plain}", f"{mark} {outcome.line.html}")
    text = f"{mark} {outcome.summary}"
    return Message(text, html.escape(text))


def _amend(outcome: Outcome, note: str) -> Outcome:
    """``outcome`` with one more note on its line (e.g. published to our policy list)."""
    line = outcome.line
    if line is not None:
        line = Message(f"{line.plain} — {note}", f"{line.html} — {html.escape(note)}")
    return attrs.evolve(outcome, summary=f"{outcome.summary}; {note}", line=line)


def _the_user(parsed: Parsed) -> str:
    assert parsed.user is not None  # the parser of every command that names a user set it
    return parsed.user


def _row(name: str, usage: str, help_: str, parse: Parser, run: Runner, **options: Any) -> Spec:
    return Spec(name, usage, help_, parse, run, **options)


H = CommandHandler
#: The one command table of the core; features add their rows (:meth:`CommandHandler.add`).
SPECS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        _row("help", "help [command]", "List the commands, or explain one.", _parse_help, H._help, scoped=False),
        _row(
            "warn",
            "warn <user> <reason…>",
            "Warn a user: recorded, and the user is told politely.",
            _parse_user_text,
            H._warn,
        ),
        _row(
            "mute",
            "mute <user> <duration> [reason…]",
            "Mute a user (power level below events_default) for a duration like 30s, 10m, 2h, 7d, 4w.",
            _parse_sanction,
            H._mute,
        ),
        _row(
            "unmute",
            "unmute <user> [reason…]",
            "Lift a user's mute, restoring their old power level.",
            _parse_user,
            H._unmute,
        ),
        _row("kick", "kick <user> [reason…]", "Remove a user from the rooms; they may rejoin.", _parse_user, H._kick),
        _row(
            "ban",
            "ban <user> [duration] [reason…] [--list|--no-list]",
            "Ban a user; without a duration the ban is permanent. With a published policy list, permanent bans "
            "(or any ban with --list) are also written to it.",
            _parse_sanction,
            H._ban,
            flags=frozenset({"--list", "--no-list"}),
        ),
        _row("unban", "unban <user> [reason…]", "Lift a user's ban.", _parse_user, H._unban),
        _row(
            "redact",
            "redact <user> [count]",
            f"Remove the user's recent messages (default {DEFAULT_REDACT_COUNT} per room).",
            _parse_redact,
            H._redact,
        ),
        _row(
            "note",
            "note <user> <text…>",
            "Add a private note to a user's record.",
            _parse_user_text,
            H._note,
            room_admins=False,
            scoped=False,
        ),
        _row(
            "history",
            "history <user>",
            "Show a user's infractions, newest first.",
            _parse_user,
            H._history,
            room_admins=False,
            scoped=False,
        ),
        _row(
            "pardon",
            "pardon <infraction-id> [reason…]",
            "Revoke an infraction; the record stays, marked pardoned.",
            _parse_infraction,
            H._pardon,
            room_admins=False,
            scoped=False,
        ),
        _row(
            "status",
            "status",
            "Rooms, uptime, ledger counts and sync lag.",
            _parse_nothing,
            H._status,
            room_admins=False,
            scoped=False,
        ),
        _row(
            "rooms",
            "rooms",
            "The protected rooms, and in which of them I lack a power I need.",
            _parse_nothing,
            H._rooms,
            room_admins=False,
        ),
        _row(
            "unlock",
            "unlock <room>",
            "End a join-wave lock early, restoring the room's join rule.",
            _parse_room,
            H._unlock,
        ),
    )
}
