"""kill -9 at the worst moments of a second chance: the moment the grant's unban reached the
homeserver, and the moment the probation's end is posted. After a restart: everything once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from urllib.parse import unquote

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.second_chance_helpers import VOTES, bodies, q1
from tests.integration.test_cases import from_bot
from tests.integration.test_durable_actions import KillingProxy, proxy  # noqa: F401
from tests.integration.test_loop import ledger_query, wait_for_checkpoint, wait_until
from tests.integration.test_second_chance import ask, banned_member
from tests.integration.test_votes import answer


async def test_kill_9_as_the_grants_unban_lands_then_everything_once(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "20s"}}
    w = await World.create(synapse, tmp_path, rooms=2, members=("member",), config=config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        w.write_config({**config, "homeserver": proxy.url})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)
        notices = await banned_member(w, member)
        [(ban_id,)] = ledger_query(w, "SELECT id FROM infractions WHERE kind = 'ban'")
        await asyncio.sleep(1.2)
        _, vote, poll = await ask(w, member, notices, "I changed")
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = lambda method, path: method == "POST" and path.endswith("/unban")
        await answer(w.mod, w.management, poll, "yes")
        await asyncio.wait_for(proxy.fired.wait(), 40)
        assert q1(w, "SELECT state FROM second_chances") == "granted"
        w.spawn_bot()

        await member.wait_for(notices, from_bot(bot_id, "was granted"), timeout=40)
        await w.mod.wait_for(w.management, from_bot(bot_id, "Second chance granted to"), timeout=30)
        for room in w.protected:

            async def unbanned(room: str = room) -> bool:
                return await w.mod.membership(room, member.user_id) != "ban"

            await wait_until(unbanned, 20, f"unbanned in {room}")
        assert ledger_query(w, "SELECT state FROM infractions WHERE id = ?", ban_id) == [("lifted",)]
        assert q1(w, "SELECT lifted_at IS NOT NULL FROM second_chances") == 1
        assert q1(w, "SELECT COUNT(*) FROM jobs WHERE kind = 'probation_end'") == 1

        over = await member.wait_for(notices, from_bot(bot_id, "probation is over"), timeout=40)
        assert over
        await w.mod.wait_for(w.management, from_bot(bot_id, "probation of", "completed"), timeout=20)
        await asyncio.sleep(3)
        await member.poll(500)
        await w.mod.poll(500)
        seen = member.seen.get(notices, [])
        assert len(bodies(seen, bot_id, "was granted")) == 1
        assert len(bodies(seen, bot_id, "probation is over")) == 1
        staff = w.mod.seen.get(w.management, [])
        assert len(bodies(staff, bot_id, "Second chance granted to")) == 1
        assert len(bodies(staff, bot_id, f"vote #{vote} passed")) == 1
        assert len(bodies(staff, bot_id, "probation of", "completed")) == 1
        assert ledger_query(w, "SELECT state, probation_outcome FROM second_chances") == [("granted", "completed")]
        assert ledger_query(w, "SELECT state, outcome FROM cases WHERE kind = 'second_chance'") == [
            ("closed", "granted")
        ]
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        await w.close()


async def test_kill_9_as_the_probation_end_is_posted_then_once(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "12s"}}
    w = await World.create(synapse, tmp_path, members=("member",), config=config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        w.write_config({**config, "homeserver": proxy.url})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)
        notices = await banned_member(w, member)
        await asyncio.sleep(1.2)
        poll = (await ask(w, member, notices, "I changed"))[2]
        await answer(w.mod, w.management, poll, "yes")
        await member.wait_for(notices, from_bot(bot_id, "was granted"), timeout=40)
        await w.mod.wait_for(w.management, from_bot(bot_id, "Second chance granted to"), timeout=30)

        async def grant_done() -> bool:
            return q1(w, "SELECT COUNT(*) FROM jobs WHERE kind = 'vote_close' AND state = 'pending'") == 0

        await wait_until(grant_done, 30, "the grant finished")
        management = w.management
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = lambda method, path: (
            method == "PUT" and "/send/m.room.message/" in path and (management in unquote(path))
        )
        await asyncio.wait_for(proxy.fired.wait(), 40)
        w.spawn_bot()
        await member.wait_for(notices, from_bot(bot_id, "probation is over"), timeout=40)
        await asyncio.sleep(3)
        await member.poll(500)
        await w.mod.poll(500)
        assert len(bodies(member.seen.get(notices, []), bot_id, "probation is over")) == 1
        assert len(bodies(w.mod.seen.get(management, []), bot_id, "probation of", "completed")) == 1
        assert ledger_query(w, "SELECT probation_outcome FROM second_chances") == [("completed",)]
        assert q1(w, "SELECT COUNT(*) FROM jobs WHERE kind = 'probation_end' AND state = 'pending'") == 0
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        await w.close()


async def test_kill_9_as_the_requests_poll_is_posted_then_one_vote_one_root_one_ack(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    from tests.integration.test_second_chance import poll_asking
    from tests.integration.test_votes import POLL

    # The vote outlasts the test's looks (a closed one is decided, no longer "voting").
    config = {"votes": {**VOTES["votes"], "default_duration": "60s"}, "second_chance": {"after": "1s"}}
    w = await World.create(synapse, tmp_path, members=("member",), config=config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        w.write_config({**config, "homeserver": proxy.url})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)
        notices = await banned_member(w, member)
        await asyncio.sleep(1.2)
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = lambda method, path: method == "PUT" and f"/send/{POLL}/" in path
        await member.say(notices, "second chance I have changed")
        await asyncio.wait_for(proxy.fired.wait(), 40)
        w.spawn_bot()
        await member.wait_for(notices, from_bot(bot_id, "second chance is case #"), timeout=40)
        poll = await w.mod.wait_for(w.management, poll_asking(f"Give {member.user_id} a second chance?"), 30)
        await asyncio.sleep(3)
        await w.mod.poll(500)
        about_case = bodies(w.mod.seen.get(w.management, []), bot_id, "case #1")
        assert not [b for b in about_case if "Urgent" in b], about_case
        assert [b for b in about_case if "Second chance — case #1" in b and "I have changed" in b], about_case
        await asyncio.sleep(3)
        await member.poll(500)
        await w.mod.poll(500)
        staff = w.mod.seen.get(w.management, [])
        assert len([e for e in staff if poll_asking("a second chance?")(e)]) == 1
        assert len(bodies(staff, bot_id, "Second chance — case #")) == 1
        assert len(bodies(member.seen.get(notices, []), bot_id, "second chance is case #")) == 1
        assert ledger_query(w, "SELECT state, vote_id IS NOT NULL FROM second_chances") == [("voting", 1)]
        assert q1(w, "SELECT COUNT(*) FROM votes") == 1
        assert q1(w, "SELECT COUNT(*) FROM cases") == 1
        assert q1(w, "SELECT poll_event FROM votes") == poll["event_id"]
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        await w.close()
