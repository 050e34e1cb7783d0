"""Which policy rules match an entity: tiers that keep a lookup in microseconds for 100k rules.

Per kind (user, room, server), each effective rule sits in exactly one tier:

1. **exact**: rules without wildcards, in a dict keyed by the lowercased entity;
2. **hashed** (MSC4205): a dict keyed by the SHA-256 (unpadded base64). The entity's hash is
   computed once per lookup, and only when the kind has hashed rules;
3. **server index**: user globs of exactly the shape ``@*:<literal server>`` (a whole server's
   users, the usual glob), in a dict keyed by server. An id ``@x:y:z`` is looked up under ``y:z`` and ``z``,
   so the index agrees with the glob even for odd ids;
4. **other globs**: each indexed by its longest literal run (:attr:`Glob.literal`) in an
   Aho–Corasick automaton (``pyahocorasick``); one pass over the entity finds the globs whose
   required literal occurs in it. Under each literal, globs are grouped by the set of their
   *other* literal runs, every one of which a match must contain too: a group whose other runs
   are not all in the entity is dropped with a few substring tests, whatever its size, and only
   the rest are checked with their linear-time matcher. (A 255-character id against 10,000
   ReDoS-shaped globs that all share a literal with it: 56 ms before, well under 1 ms with the
   groups; an ``re2.Set`` of those globs took seconds per lookup, its DFA gives up on them.)
   When the index holds few literals (or a long entity meets at most a thousand), plain
   substring tests replace the automaton pass, whose output grows with the entity times the
   literals ending at each of its positions.
   Globs without any literal (``*``, ``?*``…) are always checked.

   A new rule costs O(1), not a rebuild: a literal added since the automaton was built is
   tested directly until :data:`REBUILD_AFTER` of them have gathered (then one rebuild, O(n),
   amortised), and a removed literal stays in the automaton, skipped, until as many have gone.

Prior art: meowlnir ``policylist/list.go`` (``byEntity``, ``byEntityHash``, a scanned list of
globs), Mjolnir ``ListRuleCache`` (literal map plus scanned globs).

A list room's state key holds at most one rule. If a list holds the same state key under several
event types (``m.policy.rule.user`` and legacy ``m.room.rule.user``), the best type is the one in
effect (:func:`policies.rules.type_quality`) and removing it brings the other back; callers that
track rules per (type, state key) should pass ``event_type`` to :meth:`RuleIndex.remove`. Rules in
different lists, or under different state keys, are independent even when their entities are
equal: removing one leaves the others.

The index applies no safety filter: pass rules through :mod:`policies.safety` before adding them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import ahocorasick

from policies.glob import Glob, compile_glob, has_wildcards
from policies.rules import KINDS, Rule, sha256_b64, type_quality

__all__ = ["RuleIndex"]

# Rules sharing a key (an entity, a hash, a server) are a "bucket": the Rule itself when it is
# alone (the common case, and the cheapest in memory), else a dict (list_room, state_key) → Rule.
_Bucket = Rule | dict[tuple[str, str], Rule]
# What one list's state key holds: one rule, or several event types' rules for the same key.
_Held = Rule | dict[str, Rule]
#: Literals added (or removed) since the automaton was built before it is rebuilt.
REBUILD_AFTER = 256
#: Substring tests find the present literals when there are at most ``SCAN_LITERALS`` of them, or
#: ``SCAN_LITERALS_LONG`` for an entity longer than ``LONG_ENTITY`` (where the automaton's output,
#: every literal ending at every position, costs more than the tests).
SCAN_LITERALS = 32
SCAN_LITERALS_LONG = 1024
LONG_ENTITY = 128
# Under one literal: the other literal runs a match needs → pattern → compiled glob.
_Groups = dict[tuple[str, ...], dict[str, Glob]]


def _others(glob: Glob) -> tuple[str, ...]:
    """The literal runs of ``glob`` besides its key literal (all must occur in a match)."""
    runs = {run for run in glob.pattern.replace("?", "*").split("*") if run}
    runs.discard(glob.literal)
    return tuple(sorted(runs, key=len, reverse=True))


def _bucket_add(table: dict[str, _Bucket], key: str, rule: Rule) -> None:
    held = table.get(key)
    if held is None:
        table[key] = rule
    elif isinstance(held, dict):
        held[rule.list_room, rule.state_key] = rule
    else:
        assert isinstance(held, Rule)
        table[key] = {(held.list_room, held.state_key): held, (rule.list_room, rule.state_key): rule}


def _bucket_remove(table: dict[str, _Bucket], key: str, rule: Rule) -> None:
    held = table.get(key)
    if held is rule:
        del table[key]
    elif isinstance(held, dict):
        slot = (rule.list_room, rule.state_key)
        if held.get(slot) is rule:
            del held[slot]
            if len(held) == 1:
                table[key] = next(iter(held.values()))


def _bucket_into(out: list[Rule], held: _Bucket | None) -> None:
    if held is None:
        return
    if isinstance(held, dict):
        out.extend(held.values())
    else:
        out.append(held)


def _in_effect(held: _Held) -> Rule:
    if isinstance(held, dict):
        return max(held.values(), key=lambda rule: type_quality(rule.event_type))
    assert isinstance(held, Rule)
    return held


class _KindIndex:
    """The four tiers for one kind of rule."""

    __slots__ = ("always", "automaton", "built", "by_literal", "exact", "fresh", "globs", "hashed", "servers", "stale")

    def __init__(self) -> None:
        self.exact: dict[str, _Bucket] = {}
        self.hashed: dict[str, _Bucket] = {}
        self.servers: dict[str, _Bucket] = {}
        # Tier 4: lowercased pattern → its rules; literal → groups of compiled globs; globs
        # without a literal (pattern → compiled glob), always checked.
        self.globs: dict[str, _Bucket] = {}
        self.by_literal: dict[str, _Groups] = {}
        self.always: dict[str, Glob] = {}
        self.automaton = ahocorasick.Automaton()
        #: Literals in the built automaton; literals added since (tested directly); literals
        #: removed since (still in the automaton, skipped).
        self.built: set[str] = set()
        self.fresh: set[str] = set()
        self.stale: set[str] = set()

    def add(self, rule: Rule) -> None:
        entity = rule.entity
        if entity is None:
            _bucket_add(self.hashed, rule.hashes["sha256"], rule)
        elif "*" not in entity and "?" not in entity:
            _bucket_add(self.exact, _folded(entity), rule)
        else:
            glob = compile_glob(entity)
            pattern = glob.pattern
            if pattern.startswith("@*:"):
                server = _server_of(glob, rule.kind)
                if server is not None:
                    _bucket_add(self.servers, server, rule)
                    return
            if pattern not in self.globs:
                literal = glob.literal
                if not literal:
                    self.always[pattern] = glob
                else:
                    groups = self.by_literal.get(literal)
                    if groups is None:
                        groups = self.by_literal[literal] = {}
                        if literal not in self.built:
                            self.fresh.add(literal)
                        self.stale.discard(literal)
                    groups.setdefault(_others(glob), {})[pattern] = glob
            _bucket_add(self.globs, pattern, rule)

    def remove(self, rule: Rule) -> None:
        entity = rule.entity
        if entity is None:
            _bucket_remove(self.hashed, rule.hashes["sha256"], rule)
        elif "*" not in entity and "?" not in entity:
            _bucket_remove(self.exact, _folded(entity), rule)
        else:
            glob = compile_glob(entity)
            server = _server_of(glob, rule.kind)
            if server is not None:
                _bucket_remove(self.servers, server, rule)
                return
            pattern, literal = glob.pattern, glob.literal
            _bucket_remove(self.globs, pattern, rule)
            if pattern in self.globs:
                return
            if not literal:
                self.always.pop(pattern, None)
                return
            groups = self.by_literal.get(literal)
            if groups is None:
                return
            others = _others(glob)
            group = groups.get(others)
            if group is not None and group.pop(pattern, None) is not None and not group:
                del groups[others]
                if not groups:
                    del self.by_literal[literal]
                    if literal in self.built:
                        self.stale.add(literal)
                    self.fresh.discard(literal)

    def match(self, entity: str, out: list[Rule]) -> None:
        folded = entity.lower()
        if self.exact:
            _bucket_into(out, self.exact.get(folded))
        if self.hashed:
            _bucket_into(out, self.hashed.get(sha256_b64(entity)))
        if self.servers and folded.startswith("@"):
            colon = folded.find(":")
            while colon >= 0:
                _bucket_into(out, self.servers.get(folded[colon + 1 :]))
                colon = folded.find(":", colon + 1)
        if self.by_literal:
            present: dict[str, bool] = {}  # substring tests of this lookup, each done once
            for literal in self._present(folded):
                for others, group in self.by_literal[literal].items():
                    if others and not all(_contains(folded, run, present) for run in others):
                        continue  # a literal every glob of the group needs is missing
                    for pattern, glob in group.items():
                        if glob.matches_folded(folded):
                            _bucket_into(out, self.globs[pattern])
        for pattern, glob in self.always.items():
            if glob.matches_folded(folded):
                _bucket_into(out, self.globs[pattern])

    def _present(self, folded: str) -> Iterable[str]:
        """The indexed literals that occur in ``folded``."""
        count = len(self.by_literal)
        if count <= SCAN_LITERALS or (count <= SCAN_LITERALS_LONG and len(folded) > LONG_ENTITY):
            return [literal for literal in self.by_literal if literal in folded]
        if len(self.fresh) > REBUILD_AFTER or len(self.stale) > REBUILD_AFTER or not self.built:
            self._rebuild()
        seen = {literal for _end, literal in self.automaton.iter(folded)}
        if self.stale:
            seen.difference_update(self.stale)
        if self.fresh:
            seen.update(literal for literal in self.fresh if literal in folded)
        return seen

    def _rebuild(self) -> None:
        """One pass over every literal: the automaton again, with nothing fresh or stale."""
        automaton = ahocorasick.Automaton()
        for literal in self.by_literal:
            automaton.add_word(literal, literal)
        automaton.make_automaton()
        self.automaton = automaton
        self.built = set(self.by_literal)
        self.fresh.clear()
        self.stale.clear()


def _contains(folded: str, run: str, present: dict[str, bool]) -> bool:
    found = present.get(run)
    if found is None:
        found = present[run] = run in folded
    return found


def _folded(entity: str) -> str:
    folded = entity.lower()
    return entity if folded == entity else folded  # keep one string object when already lowercase


def _server_of(glob: Glob, kind: str) -> str | None:
    """The server of a user glob of exactly the shape ``@*:<literal server>``, else ``None``."""
    pattern = glob.pattern
    if kind != "user" or not pattern.startswith("@*:") or len(pattern) == 3:
        return None
    server = pattern[3:]
    return None if has_wildcards(server) else server


class RuleIndex:
    """Every rule of the watched lists, for fast lookups. See the module docstring for the tiers."""

    def __init__(self) -> None:
        self._kinds = {kind: _KindIndex() for kind in KINDS}
        # (list room, kind) → state key → what that state key holds
        self._slots: dict[tuple[str, str], dict[str, _Held]] = {}
        self._count = 0

    def __len__(self) -> int:
        """How many rules are in effect (one per list room, kind and state key)."""
        return self._count

    def add(self, rule: Rule) -> Rule | None:
        """Put ``rule`` in its list's state key; return the rule it took effect over, if any.

        A rule of a lower-quality event type than the one already at that key is kept in reserve
        (it takes effect if the better one is removed) and ``None`` is returned.
        """
        where = (rule.list_room, rule.kind)
        slots = self._slots.get(where)
        if slots is None:
            slots = self._slots[where] = {}
        state_key = rule.state_key
        held = slots.get(state_key)
        if held is None:
            slots[state_key] = rule
            self._count += 1
            self._kinds[rule.kind].add(rule)
            return None
        before = _in_effect(held)
        if isinstance(held, dict):
            held[rule.event_type] = rule
        elif held.event_type == rule.event_type:
            slots[state_key] = rule
        else:
            slots[state_key] = {held.event_type: held, rule.event_type: rule}
        return self._switch(before, _in_effect(slots[state_key]))

    def remove(self, kind: str, list_room: str, state_key: str, event_type: str | None = None) -> Rule | None:
        """End what ``state_key`` in ``list_room`` held for ``kind``; return the rule that was in effect.

        With ``event_type``, only that type's rule goes (another type's rule at the same key may
        take over; ``None`` is then returned unless the one in effect changed).
        """
        slots = self._slots.get((list_room, kind))
        held = slots.get(state_key) if slots else None
        if slots is None or held is None:
            return None
        before = _in_effect(held)
        if event_type is not None and isinstance(held, dict):
            if held.pop(event_type, None) is None:
                return None
            if len(held) == 1:
                slots[state_key] = next(iter(held.values()))
            return self._switch(before, _in_effect(slots[state_key]))
        if event_type is not None and not isinstance(held, dict) and held.event_type != event_type:
            return None
        del slots[state_key]
        if not slots:
            del self._slots[list_room, kind]
        self._count -= 1
        self._kinds[kind].remove(before)
        return before

    def remove_list(self, list_room: str) -> list[Rule]:
        """Forget every rule of ``list_room`` (unwatching a list); return those that were in effect."""
        removed = self.rules_from(list_room)
        for rule in removed:
            self.remove(rule.kind, list_room, rule.state_key)
        return removed

    def rules_from(self, list_room: str) -> list[Rule]:
        """The rules of ``list_room`` that are in effect."""
        return [_in_effect(held) for kind in KINDS for held in self._slots.get((list_room, kind), {}).values()]

    def list_rooms(self) -> list[str]:
        """The list rooms that hold at least one rule."""
        return list(dict.fromkeys(list_room for list_room, _kind in self._slots))

    def match(self, kind: str, entity: str) -> list[Rule]:
        """Every rule of ``kind`` whose entity matches ``entity`` (any recommendation, any list)."""
        index = self._kinds.get(kind)
        if index is None:
            raise ValueError(f"unknown rule kind {kind!r}; expected one of {', '.join(KINDS)}")
        out: list[Rule] = []
        index.match(entity, out)
        return out

    def ban_rules_for(self, kind: str, entity: str, allow_lists: Collection[str] = frozenset()) -> list[Rule]:
        """The ban (or takedown) rules matching ``entity``; none at all when a rule of an
        allow-list (a list room in ``allow_lists``) matches it, whatever that rule recommends."""
        rules = self.match(kind, entity)
        if not rules:
            return rules
        if allow_lists and any(rule.list_room in allow_lists for rule in rules):
            return []
        return [rule for rule in rules if rule.is_ban]

    def add_all(self, rules: Iterable[Rule]) -> None:
        """Add many rules (the automaton is rebuilt once, at the next lookup)."""
        for rule in rules:
            self.add(rule)

    def _switch(self, before: Rule, after: Rule) -> Rule | None:
        if after is before:
            return None
        self._kinds[before.kind].remove(before)
        self._kinds[after.kind].add(after)
        return before
