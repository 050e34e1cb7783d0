"""A member opens a case in their direct chat and then leaves the chat (Element: "Leave", how
people close a conversation). A moderator answers with ``!mod reply N``. The bot confirms with
✅ only for an answer the member can read; here it posts into a room the member is no longer in.
What should hold: the member gets the answer (invited back, or in a room they are in), or the
moderator is told it could not be delivered — never a ✅ for an answer nobody will read."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, replies_to
from tests.integration.cases_helpers import history
from tests.integration.test_cases import reaction_to, start_case


async def test_an_answer_to_a_member_who_left_the_chat_reaches_them_or_is_not_confirmed(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w = await World.create(synapse, tmp_path, members=("member",))
    try:
        bot_id = w.bot_account.user_id
        member = w.members["member"]
        await w.mod.start_watching()
        await w.start_bot()
        dm, number = await start_case(member, bot_id, "someone is harassing me, please help")
        await member.call("POST", f"{API}/rooms/{q(dm)}/leave", {})
        await asyncio.sleep(2)

        command = await w.mod.say(w.management, f"!mod reply {number} we banned them, you are safe now")
        await asyncio.sleep(6)
        await w.mod.poll(1000)
        confirmed = any(reaction_to(command, "✅")(e) for e in w.mod.seen.get(w.management, []))
        warned = [e["content"].get("body", "") for e in await history(w.mod, w.management) if replies_to(e, command)]

        # Where could the member read it? Any room they are joined to or invited to by the bot.
        reply = await member.call("GET", f"{API}/sync", query={"timeout": "0"})
        rooms = reply.get("rooms", {})
        invited = list((rooms.get("invite") or {}).keys())
        joined = list((rooms.get("join") or {}).keys())
        readable = bool(invited)
        for room_id in joined:
            if any(
                e.get("sender") == bot_id and "you are safe now" in (e.get("content") or {}).get("body", "")
                for e in await history(member, room_id)
            ):
                readable = True
        assert readable or not confirmed, (
            f"✅ confirmed={confirmed}, answers={warned}, but the member cannot read the answer "
            f"(joined {joined}, invited {invited})"
        )
    finally:
        await w.close()
