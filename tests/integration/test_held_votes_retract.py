"""A poll answer that selects nothing (an emptied selection, or only unknown answers) is the
elector's latest response: as the poll shows it (MSC3381), they no longer vote for anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person
from tests.integration.test_loop import ledger_query
from tests.integration.test_votes import answer, open_vote, staff_world
from tests.integration.votes_helpers import any_result


async def respond(person: Person, room: str, poll: str, answers: Any) -> str:
    return await person.send(
        room,
        {
            "m.relates_to": {"rel_type": "m.reference", "event_id": poll},
            "org.matrix.msc3381.poll.response": {"answers": answers},
        },
        event_type="org.matrix.msc3381.poll.response",
    )


async def _withdrawn(synapse: SynapseServer, tmp_path: Path, answers: Any) -> None:
    w, (mod, mod2, _) = await staff_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        number, poll = await open_vote(w, "!mod vote open --duration 5s Withdraw?")
        await answer(mod, w.management, poll["event_id"], "yes")
        await answer(mod2, w.management, poll["event_id"], "yes")
        await respond(mod2, w.management, poll["event_id"], answers)  # mod2 withdraws
        line = await w.mod.wait_for(w.management, any_result(bot_id, number), timeout=30)
        rows = ledger_query(w, "SELECT voter, choice FROM ballots WHERE vote_id = ? ORDER BY id", number)
        body = line["content"]["body"]
        assert f"vote #{number} no quorum: 1 yes, 0 no, 0 no opinion; 1 of 3" in body, (body, rows)
    finally:
        await w.close()


async def test_an_emptied_poll_answer_withdraws_the_electors_ballot(synapse: SynapseServer, tmp_path: Path) -> None:
    """mod and mod2 answer Yes; mod2 then clears their answer (``answers: []``). One ballot of
    the two needed is left: ``no quorum``, 1 yes — not ``passed`` with mod2's withdrawn yes."""
    await _withdrawn(synapse, tmp_path, [])


async def test_a_spoiled_poll_answer_withdraws_the_electors_ballot(synapse: SynapseServer, tmp_path: Path) -> None:
    """mod2's latest response names only an answer the poll does not have: a spoiled ballot,
    their earlier Yes no longer counts."""
    await _withdrawn(synapse, tmp_path, ["maybe"])
