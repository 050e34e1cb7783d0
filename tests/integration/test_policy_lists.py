"""Policy lists end to end against the real Synapse: watching, applying, publishing, safety.

The moderator (or a separate list owner) creates a policy list room, invites the bot and writes
rules as ``m.policy.rule.*`` state. The bot runs in-process; effects are read back from the
homeserver (memberships, ACLs, list state) and from the bot's ledger.

Negative checks ("nobody was banned") use :func:`settled`: once the bot's room state shows an
event, a command sent afterwards lands in a later sync batch, and batches are handled one at a
time, so the command's reply proves the event was fully handled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest_asyncio

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World, body_contains

USER_RULE = "m.policy.rule.user"
SERVER_RULE = "m.policy.rule.server"
ROOM_RULE = "m.policy.rule.room"


class MakeWorld(Protocol):
    """Builds a world (the bot not started)."""

    def __call__(self, *, rooms: int = 1, members: tuple[str, ...] = ("spammer",)) -> Awaitable[World]: ...


@pytest_asyncio.fixture
async def make_world(synapse: SynapseServer, tmp_path: Path) -> AsyncIterator[MakeWorld]:
    """A factory for worlds; policy lists are configured once their rooms exist."""
    worlds: list[World] = []

    async def make(*, rooms: int = 1, members: tuple[str, ...] = ("spammer",)) -> World:
        base = tmp_path / f"world{len(worlds)}"
        base.mkdir()
        world = await World.create(synapse, base, rooms=rooms, members=members)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        await world.close()


# -- helpers -----------------------------------------------------------------------------------


async def start(world: World, policy_lists: Mapping[str, Any] | None = None) -> Any:
    """Write the config (with ``policy_lists``), start the bot, and have the moderator watch."""
    if policy_lists is not None:
        world.write_config({"policy_lists": dict(policy_lists)})
    await world.mod.start_watching()
    return await world.start_bot()


async def new_list(world: World, owner: Person | None = None, *, publish: bool = False) -> str:
    """A policy list room named ``Ban list <tag>``, the bot invited (at 100 when it publishes)."""
    owner = owner or world.mod
    bot_id = world.bot_account.user_id
    return await owner.create_room(
        name=f"Ban list {world.tag}", invite=[bot_id], power={bot_id: 100} if publish else None
    )


def list_name(world: World) -> str:
    """The name :func:`new_list` gives list rooms (how the bot names the list in messages)."""
    return f"Ban list {world.tag}"


async def add_rule(
    owner: Person, list_room: str, entity: str, reason: str = "spam", *, kind: str = USER_RULE, key: str | None = None
) -> str:
    """Write a ban rule; returns its event id."""
    content = {"entity": entity, "recommendation": "m.ban", "reason": reason}
    return await owner.put_state(list_room, kind, content, state_key=key or f"rule:{entity}")


async def remove_rule(owner: Person, list_room: str, entity: str, *, kind: str = USER_RULE) -> str:
    """Empty a rule's state (the spec's way to remove it); returns the event id."""
    return await owner.put_state(list_room, kind, {}, state_key=f"rule:{entity}")


async def command(world: World, text: str, room: str | None = None) -> str:
    """The moderator types ``text`` (management room by default); returns the bot's reply."""
    room = room or world.management
    event_id = await world.mod.say(room, text)
    return await world.mod.wait_for_reply(room, event_id)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait (bounded) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


async def settled(world: World, seen: Callable[[], bool], what: str) -> None:
    """Wait until the bot's room state shows an event (``seen``), then until a later command is
    answered: the batch holding the event has then been fully handled."""
    await until(seen, what)
    reply = await command(world, "!mod help lists")
    assert "lists" in reply


def state_event_id(world: World, room_id: str, event_type: str, state_key: str) -> str | None:
    """The id of the state event the bot currently holds for ``(event_type, state_key)``."""
    raw = world.bot.store.room(room_id).get(event_type, state_key)
    return None if raw is None else raw.get("event_id")


