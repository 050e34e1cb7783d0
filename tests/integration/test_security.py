"""Regressions for the holes found by attacking the bot from outside, each against the real Synapse.

1. a message starting with the command prefix skipped every protection;
2. a protected room's admin could have the bot act on users above their own power;
4. the end of a flood stayed visible, and one burst climbed the ladder four times;
5. the join-wave lock overrode moderators, and one user's re-joins looked like a wave.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from abusebot.matrix import API, MatrixError, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World, body_contains, is_redaction_of
from tests.integration.test_loop import ledger_query

SPAM = {"protections": {"spam": {"banned_words": ["buy cheap crypto"]}}}


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.2)


def infractions_of(world: World, user_id: str) -> list[tuple[str, str, str]]:
    """``(kind, origin, actor)`` of every infraction recorded for ``user_id``, oldest first."""
    rows = ledger_query(world, "SELECT kind, origin, actor FROM infractions WHERE subject = ? ORDER BY id", user_id)
    return [(str(kind), str(origin), str(actor)) for kind, origin, actor in rows]


async def infractions_soon(world: World, user_id: str, count: int, timeout: float = 10.0) -> list[tuple[str, str, str]]:
    """:func:`infractions_of`, once at least ``count`` are recorded (or ``timeout`` passed): the
    step of a violation is recorded after its redaction is answered, so a moment after it shows."""
    deadline = time.monotonic() + timeout
    while True:
        found = infractions_of(world, user_id)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def set_levels(person: Person, room_id: str, levels: Mapping[str, int]) -> None:
    """``person`` sets several users' power levels in ``room_id`` at once."""
    content = await person.state(room_id, "m.room.power_levels") or {}
    users = {**(content.get("users") or {}), **levels}
    await person.put_state(room_id, "m.room.power_levels", {**content, "users": users})


def redacted_ids(world: World, room_id: str) -> set[str]:
    """Event ids the moderator has seen redacted in ``room_id``."""
    ids = set()
    for event in world.mod.seen.get(room_id, []):
        if event.get("type") == "m.room.redaction":
            ids.add(event.get("redacts") or (event.get("content") or {}).get("redacts"))
    return ids


# -- 1. the command prefix is no shield ----------------------------------------------------------

PREFIX_VARIANTS: dict[str, dict[str, Any]] = {
    "plain body": {"msgtype": "m.text", "body": "!mod buy cheap crypto now at scam.example"},
    "spam only in the HTML": {
        "msgtype": "m.text",
        "body": "!mod hello there",
        "format": "org.matrix.custom.html",
        "formatted_body": "!mod <b>buy cheap crypto</b> now",
    },
    "spam only in the body, clean HTML": {
        "msgtype": "m.text",
        "body": "!mod buy cheap crypto",
        "format": "org.matrix.custom.html",
        "formatted_body": "!mod <b>hello</b>",
    },
    "HTML says command, body does not": {
        "msgtype": "m.text",
        "body": "buy cheap crypto",
        "format": "org.matrix.custom.html",
        "formatted_body": "!mod status",
    },
    "upper-case prefix": {"msgtype": "m.text", "body": "!MOD buy cheap crypto"},
    "zero-width space after the prefix": {"msgtype": "m.text", "body": "!mod\u200b buy cheap crypto"},
    "leading spaces and a newline": {"msgtype": "m.text", "body": "   !mod\nbuy cheap crypto"},
    "a notice": {"msgtype": "m.notice", "body": "!mod buy cheap crypto"},
    "a reply whose fallback hides the command": {
        "msgtype": "m.text",
        "body": "> <@someone:example.org> hi\n\n!mod buy cheap crypto",
        "format": "org.matrix.custom.html",
        "formatted_body": "<mx-reply><blockquote>hi</blockquote></mx-reply>!mod buy cheap crypto",
    },
    "an edit": {
        "msgtype": "m.text",
        "body": "* !mod buy cheap crypto",
        "m.new_content": {"msgtype": "m.text", "body": "!mod buy cheap crypto"},
    },
}


