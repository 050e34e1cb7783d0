"""kill -9 in the middle of mirroring a suggestion's state: right as the bot's 🟠 lands, and
right as its 🟠 is being taken away for 🟢. After each restart the marks are what the state
says, none doubled, and the ledger knows each reaction the bot made."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.test_durable_actions import KillingProxy, proxy  # noqa: F401
from tests.integration.test_loop import ledger_query, wait_for_checkpoint
from tests.integration.test_suggestions import marked, marks, react


async def test_kill_9_while_mirroring_never_doubles_or_loses_a_mark(
    synapse: SynapseServer,
    tmp_path: Path,
    proxy: KillingProxy,  # noqa: F811
) -> None:
    w = await World.create(synapse, tmp_path, members=("ann",))
    try:
        bot_id, ann = w.bot_account.user_id, w.members["ann"]
        room = await w.mod.create_room(name="Suggestions")
        await ann.join(room)
        w.write_config({"homeserver": proxy.url, "suggestions": {"room": room}})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)

        async def bot_joined() -> bool:
            return await w.mod.membership(room, bot_id) == "join"

        for _ in range(60):
            if await bot_joined():
                break
            await asyncio.sleep(0.5)
        idea = await ann.say(room, "Weekly office hours")
        await marked(w.mod, room, idea, bot_id, {"👍", "👎"}, "the vote reactions")

        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = lambda method, path: method == "PUT" and "/send/m.reaction/" in path
        await react(w.mod, room, idea, "🟠")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        w.spawn_bot()
        await marked(w.mod, room, idea, bot_id, {"👍", "👎", "🟠"}, "🟠 once after the restart")

        proxy.fired.clear()
        proxy.trigger = lambda method, path: method == "PUT" and "/redact/" in path
        command = await w.mod.say(w.management, f"!mod suggestion {idea} approved")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        w.spawn_bot()
        await w.mod.wait_for_reply(w.management, command, timeout=30)
        await marked(w.mod, room, idea, bot_id, {"👍", "👎", "🟢"}, "🟢 alone after the second restart")
        await asyncio.sleep(2)
        assert await marks(w.mod, room, idea, bot_id) == {"👍", "👎", "🟢"}
        rows = ledger_query(w, "SELECT key, n, event_id IS NOT NULL, removed FROM suggestion_marks ORDER BY key")
        assert rows == [("🟠", 0, 1, 1), ("🟢", 0, 1, 0)]
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        await w.close()
