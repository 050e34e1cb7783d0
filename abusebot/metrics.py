"""What an operator sees of the bot: Prometheus metrics at ``/metrics`` and a health check at
``/healthz``, served on ``metrics.listen`` only (loopback in the sample config).

* ``abusebot_events_total{kind}``: events handled, by type (a fixed set of kinds, else
  ``state`` or ``other``: no label ever carries a user id, a room id or free text);
* ``abusebot_protection_seconds{protection}``: each protection's evaluation time (histogram);
* ``abusebot_actions_total{kind,result}``: actions on the homeserver (the outbox's intents) by
  kind and ``ok`` / ``failed``;
* gauges read at each scrape: ``abusebot_outbox_depth``, ``abusebot_write_queue_depth``,
  ``abusebot_sync_lag_seconds`` (since the last completed sync), ``abusebot_policy_rules``,
  ``abusebot_protected_rooms``, ``abusebot_open_cases``, ``abusebot_open_votes``; and the counter
  ``abusebot_undecryptable_events_total``.

``/healthz`` answers 200 while the last sync completed within twice the sync timeout, 503
otherwise, each with a one-line JSON reason.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Iterator
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger("abusebot.metrics")

#: Event types counted by name; any other is ``state`` (a state event) or ``other``.
EVENT_KINDS = frozenset(
    {
        "m.room.message",
        "m.room.member",
        "m.room.encrypted",
        "m.reaction",
        "m.room.redaction",
        "m.sticker",
        "m.room.power_levels",
        "m.policy.rule.user",
        "m.policy.rule.room",
        "m.policy.rule.server",
        "org.matrix.msc3381.poll.response",
    }
)
ACTION_KINDS = frozenset({"ban", "unban", "kick", "redact", "send", "dm", "power", "join_rule", "acl", "state"})
#: Seconds: a protection's look at one event is microseconds to milliseconds.
BUCKETS = (0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def event_kind(event_type: str, is_state: bool) -> str:
    """The label of an event type (bounded: never an arbitrary string)."""
    if event_type in EVENT_KINDS:
        return event_type
    return "state" if is_state else "other"


class Metrics:
    """The bot's counters and histograms, and the gauges read off the bot at each scrape.

    Counted in plain Python (the bot is one thread: no lock is needed) and handed to
    prometheus-client only when scraped: a count costs a dictionary step, not a labelled
    child's lock — the pipeline pays for it on every event."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.registry = CollectorRegistry(auto_describe=True)
        self.events: dict[str, int] = {}
        self.actions: dict[tuple[str, str], int] = {}
        #: protection → (count per bucket, not cumulative; the +Inf one last), sum.
        self.protections: dict[str, tuple[list[int], list[float]]] = {}
        self._kinds: dict[str, str] = {}
        self._outbox_depth = 0
        self.registry.register(_Gauges(self))

    def event(self, event_type: str, is_state: bool) -> None:
        """One event handled."""
        kind = self._kinds.get(event_type)
        if kind is None:
            kind = self._kinds[event_type] = event_kind(event_type, is_state)
            if len(self._kinds) > 10_000:  # arbitrary types from a hostile room: forget the cache, not the counts
                self._kinds.clear()
        self.events[kind] = self.events.get(kind, 0) + 1

    def protection(self, name: str, seconds: float) -> None:
        """One protection's look at one event."""
        entry = self.protections.get(name)
        if entry is None:
            entry = self.protections[name] = ([0] * (len(BUCKETS) + 1), [0.0])
        entry[0][bisect.bisect_left(BUCKETS, seconds)] += 1
        entry[1][0] += seconds

    def action(self, kind: str, ok: bool) -> None:
        """One action answered by the homeserver (or given up)."""
        key = (kind if kind in ACTION_KINDS else "other", "ok" if ok else "failed")
        self.actions[key] = self.actions.get(key, 0) + 1

    async def refresh(self) -> None:
        """Read what needs the ledger before a scrape (the outbox's depth)."""
        ledger = getattr(self.bot, "ledger", None)
        if ledger is not None:
            self._outbox_depth = await ledger.outbox_depth()

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status, reason): 200 while the last sync completed within twice the sync timeout."""
        limit = 2 * self.bot.config.sync_timeout_ms / 1000
        last = self.bot.last_sync_at
        if last is None:
            return 503, {"status": "starting", "reason": "no sync has completed yet"}
        ago = time.time() - last
        if ago > limit:
            reason = f"the last sync completed {ago:.0f} s ago (more than {limit:.0f} s)"
            return 503, {"status": "stalled", "reason": reason}
        return 200, {"status": "ok", "last_sync_seconds_ago": round(ago, 1)}

    def families(self) -> Iterator[Metric]:
        """The counters and histograms, as prometheus-client writes them."""
        events = CounterMetricFamily("abusebot_events", "Events handled, by kind.", labels=["kind"])
        for kind, count in sorted(self.events.items()):
            events.add_metric([kind], float(count))
        yield events
        actions = CounterMetricFamily(
            "abusebot_actions", "Actions on the homeserver, by kind and result.", labels=["kind", "result"]
        )
        for (kind, result), count in sorted(self.actions.items()):
            actions.add_metric([kind, result], float(count))
        yield actions
        seconds = HistogramMetricFamily(
            "abusebot_protection_seconds", "Time a protection took to look at one event.", labels=["protection"]
        )
        for name, (counts, total) in sorted(self.protections.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            seconds.add_metric([name], buckets, total[0])
        yield seconds


class _Gauges(Collector):
    """Gauges computed when scraped (nothing to keep up to date between scrapes)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics.families()
        bot = self.metrics.bot
        values: dict[str, tuple[str, float]] = {
            "abusebot_outbox_depth": ("Intents recorded and not yet answered.", self.metrics._outbox_depth),
            "abusebot_protected_rooms": ("Rooms the bot protects.", _len(getattr(bot, "store", None), "protected")),
            "abusebot_policy_rules": ("Policy rules loaded from the watched lists.", _rules(bot)),
            "abusebot_open_cases": ("Cases (reports, ModMail, appeals) still open.", _feature(bot, "cases")),
            "abusebot_open_votes": ("Staff votes still open.", _feature(bot, "votes")),
        }
        queue = getattr(bot, "queue", None)
        values["abusebot_write_queue_depth"] = ("Writes waiting for the homeserver.", float(getattr(queue, "depth", 0)))
        last = getattr(bot, "last_sync_at", None)
        lag = time.time() - last if last is not None else float("nan")
        values["abusebot_sync_lag_seconds"] = ("Seconds since the last completed sync.", lag)
        for name, (documentation, value) in values.items():
            family = GaugeMetricFamily(name, documentation)
            family.add_metric([], float(value))
            yield family
        crypto = getattr(bot, "crypto", None)
        undecryptable = CounterMetricFamily(
            "abusebot_undecryptable_events", "Encrypted events the bot could not decrypt (when they came)."
        )
        undecryptable.add_metric([], float(getattr(crypto, "undecryptable", 0) if crypto is not None else 0))
        yield undecryptable


def _len(owner: Any, attribute: str) -> float:
    return float(len(getattr(owner, attribute, ()) or ()))


def _rules(bot: Any) -> float:
    policies = getattr(bot, "policies", None)
    index = getattr(policies, "index", None)
    return float(len(index)) if index is not None else 0.0


def _feature(bot: Any, name: str) -> float:
    host = getattr(bot, "host", None)
    feature = host.features.get(name) if host is not None else None
    if feature is None:
        return 0.0
    counted = getattr(feature, "_open", 0)
    return float(sum(counted.values()) if isinstance(counted, dict) else counted)


class MetricsServer:
    """``/metrics`` and ``/healthz`` on one address (aiohttp, already a dependency of nio)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen (on the configured address only)."""
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("metrics_listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _scrape(self, request: web.Request) -> web.Response:
        try:
            await self.metrics.refresh()
        except Exception as err:  # a scrape never fails because the ledger is busy
            log.warning("metrics_refresh_failed", error=repr(err))
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _health(self, request: web.Request) -> web.Response:
        status, reason = self.metrics.health()
        return web.Response(status=status, text=json.dumps(reason) + "\n", content_type="application/json")
