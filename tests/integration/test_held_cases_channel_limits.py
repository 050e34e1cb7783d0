"""README, "Limits, so the channel stays usable": "At most 3 open cases at a time
(configurable), about 10 messages a minute, and 10 reports in 10 minutes". The DM and
``!report`` enforce them; the urgent-mention and homeserver-report channels do not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.cases_helpers import command, from_bot, ledger_query, wait_until


async def test_urgent_mentions_respect_the_message_rate_limit(synapse: SynapseServer, tmp_path: Path) -> None:
    """One member calling ``@moderators`` 20 times in half a minute (slowly enough for the
    flood protection) gets every line relayed into the management room."""
    w = await World.create(synapse, tmp_path, members=("caller",))
    try:
        bot_id, room = w.bot_account.user_id, w.protected[0]
        caller = w.members["caller"]
        await w.mod.start_watching()
        await w.start_bot()
        for n in range(20):
            await caller.say(room, f"@moderators hello again, number {n}")
            await asyncio.sleep(1.2)
        await asyncio.sleep(3)
        await w.mod.poll(1000)
        relayed = [e for e in w.mod.seen.get(w.management, []) if from_bot(bot_id, caller.user_id, "hello again")(e)]
        sanctions = ledger_query(w, "SELECT kind FROM infractions WHERE subject = ?", caller.user_id)
        assert sanctions == [], sanctions  # the protections did not stop them: the test is fair
        assert len(relayed) <= 11, f"{len(relayed)} management-room posts from one caller within 30 s"
    finally:
        await w.close()


async def test_urgent_mentions_respect_max_open_cases(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await World.create(
        synapse, tmp_path, rooms=3, members=("caller",), config={"community": {"modmail": {"max_open_cases": 1}}}
    )
    try:
        caller = w.members["caller"]
        await w.mod.start_watching()
        await w.start_bot()
        for n, room in enumerate(w.protected):
            await caller.say(room, f"@moderators come here ({'abc'[n]})")
        await asyncio.sleep(4)
        open_cases = ledger_query(w, "SELECT COUNT(*) FROM cases WHERE opener = ? AND state = 'open'", caller.user_id)
        assert open_cases[0][0] <= 1, f"{open_cases[0][0]} open cases with max_open_cases: 1"
    finally:
        await w.close()


async def test_homeserver_reports_respect_the_report_limits_and_blocks(synapse: SynapseServer, tmp_path: Path) -> None:
    """With ``poll_homeserver_reports``, a member pressing the client's report button opens a
    case per report, without limit (``!report`` stops at 10 in 10 minutes), and so does one
    blocked with ``!mod modmail block``."""
    w = await World.create(
        synapse,
        tmp_path,
        members=("spammer", "reporter", "eager"),
        bot_admin=True,
        config={
            "community": {"reports": {"poll_homeserver_reports": True}},
            "protections": {"flood": {"enabled": False}},
        },
    )
    try:
        room = w.protected[0]
        spammer, reporter, eager = w.members["spammer"], w.members["reporter"], w.members["eager"]
        await w.mod.start_watching()
        bot = await w.start_bot()

        async def polled() -> bool:
            return bool(ledger_query(w, "SELECT 1 FROM kv WHERE key = 'cases:homeserver_report'"))

        await wait_until(polled, 20, "the first poll")
        assert "can no longer open cases" in await command(w, f"!mod modmail block {reporter.user_id} report spam")
        for n in range(14):
            event = await spammer.say(room, f"message number {n}")
            who = reporter if n < 3 else eager  # the blocked one 3 reports, the eager one 11
            await who.call("POST", f"{API}/rooms/{q(room)}/report/{q(event)}", {"reason": f"r{n}"})
        await bot.host.features["cases"].poll_reports()
        made = ledger_query(w, "SELECT COUNT(*) FROM cases WHERE opener = ?", reporter.user_id)[0][0]
        eager_made = ledger_query(w, "SELECT COUNT(*) FROM cases WHERE opener = ?", eager.user_id)[0][0]
        assert (made, eager_made <= 10) == (0, True), (
            f"a blocked member opened {made} report cases through the homeserver; another member {eager_made}"
        )
    finally:
        await w.close()
