"""A ballot given before the deadline counts, even when the bot reads it late."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from tests.integration.test_loop import ledger_query
from tests.integration.test_votes import answer, open_vote, staff_world
from tests.integration.votes_helpers import any_result


async def test_a_ballot_given_before_the_deadline_while_the_bot_was_down_counts(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """mod answers Yes; the bot stops; mod2 answers Yes well before the deadline; the bot comes
    back after it. Both ballots were given in time (the poll shows two Yes before its end):
    ``passed``, 2 yes — not ``no quorum`` because the bot read the second one late."""
    w, (mod, mod2, _) = await staff_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        await w.start_bot()
        number, poll = await open_vote(w, "!mod vote open --duration 8s In time?")
        await answer(mod, w.management, poll["event_id"], "yes")
        await asyncio.sleep(0.5)
        await w.stop_bot()
        closes_at = ledger_query(w, "SELECT closes_at FROM votes WHERE id = ?", number)[0][0]
        await answer(mod2, w.management, poll["event_id"], "yes")
        assert time.time() * 1000 < closes_at - 2000  # given well before the deadline
        await asyncio.sleep(max(0.0, (closes_at - time.time() * 1000) / 1000) + 1)
        await w.start_bot()
        line = await w.mod.wait_for(w.management, any_result(bot_id, number), timeout=30)
        rows = ledger_query(w, "SELECT voter, choice, counted FROM ballots WHERE vote_id = ? ORDER BY id", number)
        body = line["content"]["body"]
        assert f"vote #{number} passed: 2 yes" in body, (body, rows)
    finally:
        await w.close()
