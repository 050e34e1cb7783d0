"""Ledger benchmark: durable insert rate, and history lookups on a million-row ledger.

Run by hand (not a test)::

    cd /work/main && /work/venv/bin/python -m benchmarks.bench_ledger [--inserts 5000] [--rows 1000000]

Every figure is printed next to a baseline measured in the same run, on the same disk:

(a) ``Ledger.add_infraction`` (the real API: one ``BEGIN IMMEDIATE … COMMIT`` per call with its
    audit row, WAL + ``synchronous=FULL``) against (b) a raw ``sqlite3`` ``executemany`` bulk
    insert into the same schema in one transaction. A third line, raw ``sqlite3`` with one
    transaction per row and the same pragmas, shows how much of the gap is the per-commit fsync.
(c) The infractions table is filled to ``--rows`` rows over ``--subjects`` subjects with a bulk
    ``sqlite3`` insert (the triggers allow INSERT), then ``Ledger.history(subject)`` is timed for
    random subjects, interleaved with a trivial ``SELECT 1`` through aiosqlite (the thread-hop
    floor every ledger read pays).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiosqlite

from abusebot.ledger import KINDS, Ledger

try:
    from benchmarks._stats import percentile
except ImportError:  # run as a script: python benchmarks/<name>.py
    from _stats import percentile  # type: ignore[no-redef]

INSERT_SQL = (
    "INSERT INTO infractions (subject, kind, scope, reason, rule, actor, origin, created_at,"
    " expires_at, state, undo, level, source_event, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
FILL_STATES = ("active", "expired", "lifted", "pardoned", "active", "active")
REASONS = ("spam links", "harassment", "flooding the room", "no reason given", "ban evasion (alt account)")


def file_size(path: Path) -> str:
    """Size of a SQLite file and its WAL, human-readable."""
    main = path.stat().st_size if path.exists() else 0
    wal_path = path.with_name(path.name + "-wal")
    wal = wal_path.stat().st_size if wal_path.exists() else 0
    return f"{main / 1e6:.1f} MB (+ WAL {wal / 1e6:.1f} MB)"


def subject_name(number: int) -> str:
    return f"@user{number:06d}:example.org"


def row(number: int, subject: str, at: int) -> tuple[object, ...]:
    """One plausible infraction row for the bulk inserts."""
    kind = KINDS[number % len(KINDS)]
    return (
        subject,
        kind,
        "*" if number % 3 else "!room:example.org",
        REASONS[number % len(REASONS)],
        None,
        "@mod:example.org",
        "command" if number % 2 else "protection",
        at,
        at + 3_600_000 if kind in ("mute", "ban") and number % 4 == 0 else None,
        FILL_STATES[number % len(FILL_STATES)],
        "{}",
        None,
        f"$event{number}",
        at,
    )


async def create_schema(path: Path) -> None:
    """A fresh ledger file with the real schema (migrations applied by ``Ledger.open``)."""
    ledger = await Ledger.open(path)
    await ledger.close()


def raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


# -- (a) and (b): insert rates -------------------------------------------------------------------


async def bench_add_infraction(path: Path, count: int) -> tuple[float, list[float]]:
    """Seconds for ``count`` calls of ``Ledger.add_infraction``, and each call's latency."""
    ledger = await Ledger.open(path)
    try:
        for number in range(20):  # warm-up: first statements compile and allocate pages
            await ledger.add_infraction(
                subject=subject_name(number), kind="note", scope="*", reason="warm-up", actor="@b:x", origin="system"
            )
        latencies: list[float] = []
        started = time.perf_counter()
        for number in range(count):
            t = time.perf_counter()
            await ledger.add_infraction(
                subject=subject_name(number % 1000),
                kind=KINDS[number % len(KINDS)],
                scope="*",
                reason=REASONS[number % len(REASONS)],
                actor="@mod:example.org",
                origin="command",
                state="pending",
                source_event=f"$bench{number}",
            )
            latencies.append(time.perf_counter() - t)
        return time.perf_counter() - started, latencies
    finally:
        await ledger.close()


def bench_bulk(path: Path, count: int) -> float:
    """Seconds for one ``executemany`` of ``count`` rows in one transaction (same pragmas)."""
    rows = [row(number, subject_name(number % 1000), 1_700_000_000_000 + number) for number in range(count)]
    db = raw_connection(path, "FULL")
    try:
        started = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(INSERT_SQL, rows)
        db.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        db.close()


def bench_raw_per_row(path: Path, count: int) -> float:
    """Seconds for ``count`` single-row transactions through plain ``sqlite3`` (same pragmas)."""
    db = raw_connection(path, "FULL")
    try:
        started = time.perf_counter()
        for number in range(count):
            db.execute("BEGIN IMMEDIATE")
            db.execute(INSERT_SQL, row(number, subject_name(number % 1000), 1_700_000_000_000 + number))
            db.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        db.close()


# -- (c): history on a big ledger ----------------------------------------------------------------


