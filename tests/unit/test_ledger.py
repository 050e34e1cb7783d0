from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from abusebot.ledger import MIGRATIONS, Infraction, Ledger, LedgerError, RoomLock

ALICE = "@alice:example.org"
MOD = "@mod:example.org"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ledger.sqlite3"


@pytest.fixture
async def ledger(path: Path) -> AsyncIterator[Ledger]:
    ledger = await Ledger.open(path)
    yield ledger
    await ledger.close()


@pytest.fixture
def raw_db(path: Path, ledger: Ledger) -> Iterator[sqlite3.Connection]:
    """A second, plain sqlite3 connection to the same file, to check what SQLite itself refuses."""
    db = sqlite3.connect(path, isolation_level=None)
    yield db
    db.close()


async def add(ledger: Ledger, subject: str = ALICE, kind: str = "ban", **fields: Any) -> Infraction:
    """Record an infraction with sensible defaults."""
    values: dict[str, Any] = {"scope": "*", "reason": "spam", "actor": MOD, "origin": "command"}
    values.update(fields)
    return await ledger.add_infraction(subject=subject, kind=kind, **values)


class TestSchema:
    async def test_migrations_set_user_version(self, ledger: Ledger, raw_db: sqlite3.Connection) -> None:
        """Opening a new ledger applies every migration and records the schema version."""
        assert raw_db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == ledger.schema_version

    async def test_wal_mode(self, ledger: Ledger, raw_db: sqlite3.Connection) -> None:
        """The ledger runs in WAL mode."""
        assert raw_db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    async def test_reopening_is_idempotent(self, path: Path) -> None:
        """Opening an existing ledger again changes nothing and keeps its data."""
        first = await Ledger.open(path)
        infraction = await add(first)
        await first.close()
        second = await Ledger.open(path)
        try:
            assert await second.get_infraction(infraction.id) == infraction
        finally:
            await second.close()

    async def test_newer_schema_is_refused(self, path: Path) -> None:
        """A ledger written by a newer abusebot is not opened (nor downgraded)."""
        await (await Ledger.open(path)).close()
        db = sqlite3.connect(path)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        db.close()
        with pytest.raises(LedgerError, match="newer than this abusebot"):
            await Ledger.open(path)


class TestAppendOnly:
    async def test_audit_update_refused(self, ledger: Ledger, raw_db: sqlite3.Connection) -> None:
        """SQLite refuses UPDATE on the audit table."""
        await add(ledger)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw_db.execute("UPDATE audit SET reason = 'nothing happened'")

    async def test_audit_delete_refused(self, ledger: Ledger, raw_db: sqlite3.Connection) -> None:
        """SQLite refuses DELETE on the audit table."""
        await add(ledger)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw_db.execute("DELETE FROM audit")

    async def test_infraction_delete_refused(self, ledger: Ledger, raw_db: sqlite3.Connection) -> None:
        """SQLite refuses DELETE on infractions."""
        await add(ledger)
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            raw_db.execute("DELETE FROM infractions")

    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("subject", "'@bob:example.org'"),
            ("kind", "'warning'"),
            ("actor", "'@someone:example.org'"),
            ("reason", "'rewritten'"),
            ("scope", "'!other'"),
            ("origin", "'system'"),
            ("created_at", "0"),
            ("id", "999"),
        ],
    )
    async def test_identity_fields_frozen(
        self, ledger: Ledger, raw_db: sqlite3.Connection, column: str, value: str
    ) -> None:
        """Who did what to whom, and why, cannot be rewritten."""
        infraction = await add(ledger)
        with pytest.raises(sqlite3.IntegrityError, match="identity fields cannot change"):
            raw_db.execute(f"UPDATE infractions SET {column} = {value} WHERE id = ?", (infraction.id,))

    async def test_state_may_change(self, ledger: Ledger, raw_db: sqlite3.Connection) -> None:
        """The state column is not frozen (the triggers are targeted, not blanket)."""
        infraction = await add(ledger)
        raw_db.execute("UPDATE infractions SET state = 'active' WHERE id = ?", (infraction.id,))
        assert (await ledger.get_infraction(infraction.id)).state == "active"  # type: ignore[union-attr]


