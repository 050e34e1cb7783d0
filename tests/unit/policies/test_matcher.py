"""The rule index: every tier finds what a plain scan finds, removals are exact, allow-lists win."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import matcher
from policies.glob import clear_caches, reference_match
from policies.matcher import RuleIndex
from policies.rules import Rule, sha256_b64

LIST = "!list:example.org"
OTHER = "!other:example.org"
ALLOW = "!allow:example.org"


def rule(
    entity: str | None,
    *,
    kind: str = "user",
    recommendation: str = "ban",
    list_room: str = LIST,
    state_key: str | None = None,
    event_type: str | None = None,
    sha256: str | None = None,
) -> Rule:
    """A rule; the state key defaults to one derived from the entity, like Mjolnir's `rule:<entity>`."""
    return Rule(
        kind=kind,
        entity=entity,
        hashes={"sha256": sha256} if sha256 else {},
        recommendation=recommendation,
        list_room=list_room,
        state_key=state_key if state_key is not None else f"rule:{entity or sha256}",
        event_type=event_type or f"m.policy.rule.{kind}",
    )


def index_of(*rules: Rule) -> RuleIndex:
    """An index holding ``rules``."""
    index = RuleIndex()
    index.add_all(rules)
    return index


class TestTiers:
    def test_exact_entity_matches_ignoring_case(self) -> None:
        """A literal user id matches itself in any case, and nothing else."""
        spammer = rule("@Spammer:evil.example")
        index = index_of(spammer)
        assert index.match("user", "@spammer:EVIL.example") == [spammer]
        assert index.match("user", "@spammer2:evil.example") == []

    def test_server_wide_user_glob_matches_every_user_of_that_server(self) -> None:
        """`@*:server` matches the server's users and not users of look-alike servers."""
        everyone_there = rule("@*:evil.example")
        index = index_of(everyone_there)
        assert index.match("user", "@anyone:Evil.Example") == [everyone_there]
        assert index.match("user", "@anyone:evil.example.org") == []
        assert index.match("user", "@anyone:notevil.example") == []

    def test_server_wide_glob_agrees_with_glob_for_ids_with_extra_colons(self) -> None:
        """`@*:b` matches `@a:x:b` (the `*` takes `a:x`) and `@*:x:b` matches it too."""
        short, with_port = rule("@*:b"), rule("@*:x:b")
        index = index_of(short, with_port)
        assert sorted(r.entity or "" for r in index.match("user", "@a:x:b")) == ["@*:b", "@*:x:b"]

    @pytest.mark.parametrize(
        ("pattern", "hit", "miss"),
        [
            ("@spam*:*", "@spambot99:any.example", "@nospam:any.example"),
            ("*bad*", "@verybadguy:x.org", "@good:x.org"),
            ("@?????:x.org", "@abcde:x.org", "@abcdef:x.org"),
            ("@[x]*:y", "@[x]1:y", "@x1:y"),
            ("?*", "@a:b", ""),
        ],
    )
    def test_other_globs_match(self, pattern: str, hit: str, miss: str) -> None:
        """Globs outside the server index, with or without a literal part, are found."""
        glob_rule = rule(pattern)
        index = index_of(glob_rule, rule("@unrelated:x.org"), rule("@*:elsewhere.org"))
        assert index.match("user", hit) == [glob_rule]
        assert index.match("user", miss) == []

    def test_server_rules_match_server_names(self) -> None:
        """Server rules match server names, literally or by glob; user rules are not consulted."""
        subdomains, exact = rule("*.evil.example", kind="server"), rule("bad.example", kind="server")
        index = index_of(subdomains, exact, rule("@*:bad.example"))
        assert index.match("server", "matrix.evil.example") == [subdomains]
        assert index.match("server", "BAD.example") == [exact]
        assert index.match("server", "evil.example") == []

    def test_room_rules_match_ids_and_aliases(self) -> None:
        """Room rules match room ids and aliases."""
        by_id, by_alias = rule("!abc:x.org", kind="room"), rule("#spam-*:x.org", kind="room")
        index = index_of(by_id, by_alias)
        assert index.match("room", "!abc:x.org") == [by_id]
        assert index.match("room", "#spam-central:x.org") == [by_alias]
        assert index.match("user", "!abc:x.org") == []

    def test_hashed_entity_matches_the_entity_it_hashes(self) -> None:
        """An MSC4205 rule matches the user whose id hashes to it, exactly."""
        hashed = rule(None, sha256=sha256_b64("@yarrgh:example.com"))
        index = index_of(hashed)
        assert index.match("user", "@yarrgh:example.com") == [hashed]
        assert index.match("user", "@other:example.com") == []

    def test_one_entity_matches_rules_from_every_tier(self) -> None:
        """An id matched by an exact, a hashed, a server-wide and a general glob rule gets all four."""
        uid = "@spammer:evil.example"
        rules = [rule(uid), rule(None, sha256=sha256_b64(uid)), rule("@*:evil.example"), rule("@spam*:*")]
        assert sorted(index_of(*rules).match("user", uid), key=rules.index) == rules

    def test_unknown_kind_is_an_error(self) -> None:
        """Asking for a kind that does not exist is a programming error, not "no match"."""
        with pytest.raises(ValueError, match="unknown rule kind"):
            RuleIndex().match("users", "@a:b")


