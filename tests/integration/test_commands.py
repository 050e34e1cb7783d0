"""Every ``!mod`` command and the authorization rules, end to end against the real Synapse.

Each test builds its own world (fresh users and rooms) and runs the bot in-process. Replies are
awaited with :meth:`Person.wait_for_reply`; effects are read back from the homeserver.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio

from abusebot.matrix import API, MatrixError, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World, replies_to


class MakeWorld(Protocol):
    """Builds a world; by default starts the bot with the moderator watching."""

    def __call__(
        self,
        *,
        rooms: int = 1,
        members: tuple[str, ...] = ("spammer",),
        start: bool = True,
    ) -> Awaitable[World]: ...


@pytest_asyncio.fixture
async def make_world(synapse: SynapseServer, tmp_path: Path) -> AsyncIterator[MakeWorld]:
    """A factory for worlds with more rooms or members than the shared ``running`` fixture."""
    worlds: list[World] = []

    async def make(*, rooms: int = 1, members: tuple[str, ...] = ("spammer",), start: bool = True) -> World:
        base = tmp_path / f"world{len(worlds)}"
        base.mkdir()
        world = await World.create(synapse, base, rooms=rooms, members=members)
        worlds.append(world)
        if start:
            await world.mod.start_watching()
            await world.start_bot()
        return world

    yield make
    for world in worlds:
        await world.close()


# -- helpers -----------------------------------------------------------------------------------


async def command(world: World, text: str, room: str | None = None, html: str | None = None) -> tuple[str, str]:
    """The moderator types ``text`` (management room by default); returns (event id, reply body)."""
    room = room or world.management
    event_id = await world.mod.say(room, text, html)
    return event_id, await world.mod.wait_for_reply(room, event_id)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait (bounded) until ``predicate`` holds, e.g. until the bot's room state caught up."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def set_level(person: Person, room_id: str, user_id: str, level: int) -> None:
    """``person`` sets ``user_id``'s power level in ``room_id``."""
    content = await person.state(room_id, "m.room.power_levels") or {}
    users = dict(content.get("users") or {})
    users[user_id] = level
    await person.put_state(room_id, "m.room.power_levels", {**content, "users": users})


async def users_levels(person: Person, room_id: str) -> dict[str, Any]:
    """The ``users`` map of a room's power levels, as the homeserver has it."""
    content = await person.state(room_id, "m.room.power_levels") or {}
    return dict(content.get("users") or {})


def infraction_id(reply: str) -> int:
    """The infraction number an action reply mentions."""
    match = re.search(r"infraction #(\d+)", reply)
    assert match, reply
    return int(match.group(1))


async def dm_notices(person: Person, bot_id: str) -> list[str]:
    """Bodies of the bot's messages in DM rooms the bot invited ``person`` to (joining them)."""
    reply = await person.call("GET", f"{API}/sync", query={"timeout": 0})
    bodies: list[str] = []
    for room_id, invite in (reply.get("rooms", {}).get("invite") or {}).items():
        invite_events = (invite.get("invite_state") or {}).get("events") or []
        inviters = {e.get("sender") for e in invite_events if e.get("type") == "m.room.member"}
        if bot_id not in inviters:
            continue
        await person.join(room_id)
        page = await person.call("GET", f"{API}/rooms/{q(room_id)}/messages", query={"dir": "b", "limit": 50})
        bodies += [
            str(e["content"].get("body", ""))
            for e in page.get("chunk", [])
            if e.get("type") == "m.room.message" and e.get("sender") == bot_id
        ]
    return bodies


async def no_reply_to(world: World, room: str, ignored_event: str) -> None:
    """Prove the bot did not answer ``ignored_event``: a later command in the same room gets its
    reply (the bot handles a room's events in order), and nothing before it answered the first."""
    _, sentinel_reply = await command(world, "!mod help status", room)
    assert "status" in sentinel_reply
    assert not [e for e in world.mod.seen.get(room, []) if replies_to(e, ignored_event)]


# -- help and usage ----------------------------------------------------------------------------


async def test_help_lists_every_command(running: World) -> None:
    """``!mod help`` replies with the usage of every command."""
    _, reply = await command(running, "!mod help")
    for usage in ("warn <user> <reason…>", "mute <user> <duration>", "ban <user> [duration]", "pardon", "status"):
        assert usage in reply, reply


