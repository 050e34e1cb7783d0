"""The operator's view against the real Synapse: ``/metrics`` scraped after a flood is handled
(the counters moved, no label names anyone), and ``/healthz`` turning 503 while the homeserver
does not answer and 200 again once it does."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.second_chance_helpers import FailingProxy, failing  # noqa: F401
from tests.integration.test_loop import ledger_query, wait_until

FLOOD = {"flood": {"max_messages": 3, "per_seconds": 30, "cross_room_max_messages": 50}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_move_with_a_flood_and_health_follows_the_homeserver(
    synapse: SynapseServer,
    tmp_path: Path,
    failing: FailingProxy,  # noqa: F811
) -> None:
    port = free_port()
    w = await World.create(synapse, tmp_path, members=("spammer",))
    try:
        w.write_config(
            {
                "homeserver": failing.url,
                "protections": FLOOD,
                "sync_timeout_ms": 1000,
                "metrics": {"listen": f"127.0.0.1:{port}"},
            }
        )
        await w.start_bot()
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:

            async def health() -> tuple[int, dict[str, object]]:
                async with http.get(f"{base}/healthz") as reply:
                    return reply.status, await reply.json()

            async def healthy() -> bool:
                return (await health())[0] == 200

            await wait_until(healthy, 20, "healthy after the first sync")
            spammer, room = w.members["spammer"], w.protected[0]
            for i in range(4):
                await spammer.say(room, f"flood {i}")

            async def handled() -> bool:
                return bool(ledger_query(w, "SELECT COUNT(*) FROM infractions WHERE origin = 'protection'")[0][0])

            await wait_until(handled, 30, "the flood handled")
            async with http.get(f"{base}/metrics") as reply:
                assert reply.status == 200
                text = await reply.text()
            seen = samples(text)
            assert seen[("abusebot_events_total", (("kind", "m.room.message"),))] >= 4
            assert seen[("abusebot_protection_seconds_count", (("protection", "flood"),))] >= 4
            redacted = seen.get(("abusebot_actions_total", (("kind", "redact"), ("result", "ok"))), 0)
            assert redacted >= 1
            assert seen[("abusebot_protected_rooms", ())] == 1
            assert ("abusebot_outbox_depth", ()) in seen
            assert ("abusebot_sync_lag_seconds", ()) in seen
            assert ("abusebot_undecryptable_events_total", ()) in seen
            assert spammer.user_id not in text
            assert room not in text

            failing.fail = lambda method, path: True  # the homeserver stops answering

            async def stalled() -> bool:
                status, reason = await health()
                return status == 503 and reason.get("status") == "stalled"

            await wait_until(stalled, 30, "/healthz saying the sync stalled")
            failing.fail = None  # and it is back
            await wait_until(healthy, 60, "/healthz healthy again")
        with socket.socket() as probe:
            # Bound to the configured address only: not on every interface.
            assert probe.connect_ex(("127.0.0.2", port)) != 0
    finally:
        await w.close()
