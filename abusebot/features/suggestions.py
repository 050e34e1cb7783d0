"""Community suggestions, as the moderation policy has them: a suggestion with more than
``threshold`` (10) votes, the bot's own reactions excluded, must be discussed by the staff, and is
marked 🟠 discussing, 🟢 approved, 🔴 denied, 🔵 implemented (an approved one, once implemented,
keeps 🟢 and gains 🔵).

* With ``suggestions.room`` set, the bot joins that room and watches it. Every top-level message
  of a member there (not a reply, not in a thread, not an edit) is a suggestion; the bot reacts
  with each of ``vote_reactions`` on it, so voting is one tap.
* **Votes** are the distinct (member, reaction) pairs among ``vote_reactions``; a reaction taken
  back (redacted) no longer counts. When they first exceed the threshold, the management room
  gets one line with ``suggestion`` and a link: it needs discussion.
* **States** are set by the staff (the management room's moderators) with ``!mod suggestion
  <event id, link or #N> discussing|approved|denied|implemented [note…]``, or by reacting
  🟠/🟢/🔴/🔵 on the suggestion; anyone else's state reaction is ignored. The bot mirrors the state
  with its own reactions: 🟠 while discussing; approved → 🟢 (🟠 taken away); implemented → 🔵
  (🟢 kept when it was approved); denied → 🔴 (🟠 taken away).

Every suggestion, vote and state change is kept in the ledger (nothing is deleted). The mirror
is reconciled, not replayed: the reactions the bot should have are computed from the state, and
each one put or taken away is recorded before it is sent (keyed) and marked after, so a restart
finishes a half-done mirror and never doubles a reaction.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import attrs
import structlog

from abusebot.actions import Actor, redact_intent
from abusebot.audit import Message, bullet_list, when
from abusebot.cases import excerpt, strip_invisible
from abusebot.commands import Authorized, CommandHandler, Parsed, Spec, UsageError, text_message
from abusebot.config import SuggestionsConfig
from abusebot.events import Event, relation
from abusebot.host import Feature, feature
from abusebot.ledger import now_ms
from abusebot.outbox import intent

log = structlog.get_logger("abusebot.suggestions")

ROLE = "suggestions"
STATES = ("discussing", "approved", "denied", "implemented")
#: The staff's reactions, and the bot's mirror of them.
MARKS = {"discussing": "🟠", "approved": "🟢", "denied": "🔴", "implemented": "🔵"}
STATE_OF_MARK = {mark: state for state, mark in MARKS.items()}
_NUMBER = re.compile(r"#?[0-9]{1,11}")
_EVENT_ID = re.compile(r"\$[A-Za-z0-9_\-+/=.:]{1,255}")

MIGRATIONS = (
    """
    CREATE TABLE suggestions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        room_id     TEXT NOT NULL,
        event_id    TEXT NOT NULL UNIQUE,
        author      TEXT NOT NULL,
        excerpt     TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        state       TEXT NOT NULL DEFAULT 'open'
                    CHECK (state IN ('open','discussing','approved','denied','implemented')),
        approved    INTEGER NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),
        flagged_at  INTEGER,
        flag_event  TEXT
    );
    CREATE INDEX suggestions_by_state ON suggestions (state, id);
    CREATE TRIGGER suggestions_never_deleted BEFORE DELETE ON suggestions
    BEGIN SELECT RAISE(ABORT, 'suggestions are never deleted'); END;
    CREATE TRIGGER suggestions_identity_frozen
    BEFORE UPDATE OF id, room_id, event_id, author, excerpt, created_at ON suggestions
    BEGIN SELECT RAISE(ABORT, 'a suggestion cannot change'); END;
    CREATE TRIGGER suggestions_flagged_once BEFORE UPDATE OF flagged_at ON suggestions
    WHEN OLD.flagged_at IS NOT NULL
    BEGIN SELECT RAISE(ABORT, 'a suggestion is flagged for discussion once'); END;

    CREATE TABLE suggestion_votes (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        suggestion_id  INTEGER NOT NULL REFERENCES suggestions (id),
        voter          TEXT NOT NULL,
        key            TEXT NOT NULL,
        event_id       TEXT NOT NULL UNIQUE,
        at             INTEGER NOT NULL,
        redacted_at    INTEGER
    );
    CREATE INDEX suggestion_votes_by_suggestion ON suggestion_votes (suggestion_id, voter, key);
    CREATE TRIGGER suggestion_votes_never_deleted BEFORE DELETE ON suggestion_votes
    BEGIN SELECT RAISE(ABORT, 'suggestion votes are never deleted'); END;

    CREATE TABLE suggestion_states (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        suggestion_id  INTEGER NOT NULL REFERENCES suggestions (id),
        state          TEXT NOT NULL CHECK (state IN ('discussing','approved','denied','implemented')),
        set_by         TEXT NOT NULL,
        how            TEXT NOT NULL CHECK (how IN ('command','reaction')),
        at             INTEGER NOT NULL,
        note           TEXT NOT NULL DEFAULT '',
        source_event   TEXT NOT NULL UNIQUE
    );
    CREATE INDEX suggestion_states_by_suggestion ON suggestion_states (suggestion_id, id);
    CREATE TRIGGER suggestion_states_never_changed BEFORE UPDATE ON suggestion_states
    BEGIN SELECT RAISE(ABORT, 'a suggestion''s state change cannot change'); END;
    CREATE TRIGGER suggestion_states_never_deleted BEFORE DELETE ON suggestion_states
    BEGIN SELECT RAISE(ABORT, 'suggestion state changes are never deleted'); END;

    -- The bot's own state reactions: recorded before each is sent, its event noted after, and
    -- marked removed once its redaction is answered.
    CREATE TABLE suggestion_marks (
        suggestion_id  INTEGER NOT NULL REFERENCES suggestions (id),
        key            TEXT NOT NULL,
        n              INTEGER NOT NULL,
        event_id       TEXT,
        removed        INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1)),
        PRIMARY KEY (suggestion_id, key, n)
    ) WITHOUT ROWID;
    """,
)

_COLUMNS = "id, room_id, event_id, author, excerpt, created_at, state, approved, flagged_at, flag_event"


@attrs.frozen
class Suggestion:
    """One row of ``suggestions``."""

    id: int
    room_id: str
    event_id: str
    author: str
    excerpt: str
    created_at: int
    state: str
    approved: int
    flagged_at: int | None
    flag_event: str | None

    @property
    def link(self) -> str:
        """A matrix.to link to the suggestion."""
        return f"https://matrix.to/#/{quote(self.room_id, safe='!:')}/{quote(self.event_id, safe='$')}"


def wanted_marks(state: str, approved: bool) -> set[str]:
    """The state reactions the bot should have on a suggestion in ``state``."""
    if state == "implemented":
        return {MARKS["implemented"], *([MARKS["approved"]] if approved else [])}
    return {MARKS[state]} if state in MARKS else set()


def plain_key(key: str) -> str:
    """A reaction key without variation selectors (👍 and 👍️ are one vote)."""
    return key.replace("\ufe0f", "").strip()


def reference(text: str) -> str | int | None:
    """A suggestion named by ``#N`` / ``N``, an event id, or a matrix.to / ``matrix:`` link."""
    word = text.strip()
    if _NUMBER.fullmatch(word):
        return int(word.lstrip("#"))
    decoded = unquote(word)
    if decoded.startswith("matrix:") and "/e/" in decoded:
        decoded = "$" + decoded.split("/e/", 1)[1].split("?", 1)[0]
    found = _EVENT_ID.search(decoded.split("?", 1)[0])
    return found.group(0) if found else None


