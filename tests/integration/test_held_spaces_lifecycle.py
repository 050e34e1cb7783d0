"""A Space's own life: upgraded, or the bot thrown out of a sub-Space."""

from __future__ import annotations

from pathlib import Path

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.held_spaces_helpers import add_child, create_space, from_bot, settle, wait_until
from tests.integration.spaces_helpers import start_with_space


async def test_an_upgraded_space_is_followed_and_its_new_children_protected(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """The Space is upgraded (a tombstone), and a room is then added to its replacement: it is
    never protected. ``Bot._follow_upgrade`` follows only guarded rooms (management, protected),
    and a Space is neither; the spaces feature handles only ``m.space.child``, so the bot stays
    on the dead Space while the community moves on."""
    w = await World.create(synapse, tmp_path, rooms=0, members=())
    try:
        bot_id = w.bot_account.user_id
        space, main = await start_with_space(w)
        assert w.bot.store.is_protected(main)

        version = (await w.mod.state(space, "m.room.create") or {}).get("room_version", "10")
        reply = await w.mod.call("POST", f"{API}/rooms/{q(space)}/upgrade", {"new_version": version})
        new_space = str(reply["replacement_room"])
        assert (await w.mod.state(new_space, "m.room.create") or {}).get("type") == "m.space"
        await settle(w)
        later = await w.mod.create_room(name="Later", power={bot_id: 100})
        await add_child(w.mod, new_space, later)

        async def protected() -> bool:
            return w.bot.store.is_protected(later)

        await wait_until(protected, 15, "a room added to the upgraded Space being protected")
    finally:
        await w.close()


async def test_rooms_of_a_sub_space_that_banned_the_bot_stay_protected_as_promised(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Eve bans the bot from her sub-Space; the bot says "I keep protecting its rooms as it last
    listed them" (``SpacesFeature.room_left``). At the next walk (any child change anywhere) the
    sub-Space cannot be joined, ``_classify`` makes it "unjoinable", its children are never
    walked, and ``_apply`` stops protecting them: the message was untrue for a sub-Space (only a
    root's rooms are kept, since a root is walked from its stored state)."""
    w = await World.create(synapse, tmp_path, rooms=0, members=("eve",))
    try:
        bot_id = w.bot_account.user_id
        eve = w.members["eve"]
        space = await create_space(w.mod, "Community")
        main = await w.mod.create_room(name="Main", power={bot_id: 100})
        await add_child(w.mod, space, main)
        sub = await create_space(eve, "Eve's corner")
        await add_child(w.mod, space, sub)
        corner = await eve.create_room(name="Corner", power={bot_id: 100})
        await add_child(eve, sub, corner)
        w.write_config({"protected_rooms": [], "protected_spaces": [space]})
        await w.mod.start_watching()
        await w.start_bot()
        assert w.bot.store.is_protected(corner)

        await eve.call("POST", f"{API}/rooms/{q(sub)}/ban", {"user_id": bot_id, "reason": "go away"})
        await w.mod.wait_for(w.management, from_bot(bot_id, "I keep protecting its rooms"), timeout=20)
        other = await w.mod.create_room(name="Other", power={bot_id: 100})
        await add_child(w.mod, space, other)  # an unrelated change: a walk

        async def walked() -> bool:
            return w.bot.store.is_protected(other)

        await wait_until(walked, 15, "the walk after the unrelated change")
        await settle(w)
        assert w.bot.store.is_protected(corner), "the sub-Space's rooms were dropped after all"
    finally:
        await w.close()