async def test_help_for_one_command_shows_its_usage(running: World) -> None:
    """``!mod help ban`` replies with the ban usage line and the --room hint."""
    _, reply = await command(running, "!mod help ban")
    assert "!mod ban <user> [duration] [reason…]" in reply
    assert "--room" in reply
    assert "warn" not in reply


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!mod frobnicate {user}", ["unknown command 'frobnicate'", "Usage: !mod help [command]"]),
        ("!mod ban notauser spamming", ["'notauser' is not a user id", "Usage: !mod ban <user> [duration]"]),
        ("!mod mute {user}", ["how long?", "Usage: !mod mute <user> <duration>"]),
        ("!mod mute {user} 5parsecs", ["'5parsecs' looks like a duration", "Usage: !mod mute <user> <duration>"]),
        ("!mod warn {user}", ["a reason is required", "Usage: !mod warn <user> <reason…>"]),
        ("!mod redact {user} lots", ["count must be a number", "Usage: !mod redact <user> [count]"]),
    ],
)
async def test_malformed_command_gets_usage_reply_and_does_nothing(
    running: World, text: str, expected: list[str]
) -> None:
    """A malformed or unknown command gets a threaded usage reply; no infraction, no action."""
    spammer = running.members["spammer"]
    room = running.protected[0]
    levels_before = await users_levels(running.mod, room)
    _, reply = await command(running, text.format(user=spammer.user_id))
    for fragment in expected:
        assert fragment in reply, reply
    assert await running.bot.ledger.history(spammer.user_id) == []
    assert await running.mod.membership(room, spammer.user_id) == "join"
    assert await users_levels(running.mod, room) == levels_before


# -- warn --------------------------------------------------------------------------------------


async def test_warn_records_infraction_dms_user_and_posts_audit_line(running: World) -> None:
    """``!mod warn`` records a warning, DMs the user politely with the reason, and audits it."""
    spammer = running.members["spammer"]
    bot_id = running.bot_account.user_id
    reason = "please stop posting referral links"
    _, reply = await command(running, f"!mod warn {spammer.user_id} {reason}")
    assert "Warned" in reply, reply
    assert spammer.user_id in reply, reply
    number = infraction_id(reply)

    # In the management room the reply is the audit line: who, whom, why, which record.
    assert reason in reply, reply
    assert f"by {running.mod.user_id}" in reply, reply
    _, history = await command(running, f"!mod history {spammer.user_id}")
    assert f"#{number} warning in " in history, history
    assert reason in history

    notices = await dm_notices(spammer, bot_id)
    notice = next((body for body in notices if reason in body), None)
    assert notice is not None, notices
    assert notice.startswith("Hello"), notice
    assert "warning" in notice, notice


# -- mute / unmute -----------------------------------------------------------------------------


async def test_mute_silences_user_and_unmute_removes_the_entry_again(running: World) -> None:
    """A mute puts the user below events_default (sends get 403); unmute removes the entry again."""
    spammer = running.members["spammer"]
    room = running.protected[0]
    assert spammer.user_id not in await users_levels(running.mod, room)

    _, reply = await command(running, f"!mod mute {spammer.user_id} 1h flooding")
    assert "Muted" in reply, reply
    content = await running.mod.state(room, "m.room.power_levels") or {}
    assert content["users"][spammer.user_id] < content.get("events_default", 0)
    with pytest.raises(MatrixError) as refused:
        await spammer.say(room, "can I still talk?")
    assert refused.value.status == 403

    _, reply = await command(running, f"!mod unmute {spammer.user_id} behaving now")
    assert "Unmuted" in reply, reply
    assert spammer.user_id not in await users_levels(running.mod, room)
    await spammer.say(room, "thanks, I will behave")


async def test_unmute_restores_an_explicit_previous_power_level(running: World) -> None:
    """A user at an explicit level (10) is back at 10 after mute and unmute."""
    spammer = running.members["spammer"]
    room = running.protected[0]
    await set_level(running.mod, room, spammer.user_id, 10)

    _, reply = await command(running, f"!mod mute {spammer.user_id} 1h flooding")
    assert "Muted" in reply, reply
    assert (await users_levels(running.mod, room))[spammer.user_id] < 0
    with pytest.raises(MatrixError) as refused:
        await spammer.say(room, "hello?")
    assert refused.value.status == 403

    _, reply = await command(running, f"!mod unmute {spammer.user_id}")
    assert "Unmuted" in reply, reply
    assert (await users_levels(running.mod, room))[spammer.user_id] == 10


# -- kick / ban / unban ------------------------------------------------------------------------


