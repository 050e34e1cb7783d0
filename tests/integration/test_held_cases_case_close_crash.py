"""``!mod case close N no-action``; the bot is SIGKILLed the moment the member's "your case is
closed" reached them. After the restart the command runs again: the member is told once, the
moderator answered once, and the record has one closing of the case (one audit row, as for
``!mod appeal``, whose re-run does not record the decision twice)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, replies_to
from tests.integration.cases_helpers import CASE, from_bot, history, ledger_query, open_dm, wait_until
from tests.integration.test_durable_actions import KillingProxy, proxy  # noqa: F401 - the fixture
from tests.integration.test_loop import wait_for_checkpoint


async def test_a_close_cut_short_by_a_crash_is_recorded_and_told_once(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    w = await World.create(synapse, tmp_path, members=("member",))
    try:
        bot_id, member = w.bot_account.user_id, w.members["member"]
        w.write_config({"homeserver": proxy.url})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)
        dm = await open_dm(member, bot_id)
        await member.start_watching()
        await member.say(dm, "a question for the team")
        ack = await member.wait_for(dm, from_bot(bot_id, "case #"), timeout=30)
        number = CASE.search(ack["content"]["body"]).group(1)  # type: ignore[union-attr]
        await w.mod.wait_for(w.management, from_bot(bot_id, f"case #{number}"), timeout=20)
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = lambda method, path: method == "PUT" and f"/rooms/{dm}/send/" in path  # type: ignore[assignment]
        close = await w.mod.say(w.management, f"!mod case close {number} no-action answered elsewhere")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        w.spawn_bot()
        await w.mod.wait_for_reply(w.management, close, timeout=60)

        async def told() -> bool:
            return any(from_bot(bot_id, "is closed")(e) for e in await history(member, dm))

        await wait_until(told, 20, "the member told")
        await asyncio.sleep(2)
        assert len([e for e in await history(member, dm) if from_bot(bot_id, "is closed")(e)]) == 1
        assert len([e for e in await history(w.mod, w.management) if replies_to(e, close)]) == 1
        rows = ledger_query(w, "SELECT action, outcome FROM audit WHERE action = 'case_close'")
        assert rows == [("case_close", "done")], rows
    finally:
        w.kill_bot()
        await w.close()
