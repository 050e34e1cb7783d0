"""Protections acting on their own against the real Synapse: flood, join wave, observe mode, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, body_contains, is_redaction_of

FLOOD = {"protections": {"flood": {"max_messages": 3, "per_seconds": 30, "cross_room_max_messages": 50}}}


async def test_a_flood_is_redacted_and_the_sender_warned(synapse: SynapseServer, tmp_path: Path) -> None:
    """Four quick messages over a limit of three: all four are redacted and the flooder is warned."""
    w = await World.launch(synapse, tmp_path, config=FLOOD)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        sent = [await spammer.say(room, f"flood {i}") for i in range(4)]
        for event_id in sent:
            await w.mod.wait_for(room, is_redaction_of(event_id))
        await w.mod.wait_for(w.management, body_contains("Warned", spammer.user_id, "flood"))
        history = await w.bot.ledger.history(spammer.user_id)
        assert [(i.kind, i.level, i.origin) for i in history] == [("warning", 1, "protection")]
    finally:
        await w.close()


async def test_repeated_floods_escalate_to_a_mute(synapse: SynapseServer, tmp_path: Path) -> None:
    """A second flood after the first burst's sweep window mutes the flooder (power level below
    events_default)."""
    config = {"protections": {"flood": {"max_messages": 3, "per_seconds": 2, "cross_room_max_messages": 50}}}
    w = await World.launch(synapse, tmp_path, config=config)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        for burst in range(2):
            for i in range(4):
                await spammer.say(room, f"flood {burst}.{i}")
            await w.mod.wait_for(w.management, body_contains("Warned" if burst == 0 else "Muted", spammer.user_id))
            await asyncio.sleep(2.5)  # the first burst is over: what follows is a new one
        levels = await w.mod.state(room, "m.room.power_levels")
        assert levels is not None
        assert levels["users"][spammer.user_id] < levels.get("events_default", 0)
    finally:
        await w.close()


async def test_observe_mode_acts_on_nothing(synapse: SynapseServer, tmp_path: Path) -> None:
    """In observe mode the flood is reported to the management room; nothing is redacted or recorded."""
    config = {"protections": {"flood": {**FLOOD["protections"]["flood"], "mode": "observe"}}}
    w = await World.launch(synapse, tmp_path, config=config)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        sent = [await spammer.say(room, f"flood {i}") for i in range(4)]
        await w.mod.wait_for(w.management, body_contains("[observe]", "flood", spammer.user_id))
        await w.mod.poll(500)
        redactions = [e for e in w.mod.seen.get(room, []) if e.get("type") == "m.room.redaction"]
        assert redactions == []
        assert await w.bot.ledger.history(spammer.user_id) == []
        # Each message is still there, as sent (a redacted one has lost its body).
        for number, event_id in enumerate(sent):
            event = await w.mod.call("GET", f"{API}/rooms/{q(room)}/event/{q(event_id)}")
            assert event["content"].get("body") == f"flood {number}"
    finally:
        await w.close()


async def test_moderators_are_exempt_from_protections(synapse: SynapseServer, tmp_path: Path) -> None:
    """The moderator can post faster than the flood limit without any action."""
    w = await World.launch(synapse, tmp_path, config=FLOOD)
    try:
        room = w.protected[0]
        for i in range(6):
            await w.mod.say(room, f"announcement {i}")
        marker = await w.mod.say(w.management, "!mod status")
        await w.mod.wait_for_reply(w.management, marker)
        assert not [e for e in w.mod.seen.get(room, []) if e.get("type") == "m.room.redaction"]
        assert await w.bot.ledger.history(w.mod.user_id) == []
    finally:
        await w.close()


async def test_a_join_wave_alerts_locks_and_restores_the_join_rule(synapse: SynapseServer, tmp_path: Path) -> None:
    """Four new members within a minute (limit three): alert, invite-only, then public again."""
    config = {"protections": {"join_wave": {"max_joins": 3, "per_seconds": 60, "lock_seconds": 4}}}
    w = await World.launch(synapse, tmp_path, config=config, members=())
    try:
        room = w.protected[0]
        for n in range(4):
            await w.person(f"joiner{n}").join(room)
        await w.mod.wait_for(w.management, body_contains("join wave", "4 new members"))
        await w.mod.wait_for(
            room, lambda e: e.get("type") == "m.room.join_rules" and e["content"].get("join_rule") == "invite"
        )
        await w.mod.wait_for(w.management, body_contains("join rule restored", "public"), timeout=30)
        assert (await w.mod.state(room, "m.room.join_rules") or {}).get("join_rule") == "public"
    finally:
        await w.close()


async def test_protection_settings_and_ladder_state_survive_a_restart(synapse: SynapseServer, tmp_path: Path) -> None:
    """A moderator's `!mod protections set` and the user's ladder level are still there after a restart."""
    w = await World.launch(synapse, tmp_path, config=FLOOD)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        command = await w.mod.say(w.management, "!mod protections set flood max_messages 2")
        assert "max_messages=2" in await w.mod.wait_for_reply(w.management, command)
        for i in range(3):
            await spammer.say(room, f"flood {i}")
        await w.mod.wait_for(w.management, body_contains("Warned", spammer.user_id))

        await w.stop_bot()
        await w.start_bot()
        listing = await w.mod.say(w.management, "!mod protections")
        assert "max_messages=2" in await w.mod.wait_for_reply(w.management, listing)
        for i in range(3):
            await spammer.say(room, f"again {i}")
        await w.mod.wait_for(w.management, body_contains("Muted", spammer.user_id))
        history = await w.bot.ledger.history(spammer.user_id)
        assert [i.level for i in history] == [2, 1]
    finally:
        await w.close()


async def test_disabling_a_protection_from_the_management_room(synapse: SynapseServer, tmp_path: Path) -> None:
    """`!mod protections disable flood` stops flood handling at once and `!mod status` shows it."""
    w = await World.launch(synapse, tmp_path, config=FLOOD)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        command = await w.mod.say(w.management, "!mod protections disable flood")
        assert "flood: disabled" in await w.mod.wait_for_reply(w.management, command)
        for i in range(5):
            await spammer.say(room, f"flood {i}")
        status = await w.mod.say(w.management, "!mod status")
        assert "off: flood" in await w.mod.wait_for_reply(w.management, status)
        assert await w.bot.ledger.history(spammer.user_id) == []
    finally:
        await w.close()


async def test_a_bad_protections_command_gets_usage(synapse: SynapseServer, tmp_path: Path) -> None:
    """Setting an unknown key or a wrong type is refused with the usage line; nothing changes."""
    w = await World.launch(synapse, tmp_path, config=FLOOD)
    try:
        bad_key = await w.mod.say(w.management, "!mod protections set flood max_mesages 2")
        assert "Usage" in await w.mod.wait_for_reply(w.management, bad_key)
        bad_value = await w.mod.say(w.management, "!mod protections set flood max_messages lots")
        reply = await w.mod.wait_for_reply(w.management, bad_value)
        assert "max_messages" in reply
        assert "Usage" in reply
        assert w.bot.pipeline.setups["flood"].settings.max_messages == 3
        listing = await w.mod.say(w.management, "!mod protections")
        assert "max_messages=3" in await w.mod.wait_for_reply(w.management, listing)
    finally:
        await w.close()
