from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from abusebot.events import MAX_INT
from abusebot.power import CREATOR_LEVEL, PowerLevels, creators_from_create_event
from abusebot.rooms import RoomState
from abusebot.safety import Staff, can_command, refusal

BOT = "@abusebot:example.org"
MOD = "@mod:example.org"
ALICE = "@alice:example.org"
PEER = "@peer:example.org"
BOSS = "@boss:example.org"
CREATOR = "@creator:example.org"
COFOUNDER = "@cofounder:example.org"


def room(
    room_id: str,
    users: Mapping[str, Any],
    *,
    room_version: str = "10",
    creator: str = CREATOR,
    additional_creators: Sequence[str] = (),
    members: Mapping[str, str] | None = None,
) -> RoomState:
    """A RoomState built from raw create, power-level and membership state events."""
    create: dict[str, Any] = {"room_version": room_version}
    if additional_creators:
        create["additional_creators"] = list(additional_creators)
    state = RoomState(room_id)
    state.apply_all(
        [
            {"type": "m.room.create", "state_key": "", "sender": creator, "content": create},
            {"type": "m.room.power_levels", "state_key": "", "sender": creator, "content": {"users": dict(users)}},
            *(
                {"type": "m.room.member", "state_key": user, "sender": user, "content": {"membership": membership}}
                for user, membership in (members or {}).items()
            ),
        ]
    )
    return state


@pytest.fixture
def staff() -> Staff:
    """The bot, and a management room where MOD is a moderator and ALICE a plain member."""
    management = room(
        "!management:example.org",
        {BOT: 100, MOD: 50, ALICE: 0},
        members={BOT: "join", MOD: "join", ALICE: "join"},
    )
    return Staff(bot_user_id=BOT, management=management, moderator_level=50)


@pytest.fixture
def lobby() -> RoomState:
    """A protected room (v10) where the bot has PL 50, PEER 50, BOSS 100 and ALICE the default."""
    return room("!lobby:example.org", {BOT: 50, PEER: 50, BOSS: 100, CREATOR: 100})


class TestRefusal:
    def test_bot_itself(self, staff: Staff, lobby: RoomState) -> None:
        """The bot never acts on itself."""
        assert refusal(BOT, lobby, staff) == "I will not act on myself."

    def test_bot_itself_without_room(self, staff: Staff) -> None:
        """The bot never acts on itself, even in actions with no room (notes)."""
        assert refusal(BOT, None, staff) == "I will not act on myself."

    @pytest.mark.parametrize("in_room", [True, False])
    def test_moderator(self, staff: Staff, lobby: RoomState, in_room: bool) -> None:
        """A management-room moderator is exempt, in any room or none, though PL 0 in the room."""
        reason = refusal(MOD, lobby if in_room else None, staff)
        assert reason == f"{MOD} is a moderator (management room power level ≥ 50)."

    def test_power_level_equal_to_bot(self, staff: Staff, lobby: RoomState) -> None:
        """A user at the bot's own power level in the room is exempt."""
        assert refusal(PEER, lobby, staff) == f"{PEER} has power level 50 in !lobby:example.org, not below mine (50)."

    def test_power_level_above_bot(self, staff: Staff, lobby: RoomState) -> None:
        """A user above the bot's power level in the room is exempt."""
        assert refusal(BOSS, lobby, staff) == f"{BOSS} has power level 100 in !lobby:example.org, not below mine (50)."

    def test_user_below_bot_may_be_acted_on(self, staff: Staff, lobby: RoomState) -> None:
        """A user below the bot's level who is not a moderator gets no refusal."""
        assert refusal(ALICE, lobby, staff) is None

    def test_user_without_room_may_be_acted_on(self, staff: Staff) -> None:
        """With no room, only the room-independent rules apply."""
        assert refusal(BOSS, None, staff) is None

    @pytest.mark.parametrize("target", [CREATOR, COFOUNDER])
    def test_v12_creators_are_exempt(self, staff: Staff, target: str) -> None:
        """In room v12, the create event's sender and additional_creators are exempt though absent from users."""
        forum = room("!forum", {BOT: 100}, room_version="12", additional_creators=[COFOUNDER])
        assert refusal(target, forum, staff) == f"{target} created !forum (room version 12)."

    def test_v12_room_still_allows_acting_on_members(self, staff: Staff) -> None:
        """In a v12 room, an ordinary member below the bot is not exempt."""
        forum = room("!forum", {BOT: 100}, room_version="12", additional_creators=[COFOUNDER])
        assert refusal(ALICE, forum, staff) is None

    def test_pre_v12_creator_has_only_their_power_level(self, staff: Staff) -> None:
        """Before room v12, the create event's sender is not privileged by that alone."""
        old = room("!old:example.org", {BOT: 100}, room_version="11", additional_creators=[COFOUNDER])
        assert refusal(CREATOR, old, staff) is None

    def test_management_member_who_left_is_not_a_moderator(self, lobby: RoomState) -> None:
        """A former moderator who left the management room loses the exemption."""
        management = room("!management:example.org", {BOT: 100, MOD: 100}, members={BOT: "join", MOD: "leave"})
        assert refusal(MOD, lobby, Staff(BOT, management, 50)) is None

    def test_bot_with_no_power_refuses_everyone_at_default(self, staff: Staff) -> None:
        """When the bot has only the default level, equals at the default level are exempt."""
        powerless = room("!powerless:example.org", {CREATOR: 100})
        assert refusal(ALICE, powerless, staff) == (
            f"{ALICE} has power level 0 in !powerless:example.org, not below mine (0)."
        )

    def test_huge_power_level_is_clamped_and_still_exempt(self, staff: Staff) -> None:
        """A user with an absurdly large power level is clamped to the maximum and stays exempt."""
        weird = room("!weird:example.org", {BOT: 100, ALICE: 2**80})
        assert refusal(ALICE, weird, staff) == (
            f"{ALICE} has power level {MAX_INT} in !weird:example.org, not below mine (100)."
        )