async def test_kick_removes_the_user(running: World) -> None:
    """``!mod kick`` leaves the user with membership 'leave' and records the kick."""
    spammer = running.members["spammer"]
    _, reply = await command(running, f"!mod kick {spammer.user_id} off-topic")
    assert "Kicked" in reply, reply
    assert await running.mod.membership(running.protected[0], spammer.user_id) == "leave"
    _, history = await command(running, f"!mod history {spammer.user_id}")
    assert f"#{infraction_id(reply)} kick in " in history, history


async def test_ban_applies_in_every_protected_room_and_unban_lifts_it(make_world: MakeWorld) -> None:
    """``!mod ban`` without --room bans in all protected rooms; ``!mod unban`` lifts every ban."""
    w = await make_world(rooms=2)
    spammer = w.members["spammer"]
    _, reply = await command(w, f"!mod ban {spammer.user_id} 2h spamming links")
    assert "Banned" in reply, reply
    assert f"in {w.bot.moderation.community} for 2h" in reply, reply  # the community, not one room
    for room in w.protected:
        assert await w.mod.membership(room, spammer.user_id) == "ban"

    _, reply = await command(w, f"!mod unban {spammer.user_id} appeal accepted")
    assert "Unbanned" in reply, reply
    for room in w.protected:
        assert await w.mod.membership(room, spammer.user_id) == "leave"
    _, history = await command(w, f"!mod history {spammer.user_id}")
    assert "[lifted]" in history, history


async def test_ban_with_room_flag_bans_only_in_that_room(make_world: MakeWorld) -> None:
    """``--room ROOM`` narrows a ban to that one protected room."""
    w = await make_world(rooms=2)
    spammer = w.members["spammer"]
    first, second = w.protected
    _, reply = await command(w, f"!mod ban {spammer.user_id} --room {second} spamming")
    assert "Banned" in reply, reply
    assert await w.mod.membership(second, spammer.user_id) == "ban"
    assert await w.mod.membership(first, spammer.user_id) == "join"

    _, reply = await command(w, f"!mod unban {spammer.user_id}")
    assert "Unbanned" in reply, reply
    assert await w.mod.membership(second, spammer.user_id) == "leave"
    assert await w.mod.membership(first, spammer.user_id) == "join"


async def test_ban_with_room_flag_outside_protected_rooms_is_refused(make_world: MakeWorld) -> None:
    """``--room`` naming a room that is not protected gets a usage reply and bans nobody."""
    w = await make_world(rooms=1)
    spammer = w.members["spammer"]
    _, reply = await command(w, f"!mod ban {spammer.user_id} --room {w.management} spamming")
    assert "is not a protected room you may act in" in reply, reply
    assert await w.mod.membership(w.protected[0], spammer.user_id) == "join"


# -- redact ------------------------------------------------------------------------------------


async def test_redact_removes_only_the_users_latest_messages(make_world: MakeWorld) -> None:
    """``!mod redact <user> 3`` redacts that user's 3 newest messages; older ones and others' stay."""
    w = await make_world(members=("spammer", "bystander"))
    spammer, bystander = w.members["spammer"], w.members["bystander"]
    room = w.protected[0]
    oldest = await spammer.say(room, "spam 0")
    spam = [await spammer.say(room, f"spam {n}") for n in range(1, 4)]
    innocent = await bystander.say(room, "a normal message")

    _, reply = await command(w, f"!mod redact {spammer.user_id} 3")
    assert "3 message(s) removed" in reply, reply

    async def event(event_id: str) -> dict[str, Any]:
        return dict(await w.mod.call("GET", f"{API}/rooms/{q(room)}/event/{q(event_id)}"))

    for event_id in spam:
        redacted = await event(event_id)
        assert redacted["content"] == {}, redacted
        assert "redacted_because" in redacted.get("unsigned", {})
    assert (await event(oldest))["content"]["body"] == "spam 0"
    assert (await event(innocent))["content"]["body"] == "a normal message"


# -- note / history / pardon / status ----------------------------------------------------------


