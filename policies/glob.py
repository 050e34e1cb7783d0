"""Matrix globs, matched in time linear in the text for any pattern.

Matrix globs (spec appendix "Glob-style matching") have two wildcards: ``*`` matches any run of
characters, including an empty one, and ``?`` matches exactly one character. Everything else is
literal, including ``[``, ``]`` and ``\\``. So this is not :mod:`fnmatch`, where ``[abc]`` is a
character class. Matching ignores case: pattern and text are both lowercased with
:meth:`str.lower`, as meowlnir has done since v26.05.

**Why not translate to a regex?** Translating ``*`` to ``.*`` for Python's :mod:`re` backtracks.
``*a*a*a*a*b`` against 255 ``a``\\ s takes seconds, and each extra ``*a`` multiplies that. One
hostile entry in a third-party policy list could then freeze the bot on every lookup. Google RE2
is linear, but it costs 30–130 µs to compile each pattern and more to build its automaton on first
use. That is 0.3–1.3 s for a 10,000-glob list whose globs all become candidates at once. Its
Python ``str`` API also raises on lone surrogates, which JSON can carry.

**The algorithm.** The pattern is split at ``*`` into segments ``S0*S1*…*Sk``. Each segment is a
run of literal characters and ``?`` with a fixed length. The text matches when all of these hold:

* ``S0`` matches at the start;
* ``Sk`` matches at the end, not overlapping ``S0``;
* ``S1 … S(k-1)`` occur in order, without overlapping, in between.

Greedy placement is correct: take the leftmost occurrence of each middle segment after the
previous one. Every occurrence of a segment has the same length, so the leftmost one also ends
first. If any in-order placement exists, the rest of it still fits after the greedy choice (by
induction on k).

A segment's leftmost occurrence is found as follows:

1. :meth:`str.find` looks for the segment's longest literal run (its "anchor").
2. At each candidate start, one C-level comparison checks the segment's other literal positions:
   ``itemgetter`` on the window against a tuple.

Candidate starts only increase, within a segment and from one segment to the next. So a match
tries at most ``len(text) + k + 1`` candidates in all, each checked with O(len(segment)) C work.
Successive ``find`` calls resume after the previous candidate, so each alignment of the text is
examined at most once per segment, at O(len(anchor)) cost. There is no backtracking.

The cost is therefore O(len(text) · len(pattern)), and linear in the text for any pattern. That is
RE2's bound too. Compiling is a split and a few tuples. (RE2 timings above were measured on the
development VM; the hypothesis test checks this matcher against :func:`reference_match`.)

:func:`reference_match` is the obviously correct dynamic-programming matcher that the tests
compare against.
"""

from __future__ import annotations

import functools
from operator import itemgetter
from typing import Any

__all__ = ["Glob", "clear_caches", "compile_glob", "has_wildcards", "reference_match"]


def has_wildcards(text: str) -> bool:
    """Whether ``text`` contains a glob wildcard (``*`` or ``?``)."""
    return "*" in text or "?" in text


# A segment with `?`: (anchor, offset of the anchor, length, getter of the other literal
# positions or None, what the getter must return). The anchor is its longest literal run.
_Segment = tuple[str, int, int, "itemgetter[Any] | None", object]


@functools.lru_cache(maxsize=65536)
def _segment(segment: str) -> _Segment:
    """Prepare one fixed-length segment (segments repeat across globs, so they are cached)."""
    if "?" not in segment:
        return segment, 0, len(segment), None, None
    offset, anchor, start = 0, "", 0
    for piece in segment.split("?"):
        if len(piece) > len(anchor):
            offset, anchor = start, piece
        start += len(piece) + 1
    # The literal positions outside the anchor, checked in one C call per candidate window.
    others = [i for i, char in enumerate(segment) if char != "?" and not offset <= i < offset + len(anchor)]
    if not others:
        return anchor, offset, len(segment), None, None
    expected = tuple(segment[i] for i in others) if len(others) > 1 else segment[others[0]]
    return anchor, offset, len(segment), itemgetter(*others), expected


def _collapse_stars(pattern: str) -> str:
    while "**" in pattern:
        pattern = pattern.replace("**", "*")
    return pattern


