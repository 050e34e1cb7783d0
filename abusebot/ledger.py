"""The infraction ledger: one SQLite file (WAL) that is the bot's memory and its record.

What it guarantees:

* Moderation logs are never removed. The ``audit`` table is append-only and SQLite itself
  refuses UPDATE and DELETE on it (triggers). Infractions cannot be deleted, and the fields
  that say who did what to whom (subject, kind, scope, actor, origin, reason, created_at)
  cannot be changed; only ``state``, ``expires_at`` and ``undo`` move, always with an audit row.
* The sync checkpoint lives here too, so it is committed together with what the bot recorded
  (see :meth:`Ledger.commit_checkpoint`). ``processed`` keys work by ``(event_id, action)`` so
  replaying a batch after a crash is harmless.
* Every write is its own committed transaction in WAL mode with ``synchronous=FULL``: a commit
  that returned survives ``kill -9`` and power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import attrs

KINDS = ("note", "warning", "mute", "kick", "ban")
STATES = ("pending", "active", "expired", "lifted", "pardoned", "failed")
ORIGINS = ("command", "protection", "policy_list", "system")
#: Scope value meaning "all protected rooms".
ALL_ROOMS = "*"


def now_ms() -> int:
    """Wall-clock time in milliseconds, the ledger's unit."""
    return int(time.time() * 1000)


MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema.
    """
    CREATE TABLE kv (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );

    CREATE TABLE infractions (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        subject       TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('note','warning','mute','kick','ban')),
        scope         TEXT NOT NULL,
        reason        TEXT NOT NULL DEFAULT '',
        rule          TEXT,
        actor         TEXT NOT NULL,
        origin        TEXT NOT NULL CHECK (origin IN ('command','protection','policy_list','system')),
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER,
        state         TEXT NOT NULL
                      CHECK (state IN ('pending','active','expired','lifted','pardoned','failed')),
        undo          TEXT NOT NULL DEFAULT '{}',
        level         INTEGER,
        source_event  TEXT,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX infractions_by_subject ON infractions (subject, id DESC);
    CREATE INDEX infractions_by_state ON infractions (state, kind);

    CREATE TRIGGER infractions_never_deleted BEFORE DELETE ON infractions
    BEGIN SELECT RAISE(ABORT, 'infractions are never deleted'); END;

    CREATE TRIGGER infractions_identity_frozen
    BEFORE UPDATE OF id, subject, kind, scope, reason, rule, actor, origin, created_at, source_event
    ON infractions
    BEGIN SELECT RAISE(ABORT, 'an infraction''s identity fields cannot change'); END;

    CREATE TABLE audit (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        at             INTEGER NOT NULL,
        actor          TEXT NOT NULL,
        action         TEXT NOT NULL,
        subject        TEXT,
        room           TEXT,
        infraction_id  INTEGER REFERENCES infractions (id),
        outcome        TEXT NOT NULL
                       CHECK (outcome IN ('requested','done','refused','failed','ignored')),
        reason         TEXT,
        detail         TEXT NOT NULL DEFAULT '{}',
        event_id       TEXT
    );
    CREATE INDEX audit_by_infraction ON audit (infraction_id);

    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

    CREATE TABLE processed (
        event_id  TEXT NOT NULL,
        action    TEXT NOT NULL,
        at        INTEGER NOT NULL,
        PRIMARY KEY (event_id, action)
    ) WITHOUT ROWID;

    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        infraction_id    INTEGER NOT NULL REFERENCES infractions (id),
        kind             TEXT NOT NULL CHECK (kind IN ('lift')),
        due_at           INTEGER NOT NULL,
        next_attempt_at  INTEGER NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        state            TEXT NOT NULL CHECK (state IN ('pending','done','cancelled')),
        last_error       TEXT,
        alerted          INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX jobs_one_live ON jobs (infraction_id, kind) WHERE state = 'pending';
    CREATE INDEX jobs_by_time ON jobs (state, next_attempt_at);
    """,
    # 2: REPLACE cannot rewrite history, and join-wave locks get a row each.
    # ``INSERT OR REPLACE`` (and ``REPLACE``) delete the conflicting row without firing DELETE
    # triggers unless ``recursive_triggers`` is on, which is a per-connection setting that a
    # plain ``sqlite3`` shell does not have. A BEFORE INSERT trigger refusing an existing id
    # closes that door in the schema itself, for every connection.
    """
    CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit
    WHEN EXISTS (SELECT 1 FROM audit WHERE id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

    CREATE TRIGGER infractions_no_replace BEFORE INSERT ON infractions
    WHEN EXISTS (SELECT 1 FROM infractions WHERE id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'infractions are never replaced'); END;

    CREATE TABLE room_locks (
        room_id      TEXT PRIMARY KEY,
        previous     TEXT NOT NULL,
        until        INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        locked_event TEXT
    );
    INSERT OR IGNORE INTO room_locks (room_id, previous, until, created_at)
        SELECT lock.key,
               COALESCE(json_extract(lock.value, '$.previous'), '{"join_rule": "public"}'),
               CAST(COALESCE(json_extract(lock.value, '$.until'), 0) * 1000 AS INTEGER),
               CAST(strftime('%s', 'now') AS INTEGER) * 1000
        FROM kv, json_each(kv.value) AS lock
        WHERE kv.key = 'room_locks' AND json_valid(kv.value);
    DELETE FROM kv WHERE key = 'room_locks';
    """,
    # 3: who has been active in the community, so "new to the community" survives restarts.
    """
    CREATE TABLE known_members (
        user_id        TEXT PRIMARY KEY,
        first_seen_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO known_members (user_id, first_seen_at)
        SELECT subject, MIN(created_at) FROM infractions GROUP BY subject;
    """,
    # 4: one durable write path (the outbox), one jobs table for every timed thing, and typed
    # tables for what lived in ``kv`` as JSON blobs (a blob's read-modify-write could lose an
    # update; a row cannot).
    """
    ALTER TABLE infractions ADD COLUMN source_room TEXT;

    CREATE TABLE outbox (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        key            TEXT NOT NULL UNIQUE,
        infraction_id  INTEGER REFERENCES infractions (id),
        kind           TEXT NOT NULL,
        room_id        TEXT NOT NULL DEFAULT '',
        payload        TEXT NOT NULL DEFAULT '{}',
        priority       INTEGER NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('pending','done','failed')),
        attempts       INTEGER NOT NULL DEFAULT 0,
        result         TEXT NOT NULL DEFAULT '{}',
        error          TEXT,
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL
    );
    CREATE INDEX outbox_pending ON outbox (state, priority, id);
    CREATE INDEX outbox_by_infraction ON outbox (infraction_id);

    CREATE TABLE jobs_v4 (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        kind             TEXT NOT NULL,
        key              TEXT NOT NULL,
        infraction_id    INTEGER REFERENCES infractions (id),
        payload          TEXT NOT NULL DEFAULT '{}',
        due_at           INTEGER NOT NULL,
        next_attempt_at  INTEGER NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        state            TEXT NOT NULL CHECK (state IN ('pending','done','cancelled')),
        last_error       TEXT,
        alerted          INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO jobs_v4 (id, kind, key, infraction_id, due_at, next_attempt_at, attempts, state, last_error, alerted)
        SELECT id, kind, CAST(infraction_id AS TEXT), infraction_id, due_at, next_attempt_at, attempts, state,
               last_error, alerted FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_v4 RENAME TO jobs;
    CREATE UNIQUE INDEX jobs_one_live ON jobs (kind, key) WHERE state = 'pending';
    CREATE INDEX jobs_by_time ON jobs (state, next_attempt_at);
    INSERT OR IGNORE INTO jobs (kind, key, due_at, next_attempt_at, state)
        SELECT 'unlock', room_id, until, until, 'pending' FROM room_locks;

    CREATE TABLE dm_rooms (
        user_id     TEXT PRIMARY KEY,
        room_id     TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO dm_rooms (user_id, room_id, created_at)
        SELECT substr(key, 9), value, CAST(strftime('%s', 'now') AS INTEGER) * 1000
        FROM kv WHERE key LIKE 'dm_room:%';

    CREATE TABLE protection_settings (
        name      TEXT PRIMARY KEY,
        enabled   INTEGER,
        mode      TEXT,
        settings  TEXT NOT NULL DEFAULT '{}'
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO protection_settings (name, enabled, mode, settings)
        SELECT p.key, json_extract(p.value, '$.enabled'), json_extract(p.value, '$.mode'),
               COALESCE(json_extract(p.value, '$.settings'), '{}')
        FROM kv, json_each(kv.value) AS p
        WHERE kv.key = 'protection_overrides' AND json_valid(kv.value);

    CREATE TABLE added_rooms (
        room_id   TEXT PRIMARY KEY,
        source    TEXT NOT NULL,
        added_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO added_rooms (room_id, source, added_at)
        SELECT r.value, 'upgrade', CAST(strftime('%s', 'now') AS INTEGER) * 1000
        FROM kv, json_each(kv.value) AS r
        WHERE kv.key = 'extra_protected_rooms' AND json_valid(kv.value);

    CREATE TABLE room_upgrades (
        old_room  TEXT PRIMARY KEY,
        new_room  TEXT NOT NULL,
        at        INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO room_upgrades (old_room, new_room, at)
        SELECT r.key, r.value, CAST(strftime('%s', 'now') AS INTEGER) * 1000
        FROM kv, json_each(kv.value) AS r
        WHERE kv.key = 'replaced_rooms' AND json_valid(kv.value);

    CREATE TABLE probation (
        user_id   TEXT PRIMARY KEY,
        until     INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO probation (user_id, until)
        SELECT p.key, CAST(p.value * 1000 AS INTEGER)
        FROM kv, json_each(kv.value) AS p
        WHERE kv.key = 'probation' AND json_valid(kv.value);

    CREATE TABLE watched_lists (
        room_id   TEXT PRIMARY KEY,
        options   TEXT NOT NULL DEFAULT '{}'
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO watched_lists (room_id, options)
        SELECT w.key, CASE WHEN w.type = 'null' THEN 'null' ELSE w.value END
        FROM kv, json_each(kv.value) AS w
        WHERE kv.key = 'watched_lists' AND json_valid(kv.value);

    DELETE FROM kv WHERE key IN ('protection_overrides', 'extra_protected_rooms', 'replaced_rooms', 'probation',
                                 'watched_lists')
        OR key LIKE 'dm_room:%';
    """,
    # 5: features bring their own tables; which of a feature's migrations ran is recorded here.
    """
    CREATE TABLE feature_migrations (
        feature     TEXT PRIMARY KEY,
        version     INTEGER NOT NULL,
        applied_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX audit_by_event ON audit (event_id, action) WHERE event_id IS NOT NULL;
    CREATE INDEX infractions_by_source ON infractions (source_event, kind, subject) WHERE source_event IS NOT NULL;
    """,
    # 6: encrypted events that wait for their room key (handled when it arrives, across restarts).
    """
    CREATE TABLE waiting_for_keys (
        event_id    TEXT PRIMARY KEY,
        room_id     TEXT NOT NULL,
        session_id  TEXT NOT NULL,
        event       TEXT NOT NULL,
        added_at    INTEGER NOT NULL
    );
    CREATE INDEX waiting_by_session ON waiting_for_keys (session_id);
    """,
)


class LedgerError(Exception):
    """The ledger refused an operation (unknown infraction, bad state change)."""


@attrs.frozen
class Infraction:
    """One row of the ``infractions`` table."""

    id: int
    subject: str
    kind: str
    scope: str
    reason: str
    rule: str | None
    actor: str
    origin: str
    created_at: int
    expires_at: int | None
    state: str
    undo: Mapping[str, Any]
    level: int | None
    source_event: str | None
    updated_at: int
    #: The room of the event that asked for it (a command's room: where its reply goes).
    source_room: str | None = None

    @property
    def permanent(self) -> bool:
        """True when nothing will lift this sanction on its own."""
        return self.expires_at is None


@attrs.frozen
class RoomLock:
    """A join-wave lock: the join rule to restore, until when, and the event that closed the room
    (``None`` until the homeserver answered; a crash in between leaves it unknown)."""

    previous: Mapping[str, Any]
    until_ms: int
    locked_event: str | None


@attrs.frozen
class Job:
    """One timed thing: a sanction's lift, a room's unlock, and what features add (a vote
    closing, a probation ending). ``key`` names its object; one live job per (kind, key)."""

    id: int
    infraction_id: int | None
    due_at: int
    next_attempt_at: int
    attempts: int
    alerted: bool
    kind: str = "lift"
    key: str = ""
    payload: Mapping[str, Any] = attrs.field(factory=dict)


