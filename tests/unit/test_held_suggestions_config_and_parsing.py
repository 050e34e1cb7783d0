"""Pure-logic probes of the suggestions feature: references, keys and the config contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from abusebot.commands import UsageError
from abusebot.config import ConfigError, load_config
from abusebot.features.suggestions import _parse_suggestion, plain_key, reference, wanted_marks


def base_config(tmp_path: Path, suggestions: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "homeserver": "http://127.0.0.1:1",
                "user_id": "@bot:localhost",
                "password": "x",
                "data_dir": str(tmp_path / "data"),
                "management_room": "!mgmt:localhost",
                "protected_rooms": ["!prot:localhost"],
                "suggestions": suggestions,
            }
        )
    )
    return path


@pytest.mark.parametrize("word", ["#²", "²", "#¹²", "#٣", "#１"])
def test_unicode_digit_references_never_crash_the_parser(word: str) -> None:
    """``!mod suggestion #² approved``: a usage error (or a number), never a ValueError."""
    try:
        parsed = _parse_suggestion("suggestion", [word, "approved"], None, frozenset())
    except UsageError:
        return
    ref = reference(parsed.words[0])
    assert ref is None or isinstance(ref, (int, str))


def test_reference_forms() -> None:
    assert reference("#0") == 0
    assert reference("#999999") == 999999
    assert reference("garbage") is None
    assert reference("https://matrix.to/#/!r:localhost/$abc-DEF_1?via=localhost") == "$abc-DEF_1"
    assert reference("https://matrix.to/#/%21r%3Alocalhost/%24abc%2Bd%2Fe") == "$abc+d/e"
    assert reference("matrix:roomid/r:localhost/e/abcDEF?via=localhost") == "$abcDEF"
    assert reference("123456789012345") is None  # too long to be a number, no event id


def test_plain_key_variation_selectors() -> None:
    assert plain_key("👍\ufe0f") == "👍"
    assert plain_key(" 👍 ") == "👍"


def test_wanted_marks() -> None:
    assert wanted_marks("open", False) == set()
    assert wanted_marks("discussing", True) == {"🟠"}
    assert wanted_marks("approved", True) == {"🟢"}
    assert wanted_marks("denied", False) == {"🔴"}
    assert wanted_marks("implemented", True) == {"🔵", "🟢"}
    assert wanted_marks("implemented", False) == {"🔵"}


def test_config_rejects_the_management_room_as_the_suggestions_room(tmp_path: Path) -> None:
    """Every moderator's message (every command) would become a suggestion and get 👍 👎."""
    with pytest.raises(ConfigError):
        load_config(base_config(tmp_path, {"room": "!mgmt:localhost"}))


def test_config_rejects_a_state_mark_as_a_vote_reaction(tmp_path: Path) -> None:
    """🟢 as a vote: every member's vote would be ignored-as-state or a staff's state would be a
    vote, and the bot's own 🟢 vote reaction collides with its 🟢 approved mark (a duplicate
    annotation the homeserver refuses)."""
    with pytest.raises(ConfigError):
        load_config(base_config(tmp_path, {"room": "!s:localhost", "vote_reactions": ["🟢", "🔴"]}))


def test_config_rejects_vote_reactions_equal_after_variation_selectors(tmp_path: Path) -> None:
    """["👍", "👍️"] are one vote key for the counting but two reactions of the bot."""
    with pytest.raises(ConfigError):
        load_config(base_config(tmp_path, {"room": "!s:localhost", "vote_reactions": ["👍", "👍\ufe0f"]}))


def test_config_accepts_an_alias(tmp_path: Path) -> None:
    cfg = load_config(base_config(tmp_path, {"room": "#ideas:localhost", "threshold": 0}))
    assert cfg.suggestions.room == "#ideas:localhost"
    assert cfg.suggestions.threshold == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"threshold": -1},
        {"threshold": "ten"},
        {"vote_reactions": []},
        {"vote_reactions": "👍"},
        {"vote_reactions": [1]},
        {"room": 5},
        {"room": "not a room"},
        {"colour": "red"},
    ],
)
def test_config_rejects_bad_values(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ConfigError):
        load_config(base_config(tmp_path, {"room": "!s:localhost", **bad}))
