"""Spaces, in pieces: the config keys, how a Space names its children, why the store protects a
room, and the ledger's part in a sanction reaching a room protected later."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from abusebot.config import parse_config
from abusebot.ledger import Ledger
from abusebot.rooms import RoomState, RoomStore
from tests.unit.test_config import config_error, minimal


def test_protected_spaces_are_optional_and_the_rooms_may_then_be_empty() -> None:
    assert parse_config(minimal()).protected_spaces == ()
    config = parse_config(minimal(protected_rooms=None, protected_spaces=["#community:example.org"]))
    assert config.protected_rooms == ()
    assert config.protected_spaces == ("#community:example.org",)
    assert parse_config(minimal(protected_rooms=[], protected_spaces=["!space"])).protected_rooms == ()


def test_without_a_space_the_protected_rooms_are_still_required() -> None:
    error = config_error(minimal(protected_rooms=None))
    assert error.path == "protected_rooms"
    assert "missing" in str(error)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("#community:example.org", "protected_spaces"),
        ([42], "protected_spaces[0]"),
        (["community"], "protected_spaces[0]"),
        (["!ok:x", "#no server"], "protected_spaces[1]"),
        (["!management:example.org"], "protected_spaces"),
    ],
)
def test_a_bad_protected_space_names_the_key_path(value: Any, path: str) -> None:
    assert config_error(minimal(protected_spaces=value)).path == path


def space(*events: dict[str, Any], create: dict[str, Any] | None = None) -> RoomState:
    state = RoomState("!space")
    state.apply(
        {
            "type": "m.room.create",
            "state_key": "",
            "sender": "@a:x",
            "content": {"type": "m.space"} if create is None else create,
        }
    )
    for event in events:
        state.apply({"sender": "@a:x", "type": "m.space.child", **event})
    return state


def test_a_child_is_a_room_id_with_a_non_empty_via_of_server_names() -> None:
    state = space(
        {"state_key": "!b", "content": {"via": ["x"]}},
        {"state_key": "!a:x", "content": {"via": ["x", "y"], "order": "1"}},
        {"state_key": "!gone", "content": {}},  # removed, as clients remove a child
        {"state_key": "!empty", "content": {"via": []}},
        {"state_key": "!typed", "content": {"via": "x"}},  # a string, not a list
        {"state_key": "!mixed", "content": {"via": ["x", 3]}},
        {"state_key": "!blank", "content": {"via": [""]}},
        {"state_key": "#alias:x", "content": {"via": ["x"]}},  # not a room id
        {"state_key": "", "content": {"via": ["x"]}},
        {"state_key": "!" + "a" * 300, "content": {"via": ["x"]}},
    )
    assert state.space_children() == {"!a:x": ["x", "y"], "!b": ["x"]}
    assert state.is_space


def test_a_child_removed_later_is_no_longer_a_child() -> None:
    state = space({"state_key": "!b", "content": {"via": ["x"]}})
    state.apply({"type": "m.space.child", "state_key": "!b", "sender": "@a:x", "content": {}})
    assert state.space_children() == {}


def test_a_room_not_created_as_a_space_is_not_one() -> None:
    assert not space(create={}).is_space
    assert not space(create={"type": ["m.space"]}).is_space
    assert not RoomState("!never-seen").is_space


def test_a_room_stays_protected_while_any_reason_holds() -> None:
    store = RoomStore()
    store.protect("!a", origin="config")
    assert store.protect("!a", origin="space") is False  # protected already; the reason is added
    assert store.origins("!a") == ["config", "space"]
    assert store.unprotect("!a", "space") is False
    assert store.is_protected("!a")
    assert store.origins("!a") == ["config"]
    assert store.unprotect("!a", "config") is True
    assert not store.is_protected("!a")
    assert store.origins("!a") == []


def test_unprotecting_for_no_reason_in_particular_drops_every_reason() -> None:
    store = RoomStore()
    store.protect("!a", origin="space")
    store.protect("!a", origin="config")
    assert store.unprotect("!a") is True
    assert not store.is_protected("!a")


async def _mute(ledger: Ledger, subject: str = "@m:x", **fields: Any) -> int:
    inf = await ledger.add_infraction(
        subject=subject,
        kind="mute",
        scope="*",
        reason="shouting",
        actor="@mod:x",
        origin="command",
        state="active",
        undo={"rooms": {"!first": {"previous": None, "muted_level": -1}}},
        **fields,
    )
    return inf.id


async def test_two_rooms_reached_at_once_never_lose_each_other(ledger: Ledger) -> None:
    mute = await _mute(ledger)
    rooms = [f"!room{number}" for number in range(12)]
    done = await asyncio.gather(
        *(ledger.mute_reached(mute, room, {"previous": 5, "muted_level": -1}, actor="@bot:x") for room in rooms)
    )
    assert all(done)
    inf = await ledger.get_infraction(mute)
    assert inf is not None
    assert set(inf.undo["rooms"]) == {"!first", *rooms}
    assert inf.undo["rooms"]["!room3"] == {"previous": 5, "muted_level": -1}
    audit = await ledger.fetch("SELECT subject, room FROM audit WHERE action = 'mute:reached_room'")
    assert sorted(audit) == sorted(("@m:x", room) for room in rooms)


async def test_a_mute_lifted_meanwhile_is_not_reached(ledger: Ledger) -> None:
    mute = await _mute(ledger)
    await ledger.update_infraction(mute, state="expired", actor="@bot:x")
    assert await ledger.mute_reached(mute, "!late", {"previous": 0, "muted_level": -1}, actor="@bot:x") is False
    inf = await ledger.get_infraction(mute)
    assert inf is not None
    assert "!late" not in inf.undo["rooms"]


@pytest.mark.parametrize("room", ['!a"b', "!a\\b"])
async def test_a_room_id_that_cannot_be_a_json_key_is_refused_not_written(ledger: Ledger, room: str) -> None:
    mute = await _mute(ledger)
    assert await ledger.mute_reached(mute, room, {"previous": 0}, actor="@bot:x") is False
    inf = await ledger.get_infraction(mute)
    assert inf is not None
    assert set(inf.undo["rooms"]) == {"!first"}


async def test_the_sanctions_in_force_everywhere_are_the_newest_of_each_person(ledger: Ledger) -> None:
    common = {"reason": "spam", "actor": "@mod:x", "origin": "command", "state": "active"}
    old = await ledger.add_infraction(subject="@a:x", kind="ban", scope="*", **common)
    new = await ledger.add_infraction(subject="@a:x", kind="ban", scope="*", **common)
    other = await ledger.add_infraction(subject="@b:x", kind="ban", scope="*", **common)
    await ledger.add_infraction(subject="@c:x", kind="ban", scope="!one", **common)  # one room only
    lifted = await ledger.add_infraction(subject="@d:x", kind="ban", scope="*", **common)
    await ledger.update_infraction(lifted.id, state="pardoned", actor="@mod:x")
    found = await ledger.active_everywhere("ban")
    assert [inf.id for inf in found] == [new.id, other.id]
    assert old.id not in [inf.id for inf in found]
    assert await ledger.active_everywhere("mute") == []
