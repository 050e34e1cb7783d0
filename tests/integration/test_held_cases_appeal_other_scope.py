"""A member has two bans in force: a temporary ban in all protected rooms (#1, from the
management room) and a permanent ban in one room (#2, typed by that room's admin there). They
appeal #1 only, and the appeal is overturned. #2 was not appealed and stays active in the
ledger: the member must stay banned in that room. (The overturn lifts "what is in force" of the
decision appealed — not a different decision of a different scope.)"""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.cases_helpers import CASE, command, from_bot, ledger_query
from tests.integration.test_cases import _dm_room_of, in_history


async def test_overturning_an_everywhere_ban_keeps_a_separate_room_ban_in_force(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w = await World.create(synapse, tmp_path, rooms=2, members=("member",))
    try:
        bot_id = w.bot_account.user_id
        member = w.members["member"]
        gore_room, other_room = w.protected
        await w.mod.start_watching()
        await w.start_bot()
        await command(w, f"!mod ban {member.user_id} 7d spamming links")
        # The room's admin bans them for good in their own room, for something else.
        typed = await w.mod.say(gore_room, f"!mod ban {member.user_id} posting gore")
        await w.mod.wait_for_reply(gore_room, typed, timeout=30)
        rows = ledger_query(w, "SELECT id, scope, state FROM infractions WHERE kind = 'ban' ORDER BY id")
        (everywhere, scope1, _), (room_ban, scope2, state2) = rows
        assert scope1 == "*", rows
        assert (scope2, state2) == (gore_room, "active"), rows

        notices = await _dm_room_of(member, bot_id)
        assert notices is not None
        await member.join(notices)
        await in_history(member, notices, bot_id, "banned")
        await member.say(notices, f"appeal #{everywhere} the links were on topic")
        ack = await in_history(member, notices, bot_id, "case #")
        number = CASE.search(ack).group(1)  # type: ignore[union-attr]
        await w.mod.wait_for(w.management, from_bot(bot_id, f"Appeal — case #{number}"), timeout=20)
        answer = await command(w, f"!mod appeal {number} overturn the links were fine")
        assert "overturned" in answer, answer

        assert await w.mod.membership(other_room, member.user_id) != "ban"
        assert ledger_query(w, "SELECT state FROM infractions WHERE id = ?", room_ban) == [("active",)]
        assert await w.mod.membership(gore_room, member.user_id) == "ban", (
            f"the room ban #{room_ban} (not appealed, still active) was lifted by the overturn of #{everywhere}"
        )
    finally:
        await w.close()