@pytest.mark.parametrize("variant", list(PREFIX_VARIANTS))
async def test_a_non_moderators_prefixed_spam_is_removed_and_escalated(
    synapse: SynapseServer, tmp_path: Path, variant: str
) -> None:
    """Spam that starts with the command prefix, from someone who may not command the bot, meets
    the protections like any message: it is redacted, the sender is warned, the attempt audited."""
    w = await World.launch(synapse, tmp_path, config=SPAM)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        event_id = await spammer.send(room, PREFIX_VARIANTS[variant])
        await w.mod.wait_for(room, is_redaction_of(event_id))
        await w.mod.wait_for(w.management, body_contains("Warned", spammer.user_id))
        assert await infractions_soon(w, spammer.user_id, 1) == [("warning", "protection", "protection:spam")]
        sql = "SELECT outcome FROM audit WHERE action = 'command' AND event_id = ? AND actor = ?"
        ignored = ledger_query(w, sql, event_id, spammer.user_id)
        assert ignored in ([("ignored",)], []), ignored  # refused as a command (when it read as one), never obeyed
    finally:
        await w.close()


async def test_a_burst_of_prefixed_messages_is_a_flood(synapse: SynapseServer, tmp_path: Path) -> None:
    """Twenty ``!mod flood N`` lines in a second from a member are a flood: every one is removed."""
    w = await World.launch(synapse, tmp_path)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        sent = await asyncio.gather(*(spammer.say(room, f"!mod flood {n}") for n in range(20)))
        for event_id in sent:
            await w.mod.wait_for(room, is_redaction_of(event_id), timeout=30)
        assert await infractions_soon(w, spammer.user_id, 1) == [("warning", "protection", "protection:flood")]
    finally:
        await w.close()


async def test_a_moderators_command_is_still_obeyed_and_not_punished(synapse: SynapseServer, tmp_path: Path) -> None:
    """The fix does not turn real commands into messages: a moderator's command with the banned
    phrase in its reason is obeyed, and nothing of theirs is redacted."""
    w = await World.launch(synapse, tmp_path, config=SPAM)
    try:
        spammer = w.members["spammer"]
        event_id = await w.mod.say(w.protected[0], f"!mod warn {spammer.user_id} do not write buy cheap crypto")
        assert "Warned" in await w.mod.wait_for_reply(w.protected[0], event_id)
        assert event_id not in redacted_ids(w, w.protected[0])
        assert infractions_of(w, w.mod.user_id) == []
    finally:
        await w.close()


# -- 2. a room admin's reach ends at their own power level ---------------------------------------


