"""Suggestions against the real Synapse: the bot joins the suggestions room and reacts with the
vote reactions on every top-level message; votes from several members (the bot's own excluded)
go over the threshold once; staff set states by reaction and by command (anyone else's state
reaction is ignored); the bot mirrors each state with its own reactions, also across a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.matrix import q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World
from tests.integration.cases_helpers import command
from tests.integration.test_cases import from_bot
from tests.integration.test_loop import ledger_query, wait_until


async def react(person: Person, room: str, event_id: str, key: str) -> str:
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
    return await person.send(room, content, event_type="m.reaction")


async def marks(person: Person, room: str, event_id: str, sender: str) -> set[str]:
    """The reaction keys ``sender`` has on ``event_id`` now (a redacted reaction is gone)."""
    reply = await person.call(
        "GET", f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(event_id)}/m.annotation", query={"limit": "100"}
    )
    return {
        e["content"]["m.relates_to"]["key"]
        for e in reply.get("chunk", [])
        if e.get("sender") == sender and "m.relates_to" in (e.get("content") or {})
    }


async def marked(person: Person, room: str, event_id: str, sender: str, want: set[str], what: str) -> None:
    async def done() -> bool:
        return await marks(person, room, event_id, sender) == want

    await wait_until(done, 30, what)


async def test_suggestions_are_voted_flagged_once_and_their_states_mirrored(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    w = await World.create(synapse, tmp_path, members=("ann", "bob", "cy"))
    try:
        bot_id = w.bot_account.user_id
        ann, bob, cy = (w.members[name] for name in ("ann", "bob", "cy"))
        room = await w.mod.create_room(name="Suggestions")
        for person in (ann, bob, cy):
            await person.join(room)
        w.write_config({"suggestions": {"room": room, "threshold": 3, "vote_reactions": ["👍", "👎"]}})
        await w.mod.start_watching()
        await w.start_bot()

        async def bot_joined() -> bool:
            return await w.mod.membership(room, bot_id) == "join"

        await wait_until(bot_joined, 20, "the bot joining the suggestions room")
        idea = await ann.say(room, "Add a #help room for beginners")
        await marked(w.mod, room, idea, bot_id, {"👍", "👎"}, "the bot's vote reactions")
        reply = await bob.send(
            room, {"msgtype": "m.text", "body": "yes!", "m.relates_to": {"m.in_reply_to": {"event_id": idea}}}
        )
        for person, key in ((ann, "👍"), (bob, "👍"), (cy, "👎")):
            await react(person, room, idea, key)
        await asyncio.sleep(2)  # 3 votes (and the bot's 2): not over the threshold of 3
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestions")[0][0] == 1  # the reply is none
        assert await marks(w.mod, room, reply, bot_id) == set()
        assert ledger_query(w, "SELECT flagged_at FROM suggestions") == [(None,)]
        await react(ann, room, idea, "👎")  # a fourth distinct (member, reaction): over it
        flag = await w.mod.wait_for(w.management, from_bot(bot_id, "suggestion #1", "needs discussion"), timeout=20)
        assert idea in flag["content"]["body"]
        assert "https://matrix.to/#/" in flag["content"]["body"]

        await react(cy, room, idea, "🟢")  # not staff: ignored
        await asyncio.sleep(1.5)
        assert ledger_query(w, "SELECT state FROM suggestions") == [("open",)]
        await react(w.mod, room, idea, "🟠")
        await marked(w.mod, room, idea, bot_id, {"👍", "👎", "🟠"}, "🟠 mirrored")
        await w.mod.wait_for(w.management, from_bot(bot_id, "suggestion #1 is now discussing"), timeout=20)

        link = f"https://matrix.to/#/{room}/{idea}?via=localhost"
        approved = await command(w, f"!mod suggestion {link} approved a good idea")
        assert "suggestion #1 is now approved" in approved
        await marked(w.mod, room, idea, bot_id, {"👍", "👎", "🟢"}, "🟢 instead of 🟠")
        await command(w, "!mod suggestion #1 implemented")
        await marked(w.mod, room, idea, bot_id, {"👍", "👎", "🟢", "🔵"}, "🔵 added, 🟢 kept")
        listing = await command(w, "!mod suggestions implemented")
        assert "#1 [implemented] 4 votes" in listing
        assert "0 suggestion(s) approved" in await command(w, "!mod suggestions approved")
        assert "which suggestion" in await command(w, "!mod suggestion #1 maybe")

        other = await bob.say(room, "Ban all emoji")
        await marked(w.mod, room, other, bot_id, {"👍", "👎"}, "the vote reactions on the second")
        await command(w, f"!mod suggestion {other} discussing")
        await marked(w.mod, room, other, bot_id, {"👍", "👎", "🟠"}, "🟠 on the second")
        await react(w.mod, room, other, "🔴")
        await marked(w.mod, room, other, bot_id, {"👍", "👎", "🔴"}, "🔴 instead of 🟠")

        await w.stop_bot()  # a change made while the bot is down is mirrored when it is back
        await react(w.mod, room, other, "🟢")
        await w.start_bot()
        await marked(w.mod, room, other, bot_id, {"👍", "👎", "🟢"}, "🟢 after the restart")
        states = ledger_query(w, "SELECT suggestion_id, state, how FROM suggestion_states ORDER BY id")
        assert states == [
            (1, "discussing", "reaction"),
            (1, "approved", "command"),
            (1, "implemented", "command"),
            (2, "discussing", "command"),
            (2, "denied", "reaction"),
            (2, "approved", "reaction"),
        ]
    finally:
        await w.close()
