"""Scale on one Synapse: first start with many rooms, a ban across all of them, memory with a big list.

Run by hand (not a test)::

    .venv/bin/python -m benchmarks.bench_scale [--rooms 500] [--rules 100000] [--baseline-rooms 10]

It starts its own Synapse on 127.0.0.1 (rate limits lifted, as ``abusebot.testing.synapse`` does)
and runs the bot in this process. Stages:

1. **First start**: ``--baseline-rooms`` protected rooms, then ``--rooms``; for each, the time
   from creating the bot until it answers ``!mod status`` (its first sync done), and the ratio.
2. **A ban across every room**: one target joined to all ``--rooms`` rooms; the time from the
   moderator's ``!mod ban`` until the bot's reply (sent once every room answered) and until the
   last room shows the ban, against a ban in one room (``--room``) in the same run.
3. **Memory**: the bot's RSS with ``--rooms`` rooms, before and after a watched list of
   ``--rules`` rules is loaded. The list room is real; its rules are served to the bot by
   wrapping ``Homeserver.room_state`` for that room only (writing 100,000 state events through a
   homeserver takes an hour; the bot's copy of them is what is measured). Target: ≤ 150 MB with
   1,000 rooms and 100,000 rules.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from abusebot.matrix import API, Homeserver, iter_json_array, q
from abusebot.testing.proxy import Proxy
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World


def rss_mb() -> float:
    """This process's resident set now (MB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    """This process's peak resident set (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def status_reply(world: World) -> str:
    """Ask ``!mod status`` and wait for the answer."""
    event_id = await world.mod.say(world.management, "!mod status")
    return await world.mod.wait_for_reply(world.management, event_id, timeout=120)


async def first_start(world: World) -> tuple[float, float]:
    """Seconds from creating the bot until it answers ``!mod status``, and until it has joined
    every room (a first start joins them in the background, after its first sync)."""
    started = time.perf_counter()
    bot = await world.start_bot(timeout=600, settled=False)
    await status_reply(world)
    answered = time.perf_counter() - started
    await asyncio.wait_for(asyncio.shield(bot.joined()), 600)
    return answered, time.perf_counter() - started


async def ban_everywhere(world: World, target: Any, room: str | None = None) -> tuple[float, float]:
    """(s until the reply, s until the last room shows the ban) for one ``!mod ban``."""
    where = f" --room {room}" if room else ""
    started = time.perf_counter()
    event_id = await world.mod.say(world.management, f"!mod ban {target.user_id} bench{where}")
    await world.mod.wait_for_reply(world.management, event_id, timeout=300)
    replied = time.perf_counter() - started
    rooms = [room] if room else world.protected
    for room_id in rooms:  # the reply comes once every room answered: each check is one read
        while True:
            if await world.mod.membership(room_id, target.user_id) == "ban":
                break
            await asyncio.sleep(0.05)
    return replied, time.perf_counter() - started


def list_body(count: int, base: Path) -> bytes:
    """The JSON a homeserver would send for a list of ``count`` rules, made by a child process
    (so this process never holds the harness's own ``count`` dicts: only the bot's copy counts)."""
    path = base / "list.json"
    code = (
        "import json, sys; from benchmarks.bench_scale import rule_events; "
        f"open({str(path)!r}, 'wb').write(json.dumps(rule_events({count})).encode())"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
    return path.read_bytes()


async def timed_all(at_once: int, calls: list[Any]) -> float:
    """Seconds to run ``calls`` (awaitables), ``at_once`` at a time."""
    gate = asyncio.Semaphore(at_once)

    async def one(call: Any) -> None:
        async with gate:
            await call

    started = time.perf_counter()
    await asyncio.gather(*(one(call) for call in calls))
    return time.perf_counter() - started


def rule_events(count: int) -> list[dict[str, Any]]:
    """``count`` ban rules as a list room's state would hold them (90 % exact, 10 % globs)."""
    events = []
    for n in range(count):
        entity = f"@spammer{n}:spam{n % 500}.example" if n % 10 else f"@*bot{n}*:spam{n % 500}.example"
        events.append(
            {
                "type": "m.policy.rule.user",
                "state_key": f"rule:{entity}",
                "sender": "@owner:lists.example",
                "event_id": f"$rule{n}",
                "origin_server_ts": 1,
                "content": {"entity": entity, "recommendation": "m.ban", "reason": "spam"},
            }
        )
    return events


async def main(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    synapse = SynapseServer(base_dir=base / "synapse")
    synapse.start()
    try:
        print(f"RSS of this process before any bot: {rss_mb():.0f} MB")
        if args.memory_only:
            await memory_only(synapse, base, args)
            return
        if args.standalone:
            await standalone(synapse, base, args)
            return
        small = await World.create(synapse, base / "small", rooms=args.baseline_rooms, members=())
        await small.mod.start_watching()
        small_s, _ = await first_start(small)
        await small.close()

        made = time.perf_counter()
        world = await World.create(synapse, base / "big", rooms=args.rooms, members=())
        print(f"{args.rooms} rooms created in {time.perf_counter() - made:.0f} s")
        target, other, joiner, victim = (world.person(n) for n in ("target", "other", "joiner", "victim"))
        for room_id in world.protected:
            await target.join(room_id)
            await victim.join(room_id)
        await other.join(world.protected[0])
        # The homeserver's own floor, in the same run: a user joining every room, 8 at a time (as
        # the bot joins at start), and the moderator banning a user in every room, 4 at a time (the
        # bot's write workers). A SQLite Synapse persists events one after another.
        joins_s = await timed_all(8, [joiner.join(room_id) for room_id in world.protected])
        bans_s = await timed_all(
            4,
            [
                world.mod.call("POST", f"{API}/rooms/{q(room_id)}/ban", {"user_id": victim.user_id, "reason": "x"})
                for room_id in world.protected
            ],
        )
        await world.mod.start_watching()
        before = rss_mb()
        big_s, joined_s = await first_start(world)
        print("\n(1) first start until !mod status answers")
        print(f"  {args.baseline_rooms:>5} rooms: {small_s:6.1f} s")
        print(
            f"  {args.rooms:>5} rooms: {big_s:6.1f} s ({big_s / small_s:.1f}x; target ≤ 15 s with 500:"
            f" {'met' if big_s <= 15 or args.rooms != 500 else 'NOT met'})"
        )
        print(
            f"  every room joined after {joined_s:6.1f} s; baseline: another user joining the {args.rooms} rooms,"
            f" 8 at a time: {joins_s:6.1f} s (the bot's joins took {joined_s / joins_s:.2f}x that)"
        )
        with_rooms = rss_mb()

        one = await ban_everywhere(world, other, world.protected[0])
        every = await ban_everywhere(world, target)
        print(f"\n(2) !mod ban across every room ({args.rooms})")
        print(f"  one room:    reply {one[0]:6.2f} s, ban seen {one[1]:6.2f} s")
        print(
            f"  every room:  reply {every[0]:6.2f} s, last room's ban seen {every[1]:6.2f} s"
            f" ({every[1] / one[1]:.0f}x one room; target ≤ 5 s: {'met' if every[1] <= 5 else 'NOT met'})"
        )
        print(
            f"  baseline: the moderator's own {args.rooms} bans through the API, 4 at a time: {bans_s:6.2f} s"
            f" (the bot's fan-out is {every[1] / bans_s:.2f}x that)"
        )

        print(f"\n(3) memory (RSS of this process: the bot, and the test's own clients ~{before:.0f} MB)")
        print(f"  with {args.rooms} rooms: {with_rooms:.0f} MB ({with_rooms - before:+.0f} MB for the bot)")
        lst = await world.mod.create_room(name="Big list", public=True, extra_power={"events_default": 50})
        real_state = Homeserver.room_state_stream
        body = list_body(args.rules, base)  # what the homeserver would send, read as the bot reads it

        async def room_state(self: Homeserver, room_id: str) -> Iterator[Any]:
            state = await real_state(self, room_id)
            return itertools.chain(state, iter_json_array(body)) if room_id == lst else state

        Homeserver.room_state_stream = room_state  # type: ignore[method-assign]
        try:
            loaded = time.perf_counter()
            count = await world.bot.policies.watch(lst, world.bot.policies.lists.get(lst) or _options())
            load_s = time.perf_counter() - loaded
        finally:
            Homeserver.room_state_stream = real_state  # type: ignore[method-assign]
        body = b""  # the bot's copy is what counts
        import gc

        gc.collect()
        after = rss_mb()
        print(f"  + a list of {count:,} rules (loaded in {load_s:.1f} s): {after:.0f} MB, peak {peak_mb():.0f} MB")
        print(
            f"  the bot's share: {after - before:.0f} MB; {(after - with_rooms) * 1024 * 1024 / max(count, 1):.0f} B"
            f" per rule; this whole process (the bot and the harness) {after:.0f} MB. The ≤ 150 MB target is for"
            " the bot as its own process: measure it with --standalone --rooms 1000"
        )
        await world.close()
    finally:
        synapse.stop()


async def memory_only(synapse: SynapseServer, base: Path, args: argparse.Namespace) -> None:
    """Stage 3 alone: ``--rooms`` rooms and a list of ``--rules`` rules, the RSS of this process."""
    made = time.perf_counter()
    world = await World.create(synapse, base / "big", rooms=args.rooms, members=())
    print(f"{args.rooms} rooms created in {time.perf_counter() - made:.0f} s")
    await world.mod.start_watching()
    before = rss_mb()
    start_s, _ = await first_start(world)
    with_rooms = rss_mb()
    lst = await world.mod.create_room(name="Big list", public=True, extra_power={"events_default": 50})
    body = list_body(args.rules, base)
    real_state = Homeserver.room_state_stream

    async def room_state(self: Homeserver, room_id: str) -> Iterator[Any]:
        state = await real_state(self, room_id)
        return itertools.chain(state, iter_json_array(body)) if room_id == lst else state

    Homeserver.room_state_stream = room_state  # type: ignore[method-assign]
    try:
        count = await world.bot.policies.watch(lst, _options())
    finally:
        Homeserver.room_state_stream = real_state  # type: ignore[method-assign]
    body = b""
    import gc

    gc.collect()
    after = rss_mb()
    print(f"\n(3) memory, {args.rooms} rooms (first start {start_s:.1f} s) and {count:,} rules")
    print(f"  this process before the bot: {before:.0f} MB (the test's own clients and imports)")
    print(f"  with the rooms: {with_rooms:.0f} MB; with the list too: {after:.0f} MB, peak {peak_mb():.0f} MB")
    print(
        f"  the bot's share: {after - before:.0f} MB; target ≤ 150 MB for the bot with 1,000 rooms and 100,000"
        f" rules: {'met' if after - before <= 150 else 'NOT met'}"
    )
    await world.close()


class ListProxy(Proxy):
    """Forwards every request to the homeserver, except that a read of ``room``'s state gets
    ``extra`` (a JSON array of rule events) added: what a homeserver holding that list would
    send, without writing 100,000 state events through Synapse (an hour)."""

    def __init__(self, upstream: str, room: str, extra: bytes) -> None:
        super().__init__(upstream)
        self.room, self.extra = room, extra

    async def after(self, request: Any, status: int, body: bytes) -> bytes:
        if request.method == "GET" and request.path == f"{API}/rooms/{self.room}/state" and status == 200:
            return body.rstrip()[:-1] + b"," + self.extra.lstrip()[1:]
        return body


def process_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of process ``pid`` in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


async def standalone(synapse: SynapseServer, base: Path, args: argparse.Namespace) -> None:
    """Stage 3 as operators run it: ``python -m abusebot run`` as its own process, ``--rooms``
    rooms and a watched list of ``--rules`` rules; that process's RSS once it has joined every
    room and loaded the list."""
    made = time.perf_counter()
    world = await World.create(synapse, base / "big", rooms=args.rooms, members=())
    print(f"{args.rooms} rooms created in {time.perf_counter() - made:.0f} s")
    bot_id = world.bot_account.user_id
    lst = await world.mod.create_room(name="Big list", invite=[bot_id], extra_power={"events_default": 50})
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # the killed bot's open long-poll
    proxy = ListProxy(synapse.url, lst, list_body(args.rules, base))
    await proxy.start()
    log_path = base / "big" / "bot-process.log"
    try:
        world.write_config(
            {"homeserver": proxy.url, "policy_lists": {"watch": [lst]}, "logging": {"format": "json", "level": "info"}}
        )
        await world.mod.start_watching()
        started = time.perf_counter()
        process = world.spawn_bot()
        answered = None
        while True:
            text = log_path.read_text() if log_path.exists() else ""
            if answered is None and '"first_sync"' in text:
                await status_reply(world)
                answered = time.perf_counter() - started
            if '"rooms_joined"' in text and '"list_loaded"' in text:
                break
            if process.poll() is not None:
                raise RuntimeError(f"the bot stopped: see {log_path}")
            await asyncio.sleep(0.5)
        settled = time.perf_counter() - started
        await asyncio.sleep(2)  # let the last batches settle
        rss, peak = process_mb(process.pid)
        print(f"\n(3s) the bot as its own process: {args.rooms} rooms and a list of {args.rules:,} rules")
        print(f"  first start: status answered after {answered or 0:.1f} s; all rooms joined after {settled:.1f} s")
        print(
            f"  RSS {rss:.0f} MB, peak {peak:.0f} MB; target ≤ 150 MB with 1,000 rooms and 100,000 rules:"
            f" {'met' if rss <= 150 else 'NOT met'} (at {args.rooms} rooms, {args.rules:,} rules)"
        )
    finally:
        world.kill_bot()
        await proxy.close()
        await world.close()


def _options() -> Any:
    from policies.lists import ListOptions

    return ListOptions()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--baseline-rooms", type=int, default=10)
    parser.add_argument("--rules", type=int, default=100_000)
    parser.add_argument("--memory-only", action="store_true", help="only stage 3 (e.g. with --rooms 1000)")
    parser.add_argument(
        "--standalone", action="store_true", help="only stage 3, the bot as its own process (e.g. with --rooms 1000)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