#: Outbox states: recorded and not yet answered, answered, given up.
INTENT_STATES = ("pending", "done", "failed")


@attrs.frozen
class NewIntent:
    """An intent to record: what to do on the homeserver, where, how urgently.

    ``key`` makes it idempotent: a second intent with the same key is the first one (a replayed
    event, two protections flagging one message). ``None`` gives a fresh key.
    """

    kind: str
    room_id: str
    payload: Mapping[str, Any]
    priority: int
    key: str | None = None


@attrs.frozen
class IntentRow:
    """One row of the outbox."""

    id: int
    key: str
    infraction_id: int | None
    kind: str
    room_id: str
    payload: Mapping[str, Any]
    priority: int
    state: str
    attempts: int
    result: Mapping[str, Any]
    error: str | None


@attrs.frozen
class Recorded:
    """An infraction recorded with its intents; ``fresh`` is False when the same request (same
    source event, kind and subject) had been recorded before, and this is that record."""

    infraction: Infraction
    intents: tuple[IntentRow, ...]
    fresh: bool


_INTENT_COLUMNS = "id, key, infraction_id, kind, room_id, payload, priority, state, attempts, result, error"


def _intent(row: Iterable[Any]) -> IntentRow:
    v = list(row)
    return IntentRow(
        v[0], v[1], v[2], v[3], v[4], json.loads(v[5] or "{}"), v[6], v[7], v[8], json.loads(v[9] or "{}"), v[10]
    )


_INFRACTION_COLUMNS = (
    "id, subject, kind, scope, reason, rule, actor, origin, created_at, expires_at, state, undo, "
    "level, source_event, updated_at, source_room"
)


def _infraction(row: Iterable[Any]) -> Infraction:
    values = list(row)
    values[11] = json.loads(values[11] or "{}")
    return Infraction(*values)


