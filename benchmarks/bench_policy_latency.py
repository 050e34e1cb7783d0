"""Policy-rule latency: from a list owner writing a ban rule to the ban reaching another client's /sync.

Run by hand (not a test)::

    cd /work/main && /work/venv/bin/python -m benchmarks.bench_policy_latency [--trials 30] [--members N] [--profile]

It starts its own Synapse (``abusebot.testing.synapse``) on 127.0.0.1, builds a
:class:`~abusebot.testing.world.World` with one protected room. Its moderator is the *list
owner*: they create a policy list room (MSC3784 room type) that the bot watches (``policy_lists:
{watch: [list]}``). An *observer* is a member of the protected room whose own ``/sync`` long-poll
loop timestamps every event as it arrives (``time.perf_counter()``). Each trial times, from just
before the list owner's request:

(a) baseline: a plain message from the list owner in the protected room, until the observer's
    ``/sync`` delivers it (one trip through the homeserver);
(b) the list owner's ``PUT /state/m.policy.rule.user/rule:<target>`` with ``{"entity": <target>,
    "recommendation": "m.ban", "reason": "bench"}`` in the list room, until the observer's ``/sync``
    delivers the target's ``m.room.member`` ban in the protected room (the bot's sync, the rule's
    parsing, safety check and indexing, matching the members, the ledger writes, the ban request,
    and the observer's sync).

(a) and (b) alternate. Each rule names a fresh target, registered and joined before timing
starts (the bot has seen every join). ``--members N`` joins N more users to the protected room
first, to show how the cost of applying a rule grows with the room. ``--rules N`` has the list
hold N rules already when the bot loads it (served to the bot's ``room_state`` read only). ``--profile`` wraps more of
the bot's methods *in this process* (no change to the package) and prints where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from abusebot import logs
from abusebot.matrix import API, Homeserver, iter_json_array
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World, body_contains
from policies.lists import POLICY_ROOM_TYPE

try:
    from benchmarks.bench_ban_latency import SETTLE_S, Observer, Profiler, Span, breakdown, percentile
    from benchmarks.bench_scale import rule_events
except ImportError:  # run as a script: ``python benchmarks/bench_policy_latency.py``
    from bench_ban_latency import SETTLE_S, Observer, Profiler, Span, breakdown, percentile  # type: ignore[no-redef]
    from bench_scale import rule_events  # type: ignore[no-redef]

RULE_TYPE = "m.policy.rule.user"
#: The issue's figures for other bots (one loopback Synapse; not measured here).
OTHERS = "Mjolnir ≈ 330 ms, Draupnir ≈ 140 ms"
#: The target: a rule's ban reaches clients within this many plain trips (the floor is about 2).
TARGET_RATIO = 2.5


class PolicyProfiler(Profiler):
    """The ban benchmark's profiler, with the policy manager's steps (sync ones too)."""

    def wrap_sync(self, cls: type, method: str, name: str) -> None:
        """Time a plain (non-async) method."""
        original = getattr(cls, method)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans.append((name, start, time.perf_counter()))

        self._undo.append((cls, method, original))
        setattr(cls, method, timed)

    def install_light(self) -> None:
        """Always on: the bot's own time from the rule event to the ban request, and the ban request."""
        from abusebot.matrix import Api
        from policies.lists import PolicyManager

        self.wrap(PolicyManager, "on_rule_event", lambda *a, **k: "policies.on_rule_event")
        self.wrap(Api, "ban", lambda *a, **k: "api.ban")

    def install(self) -> None:
        """``--profile``: the steps from the bot's sync to the summary post."""
        from abusebot.actions import Moderation
        from abusebot.bot import Bot
        from abusebot.ledger import Ledger
        from policies.lists import PolicyManager

        self.wrap(Bot, "handle_sync", lambda *a, **k: "bot.handle_sync")
        self.wrap(Bot, "dispatch", lambda *a, **k: "bot.dispatch")
        self.wrap_bot_requests()
        for method in ("add_infraction", "update_infraction", "active", "audit"):
            self.wrap(Ledger, method, lambda *a, _m=method, **k: f"ledger.{_m}")
        self.wrap(Ledger, "commit_checkpoint", lambda *a, **k: "ledger.commit_checkpoint")
        self.wrap(Moderation, "ban", lambda *a, **k: "moderation.ban")
        self.wrap(Moderation, "post", lambda *a, **k: "moderation.post")
        self.wrap(PolicyManager, "_apply_rule", lambda *a, **k: "policies._apply_rule")
        self.wrap_sync(PolicyManager, "safety", "policies.safety() (staff, admins)")
        self.wrap_sync(PolicyManager, "_add", "policies._add (safety check + index)")
        self.wrap_sync(PolicyManager, "_members", "policies._members()")


