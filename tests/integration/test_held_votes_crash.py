"""kill -9 at the worst moments of a vote: right after its poll reached the homeserver, and
right after its result was recorded, as the poll is being ended. After a restart: one poll,
one poll end, one result line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from tests.integration.test_durable_actions import KillingProxy, proxy  # noqa: F401
from tests.integration.test_loop import ledger_query, wait_for_checkpoint, wait_until
from tests.integration.test_votes import POLL, answer, poll_of, staff_world
from tests.integration.votes_helpers import any_result, results_of

POLL_END = "org.matrix.msc3381.poll.end"


async def test_kill_9_right_after_the_poll_is_posted_leaves_one_poll(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    w, (mod,) = await staff_world(synapse, tmp_path, moderators=1)
    try:
        bot_id = w.bot_account.user_id
        w.write_config(
            {
                "homeserver": proxy.url,
                "votes": {
                    "min_duration": "2s",
                    "default_duration": "6s",
                    "max_duration": "60s",
                    "rules_duration": "90s",
                },
            }
        )
        w.spawn_bot()
        await wait_for_checkpoint(w)
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = lambda method, path: method == "PUT" and f"/send/{POLL}/" in path
        command = await w.mod.say(w.management, "!mod vote open --duration 8s Crash after the poll?")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        w.spawn_bot()
        reply = await w.mod.wait_for_reply(w.management, command, timeout=30)
        assert "vote #1 is open" in reply, reply
        poll = await w.mod.wait_for(w.management, poll_of(1), timeout=20)
        await answer(mod, w.management, poll["event_id"], "yes")
        await w.mod.wait_for(w.management, any_result(bot_id, 1), timeout=30)
        await asyncio.sleep(2)
        await w.mod.poll(1000)
        seen = w.mod.seen.get(w.management, [])
        polls = [e for e in seen if poll_of(1)(e)]
        assert len(polls) == 1, [e["event_id"] for e in polls]
        assert ledger_query(w, "SELECT poll_event FROM votes WHERE id = 1") == [(poll["event_id"],)]
        assert len(results_of(seen, bot_id, 1)) == 1
        assert ledger_query(w, "SELECT COUNT(*) FROM votes") == [(1,)]
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        await w.close()


async def test_kill_9_right_after_the_result_is_recorded_posts_it_once(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    w, (mod,) = await staff_world(synapse, tmp_path, moderators=1)
    try:
        bot_id = w.bot_account.user_id
        w.write_config(
            {
                "homeserver": proxy.url,
                "votes": {
                    "min_duration": "2s",
                    "default_duration": "6s",
                    "max_duration": "60s",
                    "rules_duration": "90s",
                },
            }
        )
        w.spawn_bot()
        await wait_for_checkpoint(w)
        command = await w.mod.say(w.management, "!mod vote open --duration 8s Crash at the result?")
        assert "is open" in await w.mod.wait_for_reply(w.management, command, timeout=30)
        poll = await w.mod.wait_for(w.management, poll_of(1), timeout=20)
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = lambda method, path: method == "PUT" and f"/send/{POLL_END}/" in path
        await answer(mod, w.management, poll["event_id"], "yes")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        assert ledger_query(w, "SELECT state FROM votes WHERE id = 1") == [("passed",)]
        w.spawn_bot()

        def ends(event: dict) -> bool:
            rel = (event.get("content") or {}).get("m.relates_to") or {}
            return event.get("type") == POLL_END and rel.get("event_id") == poll["event_id"]

        await w.mod.wait_for(w.management, any_result(bot_id, 1), timeout=30)
        await w.mod.wait_for(w.management, ends, timeout=30)

        async def settled() -> bool:
            pending = "SELECT COUNT(*) FROM jobs WHERE kind = 'vote_close' AND state = 'pending'"
            return ledger_query(w, pending) == [(0,)]

        await wait_until(settled, 20, "the closing job done")
        await asyncio.sleep(2)
        await w.mod.poll(1000)
        seen = w.mod.seen.get(w.management, [])
        assert len([e for e in seen if ends(e)]) == 1
        assert len(results_of(seen, bot_id, 1)) == 1
        assert "1 yes, 0 no, 0 no opinion; 1 of 1" in results_of(seen, bot_id, 1)[0]["content"]["body"]
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        await w.close()