#: Every way SQL can write over an existing row, against each protected table. ``{id}`` is an
#: existing row's id. Plain ``sqlite3`` (no ``recursive_triggers``), as an intruder would use.
_AUDIT_COLUMNS = "(id, at, actor, action, outcome, reason, detail)"
_AUDIT_VALUES = "({id}, 0, '@intruder:x', 'ban', 'done', 'rewritten', '{{}}')"
_INFRACTION_COLUMNS = "(id, subject, kind, scope, reason, actor, origin, created_at, state, updated_at)"
_INFRACTION_VALUES = "({id}, '@bob:x', 'note', '*', 'rewritten', '@intruder:x', 'system', 0, 'active', 0)"
REWRITES = {
    "audit": [
        "UPDATE audit SET reason = 'rewritten' WHERE id = {id}",
        "DELETE FROM audit WHERE id = {id}",
        f"REPLACE INTO audit {_AUDIT_COLUMNS} VALUES {_AUDIT_VALUES}",
        f"INSERT OR REPLACE INTO audit {_AUDIT_COLUMNS} VALUES {_AUDIT_VALUES}",
        f"INSERT INTO audit {_AUDIT_COLUMNS} VALUES {_AUDIT_VALUES}"
        " ON CONFLICT (id) DO UPDATE SET reason = 'rewritten'",
        f"INSERT INTO audit {_AUDIT_COLUMNS} VALUES {_AUDIT_VALUES} ON CONFLICT DO NOTHING",
        "UPDATE OR REPLACE audit SET id = {id} + 1000 WHERE id = {id}",
    ],
    "infractions": [
        "UPDATE infractions SET reason = 'rewritten' WHERE id = {id}",
        "DELETE FROM infractions WHERE id = {id}",
        f"REPLACE INTO infractions {_INFRACTION_COLUMNS} VALUES {_INFRACTION_VALUES}",
        f"INSERT OR REPLACE INTO infractions {_INFRACTION_COLUMNS} VALUES {_INFRACTION_VALUES}",
        f"INSERT INTO infractions {_INFRACTION_COLUMNS} VALUES {_INFRACTION_VALUES}"
        " ON CONFLICT (id) DO UPDATE SET reason = 'rewritten', subject = '@bob:x'",
        "UPDATE OR REPLACE infractions SET id = {id} + 1000 WHERE id = {id}",
    ],
}


class TestNoRewrite:
    """No SQL write form rewrites the audit log or an infraction's identity (issue: REPLACE)."""

    @pytest.mark.parametrize(
        ("table", "sql"), [(table, sql) for table, forms in REWRITES.items() for sql in forms], ids=lambda v: v[:40]
    )
    async def test_write_form_leaves_the_row_as_it_was(
        self, ledger: Ledger, raw_db: sqlite3.Connection, table: str, sql: str
    ) -> None:
        """Each form either raises or changes nothing; the original row is intact afterwards."""
        infraction = await add(ledger)
        [(audit_id,)] = raw_db.execute("SELECT id FROM audit WHERE infraction_id = ?", (infraction.id,)).fetchall()
        row_id = infraction.id if table == "infractions" else audit_id
        before = raw_db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchall()
        count_before = raw_db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        with contextlib.suppress(sqlite3.IntegrityError):
            raw_db.execute(sql.format(id=row_id))
        assert raw_db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchall() == before
        assert raw_db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == count_before

    @pytest.mark.parametrize("table", ["audit", "infractions"])
    async def test_replace_is_refused_loudly(self, ledger: Ledger, raw_db: sqlite3.Connection, table: str) -> None:
        """REPLACE over an existing row is an error (not a silent no-op) from any connection."""
        infraction = await add(ledger)
        row_id = infraction.id if table == "infractions" else raw_db.execute("SELECT MIN(id) FROM audit").fetchone()[0]
        form = REWRITES[table][3]
        with pytest.raises(sqlite3.IntegrityError, match=r"append-only|never replaced"):
            raw_db.execute(form.format(id=row_id))

    async def test_new_rows_still_insert(self, ledger: Ledger, raw_db: sqlite3.Connection) -> None:
        """The guard refuses only existing ids: the bot's own inserts keep working."""
        for _ in range(3):
            await add(ledger)
        assert raw_db.execute("SELECT COUNT(*) FROM infractions").fetchone()[0] == 3
        assert raw_db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 3


