"""State probes: non-staff, bad references, quick flips, two moderators at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from abusebot.matrix import q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.suggestions_helpers import (
    VOTES,
    command,
    ledger_query,
    marked,
    marks,
    react,
    suggestions_world,
)


def state_of(w: World) -> list[tuple]:
    return ledger_query(w, "SELECT id, state, approved FROM suggestions ORDER BY id")


async def add_moderator(w: World, name: str):
    person = w.person(name)
    await w.mod.invite(w.management, person.user_id)
    await person.join(w.management)
    levels = await w.mod.state(w.management, "m.room.power_levels")
    assert levels is not None
    levels.setdefault("users", {})[person.user_id] = 50
    await w.mod.put_state(w.management, "m.room.power_levels", levels)
    return person


async def test_non_staff_cannot_set_states(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann, cy = w.members["ann"], w.members["cy"]
        idea = await ann.say(room, "Weekly game night")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        for key in ("🟢", "🔴", "🟠", "🔵", "🟢\ufe0f"):
            await react(cy, room, idea, key)
        # !mod in the suggestions room (cy) and in a protected room (a plain member)
        await cy.say(room, "!mod suggestion #1 approved")
        await cy.say(room, f"!mod suggestion {idea} implemented")
        protected = w.protected[0]
        await cy.join(protected)
        await cy.say(protected, "!mod suggestion #1 denied")
        # a protected room's admin (ban power there) is no management-room moderator
        admin = w.person("roomadmin")
        await admin.join(protected)
        levels = await w.mod.state(protected, "m.room.power_levels")
        levels.setdefault("users", {})[admin.user_id] = 100
        await w.mod.put_state(protected, "m.room.power_levels", levels)
        await asyncio.sleep(1)
        asked = await admin.say(protected, "!mod suggestion #1 approved")
        answer = await w.mod.wait_for(protected, lambda e: e.get("sender") == bot_id and asked in str(e), timeout=20)
        assert "management room" in answer["content"]["body"]
        await asyncio.sleep(2)
        assert state_of(w)[0][1] == "open"
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestion_states")[0][0] == 0
        assert await marks(w.mod, room, idea, bot_id) == VOTES
        # the "!mod ..." messages in the suggestions room are suggestions themselves (top-level
        # messages): fine, but none of them changed a state
        ignored = ledger_query(
            w, "SELECT COUNT(*) FROM audit WHERE action = 'suggestion_state' AND outcome = 'ignored'"
        )[0][0]
        assert ignored >= 4
    finally:
        await w.close()


async def test_staff_state_reactions_on_non_suggestions_are_ignored(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann, bob = w.members["ann"], w.members["bob"]
        await w.mod.join(room)
        idea = await ann.say(room, "Emoji contest")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        reply = await bob.send(
            room, {"msgtype": "m.text", "body": "+1", "m.relates_to": {"m.in_reply_to": {"event_id": idea}}}
        )
        rel = await w.mod.call(
            "GET", f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(idea)}/m.annotation", query={"limit": "50"}
        )
        bot_reaction = next(e["event_id"] for e in rel["chunk"] if e["sender"] == bot_id)
        await react(w.mod, room, reply, "🟢")
        await react(w.mod, room, bot_reaction, "🔴")
        await asyncio.sleep(2)
        assert state_of(w) == [(1, "open", 0)]
        await react(w.mod, room, idea, "🟢\ufe0f")  # staff, with a variation selector: counts
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟢"}, "🟢 mirrored")
    finally:
        await w.close()


async def test_bad_references_are_answered_never_crash(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        idea = await ann.say(room, "Pin the rules")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        other_room_event = await w.mod.say(w.protected[0], "not a suggestion")
        bad = [
            "#0",
            "#999999",
            "0",
            "$nonexistent",
            "garbage",
            f"https://matrix.to/#/{w.protected[0]}/{other_room_event}",
            other_room_event,
            "99999999999999999999",
            "#-1",
            "https://matrix.to/#/",
            "matrix:roomid/x:localhost/e/",
            "#²",  # last: a superscript digit passes isdigit() and then int() raises
        ]
        for ref in bad:
            answer = await command(w, f"!mod suggestion {ref} approved")
            assert "Something went wrong" not in answer, (ref, answer)
            assert "is now approved" not in answer, (ref, answer)
        for text in (
            "!mod suggestion",
            "!mod suggestion #1",
            "!mod suggestion #1 yes",
            "!mod suggestions bogus",
            "!mod suggestions open extra",
        ):
            answer = await command(w, text)
            assert "Something went wrong" not in answer, (text, answer)
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestion_states WHERE suggestion_id <> 1")[0][0] == 0
        assert w.bot is not None
        assert "suggestion(s)" in await command(w, "!mod suggestions")
    finally:
        await w.close()


async def test_quick_state_flips_end_mirrored_as_the_last_state(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        idea = await ann.say(room, "Rename the lobby")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        sent = []
        for state in ("discussing", "approved", "denied", "implemented"):
            sent.append(await w.mod.say(w.management, f"!mod suggestion #1 {state}"))
        for event in sent:
            await w.mod.wait_for_reply(w.management, event, timeout=30)
        # approved, then denied (approval withdrawn), then implemented: 🔵 alone
        assert state_of(w) == [(1, "implemented", 0)]
        await marked(w.mod, room, idea, bot_id, VOTES | {"🔵"}, "🔵 alone after the flips")

        sent = []
        for state in ("approved", "discussing", "implemented", "approved", "implemented"):
            sent.append(await w.mod.say(w.management, f"!mod suggestion #1 {state}"))
        for event in sent:
            await w.mod.wait_for_reply(w.management, event, timeout=30)
        assert state_of(w) == [(1, "implemented", 1)]
        await marked(w.mod, room, idea, bot_id, VOTES | {"🔵", "🟢"}, "🔵 and 🟢")
        live = ledger_query(w, "SELECT key, COUNT(*) FROM suggestion_marks WHERE removed = 0 GROUP BY key")
        assert sorted(live) == sorted([("🔵", 1), ("🟢", 1)])
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestion_marks WHERE event_id IS NULL")[0][0] == 0
    finally:
        await w.close()


async def test_two_moderators_reacting_at_once(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        mod2 = await add_moderator(w, "mod2")
        await w.mod.join(room)
        await mod2.join(room)
        await asyncio.sleep(1.5)  # the bot sees mod2's power level
        assert w.bot.moderation.staff.is_moderator(mod2.user_id)
        ideas = []
        for n in range(3):
            idea = await ann.say(room, f"Idea {n}")
            await marked(w.mod, room, idea, bot_id, VOTES, f"vote reactions {n}")
            ideas.append(idea)
        for idea in ideas:
            await asyncio.gather(react(w.mod, room, idea, "🟢"), react(mod2, room, idea, "🔴"))
        await asyncio.gather(*(react(mod2, room, idea, "🔵") for idea in ideas))
        await asyncio.sleep(4)
        for n, idea in enumerate(ideas, start=1):
            state, approved = ledger_query(w, "SELECT state, approved FROM suggestions WHERE id = ?", n)[0]
            assert state == "implemented"
            want = VOTES | ({"🔵", "🟢"} if approved else {"🔵"})
            await marked(w.mod, room, idea, bot_id, want, f"mirror of suggestion {n}")
            # the last state before 🔵 is what the ledger's order says
            rows = ledger_query(w, "SELECT state FROM suggestion_states WHERE suggestion_id = ? ORDER BY id", n)
            last = [r[0] for r in rows if r[0] in ("approved", "denied")][-1]
            assert bool(approved) == (last == "approved")
    finally:
        await w.close()


async def test_setting_the_same_state_again_is_answered_not_crashed(synapse: SynapseServer, tmp_path: Path) -> None:
    """``!mod suggestion #1 approved`` twice: the second says "approved already"."""
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        idea = await ann.say(room, "Same state twice")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        assert "is now approved" in await command(w, "!mod suggestion #1 approved")
        again = await command(w, "!mod suggestion #1 approved")
        assert "Something went wrong" not in again, again
        assert "approved already" in again
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟢"}, "🟢 once")
    finally:
        await w.close()


