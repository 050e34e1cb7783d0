"""An elector's latest ballot counts: the one they gave last, whichever way they gave it."""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from tests.integration.test_loop import ledger_query
from tests.integration.test_votes import answer, open_vote, staff_world
from tests.integration.votes_helpers import any_result


async def test_a_poll_answer_given_after_a_ballot_command_is_the_one_that_counts(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """The elector types ``!mod ballot N yes`` and then, changing their mind, answers the poll
    "No" (both reach the bot in one sync batch, as after a short outage or a slow sync). Their
    latest ballot is "No": the result must say 0 yes, 1 no."""
    w, (mod, mod2) = await staff_world(synapse, tmp_path, moderators=2)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        number, poll = await open_vote(w, "!mod vote open --duration 20s Order of ballots?")
        await mod2.say(w.management, f"!mod ballot {number} abstain")
        await w.stop_bot()
        await mod.say(w.management, f"!mod ballot {number} yes")
        await answer(mod, w.management, poll["event_id"], "no")  # given after: the latest
        await w.start_bot()
        line = await w.mod.wait_for(w.management, any_result(bot_id, number), timeout=40)
        rows = ledger_query(w, "SELECT voter, choice, event_id FROM ballots WHERE vote_id = ? ORDER BY id", number)
        assert "0 yes, 1 no, 1 no opinion" in line["content"]["body"], (line["content"]["body"], rows)
    finally:
        await w.close()
