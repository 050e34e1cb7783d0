"""The single authorization checkpoint for commands (regression tests for Mjolnir's CVE-2025-24024)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import pytest

from abusebot import commands
from abusebot.actions import Moderation, Scope
from abusebot.audit import Message
from abusebot.commands import Authorized, CommandHandler, authorize
from abusebot.config import Config
from abusebot.events import Event, parse_event
from abusebot.ledger import Ledger
from abusebot.rooms import RoomStore
from abusebot.testing.fakes import FakeHomeserver

BOT = "@abusebot:example.org"
MOD = "@mod:example.org"
HELPER = "@helper:example.org"
FORMER = "@former:example.org"
ADMIN = "@admin:example.org"
CREATOR = "@creator:example.org"
NOBODY = "@nobody:example.org"
MANAGEMENT = "!management:example.org"
LOBBY = "!lobby:example.org"
FORUM = "!forum"
ELSEWHERE = "!elsewhere:example.org"


def state(event_type: str, content: Mapping[str, Any], state_key: str = "", sender: str = CREATOR) -> dict[str, Any]:
    """A raw state event as it appears in a sync response."""
    return {
        "type": event_type,
        "state_key": state_key,
        "sender": sender,
        "content": dict(content),
        "event_id": f"${event_type}-{state_key}",
        "origin_server_ts": 1700000000000,
    }


def room_events(
    room_version: str, users: Mapping[str, int], members: Mapping[str, str], ban: int = 50
) -> list[dict[str, Any]]:
    """Create, power levels and memberships for one room created by CREATOR."""
    events = [
        state("m.room.create", {"room_version": room_version}),
        state("m.room.power_levels", {"users": dict(users), "ban": ban, "users_default": 0}),
    ]
    events += [state("m.room.member", {"membership": m}, state_key=user) for user, m in members.items()]
    return events


def make_moderation(store: RoomStore, ledger: Ledger | None = None, api: FakeHomeserver | None = None) -> Moderation:
    """A real Moderation over ``store``, a real ledger (a spec'd mock where only authorize() runs)
    and the fake homeserver."""
    ledger = ledger if ledger is not None else create_autospec(Ledger, instance=True)
    config = Config(
        homeserver="http://127.0.0.1:8008",
        user_id=BOT,
        data_dir=Path("unused"),
        management_room=MANAGEMENT,
        protected_rooms=(LOBBY, FORUM),
        password="unused",
    )
    return Moderation(config=config, ledger=ledger, api=api or FakeHomeserver(BOT), store=store, bot_user_id=BOT)


@pytest.fixture
def store() -> RoomStore:
    """Management room (v10), two protected rooms (LOBBY v10, FORUM v12) and one unprotected room."""
    store = RoomStore()
    store.management_id = MANAGEMENT
    store.room(MANAGEMENT).apply_all(
        room_events(
            "10",
            users={BOT: 100, MOD: 50, HELPER: 49, FORMER: 100, CREATOR: 100},
            members={BOT: "join", MOD: "join", HELPER: "join", FORMER: "leave", CREATOR: "join", ADMIN: "join"},
        )
    )
    store.protect(LOBBY)
    store.room(LOBBY).apply_all(
        room_events(
            "10",
            users={BOT: 100, ADMIN: 50, HELPER: 49, CREATOR: 100},
            members={BOT: "join", ADMIN: "join", HELPER: "join", MOD: "join", NOBODY: "join", CREATOR: "join"},
        )
    )
    store.protect(FORUM)
    store.room(FORUM).apply_all(
        room_events("12", users={BOT: 100}, members={BOT: "join", ADMIN: "join", CREATOR: "join"})
    )
    store.room(ELSEWHERE).apply_all(
        room_events("10", users={BOT: 100, NOBODY: 100, MOD: 100}, members={BOT: "join", NOBODY: "join", MOD: "join"})
    )
    return store


def command(sender: str, room_id: str, body: str = "!mod status") -> Event:
    """A command message from ``sender`` in ``room_id``."""
    event = parse_event(
        {
            "event_id": f"$cmd-{sender}-{room_id}",
            "sender": sender,
            "type": "m.room.message",
            "origin_server_ts": 1700000000000,
            "content": {"msgtype": "m.text", "body": body},
        },
        room_id,
    )
    assert event is not None
    return event


class TestAuthorize:
    def test_management_moderator_commands_all_protected_rooms(self, store: RoomStore) -> None:
        """A management-room member at the moderator level is obeyed, scoped to every protected room."""
        assert authorize(command(MOD, MANAGEMENT), store, make_moderation(store)) == Authorized(
            MOD, Scope("*", (LOBBY, FORUM)), management=True
        )

    def test_management_member_below_moderator_level_is_ignored(self, store: RoomStore) -> None:
        """A management-room member one level below the moderator level is not obeyed."""
        assert authorize(command(HELPER, MANAGEMENT), store, make_moderation(store)) is None

    def test_management_member_with_default_level_is_ignored(self, store: RoomStore) -> None:
        """A plain management-room member (users_default) is not obeyed, even if admin elsewhere."""
        assert authorize(command(ADMIN, MANAGEMENT), store, make_moderation(store)) is None

    @pytest.mark.parametrize("sender", [NOBODY, MOD, BOT])
    def test_unprotected_room_is_never_obeyed(self, store: RoomStore, sender: str) -> None:
        """A command in a room the bot does not protect is ignored, even from PL 100 there or a moderator."""
        assert authorize(command(sender, ELSEWHERE), store, make_moderation(store)) is None

    def test_unknown_room_is_never_obeyed(self, store: RoomStore) -> None:
        """A command from a room the bot holds no state for is ignored."""
        assert authorize(command(MOD, "!unknown:example.org"), store, make_moderation(store)) is None

    def test_protected_room_admin_commands_that_room_only(self, store: RoomStore) -> None:
        """A protected room's user with PL ≥ ban there is obeyed, scoped to that room alone."""
        assert authorize(command(ADMIN, LOBBY), store, make_moderation(store)) == Authorized(
            ADMIN, Scope(LOBBY, (LOBBY,)), management=False
        )

    def test_protected_room_user_below_ban_level_is_ignored(self, store: RoomStore) -> None:
        """A protected room's user one level below the ban level is not obeyed."""
        assert authorize(command(HELPER, LOBBY), store, make_moderation(store)) is None

    def test_moderator_without_power_in_protected_room_is_ignored_there(self, store: RoomStore) -> None:
        """Management rank does not carry into a protected room where the moderator has no power."""
        assert authorize(command(MOD, LOBBY), store, make_moderation(store)) is None

    @pytest.mark.parametrize("room_id", [MANAGEMENT, LOBBY, FORUM])
    def test_bot_itself_is_never_obeyed(self, store: RoomStore, room_id: str) -> None:
        """The bot's own messages are never commands, though it has PL 100 everywhere."""
        assert authorize(command(BOT, room_id), store, make_moderation(store)) is None

    def test_user_who_left_management_room_is_ignored(self, store: RoomStore) -> None:
        """A moderator who left the management room loses command, even with PL 100 still in the event."""
        assert authorize(command(FORMER, MANAGEMENT), store, make_moderation(store)) is None

    def test_user_who_left_protected_room_is_ignored(self, store: RoomStore) -> None:
        """A protected room's admin who left it can no longer command for it."""
        store.room(LOBBY).apply(state("m.room.member", {"membership": "leave"}, state_key=ADMIN, sender=ADMIN))
        assert authorize(command(ADMIN, LOBBY), store, make_moderation(store)) is None

    def test_v12_creator_in_management_room_is_a_moderator(self, store: RoomStore) -> None:
        """A room v12 creator of the management room (absent from ``users``) commands everywhere."""
        store.room(MANAGEMENT).apply_all(room_events("12", users={BOT: 100}, members={CREATOR: "join"}))
        assert authorize(command(CREATOR, MANAGEMENT), store, make_moderation(store)) == Authorized(
            CREATOR, Scope("*", (LOBBY, FORUM)), management=True
        )

    def test_v12_creator_of_protected_room_commands_that_room(self, store: RoomStore) -> None:
        """A room v12 creator of a protected room (absent from ``users``) commands for that room."""
        assert authorize(command(CREATOR, FORUM), store, make_moderation(store)) == Authorized(
            CREATOR, Scope(FORUM, (FORUM,)), management=False
        )

    def test_demoted_moderator_loses_command_immediately(self, store: RoomStore) -> None:
        """Lowering a moderator's power level in the management room revokes command at once."""
        moderation = make_moderation(store)
        store.room(MANAGEMENT).apply(
            state("m.room.power_levels", {"users": {BOT: 100, MOD: 10}, "ban": 50}, sender=CREATOR)
        )
        assert authorize(command(MOD, MANAGEMENT), store, moderation) is None

    def test_unprotecting_a_room_revokes_its_admins(self, store: RoomStore) -> None:
        """Once a room is no longer protected, its admins' commands are ignored."""
        store.unprotect(LOBBY)
        assert authorize(command(ADMIN, LOBBY), store, make_moderation(store)) is None


class TestCommandHandlerChecksFirst:
    async def test_unauthorized_malformed_command_gets_no_reply(self, store: RoomStore, ledger: Ledger) -> None:
        """An unauthorized sender's malformed command is ignored silently: no usage reply is sent."""
        api = FakeHomeserver(BOT)
        handler = CommandHandler(make_moderation(store, ledger, api), store, "!mod", _no_status)
        await handler.handle(command(NOBODY, LOBBY, "!mod ban not-a-user --room"))
        await handler.drain()
        assert api.sent == []

    async def test_unauthorized_command_is_audited_as_ignored(self, store: RoomStore, ledger: Ledger) -> None:
        """An unauthorized command leaves one audit row with outcome 'ignored'."""
        handler = CommandHandler(make_moderation(store, ledger), store, "!mod", _no_status)
        await handler.handle(command(NOBODY, ELSEWHERE, "!mod ban @mod:example.org"))
        assert [(row["actor"], row["outcome"], row["room"]) for row in await ledger.audit_rows()] == [
            (NOBODY, "ignored", ELSEWHERE)
        ]

    async def test_authorized_malformed_command_gets_usage_reply(self, store: RoomStore, ledger: Ledger) -> None:
        """The same malformed command from a moderator gets a usage reply (so the silence above is real)."""
        api = FakeHomeserver(BOT)
        handler = CommandHandler(make_moderation(store, ledger, api), store, "!mod", _no_status)
        await handler.handle(command(MOD, MANAGEMENT, "!mod ban not-a-user --room"))
        await handler.drain()
        assert [(room, content["body"].splitlines()[-1]) for room, content in api.sent] == [
            (MANAGEMENT, "Usage: !mod ban <user> [duration] [reason…] [--list|--no-list]")
        ]

    @pytest.fixture
    def calls(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Records, in order, each call to commands.authorize and commands.parse_command."""
        calls: list[str] = []
        real_authorize, real_parse = commands.authorize, commands.parse_command

        def spy_authorize(*args: Any) -> Authorized | None:
            calls.append("authorize")
            return real_authorize(*args)

        def spy_parse(*args: Any) -> commands.Parsed:
            calls.append("parse_command")
            return real_parse(*args)

        monkeypatch.setattr(commands, "authorize", spy_authorize)
        monkeypatch.setattr(commands, "parse_command", spy_parse)
        return calls

    async def test_unauthorized_command_is_never_parsed(
        self, store: RoomStore, calls: list[str], ledger: Ledger
    ) -> None:
        """For an unauthorized sender, handle() calls authorize() and never parse_command()."""
        handler = CommandHandler(make_moderation(store, ledger), store, "!mod", _no_status)
        await handler.handle(command(NOBODY, LOBBY, "!mod help"))
        assert calls == ["authorize"]

    async def test_authorize_runs_before_parse_command(
        self, store: RoomStore, calls: list[str], ledger: Ledger
    ) -> None:
        """For an authorized sender, handle() calls authorize() before parse_command()."""
        handler = CommandHandler(make_moderation(store, ledger), store, "!mod", _no_status)
        await handler.handle(command(MOD, MANAGEMENT, "!mod help"))
        await handler.drain()
        assert calls == ["authorize", "parse_command"]


async def _no_status() -> Message:
    raise AssertionError("status is not requested in these tests")