class TestBans:
    def test_unknown_recommendation_is_matched_but_never_a_ban(self) -> None:
        """A matching rule with another recommendation is reported by match, not by ban_rules_for."""
        odd = rule("@x:y", recommendation="org.matrix.mjolnir.allow")
        index = index_of(odd)
        assert index.match("user", "@x:y") == [odd]
        assert index.ban_rules_for("user", "@x:y") == []

    def test_takedown_is_a_ban(self) -> None:
        """MSC4204 takedowns are returned with the bans."""
        takedown = rule("@x:y", recommendation="takedown")
        assert index_of(takedown).ban_rules_for("user", "@x:y") == [takedown]

    def test_allow_list_entry_overrides_bans_from_other_lists(self) -> None:
        """A matching rule in an allow-list cancels every ban for that entity."""
        index = index_of(rule("@*:evil.example"), rule("@friend:evil.example", list_room=ALLOW))
        assert index.ban_rules_for("user", "@friend:evil.example", {ALLOW}) == []
        assert len(index.ban_rules_for("user", "@foe:evil.example", {ALLOW})) == 1

    def test_allow_list_only_counts_when_marked(self) -> None:
        """The same room's rules are ordinary bans when it is not passed as an allow-list."""
        friend = rule("@friend:evil.example", list_room=ALLOW)
        assert index_of(friend).ban_rules_for("user", "@friend:evil.example", set()) == [friend]


