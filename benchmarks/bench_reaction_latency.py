"""Reaction latency: from a spammer's send to the redaction reaching another client's /sync.

Run by hand (not a test)::

    cd /work/main && /work/venv/bin/python -m benchmarks.bench_reaction_latency [--trials 30] [--no-dm]
        [--harmless-first] [--profile] [--fix NAME]

It starts its own Synapse (``abusebot.testing.synapse``) on 127.0.0.1, builds a
:class:`~abusebot.testing.world.World` whose config bans the phrase "buy cheap crypto"
(``protections: {spam: {banned_words: [...]}}``), runs the bot in this process, and adds an
*observer*: a separate member of the protected room whose own ``/sync`` long-poll loop timestamps
every event as it arrives (``time.perf_counter()``). Each trial times, from just before the send:

(a) baseline: a plain message from an ordinary member in the protected room, until the
    observer's ``/sync`` delivers it (one hop through the homeserver);
(b) a message containing the banned phrase from a spammer, until the observer's ``/sync``
    delivers the ``m.room.redaction`` of that event (the bot's sync, the pipeline, the redact
    request, and the observer's sync: two hops and the bot in between).

(a) and (b) alternate. Each (b) has a fresh spammer, registered and joined after the bot started,
so the bot saw the join; by default the spam is their first activity, which the ladder answers
with a permanent ban (the realistic spam-bot case). ``--harmless-first`` has each spammer post
one harmless message during set-up instead, so the spam earns the ladder's first rung (a
warning). Either way every trial meets the same ladder state. Both ``notify_users: true`` and
``notify_users: false`` run by default (``--no-dm``: only the second); the redaction is sent
before the ladder's step, so it should not depend on the setting.

``--profile`` wraps a few bot methods *in this process* (no change to the package) and prints
where the time of a reaction goes. ``--fix NAME`` adds (c) to every trial: the same reaction with a
throwaway monkeypatch switched on (in this process only; see ``FIXES``), so the candidate
improvement and the unchanged bot are compared on the same Synapse in the same minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import attrs

from abusebot import logs
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World

try:
    from benchmarks.bench_ban_latency import Observer, Profiler, Span, breakdown, percentile
except ImportError:  # run as a script: python benchmarks/bench_reaction_latency.py
    from bench_ban_latency import (  # type: ignore[no-redef]
        Observer,
        Profiler,
        Span,
        breakdown,
        percentile,
    )

BANNED_PHRASE = "buy cheap crypto"
#: Ordinary members who take turns sending the baseline messages (one member sending one message
#: a second would, over a long run, come close to the flood protection's 10 in 10 s).
CHATTERS = 4
#: How long the observer's and the bot's requests must have been parked before a timer starts.
PARKED_S = 0.1
#: Quiet time after a trial (the bot's own follow-up events: audit line, ban, DM).
SETTLE_S = 0.3


class RedactionObserver(Observer):
    """The ban benchmark's observer, also recording when the redaction of each event arrived."""

    def __init__(self, person: Person, room_id: str) -> None:
        super().__init__(person, room_id)
        self.redacted: dict[str, float] = {}  # redacted event id -> perf_counter at delivery

    def _record(self, event: dict[str, Any], now: float) -> None:
        super()._record(event, now)
        if event.get("type") == "m.room.redaction":
            # Room v11+ carries ``redacts`` in the content; older versions at the top level.
            target = (event.get("content") or {}).get("redacts") or event.get("redacts")
            if isinstance(target, str):
                self.redacted.setdefault(target, now)

    async def redaction(self, event_id: str, timeout: float = 30) -> float:
        """When the redaction of ``event_id`` was delivered."""
        return await self._until(lambda: self.redacted.get(event_id), timeout)