class TestMigrationFour:
    async def test_kv_blobs_become_typed_rows_and_leave_kv(self, path: Path) -> None:
        """A version-3 ledger's JSON blobs (DM rooms, protection changes, added rooms, upgrades,
        probation, watched lists) and its room lock's timer are carried into their tables, and
        the blobs leave ``kv``; the sync token stays."""
        path.parent.mkdir(parents=True)
        db = sqlite3.connect(path, isolation_level=None)
        for number in range(3):
            db.executescript(MIGRATIONS[number])
        db.execute("PRAGMA user_version = 3")
        rows = {
            f"dm_room:{ALICE}": "!dm:x",
            "protection_overrides": '{"flood": {"enabled": false, "settings": {"max_messages": 3}}}',
            "extra_protected_rooms": '["!new:x"]',
            "replaced_rooms": '{"!old:x": "!new:x"}',
            "probation": '{"@p:x": 1700000000}',
            "watched_lists": '{"!list:x": {"apply": true, "allow": false, "auto_unban": false}, "!gone:x": null}',
            "sync_token": "s42",
        }
        db.executemany("INSERT INTO kv (key, value) VALUES (?, ?)", list(rows.items()))
        db.execute("INSERT INTO room_locks (room_id, previous, until, created_at) VALUES ('!r:x', '{}', 99, 1)")
        db.close()

        ledger = await Ledger.open(path)
        try:
            assert await ledger.dm_room(ALICE) == "!dm:x"
            assert await ledger.protection_settings() == {"flood": {"enabled": False, "settings": {"max_messages": 3}}}
            assert await ledger.added_rooms() == ["!new:x"]
            assert await ledger.room_upgrades() == {"!old:x": "!new:x"}
            assert await ledger.probation_until("@p:x") == 1700000000000
            assert await ledger.watched_lists() == {
                "!list:x": {"apply": True, "allow": False, "auto_unban": False},
                "!gone:x": None,
            }
            assert await ledger.pending_job("unlock", "!r:x") is not None
            left = [key for key in rows if await ledger.get_kv(key) is not None]
            assert left == ["sync_token"]
        finally:
            await ledger.close()


class TestMigrationTwo:
    async def test_room_locks_blob_becomes_rows(self, path: Path) -> None:
        """A version-1 ledger's ``room_locks`` kv blob is carried into the ``room_locks`` table."""
        path.parent.mkdir(parents=True)
        db = sqlite3.connect(path, isolation_level=None)
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        blob = '{"!a:x": {"previous": {"join_rule": "knock"}, "until": 1700000000.5}, "!b:x": {"until": 5}}'
        db.execute("INSERT INTO kv (key, value) VALUES ('room_locks', ?)", (blob,))
        db.close()

        ledger = await Ledger.open(path)
        try:
            locks = await ledger.room_locks()
            assert locks == {
                "!a:x": RoomLock({"join_rule": "knock"}, 1700000000500, None),
                "!b:x": RoomLock({"join_rule": "public"}, 5000, None),
            }
            assert await ledger.get_kv("room_locks") is None
        finally:
            await ledger.close()

    async def test_room_lock_is_recorded_once(self, ledger: Ledger) -> None:
        """A second lock of a room already locked is not recorded over the first."""
        assert await ledger.add_room_lock("!a:x", {"join_rule": "public"}, 10)
        assert not await ledger.add_room_lock("!a:x", {"join_rule": "invite"}, 20)
        assert await ledger.room_locks() == {"!a:x": RoomLock({"join_rule": "public"}, 10, None)}
        await ledger.set_room_lock_event("!a:x", "$closed")
        assert (await ledger.room_locks())["!a:x"].locked_event == "$closed"
        await ledger.remove_room_lock("!a:x")
        assert await ledger.room_locks() == {}


