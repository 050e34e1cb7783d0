"""Parsing policy rules from raw state events, field by field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.rules import MAX_REASON, Removed, Rule, parse_rule, policy_kind, sha256_b64

LIST = "!list:example.org"
# MSC4205's own example: the padded base64 SHA-256 of "@yarrgh:example.com".
YARRGH_HASH = "VPqwbUV7mMMkOVto3kPwsNXXiALMs7VCKWh3OeqqjGs="


def event(content: Any, *, type: str = "m.policy.rule.user", state_key: Any = "rule:1", **extra: Any) -> dict[str, Any]:
    """A raw policy state event."""
    return {"type": type, "state_key": state_key, "content": content, "event_id": "$ev", **extra}


def ban(entity: str = "@spammer:evil.example", **content: Any) -> dict[str, Any]:
    """Content of an m.ban rule."""
    return {"entity": entity, "recommendation": "m.ban", "reason": "spam", **content}


class TestKinds:
    @pytest.mark.parametrize("kind", ["user", "room", "server"])
    @pytest.mark.parametrize("prefix", ["m.policy.rule.", "m.room.rule.", "org.matrix.mjolnir.rule."])
    def test_stable_and_legacy_types_parse_to_their_kind(self, prefix: str, kind: str) -> None:
        """All three kinds parse under the stable type and both legacy types still in use."""
        rule = parse_rule(event(ban(), type=prefix + kind), LIST)
        assert isinstance(rule, Rule)
        assert rule.kind == kind
        assert rule.event_type == prefix + kind
        assert policy_kind(prefix + kind) == kind

    def test_a_parsed_rule_keeps_its_fields(self) -> None:
        """Entity, reason, list room, state key and event id are kept; m.ban becomes "ban"."""
        assert parse_rule(event(ban()), LIST) == Rule(
            kind="user",
            entity="@spammer:evil.example",
            recommendation="ban",
            reason="spam",
            list_room=LIST,
            state_key="rule:1",
            event_type="m.policy.rule.user",
            event_id="$ev",
        )

    @pytest.mark.parametrize("type", ["m.room.message", "m.policy.rule.mxc", "m.policy.rule", "M.POLICY.RULE.USER"])
    def test_other_event_types_are_not_rules(self, type: str) -> None:
        """Events of other types are not policy rules."""
        assert parse_rule(event(ban(), type=type), LIST) is None


class TestRecommendations:
    @pytest.mark.parametrize(
        ("raw", "normalised"),
        [
            ("m.ban", "ban"),
            ("org.matrix.mjolnir.ban", "ban"),
            ("m.takedown", "takedown"),
            ("org.matrix.msc4204.takedown", "takedown"),
        ],
    )
    def test_ban_and_takedown_spellings_are_bans(self, raw: str, normalised: str) -> None:
        """m.ban, the Mjolnir spelling, and MSC4204 takedowns (stable and unstable) all ban."""
        rule = parse_rule(event(ban(recommendation=raw)), LIST)
        assert isinstance(rule, Rule)
        assert rule.recommendation == normalised
        assert rule.is_ban
        assert rule.is_takedown is (normalised == "takedown")

    @pytest.mark.parametrize(
        "raw", ["m.unban", "org.matrix.mjolnir.allow", "fi.mau.meowlnir.unban", "M.BAN", "ban", "takedown", ""]
    )
    def test_unknown_recommendation_never_bans(self, raw: str) -> None:
        """Any other recommendation is kept but is not a ban (Draupnir v3.0.0 banned on any)."""
        rule = parse_rule(event(ban(recommendation=raw)), LIST)
        assert isinstance(rule, Rule)
        assert not rule.is_ban
        assert not rule.is_takedown


class TestRemoval:
    def test_empty_content_removes_the_rule(self) -> None:
        """Empty content at a state key means the rule there was removed."""
        assert parse_rule(event({}, state_key="rule:9"), LIST) == Removed("user", "rule:9", "m.policy.rule.user", LIST)

    def test_redacted_rule_is_a_removal(self) -> None:
        """Content left with neither entity nor hashes (a redacted rule) is a removal too."""
        removed = parse_rule(event({"recommendation": "m.ban"}, type="m.room.rule.server"), LIST)
        assert removed == Removed("server", "rule:1", "m.room.rule.server", LIST)

    def test_empty_entity_is_a_removal(self) -> None:
        """An empty-string entity names nothing, as meowlnir treats it: a removal."""
        assert isinstance(parse_rule(event(ban(entity="")), LIST), Removed)


class TestMalformed:
    @pytest.mark.parametrize(
        "raw",
        [
            event(ban(entity=42)),
            event(ban(entity=None)),
            event(ban(entity=["@a:b"])),
            event(["entity", "@a:b"]),
            event("m.ban"),
            event(None),
            event({"entity": "@a:b", "reason": "no recommendation"}),
            event(ban(recommendation=1)),
            event(ban(recommendation=None)),
            event(ban(), state_key=None),
            event(ban(), state_key=7),
            {"type": "m.policy.rule.user", "content": ban()},
            {"type": 5, "state_key": "", "content": ban()},
            ["m.policy.rule.user"],
            None,
        ],
        ids=[
            "entity-int",
            "entity-null",
            "entity-list",
            "content-list",
            "content-str",
            "content-null",
            "recommendation-missing",
            "recommendation-int",
            "recommendation-null",
            "state-key-null",
            "state-key-int",
            "state-key-missing",
            "type-int",
            "event-list",
            "event-none",
        ],
    )
    def test_malformed_event_is_not_a_rule(self, raw: Any) -> None:
        """A wrongly typed field makes the event unusable, never an exception."""
        assert parse_rule(raw, LIST) is None

    @pytest.mark.parametrize("reason", [None, 5, ["x"], {"a": 1}])
    def test_reason_that_is_not_a_string_is_empty(self, reason: Any) -> None:
        """A reason of the wrong type becomes "" and the rule still applies."""
        rule = parse_rule(event(ban(reason=reason)), LIST)
        assert isinstance(rule, Rule)
        assert rule.reason == ""

    def test_reason_is_capped(self) -> None:
        """Reasons are cut to MAX_REASON characters."""
        rule = parse_rule(event(ban(reason="x" * 70_000)), LIST)
        assert isinstance(rule, Rule)
        assert len(rule.reason) == MAX_REASON

    def test_event_id_that_is_not_a_string_is_dropped(self) -> None:
        """A non-string event id is recorded as missing."""
        rule = parse_rule(event(ban(), event_id=12), LIST)
        assert isinstance(rule, Rule)
        assert rule.event_id is None


class TestHashedEntities:
    @pytest.mark.parametrize("field", ["hashes", "org.matrix.msc4205.hashes"])
    def test_hashed_rule_parses_stable_and_unstable_field(self, field: str) -> None:
        """MSC4205: a rule may carry only `hashes` (or the unstable field) with a sha256."""
        rule = parse_rule(event({field: {"sha256": YARRGH_HASH}, "recommendation": "m.takedown"}), LIST)
        assert isinstance(rule, Rule)
        assert rule.is_hashed
        assert rule.entity is None
        assert rule.hashes["sha256"] == sha256_b64("@yarrgh:example.com")

    @pytest.mark.parametrize(
        "spelling",
        [YARRGH_HASH, YARRGH_HASH.rstrip("="), YARRGH_HASH.replace("+", "-").replace("/", "_")],
        ids=["padded", "unpadded", "urlsafe"],
    )
    def test_hash_spellings_normalise_to_one_form(self, spelling: str) -> None:
        """Padded, unpadded and URL-safe base64 of the same hash are the same rule target."""
        rule = parse_rule(event({"hashes": {"sha256": spelling}, "recommendation": "m.ban"}), LIST)
        assert isinstance(rule, Rule)
        assert rule.hashes["sha256"] == sha256_b64("@yarrgh:example.com")

    @pytest.mark.parametrize(
        "hashes",
        [{"sha256": 5}, {"sha256": "not base64!"}, {"sha256": "AAAA"}, {"sha512": YARRGH_HASH}, "abc", [YARRGH_HASH]],
    )
    def test_hashes_without_a_valid_sha256_are_malformed(self, hashes: Any) -> None:
        """Hashes that are not a 32-byte base64 SHA-256 make the rule unusable."""
        assert parse_rule(event({"hashes": hashes, "recommendation": "m.ban"}), LIST) is None

    def test_plain_entity_wins_over_hashes(self) -> None:
        """When both are present the plain entity is used and the hashes are ignored."""
        rule = parse_rule(event(ban(hashes={"sha256": "garbage"})), LIST)
        assert isinstance(rule, Rule)
        assert rule.entity == "@spammer:evil.example"
        assert rule.hashes == {}


class TestRuleObject:
    def test_rule_needs_an_entity_or_a_hash(self) -> None:
        """A Rule built in code with neither entity nor sha256 is refused."""
        with pytest.raises(ValueError, match="entity or a sha256"):
            Rule(kind="user", entity=None, recommendation="ban", list_room=LIST, state_key="k")

    def test_rules_are_hashable_and_immutable(self) -> None:
        """Rules can go in sets, and their hashes mapping cannot be changed."""
        rule = Rule(
            kind="user", entity=None, hashes={"sha256": "x"}, recommendation="ban", list_room=LIST, state_key="k"
        )
        assert rule in {rule}
        with pytest.raises(TypeError):
            rule.hashes["sha256"] = "y"  # type: ignore[index]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(["entity", "recommendation", "reason", "hashes", "org.matrix.msc4205.hashes", "sha256"])


class TestNeverRaises:
    @settings(max_examples=500, deadline=None)
    @given(
        type=st.sampled_from(["m.policy.rule.user", "m.room.rule.server", "org.matrix.mjolnir.rule.room"]) | JSON,
        state_key=st.text(max_size=5) | JSON,
        content=st.dictionaries(FIELDS, JSON | st.dictionaries(FIELDS, JSON, max_size=2), max_size=4) | JSON,
    )
    def test_parse_rule_never_raises(self, type: Any, state_key: Any, content: Any) -> None:
        """Whatever JSON arrives, parse_rule returns a Rule, a Removed or None."""
        result = parse_rule({"type": type, "state_key": state_key, "content": content}, LIST)
        assert result is None or isinstance(result, Rule | Removed)
