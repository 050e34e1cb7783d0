"""The policy safety filter: rules that would hit the bot, staff, everyone or our server are refused."""

from __future__ import annotations

import pytest

from policies.rules import Rule, sha256_b64
from policies.safety import PolicySafety, unsafe_reason

BOT = "@abusebot:our.example"
MOD = "@mod:partner.example"
ADMIN = "@admin:our.example"
OWN = "our.example"
MANAGEMENT = "!management:our.example"


def rule(entity: str | None, kind: str = "user", sha256: str | None = None) -> Rule:
    """A ban rule of ``kind`` for ``entity`` (or for a hash)."""
    return Rule(
        kind=kind,
        entity=entity,
        hashes={"sha256": sha256} if sha256 else {},
        recommendation="ban",
        list_room="!list:lists.example",
        state_key=f"rule:{entity}",
    )


@pytest.fixture
def safety() -> PolicySafety:
    """The filter for our bot, a moderator on another server and a room admin on ours."""
    return PolicySafety(bot_user_id=BOT, protected_users=[MOD, ADMIN], own_server=OWN, protected_rooms=[MANAGEMENT])


class TestUserRules:
    @pytest.mark.parametrize("entity", [BOT, "@AbuseBot:Our.Example", "@abuse*:our.example", "@?????bot:*"])
    def test_rule_matching_the_bot_is_unsafe(self, safety: PolicySafety, entity: str) -> None:
        """A rule naming the bot, in any case or by glob, is refused."""
        assert safety.unsafe_reason(rule(entity)) is not None

    @pytest.mark.parametrize(("entity", "who"), [(MOD, MOD), ("@MOD:partner.example", MOD), ("@ad?in:*", ADMIN)])
    def test_rule_matching_a_protected_user_is_unsafe(self, safety: PolicySafety, entity: str, who: str) -> None:
        """Moderators and room admins (passed by the caller) are never targets; the reason names them."""
        reason = safety.unsafe_reason(rule(entity))
        assert reason is not None
        assert who in reason

    @pytest.mark.parametrize("entity", ["*", "@*:*", "@*", "?*", "*:*", "@*:*.*", "@?*:?*", "*?*"])
    def test_glob_matching_every_user_is_unsafe(self, safety: PolicySafety, entity: str) -> None:
        """Globs that match any user (they hit a canary) are refused."""
        reason = safety.unsafe_reason(rule(entity))
        assert reason is not None
        assert "every user" in reason

    @pytest.mark.parametrize("entity", ["@*:our.example", "@*:OUR.example", "@?*:our.example"])
    def test_glob_matching_every_user_of_our_server_is_unsafe(self, safety: PolicySafety, entity: str) -> None:
        """A server-wide user glob for our own server is refused."""
        reason = safety.unsafe_reason(rule(entity))
        assert reason is not None
        assert "our server" in reason

    @pytest.mark.parametrize(
        "entity", ["@spammer:evil.example", "@*:evil.example", "@spam*:*", "@spammer:our.example", "@?????:x.org"]
    )
    def test_ordinary_rules_are_safe(self, safety: PolicySafety, entity: str) -> None:
        """Specific users, other servers' users and narrow globs pass, even a single user of our server."""
        assert safety.unsafe_reason(rule(entity)) is None

    def test_hashed_rule_for_a_protected_user_is_unsafe(self, safety: PolicySafety) -> None:
        """A hashed rule is compared with the hashes of the bot and the protected users."""
        assert safety.unsafe_reason(rule(None, sha256=sha256_b64(MOD))) is not None
        assert safety.unsafe_reason(rule(None, sha256=sha256_b64(BOT))) is not None
        assert safety.unsafe_reason(rule(None, sha256=sha256_b64("@spammer:evil.example"))) is None


class TestServerRules:
    @pytest.mark.parametrize("entity", [OWN, "OUR.example", "*.example", "our.*", "*"])
    def test_rule_matching_our_server_is_unsafe(self, safety: PolicySafety, entity: str) -> None:
        """Our own server is never banned (Mjolnir skips it when compiling ACLs)."""
        assert safety.unsafe_reason(rule(entity, kind="server")) is not None

    @pytest.mark.parametrize("entity", ["*", "*.*", "?*"])
    def test_glob_matching_every_server_is_unsafe(self, safety: PolicySafety, entity: str) -> None:
        """Server globs that match any server are refused."""
        assert safety.unsafe_reason(rule(entity, kind="server")) is not None

    def test_rule_matching_a_protected_users_server_is_unsafe(self, safety: PolicySafety) -> None:
        """Banning a moderator's homeserver would lock the moderator out too."""
        reason = safety.unsafe_reason(rule("partner.example", kind="server"))
        assert reason is not None
        assert MOD in reason

    def test_hashed_rule_for_our_server_is_unsafe(self, safety: PolicySafety) -> None:
        """A hashed server rule is compared with the hash of our server."""
        assert safety.unsafe_reason(rule(None, kind="server", sha256=sha256_b64(OWN))) is not None

    @pytest.mark.parametrize("entity", ["evil.example", "*.evil.example", "spam?.org"])
    def test_other_servers_are_safe(self, safety: PolicySafety, entity: str) -> None:
        """Rules for other servers pass."""
        assert safety.unsafe_reason(rule(entity, kind="server")) is None


class TestRoomRules:
    @pytest.mark.parametrize("entity", ["*", "!*", "#*", "?*"])
    def test_glob_matching_every_room_is_unsafe(self, safety: PolicySafety, entity: str) -> None:
        """Room globs that match any room are refused."""
        assert safety.unsafe_reason(rule(entity, kind="room")) is not None

    def test_rule_matching_a_protected_room_is_unsafe(self, safety: PolicySafety) -> None:
        """A protected room passed by the caller is never a target."""
        assert safety.unsafe_reason(rule("!Management:our.example", kind="room")) is not None

    def test_ordinary_room_rule_is_safe(self, safety: PolicySafety) -> None:
        """A rule for some other room passes."""
        assert safety.unsafe_reason(rule("#spam-*:evil.example", kind="room")) is None


class TestFunction:
    def test_unsafe_reason_function_applies_the_same_filter(self) -> None:
        """The one-shot function agrees with the prepared filter."""
        kwargs = {"bot_user_id": BOT, "protected_users": [MOD], "own_server": OWN}
        assert unsafe_reason(rule("@*:*"), **kwargs) is not None
        assert unsafe_reason(rule(MOD), **kwargs) is not None
        assert unsafe_reason(rule("@spammer:evil.example"), **kwargs) is None
