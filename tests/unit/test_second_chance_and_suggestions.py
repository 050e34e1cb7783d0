"""The pure parts of second chances and suggestions: the members' grammar, how a suggestion is
named, which state reactions the bot should have."""

from __future__ import annotations

import pytest

from abusebot.features.second_chance import parse_request
from abusebot.features.suggestions import MARKS, plain_key, reference, wanted_marks


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("second chance I am sorry", "I am sorry"),
        ("Second-Chance: I read the rules", "I read the rules"),
        ("SECOND   CHANCE, please", "please"),
        ("second chance", ""),
        ("second\u200b chance zero-width", "zero-width"),
        ("second chance\nline two", "line two"),
    ],
)
def test_a_second_chance_request_is_read_in_the_forms_people_type(text: str, why: str) -> None:
    assert parse_request(text) == why


@pytest.mark.parametrize("text", ["I want a second chance", "second chances are rare", "secondchance", "appeal #3"])
def test_other_messages_are_not_second_chance_requests(text: str) -> None:
    assert parse_request(text) is None


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("#12", 12),
        ("12", 12),
        ("$abc123:example.org", "$abc123:example.org"),
        ("$AbC_-x", "$AbC_-x"),
        ("https://matrix.to/#/!room:example.org/$ev_1?via=example.org", "$ev_1"),
        ("https://matrix.to/#/%21room%3Aexample.org/%24ev_2%3Aexample.org", "$ev_2:example.org"),
        ("matrix:roomid/room:example.org/e/ev_3?via=example.org", "$ev_3"),
        ("garbage", None),
        ("#", None),
    ],
)
def test_a_suggestion_is_named_by_number_event_id_or_link(text: str, found: str | int | None) -> None:
    assert reference(text) == found


def test_the_marks_follow_the_policy() -> None:
    """🟠 while discussed; approved 🟢; implemented 🔵 (with 🟢 when it was approved); denied 🔴."""
    assert wanted_marks("open", False) == set()
    assert wanted_marks("discussing", False) == {MARKS["discussing"]}
    assert wanted_marks("approved", True) == {"🟢"}
    assert wanted_marks("implemented", True) == {"🔵", "🟢"}
    assert wanted_marks("implemented", False) == {"🔵"}
    assert wanted_marks("denied", False) == {"🔴"}


def test_a_variation_selector_does_not_make_another_vote() -> None:
    assert plain_key("👍\ufe0f") == plain_key("👍") == "👍"