async def test_history_lists_infractions_newest_first_with_state_and_expiry(running: World) -> None:
    """``!mod history`` shows ids, kinds, states and expiry, newest first."""
    spammer = running.members["spammer"]
    _, note = await command(running, f"!mod note {spammer.user_id} seen spamming elsewhere")
    assert "Noted" in note, note
    _, warn = await command(running, f"!mod warn {spammer.user_id} first warning")
    _, ban = await command(running, f"!mod ban {spammer.user_id} 2h spamming")
    ids = [infraction_id(note), infraction_id(warn), infraction_id(ban)]

    _, history = await command(running, f"!mod history {spammer.user_id}")
    assert "3 infraction(s), newest first" in history, history
    lines = history.splitlines()
    ban_line = next(line for line in lines if line.startswith(f"#{ids[2]} "))
    assert ban_line.startswith(f"#{ids[2]} ban 2h, until "), ban_line
    assert "[in force]" in ban_line, ban_line
    assert any(line.startswith(f"#{ids[1]} warning in ") for line in lines), history
    assert any(line.startswith(f"#{ids[0]} note in ") and "seen spamming elsewhere" in line for line in lines)
    order = [next(i for i, line in enumerate(lines) if line.startswith(f"#{n} ")) for n in ids]
    assert order == sorted(order, reverse=True), history


async def test_pardon_lifts_a_temporary_ban_and_marks_it_pardoned(running: World) -> None:
    """``!mod pardon <id>`` unbans on the server and history shows the ban as pardoned."""
    spammer = running.members["spammer"]
    room = running.protected[0]
    _, ban = await command(running, f"!mod ban {spammer.user_id} 1d spamming")
    number = infraction_id(ban)
    assert await running.mod.membership(room, spammer.user_id) == "ban"

    _, reply = await command(running, f"!mod pardon #{number} mistaken identity")
    assert "Pardoned" in reply, reply
    assert f"#{number}" in reply, reply
    assert await running.mod.membership(room, spammer.user_id) == "leave"
    _, history = await command(running, f"!mod history {spammer.user_id}")
    assert f"#{number} ban 1d" in history, history
    assert "[pardoned]" in history, history

    _, again = await command(running, f"!mod pardon {number}")
    assert "already pardoned" in again, again
    _, missing = await command(running, "!mod pardon 999999")
    assert "no infraction #999999" in missing, missing


async def test_status_mentions_protected_room_and_ledger_counts(running: World) -> None:
    """``!mod status`` counts the protected rooms and gives the ledger's counts."""
    spammer = running.members["spammer"]
    await command(running, f"!mod warn {spammer.user_id} be nice")
    _, reply = await command(running, "!mod status")
    assert "protecting 1 room(s)" in reply, reply
    assert "Ledger: infractions 1 active;" in reply, reply
    assert "0 pending lift(s)" in reply, reply
    assert "Rooms with a problem: 0 of 1" in reply, reply


# -- authorization -----------------------------------------------------------------------------


async def test_non_moderator_in_management_room_is_ignored_and_audited(running: World) -> None:
    """A management-room member below the moderator level gets no reply, bans nobody, is audited."""
    spammer = running.members["spammer"]
    lurker = running.person("lurker")
    await running.mod.invite(running.management, lurker.user_id)
    await lurker.join(running.management)

    ignored = await lurker.say(running.management, f"!mod ban {spammer.user_id} I do not like them")
    await no_reply_to(running, running.management, ignored)
    assert await running.mod.membership(running.protected[0], spammer.user_id) == "join"
    rows = [r for r in await running.bot.ledger.audit_rows() if r["event_id"] == ignored]
    assert [(r["actor"], r["outcome"]) for r in rows] == [(lurker.user_id, "ignored")], rows
    assert await running.bot.ledger.history(spammer.user_id) == []


async def test_command_from_plain_member_in_protected_room_is_ignored(make_world: MakeWorld) -> None:
    """A plain member typing ``!mod ban`` in a protected room is ignored and audited."""
    w = await make_world(members=("spammer", "bystander"))
    spammer, bystander = w.members["spammer"], w.members["bystander"]
    room = w.protected[0]
    ignored = await spammer.say(room, f"!mod ban {bystander.user_id} because I can")
    await no_reply_to(w, room, ignored)
    assert await w.mod.membership(room, bystander.user_id) == "join"
    rows = [r for r in await w.bot.ledger.audit_rows() if r["event_id"] == ignored]
    assert [(r["actor"], r["outcome"]) for r in rows] == [(spammer.user_id, "ignored")], rows


async def test_protected_room_admin_bans_in_that_room_only(make_world: MakeWorld) -> None:
    """A user at ban level in one protected room can ``!mod ban`` there, scoped to that room."""
    w = await make_world(rooms=2, members=("spammer", "helper"))
    spammer, helper = w.members["spammer"], w.members["helper"]
    first, second = w.protected
    await set_level(w.mod, first, helper.user_id, 50)

    command_id = await helper.say(first, f"!mod ban {spammer.user_id} spamming")
    reply = await w.mod.wait_for_reply(first, command_id)
    assert "Banned" in reply, reply
    assert await w.mod.membership(first, spammer.user_id) == "ban"
    assert await w.mod.membership(second, spammer.user_id) == "join"

    ignored = await helper.say(second, f"!mod ban {spammer.user_id} spamming")
    await no_reply_to(w, second, ignored)
    assert await w.mod.membership(second, spammer.user_id) == "join"


