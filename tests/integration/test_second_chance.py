"""The second chance against the real Synapse: a request too early (the date given), one granted
(unbanned everywhere, on probation, told the terms), a probationer's spam (a permanent ban at
once), a second request refused for good, a violation vote, a denial, a probation that runs out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World
from tests.integration.cases_helpers import command
from tests.integration.test_cases import CASE, _dm_room_of, from_bot, in_history
from tests.integration.test_loop import ledger_query, wait_until
from tests.integration.test_votes import POLL, VOTES, answer, result

FLOOD = {"flood": {"max_messages": 3, "per_seconds": 30, "cross_room_max_messages": 50}}


def poll_asking(fragment: str) -> Any:
    def predicate(event: Mapping[str, Any]) -> bool:
        question = ((event.get("content") or {}).get(POLL) or {}).get("question") or {}
        return event.get("type") == POLL and fragment in question.get("org.matrix.msc1767.text", "")

    return predicate


async def banned_member(w: World, person: Person) -> str:
    """Ban ``person`` everywhere by command; they join the room of the bot's notices: it."""
    command = await w.mod.say(w.management, f"!mod ban {person.user_id} spamming links")
    assert "Banned" in await w.mod.wait_for_reply(w.management, command, timeout=30)
    notices = await _dm_room_of(person, w.bot_account.user_id)
    assert notices is not None
    await person.join(notices)
    await person.start_watching()
    return notices


async def ask(w: World, person: Person, notices: str, why: str) -> tuple[int, int, str]:
    """``person`` asks for a second chance: (the case, the vote, the poll's event id)."""
    bot_id = w.bot_account.user_id
    await person.say(notices, f"second chance {why}")
    ack = await person.wait_for(notices, from_bot(bot_id, "second chance is case #"), timeout=20)
    found = CASE.search(ack["content"]["body"])
    assert found is not None
    case = int(found.group(1))
    root = await w.mod.wait_for(w.management, from_bot(bot_id, f"Second chance — case #{case}"), timeout=20)
    assert why in root["content"]["body"]
    poll = await w.mod.wait_for(w.management, poll_asking(f"Give {person.user_id} a second chance?"), timeout=20)
    question = poll["content"][POLL]["question"]["org.matrix.msc1767.text"]
    vote = int(question.split("vote #", 1)[1].split(":", 1)[0])
    return case, vote, str(poll["event_id"])