class BotSyncWatch:
    """Knows whether the in-process bot's ``/sync`` long-poll is parked in Synapse (and since when).

    Patches ``sync`` on the bot's :class:`~abusebot.matrix.Homeserver` *instance*; the bot looks
    the method up on every loop, so its next request is watched.
    """

    def __init__(self, bot: Any) -> None:
        self.parked_since: float | None = None
        self.requests = 0
        original = bot.hs.sync

        async def sync(since: str | None, timeout_ms: int, sync_filter: str) -> dict[str, Any]:
            self.requests += 1
            self.parked_since = time.perf_counter()
            try:
                return await original(since, timeout_ms, sync_filter)
            finally:
                self.parked_since = None

        bot.hs.sync = sync


async def quiet(observer: RedactionObserver, bot_sync: BotSyncWatch) -> None:
    """Wait until both the observer's and the bot's /sync have been parked for ``PARKED_S``."""
    while True:
        now = time.perf_counter()
        parked = [observer.parked_since, bot_sync.parked_since]
        if all(since is not None and now - since >= PARKED_S for since in parked):
            return
        await asyncio.sleep(0.01)


# -- optional profiling (wraps methods in this process only) -----------------------------------------


class ReactionProfiler(Profiler):
    """The ban benchmark's profiler, wrapping the steps of a reaction; spans tied to one event carry
    its id after a ``|`` in their name."""

    def install(self) -> None:
        """Wrap the steps of a reaction (the bot's HTTP requests only, not the test users')."""
        from abusebot.actions import Moderation
        from abusebot.bot import Bot
        from abusebot.ledger import Ledger
        from abusebot.matrix import Api, Homeserver
        from abusebot.pipeline import Executor, Pipeline

        def request(hs: Homeserver, method: str, path: str, *args: Any, **kwargs: Any) -> str | None:
            if hs.user_id != self.bot_user_id:
                return None
            bare = unquote(path.split("?")[0])
            if "/redact/" in bare:
                return f"http PUT redact|{bare.split('/redact/', 1)[1].split('/')[0]}"
            what = bare.split("/rooms/", 1)[1].split("/")[1] if "/rooms/" in bare else bare.rsplit("/", 1)[-1]
            return f"http {method} {what}"

        def batch(bot: Bot, response: Any, *args: Any, **kwargs: Any) -> str:
            ids = [
                str(event.get("event_id"))
                for joined in response.get("rooms", {}).get("join", {}).values()
                for event in joined.get("timeline", {}).get("events", [])
            ]
            return "bot.handle_sync|" + " ".join(ids)

        self.wrap(Bot, "handle_sync", batch)
        self.wrap(Bot, "dispatch", lambda bot, event, *a, **k: f"bot.dispatch|{event.event_id}")
        self.wrap(Pipeline, "handle", lambda p, event, *a, **k: f"pipeline.handle|{event.event_id}")
        self.wrap(Pipeline, "_run_intent", lambda p, i, n, m, f, event_id, *a, **k: f"pipeline.intent|{event_id}")
        self.wrap(Executor, "_redact", lambda ex, room, event_id, *a, **k: f"executor._redact|{event_id}")
        self.wrap(Homeserver, "request", request)
        for method in ("mark_processed", "record_infraction", "history", "finish_intent", "get_kv", "set_kv", "audit"):
            self.wrap(Ledger, method, lambda *a, _m=method, **k: f"ledger.{_m}")
        self.wrap(Ledger, "commit_checkpoint", lambda *a, **k: "ledger.commit_checkpoint")
        for method in ("ban", "warn", "tell_user", "post"):
            self.wrap(Moderation, method, lambda *a, _m=method, **k: f"moderation.{_m}")
        self.wrap(Api, "ban", lambda *a, **k: "api.ban")
        self.wrap(Api, "create_room", lambda *a, **k: "api.create_room")


#: Steps tied to the spam event, as printed.
EVENT_STEPS = {
    "bot.handle_sync": "bot: /sync delivered the spam (handle_sync)",
    "bot.dispatch": "bot.dispatch (the spam)",
    "pipeline.handle": "pipeline.handle: protections decide",
    "pipeline.intent": "pipeline: the violation's task",
    "executor._redact": "executor._redact (queue + request)",
    "http PUT redact": "http PUT redact: sent → answered",
}
SEEN_SPAM = "observer's /sync delivers the spam"
SEEN_REDACTION = "observer's /sync delivers the redaction"


