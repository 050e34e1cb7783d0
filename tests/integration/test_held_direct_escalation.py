"""A plain member turns a direct chat with the bot into a *protected* room of their own,
where they are admin: then the bot shields them everywhere ("out of reach in any room is out of
reach everywhere") and the policy lists count them as staff."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from abusebot.matrix import API
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World
from tests.integration.test_loop import wait_until


async def _true(value: Any) -> bool:
    return bool(value)


async def open_dm(member: Person, bot_id: str, power: dict[str, int] | None = None) -> str:
    reply = await member.call(
        "POST",
        f"{API}/createRoom",
        {
            "preset": "private_chat",
            "is_direct": True,
            "invite": [bot_id],
            "power_level_content_override": {"users": dict(power or {})},
        },
    )
    return str(reply["room_id"])


async def test_kick_and_reinvite_does_not_make_a_direct_chat_protected(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await World.create(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        spammer, room = w.members["spammer"], w.protected[0]
        await w.mod.start_watching()
        bot = await w.start_bot()
        dm = await open_dm(spammer, bot_id, {bot_id: 50})  # the bot may ban there: the room "counts"
        await wait_until(lambda: _true(dm in bot.host.features["direct_chats"].rooms), 20, "the DM accepted")
        await spammer.call("POST", f"{API}/rooms/{dm}/kick", {"user_id": bot_id, "reason": "bye"})
        await wait_until(lambda: _true(True), 1.5, "")  # the bot sees its kick
        await spammer.invite(dm, bot_id)

        async def back() -> bool:
            return await spammer.membership(dm, bot_id) == "join"

        await wait_until(back, 20, "the bot back in the DM")
        await wait_until(lambda: _true(True), 1.5, "")
        assert not bot.store.is_protected(dm), "a member's direct chat became a protected room"
        asked = await w.mod.say(w.management, f"!mod ban {spammer.user_id} spam")
        reply = await w.mod.wait_for_reply(w.management, asked)
        assert await w.mod.membership(room, spammer.user_id) == "ban", reply
    finally:
        await w.close()


async def test_a_tombstone_in_a_direct_chat_does_not_protect_its_replacement(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w = await World.create(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        spammer, room = w.members["spammer"], w.protected[0]
        await w.mod.start_watching()
        bot = await w.start_bot()
        dm = await open_dm(spammer, bot_id)
        await wait_until(lambda: _true(dm in bot.host.features["direct_chats"].rooms), 20, "the DM accepted")
        mine = await spammer.create_room(name="Mine", power={bot_id: 50}, public=True)
        await spammer.put_state(dm, "m.room.tombstone", {"body": "moved", "replacement_room": mine})
        joined = lambda: _true(bot.store.room(mine).membership(bot_id) == "join")  # noqa: E731
        with contextlib.suppress(AssertionError):
            await wait_until(joined, 10, "the bot joining the replacement")
        await wait_until(lambda: _true(True), 1, "")
        assert not bot.store.is_protected(mine), "a member's room became protected by a DM tombstone"
        asked = await w.mod.say(w.management, f"!mod ban {spammer.user_id} spam")
        reply = await w.mod.wait_for_reply(w.management, asked)
        assert await w.mod.membership(room, spammer.user_id) == "ban", reply
    finally:
        await w.close()
