"""Probes of promises the existing Space test does not cover (kept because they pass and
nothing else tests them)."""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.held_spaces_helpers import add_child, command, create_space, server_of, settle, wait_until
from tests.integration.spaces_helpers import start_with_space


async def test_hostile_child_events_are_ignored_and_the_bot_goes_on(synapse: SynapseServer, tmp_path: Path) -> None:
    """Children with ``via`` of the wrong type, non-string servers, a huge list, state keys that
    are not room ids (an alias, a user, hostile unicode, 250 characters) are none of them
    protected or joined, and a real child added after them is protected."""
    w = await World.create(synapse, tmp_path, rooms=0, members=())
    try:
        bot_id = w.bot_account.user_id
        space, main = await start_with_space(w)
        here = server_of(w.mod)
        weird = await w.mod.create_room(name="Weird", power={bot_id: 100})
        hostile = [
            (weird, {"via": here}),
            (weird, {"via": {"server": here}}),
            (weird, {"via": [1, None, here]}),
            (weird, {"via": [""]}),
            (weird, {"via": None}),
            ("#alias:" + here, {"via": [here]}),
            (w.mod.user_id, {"via": [here]}),
            ("!" + "\u202e\u0000\ufeff" * 3 + ":" + here, {"via": [here]}),
            ("!" + "x" * 240 + ":" + here, {"via": [here]}),  # as long as Synapse allows
        ]
        for key, content in hostile:
            await add_child(w.mod, space, key, content)
        await add_child(w.mod, space, "!huge:" + here, {"via": [f"s{n}.invalid" for n in range(3000)]})
        await settle(w)
        assert not w.bot.store.is_protected(weird)
        late = await w.mod.create_room(name="Late", power={bot_id: 100})
        await add_child(w.mod, space, late)

        async def protected() -> bool:
            return w.bot.store.is_protected(late)

        await wait_until(protected, 20, "a real child after the hostile ones")
        assert set(w.bot.store.protected) == {main, late}
        assert "Spaces: 1 watched" in await command(w, "!mod status")
    finally:
        await w.close()


async def test_a_policy_list_ban_reaches_a_child_added_later(synapse: SynapseServer, tmp_path: Path) -> None:
    """A list's ban of a member of one room is applied to a child added later, although the
    banned user is not in it ("every applied policy-list ban is applied to it")."""
    w = await World.create(synapse, tmp_path, rooms=0, members=("troll",))
    try:
        bot_id = w.bot_account.user_id
        troll = w.members["troll"]
        space = await create_space(w.mod, "Community")
        main = await w.mod.create_room(name="Main", power={bot_id: 100})
        await add_child(w.mod, space, main)
        await troll.join(main)
        banlist = await w.mod.create_room(name="Ban list", invite=[bot_id])
        w.write_config({"protected_rooms": [], "protected_spaces": [space], "policy_lists": {"watch": [banlist]}})
        await w.mod.start_watching()
        await w.start_bot()
        await w.mod.put_state(
            banlist,
            "m.policy.rule.user",
            {"entity": troll.user_id, "recommendation": "m.ban", "reason": "spam"},
            state_key=f"rule:{troll.user_id}",
        )

        async def banned_in_main() -> bool:
            return await w.mod.membership(main, troll.user_id) == "ban"

        await wait_until(banned_in_main, 20, "the list's ban in the first room")
        late = await w.mod.create_room(name="Late", power={bot_id: 100})
        await add_child(w.mod, space, late)

        async def banned_in_late() -> bool:
            return await w.mod.membership(late, troll.user_id) == "ban"

        await wait_until(banned_in_late, 20, "the list's ban reaching the child added later")
    finally:
        await w.close()
