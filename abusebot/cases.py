"""Cases: every private line to the moderators — a ModMail conversation, a report, an urgent
mention, an appeal — is one case with a transcript and an outcome, kept in the ledger for good.

This module is the store and the pure parts (the members' grammar, the texts); the feature that
reads the rooms and runs the commands is :mod:`abusebot.features.cases`.

What the store guarantees (its tests check each):

* nothing is deleted: cases and their messages have no-delete triggers, a case's identity (kind,
  channel, who opened it, when, what opened it) never changes, and an outcome once set is final;
* a case is opened once per source (``source_key``: the event, or the homeserver's report id),
  a message is recorded once per event: a replayed event finds what its first handling made;
* one open appeal per infraction (a partial unique index);
* the channel (``modmail``, ``report``, ``mention``, ``homeserver``), the time of the first staff
  answer and the outcome are columns: the inputs of the transparency statistics.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import attrs

from abusebot.ledger import Ledger, now_ms

KINDS = ("modmail", "report", "appeal", "mention", "second_chance")
CHANNELS = ("modmail", "report", "mention", "homeserver")
#: What ``!mod case close`` may say; ``upheld`` / ``overturned`` come from ``!mod appeal``.
CLOSE_OUTCOMES = ("actioned", "no-action", "duplicate", "invalid")
APPEAL_OUTCOMES = ("upheld", "overturned")
#: A second chance is decided by its vote.
SECOND_CHANCE_OUTCOMES = ("granted", "denied")
#: What a transcript keeps of one message (the relayed copy is cut shorter, to fit one event).
MAX_BODY = 10_000

#: The cases table's indexes and triggers (made with the table, and again when it is rebuilt).
_GUARDS = """
    CREATE INDEX cases_by_state ON cases (state, id);
    CREATE INDEX cases_by_opener ON cases (opener, state);
    CREATE INDEX cases_by_chat ON cases (chat_room, state);
    CREATE INDEX cases_by_subject_event ON cases (subject_event) WHERE subject_event IS NOT NULL;
    CREATE UNIQUE INDEX cases_by_root ON cases (root_event) WHERE root_event IS NOT NULL;
    CREATE UNIQUE INDEX cases_one_open_appeal ON cases (infraction_id) WHERE kind = 'appeal' AND state = 'open';
    CREATE UNIQUE INDEX cases_one_open_report ON cases (subject_event) WHERE kind = 'report' AND state = 'open';
    CREATE TRIGGER cases_never_deleted BEFORE DELETE ON cases
    BEGIN SELECT RAISE(ABORT, 'cases are never deleted'); END;
    CREATE TRIGGER cases_identity_frozen
    BEFORE UPDATE OF id, kind, channel, opener, opened_at, source_key, infraction_id, appeal_reason ON cases
    BEGIN SELECT RAISE(ABORT, 'a case''s identity fields cannot change'); END;
    CREATE TRIGGER cases_outcome_final BEFORE UPDATE OF outcome, state, closed_at ON cases
    WHEN OLD.state = 'closed'
    BEGIN SELECT RAISE(ABORT, 'a closed case''s outcome is final'); END;
"""

MIGRATIONS = (
    """
    CREATE TABLE cases (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        kind             TEXT NOT NULL CHECK (kind IN ('modmail','report','appeal','mention')),
        channel          TEXT NOT NULL CHECK (channel IN ('modmail','report','mention','homeserver')),
        opener           TEXT NOT NULL,
        chat_room        TEXT,
        opened_at        INTEGER NOT NULL,
        state            TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open','closed')),
        outcome          TEXT CHECK (outcome IN
                             ('actioned','no-action','duplicate','invalid','upheld','overturned')),
        closed_at        INTEGER,
        closed_by        TEXT,
        close_note       TEXT,
        decided_by_event TEXT,
        first_answer_at  INTEGER,
        root_event       TEXT,
        source_key       TEXT NOT NULL UNIQUE,
        subject_room     TEXT,
        subject_event    TEXT,
        excerpt          TEXT,
        infraction_id    INTEGER,
        appeal_reason    TEXT,
        CHECK ((state = 'closed') = (outcome IS NOT NULL AND closed_at IS NOT NULL))
    );
