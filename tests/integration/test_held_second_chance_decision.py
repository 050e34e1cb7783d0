"""The decision of a second-chance vote: recorded in the audit and carried out at once (not by
a failing job's retry)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.second_chance_helpers import (
    VOTES,
    q1,
)
from tests.integration.test_cases import from_bot
from tests.integration.test_second_chance import ask, banned_member
from tests.integration.test_votes import answer, result


async def test_a_decision_is_audited_and_carried_out_without_a_failing_job(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Two requests: one granted, one denied. Each decision has its audit row
    (``second_chance_decided``), and the vote's closing job did not fail on the way (the member
    is told within a couple of seconds of the result, not after a retry's backoff)."""
    config = {**VOTES, "second_chance": {"after": "1s", "probation": "1h"}}
    w = await World.create(synapse, tmp_path, members=("member", "other"), config=config)
    try:
        bot_id = w.bot_account.user_id
        member, other = w.members["member"], w.members["other"]
        await w.mod.start_watching()
        await w.start_bot()
        chats = {p.user_id: await banned_member(w, p) for p in (member, other)}
        await asyncio.sleep(1.2)
        for person, choice, told in ((member, "yes", "was granted"), (other, "no", "decided not to grant")):
            _, vote, poll = await ask(w, person, chats[person.user_id], "sorry")
            await answer(w.mod, w.management, poll, choice)
            await w.mod.wait_for(w.management, result(bot_id, vote, "passed" if choice == "yes" else "failed"), 20)
            started = time.monotonic()
            await person.wait_for(chats[person.user_id], from_bot(bot_id, told), timeout=30)
            took = time.monotonic() - started
            errors = q1(
                w,
                "SELECT COUNT(*) FROM jobs WHERE kind = 'vote_close' AND key = ? AND last_error IS NOT NULL",
                str(vote),
            )
            assert errors == 0, "the vote's closing job failed: " + str(
                q1(w, "SELECT last_error FROM jobs WHERE kind = 'vote_close' AND key = ?", str(vote))
            )
            assert took < 4, f"the decision was carried out {took:.1f}s after the result"
        assert q1(w, "SELECT COUNT(*) FROM audit WHERE action = 'second_chance_decided'") == 2
    finally:
        await w.close()
