"""Vote-stuffer probes against a real Synapse."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from abusebot.matrix import MatrixError
from abusebot.testing.synapse import SynapseServer
from tests.integration.suggestions_helpers import (
    VOTES,
    bot_messages,
    command,
    from_bot,
    ledger_query,
    marked,
    marks,
    react,
    redact,
    suggestions_world,
)


def votes_of(w, suggestion_id: int) -> int:
    return ledger_query(
        w,
        "SELECT COUNT(*) FROM (SELECT DISTINCT voter, key FROM suggestion_votes"
        " WHERE suggestion_id = ? AND redacted_at IS NULL)",
        suggestion_id,
    )[0][0]


async def test_stuffing_with_duplicates_selectors_and_side_targets_counts_once(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w, room = await suggestions_world(synapse, tmp_path, threshold=2)
    try:
        bot_id = w.bot_account.user_id
        ann, bob, cy = (w.members[n] for n in ("ann", "bob", "cy"))
        idea = await ann.say(room, "More coffee")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        reply = await bob.send(
            room, {"msgtype": "m.text", "body": "yes", "m.relates_to": {"m.in_reply_to": {"event_id": idea}}}
        )
        thread = await bob.send(
            room,
            {"msgtype": "m.text", "body": "in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": idea}},
        )
        # the bot's own 👍 reaction event
        rel = await w.mod.call(
            "GET", f"/_matrix/client/v1/rooms/{room}/relations/{idea}/m.annotation", query={"limit": "50"}
        )
        bot_reaction = next(e["event_id"] for e in rel["chunk"] if e["sender"] == bot_id)

        await react(ann, room, idea, "👍")
        await react(ann, room, idea, "👍\ufe0f")  # the same vote with a variation selector
        with contextlib.suppress(MatrixError):
            await react(ann, room, idea, "👍")  # the same key twice (Synapse refuses it)
        await react(ann, room, idea, " 👍")
        await react(ann, room, idea, "🎉")  # not a vote key
        await react(ann, room, bot_reaction, "👍")  # on the bot's reaction
        await react(ann, room, reply, "👎")  # on a reply
        await react(ann, room, thread, "👎")  # on a thread message
        await react(cy, room, reply, "👍")
        await react(cy, room, thread, "👍")
        await react(bob, room, idea, "👍")
        await asyncio.sleep(2.5)
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestions")[0][0] == 1
        assert votes_of(w, 1) == 2
        assert ledger_query(w, "SELECT flagged_at FROM suggestions") == [(None,)]
        assert not await bot_messages(w, w.management, "needs discussion")

        # un-react one of ann's two 👍: she still has 👍️: still one vote
        await react(cy, room, idea, "👎")  # third vote: over the threshold of 2
        await w.mod.wait_for(w.management, from_bot(bot_id, "suggestion #1", "needs discussion"), timeout=20)
        # un-react and re-react, several times: never a second line
        for _ in range(3):
            mine = await react(cy, room, idea, "👎\ufe0f")
            await redact(cy, room, mine)
        again = await react(bob, room, idea, "👎")
        await asyncio.sleep(3)
        assert len(await bot_messages(w, w.management, "needs discussion")) == 1
        assert votes_of(w, 1) == 4
        assert again
        # the bot's reactions are just its two votes
        assert await marks(w.mod, room, idea, bot_id) == VOTES
        assert await marks(w.mod, room, reply, bot_id) == set()
        assert await marks(w.mod, room, thread, bot_id) == set()
        listing = await command(w, "!mod suggestions")
        assert "#1 [open] 4 votes" in listing
    finally:
        await w.close()


async def test_a_vote_redacted_by_a_moderator_no_longer_counts(synapse: SynapseServer, tmp_path: Path) -> None:
    """A moderator takes a stuffer's reaction away (redacts it): the reaction is gone from the
    room, so it is no vote any more."""
    w, room = await suggestions_world(synapse, tmp_path, threshold=2)
    try:
        bot_id = w.bot_account.user_id
        ann, bob, cy = (w.members[n] for n in ("ann", "bob", "cy"))
        idea = await ann.say(room, "A music channel")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        await react(ann, room, idea, "👍")
        stuffed = await react(bob, room, idea, "👍")
        await asyncio.sleep(1.5)
        assert votes_of(w, 1) == 2
        await redact(w.mod, room, stuffed)  # the room's admin takes bob's vote away
        await asyncio.sleep(1.5)
        assert votes_of(w, 1) == 1, "a redacted reaction still counts as a vote"
        await react(cy, room, idea, "👍")  # 2 real votes: not over 2
        await asyncio.sleep(2)
        assert not await bot_messages(w, w.management, "needs discussion")
        assert "#1 [open] 2 votes" in await command(w, "!mod suggestions")
    finally:
        await w.close()


async def test_votes_of_reactions_with_malformed_content_never_crash(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path, threshold=1)
    try:
        bot_id = w.bot_account.user_id
        ann, bob = w.members["ann"], w.members["bob"]
        idea = await ann.say(room, "Dark mode")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        bad_contents = [
            {"m.relates_to": []},
            {"m.relates_to": "x"},
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": idea}},
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": idea, "key": 5}},
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": idea, "key": ["👍"]}},
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": 5, "key": "👍"}},
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": {"$x": 1}, "key": "👍"}},
            {"m.relates_to": {"rel_type": "m.reference", "event_id": idea, "key": "👍"}},
            {"m.relates_to": {"event_id": idea, "key": "👍"}},
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": idea, "key": "👍" * 5000}},
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": idea, "key": ""}},
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": idea, "key": "\u0000👍"}},
            {},
        ]
        for content in bad_contents:
            with contextlib.suppress(MatrixError):
                await bob.send(room, content, event_type="m.reaction")
        # m.room.message with a reaction-shaped relation, and a redaction of nothing
        with contextlib.suppress(MatrixError):
            await bob.send(room, {"msgtype": "m.text", "body": 7})
        with contextlib.suppress(MatrixError):
            await bob.send(room, {"msgtype": "m.text", "body": ["x"]})
        await asyncio.sleep(2.5)
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestion_votes")[0][0] == 0
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestions")[0][0] == 1
        stats = w.bot.host.stats["suggestions"]
        assert stats.errors == 0, "a handler raised on malformed input"
        # still alive: real votes still count
        await react(ann, room, idea, "👍")
        await react(bob, room, idea, "👎")
        await w.mod.wait_for(w.management, from_bot(bot_id, "suggestion #1", "needs discussion"), timeout=20)
    finally:
        await w.close()


async def test_a_voter_who_left_and_votes_made_while_the_bot_was_down(synapse: SynapseServer, tmp_path: Path) -> None:
    """Votes made while the bot is down are counted after the restart; one flag."""
    w, room = await suggestions_world(synapse, tmp_path, threshold=2)
    try:
        bot_id = w.bot_account.user_id
        ann, bob, cy = (w.members[n] for n in ("ann", "bob", "cy"))
        idea = await ann.say(room, "A bot-free day")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        await react(ann, room, idea, "👍")
        await asyncio.sleep(1)
        await w.stop_bot()
        await react(bob, room, idea, "👍")
        taken = await react(cy, room, idea, "👍")
        await redact(cy, room, taken)  # taken back while the bot is down
        await react(cy, room, idea, "👎")
        await w.start_bot()
        await w.mod.wait_for(w.management, from_bot(bot_id, "suggestion #1", "needs discussion"), timeout=20)
        assert votes_of(w, 1) == 3
        await w.stop_bot()
        await w.start_bot()
        await asyncio.sleep(3)
        assert len(await bot_messages(w, w.management, "needs discussion")) == 1
        assert await marks(w.mod, room, idea, bot_id) == VOTES
    finally:
        await w.close()


async def test_redaction_in_a_room_v11_uncounts_the_vote(synapse: SynapseServer, tmp_path: Path) -> None:
    """Room v11 moved ``redacts`` into the content: a vote taken back there no longer counts."""
    from abusebot.testing.world import World

    w = await World.create(synapse, tmp_path, members=("ann", "bob"))
    try:
        bot_id = w.bot_account.user_id
        ann, bob = w.members["ann"], w.members["bob"]
        room = await w.mod.create_room(name="Ideas v11", room_version="11", power={w.mod.user_id: 100})
        await ann.join(room)
        await bob.join(room)
        w.write_config({"suggestions": {"room": room, "threshold": 1}})
        await w.mod.start_watching()
        await w.start_bot()
        idea = await ann.say(room, "v11 idea")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        mine = await react(ann, room, idea, "👍")
        await asyncio.sleep(1)
        await redact(ann, room, mine)
        await asyncio.sleep(1.5)
        assert votes_of(w, 1) == 0
        await react(bob, room, idea, "👍")
        await asyncio.sleep(2)
        assert not await bot_messages(w, w.management, "needs discussion")
    finally:
        await w.close()