class TestRemoval:
    def test_same_entity_in_two_lists_survives_removal_from_one(self) -> None:
        """Removing one list's rule leaves the other list's rule for the same entity."""
        first, second = rule("@dup:x.org"), rule("@dup:x.org", list_room=OTHER)
        index = index_of(first, second)
        assert index.remove("user", LIST, first.state_key) == first
        assert index.match("user", "@dup:x.org") == [second]

    @pytest.mark.parametrize("entity", ["@dup:x.org", "@*:x.org", "@dup*:x.org", "@*", None])
    def test_same_entity_under_two_state_keys_survives_removal_of_one(self, entity: str | None) -> None:
        """Two state keys of one list naming the same entity are two rules, in every tier."""
        sha = sha256_b64("@dup:x.org") if entity is None else None
        first, second = rule(entity, state_key="a", sha256=sha), rule(entity, state_key="b", sha256=sha)
        index = index_of(first, second)
        index.remove("user", LIST, "a")
        assert index.match("user", "@dup:x.org") == [second]
        index.remove("user", LIST, "b")
        assert index.match("user", "@dup:x.org") == []
        assert len(index) == 0

    def test_new_content_at_a_state_key_replaces_the_old_rule(self) -> None:
        """A state key holds one rule: new content there retires the old entity."""
        old, new = rule("@old:x.org", state_key="k"), rule("@new:x.org", state_key="k")
        index = RuleIndex()
        index.add(old)
        assert index.add(new) == old
        assert index.match("user", "@old:x.org") == []
        assert index.match("user", "@new:x.org") == [new]
        assert len(index) == 1

    def test_same_state_key_in_different_kinds_are_different_rules(self) -> None:
        """A user rule and a server rule may share a state key; removing one keeps the other."""
        user, server = rule("@a:x.org", state_key="k"), rule("x.org", kind="server", state_key="k")
        index = index_of(user, server)
        index.remove("server", LIST, "k")
        assert index.match("user", "@a:x.org") == [user]
        assert index.match("server", "x.org") == []

    def test_stable_type_takes_precedence_and_legacy_returns_on_its_removal(self) -> None:
        """The same state key under a legacy type is in reserve while the stable type is present."""
        legacy = rule("@legacy:x.org", state_key="k", event_type="org.matrix.mjolnir.rule.user")
        stable = rule("@stable:x.org", state_key="k", event_type="m.policy.rule.user")
        index = index_of(legacy, stable)
        assert index.match("user", "@legacy:x.org") == []
        assert index.match("user", "@stable:x.org") == [stable]
        index.remove("user", LIST, "k", "org.matrix.mjolnir.rule.user")
        assert index.match("user", "@stable:x.org") == [stable]
        index.add(legacy)
        assert index.remove("user", LIST, "k", "m.policy.rule.user") == stable
        assert index.match("user", "@legacy:x.org") == [legacy]
        assert len(index) == 1

    def test_removing_a_missing_rule_changes_nothing(self) -> None:
        """Removing an unknown state key, list, or event type is a no-op."""
        kept = rule("@a:x.org", state_key="k")
        index = index_of(kept)
        assert index.remove("user", LIST, "nope") is None
        assert index.remove("user", OTHER, "k") is None
        assert index.remove("user", LIST, "k", "m.room.rule.user") is None
        assert index.match("user", "@a:x.org") == [kept]

    def test_watch_then_unwatch_leaves_the_index_empty(self) -> None:
        """Unwatching a list removes all its rules (Mjolnir's unwatch re-added them instead)."""
        rules = [
            rule("@a:x.org"),
            rule("@*:y.org"),
            rule("@z*:*"),
            rule("*", kind="server"),
            rule("*.bad", kind="room"),
        ]
        index = index_of(*rules, rule("@keep:x.org", list_room=OTHER))
        assert sorted(index.rules_from(LIST), key=rules.index) == rules
        assert sorted(index.remove_list(LIST), key=rules.index) == rules
        assert index.rules_from(LIST) == []
        assert index.list_rooms() == [OTHER]
        assert len(index) == 1
        for probe in ("@a:x.org", "@b:y.org", "@zed:q", "anything"):
            assert index.match("user", probe) == []
        assert index.match("server", "a.b") == []


ENTITY_ALPHABET = "ab@:*?."
USER_ALPHABET = "abAB@:."


class TestAgreesWithScan:
    @settings(max_examples=300, deadline=None)
    @given(
        entities=st.lists(st.text(alphabet=ENTITY_ALPHABET, min_size=1, max_size=7), max_size=12),
        removed=st.sets(st.integers(min_value=0, max_value=11)),
        probes=st.lists(st.text(alphabet=USER_ALPHABET, max_size=8), min_size=1, max_size=8),
    )
    def test_index_finds_exactly_what_a_scan_finds(
        self, entities: list[str], removed: set[int], probes: list[str]
    ) -> None:
        """After adds and removals, match() equals scanning every remaining rule with the reference matcher."""
        rules = [rule(entity, state_key=str(i), list_room=(LIST, OTHER)[i % 2]) for i, entity in enumerate(entities)]
        index = index_of(*rules)
        for i in removed & set(range(len(rules))):
            index.remove("user", rules[i].list_room, str(i))
        remaining = [r for i, r in enumerate(rules) if i not in removed]
        assert len(index) == len(remaining)
        for probe in probes:
            found = index.match("user", probe)
            expected = [r for r in remaining if r.entity is not None and reference_match(r.entity, probe)]
            assert sorted(found, key=rules.index) == expected


