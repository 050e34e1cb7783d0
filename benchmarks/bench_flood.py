"""Flood containment: how many messages of a flood get through before the sanction, and how many
stay visible.

Run by hand (not a test)::

    .venv/bin/python -m benchmarks.bench_flood [--trials 8]

It starts its own Synapse on 127.0.0.1 and runs the bot in this process with the flood limit at
10 messages / 60 s and the ladder ``["ban"]``, so every flood ends in a ban. Two scenarios:

(A) one flooder, one room, sending as fast as the homeserver accepts (one request at a time)
    until it refuses them: *through* = messages accepted. The target is limit + 1 (the 11th
    message is the violation; nothing after it should land).
(B) three flooders in two rooms at once (six senders): messages accepted, and messages still
    not redacted once the bot has settled (target 0).

Baseline, in the same run on the same Synapse: the same scenarios with the flood handled like a
single spam message (``sweep_s = 0``: redactions first at the ban's priority, no sweep of the
burst's rest) — the order the bot used before. Ratios are new / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from abusebot import logs
from abusebot.matrix import MatrixError
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World

LIMIT = 10
CONFIG = {
    "protections": {
        "flood": {"max_messages": LIMIT, "per_seconds": 60, "cross_room_max_messages": 10_000},
        "escalation": {"ladder": ["ban"]},
    },
    "notify_users": True,
}
MAX_SENDS = 300


async def flood(person: Person, room_id: str, sent: list[str]) -> None:
    """Send until refused (banned) or ``MAX_SENDS``."""
    for n in range(MAX_SENDS):
        try:
            sent.append(await person.say(room_id, f"flood {n}"))
        except MatrixError:
            return


def redacted(world: World) -> set[str]:
    ids: set[str] = set()
    for events in world.mod.seen.values():
        for event in events:
            if event.get("type") == "m.room.redaction":
                ids.add(event.get("redacts") or (event.get("content") or {}).get("redacts"))
    return ids


async def settle(world: World, sent: Sequence[str], quiet_s: float = 3.0, limit_s: float = 30.0) -> int:
    """Poll until every sent event is redacted or nothing new arrives for ``quiet_s``; return how
    many are still visible."""
    deadline = time.monotonic() + limit_s
    last_change, last_count = time.monotonic(), -1
    while time.monotonic() < deadline:
        await world.mod.poll(500)
        count = len(set(sent) & redacted(world))
        if count == len(sent):
            return 0
        if count != last_count:
            last_change, last_count = time.monotonic(), count
        elif time.monotonic() - last_change > quiet_s:
            break
    return len(set(sent) - redacted(world))


@attrs.define
class Results:
    through: list[int] = attrs.field(factory=list)
    wave_accepted: list[int] = attrs.field(factory=list)
    wave_visible: list[int] = attrs.field(factory=list)


async def run_mode(synapse: SynapseServer, base: Path, trials: int, *, old_order: bool) -> Results:
    from protections import flood as flood_module

    original = flood_module.Flood.__dict__["_violation"]  # the staticmethod object itself
    if old_order:

        def as_single_message(*args: object, **kwargs: object) -> object:
            return attrs.evolve(original.__func__(*args, **kwargs), sweep_s=0.0)

        flood_module.Flood._violation = staticmethod(as_single_message)  # type: ignore[assignment]
    results = Results()
    try:
        world = await World.launch(synapse, base / "a", config=CONFIG, members=())
        try:
            room = world.protected[0]
            for trial in range(trials):
                flooder = world.person(f"solo{trial}")
                await flooder.join(room)
                sent: list[str] = []
                await flood(flooder, room, sent)
                results.through.append(len(sent))
                await settle(world, sent)
        finally:
            await world.close()
        for trial in range(max(1, trials // 2)):
            names = tuple(f"w{trial}x{n}" for n in range(3))
            world = await World.launch(synapse, base / f"b{trial}", config=CONFIG, rooms=2, members=names)
            try:
                wave: list[list[str]] = []
                tasks = []
                for name in names:
                    for room_id in world.protected:
                        wave.append([])
                        tasks.append(flood(world.members[name], room_id, wave[-1]))
                await asyncio.gather(*tasks)
                everything = [event_id for sent in wave for event_id in sent]
                results.wave_accepted.append(len(everything))
                results.wave_visible.append(await settle(world, everything))
            finally:
                await world.close()
    finally:
        flood_module.Flood._violation = original  # type: ignore[method-assign]  # staticmethod restored
    return results


def describe(values: Sequence[int]) -> str:
    return f"median {statistics.median(values):5.1f}, max {max(values):4d}  ({', '.join(map(str, values))})"


async def main(args: argparse.Namespace) -> None:
    logs.configure("console", "error")
    with tempfile.TemporaryDirectory(prefix="abusebot-bench-flood-") as tmp:
        synapse = SynapseServer(base_dir=Path(tmp) / "synapse")
        synapse.start()
        try:
            import synapse as synapse_package

            print(
                f"Flood benchmark — Synapse {synapse_package.__version__} (SQLite) on 127.0.0.1, "
                f"Python {sys.version.split()[0]}; limit {LIMIT} messages / 60 s, ladder [ban]",
                flush=True,
            )
            measured = {}
            for old in (True, False, True, False):  # interleaved, so both meet the same machine
                label = "baseline (flood as a single message)" if old else "abusebot (stream: ban first, sweep)"
                print(f"running {label}: {args.trials} trials …", flush=True)
                result = await run_mode(synapse, Path(tmp) / f"{old}-{len(measured)}", args.trials, old_order=old)
                previous = measured.setdefault(label, Results())
                previous.through += result.through
                previous.wave_accepted += result.wave_accepted
                previous.wave_visible += result.wave_visible
        finally:
            synapse.stop()
    for label, result in measured.items():
        print(f"\n{label}")
        print(f"  (A) one flooder, one room — messages through: {describe(result.through)}; target ≤ {LIMIT + 1}")
        print(f"  (B) 3 flooders × 2 rooms — accepted: {describe(result.wave_accepted)}")
        print(f"      still visible after settling: {describe(result.wave_visible)}; target 0")
    new, old = measured["abusebot (stream: ban first, sweep)"], measured["baseline (flood as a single message)"]
    print(
        f"\nratio new / baseline: through (A) {statistics.median(new.through) / statistics.median(old.through):.2f}, "
        f"accepted (B) {statistics.median(new.wave_accepted) / statistics.median(old.wave_accepted):.2f}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="one-flooder trials per round (default 8)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
