"""Attacks the votes survive (these pass): malformed poll responses, confidentiality, duration
edges, early close not before ``min_duration``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from tests.integration.test_held_votes_retract import respond
from tests.integration.test_loop import ledger_query
from tests.integration.test_votes import answer, open_vote, staff_world
from tests.integration.votes_helpers import any_result


async def test_malformed_poll_responses_make_no_ballot(synapse: SynapseServer, tmp_path: Path) -> None:
    w, (mod, mod2) = await staff_world(synapse, tmp_path, moderators=2)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        number, poll = await open_vote(w, "!mod vote open --duration 6s Malformed?")
        pid = poll["event_id"]
        for bad in ("yes", [1], [["yes"]], [{"yes": 1}], None, {"0": "yes"}, [None, "yes"]):
            await respond(mod, w.management, pid, bad)
        other = await mod.say(w.management, "an ordinary message")
        await respond(mod, w.management, other, ["yes"])  # relates to another event
        await mod.send(
            w.management,
            {"org.matrix.msc3381.poll.response": {"answers": ["yes"]}},
            event_type="org.matrix.msc3381.poll.response",
        )  # relates to nothing
        await mod.send(
            w.management,
            {"m.relates_to": {"rel_type": "m.reference", "event_id": pid}, "org.matrix.msc3381.poll.response": "yes"},
            event_type="org.matrix.msc3381.poll.response",
        )
        await respond(mod2, w.management, pid, ["no", "yes"])  # max_selections 1: the first
        line = await w.mod.wait_for(w.management, any_result(bot_id, number), timeout=30)
        # Lists whose first answer is no option of the poll are spoiled ballots (MSC3381): kept as
        # withdrawn; anything that is not a list of answers makes no ballot at all.
        kept = ledger_query(w, "SELECT voter, choice FROM ballots WHERE vote_id = ? AND choice != 'withdrawn'", number)
        assert kept == [(mod2.user_id, "no")]
        spoiled = ledger_query(w, "SELECT COUNT(*) FROM ballots WHERE vote_id = ? AND choice = 'withdrawn'", number)
        assert spoiled == [(4,)]
        assert "0 yes, 1 no, 0 no opinion; 1 of 2" in line["content"]["body"]
    finally:
        await w.close()


async def test_protected_room_admins_cannot_use_vote_commands(synapse: SynapseServer, tmp_path: Path) -> None:
    w, _ = await staff_world(synapse, tmp_path, moderators=2)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        number, _ = await open_vote(w, "!mod vote open --duration 20s Secret question xyzzy?")
        room = w.protected[0]
        for text in ("!mod vote open Leak?", "!mod votes", f"!mod vote {number}", f"!mod ballot {number} yes"):
            command = await w.mod.say(room, text)
            reply = await w.mod.wait_for_reply(room, command, timeout=20)
            assert "only available in the management room" in reply, (text, reply)
        assert ledger_query(w, "SELECT COUNT(*) FROM votes") == [(1,)]
        assert ledger_query(w, "SELECT COUNT(*) FROM ballots") == [(0,)]
        await w.mod.poll(1000)
        for event in w.mod.seen.get(room, []):
            if event.get("sender") == bot_id:
                body = str((event.get("content") or {}).get("body", ""))
                assert "xyzzy" not in body, body
                assert "vote #" not in body, body
    finally:
        await w.close()


async def test_duration_edges(synapse: SynapseServer, tmp_path: Path) -> None:
    w, _ = await staff_world(synapse, tmp_path, moderators=1)
    try:
        await w.start_bot()
        for text, span in (
            ("--duration 2s", 2000),
            ("--duration 60s", 60_000),
            ("--duration 1m", 60_000),
            ("--rules --duration 90s", 90_000),
        ):
            number, _ = await open_vote(w, f"!mod vote open {text} Edge {text}?")
            opened, closes = ledger_query(w, "SELECT opened_at, closes_at FROM votes WHERE id = ?", number)[0]
            assert closes - opened == span
        for text in ("--duration 61s", "--rules --duration 91s", "--duration 1s"):
            command = await w.mod.say(w.management, f"!mod vote open {text} Edge?")
            assert "lasts from" in await w.mod.wait_for_reply(w.management, command, timeout=20)
    finally:
        await w.close()


async def test_everyone_voting_at_once_still_waits_for_the_minimum_time(synapse: SynapseServer, tmp_path: Path) -> None:
    w, (mod, mod2) = await staff_world(synapse, tmp_path, moderators=2)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        number, poll = await open_vote(w, "!mod vote open --duration 20s Fast?")
        opened = ledger_query(w, "SELECT opened_at FROM votes WHERE id = ?", number)[0][0]
        await answer(mod, w.management, poll["event_id"], "yes")
        await answer(mod2, w.management, poll["event_id"], "yes")
        line = await w.mod.wait_for(w.management, any_result(bot_id, number), timeout=30)
        closed = ledger_query(w, "SELECT closed_at FROM votes WHERE id = ?", number)[0][0]
        assert closed - opened >= 2000
        assert time.time() * 1000 - opened < 15_000
        assert "passed: 2 yes" in line["content"]["body"]
    finally:
        await w.close()


async def test_a_ballot_command_after_the_deadline_is_told_the_vote_is_closed(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """An elector types ``!mod ballot N no`` after the deadline, before the closing job has
    run (the bot was down over the deadline). It does not count; the reply must say the vote
    is closed — not that they are no elector of it."""
    w, (mod, _, _) = await staff_world(synapse, tmp_path)
    try:
        await w.start_bot()
        number, _ = await open_vote(w, "!mod vote open --duration 3s Too late?")
        await w.stop_bot()
        closes_at = ledger_query(w, "SELECT closes_at FROM votes WHERE id = ?", number)[0][0]
        await asyncio.sleep(max(0.0, (closes_at - time.time() * 1000) / 1000) + 1)
        late = await mod.say(w.management, f"!mod ballot {number} no")
        await w.start_bot()
        reply = await w.mod.wait_for_reply(w.management, late, timeout=30)
        assert ledger_query(w, "SELECT counted FROM ballots WHERE vote_id = ?", number) in ([], [(0,)])
        assert "not an elector" not in reply, reply
        assert "closed" in reply, reply
    finally:
        await w.close()