def reaction_milestones(
    spans: list[Span], event_id: str, t0: float, sent: float, spam_seen: float, seen: float
) -> dict[str, tuple[float, float]]:
    """The first span of each step of one reaction, as (start, end) in seconds after the send began."""
    points: dict[str, tuple[float, float]] = {"spammer's PUT /send": (0.0, sent - t0)}
    points[SEEN_SPAM] = (spam_seen - t0, spam_seen - t0)
    for name, start, end in sorted(spans, key=lambda span: span[1]):
        base, _, ids = name.partition("|")
        if ids:
            if event_id not in ids.split():
                continue
            name = EVENT_STEPS.get(base, base)
        elif base == "http GET sync":
            continue  # the request that returned the spam began before the timer; later ones are idle polls
        points.setdefault(name, (start - t0, end - t0))
    points[SEEN_REDACTION] = (seen - t0, seen - t0)
    return points


def critical_path(trials: list[dict[str, tuple[float, float]]]) -> list[str]:
    """Median of each leg of the path the redaction takes."""
    legs: list[tuple[str, Callable[[dict[str, tuple[float, float]]], float]]] = [
        ("hop 1: send → the bot's /sync returns the spam", lambda t: t[EVENT_STEPS["bot.handle_sync"]][0]),
        (
            "bot: batch received → protections decided",
            lambda t: t[EVENT_STEPS["pipeline.handle"]][1] - t[EVENT_STEPS["bot.handle_sync"]][0],
        ),
        (
            "bot: decided → PUT redact sent",
            lambda t: t[EVENT_STEPS["http PUT redact"]][0] - t[EVENT_STEPS["pipeline.handle"]][1],
        ),
        (
            "Synapse: PUT redact sent → answered",
            lambda t: t[EVENT_STEPS["http PUT redact"]][1] - t[EVENT_STEPS["http PUT redact"]][0],
        ),
        (
            "hop 2: PUT redact sent → observer has it",
            lambda t: t[SEEN_REDACTION][0] - t[EVENT_STEPS["http PUT redact"]][0],
        ),
        ("total: send → observer has the redaction", lambda t: t[SEEN_REDACTION][0]),
    ]
    needed = (EVENT_STEPS["bot.handle_sync"], EVENT_STEPS["pipeline.handle"], EVENT_STEPS["http PUT redact"])
    complete = [t for t in trials if all(name in t for name in needed)]
    lines = [f"    critical path (median ms over {len(complete)} trials):"]
    for label, leg in legs:
        values = [leg(t) * 1000 for t in complete]
        if values:
            lines.append(f"      {label:46} {statistics.median(values):8.1f}")
    return lines


# -- throwaway fixes (monkeypatches in this process only; the package is not changed) ----------------

#: The fixes switched on right now (``run_mode`` switches them per trial, for an A/B in one run).
ACTIVE_FIXES: set[str] = set()


def _fix_redact_then_step() -> None:
    """The ladder's step starts only once the redaction was answered (instead of alongside it)."""
    from abusebot.pipeline import Executor

    original = Executor._act_violation

    async def act_violation(self: Executor, v: Any, protection: str, first_activity: bool) -> None:
        if "redact-then-step" not in ACTIVE_FIXES:
            await original(self, v, protection, first_activity)
            return
        if v.redact:
            ids = [(v.room_id, i) for i in (v.evidence.event_id, *v.also_redact) if i]
            ids += v.also_redact_elsewhere
            await asyncio.gather(*(self._redact(room_id, event_id, v.rule) for room_id, event_id in ids))
        await original(self, attrs.evolve(v, redact=False), protection, first_activity)

    Executor._act_violation = act_violation  # type: ignore[method-assign]


