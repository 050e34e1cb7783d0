"""Protecting a whole Space against the real Synapse: a Space with two rooms and a sub-Space
with one, an invite-only child the bot cannot join, a child where it lacks power; a child added
later is protected at once and gets the sanctions in force everywhere (a ban of someone not even
in it, a mute); a child removed stops being protected, and a ban it still holds is lifted with
the rest; an invite brings in the child the bot could not join; a restart announces only what
changed while the bot was away."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.cases_helpers import command
from tests.integration.spaces_helpers import add_child, create_space, remove_child
from tests.integration.test_cases import from_bot
from tests.integration.test_commands import users_levels
from tests.integration.test_day_one import check_config
from tests.integration.test_loop import ledger_query, wait_until


async def test_a_spaces_rooms_are_protected_as_it_changes(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await World.create(synapse, tmp_path, rooms=0, members=("spammer", "troll", "ann"))
    try:
        bot_id = w.bot_account.user_id
        spammer, troll, ann = (w.members[name] for name in ("spammer", "troll", "ann"))
        space = await create_space(w.mod, "Community")
        wider = await create_space(w.mod, "Wider")
        main = await w.mod.create_room(name="Main", power={bot_id: 100})
        meta = await w.mod.create_room(name="Meta", power={bot_id: 100})
        offtopic = await w.mod.create_room(name="Off-topic")  # the bot stays at 0 there
        lounge = await w.mod.create_room(name="Lounge", public=False, power={bot_id: 100})
        for room in (main, meta, wider, lounge):
            await add_child(w.mod, space, room)
        await add_child(w.mod, wider, offtopic)
        await add_child(w.mod, wider, space)  # a loop back to the top: walked once
        await add_child(w.mod, space, "!GoneChildRoomWithoutVia", {"via": []})  # a removed child
        await spammer.join(main)
        await spammer.join(offtopic)
        await ann.join(meta)
        w.write_config({"protected_rooms": [], "protected_spaces": [space]})
        await w.mod.start_watching()
        await w.start_bot()

        started = await w.mod.wait_for(w.management, from_bot(bot_id, "started"), timeout=30)
        text = started["content"]["body"]
        assert "protecting 3 room(s)" in text, text
        assert all(part in text for part in (lounge, "cannot join")), text  # invite-only: said at start
        assert all(part in text for part in ("Off-topic", "missing ban")), text  # no power there: said at start
        bot = w.bot
        assert set(bot.store.protected) == {main, meta, offtopic}
        spaces = bot.host.features["spaces"]
        assert set(spaces.spaces) == {space, wider}
        assert not any(bot.store.is_protected(room) for room in (space, wider))  # watched only

        listing = await command(w, "!mod rooms")
        main_line = next(line for line in listing.splitlines() if main in line)
        assert all(part in main_line for part in ("from Space Community", "my power 100")), main_line
        assert "all powers I need" in main_line, main_line
        off_line = next(line for line in listing.splitlines() if offtopic in line)
        assert all(part in off_line for part in ("from Space Wider", "my power 0", "missing ban")), off_line
        assert any(lounge in line and "cannot join" in line for line in listing.splitlines()), listing

        status_text = await command(w, "!mod status")
        assert "Spaces: 2 watched; 3 room(s) protected from them" in status_text, status_text
        assert lounge in status_text, status_text

        # Sanctions in force everywhere, before a room joins the Space.
        await command(w, f"!mod ban {troll.user_id} trolling")
        await command(w, f"!mod mute {spammer.user_id} 1d shouting")
        assert await w.mod.membership(main, troll.user_id) == "ban"
        assert await w.mod.membership(meta, troll.user_id) == "ban"
        muted_level = (await users_levels(w.mod, main))[spammer.user_id]

        late = await w.mod.create_room(name="Late", power={bot_id: 100})
        await spammer.join(late)
        await add_child(w.mod, space, late)
        await w.mod.wait_for(w.management, from_bot(bot_id, "Now protecting Late", "Space Community"), timeout=20)
        assert bot.store.is_protected(late)

        async def banned_in_late() -> bool:
            return await w.mod.membership(late, troll.user_id) == "ban"

        await wait_until(banned_in_late, 20, "the earlier ban reaching the new room (troll was never in it)")

        async def muted_in_late() -> bool:
            return (await users_levels(w.mod, late)).get(spammer.user_id) == muted_level

        await wait_until(muted_in_late, 20, "the earlier mute reaching the new room")

        # A child taken out: no longer protected, said so.
        await remove_child(w.mod, space, meta)
        await w.mod.wait_for(w.management, from_bot(bot_id, "Meta", "no longer a room of the Space"), timeout=20)
        assert not bot.store.is_protected(meta)
        assert ledger_query(w, "SELECT state FROM space_rooms WHERE room_id = ?", meta) == [("removed",)]

        # The mute's lift restores the level in the room it reached later, too.
        await command(w, f"!mod unmute {spammer.user_id} calmer now")

        async def unmuted_in_late() -> bool:
            return (await users_levels(w.mod, late)).get(spammer.user_id) != muted_level

        await wait_until(unmuted_in_late, 20, "the unmute restoring the level in the room protected later")

        # The unban reaches the room the ban was applied in, now out of the Space, as well (a
        # pardon or expiry does too: undo).
        await command(w, f"!mod unban {troll.user_id} a misunderstanding")
        for room in (main, late, meta):

            async def unbanned(room: str = room) -> bool:
                return await w.mod.membership(room, troll.user_id) != "ban"

            await wait_until(unbanned, 20, f"the pardon lifting the ban in {room}")

        # The invite-only child: joined and protected once the bot is invited.
        await w.mod.invite(lounge, bot_id)
        await w.mod.wait_for(w.management, from_bot(bot_id, "Now protecting Lounge"), timeout=20)
        assert bot.store.is_protected(lounge)

        # While the bot is away, a room is added: announced at the next start, nothing else is.
        await w.stop_bot()
        w.mod.seen.clear()
        later = await w.mod.create_room(name="Later", power={bot_id: 100})
        await add_child(w.mod, space, later)
        await w.start_bot()
        await w.mod.wait_for(w.management, from_bot(bot_id, "Now protecting Later"), timeout=30)
        await command(w, "!mod status")  # after the start's lines: none said the others are new
        said = [e["content"].get("body", "") for e in w.mod.seen[w.management] if e.get("sender") == bot_id]
        assert [line for line in said if "Now protecting" in line] == [
            next(line for line in said if "Now protecting Later" in line)
        ], said
        assert set(w.bot.store.protected) == {main, offtopic, late, lounge, later}
        rows = dict(ledger_query(w, "SELECT room_id, state FROM space_rooms"))
        assert {room: rows[room] for room in (main, offtopic, late, lounge, later)} == dict.fromkeys(
            (main, offtopic, late, lounge, later), "protected"
        )
        assert rows[wider] == "watched"
    finally:
        await w.close()


async def test_a_sub_space_taken_out_takes_its_rooms_with_it(synapse: SynapseServer, tmp_path: Path) -> None:
    """The sub-Space's rooms are protected through it; once it leaves the Space, they are not
    (while a room the config names stays protected, said so). The management room and a policy
    list named by a Space are never protected."""
    w = await World.create(synapse, tmp_path, rooms=1, members=("ann",))
    try:
        bot_id = w.bot_account.user_id
        configured = w.protected[0]
        space = await create_space(w.mod, "Community")
        sub = await create_space(w.mod, "Sub")
        inner = await w.mod.create_room(name="Inner", power={bot_id: 100})
        await add_child(w.mod, space, sub)
        await add_child(w.mod, sub, inner)
        await add_child(w.mod, space, configured)
        ban_list = await w.mod.create_room(name="Ban list", invite=[bot_id])
        for never in (ban_list, w.management):  # a Space naming them never makes them protected
            await add_child(w.mod, sub, never)
        w.write_config({"protected_spaces": [space], "policy_lists": {"watch": [ban_list]}})
        await w.mod.start_watching()
        await w.start_bot()
        bot = w.bot
        assert set(bot.store.protected) == {configured, inner}
        skipped = bot.host.features["spaces"].problems
        assert {room: skipped[room].detail for room in (ban_list, w.management)} == {
            ban_list: "a policy list",
            w.management: "the management room",
        }
        assert sorted(bot.store.origins(configured)) == ["config", "space"]

        await remove_child(w.mod, space, configured)
        reply = await w.mod.wait_for(w.management, from_bot(bot_id, "no longer a room of the Space"), timeout=20)
        assert "stays protected" in reply["content"]["body"], reply["content"]["body"]
        assert bot.store.is_protected(configured)

        await remove_child(w.mod, space, sub)
        await w.mod.wait_for(w.management, from_bot(bot_id, "Inner", "I stopped protecting it"), timeout=20)
        assert not bot.store.is_protected(inner)
        assert sub not in bot.host.features["spaces"].spaces
        # A message in the Space room itself is never weighed by a protection.
        await asyncio.sleep(0.5)
        assert bot.store.protected == [configured]
    finally:
        await w.close()


async def test_check_config_checks_the_spaces(synapse: SynapseServer, tmp_path: Path) -> None:
    """A public Space the bot is not in yet is fine (it joins at start); a room that is no Space is
    a problem (exit 1); a Space alias that does not resolve is a config error (exit 2)."""
    w = await World.create(synapse, tmp_path, rooms=1, members=())
    try:
        space = await create_space(w.mod, "Community")
        plain = await w.mod.create_room(name="Plain")
        await w.mod.invite(plain, w.bot_account.user_id)
        fine = check_config(w, protected_spaces=[space])
        assert "protected_spaces[0]" in fine.stdout, fine.stdout
        assert "I join it at start" in fine.stdout, fine.stdout
        w.write_config({"protected_spaces": [space]})
        await w.start_bot()  # joins the management room, the protected room and the Space
        await w.bot.join_watched(plain)
        await w.stop_bot()
        joined = check_config(w, protected_spaces=[space, plain])
        assert joined.returncode == 1, joined.stdout + joined.stderr
        assert "a Space (its rooms are checked at start)" in joined.stdout, joined.stdout
        assert f"protected_spaces[1] {plain}: not a Space" in joined.stdout + joined.stderr
        missing = check_config(w, protected_spaces=["#no-such-space:localhost"])
        assert missing.returncode == 2, missing.stdout + missing.stderr
        assert "protected_spaces[0]" in missing.stderr, missing.stderr
    finally:
        await w.close()