class SuggestionsFeature(Feature):
    """The suggestions room: votes, the threshold, staff states, the mirrored marks."""

    name: ClassVar[str] = "suggestions"
    roles: ClassVar[frozenset[Any]] = frozenset({ROLE})
    event_types: ClassVar[frozenset[str] | None] = frozenset({"m.room.message", "m.reaction", "m.room.redaction"})
    migrations: ClassVar[tuple[str, ...]] = MIGRATIONS

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.config: SuggestionsConfig = bot.config.suggestions
        self.ledger = bot.ledger
        self.room_id: str | None = None
        #: The configured room's id once known (an alias resolves to it), joined or not.
        self.wanted_id: str | None = None
        self.problem: str | None = None
        self._votes = {plain_key(key) for key in self.config.vote_reactions}
        self._locks: dict[int, asyncio.Lock] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the room (once) and watch it; finish a half-done mirror or discussion line."""
        self.bot.host.add_role(ROLE, lambda room: room == self.room_id)
        room = self.config.room
        if room is None:
            return
        try:
            self.wanted_id = await self.bot.hs.resolve_alias(room) if room.startswith("#") else room
            if self.wanted_id == self.bot.store.management_id:
                self.problem = f"{room} is the management room: it cannot be the suggestions room too"
                log.error("suggestions_room_is_management", room=room)
                return
            self.room_id = await self.bot.join_watched(self.wanted_id)
        except Exception as err:  # said in !mod status; the rest of the bot runs on
            self.problem = f"cannot join {room}: {err}; invite me"
            log.error("suggestions_room_unjoined", room=room, error=str(err))
            return
        for suggestion in await self._select("flagged_at IS NOT NULL AND flag_event IS NULL"):
            await self._flag(suggestion, await self.count(suggestion.id))
        for suggestion in await self._select("state <> 'open'"):
            await self.mirror(suggestion.id)

    def wants_invite(self, room_id: str, inviter: str, direct: bool) -> bool:
        """An invite to the configured room (by id, or the id its alias names), when the bot is
        not in it: it could not join at start, or was removed since."""
        wanted = room_id in (self.config.room, self.wanted_id) and room_id != self.bot.store.management_id
        return wanted and self.room_id is None and not direct

    async def accepted(self, room_id: str, inviter: str) -> None:
        """Joined after an invite: watched from now on."""
        self.room_id, self.wanted_id, self.problem = room_id, room_id, None
        log.info("suggestions_room_joined", room_id=room_id, inviter=inviter)

    async def room_left(self, room_id: str) -> None:
        """Removed from the suggestions room: said in the management room and ``!mod status``;
        an invite brings the bot back."""
        if room_id != self.room_id:
            return
        self.room_id = None
        self.problem = f"I am no longer in {self.config.room}; invite me back to watch it"
        text = f"⚠️ Suggestions: {self.problem}."
        log.error("suggestions_room_left", room_id=room_id)
        await self.bot.moderation.post(text_message(text))

    def status(self) -> list[str]:
        """The room, or why it is not watched."""
        if self.config.room is None:
            return []
        if self.problem:
            return [f"Suggestions: ⚠️ {self.problem}"]
        return [f"Suggestions: watching {self.config.room}"]

    # -- the store -----------------------------------------------------------------------------

    async def _select(self, where: str, args: Sequence[Any] = ()) -> list[Suggestion]:
        rows = await self.ledger.fetch(f"SELECT {_COLUMNS} FROM suggestions WHERE {where}", args)
        return [Suggestion(*row) for row in rows]

    async def get(self, ref: str | int) -> Suggestion | None:
        """The suggestion numbered ``ref``, or made by the event ``ref``."""
        where = "id = ?" if isinstance(ref, int) else "event_id = ?"
        found = await self._select(where, (ref,))
        return found[0] if found else None

    async def count(self, suggestion_id: int) -> int:
        """Its votes: distinct (voter, reaction) pairs among the vote reactions, still standing."""
        rows = await self.ledger.fetch(
            "SELECT COUNT(*) FROM (SELECT DISTINCT voter, key FROM suggestion_votes"
            " WHERE suggestion_id = ? AND redacted_at IS NULL)",
            (suggestion_id,),
        )
        return int(rows[0][0])

    # -- events --------------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        """A message (a new suggestion?), a reaction (a vote, or a staff state), a redaction."""
        if event.room_id != self.room_id or event.sender == self.bot.hs.user_id:
            return
        if event.type == "m.room.message":
            await self._message(event)
        elif event.type == "m.reaction":
            await self._reaction(event)
        elif event.type == "m.room.redaction" and event.redacts:
            async with self.ledger.transaction() as db:
                await db.execute(
                    # Whoever redacted it (the voter, or a moderator of the room: the homeserver
                    # let them), the reaction is gone, and its vote with it.
                    "UPDATE suggestion_votes SET redacted_at = ? WHERE event_id = ? AND redacted_at IS NULL",
                    (now_ms(), event.redacts),
                )

    async def _message(self, event: Event) -> None:
        relates = event.content.get("m.relates_to")
        thread, reply = relation(event.content)
        if relates is not None or thread or reply or not isinstance(event.body, str):
            return  # a reply, a thread message, an edit, or malformed: not a suggestion
        text = strip_invisible(event.body).strip()
        if not text:
            return
        async with self.ledger.transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO suggestions (room_id, event_id, author, excerpt, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (event.room_id, event.event_id, event.sender, excerpt(text, 300), event.origin_server_ts or now_ms()),
            )
        suggestion = await self.get(event.event_id)
        assert suggestion is not None
        log.info("suggestion_received", suggestion=suggestion.id, author=event.sender)
        rows = [
            intent(
                "send",
                event.room_id,
                key=f"suggestion-vote:{suggestion.id}:{n}",
                event_type="m.reaction",
                content={"m.relates_to": {"rel_type": "m.annotation", "event_id": event.event_id, "key": key}},
            )
            for n, key in enumerate(self.config.vote_reactions)
        ]
        for row, result in zip(rows, await self.bot.outbox.do_all(rows), strict=True):
            if not result.ok:
                log.warning("suggestion_reaction_failed", key=row.key, error=result.error)

    async def _reaction(self, event: Event) -> None:
        relates = event.content.get("m.relates_to")
        if not isinstance(relates, Mapping) or relates.get("rel_type") != "m.annotation":
            return
        target, key = relates.get("event_id"), relates.get("key")
        if not isinstance(target, str) or not isinstance(key, str):
            return
        suggestion = await self.get(target)
        if suggestion is None:
            return
        key = plain_key(key)
        if key in self._votes:
            await self._vote(suggestion, event, key)
        state = STATE_OF_MARK.get(key)
        if state is None:
            return
        if not self.bot.moderation.staff.is_moderator(event.sender):
            await self.ledger.audit(
                actor=event.sender,
                action="suggestion_state",
                outcome="ignored",
                reason="not staff",
                event_id=event.event_id,
                detail={"suggestion": suggestion.id, "state": state},
            )
            return
        if await self.set_state(suggestion, state, event.sender, "reaction", event.event_id):
            line = f"{MARKS[state]} suggestion #{suggestion.id} is now {state} ({event.sender}, by reaction): "
            management = self.bot.store.management_id
            message = text_message(line + suggestion.link)
            new = self.bot.moderation.send_intent(
                management, message, key=f"suggestion-state:{event.event_id}", mentions=[]
            )
            await self.bot.outbox.do(new)

    async def _vote(self, suggestion: Suggestion, event: Event, key: str) -> None:
        async with self.ledger.transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO suggestion_votes (suggestion_id, voter, key, event_id, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (suggestion.id, event.sender, key, event.event_id, event.origin_server_ts or now_ms()),
            )
        votes = await self.count(suggestion.id)
        if votes <= self.config.threshold or suggestion.flagged_at is not None:
            return
        async with self.ledger.transaction() as db:
            cursor = await db.execute(
                "UPDATE suggestions SET flagged_at = ? WHERE id = ? AND flagged_at IS NULL", (now_ms(), suggestion.id)
            )
            first = cursor.rowcount == 1
        if first:  # once: a vote taken back and given again never flags it twice
            log.info("suggestion_flagged", suggestion=suggestion.id, votes=votes)
            await self._flag(suggestion, votes)

    async def _flag(self, suggestion: Suggestion, votes: int) -> None:
        """The management room's line: this suggestion needs discussion (keyed: posted once)."""
        line = (
            f"💡 suggestion #{suggestion.id} by {suggestion.author} needs discussion: {votes} votes (more than"
            f" {self.config.threshold}). {suggestion.link} «{suggestion.excerpt}»"
            f" — set its state with {self.bot.config.command_prefix} suggestion {suggestion.id}"
            " discussing|approved|denied|implemented, or react 🟠/🟢/🔴/🔵 on it."
        )
        new = self.bot.moderation.send_intent(
            self.bot.store.management_id, text_message(line), key=f"suggestion-flag:{suggestion.id}", mentions=[]
        )
        result = await self.bot.outbox.do(new)
        event_id = result.value.get("event_id") if result.ok else None
        if isinstance(event_id, str):
            async with self.ledger.transaction() as db:
                await db.execute("UPDATE suggestions SET flag_event = ? WHERE id = ?", (event_id, suggestion.id))

    # -- states and the mirror -----------------------------------------------------------------

    async def set_state(
        self, suggestion: Suggestion, state: str, by: str, how: str, source: str, note: str = ""
    ) -> bool:
        """Record a state change (once per source event), then mirror it; False when it was the
        state already (or the source was handled before)."""
        async with self.ledger.transaction() as db:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO suggestion_states (suggestion_id, state, set_by, how, at, note, source_event)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (suggestion.id, state, by, how, now_ms(), note[:500], source),
            )
            fresh = cursor.rowcount == 1
            changed = False
            if fresh:
                approved = 1 if state == "approved" else 0 if state == "denied" else suggestion.approved
                cursor = await db.execute(
                    "UPDATE suggestions SET state = ?, approved = ? WHERE id = ? AND (state <> ? OR approved <> ?)",
                    (state, approved, suggestion.id, state, approved),
                )
                changed = cursor.rowcount == 1
        if fresh:
            await self.ledger.audit(
                actor=by,
                action="suggestion_state",
                outcome="done" if changed else "ignored",
                reason=note or (None if changed else "the state it had already"),
                event_id=source,
                detail={"suggestion": suggestion.id, "state": state, "how": how},
            )
            log.info("suggestion_state", suggestion=suggestion.id, state=state, by=by, how=how, changed=changed)
        await self.mirror(suggestion.id)
        return changed

    async def mirror(self, suggestion_id: int) -> None:
        """Make the bot's state reactions on the suggestion what its state says (one at a time
        per suggestion: two quick changes never race)."""
        async with self._locks.setdefault(suggestion_id, asyncio.Lock()):
            suggestion = await self.get(suggestion_id)
            if suggestion is None:
                return
            wanted = wanted_marks(suggestion.state, bool(suggestion.approved))
            rows = await self.ledger.fetch(
                "SELECT key, n, event_id FROM suggestion_marks WHERE suggestion_id = ? AND removed = 0",
                (suggestion.id,),
            )
            have = {str(key): (int(n), event_id) for key, n, event_id in rows}
            for key in sorted(wanted - have.keys()):
                n = await self._next_n(suggestion.id, key)
                async with self.ledger.transaction() as db:  # recorded before it is sent
                    await db.execute(
                        "INSERT INTO suggestion_marks (suggestion_id, key, n) VALUES (?, ?, ?)", (suggestion.id, key, n)
                    )
                await self._put(suggestion, key, n)
            for key, (n, event_id) in have.items():
                if key in wanted:
                    if event_id is None:  # sent before a crash, or failed: sent (again, keyed)
                        await self._put(suggestion, key, n)
                    continue
                if event_id is None:
                    event_id = await self._put(suggestion, key, n)
                if event_id is None:
                    continue  # the homeserver did not answer: the next change or start tries again
                new = redact_intent(suggestion.room_id, event_id, "")
                if (await self.bot.outbox.do(new)).ok:
                    async with self.ledger.transaction() as db:
                        await db.execute(
                            "UPDATE suggestion_marks SET removed = 1 WHERE suggestion_id = ? AND key = ? AND n = ?",
                            (suggestion.id, key, n),
                        )

    async def _next_n(self, suggestion_id: int, key: str) -> int:
        rows = await self.ledger.fetch(
            "SELECT COALESCE(MAX(n), -1) + 1 FROM suggestion_marks WHERE suggestion_id = ? AND key = ?",
            (suggestion_id, key),
        )
        return int(rows[0][0])

    async def _put(self, suggestion: Suggestion, key: str, n: int) -> str | None:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": suggestion.event_id, "key": key}}
        new = intent(
            "send",
            suggestion.room_id,
            key=f"suggestion-mark:{suggestion.id}:{key}:{n}",
            event_type="m.reaction",
            content=content,
        )
        result = await self.bot.outbox.do(new)
        event_id = result.value.get("event_id") if result.ok else None
        if not isinstance(event_id, str):
            log.warning("suggestion_mark_failed", suggestion=suggestion.id, key=key, error=result.error)
            return None
        async with self.ledger.transaction() as db:
            await db.execute(
                "UPDATE suggestion_marks SET event_id = ? WHERE suggestion_id = ? AND key = ? AND n = ?",
                (event_id, suggestion.id, key, n),
            )
        return event_id

    # -- commands ------------------------------------------------------------------------------

    def commands(self) -> Sequence[Spec]:
        """``suggestion`` and ``suggestions``: management room only."""
        return [
            Spec(
                "suggestion",
                "suggestion <event id, link or #N> discussing|approved|denied|implemented [note…]",
                "Set a suggestion's state (the bot marks it 🟠 🟢 🔴 🔵 in the suggestions room).",
                _parse_suggestion,
                self._suggestion,
                room_admins=False,
                scoped=False,
            ),
            Spec(
                "suggestions",
                "suggestions [open|discussing|approved|denied|implemented]",
                "List the suggestions (newest first), with their votes and state.",
                _parse_suggestions,
                self._suggestions,
                room_admins=False,
                scoped=False,
            ),
        ]

    async def _suggestion(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        ref = reference(parsed.words[0])
        suggestion = await self.get(ref) if ref is not None else None
        if suggestion is None:
            raise UsageError("suggestion", f"there is no suggestion {parsed.words[0][:80]!r}")
        state = parsed.words[1]
        assert actor.event_id is not None
        changed = await self.set_state(suggestion, state, actor.name, "command", actor.event_id, parsed.reason)
        if not changed:
            return text_message(f"suggestion #{suggestion.id} is {state} already: {suggestion.link}")
        return text_message(
            f"{MARKS[state]} suggestion #{suggestion.id} is now {state}"
            + (f" ({parsed.reason})" if parsed.reason else "")
            + f": {suggestion.link}"
        )

    async def _suggestions(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        which = parsed.words[0] if parsed.words else None
        where, args = ("state = ?", (which,)) if which else ("1 = 1", ())
        found = await self._select(f"{where} ORDER BY id DESC LIMIT 50", args)
        rows = await self.ledger.fetch(f"SELECT COUNT(*) FROM suggestions WHERE {where}", args)
        lines = [
            f"#{s.id} [{s.state}] {await self.count(s.id)} votes — {s.author}, {when(s.created_at)}:"
            f" «{s.excerpt[:120]}» {s.link}"
            for s in found
        ]
        head = f"{rows[0][0]} suggestion(s)" + (f" {which}" if which else "")
        return bullet_list(head + (":" if lines else "."), lines, limit=50)


def _parse_suggestion(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if len(args) < 2 or args[1].lower() not in STATES:
        raise UsageError(
            name, "which suggestion (its event id, link or #N), and discussing|approved|denied|implemented?"
        )
    if reference(args[0]) is None:
        raise UsageError(name, f"{args[0][:80]!r} names no suggestion: give its event id, link or #N")
    note = strip_invisible(" ".join(args[2:])).strip()
    return Parsed(name, words=(args[0], args[1].lower()), reason=note[:500])


def _parse_suggestions(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if len(args) > 1 or (args and args[0].lower() not in ("open", *STATES)):
        raise UsageError(name, "suggestions [open|discussing|approved|denied|implemented]")
    return Parsed(name, words=tuple(word.lower() for word in args))


@feature("suggestions")
def build(bot: Any) -> Feature:
    """The suggestions room."""
    return SuggestionsFeature(bot)