class TestInfractions:
    async def test_add_writes_requested_audit_row(self, ledger: Ledger) -> None:
        """A new pending infraction comes with one 'requested' audit row."""
        infraction = await add(ledger)
        rows = await ledger.audit_rows(infraction.id)
        assert [(r["action"], r["outcome"], r["subject"]) for r in rows] == [("ban", "requested", ALICE)]

    async def test_unknown_kind_refused(self, ledger: Ledger) -> None:
        """Only known infraction kinds are recorded."""
        with pytest.raises(LedgerError, match="unknown infraction kind"):
            await add(ledger, kind="smite")

    async def test_state_changes_add_audit_rows(self, ledger: Ledger) -> None:
        """Each state change appends an audit row naming the previous state, newest first."""
        infraction = await add(ledger)
        await ledger.update_infraction(infraction.id, state="active", actor="abusebot")
        await ledger.update_infraction(infraction.id, state="pardoned", actor=MOD, reason="mistake")
        rows = await ledger.audit_rows(infraction.id)
        assert [(r["action"], r["outcome"], r["actor"], r["reason"]) for r in rows] == [
            ("ban:pardoned", "done", MOD, "mistake"),
            ("ban:active", "done", "abusebot", None),
            ("ban", "requested", MOD, "spam"),
        ]

    async def test_failed_state_is_audited_as_failed(self, ledger: Ledger) -> None:
        """Moving to 'failed' writes a 'failed' audit outcome; the infraction stays."""
        infraction = await add(ledger)
        await ledger.update_infraction(infraction.id, state="failed", actor="abusebot")
        assert (await ledger.audit_rows(infraction.id))[0]["outcome"] == "failed"

    async def test_unknown_state_refused(self, ledger: Ledger) -> None:
        """Only known states are accepted."""
        infraction = await add(ledger)
        with pytest.raises(LedgerError, match="unknown state"):
            await ledger.update_infraction(infraction.id, state="forgotten", actor=MOD)

    async def test_update_of_missing_infraction_refused(self, ledger: Ledger) -> None:
        """Updating an infraction that does not exist raises LedgerError."""
        with pytest.raises(LedgerError, match="no infraction #404"):
            await ledger.update_infraction(404, state="active", actor=MOD)

    async def test_history_newest_first(self, ledger: Ledger) -> None:
        """A subject's history lists their infractions newest first, and only theirs."""
        first = await add(ledger, kind="warning")
        await add(ledger, subject="@bob:example.org")
        second = await add(ledger, kind="mute")
        third = await add(ledger, kind="ban")
        assert [i.id for i in await ledger.history(ALICE)] == [third.id, second.id, first.id]

    async def test_history_limit(self, ledger: Ledger) -> None:
        """history() returns at most ``limit`` infractions, and count_for() counts them all."""
        for _ in range(5):
            await add(ledger, kind="note")
        assert (len(await ledger.history(ALICE, limit=2)), await ledger.count_for(ALICE)) == (2, 5)

    async def test_active_filters_by_state_and_kind(self, ledger: Ledger) -> None:
        """active() lists only active infractions of the requested kind."""
        mute = await add(ledger, kind="mute", state="active")
        await add(ledger, kind="ban", state="active")
        await add(ledger, kind="mute", state="pending")
        assert [i.id for i in await ledger.active(ALICE, "mute")] == [mute.id]


async def schedule_mute(ledger: Ledger, expires_at: int = 1000) -> Infraction:
    """An active temporary mute whose lift is scheduled at ``expires_at``."""
    infraction = await add(ledger, kind="mute")
    return await ledger.update_infraction(
        infraction.id, state="active", actor="abusebot", expires_at=expires_at, schedule_lift=True
    )


