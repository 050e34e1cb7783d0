"""A crash at the worst moment of a Space change."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.held_spaces_helpers import add_child, from_bot, ledger_query, wait_until
from tests.integration.spaces_helpers import start_with_space


async def test_a_child_protected_just_before_a_crash_is_still_announced(synapse: SynapseServer, tmp_path: Path) -> None:
    """The bot dies after a new child is recorded ``protected`` and before "Now protecting" is
    posted (``SpacesFeature.handle`` posts the walk's lines only once the whole walk is applied:
    a walk adding several rooms leaves this window open while it joins the next ones). At the
    restart ``start`` finds the row ``protected``, re-protects it silently, and the replayed
    child event changes nothing: the moderators are never told. The change line is not
    recorded with the change (no intent in the outbox) as "record, do, mark" asks.

    The crash is simulated in-process: the post is held, then the bot's task is cancelled (its
    checkpoint was not committed, exactly as a kill -9 leaves it)."""
    w = await World.create(synapse, tmp_path, rooms=0, members=())
    try:
        bot_id = w.bot_account.user_id
        space, _main = await start_with_space(w)
        moderation = w.bot.moderation
        original = moderation.post

        async def post(message: Any) -> None:
            if "Now protecting" in message.plain:
                await asyncio.Event().wait()  # the process dies here
            await original(message)

        moderation.post = post
        late = await w.mod.create_room(name="Late", power={bot_id: 100})
        await add_child(w.mod, space, late)

        async def recorded() -> bool:
            return ledger_query(w, "SELECT state FROM space_rooms WHERE room_id = ?", late) == [("protected",)]

        await wait_until(recorded, 20, "the new child recorded protected")
        task = w._bot_task
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        w.bot = None
        w._bot_task = None

        await w.start_bot()
        assert w.bot.store.is_protected(late)
        await w.mod.wait_for(w.management, from_bot(bot_id, "Late"), timeout=20)
    finally:
        await w.close()