class Glob:
    """A compiled Matrix glob. Build with :func:`compile_glob`; test with :meth:`matches`.

    ``pattern`` is the lowercased pattern with runs of ``*`` collapsed into one (same meaning).
    ``literal`` is its longest run of literal characters, which every match must contain
    (``""`` when it has none, as in ``*`` or ``?*``); the policy index uses it to find candidates.
    Segments with ``?`` are prepared on first use: most globs in a big list are never candidates.
    """

    __slots__ = ("_min_length", "_plain", "_segments", "_star", "literal", "pattern")

    def __init__(self, pattern: str) -> None:
        folded = pattern.lower()
        if "**" in folded:
            folded = _collapse_stars(folded)
        self.pattern = folded
        self._star = "*" in folded
        self._min_length = len(folded) - folded.count("*")
        self._segments: tuple[_Segment, ...] | None = None
        # Without `?`, segments are plain strings matched with startswith/endswith/find.
        self._plain: tuple[str, ...] | None
        if "?" in folded:
            self._plain = None
            self.literal = max(folded.replace("?", "*").split("*"), key=len)
        else:
            self._plain = plain = tuple(folded.split("*"))
            self.literal = max(plain, key=len)

    @property
    def is_literal(self) -> bool:
        """Whether the pattern has no wildcard (it matches one string, case-insensitively)."""
        return not self._star and "?" not in self.pattern

    def matches(self, text: str) -> bool:
        """Whether ``text`` matches, ignoring case."""
        return self.matches_folded(text.lower())

    def matches_folded(self, folded: str) -> bool:
        """Like :meth:`matches` for text that is already lowercased (the index lowercases once)."""
        size = len(folded)
        if size < self._min_length or (not self._star and size != self._min_length):
            return False
        plain = self._plain
        if plain is not None:
            if not self._star:
                return folded == self.pattern
            first, last = plain[0], plain[-1]
            # size >= len(first) + len(last), so prefix and suffix do not overlap.
            if not folded.startswith(first) or not folded.endswith(last):
                return False
            position, end = len(first), size - len(last)
            for segment in plain[1:-1]:
                found = folded.find(segment, position, end)
                if found < 0:
                    return False
                position = found + len(segment)
            return True
        segments = self._segments
        if segments is None:
            segments = self._segments = tuple(_segment(part) for part in self.pattern.split("*"))
        anchor, offset, length, getter, expected = segments[0]
        if not folded.startswith(anchor, offset) or (getter is not None and getter(folded[:length]) != expected):
            return False
        if not self._star:
            return True
        position = length
        anchor, offset, length, getter, expected = segments[-1]
        end = size - length  # >= position: size >= min_length
        if not folded.startswith(anchor, end + offset) or (getter is not None and getter(folded[end:]) != expected):
            return False
        for anchor, offset, length, getter, expected in segments[1:-1]:
            last_start = end - length  # the last start that still fits before the tail
            if last_start < position:
                return False
            if anchor:
                while True:  # candidate starts only increase: see the module docstring
                    found = folded.find(anchor, position + offset, last_start + offset + len(anchor))
                    if found < 0:
                        return False
                    start = found - offset
                    if getter is None or getter(folded[start : start + length]) == expected:
                        break
                    position = start + 1
                position = start
            position += length
        return True

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"


@functools.lru_cache(maxsize=32768)
def compile_glob(pattern: str) -> Glob:
    """Compile a Matrix glob once (cached: the index and the safety filter share compilations)."""
    return Glob(pattern)


def clear_caches() -> None:
    """Forget cached compilations (for cold-start measurements in tests and benchmarks)."""
    compile_glob.cache_clear()
    _segment.cache_clear()


def reference_match(pattern: str, text: str) -> bool:
    """Obviously-correct Matrix glob matching (for tests): dynamic programming over prefixes.

    ``row[j]`` says whether the pattern read so far matches ``text[:j]``. ``*`` matches any run,
    ``?`` exactly one character, anything else itself, ignoring case. O(len(pattern) · len(text)).
    """
    pattern, text = pattern.lower(), text.lower()
    row = [True] + [False] * len(text)
    for p in pattern:
        if p == "*":
            seen = False
            new = []
            for cell in row:
                seen = seen or cell
                new.append(seen)
        else:
            new = [False] + [row[j] and (p == "?" or p == text[j]) for j in range(len(text))]
        row = new
    return row[-1]
