"""A sub-Space run by someone else, against the rest of the community."""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.held_spaces_helpers import add_child, command, create_space, remove_child, settle


async def test_a_sub_space_admin_cannot_shield_a_user_from_a_ban_everywhere(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Eve runs a sub-Space of the community. She adds her own room, gives the bot ban power
    there and puts the spammer at 100 in its power levels (he need not even join). The room is
    protected through her sub-Space, and ``Moderation.check`` treats anyone not below the bot in
    *any* protected room as out of reach everywhere: the moderators' ban of the spammer is
    refused in every room of the community."""
    w = await World.create(synapse, tmp_path, rooms=0, members=("spammer", "eve"))
    try:
        bot_id = w.bot_account.user_id
        spammer, eve = w.members["spammer"], w.members["eve"]
        space = await create_space(w.mod, "Community")
        main = await w.mod.create_room(name="Main", power={bot_id: 100})
        await add_child(w.mod, space, main)
        await spammer.join(main)
        sub = await create_space(eve, "Eve's corner")
        await add_child(w.mod, space, sub)
        shield = await eve.create_room(name="Shield", power={bot_id: 100, spammer.user_id: 100})
        await add_child(eve, sub, shield)
        w.write_config({"protected_rooms": [], "protected_spaces": [space]})
        await w.mod.start_watching()
        await w.start_bot()
        assert w.bot.store.is_protected(shield)

        reply = await command(w, f"!mod ban {spammer.user_id} spam")
        assert await w.mod.membership(main, spammer.user_id) == "ban", reply
    finally:
        await w.close()


async def test_rooms_names_the_space_that_still_holds_a_child(synapse: SynapseServer, tmp_path: Path) -> None:
    """A room in two Spaces, taken out of the first: still protected (right), but ``!mod rooms``
    (and the ledger row) keep naming the first Space: ``_apply`` skips rooms already in
    ``self.rooms`` and never updates the Space they come from."""
    w = await World.create(synapse, tmp_path, rooms=0, members=())
    try:
        bot_id = w.bot_account.user_id
        first = await create_space(w.mod, "Alpha")
        second = await create_space(w.mod, "Beta")
        shared = await w.mod.create_room(name="Shared", power={bot_id: 100})
        await add_child(w.mod, first, shared)
        await add_child(w.mod, second, shared)
        w.write_config({"protected_rooms": [], "protected_spaces": [first, second]})
        await w.mod.start_watching()
        await w.start_bot()
        await remove_child(w.mod, first, shared)
        await settle(w)
        assert w.bot.store.is_protected(shared)
        listing = await command(w, "!mod rooms")
        line = next(line for line in listing.splitlines() if shared in line)
        assert "Space Beta" in line, line
        assert "Space Alpha" not in line, line
    finally:
        await w.close()
