"""The yearly transparency report over a large ledger: 1,000,000 infractions and 100,000 cases
(the issue's target: at most 2 s), against a plain full scan of the infractions measured in the
same run (``SELECT COUNT(*)``, the least any report over them can cost).

Run by hand (not a test)::

    .venv/bin/python -m benchmarks.bench_report [--infractions 1000000] [--cases 100000]

It builds the ledger once in a temporary directory (the real schema: the ledger's migrations and
the features' own), spread over two years so the previous year (for the change) is read too,
then times ``collect`` (the SQL) and ``render`` (Markdown, HTML with its charts, JSON), medians
of 3 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from abusebot.cases import MIGRATIONS as CASES
from abusebot.features.second_chance import MIGRATIONS as SECOND_CHANCES
from abusebot.features.suggestions import MIGRATIONS as SUGGESTIONS
from abusebot.features.transparency import MIGRATIONS as TRANSPARENCY
from abusebot.features.votes import MIGRATIONS as VOTES
from abusebot.ledger import Ledger
from abusebot.transparency import Labels, collect, parse_period, render

YEAR_MS = 365 * 86_400_000
START_2025 = 1735689600000


async def build(path: Path, infractions: int, cases: int) -> None:
    ledger = await Ledger.open(path)
    for name, scripts in (
        ("cases", CASES),
        ("votes", VOTES),
        ("second_chance", SECOND_CHANCES),
        ("suggestions", SUGGESTIONS),
        ("transparency", TRANSPARENCY),
    ):
        await ledger.migrate_feature(name, scripts)
    await ledger.close()
    db = sqlite3.connect(path)
    rng = random.Random(1)
    rooms = [f"!room{i}:example.org" for i in range(40)]
    db.executemany(
        "INSERT INTO transparency_rooms (room_id, label, role) VALUES (?, ?, 'protected')",
        [(room, f"Room {i}") for i, room in enumerate(rooms)],
    )
    kinds = ["warning", "mute", "kick", "ban", "note"]
    origins = ["command", "protection", "policy_list"]
    rules = ["spam: invite link", "flood: more than 3 messages in 30s", "spam: banned phrase", None]
    step = 100_000
    started = time.perf_counter()
    for offset in range(0, infractions, step):
        batch = []
        for i in range(offset, min(infractions, offset + step)):
            at = START_2025 + rng.randrange(2 * YEAR_MS)
            kind = kinds[i % 5]
            room = rooms[i % 40] if i % 7 else "*"
            batch.append(
                (
                    f"@user{i % 50_000}:example.org",
                    kind,
                    room,
                    "spamming",
                    rules[i % 4],
                    "@mod:example.org",
                    origins[i % 3],
                    at,
                    None if i % 2 else at + 3_600_000,
                    "active",
                    "{}",
                    None,
                    f"$e{i}",
                    at,
                    room if i % 3 else "!management:example.org",
                )
            )
        db.executemany(
            "INSERT INTO infractions (subject, kind, scope, reason, rule, actor, origin, created_at, expires_at, state,"
            " undo, level, source_event, updated_at, source_room) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            batch,
        )
        db.commit()
        print(f"  built {min(infractions, offset + step):,} infractions ({time.perf_counter() - started:.0f} s)")
    channels = [
        ("modmail", "modmail"),
        ("report", "report"),
        ("mention", "mention"),
        ("report", "homeserver"),
        ("appeal", "modmail"),
    ]
    batch = []
    for i in range(cases):
        kind, channel = channels[i % 5]
        at = START_2025 + rng.randrange(2 * YEAR_MS)
        closed = i % 4 != 0
        batch.append(
            (
                kind,
                channel,
                f"@user{i % 50_000}:example.org",
                at,
                "closed" if closed else "open",
                ("no-action" if i % 3 else "actioned")
                if closed and kind != "appeal"
                else ("upheld" if closed else None),
                at + 60_000 if closed else None,
                f"$c{i}",
            )
        )
    db.executemany(
        "INSERT INTO cases (kind, channel, opener, opened_at, state, outcome, closed_at, source_key)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )
    db.executemany(
        "INSERT INTO case_people (case_id, user_id, role, added_by, at) VALUES (?, ?, 'named', 'x', 0)",
        [(i + 1, f"@user{(i * 7) % 50_000}:example.org") for i in range(cases) if i % 5 in (1, 3)],
    )
    db.commit()
    db.close()
    print(f"  built {cases:,} cases ({time.perf_counter() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--infractions", type=int, default=1_000_000)
    parser.add_argument("--cases", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        path = Path(tmp) / "ledger.sqlite3"
        print(f"building a ledger of {args.infractions:,} infractions and {args.cases:,} cases…")
        asyncio.run(build(path, args.infractions, args.cases))
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        labels = Labels(
            rooms={str(r): str(label) for r, label in db.execute("SELECT room_id, label FROM transparency_rooms")}
        )
        period = parse_period("2026")
        scans, collects, renders = [], [], []
        for _ in range(3):
            t = time.perf_counter()
            db.execute("SELECT COUNT(*) FROM infractions WHERE state <> 'x'").fetchone()
            scans.append(time.perf_counter() - t)
            t = time.perf_counter()
            stats = collect(path, period, labels, 3)
            collects.append(time.perf_counter() - t)
            t = time.perf_counter()
            for fmt in ("md", "html", "json"):
                render(stats, fmt)
            renders.append(time.perf_counter() - t)
        db.close()
    scan, took, drawn = (statistics.median(v) for v in (scans, collects, renders))
    print(f"full scan of the infractions (baseline)  {scan * 1000:8.0f} ms")
    print(f"yearly report: collect (2026 and 2025)  {took * 1000:8.0f} ms   ratio {took / scan:.2f}x")
    print(f"yearly report: render md + html + json  {drawn * 1000:8.0f} ms")
    print(f"yearly report in all: {took + drawn:.2f} s (target: at most 2 s)")


if __name__ == "__main__":
    main()