async def test_a_second_chance_refused_too_early_then_granted_then_lost_for_good(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Too early: the date they may ask. Then a case and a vote "Give <user> a second chance?";
    passed: unbanned in every protected room (the ban lifted, still on the record), probation,
    the terms told; ``!mod history`` shows it; ``!mod warn`` is answered with the violation
    vote; their flood is a permanent ban at once; a second request is refused for good."""
    config = {**VOTES, "second_chance": {"after": "4s", "probation": "1h"}, "protections": FLOOD}
    w = await World.create(synapse, tmp_path, rooms=2, members=("member",), config=config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        await w.mod.start_watching()
        await w.start_bot()
        notices = await banned_member(w, member)
        [(ban_id,)] = ledger_query(w, "SELECT id FROM infractions WHERE subject = ? AND kind = 'ban'", member.user_id)

        await member.say(notices, "second chance I am sorry")
        early = await member.wait_for(notices, from_bot(bot_id, "too early"), timeout=20)
        assert "You may ask from 20" in early["content"]["body"]
        assert ledger_query(w, "SELECT state FROM second_chances") == [("ineligible",)]
        assert ledger_query(w, "SELECT COUNT(*) FROM votes")[0][0] == 0

        await asyncio.sleep(4)
        case, vote, poll = await ask(w, member, notices, "I read the rules and I will keep to them")
        await answer(w.mod, w.management, poll, "yes")
        await w.mod.wait_for(w.management, result(bot_id, vote, "passed"), timeout=20)
        terms = await member.wait_for(notices, from_bot(bot_id, "was granted"), timeout=30)
        assert "probation" in terms["content"]["body"]
        assert "permanent ban" in terms["content"]["body"]
        await w.mod.wait_for(w.management, from_bot(bot_id, "Second chance granted to", member.user_id), timeout=20)
        for room in w.protected:
            assert await w.mod.membership(room, member.user_id) != "ban"
        assert ledger_query(w, "SELECT state FROM infractions WHERE id = ?", ban_id) == [("lifted",)]
        assert ledger_query(w, "SELECT state, outcome FROM cases WHERE id = ?", case) == [("closed", "granted")]
        assert ledger_query(w, "SELECT COUNT(*) FROM probation WHERE user_id = ?", member.user_id)[0][0] == 1

        history = await command(w, f"!mod history {member.user_id}")
        assert "Second chance granted" in history
        assert "ON PROBATION until" in history
        warned = await command(w, f"!mod warn {member.user_id} rude")
        assert "on probation" in warned
        assert f"!mod vote violation {member.user_id}" in warned
        assert ledger_query(w, "SELECT COUNT(*) FROM infractions WHERE kind = 'warning'")[0][0] == 0

        room = w.protected[0]
        await member.join(room)
        for i in range(4):
            await member.say(room, f"buy now {i}")

        async def banned_again() -> bool:
            return await w.mod.membership(room, member.user_id) == "ban"

        await wait_until(banned_again, 30, "the probationer's flood banned")
        rows = ledger_query(
            w,
            "SELECT origin, expires_at FROM infractions WHERE subject = ? AND kind = 'ban' AND id > ?",
            member.user_id,
            ban_id,
        )
        assert rows == [("protection", None)]

        await member.say(notices, "second chance please, one more")
        refused = await in_history(member, notices, bot_id, "only one")
        assert "given a second chance" in refused
        assert ledger_query(w, "SELECT state FROM second_chances ORDER BY id") == [
            ("ineligible",),
            ("granted",),
            ("ineligible",),
        ]
    finally:
        await w.close()


async def test_a_violation_vote_bans_a_denial_is_told_and_a_probation_runs_out(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Three banned members ask: the vote on the first passes and ``!mod vote violation`` ("Did
    <user> violate a rule?") bans them permanently when it passes; the second's fails (told
    politely, the ban stays); the third's probation runs out (completed, told, posted)."""
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "12s"}}
    w = await World.create(synapse, tmp_path, members=("member", "other", "third"), config=config)
    try:
        bot_id = w.bot_account.user_id
        member, other, third = (w.members[name] for name in ("member", "other", "third"))
        await w.mod.start_watching()
        await w.start_bot()
        chats = {person.user_id: await banned_member(w, person) for person in (member, other, third)}
        await asyncio.sleep(1)
        asked = {}
        for person in (member, other, third):
            asked[person.user_id] = await ask(w, person, chats[person.user_id], f"{person.user_id[1:6]} is sorry")
        for person, choice in ((member, "yes"), (other, "no"), (third, "yes")):
            poll = asked[person.user_id][2]
            await answer(w.mod, w.management, poll, choice)
        await member.wait_for(chats[member.user_id], from_bot(bot_id, "was granted"), timeout=30)
        denied = await other.wait_for(chats[other.user_id], from_bot(bot_id, "decided not to grant"), timeout=30)
        assert "ban stays in force" in denied["content"]["body"]
        assert await w.mod.membership(w.protected[0], other.user_id) == "ban"

        refused = await command(w, f"!mod vote violation {other.user_id} spam")
        assert "not on probation" in refused
        opened = await command(w, f"!mod vote violation {member.user_id} insulted someone in off-topic")
        number = int(opened.split("vote #", 1)[1].split(" ", 1)[0])
        poll = await w.mod.wait_for(w.management, poll_asking(f"Did {member.user_id} violate a rule?"), timeout=20)
        await answer(w.mod, w.management, poll["event_id"], "yes")
        await w.mod.wait_for(w.management, result(bot_id, number, "passed"), timeout=20)

        async def banned_for_good() -> bool:
            rows = ledger_query(
                w,
                "SELECT COUNT(*) FROM infractions WHERE subject = ? AND kind = 'ban' AND state = 'active'"
                " AND expires_at IS NULL",
                member.user_id,
            )
            return bool(rows[0][0]) and await w.mod.membership(w.protected[0], member.user_id) == "ban"

        await wait_until(banned_for_good, 30, "the violation vote's permanent ban")
        assert ledger_query(w, "SELECT probation_outcome FROM second_chances WHERE user_id = ?", member.user_id) == [
            ("violated",)
        ]

        over = await third.wait_for(chats[third.user_id], from_bot(bot_id, "probation is over"), timeout=40)
        assert "member like any other" in over["content"]["body"]
        await w.mod.wait_for(w.management, from_bot(bot_id, "probation of", third.user_id, "completed"), timeout=20)
        assert ledger_query(w, "SELECT user_id, state, probation_outcome FROM second_chances ORDER BY id") == [
            (member.user_id, "granted", "violated"),
            (other.user_id, "denied", None),
            (third.user_id, "granted", "completed"),
        ]
    finally:
        await w.close()