async def test_a_room_admin_cannot_act_through_the_bot_above_their_own_level(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """``@roomadmin`` at 50 (ban level 50) may not have the bot ban, kick, mute, redact, warn or
    unban ``@watcher`` at 75, nor ``@peer`` at 50 (Matrix refuses the same from them); each refusal
    is replied and audited, and nothing changes. The admin still reaches users below 50, and the
    management room's moderators keep the bot's reach."""
    w = await World.create(synapse, tmp_path, members=("roomadmin", "watcher", "peer", "target", "banned"))
    room = w.protected[0]
    try:
        admin, watcher, peer = w.members["roomadmin"], w.members["watcher"], w.members["peer"]
        await set_levels(w.mod, room, {admin.user_id: 50, watcher.user_id: 75, peer.user_id: 50})
        await w.mod.start_watching()
        await admin.start_watching()
        await w.start_bot()
        levels = w.bot.store.room(room).power_levels
        assert levels.user_level(watcher.user_id) == 75

        async def admin_says(text: str) -> str:
            event_id = await admin.say(room, text)
            return await admin.wait_for_reply(room, event_id)

        before = await w.mod.state(room, "m.room.power_levels")
        watcher_msg = await watcher.say(room, "a message the admin would like gone")
        for target in (watcher.user_id, peer.user_id):
            for text in (
                f"!mod ban {target} above my level",
                f"!mod ban {target} 1h above my level",
                f"!mod kick {target} above my level",
                f"!mod mute {target} 10m above my level",
                f"!mod redact {target} 5",
                f"!mod warn {target} above my level",
                f"!mod ban {target} --room {room} above my level",
            ):
                reply = await admin_says(text)
                assert reply.startswith("⛔ Refused"), (text, reply)
                assert "not below yours (50)" in reply, (text, reply)
        assert await w.mod.membership(room, watcher.user_id) == "join"
        assert await w.mod.membership(room, peer.user_id) == "join"
        assert await w.mod.state(room, "m.room.power_levels") == before
        assert watcher_msg not in redacted_ids(w, room)
        refused = ledger_query(w, "SELECT COUNT(*) FROM audit WHERE actor = ? AND outcome = 'refused'", admin.user_id)
        assert refused == [(14,)]
        assert infractions_of(w, watcher.user_id) == []

        # A user the moderators banned at 75: the admin may not lift it either.
        banned = w.members["banned"].user_id
        await set_levels(w.mod, room, {banned: 75})
        mod_ban = await w.mod.say(w.management, f"!mod ban {banned} by the moderators")
        assert "Banned" in await w.mod.wait_for_reply(w.management, mod_ban)
        reply = await admin_says(f"!mod unban {banned} please")
        assert reply.startswith("⛔ Refused"), reply
        assert "not below yours (50)" in reply, reply
        assert await w.mod.membership(room, banned) == "ban"

        # Below the admin: obeyed. From the management room: the bot's own reach.
        target = w.members["target"].user_id
        assert "Banned" in await admin_says(f"!mod ban {target} below my level")
        assert await w.mod.membership(room, target) == "ban"
        mod_cmd = await w.mod.say(w.management, f"!mod kick {watcher.user_id} moderators may")
        assert "Kicked" in await w.mod.wait_for_reply(w.management, mod_cmd)
        assert await w.mod.membership(room, watcher.user_id) == "leave"
    finally:
        await w.close()


async def test_a_room_admin_cannot_unmute_someone_back_above_their_own_level(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """A moderator mutes a user at 75 in the admin's room; the admin at 50 may not hand that 75 back."""
    w = await World.create(synapse, tmp_path, members=("roomadmin", "watcher"))
    room = w.protected[0]
    try:
        admin, watcher = w.members["roomadmin"], w.members["watcher"]
        await set_levels(w.mod, room, {admin.user_id: 50, watcher.user_id: 75})
        await w.mod.start_watching()
        await admin.start_watching()
        await w.start_bot()
        mute = await w.mod.say(w.management, f"!mod mute {watcher.user_id} 1h --room {room} calm down")
        assert "Muted" in await w.mod.wait_for_reply(w.management, mute)
        event_id = await admin.say(room, f"!mod unmute {watcher.user_id}")
        reply = await admin.wait_for_reply(room, event_id)
        assert reply.startswith("⛔ Refused"), reply
        assert "restore power level 75" in reply, reply
        levels = await w.mod.state(room, "m.room.power_levels") or {}
        assert levels["users"][watcher.user_id] < 0
    finally:
        await w.close()


# -- 4. a flood ends where the sanction begins ---------------------------------------------------


async def _flood_until_stopped(person: Person, room_id: str, sent: list[str], limit: int = 200) -> None:
    """Send as fast as the homeserver accepts, until it refuses (banned) or ``limit`` is reached."""
    for n in range(limit):
        try:
            sent.append(await person.say(room_id, f"flood {n} from {person.user_id}"))
        except MatrixError:
            return


async def test_every_message_of_a_flood_is_removed_in_every_room(synapse: SynapseServer, tmp_path: Path) -> None:
    """Three users flooding two rooms as fast as they can (limit 10 / 60 s, ladder ``ban``): every
    message the homeserver accepted from them is redacted, including those sent after the
    violation was decided and before the ban landed, and each gets one ban, not several."""
    config = {
        "protections": {
            "flood": {"max_messages": 10, "per_seconds": 60, "cross_room_max_messages": 1000},
            "escalation": {"ladder": ["ban"]},
        }
    }
    w = await World.launch(synapse, tmp_path, rooms=2, members=("f1", "f2", "f3"), config=config)
    try:
        sent: dict[tuple[str, str], list[str]] = {}
        tasks = []
        for name in ("f1", "f2", "f3"):
            for room in w.protected:
                sent[(name, room)] = []
                tasks.append(_flood_until_stopped(w.members[name], room, sent[(name, room)]))
        await asyncio.gather(*tasks)
        for name in ("f1", "f2", "f3"):
            for room in w.protected:
                assert await w.mod.membership(room, w.members[name].user_id) == "ban"

        async def all_redacted() -> bool:
            await w.mod.poll(500)
            return all(set(ids) <= redacted_ids(w, room) for (_, room), ids in sent.items())

        try:
            await eventually(all_redacted, "every accepted flood message redacted", timeout=30)
        except AssertionError:
            left = {key: [i for i in ids if i not in redacted_ids(w, key[1])] for key, ids in sent.items()}
            raise AssertionError(f"not redacted: { {k: (len(v), len(sent[k])) for k, v in left.items()} }") from None
        for name in ("f1", "f2", "f3"):
            assert await infractions_soon(w, w.members[name].user_id, 1) == [("ban", "protection", "protection:flood")]
    finally:
        await w.close()


async def test_one_burst_is_one_rung_of_the_ladder(synapse: SynapseServer, tmp_path: Path) -> None:
    """Forty messages in one burst over a limit of five: one warning (not warning, mute, ban, …),
    and all forty removed."""
    config = {"protections": {"flood": {"max_messages": 5, "per_seconds": 30, "cross_room_max_messages": 1000}}}
    w = await World.launch(synapse, tmp_path, config=config)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        sent = [await spammer.say(room, f"burst {n}") for n in range(40)]

        async def all_redacted() -> bool:
            await w.mod.poll(500)
            return set(sent) <= redacted_ids(w, room)

        await eventually(all_redacted, "all forty redacted", timeout=30)
        assert await infractions_soon(w, spammer.user_id, 1) == [("warning", "protection", "protection:flood")]
        assert await w.mod.membership(room, spammer.user_id) == "join"
    finally:
        await w.close()


# -- 5. the join-wave lock never overrides moderators ---------------------------------------------

WAVE = {"protections": {"join_wave": {"max_joins": 3, "per_seconds": 60, "lock_seconds": 4}}}


def join_rule_is(rule: str) -> Callable[[Mapping[str, Any]], bool]:
    """Predicate: a join-rules event setting ``rule``."""
    return lambda e: e.get("type") == "m.room.join_rules" and (e.get("content") or {}).get("join_rule") == rule


async def _wave(world: World, room_id: str, count: int = 4) -> None:
    for n in range(count):
        await world.person(f"joiner{n}-{room_id[1:7]}").join(room_id)


async def test_the_lock_leaves_a_moderators_join_rule_alone(synapse: SynapseServer, tmp_path: Path) -> None:
    """During a lock a moderator sets the room to ``knock``: at expiry the bot does not put it back
    to ``public``, says so, and forgets the lock."""
    w = await World.launch(synapse, tmp_path, config=WAVE, members=())
    try:
        room = w.protected[0]
        await _wave(w, room)
        await w.mod.wait_for(room, join_rule_is("invite"))
        await w.mod.put_state(room, "m.room.join_rules", {"join_rule": "knock"})
        await w.mod.wait_for(w.management, body_contains("changed the join rule to 'knock'", "the lock is over"))
        await asyncio.sleep(5)  # past the lock's own end: nothing is restored
        assert (await w.mod.state(room, "m.room.join_rules") or {}).get("join_rule") == "knock"
        assert ledger_query(w, "SELECT COUNT(*) FROM room_locks") == [(0,)]
    finally:
        await w.close()


async def test_three_rooms_unlocked_at_once_leave_no_stale_lock(synapse: SynapseServer, tmp_path: Path) -> None:
    """Three rooms locked and unlocked together: each is restored, no lock record survives, and a
    room the moderators close afterwards stays closed across a restart."""
    w = await World.launch(synapse, tmp_path, config=WAVE, members=(), rooms=3)
    try:
        await asyncio.gather(*(_wave(w, room) for room in w.protected))
        for room in w.protected:
            await w.mod.wait_for(room, join_rule_is("invite"))
        for room in w.protected:
            await w.mod.wait_for(room, join_rule_is("public"), timeout=30)

        async def no_locks_left() -> bool:
            return ledger_query(w, "SELECT COUNT(*) FROM room_locks") == [(0,)]

        await eventually(no_locks_left, "every lock record removed")
        closed = w.protected[0]
        await w.mod.put_state(closed, "m.room.join_rules", {"join_rule": "invite"})
        await w.stop_bot()
        await w.start_bot()
        marker = await w.mod.say(w.management, "!mod status")
        await w.mod.wait_for_reply(w.management, marker)
        await asyncio.sleep(1.0)
        assert (await w.mod.state(closed, "m.room.join_rules") or {}).get("join_rule") == "invite"
    finally:
        await w.close()


async def test_a_lock_is_recorded_before_the_room_is_closed(synapse: SynapseServer, tmp_path: Path) -> None:
    """When the room is seen invite-only, its lock is already in the ledger."""
    w = await World.launch(synapse, tmp_path, config=WAVE, members=())
    try:
        room = w.protected[0]
        await _wave(w, room)
        await w.mod.wait_for(room, join_rule_is("invite"))
        assert ledger_query(w, "SELECT room_id FROM room_locks") == [(room,)]
    finally:
        await w.close()


async def test_one_user_rejoining_is_their_abuse_not_a_wave(synapse: SynapseServer, tmp_path: Path) -> None:
    """One user leaving and re-joining 20 times: the room stays public, no wave alert, and that user
    gets one violation on the ladder."""
    w = await World.launch(synapse, tmp_path, config=WAVE, members=())
    try:
        room = w.protected[0]
        churner = w.person("churner")
        for _ in range(20):
            await churner.join(room)
            await churner.call("POST", f"{API}/rooms/{q(room)}/leave", {})
        await w.mod.wait_for(w.management, body_contains("Warned", churner.user_id, "join flood"))
        marker = await w.mod.say(w.management, "!mod status")
        await w.mod.wait_for_reply(w.management, marker)
        assert (await w.mod.state(room, "m.room.join_rules") or {}).get("join_rule") == "public"
        assert not [e for e in w.mod.seen.get(w.management, []) if "join wave" in str(e.get("content", {}))]
        assert await infractions_soon(w, churner.user_id, 1) == [("warning", "protection", "protection:join_wave")]
    finally:
        await w.close()


# -- variants found by attacking the fixes from outside ------------------------------------------

HIDDEN_SPAM: dict[str, tuple[str, dict[str, Any]]] = {
    "braille blanks for spaces": ("m.room.message", {"msgtype": "m.text", "body": "buy\u2800cheap\u2800crypto"}),
    "Hangul fillers for spaces": ("m.room.message", {"msgtype": "m.text", "body": "buy\u3164cheap\u3164crypto"}),
    "a spoiler's reason": (
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "spoiler",
            "format": "org.matrix.custom.html",
            "formatted_body": '<span data-mx-spoiler="buy cheap crypto">x</span>',
        },
    ),
    "an image's alt text": (
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "look",
            "format": "org.matrix.custom.html",
            "formatted_body": '<img src="mxc://x/y" alt="buy cheap crypto">',
        },
    ),
    "a file name": (
        "m.room.message",
        {"msgtype": "m.file", "body": "file", "filename": "buy cheap crypto.pdf", "url": "mxc://x/y"},
    ),
    "a poll question": (
        "m.poll.start",
        {"m.poll": {"question": {"m.text": [{"body": "buy cheap crypto?"}]}, "answers": [], "kind": "m.disclosed"}},
    ),
    "an unstable poll question": (
        "org.matrix.msc3381.poll.start",
        {"org.matrix.msc3381.poll.start": {"question": {"org.matrix.msc1767.text": "buy cheap crypto"}}},
    ),
}