async def rule_settled(world: World, list_room: str, entity: str, event_id: str, *, kind: str = USER_RULE) -> None:
    """Wait until the bot has handled the rule event ``event_id`` (written by :func:`add_rule` or
    :func:`remove_rule` for ``entity``)."""
    await settled(
        world,
        lambda: event_id in world.bot.policies.recent_rule_events,
        f"rule event {event_id} ({kind} {entity} in {list_room}) reached the bot",
    )


async def join_settled(world: World, person: Person, room_id: str) -> None:
    """``person`` joins ``room_id``; wait until the bot has handled the join."""
    await person.join(room_id)
    await settled(
        world,
        lambda: world.bot.store.room(room_id).membership(person.user_id) in ("join", "ban"),
        f"{person.user_id} joining {room_id} reached the bot",
    )


def member_event(user_id: str, membership: str) -> Callable[[Mapping[str, Any]], bool]:
    """Predicate: ``user_id``'s membership changed to ``membership``."""

    def predicate(event: Mapping[str, Any]) -> bool:
        return (
            event.get("type") == "m.room.member"
            and event.get("state_key") == user_id
            and (event.get("content") or {}).get("membership") == membership
        )

    return predicate


async def wait_banned(world: World, user_id: str, rooms: list[str] | None = None) -> None:
    """Wait until ``user_id`` is banned in ``rooms`` (default: every protected room)."""
    for room_id in rooms or world.protected:
        await world.mod.wait_for(room_id, member_event(user_id, "ban"))
        assert await world.mod.membership(room_id, user_id) == "ban"


async def active_policy_bans(world: World, user_id: str) -> list[Any]:
    """The user's active ban infractions made by a policy list."""
    return [inf for inf in await world.bot.ledger.active(user_id, "ban") if inf.origin == "policy_list"]


