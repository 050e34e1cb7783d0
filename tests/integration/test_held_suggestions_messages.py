"""A troll's messages: edits, threads, replies, stickers, hostile unicode, floods."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from abusebot.matrix import MatrixError
from abusebot.testing.synapse import SynapseServer
from tests.integration.suggestions_helpers import (
    VOTES,
    command,
    from_bot,
    ledger_query,
    marked,
    marks,
    react,
    suggestions_world,
    wait_until,
)


async def test_only_top_level_messages_are_suggestions(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann, bob = w.members["ann"], w.members["bob"]
        idea = await ann.say(room, "Original idea")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        not_suggestions = [
            {  # an edit
                "msgtype": "m.text",
                "body": "* Edited idea",
                "m.new_content": {"msgtype": "m.text", "body": "Edited idea"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": idea},
            },
            {  # a thread message (with Element's fallback)
                "msgtype": "m.text",
                "body": "thread",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": idea,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": idea},
                },
            },
            {"msgtype": "m.text", "body": "reply", "m.relates_to": {"m.in_reply_to": {"event_id": idea}}},
            {"msgtype": "m.text", "body": "  \u200b\u202e\u2066 \n\t "},  # invisible only
            {"msgtype": "m.text", "body": ""},
            {"msgtype": "m.text"},
        ]
        sent = []
        for content in not_suggestions:
            with contextlib.suppress(MatrixError):
                sent.append(await bob.send(room, content))
        sticker = await bob.send(
            room, {"body": "a sticker", "url": "mxc://localhost/abc", "info": {}}, event_type="m.sticker"
        )
        await asyncio.sleep(2.5)
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestions")[0][0] == 1
        for event_id in [*sent, sticker]:
            assert await marks(w.mod, room, event_id, bot_id) == set(), event_id
        excerpt = ledger_query(w, "SELECT excerpt FROM suggestions")[0][0]
        assert excerpt == "Original idea"  # the edit never changed the ledger's suggestion
        assert w.bot.host.stats["suggestions"].errors == 0
    finally:
        await w.close()


async def test_hostile_unicode_and_huge_messages(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path, threshold=0)
    try:
        bot_id = w.bot_account.user_id
        ann, bob = w.members["ann"], w.members["bob"]
        hostile = [
            "\u202eevil reversed text\u202c @room <b>bold</b> <a href='https://evil'>x</a>",
            "Z\u0351\u0352\u0353" * 2000,  # zalgo
            "🏳️‍🌈" * 3000,
            "A" * 60000,
            "line1\n\n\nline2\r\nline3",
            f"ping {w.mod.user_id} and @room",
        ]
        ids = [await ann.say(room, text) for text in hostile]
        for event_id in ids:
            await marked(w.mod, room, event_id, bot_id, VOTES, "vote reactions on a hostile message")
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestions")[0][0] == len(hostile)
        assert max(len(r[0]) for r in ledger_query(w, "SELECT excerpt FROM suggestions")) <= 300
        rows = ledger_query(w, "SELECT excerpt FROM suggestions")
        assert not any("\u202e" in r[0] or "\n" in r[0] for r in rows)
        # threshold 0: the first vote flags each
        await react(bob, room, ids[0], "👍")
        await react(bob, room, ids[5], "👍")
        flag = await w.mod.wait_for(w.management, from_bot(bot_id, "suggestion #1", "needs discussion"), timeout=20)
        content = flag["content"]
        assert content.get("m.mentions") == {}, content.get("m.mentions")
        assert "<b>" not in content.get("formatted_body", ""), content.get("formatted_body")
        assert "\u202e" not in content["body"]
        flag6 = await w.mod.wait_for(w.management, from_bot(bot_id, "suggestion #6", "needs discussion"), timeout=20)
        assert flag6["content"].get("m.mentions") == {}
        listing_event = await w.mod.say(w.management, "!mod suggestions")
        reply = await w.mod.wait_for(
            w.management,
            lambda e: (
                e.get("sender") == bot_id
                and ((e.get("content") or {}).get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
                == listing_event
            ),
            timeout=30,
        )
        body = reply["content"]["body"]
        assert "6 suggestion(s)" in body
        assert "<b>" not in reply["content"].get("formatted_body", "")
        assert "\u202e" not in body
        assert w.bot.host.stats["suggestions"].errors == 0
    finally:
        await w.close()


async def test_a_flood_of_suggestions_each_gets_its_reactions_once(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann, bob = w.members["ann"], w.members["bob"]
        ids = await asyncio.gather(*(p.say(room, f"Flood idea {n}") for n in range(30) for p in (ann, bob)))

        async def all_reacted() -> bool:
            rows = ledger_query(w, "SELECT COUNT(*) FROM outbox WHERE key LIKE 'suggestion-vote:%' AND state = 'done'")
            return rows[0][0] == 2 * len(ids)

        await wait_until(all_reacted, 90, "the bot's vote reactions on the whole flood")
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestions")[0][0] == len(ids)
        for event_id in ids[::7]:
            assert await marks(w.mod, room, event_id, bot_id) == VOTES
        await w.stop_bot()
        await w.start_bot()
        await asyncio.sleep(2)
        assert ledger_query(w, "SELECT COUNT(*) FROM outbox WHERE key LIKE 'suggestion-vote:%'")[0][0] == 2 * len(ids)
        listing = await command(w, "!mod suggestions open")
        assert f"{len(ids)} suggestion(s) open" in listing
    finally:
        await w.close()


async def test_the_suggestions_room_being_the_management_room(synapse: SynapseServer, tmp_path: Path) -> None:
    """A config naming the management room as the suggestions room: the moderators' commands
    must not turn into suggestions with 👍 👎 on each (the config should refuse it)."""
    from abusebot.config import ConfigError
    from abusebot.testing.world import World

    w = await World.create(synapse, tmp_path, members=("ann",))
    try:
        w.write_config({"suggestions": {"room": w.management, "threshold": 10}})
        await w.mod.start_watching()
        try:
            await w.start_bot()
        except ConfigError:
            return  # refused: correct
        asked = await w.mod.say(w.management, "!mod status")
        await w.mod.wait_for_reply(w.management, asked, timeout=30)
        await asyncio.sleep(2)
        assert await marks(w.mod, w.management, asked, w.bot_account.user_id) == set()
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestions")[0][0] == 0
    finally:
        await w.close()


async def test_suggestions_posted_while_the_bot_was_down_beyond_one_sync(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """120 suggestions while the bot is down (more than one sync's timeline): each gets its
    vote reactions after the restart, none twice."""
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        first = await ann.say(room, "Before the stop")
        await marked(w.mod, room, first, bot_id, VOTES, "vote reactions")
        await w.stop_bot()
        ids = [await ann.say(room, f"While down {n}") for n in range(120)]
        await w.start_bot()

        async def all_reacted() -> bool:
            rows = ledger_query(w, "SELECT COUNT(*) FROM outbox WHERE key LIKE 'suggestion-vote:%' AND state = 'done'")
            return rows[0][0] == 2 * (len(ids) + 1)

        await wait_until(all_reacted, 120, "vote reactions on every suggestion made while down")
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestions")[0][0] == len(ids) + 1
        for event_id in (ids[0], ids[50], ids[-1]):
            assert await marks(w.mod, room, event_id, bot_id) == VOTES
    finally:
        await w.close()
