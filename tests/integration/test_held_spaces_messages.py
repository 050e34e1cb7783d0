"""What the bot says about Spaces, when someone else writes the Space's text."""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.held_spaces_helpers import add_child, command, create_space, from_bot


async def test_a_hostile_sub_space_name_does_not_hide_the_rooms_where_the_bot_lacks_power(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Eve's sub-Space has a 35,000-character name and one child the bot cannot join. The
    "cannot join" line quotes the Space's name unbounded (``SpacesFeature.room_problems``), and
    the core puts those lines first and whole: in the start line's head (``announce_start``), as
    head lines of ``!mod status`` and as the first items of ``!mod rooms``. ``fit`` / ``bullet_list``
    then cut everything after it, so the room where the bot lacks the ban power is never named."""
    w = await World.create(synapse, tmp_path, rooms=0, members=("eve",))
    try:
        bot_id = w.bot_account.user_id
        eve = w.members["eve"]
        space = await create_space(w.mod, "Community")
        weak = await w.mod.create_room(name="Weak", power={bot_id: 0})  # the bot cannot ban here
        await add_child(w.mod, space, weak)
        sub = await create_space(eve, "E" * 35_000)
        await add_child(w.mod, space, sub)
        closed = await eve.create_room(name="Closed", public=False)
        await add_child(eve, sub, closed)
        w.write_config({"protected_rooms": [], "protected_spaces": [space]})
        await w.mod.start_watching()
        await w.start_bot()
        assert w.bot.store.is_protected(weak)

        started = (await w.mod.wait_for(w.management, from_bot(bot_id, "started"), timeout=30))["content"]["body"]
        status = await command(w, "!mod status")
        rooms = await command(w, "!mod rooms")
        hidden = [
            where
            for where, text in (("start", started), ("!mod status", status), ("!mod rooms", rooms))
            if weak not in text
        ]
        assert not hidden, f"the room lacking the ban power is not named in: {hidden}"
    finally:
        await w.close()