@pytest.mark.parametrize("variant", list(HIDDEN_SPAM))
async def test_spam_in_any_field_a_client_shows_is_found(synapse: SynapseServer, tmp_path: Path, variant: str) -> None:
    """Text a client shows, wherever it sits (attributes, file names, polls, blank letters used as
    spaces), meets the spam protection."""
    w = await World.launch(synapse, tmp_path, config=SPAM)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        event_type, content = HIDDEN_SPAM[variant]
        event_id = await spammer.send(room, content, event_type)
        await w.mod.wait_for(room, is_redaction_of(event_id))
        assert [kind for kind, _, _ in await infractions_soon(w, spammer.user_id, 1)] == ["warning"]
    finally:
        await w.close()


async def test_a_reaction_a_topic_and_a_leave_reason_carry_no_spam(synapse: SynapseServer, tmp_path: Path) -> None:
    """A reaction key, a room topic set by a member allowed to, and a leave reason are checked."""
    w = await World.launch(
        synapse, tmp_path, config={**SPAM, "protections": {**SPAM["protections"], "escalation": {"burst_seconds": 0}}}
    )
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        levels = await w.mod.state(room, "m.room.power_levels") or {}
        events = {**levels.get("events", {}), "m.room.topic": 0}
        await w.mod.put_state(room, "m.room.power_levels", {**levels, "events": events})
        target = await w.mod.say(room, "an ordinary message")
        relation = {"rel_type": "m.annotation", "event_id": target, "key": "buy cheap crypto"}
        reaction = await spammer.send(room, {"m.relates_to": relation}, "m.reaction")
        await w.mod.wait_for(room, is_redaction_of(reaction))
        topic = await spammer.put_state(room, "m.room.topic", {"topic": "buy cheap crypto here"})
        await w.mod.wait_for(room, is_redaction_of(topic))
        await spammer.call("POST", f"{API}/rooms/{q(room)}/leave", {"reason": "buy cheap crypto"})

        async def three() -> bool:
            return len(infractions_of(w, spammer.user_id)) == 3

        await eventually(three, "three violations recorded")
    finally:
        await w.close()


