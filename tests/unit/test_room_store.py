"""The room store: which rooms are protected, and which of them the bot is still joining."""

from __future__ import annotations

from abusebot.actions import Scope
from abusebot.rooms import RoomStore


def test_a_room_being_joined_is_routed_as_protected_but_out_of_reach_of_actions() -> None:
    store = RoomStore()
    store.protect("!a:x")
    store.protect("!b:x", joining=True)
    assert store.is_protected("!b:x")  # its first events, right after the join, are protections' business
    assert store.protected == ["!a:x"]  # a ban everywhere does not try a room the bot is not in
    assert Scope.everywhere(store).rooms == ("!a:x",)
    assert store.joining == 1


def test_a_joined_room_comes_into_reach_in_the_configured_order() -> None:
    store = RoomStore()
    store.protect("!b:x", joining=True)
    store.protect("!a:x")
    store.joined("!b:x")
    assert store.protected == ["!b:x", "!a:x"]
    assert store.joining == 0


def test_unprotecting_a_room_being_joined_forgets_it_entirely() -> None:
    store = RoomStore()
    store.protect("!b:x", joining=True)
    store.unprotect("!b:x")
    assert not store.is_protected("!b:x")
    assert store.joining == 0
    store.protect("!b:x")
    assert store.protected == ["!b:x"]


def test_protecting_a_joined_room_again_never_marks_it_as_joining() -> None:
    store = RoomStore()
    store.protect("!a:x")
    assert store.protect("!a:x", joining=True) is False
    assert store.protected == ["!a:x"]
