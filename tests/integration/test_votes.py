"""Staff votes against the real Synapse: polls, ballots by poll answer and by command, the
quorum ("no opinion" counts), electors only, early close, deadlines that outlive a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World
from tests.integration.test_loop import ledger_query

#: Votes in seconds, so the tests need not wait an hour (the policy's defaults are 1h/24h/48h/7d).
VOTES = {"votes": {"min_duration": "2s", "default_duration": "6s", "max_duration": "60s", "rules_duration": "90s"}}
POLL = "org.matrix.msc3381.poll.start"


async def staff_world(synapse: SynapseServer, tmp_path: Path, moderators: int = 3) -> tuple[World, list[Person]]:
    """A world whose management room has ``moderators`` moderators (the world's own first) and
    one member below the moderator level."""
    w = await World.create(synapse, tmp_path, members=(), config=VOTES)
    mods = [w.mod]
    levels = await w.mod.state(w.management, "m.room.power_levels")
    assert levels is not None
    for n in range(moderators - 1):
        extra = w.person(f"mod{n + 2}")
        await w.mod.invite(w.management, extra.user_id)
        await extra.join(w.management)
        levels["users"][extra.user_id] = 50
        mods.append(extra)
    helper = w.person("helper")
    await w.mod.invite(w.management, helper.user_id)
    await helper.join(w.management)
    levels["users"][helper.user_id] = 10
    await w.mod.put_state(w.management, "m.room.power_levels", levels)
    w.members["helper"] = helper
    await w.mod.start_watching()
    return w, mods


def poll_of(number: int) -> Any:
    def predicate(event: Mapping[str, Any]) -> bool:
        start = (event.get("content") or {}).get(POLL) or {}
        question = (start.get("question") or {}).get("org.matrix.msc1767.text", "")
        return event.get("type") == POLL and f"vote #{number}:" in question

    return predicate


async def answer(person: Person, room: str, poll: str, choice: str) -> str:
    """Answer a poll as a client does."""
    return await person.send(
        room,
        {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll},
            "org.matrix.msc3381.poll.response": {"answers": [choice]},
        },
        event_type="org.matrix.msc3381.poll.response",
    )


def result(bot_id: str, number: int, word: str) -> Any:
    def predicate(event: Mapping[str, Any]) -> bool:
        body = (event.get("content") or {}).get("body", "")
        return (
            event.get("sender") == bot_id
            and event.get("type") == "m.room.message"
            and f"vote #{number} {word}:" in body
        )

    return predicate


async def open_vote(w: World, text: str) -> tuple[int, dict[str, Any]]:
    command = await w.mod.say(w.management, text)
    reply = await w.mod.wait_for_reply(w.management, command, timeout=20)
    assert "is open until" in reply, reply
    number = int(reply.split("vote #", 1)[1].split(" ", 1)[0])
    poll = await w.mod.wait_for(w.management, poll_of(number), timeout=20)
    return number, poll


async def test_a_vote_everyone_answers_passes_and_closes_after_the_minimum_time(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """A poll (disclosed, Yes / No / No opinion) with ``vote #N`` and the question; ballots by
    poll answer and by ``!mod ballot``; an elector's latest ballot counts; once all have voted
    it closes (after ``min_duration``), ends the poll and posts the result with the counts."""
    w, (mod, mod2, mod3) = await staff_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        number, poll = await open_vote(w, "!mod vote open Should we allow job posts in the main room?")
        start = poll["content"][POLL]
        assert start["kind"] == "org.matrix.msc3381.poll.disclosed"
        assert [a["org.matrix.msc1767.text"] for a in start["answers"]] == ["Yes", "No", "No opinion"]
        assert "job posts" in start["question"]["org.matrix.msc1767.text"]
        await answer(mod, w.management, poll["event_id"], "no")
        await answer(mod, w.management, poll["event_id"], "yes")  # changed their mind: the latest counts
        ballot = await mod2.say(w.management, f"!mod ballot {number} yes")
        assert "Your ballot" in await w.mod.wait_for_reply(w.management, ballot, timeout=20)
        await answer(mod3, w.management, poll["event_id"], "abstain")
        line = await w.mod.wait_for(w.management, result(bot_id, number, "passed"), timeout=20)
        assert "2 yes, 0 no, 1 no opinion; 3 of 3 electors voted (quorum 2)" in line["content"]["body"]
        await w.mod.wait_for(
            w.management,
            lambda e: (
                e.get("type") == "org.matrix.msc3381.poll.end"
                and (e.get("content") or {}).get("m.relates_to", {}).get("event_id") == poll["event_id"]
            ),
            timeout=10,
        )
        assert ledger_query(w, "SELECT state, yes, no, abstain FROM votes WHERE id = ?", number) == [
            ("passed", 2, 0, 1)
        ]
        late = await mod.say(w.management, f"!mod ballot {number} no")
        assert "is closed" in await w.mod.wait_for_reply(w.management, late, timeout=20)
        assert ledger_query(w, "SELECT state FROM votes WHERE id = ?", number) == [("passed",)]
    finally:
        await w.close()


async def test_the_quorum_counts_no_opinion_and_a_thin_vote_has_no_quorum(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Three electors, quorum 0.6: two ballots are needed. One yes alone: ``no quorum`` at the
    deadline. One yes and one "no opinion": ``passed``. One no and one "no opinion": ``failed``."""
    w, (mod, mod2, _) = await staff_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        thin, thin_poll = await open_vote(w, "!mod vote open --duration 4s Thin?")
        yes, yes_poll = await open_vote(w, "!mod vote open --duration 4s Yes with no opinion?")
        no, no_poll = await open_vote(w, "!mod vote open --duration 4s No with no opinion?")
        await answer(mod, w.management, thin_poll["event_id"], "yes")
        await answer(mod, w.management, yes_poll["event_id"], "yes")
        await answer(mod2, w.management, yes_poll["event_id"], "abstain")
        await answer(mod, w.management, no_poll["event_id"], "no")
        await answer(mod2, w.management, no_poll["event_id"], "abstain")
        await w.mod.wait_for(w.management, result(bot_id, thin, "no quorum"), timeout=30)
        await w.mod.wait_for(w.management, result(bot_id, yes, "passed"), timeout=30)
        await w.mod.wait_for(w.management, result(bot_id, no, "failed"), timeout=30)
    finally:
        await w.close()


async def test_ballots_from_anyone_but_the_electors_do_not_count(synapse: SynapseServer, tmp_path: Path) -> None:
    """A management-room member below the moderator level answers the poll: recorded, audited,
    not counted. A moderator made one after the vote opened is no elector of it either."""
    w, (mod,) = await staff_world(synapse, tmp_path, moderators=1)
    try:
        bot_id = w.bot_account.user_id
        helper = w.members["helper"]
        await w.start_bot()
        number, poll = await open_vote(w, "!mod vote open --duration 5s Is the helper a voter?")
        levels = await w.mod.state(w.management, "m.room.power_levels")
        assert levels is not None
        late = w.person("latecomer")
        await w.mod.invite(w.management, late.user_id)
        await late.join(w.management)
        levels["users"][late.user_id] = 50
        await w.mod.put_state(w.management, "m.room.power_levels", levels)
        await answer(helper, w.management, poll["event_id"], "yes")
        await answer(late, w.management, poll["event_id"], "yes")
        await answer(mod, w.management, poll["event_id"], "no")
        line = await w.mod.wait_for(w.management, result(bot_id, number, "failed"), timeout=30)
        assert "0 yes, 1 no" in line["content"]["body"]
        ignored = ledger_query(w, "SELECT actor FROM audit WHERE action = 'ballot' AND outcome = 'ignored' ORDER BY id")
        assert ignored == [(helper.user_id,), (late.user_id,)]
        assert ledger_query(w, "SELECT COUNT(*) FROM ballots WHERE vote_id = ?", number) == [(3,)]
    finally:
        await w.close()


async def test_a_vote_outlives_a_restart(synapse: SynapseServer, tmp_path: Path) -> None:
    """The bot is stopped before a vote's deadline and started after it: the vote closes at
    once, with the ballot given before the stop."""
    w, (mod, _, _) = await staff_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        number, poll = await open_vote(w, "!mod vote open --duration 4s Survive a restart?")
        await answer(mod, w.management, poll["event_id"], "yes")
        await asyncio.sleep(1)
        await w.stop_bot()
        await asyncio.sleep(5)
        await w.start_bot()
        line = await w.mod.wait_for(w.management, result(bot_id, number, "no quorum"), timeout=30)
        assert "1 yes" in line["content"]["body"]
    finally:
        await w.close()


async def test_vote_lengths_follow_the_policy(synapse: SynapseServer, tmp_path: Path) -> None:
    """Too short or too long is refused with the bounds; ``--rules`` lasts ``rules_duration``;
    ``!mod votes`` lists the open ones and ``!mod vote N`` says who has not voted."""
    w, _ = await staff_world(synapse, tmp_path, moderators=2)
    try:
        await w.start_bot()
        for text in ("!mod vote open --duration 1s Too short?", "!mod vote open --duration 2m Too long?"):
            command = await w.mod.say(w.management, text)
            assert "a vote lasts from 2s to 1m" in await w.mod.wait_for_reply(w.management, command, timeout=20)
        number, _ = await open_vote(w, "!mod vote open --rules Change rule 3?")
        opened, closes = ledger_query(w, "SELECT opened_at, closes_at FROM votes WHERE id = ?", number)[0]
        assert closes - opened == 90_000
        listing = await w.mod.say(w.management, "!mod votes")
        assert f"vote #{number} (rules)" in await w.mod.wait_for_reply(w.management, listing, timeout=20)
        show = await w.mod.say(w.management, f"!mod vote {number}")
        assert "2 of 2 electors have not voted" in await w.mod.wait_for_reply(w.management, show, timeout=20)
    finally:
        await w.close()


async def test_a_vote_in_an_encrypted_management_room(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: Any
) -> None:
    """Element makes a private room encrypted: the poll goes out encrypted, an encrypted poll
    answer is a ballot, and the result is readable to the moderators' clients."""
    from nio import RoomSendResponse

    from tests.integration.test_encryption import encrypted_world

    w, mod, management, _ = await encrypted_world(synapse, tmp_path, encrypted_person, VOTES)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        await mod.say(management, "!mod vote open --duration 20s Encrypted?")
        await mod.wait_for_text(management, lambda e: e.sender == bot_id and "is open until" in e.body, timeout=20)
        [(number, poll)] = ledger_query(w, "SELECT id, poll_event FROM votes")
        plain = Person(w.synapse.url, mod.account)
        wire = await plain.call("GET", f"{API}/rooms/{q(management)}/event/{q(poll)}")
        assert wire["type"] == "m.room.encrypted"
        await plain.close()
        reply = await mod.client.room_send(
            management,
            "org.matrix.msc3381.poll.response",
            {
                "m.relates_to": {"rel_type": "m.reference", "event_id": poll},
                "org.matrix.msc3381.poll.response": {"answers": ["yes"]},
            },
            ignore_unverified_devices=True,
        )
        assert isinstance(reply, RoomSendResponse), reply
        line = await mod.wait_for_text(
            management, lambda e: e.sender == bot_id and f"vote #{number} passed" in e.body, timeout=30
        )
        assert line.decrypted
        assert "1 yes, 0 no, 0 no opinion; 1 of 1 electors voted" in line.body
    finally:
        await w.close()


async def test_redacting_an_old_answer_keeps_the_new_one_and_a_withdrawal_reopens_an_early_close(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """An elector answers Yes, changes to No, and redacts the Yes: their No still counts. When
    all have voted the vote closes early; one withdrawing (redacting their latest answer) puts
    the close back to the deadline."""
    w, (mod, mod2) = await staff_world(synapse, tmp_path, moderators=2)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        number, poll = await open_vote(w, "!mod vote open --duration 12s Redactions?")
        first = await answer(mod, w.management, poll["event_id"], "yes")
        await answer(mod, w.management, poll["event_id"], "no")
        await mod.call("PUT", f"{API}/rooms/{q(w.management)}/redact/{q(first)}/r1", {})
        latest = await answer(mod2, w.management, poll["event_id"], "yes")
        # Both have voted: the close was moved to min_duration (2 s); mod2 withdraws at once.
        await mod2.call("PUT", f"{API}/rooms/{q(w.management)}/redact/{q(latest)}/r2", {})
        await asyncio.sleep(4)
        assert ledger_query(w, "SELECT state FROM votes WHERE id = ?", number) == [("open",)]
        line = await w.mod.wait_for(w.management, result(bot_id, number, "no quorum"), timeout=30)
        assert "0 yes, 1 no" in line["content"]["body"]
        assert "1 of 2 electors voted" in line["content"]["body"]
    finally:
        await w.close()