"""
    + _GUARDS
    + """
    CREATE TABLE case_messages (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        case_id        INTEGER NOT NULL REFERENCES cases (id),
        at             INTEGER NOT NULL,
        author         TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('user','reply','note','report')),
        event_id       TEXT UNIQUE,
        body           TEXT NOT NULL,
        relayed_event  TEXT
    );
    CREATE INDEX case_messages_by_case ON case_messages (case_id, id);
    CREATE TRIGGER case_messages_never_deleted BEFORE DELETE ON case_messages
    BEGIN SELECT RAISE(ABORT, 'case messages are never deleted'); END;
    CREATE TRIGGER case_messages_frozen BEFORE UPDATE OF case_id, at, author, kind, event_id, body ON case_messages
    BEGIN SELECT RAISE(ABORT, 'a case message cannot change'); END;

    CREATE TABLE case_people (
        case_id   INTEGER NOT NULL REFERENCES cases (id),
        user_id   TEXT NOT NULL,
        role      TEXT NOT NULL CHECK (role IN ('named','reporter')),
        added_by  TEXT NOT NULL,
        at        INTEGER NOT NULL,
        PRIMARY KEY (case_id, user_id, role)
    ) WITHOUT ROWID;
    CREATE INDEX case_people_by_user ON case_people (user_id);

    CREATE TABLE case_links (
        case_id        INTEGER NOT NULL REFERENCES cases (id),
        infraction_id  INTEGER NOT NULL,
        added_by       TEXT NOT NULL,
        at             INTEGER NOT NULL,
        PRIMARY KEY (case_id, infraction_id)
    ) WITHOUT ROWID;

    -- Commands typed in a case's thread: the infractions they made are the case's too.
    CREATE TABLE case_commands (
        event_id  TEXT PRIMARY KEY,
        case_id   INTEGER NOT NULL REFERENCES cases (id)
    ) WITHOUT ROWID;

    CREATE TABLE modmail_blocks (
        user_id     TEXT PRIMARY KEY,
        blocked_by  TEXT NOT NULL,
        reason      TEXT NOT NULL DEFAULT '',
        at          INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: second chances are cases too (kind second_chance, decided granted or denied). SQLite
    # cannot change a CHECK: the table is rebuilt, every row kept, its guards made again.
    """
    PRAGMA foreign_keys = OFF;
    CREATE TABLE cases_v2 (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        kind             TEXT NOT NULL CHECK (kind IN ('modmail','report','appeal','mention','second_chance')),
        channel          TEXT NOT NULL CHECK (channel IN ('modmail','report','mention','homeserver')),
        opener           TEXT NOT NULL,
        chat_room        TEXT,
        opened_at        INTEGER NOT NULL,
        state            TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open','closed')),
        outcome          TEXT CHECK (outcome IN
                             ('actioned','no-action','duplicate','invalid','upheld','overturned','granted','denied')),
        closed_at        INTEGER,
        closed_by        TEXT,
        close_note       TEXT,
        decided_by_event TEXT,
        first_answer_at  INTEGER,
        root_event       TEXT,
        source_key       TEXT NOT NULL UNIQUE,
        subject_room     TEXT,
        subject_event    TEXT,
        excerpt          TEXT,
        infraction_id    INTEGER,
        appeal_reason    TEXT,
        CHECK ((state = 'closed') = (outcome IS NOT NULL AND closed_at IS NOT NULL))
    );
    INSERT INTO cases_v2 SELECT * FROM cases;
    DROP TABLE cases;
    ALTER TABLE cases_v2 RENAME TO cases;
"""
    + _GUARDS
    + """
    CREATE UNIQUE INDEX cases_one_open_second_chance ON cases (opener) WHERE kind = 'second_chance' AND state = 'open';
    """,
)

_CASE_COLUMNS = (
    "id, kind, channel, opener, chat_room, opened_at, state, outcome, closed_at, closed_by, close_note,"
    " decided_by_event, first_answer_at, root_event, source_key, subject_room, subject_event, excerpt,"
    " infraction_id, appeal_reason"
)


@attrs.frozen
class Case:
    """One row of ``cases``."""

    id: int
    kind: str
    channel: str
    opener: str
    chat_room: str | None
    opened_at: int
    state: str
    outcome: str | None
    closed_at: int | None
    closed_by: str | None
    close_note: str | None
    decided_by_event: str | None
    first_answer_at: int | None
    root_event: str | None
    source_key: str
    subject_room: str | None
    subject_event: str | None
    excerpt: str | None
    infraction_id: int | None
    appeal_reason: str | None

    @property
    def open(self) -> bool:
        """True until the case is closed."""
        return self.state == "open"


def _case(row: Sequence[Any]) -> Case:
    return Case(*row)