def fill(path: Path, rows: int, subjects: int, seed: int) -> float:
    """Bulk-insert ``rows`` infractions spread over ``subjects`` users; seconds taken."""
    rng = random.Random(seed)
    base = 1_600_000_000_000
    chunk = 100_000

    def chunks() -> Iterator[list[tuple[object, ...]]]:
        for start in range(0, rows, chunk):
            yield [
                row(number, subject_name(rng.randrange(subjects)), base + number * 1000)
                for number in range(start, min(rows, start + chunk))
            ]

    db = raw_connection(path, "OFF")  # the fill is set-up, not the thing measured
    try:
        started = time.perf_counter()
        for batch in chunks():
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT_SQL, batch)
            db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("ANALYZE")
        return time.perf_counter() - started
    finally:
        db.close()


async def bench_history(path: Path, lookups: int, subjects: int, seed: int) -> tuple[list[float], list[float], int]:
    """Latencies of ``Ledger.history`` and of ``SELECT 1``, interleaved; total rows returned."""
    rng = random.Random(seed + 1)
    ledger = await Ledger.open(path)
    probe = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        for _ in range(50):  # warm-up: page cache, statement cache, thread start
            await ledger.history(subject_name(rng.randrange(subjects)))
            async with probe.execute("SELECT 1") as cur:
                await cur.fetchone()
        history: list[float] = []
        select1: list[float] = []
        returned = 0
        for _ in range(lookups):
            subject = subject_name(rng.randrange(subjects))
            t = time.perf_counter()
            async with probe.execute("SELECT 1") as cur:
                await cur.fetchone()
            select1.append(time.perf_counter() - t)
            t = time.perf_counter()
            found = await ledger.history(subject)
            history.append(time.perf_counter() - t)
            returned += len(found)
        return history, select1, returned
    finally:
        await probe.close()
        await ledger.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.3f} ms"


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="abusebot-bench-ledger-", dir=args.dir) as tmp:
        base = Path(tmp)
        print(
            f"Ledger benchmark — Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
            f"aiosqlite {aiosqlite.__version__}, temp dir {base} ({os.cpu_count()} CPUs)"
        )

        print(f"\n(a/b) Insert rate, {args.inserts:,} infractions, WAL + synchronous=FULL")
        api_path = base / "api.db"
        await create_schema(api_path)
        api_s, latencies = await bench_add_infraction(api_path, args.inserts)
        api_rate = args.inserts / api_s
        bulk_path = base / "bulk.db"
        await create_schema(bulk_path)
        bulk_s = bench_bulk(bulk_path, args.inserts)
        bulk_rate = args.inserts / bulk_s
        per_row_path = base / "per_row.db"
        await create_schema(per_row_path)
        per_row_s = bench_raw_per_row(per_row_path, args.inserts)
        per_row_rate = args.inserts / per_row_s
        print(
            f"  Ledger.add_infraction (1 txn each, + audit row)  {api_rate:10,.0f} /s"
            f"   p50 {ms(percentile(latencies, 50))}  p90 {ms(percentile(latencies, 90))}"
            f"  p99 {ms(percentile(latencies, 99))}"
        )
        print(f"  baseline: sqlite3 executemany, 1 txn            {bulk_rate:10,.0f} /s")
        print(f"  reference: sqlite3, 1 txn per row (no audit)     {per_row_rate:10,.0f} /s")
        print(f"  ratio bulk / add_infraction                      {bulk_rate / api_rate:10,.1f} ×")
        print(f"  ratio raw 1-txn-per-row / add_infraction         {per_row_rate / api_rate:10,.2f} ×")
        print(f"  file size after the API inserts: {file_size(api_path)}")

        print(f"\n(c) History lookups, {args.rows:,} infractions over {args.subjects:,} subjects")
        big = base / "big.db"
        await create_schema(big)
        fill_s = fill(big, args.rows, args.subjects, args.seed)
        print(f"  fill (sqlite3 executemany, synchronous=OFF)  {fill_s:8.1f} s  ({args.rows / fill_s:,.0f} rows/s)")
        print(f"  file size: {file_size(big)}")
        history, select1, returned = await bench_history(big, args.lookups, args.subjects, args.seed)
        print(f"  {args.lookups:,} random subjects, {returned / args.lookups:.1f} rows returned on average (limit 20)")
        print(f"  {'':40}      p50          p90         mean")
        for label, values in (("Ledger.history(subject)", history), ("baseline: SELECT 1 via aiosqlite", select1)):
            print(
                f"  {label:40} {ms(percentile(values, 50))} {ms(percentile(values, 90))} {ms(statistics.fmean(values))}"
            )
        print(
            f"  ratio history / SELECT 1                 "
            f" p50 {percentile(history, 50) / percentile(select1, 50):5.2f} ×"
            f"   p90 {percentile(history, 90) / percentile(select1, 90):5.2f} ×"
        )
        with sqlite3.connect(str(big)) as db:
            plan = db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM infractions WHERE subject = ? ORDER BY id DESC LIMIT 20", ("x",)
            ).fetchall()
        print("  query plan: " + "; ".join(str(step[-1]) for step in plan))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inserts", type=int, default=5000, help="Ledger.add_infraction calls to time (5000)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="infractions in the big ledger (1,000,000)")
    parser.add_argument("--subjects", type=int, default=100_000, help="distinct users in the big ledger (100,000)")
    parser.add_argument("--lookups", type=int, default=1000, help="history lookups to time (1000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--dir", default=None, help="where to put the temporary files (default: system temp)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