async def settled_policy_bans(world: World, user_id: str, timeout: float = 10) -> list[Any]:
    """:func:`active_policy_bans` once there is one: a ban shows on the homeserver a moment
    before its infraction is settled (active) in the ledger."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await active_policy_bans(world, user_id)):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    return found


def acl_event(server: str) -> Callable[[Mapping[str, Any]], bool]:
    """Predicate: an ``m.room.server_acl`` event denying ``server``."""

    def predicate(event: Mapping[str, Any]) -> bool:
        return event.get("type") == "m.room.server_acl" and server in ((event.get("content") or {}).get("deny") or [])

    return predicate


# -- applying user rules -----------------------------------------------------------------------


async def test_user_rule_bans_matching_member_in_every_protected_room(make_world: MakeWorld) -> None:
    """A user rule added while the bot runs bans the member in every protected room, records the
    list as the actor (origin policy_list) and posts one summary line."""
    w = await make_world(rooms=2)
    spammer = w.members["spammer"]
    lst = await new_list(w)
    await start(w, {"watch": [lst]})

    await add_rule(w.mod, lst, spammer.user_id, "crypto spam everywhere")
    await wait_banned(w, spammer.user_id)
    for room_id in w.protected:
        member = await w.mod.state(room_id, "m.room.member", spammer.user_id) or {}
        assert "crypto spam everywhere" in member.get("reason", ""), member
    await w.mod.wait_for(
        w.management, body_contains("Policy list", list_name(w), spammer.user_id, "banned 1 member(s)")
    )

    [infraction] = await w.bot.ledger.active(spammer.user_id, "ban")
    assert infraction.origin == "policy_list"
    assert infraction.actor == lst
    assert infraction.scope == "*"
    assert infraction.rule == f"{lst} {USER_RULE} rule:{spammer.user_id}"


async def test_rules_present_at_start_are_applied_when_the_bot_starts(make_world: MakeWorld) -> None:
    """A rule already in a watched list when the bot starts bans the matching member at start-up."""
    w = await make_world()
    spammer = w.members["spammer"]
    lst = await new_list(w)
    await add_rule(w.mod, lst, spammer.user_id, "known spammer")
    await start(w, {"watch": [lst]})

    assert await w.mod.membership(w.protected[0], spammer.user_id) == "ban"
    [infraction] = await active_policy_bans(w, spammer.user_id)
    assert infraction.actor == lst


async def test_matching_user_who_joins_later_is_banned_on_join(make_world: MakeWorld) -> None:
    """A user matching a rule who joins a protected room after the rule was added is banned on join."""
    w = await make_world(rooms=2)
    late = w.person("late")
    lst = await new_list(w)
    await start(w, {"watch": [lst]})
    pattern = f"@late-{w.tag}:*"
    rule = await add_rule(w.mod, lst, pattern, "ban evader")
    await rule_settled(w, lst, pattern, rule)

    await late.join(w.protected[0])
    await wait_banned(w, late.user_id)
    [infraction] = await settled_policy_bans(w, late.user_id)
    assert infraction.actor == lst
    assert "ban evader" in infraction.reason


async def test_removed_rule_lifts_only_the_bans_the_list_made(make_world: MakeWorld) -> None:
    """Removing a glob rule unbans the member the list banned; a member a moderator banned by hand
    (matching the same glob) stays banned."""
    w = await make_world(members=("spam1", "spam2"))
    by_hand, by_list = w.members["spam1"], w.members["spam2"]
    lst = await new_list(w)
    await start(w, {"watch": [lst]})
    reply = await command(w, f"!mod ban {by_hand.user_id} spamming by hand")
    assert "Banned" in reply, reply

    pattern = f"@spam*-{w.tag}:localhost"
    await add_rule(w.mod, lst, pattern, "spam wave")
    await wait_banned(w, by_list.user_id)
    await w.mod.wait_for(w.management, body_contains("Policy list", pattern, "banned 1 member(s)", by_list.user_id))
    assert len(await active_policy_bans(w, by_list.user_id)) == 1
    assert await active_policy_bans(w, by_hand.user_id) == []

    await remove_rule(w.mod, lst, pattern)
    await w.mod.wait_for(w.protected[0], member_event(by_list.user_id, "leave"))
    await w.mod.wait_for(w.management, body_contains("was removed", "lifted the ban(s)", by_list.user_id))
    assert await w.mod.membership(w.protected[0], by_list.user_id) == "leave"
    assert await active_policy_bans(w, by_list.user_id) == []
    assert await w.mod.membership(w.protected[0], by_hand.user_id) == "ban"
    [manual] = await w.bot.ledger.active(by_hand.user_id, "ban")
    assert manual.origin == "command"


async def test_rapid_add_remove_churn_leaves_no_stray_ban(make_world: MakeWorld) -> None:
    """Adding and removing the same rule twice in quick succession leaves the user unbanned and no
    active policy ban in the ledger."""
    w = await make_world()
    spammer = w.members["spammer"]
    lst = await new_list(w)
    await start(w, {"watch": [lst]})

    for _ in range(2):
        await add_rule(w.mod, lst, spammer.user_id, "churn")
        last = await remove_rule(w.mod, lst, spammer.user_id)
    await rule_settled(w, lst, spammer.user_id, last)

    assert await w.mod.membership(w.protected[0], spammer.user_id) != "ban"
    assert await active_policy_bans(w, spammer.user_id) == []
    assert w.bot.policies.ban_rules("user", spammer.user_id) == []


# -- list options ------------------------------------------------------------------------------


async def test_dont_apply_list_is_watched_but_bans_nobody(make_world: MakeWorld) -> None:
    """A list configured with dont_apply is followed (its rules are counted) but bans nobody."""
    w = await make_world()
    spammer = w.members["spammer"]
    lst = await new_list(w)
    await start(w, {"watch": [{"room": lst, "dont_apply": True}]})
    rule = await add_rule(w.mod, lst, spammer.user_id)
    await rule_settled(w, lst, spammer.user_id, rule)

    assert await w.mod.membership(w.protected[0], spammer.user_id) == "join"
    reply = await command(w, "!mod lists")
    assert f"{list_name(w)}: 1 rule, watched only (dont_apply)" in reply, reply


async def test_allow_list_exempts_its_users_from_ban_rules(make_world: MakeWorld) -> None:
    """A user on an allow-list is not banned by a ban rule of another list; others still are."""
    w = await make_world(members=("spam1", "spam2"))
    friend, foe = w.members["spam1"], w.members["spam2"]
    bans = await new_list(w)
    allowed = await w.mod.create_room(name=f"Allow list {w.tag}", invite=[w.bot_account.user_id])
    await add_rule(w.mod, allowed, friend.user_id, "trusted")
    await start(w, {"watch": [bans, {"room": allowed, "allow": True}]})

    await add_rule(w.mod, bans, f"@spam*-{w.tag}:localhost", "spam wave")
    await wait_banned(w, foe.user_id)
    await w.mod.wait_for(w.management, body_contains("Policy list", "banned 1 member(s)", foe.user_id))
    assert await w.mod.membership(w.protected[0], friend.user_id) == "join"


async def test_no_auto_unban_list_keeps_bans_when_rule_is_removed(make_world: MakeWorld) -> None:
    """With auto_unban false, removing a rule leaves the ban it caused in place."""
    w = await make_world()
    spammer = w.members["spammer"]
    lst = await new_list(w)
    await start(w, {"watch": [{"room": lst, "auto_unban": False}]})
    await add_rule(w.mod, lst, spammer.user_id)
    await wait_banned(w, spammer.user_id)

    removal = await remove_rule(w.mod, lst, spammer.user_id)
    await rule_settled(w, lst, spammer.user_id, removal)
    assert await w.mod.membership(w.protected[0], spammer.user_id) == "ban"
    assert len(await active_policy_bans(w, spammer.user_id)) == 1


# -- safety ------------------------------------------------------------------------------------


async def test_rules_matching_everyone_or_a_moderator_ban_nobody_and_alert(make_world: MakeWorld) -> None:
    """User rules ``@*:*``, ``*`` and one naming the moderator are refused: nobody is banned and the
    management room is told which rule of which list."""
    w = await make_world()
    spammer = w.members["spammer"]
    owner = w.person("owner")
    lst = await new_list(w, owner)
    await start(w, {"watch": [lst]})

    for entity, why in (("@*:*", "matches every user"), ("*", "matches every user"), (w.mod.user_id, "protected")):
        await add_rule(owner, lst, entity, "everyone is a spammer", key=f"key-{len(entity)}")
        alert = await w.mod.wait_for(w.management, body_contains("Not applying rule", entity, list_name(w)))
        assert why in alert["content"]["body"], alert

    for user in (spammer.user_id, w.mod.user_id, owner.user_id):
        assert await w.mod.membership(w.protected[0], user) in ("join", None)
    assert await w.bot.ledger.active(spammer.user_id, "ban") == []
    assert w.bot.policies.ban_rules("user", spammer.user_id) == []


async def test_server_rule_denies_server_in_every_protected_room_acl(make_world: MakeWorld) -> None:
    """A server rule puts the server in every protected room's ``m.room.server_acl`` deny list,
    allowing everyone else; removing the rule takes it out again."""
    w = await make_world(rooms=2)
    lst = await new_list(w)
    await start(w, {"watch": [lst]})

    await add_rule(w.mod, lst, "evil.example", "spam server", kind=SERVER_RULE)
    for room_id in w.protected:
        await w.mod.wait_for(room_id, acl_event("evil.example"))
        acl = await w.mod.state(room_id, "m.room.server_acl") or {}
        assert acl["deny"] == ["evil.example"]
        assert acl["allow"] == ["*"]
    await w.mod.wait_for(w.management, body_contains("Server ACL updated in 2 room(s)", "evil.example"))

    await remove_rule(w.mod, lst, "evil.example", kind=SERVER_RULE)
    for room_id in w.protected:
        await w.mod.wait_for(room_id, lambda e: e.get("type") == "m.room.server_acl" and not e["content"]["deny"])
        acl = await w.mod.state(room_id, "m.room.server_acl") or {}
        assert acl["deny"] == []
        assert acl["allow"] == ["*"]


async def test_server_rule_for_own_server_or_everything_is_refused(make_world: MakeWorld) -> None:
    """Server rules naming our own server (``localhost``) or ``*`` are refused with an alert; the ACL
    written for a later rule never denies localhost."""
    w = await make_world()
    lst = await new_list(w)
    await start(w, {"watch": [lst]})

    for entity, why in (("localhost", "our own server"), ("*", "matches every server")):
        await add_rule(w.mod, lst, entity, "hostile", kind=SERVER_RULE)
        alert = await w.mod.wait_for(w.management, body_contains("Not applying rule", entity, list_name(w)))
        assert why in alert["content"]["body"], alert

    await add_rule(w.mod, lst, "evil.example", "spam server", kind=SERVER_RULE)
    await w.mod.wait_for(w.protected[0], acl_event("evil.example"))
    acl = await w.mod.state(w.protected[0], "m.room.server_acl") or {}
    assert acl["deny"] == ["evil.example"]
    assert acl["allow"] == ["*"]
    assert w.bot.policies.server_acl()["deny"] == ["evil.example"]


# -- room rules --------------------------------------------------------------------------------


async def test_room_rule_makes_bot_refuse_invite_to_that_room(make_world: MakeWorld) -> None:
    """A configured room the bot could not join, once listed by a room rule, is not joined when the
    bot is invited to it."""
    w = await make_world()
    lst = await new_list(w)
    listed = await w.mod.create_room(name="Listed room", public=False)
    w.protected.append(listed)  # configured as protected; the bot cannot join it yet (not invited)
    await start(w, {"watch": [lst]})
    assert not w.bot.store.is_protected(listed)

    rule = await add_rule(w.mod, lst, listed, "a room for spammers", kind=ROOM_RULE)
    await rule_settled(w, lst, listed, rule, kind=ROOM_RULE)
    banned = w.bot.policies.is_room_banned(listed)
    assert banned is not None
    assert banned.list_room == lst

    await w.mod.invite(listed, w.bot_account.user_id)
    # Invites are handled before the joined rooms of the same sync batch: a command sent after
    # the invite is answered only once the invite was handled.
    await command(w, "!mod help lists")
    assert await w.mod.membership(listed, w.bot_account.user_id) == "invite"
    assert not w.bot.store.is_protected(listed)


# -- publishing --------------------------------------------------------------------------------


async def test_permanent_ban_is_published_and_unban_removes_it(make_world: MakeWorld) -> None:
    """With a publish list, ``!mod ban`` writes an m.policy.rule.user rule there and ``!mod unban``
    empties it."""
    w = await make_world()
    spammer = w.members["spammer"]
    lst = await new_list(w, publish=True)
    await start(w, {"publish": lst})
    key = f"rule:{spammer.user_id}"

    reply = await command(w, f"!mod ban {spammer.user_id} spam")
    assert "published to our policy list" in reply, reply
    rule = await w.mod.state(lst, USER_RULE, key)
    assert rule == {"entity": spammer.user_id, "recommendation": "m.ban", "reason": "spam"}

    reply = await command(w, f"!mod unban {spammer.user_id} appeal accepted")
    assert "removed from our policy list" in reply, reply
    assert await w.mod.state(lst, USER_RULE, key) == {}
    assert await w.mod.membership(w.protected[0], spammer.user_id) == "leave"


async def test_temporary_ban_is_not_published_unless_list_flag(make_world: MakeWorld) -> None:
    """A temporary ban is not written to the publish list; the same ban with --list is."""
    w = await make_world(members=("temp", "forced"))
    temp, forced = w.members["temp"], w.members["forced"]
    lst = await new_list(w, publish=True)
    await start(w, {"publish": lst})

    reply = await command(w, f"!mod ban {temp.user_id} 1h cooling off")
    assert "Banned" in reply, reply
    assert "published" not in reply, reply
    assert await w.mod.state(lst, USER_RULE, f"rule:{temp.user_id}") is None

    reply = await command(w, f"!mod ban {forced.user_id} 1h cooling off --list")
    assert "published to our policy list" in reply, reply
    rule = await w.mod.state(lst, USER_RULE, f"rule:{forced.user_id}")
    assert rule is not None
    assert rule["entity"] == forced.user_id
    assert rule["reason"] == "cooling off"


async def test_ban_in_one_room_is_not_published(make_world: MakeWorld) -> None:
    """A permanent ban narrowed with --room is not published (our list would ban everywhere)."""
    w = await make_world(rooms=2)
    spammer = w.members["spammer"]
    lst = await new_list(w, publish=True)
    await start(w, {"publish": lst})

    reply = await command(w, f"!mod ban {spammer.user_id} off-topic here --room {w.protected[0]}")
    assert "Banned" in reply, reply
    assert "published" not in reply, reply
    assert await w.mod.state(lst, USER_RULE, f"rule:{spammer.user_id}") is None
    assert await w.mod.membership(w.protected[1], spammer.user_id) == "join"


async def test_lists_create_makes_aliased_list_and_publishes_there(make_world: MakeWorld) -> None:
    """``!mod lists create #alias`` creates a list room with that alias; later bans are published to it."""
    w = await make_world()
    spammer = w.members["spammer"]
    await start(w)
    alias = f"#newlist-{w.tag}:localhost"

    reply = await command(w, f"!mod lists create {alias}")
    assert "Created the policy list" in reply, reply
    directory = await w.mod.call("GET", f"{API}/directory/room/{q(alias)}")
    room_id = directory["room_id"]
    assert room_id in reply
    assert await w.mod.join(alias) == room_id
    levels = await w.mod.state(room_id, "m.room.power_levels") or {}
    assert levels["users"].get(w.mod.user_id) == 50, levels  # moderators may edit the list too
    create = await w.mod.state(room_id, "m.room.create") or {}
    assert create.get("type") == "support.feline.policy.lists.msc.v1"

    reply = await command(w, f"!mod ban {spammer.user_id} spam")
    assert "published to our policy list" in reply, reply
    rule = await w.mod.state(room_id, USER_RULE, f"rule:{spammer.user_id}")
    assert rule is not None
    assert rule["entity"] == spammer.user_id


