"""Ban latency: from a moderator typing ``!mod ban`` to the ban reaching another client's /sync.

Run by hand (not a test)::

    cd /work/main && /work/venv/bin/python -m benchmarks.bench_ban_latency [--trials 30] [--no-dm] [--profile]

It starts its own Synapse (``abusebot.testing.synapse``) on 127.0.0.1, builds a
:class:`~abusebot.testing.world.World`, runs the bot in this process, and adds an *observer*: a
separate user in the protected room whose own ``/sync`` long-poll loop timestamps every event as
it arrives (``time.perf_counter()``). Each trial times, from just before the moderator's send:

(a) baseline: a plain message from the moderator in the protected room, until the observer's
    ``/sync`` delivers it (one hop through the homeserver);
(b) ``!mod ban <target> reason`` in the management room, until the observer's ``/sync`` delivers
    the ``m.room.member`` ban of the target in the protected room (the bot's sync, its handling,
    the ledger writes, the DM, the ban request, and the observer's sync).

(a) and (b) alternate. Each ban has a fresh target, registered and joined before timing starts.
Before each timer starts the bot has finished the previous trial and the observer's request has
been parked in Synapse for a while. By default both modes run: ``notify_users: true`` (the bot DMs
the user before banning; with a fresh target every time, each ban also creates the DM room) and
``notify_users: false`` (``--no-dm`` runs only this mode).

``--profile`` wraps a few bot methods *in this process* (no change to the package) and prints
where the time of a ban goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from abusebot import logs
from abusebot.matrix import API
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World, replies_to

try:
    from benchmarks._stats import percentile
except ImportError:  # run as a script: python benchmarks/<name>.py
    from _stats import percentile  # type: ignore[no-redef]

OBSERVER_FILTER = json.dumps(
    {
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {"timeline": {"limit": 100}, "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
    },
    separators=(",", ":"),
)
#: How long the observer's request must have been parked in Synapse before a timer starts.
PARKED_S = 0.1
#: Quiet time after a trial (the bot's own follow-up events: audit line, reply, checkpoint).
SETTLE_S = 0.3


class Observer:
    """A member of the protected room with its own long-poll loop, timestamping arrivals."""

    def __init__(self, person: Person, room_id: str) -> None:
        self.person = person
        self.room_id = room_id
        self.arrived: dict[str, float] = {}  # event id -> perf_counter at delivery
        self.membership: dict[tuple[str, str], float] = {}  # (user id, membership) -> perf_counter
        self.parked_since: float | None = None  # when the current /sync request went out
        self._batch = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.since = ""

    async def start(self) -> None:
        """Take a sync position, then long-poll in the background."""
        reply = await self.person.call("GET", f"{API}/sync", query={"timeout": 0, "filter": OBSERVER_FILTER})
        self.since = str(reply["next_batch"])
        self._task = asyncio.create_task(self._loop(), name="observer")

    async def stop(self) -> None:
        """Cancel the long-poll loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            self.parked_since = time.perf_counter()
            reply = await self.person.hs.request(
                "GET",
                f"{API}/sync",
                query={"since": self.since, "timeout": 30000, "filter": OBSERVER_FILTER},
                timeout=90,
            )
            now = time.perf_counter()
            self.parked_since = None
            self.since = str(reply["next_batch"])
            joined = reply.get("rooms", {}).get("join", {}).get(self.room_id, {})
            for event in joined.get("timeline", {}).get("events", []):
                self._record(event, now)
            batch, self._batch = self._batch, asyncio.Event()
            batch.set()

    def _record(self, event: dict[str, Any], now: float) -> None:
        """Timestamp one delivered event (subclasses record more kinds)."""
        self.arrived.setdefault(event.get("event_id", ""), now)
        if event.get("type") == "m.room.member":
            key = (str(event.get("state_key")), str((event.get("content") or {}).get("membership")))
            self.membership.setdefault(key, now)

    async def _until(self, found: Callable[[], float | None], timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while True:
            value = found()
            if value is not None:
                return value
            if self._task is not None and self._task.done():
                self._task.result()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError("the observer did not see the expected event")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._batch.wait(), remaining)

    async def event(self, event_id: str, timeout: float = 30) -> float:
        """When ``event_id`` was delivered."""
        return await self._until(lambda: self.arrived.get(event_id), timeout)

    async def member(self, user_id: str, membership: str, timeout: float = 30) -> float:
        """When ``user_id``'s membership ``membership`` was delivered."""
        return await self._until(lambda: self.membership.get((user_id, membership)), timeout)

    async def parked(self) -> None:
        """Wait until the current /sync has been waiting in Synapse for at least ``PARKED_S``."""
        while True:
            since = self.parked_since
            if since is not None and time.perf_counter() - since >= PARKED_S:
                return
            await asyncio.sleep(0.01)


# -- optional profiling (wraps methods in this process only) -----------------------------------------

Span = tuple[str, float, float]  # name, start, end (perf_counter)