async def test_encrypted_events_in_an_unencrypted_room_count_as_a_flood(synapse: SynapseServer, tmp_path: Path) -> None:
    """Twenty-five undecryptable events in a second are a flood: all removed."""
    w = await World.launch(synapse, tmp_path)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        junk = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "sender_key": "x", "session_id": "y"}
        sent = [await spammer.send(room, junk, "m.room.encrypted") for _ in range(25)]

        async def all_gone() -> bool:
            await w.mod.poll(300)
            return set(sent) <= redacted_ids(w, room)

        await eventually(all_gone, "every encrypted event of the flood redacted", timeout=30)
    finally:
        await w.close()


async def test_a_room_admins_prefixed_lines_meet_the_protections(synapse: SynapseServer, tmp_path: Path) -> None:
    """A protected room's admin is obeyed as a commander and still checked as a member: their
    ``!mod`` line carrying spam is removed, and fifteen ``!mod help`` in a burst are a flood."""
    w = await World.create(synapse, tmp_path, config=SPAM, members=("roomadmin",))
    try:
        admin, room = w.members["roomadmin"], w.protected[0]
        await set_levels(w.mod, room, {admin.user_id: 50})
        await w.mod.start_watching()
        await w.start_bot()
        spam = await admin.say(room, "!mod buy cheap crypto at https://scam.example")
        await w.mod.wait_for(room, is_redaction_of(spam))
        helps = [await admin.say(room, "!mod help") for _ in range(15)]

        async def flood_removed() -> bool:
            await w.mod.poll(300)
            return set(helps) <= redacted_ids(w, room)

        await eventually(flood_removed, "the burst of !mod help removed", timeout=30)
        kinds = [(kind, actor) for kind, _, actor in infractions_of(w, admin.user_id)]
        assert ("warning", "protection:spam") in kinds, kinds
    finally:
        await w.close()


