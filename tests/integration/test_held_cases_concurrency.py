"""Two chats of one member, written to at the same moment."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.cases_helpers import ledger_query, open_dm


async def test_max_open_cases_holds_for_chats_written_to_at_once(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await World.create(
        synapse, tmp_path, members=("member",), config={"community": {"modmail": {"max_open_cases": 1}}}
    )
    try:
        bot_id = w.bot_account.user_id
        member = w.members["member"]
        await w.mod.start_watching()
        await w.start_bot()
        chats = [await open_dm(member, bot_id) for _ in range(3)]
        await member.start_watching()
        await asyncio.gather(*(member.say(dm, f"hello from chat {n}") for n, dm in enumerate(chats)))
        await asyncio.sleep(6)  # every message handled (a refused chat may get no answer: one a minute)
        opened = ledger_query(w, "SELECT COUNT(*) FROM cases WHERE state = 'open'")[0][0]
        assert opened <= 1, f"{opened} open cases with max_open_cases: 1"
    finally:
        await w.close()