class Profiler:
    """Records (name, start, end) of selected async methods of the in-process bot."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.bot_user_id = ""
        self._undo: list[tuple[type, str, Any]] = []

    def wrap(self, cls: type, method: str, name: Callable[..., str | None]) -> None:
        """Time ``cls.method``; ``name(*args)`` labels a call (``None``: not recorded)."""
        original = getattr(cls, method)

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            label = name(*args, **kwargs)
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                if label:
                    self.spans.append((label, start, time.perf_counter()))

        self._undo.append((cls, method, original))
        setattr(cls, method, timed)

    def wrap_bot_requests(self) -> None:
        """Time each HTTP request the bot makes (not the test users'), labelled by endpoint."""
        from abusebot.matrix import Homeserver

        def request(hs: Homeserver, method: str, path: str, *args: Any, **kwargs: Any) -> str | None:
            if hs.user_id != self.bot_user_id:
                return None
            bare = path.split("?")[0]
            what = bare.split("/rooms/", 1)[1].split("/")[1] if "/rooms/" in bare else bare.rsplit("/", 1)[-1]
            return f"http {method} {what}"

        self.wrap(Homeserver, "request", request)

    def install(self) -> None:
        """Wrap the steps of a ban (the bot's HTTP requests only, not the test users')."""
        from abusebot.actions import Moderation
        from abusebot.bot import Bot
        from abusebot.ledger import Ledger
        from abusebot.matrix import Api

        self.wrap(Bot, "handle_sync", lambda *a, **k: "bot.handle_sync")
        self.wrap(Bot, "dispatch", lambda *a, **k: "bot.dispatch")
        self.wrap_bot_requests()
        for method in ("mark_processed", "record_infraction", "update_infraction", "finish_intent", "intent", "active"):
            self.wrap(Ledger, method, lambda *a, _m=method, **k: f"ledger.{_m}")
        self.wrap(Ledger, "commit_checkpoint", lambda *a, **k: "ledger.commit_checkpoint")
        self.wrap(Moderation, "tell_user", lambda *a, **k: "moderation.tell_user")
        self.wrap(Moderation, "post", lambda *a, **k: "moderation.post")
        self.wrap(Api, "ban", lambda *a, **k: "api.ban")
        self.wrap(Api, "create_room", lambda *a, **k: "api.create_room")

    def uninstall(self) -> None:
        """Put the original methods back."""
        for cls, method, original in reversed(self._undo):
            setattr(cls, method, original)
        self._undo.clear()

    def window(self, start: float, end: float) -> list[Span]:
        """Spans that began between ``start`` and ``end``."""
        return [span for span in self.spans if start <= span[1] <= end]


def milestones(spans: list[Span], t0: float, command_sent: float, seen: float) -> dict[str, tuple[float, float]]:
    """The first span of each name in one ban, as (start, end) in seconds after the moderator's send."""
    points: dict[str, tuple[float, float]] = {"moderator's PUT /send of the command": (0.0, command_sent - t0)}
    for name, start, end in sorted(spans, key=lambda span: span[1]):
        points.setdefault(name, (start - t0, end - t0))
    points["observer's /sync delivers the ban"] = (seen - t0, seen - t0)
    return points


def breakdown(trials: list[dict[str, tuple[float, float]]]) -> list[str]:
    """Median start, end and duration of each step over the profiled bans."""
    names: list[str] = []
    for trial in trials:
        names.extend(name for name in trial if name not in names)

    def median(name: str, part: Callable[[tuple[float, float]], float]) -> float:
        return statistics.median(part(t[name]) for t in trials if name in t) * 1000

    lines = [f"    {'step (first of its kind after the send)':44} {'start':>8} {'end':>8} {'took':>8}   n"]
    for name in sorted(names, key=lambda n: median(n, lambda p: p[0])):
        count = sum(name in t for t in trials)
        lines.append(
            f"    {name:44} {median(name, lambda p: p[0]):8.1f} {median(name, lambda p: p[1]):8.1f}"
            f" {median(name, lambda p: p[1] - p[0]):8.1f}  {count}"
        )
    return lines


# -- the benchmark ------------------------------------------------------------------------------------


@attrs.frozen
class Result:
    """One mode's measurements (seconds)."""

    plain: list[float]
    bans: list[float]
    profiles: list[dict[str, tuple[float, float]]]
    dm_rooms: int


async def run_mode(
    synapse: SynapseServer, base: Path, *, notify: bool, trials: int, warmup: int, profiler: Profiler | None
) -> Result:
    """Plain-message and ban latencies (seconds) for one ``notify_users`` setting."""
    world = await World.create(synapse, base, members=(), config={"notify_users": notify})
    observer: Observer | None = None
    try:
        room = world.protected[0]
        watcher = world.person("observer")
        await watcher.join(room)
        targets = []
        for number in range(trials + warmup):
            target = world.person(f"target{number}")
            await target.join(room)
            targets.append(target)
        if profiler is not None:
            profiler.bot_user_id = world.bot_account.user_id
        bot = await world.start_bot()
        await world.mod.start_watching()
        observer = Observer(watcher, room)
        await observer.start()
        # The bot must know every target as a member before the first timer starts.
        deadline = time.monotonic() + 30
        while not all(bot.store.room(room).membership(t.user_id) == "join" for t in targets):
            if time.monotonic() > deadline:
                raise TimeoutError("the bot did not learn the targets' joins")
            await asyncio.sleep(0.05)

        plain: list[float] = []
        bans: list[float] = []
        windows: list[tuple[float, float, float]] = []  # (t0, command sent, ban seen) of each counted ban
        for number, target in enumerate(targets):
            counted = number >= warmup
            # (a) baseline: one hop through the homeserver.
            await asyncio.sleep(SETTLE_S)
            await observer.parked()
            t0 = time.perf_counter()
            event_id = await world.mod.say(room, f"plain message {number}")
            plain_s = await observer.event(event_id) - t0
            # (b) the ban, typed by the moderator in the management room.
            await asyncio.sleep(SETTLE_S)
            await observer.parked()
            t0 = time.perf_counter()
            command = await world.mod.say(world.management, f"!mod ban {target.user_id} benchmark trial {number}")
            sent = time.perf_counter()
            seen = await observer.member(target.user_id, "ban")
            reply = await world.mod.wait_for(world.management, lambda e, c=command: replies_to(e, c), timeout=30)
            if "Banned" not in str(reply["content"].get("body", "")):
                raise RuntimeError(f"unexpected reply to the ban: {reply['content'].get('body')!r}")
            if counted:
                plain.append(plain_s)
                bans.append(seen - t0)
                windows.append((t0, sent, seen))
        # The DM rooms the bot made: confirms the notify_users setting took effect.
        dm_rooms = 0
        for person in targets:
            dm_rooms += await bot.moderation.dm_room(person.user_id) is not None
        profiles: list[dict[str, tuple[float, float]]] = []
        if profiler is not None:
            await asyncio.sleep(SETTLE_S)  # spans are recorded when they end; let the last batch finish
            profiles = [milestones(profiler.window(t0, seen), t0, sent, seen) for t0, sent, seen in windows]
        return Result(plain, bans, profiles, dm_rooms)
    finally:
        if observer is not None:
            await observer.stop()
        await world.close()


def report(label: str, plain: list[float], bans: list[float]) -> list[str]:
    def row(name: str, values: list[float]) -> str:
        return (
            f"  {name:38} {percentile(values, 50) * 1000:9.1f} ms {percentile(values, 90) * 1000:9.1f} ms"
            f" {statistics.fmean(values) * 1000:9.1f} ms"
        )

    return [
        f"{label}: {len(bans)} trials",
        f"  {'':38} {'p50':>12} {'p90':>12} {'mean':>12}",
        row("(a) plain message → observer /sync", plain),
        row("(b) !mod ban → observer sees the ban", bans),
        f"  {'ratio ban / plain':38} {percentile(bans, 50) / percentile(plain, 50):10.1f} × "
        f"{percentile(bans, 90) / percentile(plain, 90):10.1f} ×",
    ]


async def main(args: argparse.Namespace) -> None:
    logs.configure("console", "error")
    modes = [False] if args.no_dm else [True, False]
    profiler = Profiler() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="abusebot-bench-ban-") as tmp:
        synapse = SynapseServer(base_dir=Path(tmp) / "synapse")
        started = time.perf_counter()
        synapse.start()
        try:
            import synapse as synapse_package

            print(
                f"Ban latency benchmark — Synapse {synapse_package.__version__} (SQLite) on 127.0.0.1, "
                f"Python {sys.version.split()[0]}; Synapse started in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            if profiler is not None:
                profiler.install()
            for notify in modes:
                label = "notify_users: true (the user is told by DM)" if notify else "notify_users: false (--no-dm)"
                print(f"\nrunning {label}: {args.trials} trials + {args.warmup} warm-up …", flush=True)
                result = await run_mode(
                    synapse,
                    Path(tmp) / ("dm" if notify else "no-dm"),
                    notify=notify,
                    trials=args.trials,
                    warmup=args.warmup,
                    profiler=profiler,
                )
                lines = report(label, result.plain, result.bans)
                lines.append(f"  DM rooms the bot created: {result.dm_rooms}")
                if result.profiles:
                    lines.append("  where a ban's time goes (median ms after the moderator starts sending):")
                    lines.extend(breakdown(result.profiles))
                    assert profiler is not None
                    profiler.spans.clear()
                print("\n".join(lines), flush=True)
        finally:
            if profiler is not None:
                profiler.uninstall()
            synapse.stop()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30, help="timed trials per mode (default 30)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed trials first, per mode (default 1)")
    parser.add_argument("--no-dm", action="store_true", help="only run with notify_users: false")
    parser.add_argument("--profile", action="store_true", help="time the bot's steps (in-process wrappers)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
