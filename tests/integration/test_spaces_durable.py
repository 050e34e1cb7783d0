"""The Space feature's durability, as its docstring promises: a room about to be protected is
recorded ``adding`` first; a crash before the sanctions in force reached it leaves ``adding``,
and the next start does it all again. And kill -9 at random moments while children come and go
never leaves a room of the Space without the ban in force everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from pathlib import Path
from typing import Any

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.cases_helpers import command
from tests.integration.spaces_helpers import add_child, create_space, remove_child
from tests.integration.test_cases import from_bot
from tests.integration.test_loop import ledger_query, wait_for_checkpoint, wait_until


async def space_world(synapse: SynapseServer, tmp_path: Path) -> tuple[World, str]:
    w = await World.create(synapse, tmp_path, rooms=0, members=("troll",))
    space = await create_space(w.mod, "Community")
    main = await w.mod.create_room(name="Main", power={w.bot_account.user_id: 100})
    await add_child(w.mod, space, main)
    w.write_config({"protected_rooms": [], "protected_spaces": [space]})
    await w.mod.start_watching()
    return w, space


async def hard_stop(w: World) -> None:
    """End the in-process bot where it stands (its task cancelled, no graceful stop)."""
    task = w._bot_task
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    w.bot, w._bot_task = None, None


async def test_a_crash_before_the_sanctions_reached_a_new_room_is_redone_at_start(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w, space = await space_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        troll = w.members["troll"]
        await w.start_bot()
        await command(w, f"!mod ban {troll.user_id} trolling")
        stuck = asyncio.Event()
        real = w.bot.moderation.reach_rooms

        async def dies_before_acting(rooms: Any, *, everyone: bool = False) -> int:
            if everyone:
                stuck.set()
                await asyncio.Event().wait()  # the process "dies" here: nothing after runs
            return await real(rooms, everyone=everyone)

        w.bot.moderation.reach_rooms = dies_before_acting  # type: ignore[method-assign]
        late = await w.mod.create_room(name="Late", power={bot_id: 100})
        await add_child(w.mod, space, late)
        await asyncio.wait_for(stuck.wait(), 20)
        assert ledger_query(w, "SELECT state FROM space_rooms WHERE room_id = ?", late) == [("adding",)]
        assert await w.mod.membership(late, troll.user_id) != "ban"
        await hard_stop(w)

        w.mod.seen.clear()
        await w.start_bot()
        await w.mod.wait_for(w.management, from_bot(bot_id, "Now protecting Late"), timeout=30)

        async def banned() -> bool:
            return await w.mod.membership(late, troll.user_id) == "ban"

        await wait_until(banned, 20, "the ban in force everywhere reaching the room after the restart")
        assert ledger_query(w, "SELECT state FROM space_rooms WHERE room_id = ?", late) == [("protected",)]
        # Each ban once: one intent per room, never a second.
        rows = ledger_query(w, "SELECT COUNT(*) FROM outbox WHERE kind = 'ban' AND room_id = ?", late)
        assert rows == [(1,)]
    finally:
        await w.close()


async def test_kill_9_while_children_come_and_go_never_leaves_one_without_the_ban(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w, space = await space_world(synapse, tmp_path)
    rng = random.Random(14)
    try:
        bot_id = w.bot_account.user_id
        troll = w.members["troll"]
        w.spawn_bot()
        await wait_for_checkpoint(w)
        await command(w, f"!mod ban {troll.user_id} trolling")
        children = [await w.mod.create_room(name=f"Child {n}", power={bot_id: 100}) for n in range(4)]
        inside: set[str] = set()
        for _round in range(4):
            for child in rng.sample(children, 2):
                if child in inside:
                    await remove_child(w.mod, space, child)
                    inside.discard(child)
                else:
                    await add_child(w.mod, space, child)
                    inside.add(child)
            await asyncio.sleep(rng.uniform(0.05, 0.8))
            w.kill_bot(signal.SIGKILL)
            w.spawn_bot()
            await asyncio.sleep(rng.uniform(1.0, 2.5))
        for child in children[:2]:  # some child in the Space at the end, added just before a kill
            if child not in inside:
                await add_child(w.mod, space, child)
                inside.add(child)
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        w.kill_bot(signal.SIGKILL)
        w.spawn_bot()
        await wait_for_checkpoint(w)

        async def settled() -> bool:
            rows = dict(ledger_query(w, "SELECT room_id, state FROM space_rooms"))
            return all(rows.get(child) == "protected" for child in inside) and all(
                rows.get(child) in (None, "removed") for child in set(children) - inside
            )

        await wait_until(settled, 40, "the ledger's Space rooms matching the Space")
        for child in inside:

            async def banned(child: str = child) -> bool:
                return await w.mod.membership(child, troll.user_id) == "ban"

            await wait_until(banned, 30, f"the ban in {child}, a room of the Space")
        twice = ledger_query(
            w, "SELECT room_id, COUNT(*) FROM outbox WHERE kind = 'ban' GROUP BY room_id HAVING COUNT(*) > 1"
        )
        assert twice == []
    finally:
        w.kill_bot(signal.SIGTERM)
        await w.close()
