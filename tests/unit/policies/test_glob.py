"""Matrix glob semantics, agreement with the reference matcher, and linear time on hostile input."""

from __future__ import annotations

import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from policies.glob import compile_glob, reference_match

# Small alphabets make collisions between pattern and text likely, so both outcomes get exercised.
PATTERN_ALPHABET = "ab*?[]\\.@:A"
TEXT_ALPHABET = "abAB[]\\.@:*?é\n"


class TestSemantics:
    @pytest.mark.parametrize(
        ("pattern", "text", "expected"),
        [
            ("@*:example.org", "@alice:example.org", True),
            ("@*:example.org", "@:example.org", True),
            ("@*:example.org", "@alice:example.org.evil", False),
            ("@*:example.org", "@alice:sub.example.org", False),
            ("*.example.org", "matrix.example.org", True),
            ("*.example.org", "example.org", False),
            ("#*:example.org", "#room:example.org", True),
        ],
    )
    def test_spec_examples(self, pattern: str, text: str, expected: bool) -> None:
        """The spec's examples: `*` stands for any run of characters, possibly empty."""
        assert compile_glob(pattern).matches(text) is expected

    def test_question_mark_is_exactly_one_character(self) -> None:
        """`?` matches one character: not zero, not two."""
        glob = compile_glob("@a?c:x")
        assert glob.matches("@abc:x")
        assert not glob.matches("@ac:x")
        assert not glob.matches("@abbc:x")

    def test_question_mark_counts_a_non_ascii_character_as_one(self) -> None:
        """`?` matches one character even when it is several UTF-8 bytes (or a lone surrogate)."""
        assert compile_glob("@?:x").matches("@é:x")
        assert compile_glob("@?:x").matches("@\U0001f600:x")
        assert compile_glob("@?:x").matches("@\ud800:x")
        assert not compile_glob("@?:x").matches("@\ud800\udc00:x")

    def test_brackets_are_literal(self) -> None:
        """`[abc]` is not a character class (unlike fnmatch): it matches only the literal text."""
        glob = compile_glob("@[abc]:x")
        assert glob.matches("@[abc]:x")
        assert not glob.matches("@a:x")
        assert not glob.matches("@b:x")

    def test_backslash_and_regex_metacharacters_are_literal(self) -> None:
        """Backslashes, dots and other regex syntax in a glob mean themselves."""
        assert compile_glob("a\\*").matches("a\\anything")
        assert not compile_glob("a\\*").matches("a*")
        assert compile_glob("a.c?").matches("a.cd")
        assert not compile_glob("a.c?").matches("abcd")
        assert compile_glob("(x|y)+?").matches("(x|y)+!")

    def test_matching_ignores_case(self) -> None:
        """Pattern and text are compared case-insensitively, with and without wildcards."""
        assert compile_glob("@*:EXAMPLE.org").matches("@Alice:example.ORG")
        assert compile_glob("@Spam?:x").matches("@SPAM1:X")
        assert compile_glob("@Bob:x").matches("@bOB:X")

    def test_star_matches_newlines(self) -> None:
        """`*` and `?` match any character, newlines included."""
        assert compile_glob("a*b").matches("a\n\nb")
        assert compile_glob("a?b").matches("a\nb")

    def test_consecutive_stars_mean_one_star(self) -> None:
        """`a**b` behaves like `a*b`."""
        assert compile_glob("a**b").pattern == "a*b"
        assert compile_glob("a***b").matches("ab")

    def test_prefix_and_suffix_may_not_overlap(self) -> None:
        """`ab*ba` needs at least four characters: `aba` shares its middle `b` and does not match."""
        assert not compile_glob("ab*ba").matches("aba")
        assert compile_glob("ab*ba").matches("abba")

    @pytest.mark.parametrize(
        ("pattern", "literal"),
        [("@spam*:*", "@spam"), ("*bad*", "bad"), ("@?????:x.org", ":x.org"), ("*", ""), ("?*?", "")],
    )
    def test_longest_literal_run(self, pattern: str, literal: str) -> None:
        """Each glob exposes the longest literal run every match must contain (`""` if none)."""
        assert compile_glob(pattern).literal == literal


class TestAgreesWithReference:
    @settings(max_examples=2000, deadline=None)
    @given(
        pattern=st.text(alphabet=PATTERN_ALPHABET, max_size=10),
        text=st.text(alphabet=TEXT_ALPHABET, max_size=14),
    )
    @example(pattern="ab*ba", text="aba")
    @example(pattern="*a?", text="a")
    @example(pattern="[?]", text="[é]")
    def test_compiled_glob_agrees_with_reference_matcher(self, pattern: str, text: str) -> None:
        """For any pattern and text, the fast matcher and the dynamic-programming reference agree."""
        assert compile_glob(pattern).matches(text) == reference_match(pattern, text)

    @settings(max_examples=500, deadline=None)
    @given(pattern=st.text(alphabet=PATTERN_ALPHABET, max_size=8), data=st.data())
    def test_text_built_from_the_pattern_matches(self, pattern: str, data: st.DataObject) -> None:
        """Text made by filling each wildcard with legal characters always matches (the reference too)."""
        pieces = []
        for char in pattern:
            if char == "*":
                pieces.append(data.draw(st.text(alphabet=TEXT_ALPHABET, max_size=4)))
            elif char == "?":
                pieces.append(data.draw(st.sampled_from(TEXT_ALPHABET)))
            else:
                pieces.append(char.upper() if data.draw(st.booleans()) else char)
        text = "".join(pieces)
        assert compile_glob(pattern).matches(text)
        assert reference_match(pattern, text)


HOSTILE = [
    ("*a*a*a*a*a*b", "a" * 255),
    ("*a*a*a*a*a*a*a*a*a*a*a*a*b", "a" * 255),
    ("*a" * 60 + "*b", "a" * 255),
    ("*aaaaaaaaaa*aaaaaaaaaa*aaaaaaaaaa*b", "a" * 255),
    ("?*?*?*?*?*?*?*?*?*b", "a" * 255),
    ("*a?a*a?a*a?a*a?a*b", "a" * 255),
    ("@*:*a*a*a*a*a*a*:b", "@" + "a" * 252 + ":c"),
    ("*" + "?" * 200 + "b", "a" * 255),
    ("*" + "a?" * 60 + "*b", "a" * 255),
    # Hostile to this matcher: the anchor occurs everywhere, the rest of the segment never fits.
    ("*a?b*a", "a" * 255),
    ("*a" + "?" * 40 + "b*a", "a" * 255),
    ("*" + "a?b*" * 30 + "a", "ab" * 127 + "a"),
    ("*" + "a?a?a?a?c*" * 10 + "a", "a" * 255),
]


class TestWorstCase:
    @pytest.mark.parametrize(("pattern", "text"), HOSTILE, ids=[p[:24] for p, _ in HOSTILE])
    def test_hostile_glob_matches_within_a_millisecond(self, pattern: str, text: str) -> None:
        """A hostile glob against a 255-character id takes at most 1 ms (best of 5: a deterministic bound).

        Naive `*` → `.*` translation takes seconds to minutes here (catastrophic backtracking).
        """
        glob = compile_glob(pattern)
        assert glob.matches(text) is False
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            glob.matches(text)
            best = min(best, time.perf_counter() - start)
        assert best <= 0.001, f"{pattern!r} took {best * 1e3:.3f} ms"