async def test_a_burst_of_spam_is_one_rung(synapse: SynapseServer, tmp_path: Path) -> None:
    """Four spam lines back to back: all removed, one warning (not warning, mute, ban, ban)."""
    w = await World.launch(synapse, tmp_path, config=SPAM)
    try:
        spammer, room = w.members["spammer"], w.protected[0]
        sent = [await spammer.say(room, f"buy cheap crypto {n}") for n in range(4)]
        for event_id in sent:
            await w.mod.wait_for(room, is_redaction_of(event_id))
        await settle_bot(w)
        assert await infractions_soon(w, spammer.user_id, 1) == [("warning", "protection", "protection:spam")]
        assert await w.mod.membership(room, spammer.user_id) == "join"
    finally:
        await w.close()


async def settle_bot(world: World) -> None:
    """Everything sent so far has been handled (a later command is answered)."""
    event_id = await world.mod.say(world.management, "!mod help status")
    await world.mod.wait_for_reply(world.management, event_id)


async def test_churn_across_rooms_is_one_rung(synapse: SynapseServer, tmp_path: Path) -> None:
    """One user leaving and re-joining in three rooms at once: one violation, not three rungs."""
    w = await World.launch(synapse, tmp_path, config=WAVE, members=(), rooms=3)
    try:
        churner = w.person("churner")

        async def churn(room: str) -> None:
            for _ in range(7):
                await churner.join(room)
                await churner.call("POST", f"{API}/rooms/{q(room)}/leave", {})

        await asyncio.gather(*(churn(room) for room in w.protected))
        await w.mod.wait_for(w.management, body_contains("Warned", churner.user_id, "join flood"))
        await settle_bot(w)
        assert [kind for kind, _, _ in await infractions_soon(w, churner.user_id, 1)] == ["warning"]
    finally:
        await w.close()