async def test_manual_ban_in_client_offers_publishing(make_world: MakeWorld) -> None:
    """A moderator's ban made in a normal client, with a publish list set, gets a management-room
    message offering ``!mod ban <user> --list``."""
    w = await make_world()
    spammer = w.members["spammer"]
    lst = await new_list(w, publish=True)
    await start(w, {"publish": lst})

    await w.mod.call("POST", f"{API}/rooms/{q(w.protected[0])}/ban", {"user_id": spammer.user_id, "reason": "raid"})
    offer = await w.mod.wait_for(w.management, body_contains(w.mod.user_id, "banned", spammer.user_id))
    assert f"!mod ban {spammer.user_id} --list" in offer["content"]["body"], offer
    assert await w.mod.state(lst, USER_RULE, f"rule:{spammer.user_id}") is None


# -- the lists command -------------------------------------------------------------------------


async def test_lists_watch_command_applies_rules_and_survives_restart(make_world: MakeWorld) -> None:
    """``!mod lists watch`` applies the list's rules at once; after a restart the list is still
    watched and new rules in it apply."""
    w = await make_world(members=("spammer", "second"))
    spammer, second = w.members["spammer"], w.members["second"]
    lst = await new_list(w)
    await add_rule(w.mod, lst, spammer.user_id, "listed")
    await start(w)

    reply = await command(w, f"!mod lists watch {lst}")
    assert f"Watching {lst}: 1 rules" in reply, reply
    await wait_banned(w, spammer.user_id)

    await w.stop_bot()
    await w.start_bot()
    assert w.bot.policies.is_list_room(lst)
    await add_rule(w.mod, lst, second.user_id, "listed later")
    await wait_banned(w, second.user_id)
    [infraction] = await active_policy_bans(w, second.user_id)
    assert infraction.actor == lst


