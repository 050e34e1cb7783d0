"""A first start joins the protected rooms in the background, against the real Synapse.

The bot answers commands once its first sync is done, while it is still joining rooms (500 joins
take a SQLite Synapse most of a minute). A room it joins late, at start or when invited, is
protected from its join on; what the room said before the bot was there is history: learnt as
state, never punished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from abusebot.events import Event
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, body_contains, is_redaction_of
from tests.integration.test_durable_actions import KillingProxy
from tests.integration.test_loop import wait_until
from tests.integration.test_policy_lists import USER_RULE, add_rule, new_list

FLOOD = {"protections": {"flood": {"max_messages": 3, "per_seconds": 60, "cross_room_max_messages": 50}}}


@pytest_asyncio.fixture
async def proxy(synapse: SynapseServer) -> AsyncIterator[KillingProxy]:
    """A proxy in front of the session's Synapse (it can hold requests)."""
    p = KillingProxy(synapse.url)
    await p.start()
    yield p
    p.release.set()
    await p.close()


class Seen:
    """A bot hook: the ids of the events the bot handed to its handlers."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    async def __call__(self, event: Event) -> None:
        self.ids.add(event.event_id)


async def test_status_answers_while_a_room_is_still_being_joined(
    synapse: SynapseServer, tmp_path: Path, proxy: KillingProxy
) -> None:
    """With one room's join held at the homeserver, ``!mod status`` answers and says a room is
    still being joined; once the join goes through, one line says so and the room is protected."""
    w = await World.create(synapse, tmp_path, rooms=2, config=FLOOD)
    try:
        slow = w.protected[1]
        proxy.hold = lambda method, path: method == "POST" and "/join/" in path and slow in path.replace("%21", "!")
        w.write_config({"homeserver": proxy.url, **FLOOD})
        await w.mod.start_watching()
        bot = await w.start_bot(settled=False)
        await asyncio.wait_for(proxy.held.wait(), 15)
        await wait_until(lambda: _true(bot.store.protected == w.protected[:1]), 15, "the other room joined")

        asked = await w.mod.say(w.management, "!mod status")
        status = await w.mod.wait_for_reply(w.management, asked)
        assert "protecting 1 room(s)" in status
        assert "joining 1 more" in status
        assert not bot.settled

        proxy.release.set()
        await w.mod.wait_for(w.management, body_contains("Joined 2 room(s)", "protecting 2 room(s)"))
        await wait_until(lambda: _true(bot.settled), 15, "the background joins done")
        spammer = w.members["spammer"]
        sent = [await spammer.say(slow, f"flood {n}") for n in range(4)]
        for event_id in sent:
            await w.mod.wait_for(slow, is_redaction_of(event_id))
    finally:
        await w.close()


async def test_what_a_room_said_before_the_first_start_is_not_punished(synapse: SynapseServer, tmp_path: Path) -> None:
    """A flood sent before the bot ever joined is in its first timeline of the room: it is not
    handed to the protections (no redaction, no infraction); what comes after the join is."""
    w = await World.create(synapse, tmp_path, config=FLOOD)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        before = [await spammer.say(room, f"old flood {n}") for n in range(5)]
        await w.mod.start_watching()
        seen = Seen()
        await w.start_bot(hooks=[seen])
        after = [await spammer.say(room, f"new flood {n}") for n in range(4)]
        for event_id in after:
            await w.mod.wait_for(room, is_redaction_of(event_id))
        assert seen.ids.isdisjoint(before)
        redacted = {e.get("redacts") for e in w.mod.seen.get(room, []) if e.get("type") == "m.room.redaction"}
        assert redacted.isdisjoint(before)
        history = await w.bot.ledger.history(spammer.user_id)
        assert len(history) == 1  # the new flood's warning, and nothing for the old one
    finally:
        await w.close()


async def test_a_room_joined_on_invite_does_not_punish_its_history(synapse: SynapseServer, tmp_path: Path) -> None:
    """A configured room the bot could not join at start (not invited) is joined when invited:
    the flood from before the invite is history, a flood after the join is acted on."""
    w = await World.create(synapse, tmp_path, config=FLOOD)
    try:
        spammer, bot_id = w.members["spammer"], w.bot_account.user_id
        late = await w.mod.create_room(name="Late room", invite=[spammer.user_id], power={bot_id: 100}, public=False)
        await spammer.join(late)
        w.write_config({"protected_rooms": [*w.protected, late], **FLOOD})
        await w.mod.start_watching()
        seen = Seen()
        bot = await w.start_bot(hooks=[seen])
        assert not bot.store.is_protected(late)
        before = [await spammer.say(late, f"old flood {n}") for n in range(5)]

        await w.mod.invite(late, bot_id)
        await wait_until(lambda: _true(bot.store.room(late).membership(bot_id) == "join"), 20, "the bot joining")
        await wait_until(lambda: _true(bot.store.is_protected(late)), 20, "the late room protected")
        after = [await spammer.say(late, f"new flood {n}") for n in range(4)]
        for event_id in after:
            await w.mod.wait_for(late, is_redaction_of(event_id))
        assert seen.ids.isdisjoint(before)
        assert len(await bot.ledger.history(spammer.user_id)) == 1
    finally:
        await w.close()


async def test_a_room_joined_on_invite_meets_the_policy_lists(synapse: SynapseServer, tmp_path: Path) -> None:
    """The lists were applied at start, before the bot was in this room: a listed member already
    in it is banned there when the bot joins it on invite."""
    w = await World.create(synapse, tmp_path, members=())
    try:
        bot_id = w.bot_account.user_id
        listed = w.person("listed")
        late = await w.mod.create_room(name="Late room", invite=[listed.user_id], power={bot_id: 100}, public=False)
        await listed.join(late)
        lst = await new_list(w)
        await add_rule(w.mod, lst, listed.user_id, "known spammer")
        w.write_config({"protected_rooms": [*w.protected, late], "policy_lists": {"watch": [lst]}})
        await w.mod.start_watching()
        bot = await w.start_bot()
        await w.mod.invite(late, bot_id)

        async def banned() -> bool:
            return await w.mod.membership(late, listed.user_id) == "ban"

        await wait_until(banned, 20, "the listed member banned in the late room")
        infractions = await bot.ledger.active(listed.user_id, "ban")
        assert [inf.origin for inf in infractions] == ["policy_list"]
        assert infractions[0].rule == f"{lst} {USER_RULE} rule:{listed.user_id}"
    finally:
        await w.close()


async def _true(value: Any) -> bool:
    return bool(value)


async def test_a_ban_typed_while_a_room_is_being_joined_reaches_it_once_joined(
    synapse: SynapseServer, tmp_path: Path, proxy: KillingProxy
) -> None:
    """``!mod ban`` while the bot is still joining one of two rooms bans in the room it is in;
    once the other is joined, the same ban (same infraction) reaches the member there too."""
    w = await World.create(synapse, tmp_path, rooms=2)
    try:
        slow = w.protected[1]
        spammer = w.members["spammer"]
        proxy.hold = lambda method, path: method == "POST" and "/join/" in path and slow in path.replace("%21", "!")
        w.write_config({"homeserver": proxy.url})
        await w.mod.start_watching()
        bot = await w.start_bot(settled=False)
        await asyncio.wait_for(proxy.held.wait(), 15)
        await wait_until(lambda: _true(bot.store.protected == w.protected[:1]), 15, "the other room joined")
        asked = await w.mod.say(w.management, f"!mod ban {spammer.user_id} spam")
        reply = await w.mod.wait_for_reply(w.management, asked)
        assert "Banned" in reply
        assert await w.mod.membership(w.protected[0], spammer.user_id) == "ban"
        assert await w.mod.membership(slow, spammer.user_id) == "join"

        proxy.release.set()

        async def banned_there() -> bool:
            return await w.mod.membership(slow, spammer.user_id) == "ban"

        await wait_until(banned_there, 20, "the ban reaching the room joined late")
        [ban] = await bot.ledger.active(spammer.user_id, "ban")
        assert ban.scope == "*"
    finally:
        await w.close()
