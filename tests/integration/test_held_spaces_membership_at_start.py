"""Rooms that must never become protected because a Space names them, at a (re)start.

At start, ``SpacesFeature.start`` runs first of all features (``features.ORDER``), before the
policy-list feature loads its lists and before the direct-chat feature registers the DIRECT
role, so ``_not_protectable`` cannot yet tell a list or a direct chat from a room."""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.held_spaces_helpers import add_child, command, create_space, open_dm, settle
from tests.integration.spaces_helpers import start_with_space


async def test_a_policy_list_named_by_the_space_is_never_protected_at_start(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """A watched policy list that the Space also names is protected at start: the walk runs
    before ``PolicyManager.load`` fills ``lists``, so ``is_list_room`` is False for it."""
    w = await World.create(synapse, tmp_path, rooms=0, members=())
    try:
        bot_id = w.bot_account.user_id
        space = await create_space(w.mod, "Community")
        main = await w.mod.create_room(name="Main", power={bot_id: 100})
        banlist = await w.mod.create_room(name="Ban list", invite=[bot_id])
        await add_child(w.mod, space, main)
        await add_child(w.mod, space, banlist)
        w.write_config({"protected_rooms": [], "protected_spaces": [space], "policy_lists": {"watch": [banlist]}})
        await w.mod.start_watching()
        await w.start_bot()
        assert w.bot.policies.is_list_room(banlist)
        assert w.bot.store.is_protected(main)
        assert not w.bot.store.is_protected(banlist), "a policy list became a protected room"
    finally:
        await w.close()


async def test_a_direct_chat_named_by_the_space_is_never_protected_after_a_restart(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Named while running, a direct chat is skipped; after a restart the same Space makes it a
    protected room: the walk at start runs before ``DirectChats.start`` adds the DIRECT role."""
    w = await World.create(synapse, tmp_path, rooms=0, members=("ann",))
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        space, _main = await start_with_space(w, ann)
        dm = await open_dm(ann, bot_id)
        await add_child(w.mod, space, dm)
        await settle(w)
        assert not w.bot.store.is_protected(dm)  # held while running

        await w.stop_bot()
        await w.start_bot()
        assert not w.bot.store.is_protected(dm), "a direct chat became a protected room at start"
        listing = await command(w, "!mod rooms")
        assert dm not in listing, listing
    finally:
        await w.close()
