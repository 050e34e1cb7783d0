"""Probation edges: a violation vote whose ban meets a homeserver hiccup, a grant whose unban is
retried after a probation ban, a probation ending while a violation vote is open, a ladder whose
top is a temporary ban, a room where the bot cannot unban."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.second_chance_helpers import (
    FLOOD,
    VOTES,
    FailingProxy,
    bodies,
    failing,  # noqa: F401
    q1,
    vote_number,
)
from tests.integration.test_cases import from_bot
from tests.integration.test_loop import ledger_query, wait_until
from tests.integration.test_second_chance import ask, banned_member, command, poll_asking
from tests.integration.test_votes import answer, result


async def granted_world(
    synapse: SynapseServer, tmp_path: Path, config: dict, *, rooms: int = 1, homeserver: str | None = None
) -> tuple[World, str, int]:
    w = await World.create(synapse, tmp_path, rooms=rooms, members=("member",), config=config)
    if homeserver is not None:
        w.write_config({**config, "homeserver": homeserver})
    await w.mod.start_watching()
    await w.start_bot()
    notices = await banned_member(w, w.members["member"])
    [(ban_id,)] = ledger_query(w, "SELECT id FROM infractions WHERE kind = 'ban'")
    return w, notices, int(ban_id)


async def grant(w: World, notices: str) -> int:
    member, bot_id = w.members["member"], w.bot_account.user_id
    _, vote, poll = await ask(w, member, notices, "I will keep to the rules")
    await answer(w.mod, w.management, poll, "yes")
    await w.mod.wait_for(w.management, result(bot_id, vote, "passed"), timeout=20)
    return vote


async def test_a_passed_violation_vote_bans_even_after_a_homeserver_hiccup(
    synapse: SynapseServer,
    tmp_path: Path,
    failing: FailingProxy,  # noqa: F811
) -> None:
    """The violation vote passes while the homeserver answers 502 to bans for a few seconds: the
    permanent ban must still happen once it answers again (as a grant's unban is retried)."""
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "1h"}}
    w, notices, _ = await granted_world(synapse, tmp_path, config, homeserver=failing.url)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        await asyncio.sleep(1.2)
        await grant(w, notices)
        await member.wait_for(notices, from_bot(bot_id, "was granted"), timeout=30)
        assert await w.mod.membership(w.protected[0], member.user_id) != "ban"
        opened = await command(w, f"!mod vote violation {member.user_id} spammed the off-topic room")
        number = vote_number(opened)
        poll = await w.mod.wait_for(w.management, poll_asking(f"Did {member.user_id} violate a rule?"), timeout=20)
        failing.fail = lambda method, path: method == "POST" and path.endswith("/ban")
        await answer(w.mod, w.management, poll["event_id"], "yes")
        await w.mod.wait_for(w.management, result(bot_id, number, "passed"), timeout=20)

        async def tried() -> bool:
            return bool(failing.failed)

        await wait_until(tried, 20, "the ban tried")
        await asyncio.sleep(2)
        failing.fail = None

        async def banned() -> bool:
            return await w.mod.membership(w.protected[0], member.user_id) == "ban"

        await wait_until(banned, 45, "the violation vote's ban carried out after the hiccup")
        rows = ledger_query(
            w,
            "SELECT COUNT(*) FROM infractions WHERE subject = ? AND kind = 'ban' AND state = 'active'"
            " AND expires_at IS NULL",
            member.user_id,
        )
        assert rows == [(1,)]
    finally:
        await w.close()


async def test_a_retried_unban_of_a_grant_does_not_lift_the_probation_ban(
    synapse: SynapseServer,
    tmp_path: Path,
    failing: FailingProxy,  # noqa: F811
) -> None:
    """The grant's unban fails in the second room (502), so the vote's job retries it. Meanwhile
    the probationer, unbanned in the first room, floods it and is banned permanently by the
    protection. The retried grant must not lift that ban."""
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "1h"}, "protections": FLOOD}
    w, notices, first_ban = await granted_world(synapse, tmp_path, config, rooms=2, homeserver=failing.url)
    try:
        member = w.members["member"]
        room1, room2 = w.protected
        failing.fail = lambda method, path: method == "POST" and path.endswith("/unban") and room2 in unquote(path)
        await asyncio.sleep(1.2)
        await grant(w, notices)

        async def unbanned_in_room1() -> bool:
            return await w.mod.membership(room1, member.user_id) != "ban"

        await wait_until(unbanned_in_room1, 30, "unbanned in the first room")
        assert await w.mod.membership(room2, member.user_id) == "ban"
        await member.join(room1)
        for i in range(5):
            await member.say(room1, f"buy cheap stuff now {i}")

        async def protection_ban() -> bool:
            rows = ledger_query(
                w,
                "SELECT COUNT(*) FROM infractions WHERE subject = ? AND kind = 'ban' AND origin = 'protection'"
                " AND state = 'active'",
                member.user_id,
            )
            return rows[0][0] == 1 and await w.mod.membership(room1, member.user_id) == "ban"

        await wait_until(protection_ban, 30, "the probationer's flood banned")
        failing.fail = None

        async def grant_done() -> bool:
            return q1(w, "SELECT lifted_at IS NOT NULL FROM second_chances") == 1

        await wait_until(grant_done, 60, "the grant carried out")
        await asyncio.sleep(2)
        assert await w.mod.membership(room1, member.user_id) == "ban", "the probation ban was lifted by the retry"
        assert ledger_query(
            w,
            "SELECT state FROM infractions WHERE subject = ? AND origin = 'protection' AND kind = 'ban'",
            member.user_id,
        ) == [("active",)]
        assert ledger_query(w, "SELECT state FROM infractions WHERE id = ?", first_ban) == [("lifted",)]
    finally:
        await w.close()


