"""The cost the cases feature adds to every message of every protected room: its cheap look
for ``!report``, the urgent words and the bot's name, before any parse. No homeserver.

Run by hand (not a test)::

    .venv/bin/python -m benchmarks.bench_cases_precheck [--events 100000]

It builds ``--events`` ordinary chat messages (3 to 40 words, none of them a report or a call),
parses them once, and times, alternately over ``--rounds`` rounds: (a) the baseline,
:func:`abusebot.events.parse_event` of the same raw events; (b) the feature's look
(``CasesFeature._may_concern_us``). Printed: µs per message of each (medians) and the ratio
(b)/(a).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import types

from abusebot.config import ReportsConfig
from abusebot.events import parse_event
from abusebot.features.cases import CasesFeature

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "python",
    "asyncio",
    "matrix",
    "hello",
    "world",
    "code",
    "review",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    raws = [
        {
            "event_id": f"$e{i}",
            "sender": f"@user{i % 500}:example.org",
            "type": "m.room.message",
            "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))},
        }
        for i in range(args.events)
    ]
    events = [parse_event(raw, "!room:example.org") for raw in raws]
    bot = types.SimpleNamespace(
        config=types.SimpleNamespace(reports=ReportsConfig()), hs=types.SimpleNamespace(user_id="@abusebot:example.org")
    )
    feature = CasesFeature.__new__(CasesFeature)  # only the look: no ledger, no homeserver
    feature.bot, feature.config, feature._needles = bot, bot.config, None
    baseline: list[float] = []
    look: list[float] = []
    flagged = 0
    for _ in range(args.rounds):
        started = time.perf_counter()
        for raw in raws:
            parse_event(raw, "!room:example.org")
        baseline.append(time.perf_counter() - started)
        started = time.perf_counter()
        flagged = sum(1 for event in events if event is not None and feature._may_concern_us(event))
        look.append(time.perf_counter() - started)
    per = 1e6 / args.events
    a, b = statistics.median(baseline) * per, statistics.median(look) * per
    print(f"parse_event (baseline)      {a:6.2f} µs per message")
    print(f"cases look before parsing   {b:6.2f} µs per message  ratio {b / a:.2f}×  ({flagged} looked at further)")


if __name__ == "__main__":
    main()