def hostile_glob(i: int) -> str:
    """The i-th of 10,000 distinct globs shaped to make a backtracking matcher explode.

    One in ten shares its longest literal (a run of `a`) with the probe id, so it is a candidate
    that must really be checked; the others are pruned by the literal index.
    """
    reps = 3 + i % 8
    if i % 10 == 0:
        return "*" + "a" * (1 + (i // 10) % 100) + "*a?" * reps + "*:b*a" + "?" * (i // 1000)
    return "*a" * reps + f"*b{i}" if i % 2 else "*a?a" * reps + f"*{i}b"


class TestWorstCase:
    def test_ten_thousand_hostile_globs_build_linearly_and_match_a_long_id_quickly(self) -> None:
        """10,000 hostile globs: a 255-character id matches in < 50 ms CPU, and building is linear.

        Best of three cold runs. The build bound is loose on purpose: it is O(n) work of a few µs
        per glob (35–80 ms on a loaded 2-vCPU machine); rebuilding the automaton on every add, the
        quadratic mistake, takes about a second.
        """
        rules = [rule(hostile_glob(i), state_key=str(i)) for i in range(10_000)]
        uid = "@" + "a" * 250 + ":a.a"
        builds, matches = [], []
        for _ in range(3):
            clear_caches()
            start = time.process_time()
            index = RuleIndex()
            index.add_all(rules)
            built = time.process_time()
            assert index.match("user", uid) == []
            matched = time.process_time()
            builds.append((built - start) * 1e3)
            matches.append((matched - built) * 1e3)
        assert min(matches) < 50, f"match took {min(matches):.1f} ms"
        assert min(builds) < 500, f"build took {min(builds):.1f} ms"


#: Enough distinct literals that lookups go through the automaton, not substring tests.
FILLER = [rule(f"@*filler{i}x*:x", state_key=f"filler{i}") for i in range(40)]


class TestIncrementalAutomaton:
    @settings(max_examples=200, deadline=None)
    @given(
        steps=st.lists(
            st.tuples(
                st.sampled_from(["add", "remove", "probe"]),
                st.text(alphabet=ENTITY_ALPHABET, min_size=1, max_size=7),
                st.integers(min_value=0, max_value=9),
            ),
            max_size=30,
        ),
        rebuild_after=st.integers(min_value=0, max_value=4),
    )
    def test_adds_and_removes_between_lookups_find_what_a_scan_finds(
        self, steps: list[tuple[str, str, int]], rebuild_after: int
    ) -> None:
        """Literals added after the automaton was built (tested directly) and removed ones (still in
        it, skipped) never change what a lookup finds, whenever the rebuild comes."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(matcher, "REBUILD_AFTER", rebuild_after)
            self._check(steps)

    def _check(self, steps: list[tuple[str, str, int]]) -> None:
        index = index_of(*FILLER)
        index.match("user", "@warm:x")  # the automaton is built now
        live: dict[str, Rule] = {}
        for action, entity, slot in steps:
            key = f"slot{slot}"
            if action == "add":
                live[key] = rule(entity, state_key=key)
                index.add(live[key])
            elif action == "remove":
                index.remove("user", LIST, key)
                live.pop(key, None)
            else:
                probe = entity.replace("*", "a").replace("?", "b")
                expected = [r for r in (*FILLER, *live.values()) if reference_match(r.entity or "", probe)]
                assert sorted(index.match("user", probe), key=lambda r: r.state_key) == sorted(
                    expected, key=lambda r: r.state_key
                )

    def test_a_new_glob_after_a_big_build_does_not_rebuild_the_automaton(self) -> None:
        """One glob added to an index of many: the next lookup tests its literal directly and keeps
        the built automaton (a rebuild per new rule is what made a rule cost O(rules loaded))."""
        index = index_of(*(rule(f"@*lit{i}*:x", state_key=str(i)) for i in range(2000)))
        index.match("user", "@warm:x")
        built = index._kinds["user"].automaton
        index.add(rule("@*brandnew*:x", state_key="new"))
        assert [r.state_key for r in index.match("user", "@a-brandnew-b:x")] == ["new"]
        assert index._kinds["user"].automaton is built

    def test_a_group_missing_one_literal_is_dropped_but_a_matching_one_is_kept(self) -> None:
        """Globs sharing a key literal but needing another run the id lacks are not matched; the one
        whose other runs are all there is."""
        index = index_of(
            rule("*aaaa*:b*", state_key="needs-colon-b"), rule("*aaaa*:a*", state_key="needs-colon-a"), *FILLER
        )
        assert [r.state_key for r in index.match("user", "@" + "a" * 250 + ":a.a")] == ["needs-colon-a"]
