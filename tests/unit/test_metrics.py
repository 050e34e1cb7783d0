"""The metrics' pure parts: bounded labels, the health rule (twice the sync timeout)."""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest
from prometheus_client import generate_latest

from abusebot.metrics import Metrics, event_kind


@attrs.define
class _Config:
    sync_timeout_ms: int = 30000


@attrs.define
class _Bot:
    config: Any = attrs.Factory(_Config)
    last_sync_at: float | None = None


@pytest.mark.parametrize(
    ("event_type", "state", "kind"),
    [
        ("m.room.message", False, "m.room.message"),
        ("m.room.name", True, "state"),
        ("@alice:example.org", False, "other"),
        ("com.example.custom", False, "other"),
    ],
)
def test_an_event_label_is_one_of_a_fixed_set(event_type: str, state: bool, kind: str) -> None:
    assert event_kind(event_type, state) == kind


def test_health_is_good_within_twice_the_sync_timeout() -> None:
    bot = _Bot()
    metrics = Metrics(bot)
    assert metrics.health()[0] == 503  # no sync yet: starting
    bot.last_sync_at = time.time() - 59
    assert metrics.health()[0] == 200
    bot.last_sync_at = time.time() - 61
    status, reason = metrics.health()
    assert status == 503
    assert "61 s ago" in str(reason["reason"]) or "62 s ago" in str(reason["reason"])


def test_a_scrape_names_no_one() -> None:
    metrics = Metrics(_Bot(last_sync_at=time.time()))
    metrics.event("@alice:example.org", False)
    metrics.action("ban", True)
    metrics.action("!room:example.org", False)
    text = generate_latest(metrics.registry).decode()
    assert "alice" not in text
    assert "!room" not in text
    assert 'abusebot_actions_total{kind="other",result="failed"} 1.0' in text
