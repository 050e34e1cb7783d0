"""The suggestions room given as an alias, a room the bot cannot join, a kick."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.suggestions_helpers import VOTES, command, marked, wait_until


async def make_world(synapse: SynapseServer, tmp_path: Path) -> World:
    return await World.create(synapse, tmp_path, members=("ann",))


def config(w: World, room: str) -> None:
    w.write_config({"suggestions": {"room": room, "threshold": 10}})


async def set_alias(w: World, room_id: str, local: str) -> str:
    alias = f"#{local}-{w.tag}:localhost"
    await w.mod.call("PUT", f"{API}/directory/room/{q(alias)}", {"room_id": room_id})
    return alias


async def bot_in(w: World, room: str) -> None:
    bot_id = w.bot_account.user_id

    async def joined() -> bool:
        return await w.mod.membership(room, bot_id) == "join"

    await wait_until(joined, 25, "the bot joining the suggestions room")


async def test_suggestions_room_given_as_an_alias(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await make_world(synapse, tmp_path)
    try:
        room = await w.mod.create_room(name="Ideas")
        alias = await set_alias(w, room, "ideas")
        ann = w.members["ann"]
        await ann.join(alias)
        config(w, alias)
        await w.mod.start_watching()
        await w.start_bot()
        await bot_in(w, room)
        idea = await ann.say(room, "Alias ideas work")
        await marked(w.mod, room, idea, w.bot_account.user_id, VOTES, "vote reactions via alias")
        status = await command(w, "!mod status")
        assert "Suggestions: watching" in status
        await w.stop_bot()  # a restart with the alias: still the same room, no second reactions
        await w.start_bot()
        idea2 = await ann.say(room, "Second idea")
        await marked(w.mod, room, idea2, w.bot_account.user_id, VOTES, "vote reactions after restart")
        await command(w, "!mod suggestion #1 approved")
        await marked(w.mod, room, idea, w.bot_account.user_id, VOTES | {"🟢"}, "🟢 via alias room")
    finally:
        await w.close()


async def test_private_room_by_id_said_in_status_and_joined_once_invited(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w = await make_world(synapse, tmp_path)
    try:
        room = await w.mod.create_room(name="Private ideas", public=False)
        ann = w.members["ann"]
        config(w, room)
        await w.mod.start_watching()
        await w.start_bot()
        status = await command(w, "!mod status")
        assert "Suggestions: ⚠️ cannot join" in status, status
        await w.mod.invite(room, w.bot_account.user_id)
        await bot_in(w, room)
        await w.mod.invite(room, ann.user_id)
        await ann.join(room)
        idea = await ann.say(room, "Invite-only ideas")
        await marked(w.mod, room, idea, w.bot_account.user_id, VOTES, "vote reactions once invited")
        assert "Suggestions: watching" in await command(w, "!mod status")
    finally:
        await w.close()


async def test_private_room_by_alias_joined_once_invited(synapse: SynapseServer, tmp_path: Path) -> None:
    """The config names the room by its alias; the invite names it by its id."""
    w = await make_world(synapse, tmp_path)
    try:
        room = await w.mod.create_room(name="Private ideas", public=False)
        alias = await set_alias(w, room, "private-ideas")
        ann = w.members["ann"]
        config(w, alias)
        await w.mod.start_watching()
        await w.start_bot()
        status = await command(w, "!mod status")
        assert "Suggestions: ⚠️ cannot join" in status, status
        await w.mod.invite(room, w.bot_account.user_id)
        await bot_in(w, room)
        await w.mod.invite(room, ann.user_id)
        await ann.join(room)
        idea = await ann.say(room, "Alias + invite")
        await marked(w.mod, room, idea, w.bot_account.user_id, VOTES, "vote reactions once invited")
        assert "Suggestions: watching" in await command(w, "!mod status")
    finally:
        await w.close()


async def kicked_world(synapse: SynapseServer, tmp_path: Path) -> tuple[World, str]:
    w = await make_world(synapse, tmp_path)
    room = await w.mod.create_room(name="Private ideas", public=False, invite=[w.bot_account.user_id])
    ann = w.members["ann"]
    await w.mod.invite(room, ann.user_id)
    await ann.join(room)
    config(w, room)
    await w.mod.start_watching()
    await w.start_bot()
    await bot_in(w, room)
    await w.mod.call("POST", f"{API}/rooms/{q(room)}/kick", {"user_id": w.bot_account.user_id, "reason": "oops"})
    await asyncio.sleep(2)
    return w, room


async def test_kicked_from_the_suggestions_room_status_says_so(synapse: SynapseServer, tmp_path: Path) -> None:
    w, _room = await kicked_world(synapse, tmp_path)
    try:
        status = await command(w, "!mod status")
        assert "Suggestions: watching" not in status, "status still says watching after a kick"
    finally:
        await w.close()


async def test_kicked_from_the_suggestions_room_rejoins_when_invited(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await kicked_world(synapse, tmp_path)
    try:
        await w.mod.invite(room, w.bot_account.user_id)
        await bot_in(w, room)
        idea = await w.members["ann"].say(room, "After the kick")
        await marked(w.mod, room, idea, w.bot_account.user_id, VOTES, "vote reactions after re-invite")
    finally:
        await w.close()


async def test_an_alias_that_does_not_resolve_is_said_in_status(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await make_world(synapse, tmp_path)
    try:
        config(w, f"#nowhere-{w.tag}:localhost")
        await w.mod.start_watching()
        await w.start_bot()
        status = await command(w, "!mod status")
        assert "Suggestions: ⚠️ cannot join" in status, status
        assert "suggestion(s)" in await command(w, "!mod suggestions")
    finally:
        await w.close()