class TestCanCommand:
    def test_bot_never_commands(self, staff: Staff) -> None:
        """The bot may not command itself, whatever its power."""
        assert not can_command(BOT, staff.management, staff, management=True)

    def test_moderator_commands_from_management(self, staff: Staff) -> None:
        """A management-room moderator may command from the management room."""
        assert can_command(MOD, staff.management, staff, management=True)

    def test_room_member_at_ban_level_commands_there(self, staff: Staff) -> None:
        """In a protected room, a joined member at the ban level may command."""
        lobby = room("!lobby:example.org", {BOT: 100, PEER: 50}, members={PEER: "join"})
        assert can_command(PEER, lobby, staff, management=False)

    def test_non_member_at_ban_level_does_not(self, staff: Staff) -> None:
        """Power without current membership does not allow commands."""
        lobby = room("!lobby:example.org", {BOT: 100, PEER: 50}, members={PEER: "leave"})
        assert not can_command(PEER, lobby, staff, management=False)


class TestPowerLevelsFromContent:
    @pytest.mark.parametrize("value", [True, False, 50.0, 2.5, "100", None, [100], {"level": 100}])
    def test_bogus_user_levels_are_ignored(self, value: Any) -> None:
        """A user entry that is not an integer is ignored, so the user has users_default."""
        levels = PowerLevels.from_content({"users": {ALICE: value}, "users_default": 7})
        assert levels.user_level(ALICE) == 7

    @pytest.mark.parametrize(("value", "clamped"), [(2**60, MAX_INT), (2**200, MAX_INT), (-(2**200), -MAX_INT)])
    def test_huge_user_levels_are_clamped(self, value: int, clamped: int) -> None:
        """Integers beyond the canonical JSON range are clamped to ±(2^53 - 1)."""
        assert PowerLevels.from_content({"users": {ALICE: value}}).user_level(ALICE) == clamped

    @pytest.mark.parametrize("value", [True, 75.0, "75", None, [75]])
    def test_bogus_thresholds_fall_back_to_spec_defaults(self, value: Any) -> None:
        """Non-integer ban/kick/redact/state_default levels fall back to the spec default of 50."""
        levels = PowerLevels.from_content({"ban": value, "kick": value, "redact": value, "state_default": value})
        assert (levels.ban, levels.kick, levels.redact, levels.state_default) == (50, 50, 50, 50)

    def test_bogus_event_levels_are_ignored(self) -> None:
        """Non-integer per-event levels are dropped; integer ones are kept."""
        levels = PowerLevels.from_content({"events": {"m.room.message": "10", "m.room.name": True, "m.room.topic": 5}})
        assert dict(levels.events) == {"m.room.topic": 5}

    @pytest.mark.parametrize("content", [None, "power", [1, 2], 42, {"users": ["@alice:example.org"]}])
    def test_malformed_content_gives_defaults(self, content: Any) -> None:
        """Content that is not a mapping (or users that is not one) gives the spec defaults."""
        assert PowerLevels.from_content(content) == PowerLevels()

    def test_non_string_user_keys_are_ignored(self) -> None:
        """Only string user ids are kept."""
        assert dict(PowerLevels.from_content({"users": {1: 100, ALICE: 10}}).users) == {ALICE: 10}

    def test_creators_outrank_any_clamped_level(self) -> None:
        """A v12 creator ranks above even a clamped maximum power level."""
        levels = PowerLevels.from_content({"users": {ALICE: 2**80}}, creators=[CREATOR])
        assert levels.user_level(CREATOR) == CREATOR_LEVEL > levels.user_level(ALICE)


class TestCreatorsFromCreateEvent:
    def test_v12_sender_and_additional_creators(self) -> None:
        """Room v12: the sender plus string entries of additional_creators are creators."""
        create = {
            "sender": CREATOR,
            "content": {"room_version": "12", "additional_creators": [COFOUNDER, 42, None]},
        }
        assert creators_from_create_event(create) == {CREATOR, COFOUNDER}

    @pytest.mark.parametrize("version", ["1", "10", "11", 12, None])
    def test_older_or_malformed_versions_have_no_privileged_creators(self, version: Any) -> None:
        """Before v12 (or with a non-string version) no creator is privileged."""
        create = {"sender": CREATOR, "content": {"room_version": version, "additional_creators": [COFOUNDER]}}
        assert creators_from_create_event(create) == frozenset()

    def test_unstable_hydra_versions_count(self) -> None:
        """The unstable hydra room versions that introduced privileged creators count as v12."""
        create = {"sender": CREATOR, "content": {"room_version": "org.matrix.hydra.11"}}
        assert creators_from_create_event(create) == {CREATOR}