#: The redactions of the violation being handled (set by the ``defer-talk`` patch).
_REDACTIONS: contextvars.ContextVar[asyncio.Future[Any] | None] = contextvars.ContextVar("redactions", default=None)


def _fix_defer_talk() -> None:
    """Creating a DM room and the management-room line wait until the redaction was answered;
    the ladder's step itself (ledger, ban, mute) starts at once, as now."""
    from abusebot.actions import Moderation
    from abusebot.audit import Message
    from abusebot.matrix import Api
    from abusebot.pipeline import Executor

    act_violation = Executor._act_violation
    create_room = Api.create_room
    post = Moderation.post

    async def gated_act_violation(self: Executor, v: Any, protection: str, first_activity: bool) -> None:
        if "defer-talk" not in ACTIVE_FIXES or not v.redact:
            await act_violation(self, v, protection, first_activity)
            return
        ids = [(v.room_id, i) for i in (v.evidence.event_id, *v.also_redact) if i]
        ids += v.also_redact_elsewhere
        redactions = asyncio.gather(*(self._redact(room_id, event_id, v.rule) for room_id, event_id in ids))
        token = _REDACTIONS.set(redactions)
        try:
            await act_violation(self, attrs.evolve(v, redact=False), protection, first_activity)
        finally:
            _REDACTIONS.reset(token)
            await redactions

    async def wait_for_redactions() -> None:
        pending = _REDACTIONS.get()
        if pending is not None:
            await asyncio.wait({pending})

    async def gated_create_room(self: Api, body: Any) -> str:
        await wait_for_redactions()
        return await create_room(self, body)

    async def gated_post(self: Moderation, message: Message) -> None:
        await wait_for_redactions()
        await post(self, message)

    Executor._act_violation = gated_act_violation  # type: ignore[method-assign]
    Api.create_room = gated_create_room  # type: ignore[method-assign]
    Moderation.post = gated_post  # type: ignore[method-assign]


#: name -> (what it does, how to install it; it acts only while its name is in ``ACTIVE_FIXES``).
FIXES: dict[str, tuple[str, Callable[[], None]]] = {
    "redact-then-step": (
        "the ladder's step (ban, DM, audit line) waits until the redaction was answered",
        _fix_redact_then_step,
    ),
    "defer-talk": (
        "creating a DM room and the management-room line wait until the redaction was answered",
        _fix_defer_talk,
    ),
}


# -- the benchmark ------------------------------------------------------------------------------------

PLAIN = "(a) plain message → observer /sync"
REACTION = "(b) spam → observer sees its redaction"
FIXED = "(c) the same, with the fix"


@attrs.frozen
class Result:
    """One mode's measurements (seconds, by series) and what the bot did."""

    times: dict[str, list[float]]
    profiles: dict[str, list[dict[str, tuple[float, float]]]]
    steps: dict[str, int]
    dm_rooms: int


