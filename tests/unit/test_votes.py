"""The arithmetic of staff votes (the policy's quorum, "no opinion" counting, majority) and the
votes store's guarantees on a real ledger."""

from __future__ import annotations

import sqlite3

import pytest

from abusebot.features.votes import MIGRATIONS, Tally, needed_for, result_of
from abusebot.ledger import Ledger


@pytest.mark.parametrize(
    ("quorum", "electorate", "needed"),
    [(0.6, 5, 3), (0.6, 3, 2), (0.6, 1, 1), (0.6, 10, 6), (0.6, 7, 5), (1.0, 4, 4), (0.5, 4, 2), (0.01, 3, 1)],
)
def test_the_quorum_is_the_ceiling_of_its_share_of_the_electorate(quorum: float, electorate: int, needed: int) -> None:
    assert needed_for(quorum, electorate) == needed


@pytest.mark.parametrize(
    ("tally", "needed", "result"),
    [
        (Tally(2, 0, 1), 3, "passed"),  # 3 of 5 voted, 2 yes and 1 no opinion: the quorum is met
        (Tally(1, 0, 2), 3, "passed"),
        (Tally(1, 1, 1), 3, "failed"),  # a tie is no majority
        (Tally(0, 2, 1), 3, "failed"),
        (Tally(2, 0, 0), 3, "no quorum"),
        (Tally(0, 0, 3), 3, "failed"),  # all "no opinion": quorum, no majority
    ],
)
def test_results(tally: Tally, needed: int, result: str) -> None:
    assert result_of(tally, needed) == result


async def test_a_result_is_final_and_ballots_are_never_changed(ledger: Ledger) -> None:
    await ledger.migrate_feature("votes", MIGRATIONS)
    async with ledger.transaction() as db:
        await db.execute(
            "INSERT INTO votes (kind, question, opened_by, opened_at, earliest_close_at, closes_at, electorate_size,"
            " quorum, needed, source_key) VALUES ('general', 'q', '@m:x', 1, 2, 3, 1, 0.6, 1, '$e')"
        )
        await db.execute("INSERT INTO ballots (vote_id, voter, choice, at, counted) VALUES (1, '@m:x', 'yes', 1, 1)")
        await db.execute("UPDATE votes SET state = 'passed', closed_at = 4, yes = 1, no = 0, abstain = 0 WHERE id = 1")
    for sql, match in (
        ("UPDATE votes SET state = 'failed' WHERE id = 1", "final"),
        ("UPDATE votes SET question = 'other' WHERE id = 1", "terms"),
        ("UPDATE ballots SET choice = 'no'", "cannot change"),
        ("DELETE FROM ballots", "never deleted"),
        ("DELETE FROM votes", "never deleted"),
    ):
        with pytest.raises(sqlite3.IntegrityError, match=match):
            async with ledger.transaction() as db:
                await db.execute(sql)