def steps(spans: list[Span], t0: float, put_done: float, seen: float) -> dict[str, tuple[float, float]]:
    """The first span of each name in one trial, as (start, end) in seconds after the PUT began."""
    points: dict[str, tuple[float, float]] = {"list owner's PUT /state of the rule": (0.0, put_done - t0)}
    for name, start, end in sorted(spans, key=lambda span: span[1]):
        points.setdefault(name, (start - t0, end - t0))
    points["observer's /sync delivers the ban"] = (seen - t0, seen - t0)
    return points


#: The legs of each trial, in order; (a)'s two add up to (a), (b)'s five to (b).
LEGS = (
    "(a) list owner's PUT /send, until answered",
    "(a) … answered → observer's /sync delivers the message",
    "(b) list owner's PUT /state of the rule, until answered",
    "(b) … answered → the bot's /sync hands the rule to the policy manager",
    "(b) … the bot: parse, safety, index, match, ledger → ban queued",
    "(b) … bot's POST /ban, queued → answered",
    "(b) … answered → observer's /sync delivers the ban",
)


@attrs.frozen
class Result:
    """One run's measurements (seconds)."""

    plain: list[float]
    rules: list[float]
    legs: dict[str, list[float]]
    steps: list[dict[str, tuple[float, float]]]
    members: int