async def run_mode(
    synapse: SynapseServer,
    base: Path,
    *,
    notify: bool,
    trials: int,
    warmup: int,
    harmless_first: bool,
    fix: str | None,
    profiler: ReactionProfiler | None,
) -> Result:
    """Plain-message and reaction latencies (seconds) for one ``notify_users`` setting; with
    ``fix``, each trial also times a reaction with that fix switched on."""
    config = {
        "notify_users": notify,
        "sync_timeout_ms": 30000,  # the default: a parked request does not time out mid-trial
        # The set-up joins (one fresh spammer per trial) are a join wave; that protection would
        # lock the room. Everything else runs as configured by default.
        "protections": {"spam": {"banned_words": [BANNED_PHRASE]}, "join_wave": {"enabled": False}},
    }
    series = [REACTION, FIXED] if fix else [REACTION]
    world = await World.create(synapse, base, members=(), config=config)
    observer: RedactionObserver | None = None
    try:
        room = world.protected[0]
        watcher = world.person("observer")
        await watcher.join(room)
        chatters = [world.person(f"member{number}") for number in range(CHATTERS)]
        for chatter in chatters:
            await chatter.join(room)
        spammers = [world.person(f"spammer{number}") for number in range((trials + warmup) * len(series))]
        if profiler is not None:
            profiler.bot_user_id = world.bot_account.user_id
        bot = await world.start_bot()
        bot_sync = BotSyncWatch(bot)
        # The spammers join now, so the bot sees every join (a join it did not see would not make
        # the spam their first activity after joining).
        for spammer in spammers:
            await spammer.join(room)
        await wait_until(
            lambda: all(bot.pipeline.context.joined_at(room, s.user_id) is not None for s in spammers),
            "the bot did not see the spammers' joins",
        )
        if harmless_first:
            for number, spammer in enumerate(spammers):
                await spammer.say(room, f"hello everyone, I am new here ({number})")
            await wait_until(
                lambda: all((room, s.user_id) in bot.pipeline._active for s in spammers),
                "the bot did not see the spammers' first messages",
            )
        observer = RedactionObserver(watcher, room)
        await observer.start()

        async def react(spammer: Person, number: int) -> tuple[str, float, float, float, float, float]:
            """Spam from a fresh spammer until the observer sees its redaction and the bot is done."""
            assert observer is not None
            await asyncio.sleep(SETTLE_S)
            await quiet(observer, bot_sync)
            t0 = time.perf_counter()
            event_id = await spammer.say(room, f"Hi all! {BANNED_PHRASE.upper()} here, ask me how ({number})")
            sent = time.perf_counter()
            seen = await observer.redaction(event_id)
            spam_seen = await observer.event(event_id)
            if not harmless_first:
                await observer.member(spammer.user_id, "ban")  # the ladder's step: first activity → ban
            await asyncio.sleep(SETTLE_S)
            await quiet(observer, bot_sync)  # the bot's batch (and so the ladder's step) is done
            return event_id, t0, sent, spam_seen, seen, time.perf_counter()

        times: dict[str, list[float]] = {name: [] for name in (PLAIN, *series)}
        windows: dict[str, list[tuple[str, float, float, float, float, float]]] = {name: [] for name in series}
        queue = iter(spammers)
        for number in range(trials + warmup):
            counted = number >= warmup
            # (a) baseline: one hop through the homeserver.
            await asyncio.sleep(SETTLE_S)
            await quiet(observer, bot_sync)
            t0 = time.perf_counter()
            event_id = await chatters[number % CHATTERS].say(room, f"plain message {number}")
            plain_s = await observer.event(event_id) - t0
            if counted:
                times[PLAIN].append(plain_s)
            # (b) spam, until the observer sees its redaction; (c) the same with the fix on.
            for name in series:
                if name == FIXED and fix:
                    ACTIVE_FIXES.add(fix)
                try:
                    window = await react(next(queue), number)
                finally:
                    ACTIVE_FIXES.clear()
                if counted:
                    times[name].append(window[4] - window[1])
                    windows[name].append(window)
        # What the ladder did to each spammer, and the DM rooms the bot made (confirms the
        # notify_users setting took effect).
        steps: collections.Counter[str] = collections.Counter()
        dm_rooms = 0
        for spammer in spammers:
            history = await bot.ledger.history(spammer.user_id, limit=5)
            steps[history[0].kind if history else "nothing"] += 1
            dm_rooms += await bot.moderation.dm_room(spammer.user_id) is not None
        profiles: dict[str, list[dict[str, tuple[float, float]]]] = {}
        if profiler is not None:
            for name, trial_windows in windows.items():
                profiles[name] = [
                    reaction_milestones(profiler.window(t0, end), event_id, t0, sent, spam_seen, seen)
                    for event_id, t0, sent, spam_seen, seen, end in trial_windows
                ]
        return Result(times, profiles, dict(steps), dm_rooms)
    finally:
        if observer is not None:
            await observer.stop()
        await world.close()