class Ledger:
    """Async access to the ledger. One connection; writes are serialised by a lock."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()
        #: Intent marks waiting for their group commit, and the task committing them.
        self._marks: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._marker: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> Ledger:
        """Open (creating if needed) the ledger and apply pending migrations."""
        from abusebot.files import DIR_MODE, create_private

        path = Path(path)
        if path.exists() and not path.is_file():
            raise LedgerError(f"{path} is not a file")
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        # It holds the access token: created 0600 before SQLite opens it (the WAL and SHM files
        # SQLite makes later take the database file's mode).
        create_private(path)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL: a transaction that returned is on disk even if the machine loses power.
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            # Our own REPLACEs (none today) would fire DELETE triggers too; the schema's BEFORE
            # INSERT triggers cover every other connection.
            await db.execute("PRAGMA recursive_triggers=ON")
            ledger = cls(db, path)
            await ledger._migrate()
        except BaseException:
            # Not a database, or a newer schema: close the connection's thread, or the process
            # could not exit.
            await db.close()
            raise
        return ledger

    async def close(self) -> None:
        """Close the connection (everything is already committed, marks in flight first)."""
        if self._marker is not None and not self._marker.done():
            await self._marker
        await self._db.close()

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise LedgerError(f"ledger schema version {version} is newer than this abusebot ({len(MIGRATIONS)})")
        for number in range(version, len(MIGRATIONS)):
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(MIGRATIONS[number]):
                    await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version = {number + 1}")
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def migrate_feature(self, feature: str, migrations: Sequence[str]) -> int:
        """Apply the migrations of ``feature`` it has not had yet, each in its own transaction with
        the record that it ran; returns the feature's schema version now."""
        version = int(await self._scalar("SELECT version FROM feature_migrations WHERE feature = ?", (feature,)) or 0)
        if version > len(migrations):
            raise LedgerError(f"{feature}'s tables are at version {version}, newer than this abusebot knows")
        for number in range(version, len(migrations)):
            statements = _split_sql(migrations[number])
            # A table rebuilt (SQLite's way to change a CHECK) is done with foreign keys off, as
            # SQLite's own recipe says, and checked before the commit: a dropped parent would
            # count every child row as a violation, however the new table is named.
            rebuild = bool(statements) and statements[0].strip().upper() == FOREIGN_KEYS_OFF
            if rebuild:
                statements = statements[1:]
                await self._db.execute("PRAGMA foreign_keys=OFF")
            try:
                async with self.transaction() as db:
                    for statement in statements:
                        await db.execute(statement)
                    if rebuild:
                        async with db.execute("PRAGMA foreign_key_check") as cur:
                            broken = list(await cur.fetchall())
                        if broken:
                            raise LedgerError(f"{feature} migration {number + 1} broke foreign keys: {broken[:3]}")
                    await db.execute(
                        "INSERT INTO feature_migrations (feature, version, applied_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (feature) DO UPDATE SET version = excluded.version,"
                        " applied_at = excluded.applied_at",
                        (feature, number + 1, now_ms()),
                    )
            finally:
                if rebuild:
                    await self._db.execute("PRAGMA foreign_keys=ON")
        return len(migrations)

    @property
    def schema_version(self) -> int:
        """The newest schema version this code knows."""
        return len(MIGRATIONS)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; commits on success, rolls back on any error."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            else:
                await self._db.execute("COMMIT")

    # -- key/value ------------------------------------------------------------------------------

    async def _scalar(self, query: str, args: Iterable[Any] = ()) -> Any:
        """The first column of the first row of ``query``, or ``None`` when there is no row."""
        async with self._db.execute(query, tuple(args)) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def get_kv(self, key: str) -> str | None:
        """A stored value (sync token, device id, ...), or ``None``."""
        value = await self._scalar("SELECT value FROM kv WHERE key = ?", (key,))
        return None if value is None else str(value)

    async def set_kv(self, key: str, value: str) -> None:
        """Store a value, replacing the old one."""
        async with self.transaction() as db:
            await _put_kv(db, key, value)

    async def delete_kv(self, key: str) -> None:
        """Forget a stored value."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM kv WHERE key = ?", (key,))

    # -- sync checkpoint and replay protection ----------------------------------------------------

    async def commit_checkpoint(self, token: str, processed: Iterable[tuple[str, str]] = ()) -> None:
        """Record that a sync batch is fully handled: its token and its processed keys, atomically."""
        async with self.transaction() as db:
            await db.executemany(
                "INSERT OR IGNORE INTO processed (event_id, action, at) VALUES (?, ?, ?)",
                [(event_id, action, now_ms()) for event_id, action in processed],
            )
            await _put_kv(db, "sync_token", token)

    async def is_processed(self, event_id: str, action: str) -> bool:
        """True when ``action`` already ran for ``event_id`` (a replayed batch)."""
        return (
            await self._scalar("SELECT 1 FROM processed WHERE event_id = ? AND action = ?", (event_id, action))
            is not None
        )

    async def mark_processed(self, event_id: str, action: str) -> bool:
        """Claim ``(event_id, action)``; False when it was already claimed."""
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO processed (event_id, action, at) VALUES (?, ?, ?)",
                (event_id, action, now_ms()),
            )
            return cur.rowcount == 1

    # -- infractions ----------------------------------------------------------------------------

    async def add_infraction(self, **fields: Any) -> Infraction:
        """Record a new infraction and its ``requested`` audit row in one transaction (see
        :meth:`record_infraction` for the arguments)."""
        return (await self.record_infraction(**fields)).infraction

    async def record_infraction(
        self,
        *,
        subject: str,
        kind: str,
        scope: str,
        reason: str,
        actor: str,
        origin: str,
        state: str = "pending",
        expires_at: int | None = None,
        lasts_ms: int | None = None,
        rule: str | None = None,
        level: int | None = None,
        source_event: str | None = None,
        source_room: str | None = None,
        undo: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        intents: Callable[[int], Sequence[NewIntent]] | None = None,
        claim: tuple[str, str] | None = None,
    ) -> Recorded:
        """Record an infraction, its audit row, the intents that carry it out (``intents(id)``)
        and the replay claim, all in one transaction: after a crash either all of it is there
        (and the start-up resumes the intents) or none of it (and the replayed event acts anew).

        The same request twice (one source event, kind and subject) is recorded once: the second
        call returns the first record with ``fresh=False``.
        """
        if kind not in KINDS:
            raise LedgerError(f"unknown infraction kind {kind!r}")
        at = now_ms()
        if lasts_ms is not None:
            # From the time it is recorded at: its length reads as given ("for 1w"), however long
            # the write waited for the lock.
            expires_at = at + lasts_ms
        async with self.transaction() as db:
            if source_event is not None:
                async with db.execute(
                    "SELECT id FROM infractions WHERE source_event = ? AND kind = ? AND subject = ?",
                    (source_event, kind, subject),
                ) as cur:
                    existing = await cur.fetchone()
                if existing is not None:
                    infraction_id, fresh = int(existing[0]), False
                    if claim is not None:
                        await _claim(db, *claim)
            if source_event is None or existing is None:
                fresh = True
                cur = await db.execute(
                    "INSERT INTO infractions (subject, kind, scope, reason, rule, actor, origin, created_at,"
                    " expires_at, state, undo, level, source_event, updated_at, source_room)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        subject,
                        kind,
                        scope,
                        reason,
                        rule,
                        actor,
                        origin,
                        at,
                        expires_at,
                        state,
                        json.dumps(dict(undo or {})),
                        level,
                        source_event,
                        at,
                        source_room,
                    ),
                )
                infraction_id = int(cur.lastrowid or 0)
                await _insert_audit(
                    db,
                    actor=actor,
                    action=kind,
                    subject=subject,
                    room=scope,
                    infraction_id=infraction_id,
                    outcome="requested" if state == "pending" else "done",
                    reason=reason,
                    detail=dict(detail or {}, expires_at=expires_at, level=level),
                    event_id=source_event,
                )
                if intents is not None:
                    await _insert_intents(db, intents(infraction_id), infraction_id)
                if claim is not None:
                    await _claim(db, *claim)
        infraction = await self.get_infraction(infraction_id)
        assert infraction is not None
        return Recorded(infraction, tuple(await self.intents_for(infraction_id)), fresh)

    async def update_infraction(
        self,
        infraction_id: int,
        *,
        state: str,
        actor: str,
        reason: str | None = None,
        undo: Mapping[str, Any] | None = None,
        expires_at: int | None = None,
        schedule_lift: bool = False,
        cancel_jobs: bool = False,
        detail: Mapping[str, Any] | None = None,
        intents: Sequence[NewIntent] = (),
        claim: tuple[str, str] | None = None,
    ) -> Infraction:
        """Move an infraction to ``state`` (with an audit row, optionally its lift job, and the
        intents that follow from it, such as its audit post), in one transaction."""
        if state not in STATES:
            raise LedgerError(f"unknown state {state!r}")
        current = await self.get_infraction(infraction_id)
        if current is None:
            raise LedgerError(f"no infraction #{infraction_id}")
        at = now_ms()
        new_expiry = current.expires_at if expires_at is None else expires_at
        async with self.transaction() as db:
            await db.execute(
                "UPDATE infractions SET state = ?, undo = ?, expires_at = ?, updated_at = ? WHERE id = ?",
                (
                    state,
                    json.dumps(dict(current.undo if undo is None else undo)),
                    new_expiry,
                    at,
                    infraction_id,
                ),
            )
            if schedule_lift and new_expiry is not None:
                await db.execute(
                    "INSERT OR IGNORE INTO jobs (kind, key, infraction_id, due_at, next_attempt_at, state)"
                    " VALUES ('lift', ?, ?, ?, ?, 'pending')",
                    (str(infraction_id), infraction_id, new_expiry, new_expiry),
                )
            if cancel_jobs:
                await db.execute(
                    "UPDATE jobs SET state = 'cancelled' WHERE infraction_id = ? AND state = 'pending'",
                    (infraction_id,),
                )
            await _insert_audit(
                db,
                actor=actor,
                action=f"{current.kind}:{state}",
                subject=current.subject,
                room=current.scope,
                infraction_id=infraction_id,
                outcome="failed" if state == "failed" else "done",
                reason=reason,
                detail=dict(detail or {}, previous_state=current.state),
            )
            await _insert_intents(db, intents, infraction_id)
            if claim is not None:
                await _claim(db, *claim)
        updated = await self.get_infraction(infraction_id)
        assert updated is not None
        return updated

    async def pending_infractions(self) -> list[Infraction]:
        """Infractions recorded but not settled (a crash came between): the start resumes them."""
        return await self._select("state = 'pending' ORDER BY id", ())

    # -- the outbox -----------------------------------------------------------------------------

    async def add_intents(
        self, intents: Sequence[NewIntent], claim: tuple[str, str] | None = None, infraction_id: int | None = None
    ) -> list[IntentRow]:
        """Record intents (and a replay claim) in one transaction; an intent whose key exists is
        not recorded again. Returns the rows, existing ones included, in the given order."""
        async with self.transaction() as db:
            keys = await _insert_intents(db, intents, infraction_id)
            if claim is not None:
                await _claim(db, *claim)
        return await self.intents_by_key(keys)

    async def reopen_intents(self, rows: Sequence[IntentRow]) -> list[IntentRow]:
        """``rows`` with every ``failed`` one made ``pending`` again (what failed for want of a
        power the bot has been given since), re-read, in order."""
        failed = [row.id for row in rows if row.state == "failed"]
        if not failed:
            return list(rows)
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE outbox SET state = 'pending', error = NULL WHERE id = ? AND state = 'failed'",
                [(intent_id,) for intent_id in failed],
            )
        return await self.intents_by_key([row.key for row in rows])

    async def intents_by_key(self, keys: Sequence[str]) -> list[IntentRow]:
        """Outbox rows by key, in the order of ``keys``."""
        rows: dict[str, IntentRow] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            async with self._db.execute(f"SELECT {_INTENT_COLUMNS} FROM outbox WHERE key IN ({marks})", chunk) as cur:
                for row in await cur.fetchall():
                    intent = _intent(row)
                    rows[intent.key] = intent
        return [rows[key] for key in keys if key in rows]

    async def intent(self, intent_id: int) -> IntentRow | None:
        """One outbox row by id."""
        async with self._db.execute(f"SELECT {_INTENT_COLUMNS} FROM outbox WHERE id = ?", (intent_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else _intent(row)

    async def intents_for(self, infraction_id: int) -> list[IntentRow]:
        """The outbox rows that carry out one infraction, in the order they were recorded."""
        async with self._db.execute(
            f"SELECT {_INTENT_COLUMNS} FROM outbox WHERE infraction_id = ? ORDER BY id", (infraction_id,)
        ) as cur:
            return [_intent(row) for row in await cur.fetchall()]

    async def pending_intents(self) -> list[IntentRow]:
        """Every intent not yet answered, most urgent first."""
        async with self._db.execute(
            f"SELECT {_INTENT_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY priority, id"
        ) as cur:
            return [_intent(row) for row in await cur.fetchall()]

    async def note_intent(self, intent_id: int, result: Mapping[str, Any]) -> None:
        """Record what an intent learned before it writes (a mute's previous level): a resumed
        intent must use it, not what it would read after its own write."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE outbox SET result = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (json.dumps(dict(result), sort_keys=True), now_ms(), intent_id),
            )

    async def finish_intent(
        self, intent_id: int, state: str, result: Mapping[str, Any] | None = None, error: str | None = None
    ) -> None:
        """Mark an intent answered (``done``) or given up (``failed``); returns once committed.

        Marks that arrive together share one transaction (a group commit): a ban across 500 rooms
        is 500 marks, and one fsync each made the ledger the slowest part of it.
        """
        if state not in INTENT_STATES[1:]:
            raise LedgerError(f"an intent finishes done or failed, not {state!r}")
        mark = (
            state,
            None if result is None else json.dumps(dict(result), sort_keys=True),
            error,
            now_ms(),
            intent_id,
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._marks.append((mark, done))
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._commit_marks(), name="ledger-marks")
        await done

    async def _commit_marks(self) -> None:
        while self._marks:
            await asyncio.sleep(0)  # the marks of this moment join the batch
            batch, self._marks = self._marks, []
            try:
                async with self.transaction() as db:
                    await db.executemany(
                        "UPDATE outbox SET state = ?, result = COALESCE(?, result), error = ?, updated_at = ?"
                        " WHERE id = ?",
                        [mark for mark, _ in batch],
                    )
            except Exception as err:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(err)
            except BaseException:
                for _, waiter in batch:  # cut short: the marks are not committed, the rows stay pending
                    waiter.cancel()
                raise
            else:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_result(None)

    async def outbox_depth(self) -> int:
        """How many intents wait to be answered."""
        return int(await self._scalar("SELECT COUNT(*) FROM outbox WHERE state = 'pending'") or 0)

    async def get_infraction(self, infraction_id: int) -> Infraction | None:
        """One infraction by id."""
        async with self._db.execute(
            f"SELECT {_INFRACTION_COLUMNS} FROM infractions WHERE id = ?", (infraction_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _infraction(row)

    async def history(self, subject: str, limit: int = 20) -> list[Infraction]:
        """The subject's infractions, newest first."""
        return await self._select("subject = ? ORDER BY id DESC LIMIT ?", (subject, limit))

    async def count_for(self, subject: str) -> int:
        """How many infractions the subject has in all."""
        return int(await self._scalar("SELECT COUNT(*) FROM infractions WHERE subject = ?", (subject,)) or 0)

    async def active(self, subject: str, kind: str | None = None) -> list[Infraction]:
        """The subject's infractions in state ``active`` (optionally of one kind), newest first."""
        if kind is None:
            return await self._select("subject = ? AND state = 'active' ORDER BY id DESC", (subject,))
        return await self._select("subject = ? AND state = 'active' AND kind = ? ORDER BY id DESC", (subject, kind))

    async def bans_everywhere(self, subjects: Iterable[str]) -> dict[str, Infraction]:
        """Of ``subjects``, those with a ban in force in every protected room: subject → the
        newest such ban (asked in chunks, so thousands of members cost a few queries)."""
        found: dict[str, Infraction] = {}
        people = sorted(set(subjects))
        for start in range(0, len(people), 500):
            chunk = people[start : start + 500]
            marks = ",".join("?" * len(chunk))
            where = f"state = 'active' AND kind = 'ban' AND scope = '*' AND subject IN ({marks}) ORDER BY id"
            for inf in await self._select(where, chunk):
                found[inf.subject] = inf
        return found

    async def active_everywhere(self, kind: str) -> list[Infraction]:
        """Every ``kind`` in force in every protected room, the newest of each subject, oldest
        subject first (what a room protected later must get)."""
        newest: dict[str, Infraction] = {}
        for inf in await self._select("state = 'active' AND kind = ? AND scope = '*' ORDER BY id", (kind,)):
            newest[inf.subject] = inf
        return sorted(newest.values(), key=lambda inf: inf.id)

    async def mute_reached(self, infraction_id: int, room_id: str, entry: Mapping[str, Any], *, actor: str) -> bool:
        """Add a room to an active mute's undo (what its lift restores), with an audit row, in
        one statement each (two rooms reached at once never lose each other). False when the
        mute is no longer active (or the room id cannot be a JSON key)."""
        if '"' in room_id or "\\" in room_id:
            return False
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE infractions SET undo = json_set(undo, '$.rooms.\"' || ? || '\"', json(?)), updated_at = ?"
                " WHERE id = ? AND state = 'active' AND kind = 'mute'",
                (room_id, json.dumps(dict(entry)), now_ms(), infraction_id),
            )
            if cur.rowcount != 1:
                return False
            async with db.execute("SELECT subject FROM infractions WHERE id = ?", (infraction_id,)) as found:
                row = await found.fetchone()
            await _insert_audit(
                db,
                actor=actor,
                action="mute:reached_room",
                subject=row[0] if row else None,
                room=room_id,
                infraction_id=infraction_id,
                outcome="done",
                reason=None,
                detail=dict(entry),
            )
        return True

    async def active_by_rule(self, origin: str, rule: str) -> list[Infraction]:
        """Active infractions made by ``origin`` because of ``rule`` (e.g. one policy-list rule)."""
        return await self._select("state = 'active' AND origin = ? AND rule = ? ORDER BY id", (origin, rule))

    async def active_by_origin(self, origin: str, kind: str) -> list[Infraction]:
        """Active infractions of ``kind`` made by ``origin`` (e.g. every policy-list ban)."""
        return await self._select("state = 'active' AND origin = ? AND kind = ? ORDER BY id", (origin, kind))

    async def _select(self, where: str, args: Iterable[Any]) -> list[Infraction]:
        # ``where`` is always a literal from this module; values only ever travel as parameters.
        async with self._db.execute(f"SELECT {_INFRACTION_COLUMNS} FROM infractions WHERE {where}", tuple(args)) as cur:
            rows = await cur.fetchall()
        return [_infraction(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        """Counts for ``!mod status``: infractions by state, audit rows, pending lifts."""
        result: dict[str, int] = {}
        async with self._db.execute("SELECT state, COUNT(*) FROM infractions GROUP BY state") as cur:
            for state, count in await cur.fetchall():
                result[f"infractions_{state}"] = int(count)
        result["audit_rows"] = int(await self._scalar("SELECT COUNT(*) FROM audit") or 0)
        lifts = await self._scalar("SELECT COUNT(*) FROM jobs WHERE state = 'pending' AND kind = 'lift'")
        result["pending_lifts"] = int(lifts or 0)
        return result

    # -- audit ----------------------------------------------------------------------------------

    async def audit(
        self,
        *,
        actor: str,
        action: str,
        outcome: str,
        subject: str | None = None,
        room: str | None = None,
        infraction_id: int | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
        event_id: str | None = None,
    ) -> int:
        """Append one audit row (an action taken, refused, failed, or a command ignored)."""
        async with self.transaction() as db:
            return await self.audit_in(
                db,
                actor=actor,
                action=action,
                outcome=outcome,
                subject=subject,
                room=room,
                infraction_id=infraction_id,
                reason=reason,
                detail=detail,
                event_id=event_id,
            )

    @staticmethod
    async def audit_in(
        db: aiosqlite.Connection,
        *,
        actor: str,
        action: str,
        outcome: str,
        subject: str | None = None,
        room: str | None = None,
        infraction_id: int | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
        event_id: str | None = None,
    ) -> int:
        """Append one audit row inside the caller's transaction (``db`` from :meth:`transaction`):
        written with the change it records, or not at all."""
        return await _insert_audit(
            db,
            actor=actor,
            action=action,
            subject=subject,
            room=room,
            infraction_id=infraction_id,
            outcome=outcome,
            reason=reason,
            detail=detail or {},
            event_id=event_id,
        )

    async def audit_rows(self, infraction_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Audit rows, newest first (all, or those of one infraction)."""
        query = "SELECT id, at, actor, action, subject, room, infraction_id, outcome, reason, detail, event_id"
        query += " FROM audit"
        args: list[Any] = []
        if infraction_id is not None:
            query += " WHERE infraction_id = ?"
            args.append(infraction_id)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        async with self._db.execute(query, args) as cur:
            names = [column[0] for column in cur.description]
            rows = await cur.fetchall()
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def audit_rows_for_event(self, event_id: str, action: str) -> list[dict[str, Any]]:
        """Audit rows of ``action`` recorded for the request ``event_id``, oldest first."""
        async with self._db.execute(
            "SELECT id, at, actor, action, subject, room, infraction_id, outcome, reason, detail, event_id FROM audit"
            " WHERE event_id = ? AND action = ? ORDER BY id",
            (event_id, action),
        ) as cur:
            names = [column[0] for column in cur.description]
            rows = await cur.fetchall()
        return [dict(zip(names, row, strict=True)) for row in rows]

    # -- members seen --------------------------------------------------------------------------

    async def is_known(self, user_id: str) -> bool:
        """True when ``user_id`` was active in a protected room before, or has any record."""
        if await self._scalar("SELECT 1 FROM known_members WHERE user_id = ?", (user_id,)) is not None:
            return True
        return await self._scalar("SELECT 1 FROM infractions WHERE subject = ? LIMIT 1", (user_id,)) is not None

    async def mark_known(self, user_id: str) -> None:
        """Remember that ``user_id`` has been active in the community."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO known_members (user_id, first_seen_at) VALUES (?, ?)", (user_id, now_ms())
            )

    # -- join-wave room locks ---------------------------------------------------------------------

    async def add_room_lock(self, room_id: str, previous: Mapping[str, Any], until_ms: int) -> bool:
        """Record a lock *before* the room is closed; False when one is already recorded."""
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO room_locks (room_id, previous, until, created_at) VALUES (?, ?, ?, ?)",
                (room_id, json.dumps(dict(previous), sort_keys=True), until_ms, now_ms()),
            )
            if cur.rowcount != 1:
                return False
            # Its restore is a job like any other timed thing: it survives restarts.
            await db.execute(
                "INSERT OR IGNORE INTO jobs (kind, key, due_at, next_attempt_at, state)"
                " VALUES ('unlock', ?, ?, ?, 'pending')",
                (room_id, until_ms, until_ms),
            )
            return True

    async def set_room_lock_event(self, room_id: str, event_id: str) -> None:
        """Remember which join-rules event the lock set (only that one is ever restored over)."""
        async with self.transaction() as db:
            await db.execute("UPDATE room_locks SET locked_event = ? WHERE room_id = ?", (event_id, room_id))

    async def room_locks(self) -> dict[str, RoomLock]:
        """Every recorded lock, by room id."""
        async with self._db.execute("SELECT room_id, previous, until, locked_event FROM room_locks") as cur:
            rows = await cur.fetchall()
        return {
            str(room): RoomLock(json.loads(previous), int(until), None if event is None else str(event))
            for room, previous, until, event in rows
        }

    async def remove_room_lock(self, room_id: str) -> None:
        """Forget a lock (after its room was restored, or left alone on purpose)."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM room_locks WHERE room_id = ?", (room_id,))
            await db.execute(
                "UPDATE jobs SET state = 'cancelled' WHERE kind = 'unlock' AND key = ? AND state = 'pending'",
                (room_id,),
            )

    # -- jobs: every timed thing ------------------------------------------------------------------

    async def add_job(
        self,
        kind: str,
        key: str,
        due_at: int,
        payload: Mapping[str, Any] | None = None,
        infraction_id: int | None = None,
    ) -> bool:
        """Schedule ``kind`` for ``key`` at ``due_at`` (ms); False when one is already pending."""
        async with self.transaction() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO jobs (kind, key, infraction_id, payload, due_at, next_attempt_at, state)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                (kind, key, infraction_id, json.dumps(dict(payload or {}), sort_keys=True), due_at, due_at),
            )
            return cur.rowcount == 1

    async def cancel_job(self, kind: str, key: str) -> bool:
        """Cancel the pending ``kind`` job of ``key``; False when there was none."""
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE jobs SET state = 'cancelled' WHERE kind = ? AND key = ? AND state = 'pending'", (kind, key)
            )
            return cur.rowcount > 0

    async def complete_job(self, kind: str, key: str) -> None:
        """Mark the pending ``kind`` job of ``key`` done (its work finished before it fell due)."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE jobs SET state = 'done' WHERE kind = ? AND key = ? AND state = 'pending'", (kind, key)
            )

    async def pending_jobs(self, kind: str) -> list[Job]:
        """Every pending job of ``kind``, oldest first."""
        async with self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE kind = ? AND state = 'pending' ORDER BY id", (kind,)
        ) as cur:
            return [_job(r) for r in await cur.fetchall()]

    async def pending_job(self, kind: str, key: str) -> Job | None:
        """The pending ``kind`` job of ``key``, if any."""
        async with self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE kind = ? AND key = ? AND state = 'pending'", (kind, key)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _job(row)

    async def next_job_time(self) -> int | None:
        """When the earliest pending job is due (ms), or ``None``."""
        value = await self._scalar("SELECT MIN(next_attempt_at) FROM jobs WHERE state = 'pending'")
        return None if value is None else int(value)

    async def due_jobs(self, at: int, limit: int = 100) -> list[Job]:
        """Pending jobs whose next attempt time has come, oldest first."""
        async with self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs"
            " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (at, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [_job(r) for r in rows]

    async def finish_job(self, job_id: int) -> None:
        """Mark a job as done."""
        async with self.transaction() as db:
            await db.execute("UPDATE jobs SET state = 'done' WHERE id = ?", (job_id,))

    async def retry_job(self, job_id: int, next_attempt_at: int, error: str, alerted: bool) -> None:
        """Record a failed attempt and when to try again."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE jobs SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?,"
                " alerted = ? WHERE id = ?",
                (next_attempt_at, error[:500], int(alerted), job_id),
            )

    # -- features' own tables ---------------------------------------------------------------------

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read from a feature's own tables (its writes use :meth:`transaction`)."""
        async with self._db.execute(sql, tuple(args)) as cur:
            return [tuple(row) for row in await cur.fetchall()]

    # -- encrypted events waiting for their key ---------------------------------------------------

    async def add_waiting(
        self, event_id: str, room_id: str, session_id: str, event: Mapping[str, Any], keep: int
    ) -> None:
        """Keep an undecryptable event until its session's key arrives (at most ``keep`` rows:
        the oldest go first)."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO waiting_for_keys (event_id, room_id, session_id, event, added_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (event_id, room_id, session_id, json.dumps(event, separators=(",", ":")), now_ms()),
            )
            await db.execute(
                "DELETE FROM waiting_for_keys WHERE event_id IN (SELECT event_id FROM waiting_for_keys"
                " ORDER BY added_at DESC, rowid DESC LIMIT -1 OFFSET ?)",
                (keep,),
            )

    async def waiting_for(self, session_ids: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
        """The events waiting for any of ``session_ids`` (oldest first), as ``(room_id, event)``.
        They stay until :meth:`forget_waiting` (after they were handled: a crash in between
        hands them on again, and handling is idempotent)."""
        sessions = sorted(set(session_ids))
        if not sessions:
            return []
        marks = ",".join("?" * len(sessions))
        async with self._db.execute(
            f"SELECT room_id, event FROM waiting_for_keys WHERE session_id IN ({marks}) ORDER BY added_at, rowid",
            sessions,
        ) as cur:
            rows = await cur.fetchall()
        return [(str(room), json.loads(event)) for room, event in rows]

    async def forget_waiting(self, event_ids: Iterable[str]) -> None:
        """Events that were handled once their key came."""
        ids = [(event_id,) for event_id in event_ids]
        if ids:
            async with self.transaction() as db:
                await db.executemany("DELETE FROM waiting_for_keys WHERE event_id = ?", ids)

    async def waiting_count(self) -> int:
        """How many events wait for a key."""
        return int(await self._scalar("SELECT COUNT(*) FROM waiting_for_keys", ()) or 0)

    # -- typed tables (once JSON blobs in kv) ----------------------------------------------------

    async def dm_room(self, user_id: str) -> str | None:
        """The room the bot DMs ``user_id`` in, if it made one."""
        value = await self._scalar("SELECT room_id FROM dm_rooms WHERE user_id = ?", (user_id,))
        return None if value is None else str(value)

    async def set_dm_room(self, user_id: str, room_id: str) -> None:
        """Remember the DM room of ``user_id``."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO dm_rooms (user_id, room_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
                (user_id, room_id, now_ms()),
            )

    async def protection_settings(self) -> dict[str, dict[str, Any]]:
        """Moderators' persisted changes to protections: {name: {enabled?, mode?, settings}}."""
        async with self._db.execute("SELECT name, enabled, mode, settings FROM protection_settings") as cur:
            rows = await cur.fetchall()
        result: dict[str, dict[str, Any]] = {}
        for name, enabled, mode, settings in rows:
            entry: dict[str, Any] = {"settings": json.loads(settings or "{}")}
            if enabled is not None:
                entry["enabled"] = bool(enabled)
            if mode is not None:
                entry["mode"] = str(mode)
            result[str(name)] = entry
        return result

    async def change_protection(
        self,
        name: str,
        *,
        enabled: bool | None = None,
        mode: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist one change to one protection (a row per protection: two changes never lose
        each other, as two read-modify-writes of one JSON blob could)."""
        async with self.transaction() as db:
            await db.execute("INSERT OR IGNORE INTO protection_settings (name) VALUES (?)", (name,))
            if enabled is not None:
                await db.execute("UPDATE protection_settings SET enabled = ? WHERE name = ?", (int(enabled), name))
            if mode is not None:
                await db.execute("UPDATE protection_settings SET mode = ? WHERE name = ?", (mode, name))
            for key, value in (settings or {}).items():
                await db.execute(
                    "UPDATE protection_settings SET settings = json_set(settings, ?, json(?)) WHERE name = ?",
                    (f'$."{key}"', json.dumps(value), name),
                )

    async def added_rooms(self) -> list[str]:
        """Rooms protected besides the configured ones (room upgrades followed), oldest first."""
        async with self._db.execute("SELECT room_id FROM added_rooms ORDER BY added_at, room_id") as cur:
            return [str(r[0]) for r in await cur.fetchall()]

    async def room_upgrades(self) -> dict[str, str]:
        """Old room id → its replacement, for every upgrade followed."""
        async with self._db.execute("SELECT old_room, new_room FROM room_upgrades") as cur:
            return {str(a): str(b) for a, b in await cur.fetchall()}

    async def record_upgrade(self, old: str, new: str, *, protect: bool) -> None:
        """Remember an upgrade (and that its replacement is protected), in one transaction."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO room_upgrades (old_room, new_room, at) VALUES (?, ?, ?)", (old, new, now_ms())
            )
            if protect:
                await db.execute(
                    "INSERT OR IGNORE INTO added_rooms (room_id, source, added_at) VALUES (?, 'upgrade', ?)",
                    (new, now_ms()),
                )

    async def probation_until(self, user_id: str) -> int | None:
        """Until when (ms) ``user_id`` is on probation, if they are."""
        value = await self._scalar("SELECT until FROM probation WHERE user_id = ?", (user_id,))
        return None if value is None else int(value)

    async def watched_lists(self) -> dict[str, Any]:
        """Moderators' changes to the watched lists: room id → options (``None``: unwatched)."""
        async with self._db.execute("SELECT room_id, options FROM watched_lists") as cur:
            return {str(room): json.loads(options) for room, options in await cur.fetchall()}

    async def set_watched_list(self, room_id: str, options: Mapping[str, Any] | None) -> None:
        """Persist that a list is watched (with its options) or unwatched (``None``)."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO watched_lists (room_id, options) VALUES (?, ?)"
                " ON CONFLICT (room_id) DO UPDATE SET options = excluded.options",
                (room_id, json.dumps(None if options is None else dict(options), sort_keys=True)),
            )


_JOB_COLUMNS = "id, infraction_id, due_at, next_attempt_at, attempts, alerted, kind, key, payload"


def _job(r: Iterable[Any]) -> Job:
    v = list(r)
    return Job(v[0], v[1], v[2], v[3], v[4], bool(v[5]), v[6], v[7], json.loads(v[8] or "{}"))


async def _claim(db: aiosqlite.Connection, event_id: str, action: str) -> None:
    await db.execute(
        "INSERT OR IGNORE INTO processed (event_id, action, at) VALUES (?, ?, ?)", (event_id, action, now_ms())
    )


async def _insert_intents(
    db: aiosqlite.Connection, intents: Sequence[NewIntent], infraction_id: int | None
) -> list[str]:
    import secrets

    at = now_ms()
    keys = [intent.key or f"{intent.kind}:{secrets.token_hex(12)}" for intent in intents]
    await db.executemany(
        # The same key again is the same intent; one that failed is tried again (a moderator's retry).
        "INSERT INTO outbox (key, infraction_id, kind, room_id, payload, priority, state, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET state = 'pending', error = NULL WHERE state = 'failed'",
        [
            (key, infraction_id, i.kind, i.room_id, json.dumps(dict(i.payload), sort_keys=True), i.priority, at, at)
            for key, i in zip(keys, intents, strict=True)
        ],
    )
    return keys


async def _put_kv(db: aiosqlite.Connection, key: str, value: str) -> None:
    await db.execute(
        "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


async def _insert_audit(
    db: aiosqlite.Connection,
    *,
    actor: str,
    action: str,
    subject: str | None,
    room: str | None,
    infraction_id: int | None,
    outcome: str,
    reason: str | None,
    detail: Mapping[str, Any],
    event_id: str | None = None,
) -> int:
    cur = await db.execute(
        "INSERT INTO audit (at, actor, action, subject, room, infraction_id, outcome, reason, detail,"
        " event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            now_ms(),
            actor,
            action,
            subject,
            room,
            infraction_id,
            outcome,
            reason,
            json.dumps(dict(detail), sort_keys=True, default=str),
            event_id,
        ),
    )
    return int(cur.lastrowid or 0)


#: A feature migration that starts with this line rebuilds a table: it runs with foreign keys off.
FOREIGN_KEYS_OFF = "PRAGMA FOREIGN_KEYS = OFF;"


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (``BEGIN … END;``) whole."""
    statements: list[str] = []
    current: list[str] = []
    in_trigger = False
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        current.append(line)
        upper = stripped.upper()
        if upper.startswith("CREATE TRIGGER"):
            in_trigger = True
        if (in_trigger and upper.endswith("END;")) or (not in_trigger and stripped.endswith(";")):
            statements.append("\n".join(current))
            current = []
            in_trigger = False
    if current:
        statements.append("\n".join(current))
    return statements