async def test_lists_command_shows_each_list_with_rule_count(make_world: MakeWorld) -> None:
    """``!mod lists`` names each watched list with its number of rules, and the publish list."""
    w = await make_world()
    lst = await new_list(w)
    for number in range(3):
        await add_rule(w.mod, lst, f"@nobody{number}-{w.tag}:elsewhere.example")
    await start(w, {"watch": [lst]})

    reply = await command(w, "!mod lists")
    assert f"{list_name(w)}: 3 rules, applied, auto-unban" in reply, reply
    assert "publishing to: none" in reply, reply


async def test_lists_unwatch_stops_applying_rules_to_new_joins(make_world: MakeWorld) -> None:
    """After ``!mod lists unwatch`` a user matching its rules joins and stays; it stays unwatched
    after a restart."""
    w = await make_world()
    late = w.person("late")
    lst = await new_list(w)
    await start(w, {"watch": [lst]})
    rule = await add_rule(w.mod, lst, late.user_id, "listed")
    await rule_settled(w, lst, late.user_id, rule)
    assert w.bot.policies.ban_rules("user", late.user_id)

    reply = await command(w, f"!mod lists unwatch {lst}")
    assert f"No longer watching {lst}: 1 rules dropped" in reply, reply
    await join_settled(w, late, w.protected[0])
    assert await w.mod.membership(w.protected[0], late.user_id) == "join"

    await w.stop_bot()
    await w.start_bot()
    assert not w.bot.policies.is_list_room(lst)