async def test_a_moderators_deliberate_invite_only_is_kept(synapse: SynapseServer, tmp_path: Path) -> None:
    """During a lock a moderator sets the room to invite-only on purpose (their own event): the
    lock ends, and nothing reopens the room."""
    w = await World.launch(synapse, tmp_path, config=WAVE, members=())
    try:
        room = w.protected[0]
        await _wave(w, room)
        await w.mod.wait_for(room, join_rule_is("invite"))
        await w.mod.put_state(room, "m.room.join_rules", {"join_rule": "invite"})
        await w.mod.wait_for(w.management, body_contains("changed the join rule", "the lock is over"))
        await asyncio.sleep(5)  # past the lock's own end
        assert (await w.mod.state(room, "m.room.join_rules") or {}).get("join_rule") == "invite"
        assert ledger_query(w, "SELECT COUNT(*) FROM room_locks") == [(0,)]
    finally:
        await w.close()


async def test_a_second_wave_after_a_moderator_reopened_the_room_locks_it_again(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """A moderator reopens a locked room; a new wave then locks it again."""
    config = {"protections": {"join_wave": {"max_joins": 3, "per_seconds": 2, "lock_seconds": 60}}}
    w = await World.launch(synapse, tmp_path, config=config, members=())
    try:
        room = w.protected[0]
        await _wave(w, room)
        locked = await w.mod.wait_for(room, join_rule_is("invite"))
        await w.mod.put_state(room, "m.room.join_rules", {"join_rule": "public"})
        await w.mod.wait_for(w.management, body_contains("the lock is over"))
        await asyncio.sleep(2.5)
        for n in range(4):
            await w.person(f"second{n}").join(room)

        def relocked(event: Mapping[str, Any]) -> bool:
            return join_rule_is("invite")(event) and event.get("event_id") != locked.get("event_id")

        await w.mod.wait_for(room, relocked)
    finally:
        await w.close()


async def test_a_restore_due_at_restart_is_announced_with_the_rooms_name(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Locks that ended while the bot was down are restored at start, each announced in the
    management room by the room's name."""
    w = await World.launch(synapse, tmp_path, config=WAVE, members=(), rooms=2)
    try:
        await asyncio.gather(*(_wave(w, room) for room in w.protected))
        for room in w.protected:
            await w.mod.wait_for(room, join_rule_is("invite"))
        await w.stop_bot()
        await asyncio.sleep(4.5)
        await w.start_bot()
        for number in (1, 2):
            await w.mod.wait_for(w.management, body_contains(f"Protected {number}: join rule restored"), timeout=30)
    finally:
        await w.close()
