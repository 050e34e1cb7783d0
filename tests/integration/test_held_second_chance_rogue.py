"""Rogue staff: a non-moderator of the management room and a room admin of a protected room try
to open a violation vote, sanction a probationer, and vote; moderators' sanctions are turned
into the violation-vote pointer, whatever their form (temporary, room-only, by mention)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.second_chance_helpers import q1, vote_number
from tests.integration.test_cases import from_bot
from tests.integration.test_second_chance import ask, banned_member, command, poll_asking
from tests.integration.test_votes import answer, result


async def test_rogue_staff_cannot_open_violation_votes_nor_sanction_a_probationer(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    votes = {"votes": {"min_duration": "2s", "default_duration": "5s", "max_duration": "60s", "rules_duration": "90s"}}
    config = {**votes, "second_chance": {"after": "1s", "probation": "1h"}}
    w = await World.create(synapse, tmp_path, members=("member", "roomadmin"), config=config)
    try:
        bot_id, member, roomadmin = w.bot_account.user_id, w.members["member"], w.members["roomadmin"]
        room = w.protected[0]
        helper = w.person("helper")
        await w.mod.invite(w.management, helper.user_id)
        await helper.join(w.management)
        levels = await w.mod.state(w.management, "m.room.power_levels")
        assert levels is not None
        levels["users"][helper.user_id] = 10
        await w.mod.put_state(w.management, "m.room.power_levels", levels)
        levels = await w.mod.state(room, "m.room.power_levels")
        assert levels is not None
        levels["users"][roomadmin.user_id] = 60
        await w.mod.put_state(room, "m.room.power_levels", levels)
        await w.mod.start_watching()
        await roomadmin.start_watching()
        await w.start_bot()
        notices = await banned_member(w, member)
        await asyncio.sleep(1.2)

        # The second-chance vote: the helper's "no" counts for nothing; the moderator's "yes" passes it.
        _, vote, poll = await ask(w, member, notices, "sorry")
        await answer(helper, w.management, poll, "no")
        await answer(w.mod, w.management, poll, "yes")
        await w.mod.wait_for(w.management, result(bot_id, vote, "passed"), timeout=20)
        await member.wait_for(notices, from_bot(bot_id, "was granted"), timeout=30)
        assert q1(w, "SELECT no FROM votes WHERE id = ?", vote) == 0
        await member.join(room)

        # A non-moderator of the management room: never obeyed, no vote.
        await helper.say(w.management, f"!mod vote violation {member.user_id} I do not like them")
        # A room admin: the vote is for the management room only; sanctions are answered with the pointer.
        asked = await roomadmin.say(room, f"!mod vote violation {member.user_id} rude")
        reply = await roomadmin.wait_for_reply(room, asked, timeout=20)
        assert "management room" in reply, reply
        for text in (
            f"!mod ban {member.user_id} rude",
            f"!mod kick {member.user_id} rude",
            f"!mod mute {member.user_id} 10m rude",
        ):
            asked = await roomadmin.say(room, text)
            reply = await roomadmin.wait_for_reply(room, asked, timeout=20)
            assert "on probation" in reply, (text, reply)

        # Moderators: every form of sanction points to the violation vote.
        for text in (
            f"!mod ban {member.user_id} 1h rude",
            f"!mod ban {member.user_id} --room {room} rude",
            f"!mod warn {member.user_id} rude",
            f"!mod mute {member.user_id} 10m rude",
            f"!mod kick {member.user_id}",
        ):
            reply = await command(w, text)
            assert "on probation" in reply, (text, reply)
            assert f"!mod vote violation {member.user_id}" in reply, (text, reply)

        # A violation vote the helper alone answers: no quorum, no ban.
        opened = await command(w, f"!mod vote violation {member.user_id} spammed")
        number = vote_number(opened)
        vpoll = await w.mod.wait_for(w.management, poll_asking(f"Did {member.user_id} violate a rule?"), timeout=20)
        await answer(helper, w.management, vpoll["event_id"], "yes")
        await helper.say(w.management, f"!mod ballot {number} yes")
        await w.mod.wait_for(w.management, result(bot_id, number, "no quorum"), timeout=30)
        await asyncio.sleep(2)
        assert q1(w, "SELECT COUNT(*) FROM votes WHERE kind = 'violation'") == 1
        assert await w.mod.membership(room, member.user_id) == "join"
        assert q1(w, "SELECT COUNT(*) FROM infractions WHERE subject = ? AND state = 'active'", member.user_id) == 0
        assert q1(w, "SELECT probation_outcome FROM second_chances") is None
    finally:
        await w.close()