@attrs.frozen
class NewCase:
    """What opens a case (the store gives it its number)."""

    kind: str
    channel: str
    opener: str
    source_key: str
    chat_room: str | None = None
    subject_room: str | None = None
    subject_event: str | None = None
    excerpt: str | None = None
    infraction_id: int | None = None
    appeal_reason: str | None = None
    #: People named (the reported person), and who reported.
    named: tuple[str, ...] = ()
    reporters: tuple[str, ...] = ()


class CaseStore:
    """The cases in the ledger: one SQLite file with everything else, committed before any
    message about them is sent."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def _one(self, where: str, args: Sequence[Any]) -> Case | None:
        rows = await self.ledger.fetch(f"SELECT {_CASE_COLUMNS} FROM cases WHERE {where} LIMIT 1", args)
        return _case(rows[0]) if rows else None

    async def get(self, case_id: int) -> Case | None:
        """The case numbered ``case_id``."""
        return await self._one("id = ?", (case_id,))

    async def by_root(self, root_event: str) -> Case | None:
        """The case whose management-room root is ``root_event`` (its thread)."""
        return await self._one("root_event = ?", (root_event,))

    async def by_source(self, source_key: str) -> Case | None:
        """The case ``source_key`` opened."""
        return await self._one("source_key = ?", (source_key,))

    async def by_message(self, event_id: str) -> Case | None:
        """The case the message ``event_id`` was recorded in (a replay finds its case)."""
        return await self._one("id = (SELECT case_id FROM case_messages WHERE event_id = ?)", (event_id,))

    async def open_in_chat(self, chat_room: str, user_id: str) -> Case | None:
        """The newest open case ``user_id`` talks to the moderators about in ``chat_room``."""
        return await self._one("chat_room = ? AND opener = ? AND state = 'open' ORDER BY id DESC", (chat_room, user_id))

    async def open_report_of(self, room_id: str, event_id: str) -> Case | None:
        """The open report case about the event ``event_id`` of ``room_id``."""
        return await self._one(
            "subject_event = ? AND subject_room = ? AND kind = 'report' AND state = 'open'", (event_id, room_id)
        )

    async def open_appeal_of(self, infraction_id: int) -> Case | None:
        """The open appeal of ``infraction_id``."""
        return await self._one("infraction_id = ? AND kind = 'appeal' AND state = 'open'", (infraction_id,))

    async def recent_mention(self, user_id: str, since_ms: int) -> Case | None:
        """``user_id``'s open urgent-mention case (in any room) opened since ``since_ms``."""
        return await self._one(
            "opener = ? AND kind = 'mention' AND state = 'open' AND opened_at >= ? ORDER BY id DESC",
            (user_id, since_ms),
        )

    async def open_count(self, user_id: str, kinds: Sequence[str] = ("modmail", "appeal")) -> int:
        """How many open cases of ``kinds`` ``user_id`` opened (by default the conversations:
        ModMail and appeals; reports and calls have their own bounds, and never stop an appeal)."""
        marks = ",".join("?" * len(kinds))
        rows = await self.ledger.fetch(
            f"SELECT COUNT(*) FROM cases WHERE opener = ? AND state = 'open' AND kind IN ({marks})", (user_id, *kinds)
        )
        return int(rows[0][0])

    async def listing(self, which: str, limit: int = 50) -> tuple[list[Case], int]:
        """Cases ``open``, ``closed`` or ``all``, newest first (at most ``limit``), and how many."""
        where = {"open": "state = 'open'", "closed": "state = 'closed'", "all": "1 = 1"}[which]
        rows = await self.ledger.fetch(
            f"SELECT {_CASE_COLUMNS} FROM cases WHERE {where} ORDER BY id DESC LIMIT ?", (limit,)
        )
        total = await self.ledger.fetch(f"SELECT COUNT(*) FROM cases WHERE {where}")
        return [_case(row) for row in rows], int(total[0][0])

    async def open_case(self, new: NewCase, first: tuple[str, str, str, str] | None) -> tuple[Case, bool]:
        """Open a case (and record its first message: (event id, author, kind, body)); True when
        it is new, False when ``source_key`` had opened it already (a replay)."""
        existing = await self.by_source(new.source_key)
        if existing is not None:
            return existing, False
        at = now_ms()
        async with self.ledger.transaction() as db:
            cursor = await db.execute(
                "INSERT INTO cases (kind, channel, opener, chat_room, opened_at, source_key, subject_room,"
                " subject_event, excerpt, infraction_id, appeal_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.kind,
                    new.channel,
                    new.opener,
                    new.chat_room,
                    at,
                    new.source_key,
                    new.subject_room,
                    new.subject_event,
                    new.excerpt,
                    new.infraction_id,
                    new.appeal_reason,
                ),
            )
            case_id = int(cursor.lastrowid or 0)
            for user in new.named:
                await _person(db, case_id, user, "named", new.opener, at)
            for user in new.reporters:
                await _person(db, case_id, user, "reporter", user, at)
            if first is not None:
                event_id, author, kind, body = first
                await db.execute(
                    "INSERT INTO case_messages (case_id, at, author, kind, event_id, body) VALUES (?, ?, ?, ?, ?, ?)",
                    (case_id, at, author, kind, event_id, body[:MAX_BODY]),
                )
        case = await self.get(case_id)
        assert case is not None
        return case, True

    async def add_message(
        self, case_id: int, event_id: str | None, author: str, kind: str, body: str
    ) -> tuple[int, bool]:
        """Record one message of a case's transcript; (its id, True when new). A message of an
        event recorded already is found, not recorded twice."""
        if event_id is not None:
            rows = await self.ledger.fetch("SELECT id FROM case_messages WHERE event_id = ?", (event_id,))
            if rows:
                return int(rows[0][0]), False
        async with self.ledger.transaction() as db:
            cursor = await db.execute(
                "INSERT INTO case_messages (case_id, at, author, kind, event_id, body) VALUES (?, ?, ?, ?, ?, ?)",
                (case_id, now_ms(), author, kind, event_id, body[:MAX_BODY]),
            )
            if kind == "reply":
                await db.execute(
                    "UPDATE cases SET first_answer_at = ? WHERE id = ? AND first_answer_at IS NULL", (now_ms(), case_id)
                )
        return int(cursor.lastrowid or 0), True

    async def message_id(self, event_id: str) -> int | None:
        """The transcript id of the message of ``event_id``."""
        rows = await self.ledger.fetch("SELECT id FROM case_messages WHERE event_id = ?", (event_id,))
        return int(rows[0][0]) if rows else None

    async def set_relayed(self, message_id: int, event_id: str) -> None:
        """Remember the copy of a message (in the staff thread, or in the user's chat)."""
        async with self.ledger.transaction() as db:
            await db.execute("UPDATE case_messages SET relayed_event = ? WHERE id = ?", (event_id, message_id))

    async def set_root(self, case_id: int, event_id: str) -> None:
        """Remember the management-room message the case's thread hangs from."""
        async with self.ledger.transaction() as db:
            await db.execute("UPDATE cases SET root_event = ? WHERE id = ? AND root_event IS NULL", (event_id, case_id))

    async def set_chat(self, case_id: int, room_id: str) -> None:
        """Remember where the bot talks to the case's opener (a report's reporter: their notices room)."""
        async with self.ledger.transaction() as db:
            await db.execute("UPDATE cases SET chat_room = ? WHERE id = ? AND chat_room IS NULL", (room_id, case_id))

    async def close(self, case_id: int, outcome: str, by: str, note: str, event_id: str | None) -> bool:
        """Close an open case; False when it was closed already (the outcome is final)."""
        async with self.ledger.transaction() as db:
            cursor = await db.execute(
                "UPDATE cases SET state = 'closed', outcome = ?, closed_at = ?, closed_by = ?, close_note = ?,"
                " decided_by_event = ? WHERE id = ? AND state = 'open'",
                (outcome, now_ms(), by, note, event_id, case_id),
            )
            closed = cursor.rowcount == 1
        return closed

    async def add_person(self, case_id: int, user_id: str, role: str, by: str) -> bool:
        """Name someone in a case, or add a reporter; False when they were already."""
        async with self.ledger.transaction() as db:
            return await _person(db, case_id, user_id, role, by, now_ms())

    async def link(self, case_id: int, infraction_id: int, by: str) -> bool:
        """Link an infraction to a case; False when it was linked already."""
        async with self.ledger.transaction() as db:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO case_links (case_id, infraction_id, added_by, at) VALUES (?, ?, ?, ?)",
                (case_id, infraction_id, by, now_ms()),
            )
            return cursor.rowcount == 1

    async def command_in_thread(self, event_id: str, case_id: int) -> None:
        """A command typed in the case's thread: what it does belongs to the case."""
        async with self.ledger.transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO case_commands (event_id, case_id) VALUES (?, ?)", (event_id, case_id)
            )

    async def people(self, case_id: int) -> dict[str, list[str]]:
        """Role (``named``, ``reporter``) → user ids, in the order they were added."""
        rows = await self.ledger.fetch(
            "SELECT role, user_id FROM case_people WHERE case_id = ? ORDER BY at, user_id", (case_id,)
        )
        people: dict[str, list[str]] = {"named": [], "reporter": []}
        for role, user in rows:
            people[str(role)].append(str(user))
        return people

    async def infractions(self, case_id: int) -> list[tuple[int, str, str]]:
        """(id, kind, state) of the infractions linked to the case: linked by hand, and made by
        a command in its thread."""
        return [
            (int(i), str(k), str(s))
            for i, k, s in await self.ledger.fetch(
                "SELECT id, kind, state FROM infractions WHERE id IN (SELECT infraction_id FROM case_links"
                " WHERE case_id = ?) OR source_event IN (SELECT event_id FROM case_commands WHERE case_id = ?)"
                " ORDER BY id",
                (case_id, case_id),
            )
        ]

    async def transcript_counts(self, case_id: int) -> dict[str, int]:
        """How many messages of each kind the transcript holds."""
        rows = await self.ledger.fetch(
            "SELECT kind, COUNT(*) FROM case_messages WHERE case_id = ? GROUP BY kind", (case_id,)
        )
        return {str(kind): int(count) for kind, count in rows}

    async def roots_missing(self) -> list[Case]:
        """Open cases whose root post has no event id yet (a crash came between post and note)."""
        rows = await self.ledger.fetch(f"SELECT {_CASE_COLUMNS} FROM cases WHERE root_event IS NULL AND state = 'open'")
        return [_case(row) for row in rows]

    async def blocked(self, user_id: str) -> bool:
        """True when ``user_id`` may not open cases."""
        rows = await self.ledger.fetch("SELECT 1 FROM modmail_blocks WHERE user_id = ?", (user_id,))
        return bool(rows)

    async def block(self, user_id: str, by: str, reason: str) -> bool:
        """Stop ``user_id`` from opening cases; False when they were blocked already."""
        async with self.ledger.transaction() as db:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO modmail_blocks (user_id, blocked_by, reason, at) VALUES (?, ?, ?, ?)",
                (user_id, by, reason, now_ms()),
            )
            return cursor.rowcount == 1

    async def unblock(self, user_id: str) -> bool:
        """Let ``user_id`` open cases again; False when they were not blocked. (The audit log keeps
        both; the block row is state, not record.)"""
        async with self.ledger.transaction() as db:
            cursor = await db.execute("DELETE FROM modmail_blocks WHERE user_id = ?", (user_id,))
            return cursor.rowcount == 1


