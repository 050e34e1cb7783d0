"""A permanent ``!mod ban`` published to our own policy list, appealed. Another moderator first
pardons the ban with ``!mod pardon`` (the bot then suggests "overturn the appeal"), then the
appeal is overturned. The README: overturn "pardons the infraction and lifts what is in force
(… a ban published to our policy list is removed from it)", and the member is told the decision
is "no longer in force". It must then be off our list — else every community following the
list keeps banning them, and our own bot (which watches its published list) bans them again
the moment they come back."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from urllib.parse import unquote

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.cases_helpers import CASE, command, from_bot, ledger_query
from tests.integration.test_cases import _dm_room_of, in_history
from tests.integration.test_durable_actions import KillingProxy, proxy  # noqa: F401 - the fixture
from tests.integration.test_loop import wait_for_checkpoint
from tests.integration.test_policy_lists import USER_RULE, new_list


async def test_an_overturned_appeal_removes_the_ban_from_our_list_even_after_a_pardon(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w = await World.create(synapse, tmp_path, members=("member",))
    try:
        bot_id, room = w.bot_account.user_id, w.protected[0]
        member = w.members["member"]
        lst = await new_list(w, publish=True)
        w.write_config({"policy_lists": {"publish": lst}})
        await w.mod.start_watching()
        await w.start_bot()
        reply = await command(w, f"!mod ban {member.user_id} spamming links")
        assert "published to our policy list" in reply, reply
        [(inf_id,)] = ledger_query(w, "SELECT id FROM infractions WHERE kind = 'ban'")
        notices = await _dm_room_of(member, bot_id)
        assert notices is not None
        await member.join(notices)
        await in_history(member, notices, bot_id, "banned")
        await member.say(notices, f"appeal #{inf_id} it was the conference link")
        ack = await in_history(member, notices, bot_id, "case #")
        number = CASE.search(ack).group(1)  # type: ignore[union-attr]
        await w.mod.wait_for(w.management, from_bot(bot_id, f"Appeal — case #{number}"), timeout=20)

        await command(w, f"!mod pardon {inf_id} looked at it again")
        decided = await command(w, f"!mod appeal {number} overturn the link was on topic")
        assert "overturned" in decided, decided
        await in_history(member, notices, bot_id, "no longer in force")

        await member.join(room)
        await asyncio.sleep(4)
        assert await w.mod.membership(room, member.user_id) == "join", "banned again by our own list"
        rule = await w.mod.state(lst, USER_RULE, f"rule:{member.user_id}")
        assert not rule, f"our list still bans the member after the overturn: {rule}"
    finally:
        await w.close()


async def test_an_overturn_cut_short_after_the_pardon_still_removes_the_ban_from_our_list(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    """The same decision, the bot SIGKILLed in the middle (at the read of our list's rule). The
    command runs again after the restart: it must finish the overturn, list included."""
    w = await World.create(synapse, tmp_path, members=("member",))
    try:
        bot_id = w.bot_account.user_id
        member = w.members["member"]
        lst = await new_list(w, publish=True)
        w.write_config({"homeserver": proxy.url, "policy_lists": {"publish": lst}})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)
        reply = await command(w, f"!mod ban {member.user_id} spamming links")
        assert "published to our policy list" in reply, reply
        [(inf_id,)] = ledger_query(w, "SELECT id FROM infractions WHERE kind = 'ban'")
        notices = await _dm_room_of(member, bot_id)
        assert notices is not None
        await member.join(notices)
        await in_history(member, notices, bot_id, "banned")
        await member.say(notices, f"appeal #{inf_id} it was the conference link")
        ack = await in_history(member, notices, bot_id, "case #")
        number = CASE.search(ack).group(1)  # type: ignore[union-attr]
        await w.mod.wait_for(w.management, from_bot(bot_id, f"Appeal — case #{number}"), timeout=20)

        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        rule_path = f"/rooms/{lst}/state/{USER_RULE}/"
        proxy.trigger = lambda method, path: method == "GET" and rule_path in unquote(path)  # type: ignore[assignment]
        decide = await w.mod.say(w.management, f"!mod appeal {number} overturn the link was on topic")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        w.spawn_bot()
        answer = await w.mod.wait_for_reply(w.management, decide, timeout=60)
        assert "overturned" in answer, answer
        rule = await w.mod.state(lst, USER_RULE, f"rule:{member.user_id}")
        assert not rule, f"our list still bans the member after the overturn: {rule}"
        assert ledger_query(w, "SELECT state FROM infractions WHERE id = ?", inf_id) == [("pardoned",)]
        assert await w.mod.membership(w.protected[0], member.user_id) != "ban"
    finally:
        w.kill_bot()
        await w.close()
