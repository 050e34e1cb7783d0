"""kill -9 at the worst moment of a second chance: right as its first unban lands, after the
vote passed. After a restart the rest is done, each step once: unbanned in every protected
room, the ban lifted, the terms told once, the grant posted once, the case closed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.test_cases import from_bot
from tests.integration.test_durable_actions import KillingProxy, proxy  # noqa: F401
from tests.integration.test_loop import ledger_query, wait_for_checkpoint, wait_until
from tests.integration.test_second_chance import ask, banned_member
from tests.integration.test_votes import VOTES, answer


async def test_kill_9_as_the_first_unban_lands_finishes_the_grant_once(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "1h"}}
    w = await World.create(synapse, tmp_path, rooms=2, members=("member",), config=config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        w.write_config({**config, "homeserver": proxy.url})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)
        notices = await banned_member(w, member)
        await asyncio.sleep(1)
        case, vote, poll = await ask(w, member, notices, "I will keep to the rules")
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = lambda method, path: method == "POST" and path.endswith("/unban")
        await answer(w.mod, w.management, poll, "yes")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        assert ledger_query(w, "SELECT state, lifted_at IS NULL FROM second_chances") == [("granted", 1)]
        w.spawn_bot()
        await member.wait_for(notices, from_bot(bot_id, "was granted"), timeout=40)
        await w.mod.wait_for(w.management, from_bot(bot_id, "Second chance granted to"), timeout=20)

        async def unbanned_everywhere() -> bool:
            return all([await w.mod.membership(room, member.user_id) != "ban" for room in w.protected])

        await wait_until(unbanned_everywhere, 30, "unbanned in every protected room")
        await asyncio.sleep(2)
        await member.poll(1000)
        await w.mod.poll(1000)
        told = [e for e in member.seen.get(notices, []) if from_bot(bot_id, "was granted")(e)]
        posted = [e for e in w.mod.seen.get(w.management, []) if from_bot(bot_id, "Second chance granted to")(e)]
        assert (len(told), len(posted)) == (1, 1)
        assert ledger_query(w, "SELECT state, lifted_at IS NOT NULL FROM second_chances") == [("granted", 1)]
        assert ledger_query(w, "SELECT state FROM infractions WHERE kind = 'ban'") == [("lifted",)]
        assert ledger_query(w, "SELECT outcome FROM cases WHERE id = ?", case) == [("granted",)]
        assert ledger_query(w, "SELECT state FROM votes WHERE id = ?", vote) == [("passed",)]
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        await w.close()