async def _person(db: Any, case_id: int, user_id: str, role: str, by: str, at: int) -> bool:
    cursor = await db.execute(
        "INSERT OR IGNORE INTO case_people (case_id, user_id, role, added_by, at) VALUES (?, ?, ?, ?, ?)",
        (case_id, user_id, role, by, at),
    )
    return bool(cursor.rowcount == 1)


# -- what members write in their direct chat -----------------------------------------------------

_APPEAL = re.compile(r"^\s*appeal(?![\w-])[\s:,]*(?:#?(\d{1,18})(?!\w))?[\s:,.-]*(.*)$", re.IGNORECASE | re.DOTALL)


@attrs.frozen
class AppealRequest:
    """``appeal [#]<id> <reason…>``; ``infraction_id`` is ``None`` for "my latest sanction"."""

    infraction_id: int | None
    reason: str


def parse_appeal(text: str) -> AppealRequest | None:
    """The appeal a member's message asks for, or ``None`` when it is not one."""
    match = _APPEAL.match(text)
    if match is None:
        return None
    number = match.group(1)
    return AppealRequest(int(number) if number else None, match.group(2).strip())


def excerpt(text: str | None, limit: int = 300) -> str:
    """One line of at most ``limit`` characters of ``text``, invisible format characters removed
    (a bidi override in a quote must not turn the management room's line around)."""
    if not text:
        return ""
    cleaned = " ".join(strip_invisible(text[: limit * 4]).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def strip_invisible(text: str) -> str:
    """``text`` without format characters (zero-width, bidi controls), line breaks kept."""
    if text.isascii():
        return text
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cf")


def mentions_word(text: str, words: Sequence[str]) -> str | None:
    """The first of ``words`` (like ``@moderators``) ``text`` contains as a whole word, any case."""
    lowered = text.lower()
    for word in words:
        w = word.lower()
        start = lowered.find(w)
        while start >= 0:
            before = lowered[start - 1] if start else " "
            after = lowered[start + len(w)] if start + len(w) < len(lowered) else " "
            if not (before.isalnum() or before == "_") and not (after.isalnum() or after in "_:"):
                return word
            start = lowered.find(w, start + 1)
    return None
