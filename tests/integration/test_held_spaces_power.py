"""A child where the bot lacks the power to act, and gets it later."""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.held_spaces_helpers import add_child, command, settle, wait_until
from tests.integration.spaces_helpers import start_with_space


async def test_a_child_given_the_power_later_gets_the_bans_in_force_everywhere(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """A child joins the Space where the bot is at 0 (said so: right). ``reach_rooms(everyone=True)``
    skips every ban there (``can_ban`` False) and nothing records that it still owes them. The
    moderators then give the bot power and even restart it: the restart's
    ``reach_rooms(again)`` covers only members present, so the troll (not in the room) is never
    banned there. "Every sanction in force everywhere is applied to it" never happens."""
    w = await World.create(synapse, tmp_path, rooms=0, members=("troll",))
    try:
        bot_id = w.bot_account.user_id
        troll = w.members["troll"]
        space, main = await start_with_space(w, troll)
        await command(w, f"!mod ban {troll.user_id} trolling")
        assert await w.mod.membership(main, troll.user_id) == "ban"

        late = await w.mod.create_room(name="Late")  # the bot at 0 there
        await add_child(w.mod, space, late)

        async def protected() -> bool:
            return w.bot.store.is_protected(late)

        await wait_until(protected, 20, "the new child being protected")
        levels = await w.mod.state(late, "m.room.power_levels") or {}
        users = dict(levels.get("users") or {})
        users[bot_id] = 100
        await w.mod.put_state(late, "m.room.power_levels", {**levels, "users": users})
        await settle(w)
        await w.stop_bot()
        await w.start_bot()
        await settle(w)

        async def banned() -> bool:
            return await w.mod.membership(late, troll.user_id) == "ban"

        await wait_until(banned, 15, "the ban in force everywhere reaching the child once the bot has power")
    finally:
        await w.close()