async def create_list(owner: Person, bot_id: str) -> str:
    """A policy list room owned by ``owner`` (the creator: unlimited power in v12); the bot is invited."""
    reply = await owner.call(
        "POST",
        f"{API}/createRoom",
        {
            "preset": "private_chat",
            "name": "Benchmark ban list",
            "invite": [bot_id],
            "creation_content": {"type": POLICY_ROOM_TYPE},
        },
    )
    return str(reply["room_id"])


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` every 50 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def run(
    synapse: SynapseServer,
    base: Path,
    *,
    trials: int,
    warmup: int,
    members: int,
    profiler: PolicyProfiler,
    rules: int = 0,
) -> Result:
    """Plain-message and rule-to-ban latencies (seconds)."""
    world = await World.create(synapse, base, members=())
    observer: Observer | None = None
    try:
        room = world.protected[0]
        bot_id = world.bot_account.user_id
        # The list owner is the world's moderator: the creator of the list room (and of the protected
        # room, so the protections leave their plain messages alone, as for any moderator).
        owner = world.mod
        list_room = await create_list(owner, bot_id)
        watcher = world.person("observer")
        await watcher.join(room)
        crowd: list[Person] = []
        for number in range(members):
            member = world.person(f"member{number}")
            await member.join(room)
            crowd.append(member)
            if (number + 1) % 50 == 0:
                print(f"  {number + 1}/{members} extra members joined", flush=True)
        targets: list[Person] = []
        for number in range(trials + warmup):
            target = world.person(f"target{number}")
            await target.join(room)
            targets.append(target)
        world.write_config({"policy_lists": {"watch": [list_room]}})
        profiler.bot_user_id = bot_id
        real_state = Homeserver.room_state_stream
        if rules:
            # The list already holds ``rules`` rules when the bot loads it (served to the bot only;
            # writing thousands of state events through Synapse takes a long time).
            loaded = json.dumps(rule_events(rules)).encode()

            async def room_state(self: Homeserver, room_id: str) -> Iterator[Any]:
                state = await real_state(self, room_id)
                return itertools.chain(state, iter_json_array(loaded)) if room_id == list_room else state

            Homeserver.room_state_stream = room_state  # type: ignore[method-assign]
        try:
            bot = await world.start_bot()
        finally:
            Homeserver.room_state_stream = real_state  # type: ignore[method-assign]
        if rules:
            print(f"  the list holds {len(bot.policies.index):,} rules", flush=True)
        if not bot.policies.is_list_room(list_room):
            raise RuntimeError("the bot does not watch the list room")
        await world.mod.start_watching()
        observer = Observer(watcher, room)
        await observer.start()
        # The bot must know every member as joined before the first timer starts.
        everyone = [watcher, *crowd, *targets]
        await wait_until(
            lambda: all(bot.store.room(room).membership(p.user_id) == "join" for p in everyone),
            "the bot did not learn the joins",
        )
        room_size = len(bot.store.room(room).members())

        plain: list[float] = []
        rules: list[float] = []
        send_put: list[float] = []
        windows: list[tuple[float, float, float]] = []  # (t0, PUT answered, ban seen) of each counted trial
        for number, target in enumerate(targets):
            counted = number >= warmup
            # (a) baseline: one trip through the homeserver, by the same user.
            await asyncio.sleep(SETTLE_S)
            await observer.parked()
            t0 = time.perf_counter()
            event_id = await owner.say(room, f"plain message {number}")
            send_s = time.perf_counter() - t0
            plain_s = await observer.event(event_id) - t0
            # (b) the rule, written by the list owner in the list room.
            await asyncio.sleep(SETTLE_S)
            await observer.parked()
            t0 = time.perf_counter()
            await owner.put_state(
                list_room,
                RULE_TYPE,
                {"entity": target.user_id, "recommendation": "m.ban", "reason": "bench"},
                state_key=f"rule:{target.user_id}",
            )
            put_done = time.perf_counter()
            seen = await observer.member(target.user_id, "ban")
            # The bot's summary line: it has finished with this rule (and it was the bot that banned).
            await world.mod.wait_for(world.management, body_contains(target.user_id, "banned 1 member"), timeout=30)
            if counted:
                plain.append(plain_s)
                rules.append(seen - t0)
                send_put.append(send_s)
                windows.append((t0, put_done, seen))
        await asyncio.sleep(SETTLE_S)  # spans are recorded when they end; let the last batch finish
        legs: dict[str, list[float]] = {name: [] for name in LEGS}
        a_send, a_deliver, b_put, b_wake, b_inside, b_ban, b_deliver = legs.values()
        for put_s, plain_s in zip(send_put, plain, strict=True):
            a_send.append(put_s)
            a_deliver.append(plain_s - put_s)
        profiles: list[dict[str, tuple[float, float]]] = []
        for t0, put_done, seen in windows:
            points = steps(profiler.window(t0, seen), t0, put_done, seen)
            profiles.append(points)
            if "policies.on_rule_event" not in points or "api.ban" not in points:
                continue  # not seen by the wrappers (should not happen)
            rule_in, (ban_start, ban_end) = points["policies.on_rule_event"][0], points["api.ban"]
            b_put.append(put_done - t0)
            b_wake.append(rule_in - (put_done - t0))
            b_inside.append(ban_start - rule_in)
            b_ban.append(ban_end - ban_start)
            b_deliver.append(seen - t0 - ban_end)
        profiler.spans.clear()
        return Result(plain, rules, legs, profiles, room_size)
    finally:
        if observer is not None:
            await observer.stop()
        await world.close()


def report(result: Result, *, detailed: bool) -> list[str]:
    """The table, the ratios and the verdict."""

    def row(name: str, values: list[float]) -> str:
        if not values:
            return f"  {name:72} (no data)"
        return (
            f"  {name:72} {percentile(values, 50) * 1000:9.1f} ms {percentile(values, 90) * 1000:9.1f} ms"
            f" {statistics.fmean(values) * 1000:9.1f} ms"
        )

    plain, rules = result.plain, result.rules
    p50 = percentile(rules, 50) / percentile(plain, 50)
    p90 = percentile(rules, 90) / percentile(plain, 90)
    lines = [
        f"{len(rules)} trials, protected room of {result.members} members",
        f"  {'':72} {'p50':>12} {'p90':>12} {'mean':>12}",
        row("(a) plain message → observer /sync", plain),
        row("(b) PUT m.policy.rule.user → observer sees the ban", rules),
        f"  {'ratio rule / plain':72} {p50:10.2f} × {p90:10.2f} ×",
        f"  target ≤ {TARGET_RATIO} × at p50 (floor ≈ 2 ×: two trips): {'met' if p50 <= TARGET_RATIO else 'NOT met'}",
        f"  for comparison (the issue, not measured here): {OTHERS}",
        "  the legs of each (medians do not add up exactly; means do):",
        *(row(f"  {name}", result.legs[name]) for name in LEGS),
    ]
    if detailed and result.steps:
        lines.append("  where a rule's time goes (median ms after the list owner starts the PUT):")
        lines.extend(breakdown(result.steps))
    return lines


async def main(args: argparse.Namespace) -> None:
    logs.configure("console", "error")
    profiler = PolicyProfiler()
    with tempfile.TemporaryDirectory(prefix="abusebot-bench-policy-") as tmp:
        synapse = SynapseServer(base_dir=Path(tmp) / "synapse")
        started = time.perf_counter()
        synapse.start()
        try:
            import synapse as synapse_package

            print(
                f"Policy-rule latency benchmark — Synapse {synapse_package.__version__} (SQLite) on 127.0.0.1, "
                f"Python {sys.version.split()[0]}; Synapse started in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            profiler.install_light()
            if args.profile:
                profiler.install()
            print(
                f"\nrunning: {args.trials} trials + {args.warmup} warm-up, {args.members} extra member(s) …",
                flush=True,
            )
            result = await run(
                synapse,
                Path(tmp) / "world",
                trials=args.trials,
                warmup=args.warmup,
                members=args.members,
                profiler=profiler,
                rules=args.rules,
            )
            print("\n".join(report(result, detailed=args.profile)), flush=True)
        finally:
            profiler.uninstall()
            synapse.stop()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30, help="timed trials (default 30)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed trials first (default 1)")
    parser.add_argument("--members", type=int, default=0, help="extra members joined to the protected room first")
    parser.add_argument("--profile", action="store_true", help="time the bot's steps (in-process wrappers)")
    parser.add_argument("--rules", type=int, default=0, help="rules the watched list already holds (e.g. 5000)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
