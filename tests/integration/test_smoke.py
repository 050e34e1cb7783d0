from __future__ import annotations

from abusebot.testing.world import World


async def test_mod_ban_bans_in_protected_room_and_replies(running: World) -> None:
    w = running
    spammer = w.members["spammer"]
    command = await w.mod.say(w.management, f"!mod ban {spammer.user_id} 1h spamming links")
    reply = await w.mod.wait_for_reply(w.management, command)
    assert "Banned" in reply, reply
    assert await w.mod.membership(w.protected[0], spammer.user_id) == "ban"