async def test_probation_ending_while_a_violation_vote_is_open(synapse: SynapseServer, tmp_path: Path) -> None:
    """A violation vote opened during probation, passed after the probation's end: the member is
    banned permanently and the record says the probation was violated (not "completed")."""
    votes = {"votes": {"min_duration": "2s", "default_duration": "25s", "max_duration": "60s", "rules_duration": "90s"}}
    config = {**votes, "second_chance": {"after": "1s", "probation": "8s"}}
    w, notices, _ = await granted_world(synapse, tmp_path, config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        await asyncio.sleep(1.2)
        await grant(w, notices)
        await member.wait_for(notices, from_bot(bot_id, "was granted"), timeout=30)
        opened = await command(w, f"!mod vote violation {member.user_id} threatened a member")
        number = vote_number(opened)
        poll = await w.mod.wait_for(w.management, poll_asking(f"Did {member.user_id} violate a rule?"), timeout=20)

        async def ended() -> bool:
            return q1(w, "SELECT probation_outcome FROM second_chances") is not None or (
                q1(w, "SELECT COUNT(*) FROM jobs WHERE kind = 'probation_end' AND state = 'done'") == 1
            )

        await wait_until(ended, 30, "the probation's end")
        await answer(w.mod, w.management, poll["event_id"], "yes")
        await w.mod.wait_for(w.management, result(bot_id, number, "passed"), timeout=20)

        async def banned() -> bool:
            return await w.mod.membership(w.protected[0], member.user_id) == "ban"

        await wait_until(banned, 30, "the violation vote's ban")
        assert q1(w, "SELECT probation_outcome FROM second_chances") == "violated"
        await member.poll(500)
        told_over = bodies(member.seen.get(notices, []), bot_id, "probation is over")
        assert not told_over, "told 'member like any other' while a violation vote was open, then banned"
    finally:
        await w.close()


async def test_a_probation_violation_is_a_permanent_ban_even_when_the_ladder_tops_out_at_a_temporary_one(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    protections = {**FLOOD, "escalation": {"ladder": ["warning", "mute 1h", "ban 1d"]}}
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "1h"}, "protections": protections}
    w, notices, first = await granted_world(synapse, tmp_path, config)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        room = w.protected[0]
        await asyncio.sleep(1.2)
        await grant(w, notices)
        await member.wait_for(notices, from_bot(bot_id, "was granted"), timeout=30)
        await member.join(room)
        for i in range(5):
            await member.say(room, f"buy now {i}")

        async def banned() -> bool:
            return await w.mod.membership(room, member.user_id) == "ban"

        await wait_until(banned, 30, "the probationer's flood banned")
        rows = ledger_query(
            w,
            "SELECT origin, expires_at FROM infractions WHERE subject = ? AND kind = 'ban' AND id > ?",
            member.user_id,
            first,
        )
        assert rows == [("protection", None)], rows
    finally:
        await w.close()


async def test_a_room_where_the_bot_cannot_unban_is_not_called_unbanned(synapse: SynapseServer, tmp_path: Path) -> None:
    """After the ban, the bot lost its power in the second room. A granted second chance must not
    tell the staff they were "unbanned everywhere" (nor the member that they are no longer
    banned) while they are still banned there."""
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "1h"}}
    w, notices, _ = await granted_world(synapse, tmp_path, config, rooms=2)
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        room1, room2 = w.protected
        levels = await w.mod.state(room2, "m.room.power_levels")
        assert levels is not None
        levels["users"][bot_id] = 0
        await w.mod.put_state(room2, "m.room.power_levels", levels)
        await asyncio.sleep(2)
        await grant(w, notices)
        line = await w.mod.wait_for(w.management, from_bot(bot_id, "Second chance granted to"), timeout=30)
        terms = await member.wait_for(notices, from_bot(bot_id, "was granted"), timeout=30)
        assert await w.mod.membership(room1, member.user_id) != "ban"
        still = await w.mod.membership(room2, member.user_id) == "ban"
        if still:
            assert "unbanned everywhere" not in line["content"]["body"], line["content"]["body"]
            assert "no longer banned" not in terms["content"]["body"], terms["content"]["body"]
    finally:
        await w.close()