async def wait_until(condition: Callable[[], bool], failure: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError(failure)`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        await asyncio.sleep(0.05)


def report(label: str, times: dict[str, list[float]]) -> list[str]:
    """p50, p90 and mean of each series, and each reaction's ratio to the plain message."""

    def row(name: str, values: list[float]) -> str:
        return (
            f"  {name:44} {percentile(values, 50) * 1000:9.1f} ms {percentile(values, 90) * 1000:9.1f} ms"
            f" {statistics.fmean(values) * 1000:9.1f} ms"
        )

    plain = times[PLAIN]
    lines = [
        f"{label}: {len(plain)} trials",
        f"  {'':44} {'p50':>12} {'p90':>12} {'mean':>12}",
        *(row(name, values) for name, values in times.items()),
    ]
    for name, values in times.items():
        if name == PLAIN:
            continue
        ratio50 = percentile(values, 50) / percentile(plain, 50)
        ratio90 = percentile(values, 90) / percentile(plain, 90)
        which = "" if name == REACTION else " (c)"
        lines.append(f"  {'ratio reaction' + which + ' / plain':44} {ratio50:10.2f} × {ratio90:10.2f} ×")
        verdict = "within" if ratio50 <= 2.3 else "ABOVE"
        lines.append(f"    target: reaction p50 ≤ 2.3 × plain p50 (floor ≈ 2 ×): {verdict} target")
    return lines


async def main(args: argparse.Namespace) -> None:
    logs.configure("console", "error")
    modes = [False] if args.no_dm else [False, True]
    profiler = ReactionProfiler() if args.profile else None
    if args.fix:
        FIXES[args.fix][1]()
    with tempfile.TemporaryDirectory(prefix="abusebot-bench-reaction-") as tmp:
        synapse = SynapseServer(base_dir=Path(tmp) / "synapse")
        started = time.perf_counter()
        synapse.start()
        try:
            import synapse as synapse_package

            print(
                f"Reaction latency benchmark — Synapse {synapse_package.__version__} (SQLite) on 127.0.0.1, "
                f"Python {sys.version.split()[0]}; Synapse started in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            spammers = (
                "each spammer posted one harmless message first (--harmless-first)"
                if args.harmless_first
                else "the spam is each fresh spammer's first activity after a join the bot saw"
            )
            print(f"banned phrase {BANNED_PHRASE!r}; {spammers}", flush=True)
            if args.fix:
                print(f"(c) uses a throwaway fix, in this process only: {args.fix}: {FIXES[args.fix][0]}", flush=True)
            if profiler is not None:
                profiler.install()
            for notify in modes:
                label = "notify_users: true (the user is told by DM)" if notify else "notify_users: false"
                print(f"\nrunning {label}: {args.trials} trials + {args.warmup} warm-up …", flush=True)
                result = await run_mode(
                    synapse,
                    Path(tmp) / ("dm" if notify else "no-dm"),
                    notify=notify,
                    trials=args.trials,
                    warmup=args.warmup,
                    harmless_first=args.harmless_first,
                    fix=args.fix,
                    profiler=profiler,
                )
                lines = report(label, result.times)
                steps = ", ".join(f"{kind} × {count}" for kind, count in sorted(result.steps.items()))
                lines.append(
                    f"  the ladder's step for the spammers: {steps}; DM rooms the bot created: {result.dm_rooms}"
                )
                for name, profiles in result.profiles.items():
                    lines.append(f"  where the time of {name[:3]} goes (median ms after the spammer starts sending):")
                    lines.extend(breakdown(profiles))
                    lines.extend(critical_path(profiles))
                if profiler is not None:
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
    parser.add_argument(
        "--harmless-first", action="store_true", help="each spammer posts a harmless message first (ladder: warning)"
    )
    parser.add_argument("--profile", action="store_true", help="time the bot's steps (in-process wrappers)")
    parser.add_argument(
        "--fix", choices=sorted(FIXES), help="also time (c): a reaction with this throwaway monkeypatch on"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