async def test_lists_preview_reports_who_would_be_banned_without_banning(make_world: MakeWorld) -> None:
    """``!mod lists preview`` names the members a list would ban and bans nobody."""
    w = await make_world(members=("spammer", "bystander"))
    spammer = w.members["spammer"]
    lst = await new_list(w)
    await add_rule(w.mod, lst, spammer.user_id)
    await add_rule(w.mod, lst, "evil.example", kind=SERVER_RULE)
    await add_rule(w.mod, lst, "@*:*", key="everyone")
    await start(w)

    reply = await command(w, f"!mod lists preview {lst}")
    assert f"Preview of {lst} (3 rules)" in reply, reply
    assert f"would ban 1 current member(s): {spammer.user_id}" in reply, reply
    assert "would deny 1 server(s) in the ACL: evil.example" in reply, reply
    assert "1 rule(s) would be refused as unsafe" in reply, reply
    assert await w.mod.membership(w.protected[0], spammer.user_id) == "join"
    assert not w.bot.policies.is_list_room(lst)
    assert await w.mod.state(w.protected[0], "m.room.server_acl") is None


async def test_rule_removed_while_bot_was_down_is_lifted_at_start(make_world: MakeWorld) -> None:
    """A rule removed while the bot was stopped: at the next start the ban it caused is lifted."""
    w = await make_world()
    spammer = w.members["spammer"]
    lst = await new_list(w)
    await start(w, {"watch": [lst]})
    await add_rule(w.mod, lst, spammer.user_id, "listed")
    await wait_banned(w, spammer.user_id)

    await w.stop_bot()
    await remove_rule(w.mod, lst, spammer.user_id)
    await w.start_bot()
    await w.mod.wait_for(w.protected[0], member_event(spammer.user_id, "leave"))
    await w.mod.wait_for(w.management, body_contains("removed while I was stopped", spammer.user_id))
    assert await active_policy_bans(w, spammer.user_id) == []


async def test_configured_private_list_is_loaded_once_the_bot_is_invited(make_world: MakeWorld) -> None:
    """A configured list room the bot cannot join at start (private, not invited yet) is loaded and
    applied when the bot is invited, and does not become a protected room."""
    w = await make_world()
    spammer = w.members["spammer"]
    lst = await w.mod.create_room(name=f"Ban list {w.tag}", public=False)
    await add_rule(w.mod, lst, spammer.user_id, "listed")
    await start(w, {"watch": [lst]})
    assert not w.bot.policies.is_list_room(lst)

    await w.mod.invite(lst, w.bot_account.user_id)
    await wait_banned(w, spammer.user_id)
    assert w.bot.policies.is_list_room(lst)
    assert not w.bot.store.is_protected(lst)
