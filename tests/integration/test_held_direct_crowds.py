"""A member's "direct" invites to rooms of three: each is joined and left; none counts toward
the member's limit of 3, so one member pulls the bot into any number of rooms (each join and
state read on the sync loop)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World


async def test_a_member_cannot_pull_the_bot_into_many_crowd_rooms(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await World.create(synapse, tmp_path, members=("spammer", "friend"))
    try:
        bot_id = w.bot_account.user_id
        spammer, friend = w.members["spammer"], w.members["friend"]
        await w.start_bot()
        rooms = []
        for _ in range(8):
            reply = await spammer.call(
                "POST",
                f"{API}/createRoom",
                {"preset": "private_chat", "is_direct": True, "invite": [bot_id, friend.user_id]},
            )
            rooms.append(str(reply["room_id"]))
        await asyncio.sleep(8)
        joined_ever = 0
        for room in rooms:
            if await _joined_ever(spammer, room, bot_id):
                joined_ever += 1
        assert joined_ever <= 3, f"the bot joined {joined_ever} of one member's 8 'direct' rooms"
    finally:
        await w.close()


async def _joined_ever(person: Person, room: str, user: str) -> bool:
    """Whether ``user`` ever joined ``room`` (a declined invite leaves "leave" after "invite")."""
    history = await person.call("GET", f"{API}/rooms/{q(room)}/messages", query={"dir": "b", "limit": "100"})
    return any(
        e.get("type") == "m.room.member"
        and e.get("state_key") == user
        and (e.get("content") or {}).get("membership") == "join"
        for e in history.get("chunk", [])
    )
