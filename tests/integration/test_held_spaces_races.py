"""A child added while sanctions change: the bans it is given take a while (background writes
behind everything else, rate limits), and the world moves on meanwhile.

The tests slow one homeserver write down from the outside (they wrap the outbox's executor of
the in-process bot, as a slow or rate-limited homeserver would); no source is changed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.held_spaces_helpers import add_child, command, ledger_query, wait_until
from tests.integration.spaces_helpers import start_with_space


def slow_bans_in(w: World, room: str, release: Any) -> None:
    """Hold the bot's ``ban`` writes in ``room`` until ``release()`` (a coroutine) returns."""
    outbox = w.bot.outbox
    original = outbox._execute

    async def execute(row: Any) -> Any:
        if row.kind == "ban" and row.room_id == room:
            await release()
        return await original(row)

    outbox._execute = execute


async def test_a_ban_that_expires_while_a_new_child_gets_it_is_not_left_there(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """A 15 s ban everywhere; a child is added and its background ban of the troll (who is not
    in it) is still waiting when the ban expires. The expiry's ``undo`` sees no ban there yet, so
    lifts nothing; the waiting intent then bans him, and nothing ever lifts it: a sanction left
    in force forever. ``reach_rooms`` checks a mute's infraction after its write
    (``_mute_reached``) but never a ban's, and the outbox runs an intent of a lifted infraction."""
    w = await World.create(synapse, tmp_path, rooms=0, members=("troll",))
    try:
        bot_id = w.bot_account.user_id
        troll = w.members["troll"]
        space, main = await start_with_space(w, troll)
        await command(w, f"!mod ban {troll.user_id} 15s trolling")
        assert await w.mod.membership(main, troll.user_id) == "ban"
        [(ban_id,)] = ledger_query(w, "SELECT id FROM infractions WHERE kind = 'ban'")

        late = await w.mod.create_room(name="Late", power={bot_id: 100})

        async def until_expired() -> None:
            deadline = time.monotonic() + 60
            while ledger_query(w, "SELECT state FROM infractions WHERE id = ?", ban_id) == [("active",)]:
                assert time.monotonic() < deadline, "the ban never expired"
                await asyncio.sleep(0.2)

        slow_bans_in(w, late, until_expired)
        await add_child(w.mod, space, late)

        async def expired_and_written() -> bool:
            rows = ledger_query(w, "SELECT state FROM outbox WHERE kind = 'ban' AND room_id = ?", late)
            state = ledger_query(w, "SELECT state FROM infractions WHERE id = ?", ban_id)
            return state != [("active",)] and rows != [] and all(r[0] != "pending" for r in rows)

        await wait_until(expired_and_written, 60, "the ban expiring and the new child's ban written")
        await asyncio.sleep(1)
        assert await w.mod.membership(main, troll.user_id) != "ban"  # the expiry lifted it there
        assert await w.mod.membership(late, troll.user_id) != "ban", "an expired ban stays in force in the new child"
    finally:
        await w.close()


async def test_the_bot_keeps_answering_while_a_new_child_gets_the_bans_in_force(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """The bans a new child gets are meant to run "behind every other write" (``reach_rooms``,
    BACKGROUND priority), yet ``SpacesFeature.handle`` awaits all of them inside the sync batch
    (``_apply`` → ``protect_room`` → ``_room_protected`` → ``reach_rooms`` → ``outbox.run(later)``):
    with thousands of policy-list bans, every room goes unwatched until the last is written.
    Here one slow ban write (10 s) keeps ``!mod status`` unanswered."""
    w = await World.create(synapse, tmp_path, rooms=0, members=("troll",))
    try:
        bot_id = w.bot_account.user_id
        troll = w.members["troll"]
        space, _main = await start_with_space(w, troll)
        await command(w, f"!mod ban {troll.user_id} trolling")
        late = await w.mod.create_room(name="Late", power={bot_id: 100})
        slow_bans_in(w, late, lambda: asyncio.sleep(10))
        await add_child(w.mod, space, late)

        async def writing() -> bool:
            return w.bot.store.is_protected(late)

        await wait_until(writing, 20, "the child being protected")
        started = time.monotonic()
        await command(w, "!mod status", timeout=30)
        waited = time.monotonic() - started
        assert waited < 5, f"!mod status answered only after {waited:.1f}s: the sync loop waited for the bans"
    finally:
        await w.close()
