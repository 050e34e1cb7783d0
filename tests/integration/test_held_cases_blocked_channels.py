"""`!mod modmail block` stops a member from opening cases (README: "stops a member from opening
cases; they are told their messages are not passed on") — on every channel, not only the DM."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, is_redaction_of
from tests.integration.cases_helpers import command, from_bot, ledger_query, report


async def test_a_blocked_member_cannot_open_cases_by_urgent_mention_or_report(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w = await World.create(synapse, tmp_path, members=("abuser", "victim"))
    try:
        bot_id, room = w.bot_account.user_id, w.protected[0]
        abuser, victim = w.members["abuser"], w.members["victim"]
        await w.mod.start_watching()
        await w.start_bot()
        reply = await command(w, f"!mod modmail block {abuser.user_id} pinging us for fun")
        assert "can no longer open cases" in reply

        # An urgent mention: it must not open a case (and must not ping every moderator).
        await abuser.say(room, "@moderators lol again")
        innocent = await victim.say(room, "hello all")
        rep = await report(abuser, room, innocent, "!report for fun")
        await w.mod.wait_for(room, is_redaction_of(rep), timeout=20)
        await asyncio.sleep(4)
        await w.mod.poll(1000)
        roots = [
            e
            for e in w.mod.seen.get(w.management, [])
            if from_bot(bot_id, "case #")(e) and abuser.user_id in e["content"]["body"]
        ]
        opened = ledger_query(w, "SELECT kind FROM cases WHERE opener = ?", abuser.user_id)
        assert opened == [], f"a blocked member opened cases: {opened}; roots posted: {len(roots)}"
    finally:
        await w.close()
