"""What one new policy rule costs the bot, with a big list loaded: O(members matched), not O(rules).

Run by hand (not a test)::

    .venv/bin/python -m benchmarks.bench_rule_apply [--rules 100000] [--members 5000] [--trials 7]

In-process, no homeserver: a real :class:`~policies.lists.PolicyManager`, a real ledger (SQLite,
WAL, in a temporary directory) and :class:`~abusebot.testing.fakes.FakeHomeserver` for the writes.
``--rules`` rules (half exact user ids, half globs with distinct literals) are loaded into one
watched list, ``--members`` users join one protected room. Then, timed one by one:

* a new **exact** rule matching nobody, and one matching one member;
* a new **glob** rule matching ten members.

"Handled" is the time :meth:`PolicyManager.on_rule_event` holds the sync loop: parsing, safety,
indexing, finding the members it matches; their bans go to the executor off the loop (the
fan-out, timed separately until its summary line is posted). The **baseline**, measured in the
same run on the same index, is what the handling cost before: every member matched through a
one-rule index, and the automaton rebuilt (a new glob literal used to force that on the next
lookup). Targets (the issue): exact ≤ 5 ms, glob ≤ 50 ms of bot time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from abusebot.actions import Moderation
from abusebot.config import Config
from abusebot.ledger import Ledger
from abusebot.rooms import RoomStore
from abusebot.testing.fakes import FakeHomeserver
from policies.lists import ListOptions, PolicyManager
from policies.matcher import RuleIndex
from policies.rules import Rule, parse_rule

BOT = "@bot:example.org"
MOD = "@mod:example.org"
MANAGEMENT = "!management:example.org"
ROOM = "!room:example.org"
LIST = "!list:example.org"


def rule_event(state_key: str, entity: str) -> dict[str, Any]:
    """A raw ``m.policy.rule.user`` ban rule."""
    return {
        "type": "m.policy.rule.user",
        "state_key": state_key,
        "sender": "@owner:lists.example",
        "event_id": f"${state_key}",
        "content": {"entity": entity, "recommendation": "m.ban", "reason": "bench"},
    }


async def build(rules: int, members: int) -> tuple[PolicyManager, Ledger, FakeHomeserver]:
    """A policy manager with ``rules`` loaded and ``members`` in the protected room."""
    data = Path(tempfile.mkdtemp(prefix="bench-rule-"))
    config = Config(
        homeserver="http://127.0.0.1:9",
        user_id=BOT,
        data_dir=data,
        management_room=MANAGEMENT,
        protected_rooms=(ROOM,),
        password="unused",
    )
    ledger = await Ledger.open(data / "ledger.sqlite3")
    store = RoomStore()
    store.management_id = MANAGEMENT
    hs = FakeHomeserver(BOT)

    def state(room: str, event_type: str, content: dict[str, Any], key: str = "") -> None:
        hs.put(room, event_type, content, key)
        store.room(room).apply({"type": event_type, "state_key": key, "content": content, "sender": BOT})

    state(MANAGEMENT, "m.room.power_levels", {"users": {BOT: 100, MOD: 50}})
    for user in (BOT, MOD):
        state(MANAGEMENT, "m.room.member", {"membership": "join"}, user)
    state(ROOM, "m.room.power_levels", {"users": {BOT: 100}})
    state(ROOM, "m.room.member", {"membership": "join"}, BOT)
    for n in range(members):
        state(ROOM, "m.room.member", {"membership": "join"}, f"@member{n}:members.example")
    store.protect(ROOM)
    moderation = Moderation(config=config, ledger=ledger, api=hs, store=store, bot_user_id=BOT)
    manager = PolicyManager(config, store, moderation, ledger)
    manager.lists[LIST] = ListOptions()
    safety = manager.safety()
    for n in range(rules):
        entity = f"@spam{n}:spam.example" if n % 2 else f"@*glob{n}x*:spam{n % 97}.example"
        parsed = parse_rule(rule_event(f"rule{n}", entity), LIST)
        assert isinstance(parsed, Rule)
        manager._add(parsed, safety)
    manager.index.match("user", "@warm:up")  # the automaton is built, as after a start
    return manager, ledger, hs


async def handled_ms(manager: PolicyManager, state_key: str, entity: str) -> tuple[float, float]:
    """(ms the rule held the loop, ms until its fan-out finished)."""
    started = time.perf_counter()
    await manager.on_rule_event(rule_event(state_key, entity), LIST)
    handled = time.perf_counter() - started
    for task in list(manager._fan_outs.values()):
        await task
    return handled * 1000, (time.perf_counter() - started) * 1000


def baseline_ms(manager: PolicyManager, entity: str) -> float:
    """The old way, on the same index: match every member through a one-rule index, and pay the
    automaton rebuild a new glob literal forced."""
    started = time.perf_counter()
    kind = manager.index._kinds["user"]
    kind._rebuild()
    parsed = parse_rule(rule_event("baseline", entity), LIST)
    assert isinstance(parsed, Rule)
    single = RuleIndex()
    single.add(parsed)
    members = set()
    for room_id in manager.store.protected:
        for membership in ("join", "invite", "knock"):
            members.update(manager.store.room(room_id).members(membership))
    _ = sorted(user for user in members if single.match("user", user))
    return (time.perf_counter() - started) * 1000


async def main(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    started = time.perf_counter()
    manager, ledger, _ = await build(args.rules, args.members)
    print(f"{len(manager.index):,} rules loaded, {args.members:,} members, in {time.perf_counter() - started:.1f} s\n")
    cases = (
        ("exact, matches nobody", lambda n: f"@nobody{n}:else.example", 5.0),
        ("exact, matches one member", lambda n: f"@member{n}:members.example", 5.0),
        ("glob, matches ten members", lambda n: f"@member{n + 1}?:members.example", 50.0),
    )
    for name, entity, target in cases:
        handled, total, base = [], [], []
        for trial in range(args.trials):
            h, t = await handled_ms(manager, f"{name[:5]}{trial}", entity(trial + 1))
            handled.append(h)
            total.append(t)
            base.append(baseline_ms(manager, entity(trial + 1)))
        h, t, b = statistics.median(handled), statistics.median(total), statistics.median(base)
        verdict = "met" if h <= target else "NOT met"
        print(
            f"{name:<28} handled {h:7.2f} ms (target ≤ {target:g}: {verdict}); with its bans {t:7.2f} ms;"
            f" baseline {b:7.2f} ms ({b / h:,.0f}x the new cost)"
        )
    await ledger.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=5_000)
    parser.add_argument("--trials", type=int, default=7)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