class TestJobs:
    async def test_lift_is_due_at_expiry(self, ledger: Ledger) -> None:
        """A scheduled lift is returned by due_jobs at its expiry time, with no attempts yet."""
        infraction = await schedule_mute(ledger)
        assert [(j.infraction_id, j.due_at, j.attempts) for j in await ledger.due_jobs(at=1000)] == [
            (infraction.id, 1000, 0)
        ]

    async def test_lift_is_not_due_before_expiry(self, ledger: Ledger) -> None:
        """due_jobs does not return a lift before its time."""
        await schedule_mute(ledger)
        assert await ledger.due_jobs(at=999) == []

    async def test_retry_job_moves_next_attempt(self, ledger: Ledger) -> None:
        """retry_job counts the attempt, records the alert and postpones the job."""
        await schedule_mute(ledger)
        [job] = await ledger.due_jobs(at=1000)
        await ledger.retry_job(job.id, next_attempt_at=5000, error="502 Bad Gateway", alerted=True)
        assert (
            await ledger.due_jobs(at=4999),
            [(j.attempts, j.alerted, j.next_attempt_at) for j in await ledger.due_jobs(at=5000)],
        ) == ([], [(1, True, 5000)])

    async def test_finish_job_removes_it(self, ledger: Ledger) -> None:
        """A finished lift is never due again and no next job time remains."""
        await schedule_mute(ledger)
        [job] = await ledger.due_jobs(at=1000)
        await ledger.finish_job(job.id)
        assert (await ledger.due_jobs(at=10**15), await ledger.next_job_time()) == ([], None)

    async def test_next_job_time_is_earliest_pending(self, ledger: Ledger) -> None:
        """next_job_time is the earliest pending lift's time."""
        await schedule_mute(ledger, expires_at=3000)
        await schedule_mute(ledger, expires_at=2000)
        assert await ledger.next_job_time() == 2000

    async def test_no_lift_scheduled_for_permanent(self, ledger: Ledger) -> None:
        """A permanent infraction (no expiry) gets no lift job even when asked."""
        infraction = await add(ledger)
        await ledger.update_infraction(infraction.id, state="active", actor="abusebot", schedule_lift=True)
        assert await ledger.next_job_time() is None

    async def test_scheduling_twice_keeps_one_pending_job(self, ledger: Ledger) -> None:
        """Scheduling a lift again for the same infraction does not create a second pending job."""
        infraction = await schedule_mute(ledger)
        await ledger.update_infraction(
            infraction.id, state="active", actor="abusebot", expires_at=1000, schedule_lift=True
        )
        assert len(await ledger.due_jobs(at=1000)) == 1

    async def test_unique_index_refuses_second_pending_lift(self, ledger: Ledger, raw_db: sqlite3.Connection) -> None:
        """The partial unique index itself refuses two pending lift jobs for one infraction."""
        infraction = await add(ledger, kind="mute")
        insert = (
            "INSERT INTO jobs (infraction_id, kind, key, due_at, next_attempt_at, state) VALUES (?, 'lift', ?, 1, 1, ?)"
        )
        raw_db.execute(insert, (infraction.id, str(infraction.id), "pending"))
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            raw_db.execute(insert, (infraction.id, str(infraction.id), "pending"))

    async def test_unique_index_allows_finished_lifts(self, ledger: Ledger, raw_db: sqlite3.Connection) -> None:
        """Done or cancelled lifts do not block a new pending one (the index is partial)."""
        infraction = await add(ledger, kind="mute")
        insert = (
            "INSERT INTO jobs (infraction_id, kind, key, due_at, next_attempt_at, state) VALUES (?, 'lift', ?, 1, 1, ?)"
        )
        for state in ("done", "cancelled", "done", "pending"):
            raw_db.execute(insert, (infraction.id, str(infraction.id), state))
        assert len(await ledger.due_jobs(at=1)) == 1

    async def test_cancel_jobs(self, ledger: Ledger) -> None:
        """cancel_jobs removes the pending lift (e.g. when a mute is lifted early)."""
        infraction = await schedule_mute(ledger)
        await ledger.update_infraction(infraction.id, state="lifted", actor=MOD, cancel_jobs=True)
        assert await ledger.due_jobs(at=1000) == []


class TestCheckpoint:
    async def test_commit_checkpoint_stores_token_and_keys(self, ledger: Ledger) -> None:
        """commit_checkpoint stores the sync token and marks every processed key."""
        await ledger.commit_checkpoint("s123", [("$a", "ban"), ("$b", "command")])
        assert (
            await ledger.get_kv("sync_token"),
            await ledger.is_processed("$a", "ban"),
            await ledger.is_processed("$b", "command"),
            await ledger.is_processed("$a", "command"),
        ) == ("s123", True, True, False)

    async def test_commit_checkpoint_is_atomic(self, ledger: Ledger) -> None:
        """When the token cannot be stored, the batch's processed keys are rolled back with it."""
        await ledger.commit_checkpoint("s1", [("$a", "ban")])
        with pytest.raises(sqlite3.Error):
            await ledger.commit_checkpoint(["not", "bindable"], [("$b", "ban")])  # type: ignore[arg-type]
        assert (await ledger.get_kv("sync_token"), await ledger.is_processed("$b", "ban")) == ("s1", False)

    async def test_mark_processed_claims_once(self, ledger: Ledger) -> None:
        """mark_processed returns True the first time and False on replay."""
        assert [await ledger.mark_processed("$e", "ban") for _ in range(2)] == [True, False]

    async def test_dm_rooms_round_trip(self, ledger: Ledger) -> None:
        """set_dm_room/dm_room store a user's DM room (the typed table that replaced a kv blob);
        an unknown user has none."""
        await ledger.set_dm_room(ALICE, "!dm")
        assert (await ledger.dm_room(ALICE), await ledger.dm_room("@absent:x")) == ("!dm", None)


CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from abusebot.ledger import Ledger

    async def main():
        ledger = await Ledger.open(sys.argv[1])
        infraction = await ledger.add_infraction(
            subject="@alice:example.org", kind="ban", scope="*", reason="spam", actor="@mod:example.org",
            origin="command",
        )
        await ledger.commit_checkpoint("s42", [("$e", "ban")])
        print(infraction.id, flush=True)
        if sys.argv[2] == "exit":
            os._exit(0)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


class TestDurability:
    @pytest.mark.parametrize("how", ["exit", "sigkill"])
    async def test_committed_data_survives_a_crash(self, path: Path, how: str) -> None:
        """An infraction and checkpoint committed before the process dies without close() are there on reopen."""
        result = subprocess.run(
            [sys.executable, "-c", CRASH_SCRIPT, str(path), how],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == (0 if how == "exit" else -9), result.stderr
        ledger = await Ledger.open(path)
        try:
            infraction = await ledger.get_infraction(int(result.stdout))
            assert (
                infraction is not None and infraction.subject,
                await ledger.get_kv("sync_token"),
                await ledger.is_processed("$e", "ban"),
            ) == (ALICE, "s42", True)
        finally:
            await ledger.close()


async def test_a_length_given_runs_from_the_time_of_recording(ledger: Ledger) -> None:
    """``lasts_ms``: the sanction ends exactly that long after it was recorded (a ban "for 1w"
    reads "for 1w", however long the write waited), not after a clock read earlier."""
    week = 7 * 86_400_000
    inf = await ledger.add_infraction(
        subject="@u:x", kind="ban", scope="*", reason="r", actor="@m:x", origin="command", lasts_ms=week
    )
    assert inf.expires_at is not None
    assert inf.expires_at - inf.created_at == week


async def test_a_table_rebuild_that_would_orphan_rows_is_rolled_back(ledger: Ledger) -> None:
    """A feature migration that rebuilds a table runs with foreign keys off and is checked
    before its commit: one that leaves a child row without its parent changes nothing."""
    parent = "CREATE TABLE p (id INTEGER PRIMARY KEY);\nCREATE TABLE c (p_id INTEGER NOT NULL REFERENCES p (id));"
    await ledger.migrate_feature("demo", (parent,))
    async with ledger.transaction() as db:
        await db.execute("INSERT INTO p (id) VALUES (1)")
        await db.execute("INSERT INTO c (p_id) VALUES (1)")
    broken = "PRAGMA foreign_keys = OFF;\nCREATE TABLE p2 (id INTEGER PRIMARY KEY);"
    broken += "\nDROP TABLE p;\nALTER TABLE p2 RENAME TO p;"
    with pytest.raises(LedgerError, match="broke foreign keys"):
        await ledger.migrate_feature("demo", (parent, broken))
    assert await ledger.fetch("SELECT id FROM p") == [(1,)]
    assert await ledger.fetch("SELECT version FROM feature_migrations WHERE feature = 'demo'") == [(1,)]
    assert await ledger.fetch("PRAGMA foreign_keys") == [(1,)]
    kept = "PRAGMA foreign_keys = OFF;\nCREATE TABLE p2 (id INTEGER PRIMARY KEY);\nINSERT INTO p2 SELECT id FROM p;"
    kept += "\nDROP TABLE p;\nALTER TABLE p2 RENAME TO p;"
    await ledger.migrate_feature("demo", (parent, kept))
    assert await ledger.fetch("PRAGMA foreign_key_check") == []