async def test_protected_room_admin_cannot_use_management_only_commands(make_world: MakeWorld) -> None:
    """A protected room's admin asking for ``!mod history`` is told it is management-room only."""
    w = await make_world(members=("spammer", "helper"))
    spammer, helper = w.members["spammer"], w.members["helper"]
    room = w.protected[0]
    await set_level(w.mod, room, helper.user_id, 100)
    for text in (f"!mod history {spammer.user_id}", f"!mod note {spammer.user_id} hmm", "!mod status"):
        command_id = await helper.say(room, text)
        reply = await w.mod.wait_for_reply(room, command_id)
        assert "only available in the management room" in reply, reply
    assert await w.bot.ledger.history(spammer.user_id) == []


# -- refusals ----------------------------------------------------------------------------------


async def test_ban_of_the_bot_itself_is_refused(running: World) -> None:
    """``!mod ban`` of the bot is refused with a clear reply; the bot stays."""
    bot_id = running.bot_account.user_id
    _, reply = await command(running, f"!mod ban {bot_id} rogue bot")
    assert "Refused" in reply, reply
    assert "myself" in reply, reply
    assert await running.mod.membership(running.protected[0], bot_id) == "join"
    assert await running.bot.ledger.history(bot_id) == []


async def test_ban_of_a_moderator_is_refused(running: World) -> None:
    """``!mod ban`` of a management-room moderator is refused; nobody is banned."""
    mod_id = running.mod.user_id
    _, reply = await command(running, f"!mod ban {mod_id} coup attempt")
    assert "Refused" in reply, reply
    assert "is a moderator" in reply, reply
    assert await running.mod.membership(running.protected[0], mod_id) == "join"
    refused = [r for r in await running.bot.ledger.audit_rows() if r["subject"] == mod_id]
    assert [r["outcome"] for r in refused] == ["refused"], refused


async def test_ban_of_user_not_below_the_bots_level_is_refused(running: World) -> None:
    """A user at the bot's power level (100) in a protected room cannot be banned through the bot."""
    spammer = running.members["spammer"]
    room = running.protected[0]
    await set_level(running.mod, room, spammer.user_id, 100)
    store = running.bot.store
    await until(lambda: store.room(room).power_levels.user_level(spammer.user_id) == 100, "bot sees level 100")

    _, reply = await command(running, f"!mod ban {spammer.user_id} spamming")
    assert "Refused" in reply, reply
    assert "not below mine (100)" in reply, reply
    assert await running.mod.membership(room, spammer.user_id) == "join"
    assert await running.bot.ledger.history(spammer.user_id) == []


async def test_ban_of_a_room_v12_creator_is_refused(make_world: MakeWorld) -> None:
    """In room v12 a protected room's creator ranks above the bot even though absent from ``users``."""
    w = await make_world(start=False)
    bot_id = w.bot_account.user_id
    owner = w.person("owner")
    owned = await owner.create_room(name="Owner's room", invite=[bot_id], power={bot_id: 100}, room_version="12")
    w.protected.append(owned)
    w.write_config({})
    await w.mod.start_watching()
    await w.start_bot()
    assert owner.user_id not in await users_levels(owner, owned)

    _, reply = await command(w, f"!mod ban {owner.user_id} hostile takeover")
    assert "Refused" in reply, reply
    assert "created" in reply, reply
    assert await owner.membership(owned, owner.user_id) == "join"
    assert await w.bot.ledger.history(owner.user_id) == []


# -- mentions ----------------------------------------------------------------------------------


async def test_ban_accepts_a_mention_pill(running: World) -> None:
    """A user given as an HTML mention pill (display name in the body) is resolved and banned."""
    spammer = running.members["spammer"]
    await spammer.call("PUT", f"{API}/profile/{q(spammer.user_id)}/displayname", {"displayname": "Spam King"})
    pill = f'<a href="https://matrix.to/#/{spammer.user_id}">Spam King</a>'
    _, reply = await command(running, "!mod ban Spam King posting scams", html=f"!mod ban {pill} posting scams")
    assert "Banned" in reply, reply
    assert spammer.user_id in reply, reply
    assert "posting scams" in reply, reply
    assert await running.mod.membership(running.protected[0], spammer.user_id) == "ban"
