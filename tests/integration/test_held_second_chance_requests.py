"""The banned spammer's side: variants of the request, hostile text, asking while a vote is
open, two chats at once, two requests in one sync batch, a denied request asked again at once,
a temporary ban."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.second_chance_helpers import VOTES, bodies, q1
from tests.integration.test_cases import CASE, from_bot, open_dm
from tests.integration.test_loop import ledger_query, wait_until
from tests.integration.test_second_chance import ask, banned_member, command, poll_asking
from tests.integration.test_votes import answer, result


async def test_variants_hostile_unicode_huge_text_and_asking_while_voting(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "1h"}}
    w = await World.create(synapse, tmp_path, members=("member",), config=config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        await w.mod.start_watching()
        await w.start_bot()
        notices = await banned_member(w, member)
        await asyncio.sleep(1.2)

        # No reason: asked for one, nothing recorded.
        await member.say(notices, "Second-Chance:  \u200b ")
        await member.wait_for(notices, from_bot(bot_id, "Please add why"), timeout=20)
        assert q1(w, "SELECT COUNT(*) FROM second_chances") == 0

        # A variant with zero-width and bidi characters and a huge statement.
        huge = "I am sorry \u202e" + "x" * 20000
        await member.say(notices, "SECOND\u200b-CHANCE: " + huge)
        ack = await member.wait_for(notices, from_bot(bot_id, "second chance is case #"), timeout=30)
        found = CASE.search(ack["content"]["body"])
        assert found is not None
        case = int(found.group(1))
        root = await w.mod.wait_for(w.management, from_bot(bot_id, f"Second chance — case #{case}"), timeout=20)
        assert "\u202e" not in root["content"]["body"]
        assert len(root["content"]["body"]) < 4000
        await w.mod.wait_for(w.management, poll_asking(f"Give {member.user_id} a second chance?"), timeout=20)
        [(state, length)] = ledger_query(w, "SELECT state, length(statement) FROM second_chances")
        assert state == "voting"
        assert length <= 2000

        # Asking again while the vote is open: told it is under consideration; no second vote.
        await member.say(notices, "second chance, please, I really mean it")
        reply = (await member.wait_for(notices, from_bot(bot_id, "already being considered"), timeout=20))["content"][
            "body"
        ]
        assert f"case #{case}" in reply
        assert q1(w, "SELECT COUNT(*) FROM votes") == 1
        assert q1(w, "SELECT COUNT(*) FROM cases WHERE kind = 'second_chance'") == 1

        history = await command(w, f"!mod history {member.user_id}")
        assert "under way" in history
        # A non-request ("second chances are…") goes to ModMail, not to a second request.
        assert q1(w, "SELECT COUNT(*) FROM second_chances WHERE state = 'voting'") == 1
    finally:
        await w.close()


async def test_two_chats_one_sync_batch_one_consideration(synapse: SynapseServer, tmp_path: Path) -> None:
    """The bot is down; the member writes a request in their notices room and another in a
    direct chat they opened, twice each. At the start they arrive in one batch: one case, one
    vote, the rest told it is being considered."""
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "1h"}}
    w = await World.create(synapse, tmp_path, members=("member",), config=config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        await w.mod.start_watching()
        await w.start_bot()
        notices = await banned_member(w, member)
        dm = await open_dm(member, bot_id)
        await w.stop_bot()
        await asyncio.sleep(1.2)
        sent = []
        for room in (notices, dm, notices, dm):
            sent.append((room, await member.say(room, f"second chance from {room[:6]} number {len(sent)}")))
        await w.start_bot()

        await w.mod.wait_for(w.management, poll_asking(f"Give {member.user_id} a second chance?"), timeout=30)

        async def told() -> bool:
            for _ in (notices, dm):
                await member.poll(500)
            seen = [e for room in (notices, dm) for e in member.seen.get(room, [])]
            return len(bodies(seen, bot_id, "already being considered")) >= 3

        await wait_until(told, 30, "three told it is being considered")
        await asyncio.sleep(2)
        await member.poll(500)
        seen = [e for room in (notices, dm) for e in member.seen.get(room, [])]
        assert len(bodies(seen, bot_id, "second chance is case #")) == 1
        assert len(bodies(seen, bot_id, "already being considered")) == 3
        assert q1(w, "SELECT COUNT(*) FROM votes") == 1
        assert q1(w, "SELECT COUNT(*) FROM cases WHERE kind = 'second_chance'") == 1
        assert q1(w, "SELECT COUNT(*) FROM cases WHERE state = 'open'") == 1
        assert ledger_query(w, "SELECT state FROM second_chances") == [("voting",)]
    finally:
        await w.close()


async def test_denied_then_asking_again_at_once_is_too_early_with_the_date(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    config = {**VOTES, "second_chance": {"after": "12s", "probation": "1h"}}
    w = await World.create(synapse, tmp_path, members=("member",), config=config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        await w.mod.start_watching()
        await w.start_bot()
        notices = await banned_member(w, member)
        await asyncio.sleep(12.5)
        _, vote, poll = await ask(w, member, notices, "please let me back")
        await answer(w.mod, w.management, poll, "no")
        await w.mod.wait_for(w.management, result(bot_id, vote, "failed"), timeout=20)
        await member.wait_for(notices, from_bot(bot_id, "decided not to grant"), timeout=20)
        await member.say(notices, "second chance I promise")
        reply = (await member.wait_for(notices, from_bot(bot_id, "too early"), timeout=20))["content"]["body"]
        assert "too early" in reply, reply
        assert "declined" in reply, reply
        assert "You may ask from 20" in reply, reply
        assert q1(w, "SELECT COUNT(*) FROM votes") == 1
        assert ledger_query(w, "SELECT state FROM second_chances ORDER BY id") == [("denied",), ("ineligible",)]
        # After the wait: a fresh vote.
        await asyncio.sleep(12.5)
        await member.say(notices, "second chance a month later, still sorry")
        from tests.integration.test_votes import poll_of

        await w.mod.wait_for(w.management, poll_of(vote + 1), timeout=20)
        assert ledger_query(w, "SELECT state FROM second_chances ORDER BY id") == [
            ("denied",),
            ("ineligible",),
            ("voting",),
        ]
        assert await w.mod.membership(w.protected[0], member.user_id) == "ban"
    finally:
        await w.close()


async def test_a_temporary_ban_is_not_eligible_and_nothing_is_opened(synapse: SynapseServer, tmp_path: Path) -> None:
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "1h"}}
    w = await World.create(synapse, tmp_path, members=("member",), config=config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        await w.mod.start_watching()
        await w.start_bot()
        reply = await command(w, f"!mod ban {member.user_id} 1h spamming links")
        assert "Banned" in reply
        from tests.integration.test_cases import _dm_room_of

        notices = await _dm_room_of(member, bot_id)
        assert notices is not None
        await member.join(notices)
        await asyncio.sleep(1.2)
        await member.say(notices, "second chance I am sorry")
        answer_ = (await member.wait_for(notices, from_bot(bot_id, "second chance"), timeout=20))["content"]["body"]
        assert "no permanent ban in force" in answer_
        assert q1(w, "SELECT COUNT(*) FROM votes") == 0
        assert q1(w, "SELECT COUNT(*) FROM cases WHERE kind = 'second_chance'") == 0
        assert ledger_query(w, "SELECT state FROM second_chances") == [("ineligible",)]
        history = await command(w, f"!mod history {member.user_id}")
        assert "not eligible" in history
    finally:
        await w.close()