async def test_two_moderators_reacting_the_same_state(synapse: SynapseServer, tmp_path: Path) -> None:
    """Two staff react 🟢 on one suggestion: approved once, no handler failure, 🟢 mirrored once."""
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        mod2 = await add_moderator(w, "mod2")
        await w.mod.join(room)
        await mod2.join(room)
        await asyncio.sleep(1.5)
        idea = await ann.say(room, "Both approve")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        await asyncio.gather(react(w.mod, room, idea, "🟢"), react(mod2, room, idea, "🟢"))
        await marked(w.mod, room, idea, bot_id, VOTES | {"🟢"}, "🟢 mirrored")
        await asyncio.sleep(2)
        assert w.bot.host.stats["suggestions"].errors == 0, "the suggestions handler raised"
        assert ledger_query(w, "SELECT COUNT(*) FROM suggestion_states")[0][0] == 2
        audit = ledger_query(w, "SELECT COUNT(*) FROM audit WHERE action = 'suggestion_state'")[0][0]
        assert audit == 2, "the second (unchanged) state change is not in the audit"
    finally:
        await w.close()


async def test_quick_state_reactions_end_as_the_last_one(synapse: SynapseServer, tmp_path: Path) -> None:
    w, room = await suggestions_world(synapse, tmp_path)
    try:
        bot_id = w.bot_account.user_id
        ann = w.members["ann"]
        await w.mod.join(room)
        idea = await ann.say(room, "Flip by reaction")
        await marked(w.mod, room, idea, bot_id, VOTES, "vote reactions")
        for key in ("🟠", "🟢", "🔴", "🔵"):
            await react(w.mod, room, idea, key)
        await asyncio.sleep(3)
        assert state_of(w) == [(1, "implemented", 0)]
        await marked(w.mod, room, idea, bot_id, VOTES | {"🔵"}, "🔵 alone")
        await w.mod.poll(1000)
        lines = [
            e
            for e in w.mod.seen.get(w.management, [])
            if e.get("sender") == bot_id and "suggestion #1 is now" in str((e.get("content") or {}).get("body"))
        ]
        assert len(lines) == 4, [e["content"]["body"] for e in lines]
    finally:
        await w.close()
