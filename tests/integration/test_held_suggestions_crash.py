"""Crashes at the worst moment, and a mirror whose write failed once."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

from abusebot.features.suggestions import wanted_marks
from abusebot.matrix import q
from abusebot.testing.synapse import SynapseServer
from tests.integration.suggestions_helpers import (
    VOTES,
    command,
    ledger_query,
    marked,
    marks,
    suggestions_world,
    wait_until,
)
from tests.integration.test_loop import wait_for_checkpoint


async def all_bot_reactions(w, room: str, event_id: str) -> list[str]:
    """Every (non-redacted) reaction key of the bot, duplicates kept."""
    reply = await w.mod.call(
        "GET", f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(event_id)}/m.annotation", query={"limit": "200"}
    )
    return sorted(
        e["content"]["m.relates_to"]["key"]
        for e in reply.get("chunk", [])
        if e.get("sender") == w.bot_account.user_id and "m.relates_to" in (e.get("content") or {})
    )


async def test_a_mark_that_failed_once_is_put_when_the_bot_can_again(synapse: SynapseServer, tmp_path: Path) -> None:
    """The bot may not react for a while (power levels): approving then leaves 🟢 unsent. Once it
    may again, a restart (or the next change) must put 🟢, as the module promises."""
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        idea = await ann.say(room, "Fix the mirror")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        levels = await w.mod.state(room, "m.room.power_levels")
        assert levels is not None
        original = dict(levels)
        levels["events"] = {**levels.get("events", {}), "m.reaction": 50}
        await w.mod.put_state(room, "m.room.power_levels", levels)
        await asyncio.sleep(1)
        await command(w, "!mod suggestion #1 approved")
        await asyncio.sleep(1)
        assert await marks(w.mod, room, idea, bot_id) == VOTES  # it could not react
        await w.mod.put_state(room, "m.room.power_levels", original)
        await asyncio.sleep(1)
        await w.stop_bot()
        await w.start_bot()
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟢"}, "🟢 after the bot may react again (restart)")
    finally:
        await w.close()


async def test_a_failed_mark_is_put_at_the_next_change(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        idea = await ann.say(room, "Fix the mirror too")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        levels = await w.mod.state(room, "m.room.power_levels")
        original = dict(levels)
        levels["events"] = {**levels.get("events", {}), "m.reaction": 50}
        await w.mod.put_state(room, "m.room.power_levels", levels)
        await asyncio.sleep(1)
        await command(w, "!mod suggestion #1 approved")
        await w.mod.put_state(room, "m.room.power_levels", original)
        await asyncio.sleep(1)
        await command(w, "!mod suggestion #1 implemented")  # approved, implemented: 🟢 and 🔵
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟢", "🔵"}, "🟢 and 🔵 after the next change")
    finally:
        await w.close()


async def test_crash_between_the_state_and_its_mirror(synapse: SynapseServer, tmp_path: Path) -> None:
    """The state is recorded, then the process dies before any reaction: the restart mirrors it."""
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        idea = await ann.say(room, "Crash me")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        feature = w.bot.host.features["suggestions"]

        async def dead(suggestion_id: int) -> None:
            raise RuntimeError("simulated crash before the mirror")

        feature.mirror = dead
        await w.mod.say(w.management, "!mod suggestion #1 approved")
        await wait_until(
            lambda: asyncio.sleep(0, ledger_query(w, "SELECT state FROM suggestions") == [("approved",)]),
            20,
            "the state recorded",
        )
        await w.stop_bot()
        await w.start_bot()
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟢"}, "🟢 after the restart")
        await command(w, "!mod suggestion #1 denied")
        await marked(w.mod, room, idea, bot_id, VOTES | {"🔴"}, "🔴 instead of 🟢")
    finally:
        await w.close()


async def test_crash_after_the_mark_was_sent_before_it_was_noted(synapse: SynapseServer, tmp_path: Path) -> None:
    """The reaction went out, the process died before noting its event id: the restart learns
    it (the keyed send is deduplicated), never reacts twice, and can take it away later."""
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        idea = await ann.say(room, "Crash me later")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        feature = w.bot.host.features["suggestions"]
        from abusebot.outbox import intent

        async def sent_then_dead(suggestion, key: str, n: int):
            content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": suggestion.event_id, "key": key}}
            new = intent(
                "send",
                suggestion.room_id,
                key=f"suggestion-mark:{suggestion.id}:{key}:{n}",
                event_type="m.reaction",
                content=content,
            )
            await feature.bot.outbox.do(new)
            raise RuntimeError("simulated crash after the send")

        feature._put = sent_then_dead
        await w.mod.say(w.management, "!mod suggestion #1 discussing")
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟠"}, "🟠 sent")
        await w.stop_bot()
        await w.start_bot()
        await asyncio.sleep(2)
        assert await all_bot_reactions(w, room, idea) == sorted(VOTES | {"🟠"})
        await command(w, "!mod suggestion #1 approved")
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟢"}, "🟢, 🟠 taken away")
    finally:
        await w.close()


async def test_kill_9_during_state_changes_never_doubles_or_loses(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path, start=False)
    rng = random.Random(7)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        w.spawn_bot()
        await wait_for_checkpoint(w)

        async def joined() -> bool:
            return await w.mod.membership(room, bot_id) == "join"

        await wait_until(joined, 30, "the bot in the suggestions room")
        ideas = [await ann.say(room, f"Killable idea {n}") for n in range(3)]
        for idea in ideas:
            await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        states = ["discussing", "approved", "implemented", "denied", "approved", "implemented"]
        for _ in range(4):
            for n in range(1, 4):
                await w.mod.say(w.management, f"!mod suggestion #{n} {rng.choice(states)}")
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            w.kill_bot(signal.SIGKILL)
            w.spawn_bot()
            await asyncio.sleep(rng.uniform(1.0, 3.0))
        await wait_for_checkpoint(w)
        await asyncio.sleep(4)
        # the last commands: each one was either handled or replayed
        for n, idea in enumerate(ideas, start=1):

            async def settled(n: int = n, idea: str = idea) -> bool:
                state, approved = ledger_query(w, "SELECT state, approved FROM suggestions WHERE id = ?", n)[0]
                return await all_bot_reactions(w, room, idea) == sorted(VOTES | wanted_marks(state, bool(approved)))

            await wait_until(settled, 40, f"suggestion {n}'s reactions matching its state")
        # every command got exactly one state row (replays never doubled one)
        rows = ledger_query(w, "SELECT COUNT(*), COUNT(DISTINCT source_event) FROM suggestion_states")[0]
        assert rows[0] == rows[1]
        assert rows[0] == 12, f"{rows[0]} of 12 state commands recorded"
    finally:
        w.kill_bot(signal.SIGTERM)
        await w.close()


async def test_crash_between_the_flag_and_its_line(synapse: SynapseServer, tmp_path: Path) -> None:
    """Flagged in the ledger, the management line not yet posted: the restart posts it, once."""
    from tests.integration.suggestions_helpers import bot_messages, from_bot, react

    w, room = await suggestions_world(synapse, tmp_path, threshold=1)
    try:
        bot_id = w.bot_account.user_id
        ann, bob = w.members["ann"], w.members["bob"]
        idea = await ann.say(room, "Flag me")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        feature = w.bot.host.features["suggestions"]

        async def dead(suggestion, votes: int) -> None:
            raise RuntimeError("simulated crash before the line")

        feature._flag = dead
        await react(ann, room, idea, "👍")
        await react(bob, room, idea, "👍")

        async def flagged() -> bool:
            return ledger_query(w, "SELECT flagged_at IS NOT NULL FROM suggestions")[0][0] == 1

        await wait_until(flagged, 20, "flagged in the ledger")
        await w.stop_bot()
        await w.start_bot()
        await w.mod.wait_for(w.management, from_bot(bot_id, "suggestion #1", "needs discussion"), timeout=20)
        await w.stop_bot()
        await w.start_bot()
        await asyncio.sleep(2)
        assert len(await bot_messages(w, w.management, "needs discussion")) == 1
        assert ledger_query(w, "SELECT flag_event IS NOT NULL FROM suggestions") == [(1,)]
    finally:
        await w.close()
