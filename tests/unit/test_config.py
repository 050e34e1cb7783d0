from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from abusebot.config import Config, ConfigError, load_config, parse_config

SECRET_ENV = ("ABUSEBOT_PASSWORD", "ABUSEBOT_PASSWORD_FILE", "ABUSEBOT_ACCESS_TOKEN", "ABUSEBOT_ACCESS_TOKEN_FILE")


def minimal(**changes: Any) -> dict[str, Any]:
    """A minimal valid configuration document, with ``changes`` applied (``None`` deletes a key)."""
    data: dict[str, Any] = {
        "homeserver": "http://127.0.0.1:8008",
        "user_id": "@abusebot:example.org",
        "password": "hunter2",
        "data_dir": "data",
        "management_room": "!management:example.org",
        "protected_rooms": ["!lobby:example.org", "#help:example.org"],
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def config_error(data: Any, base: Path | None = None) -> ConfigError:
    """The ConfigError ``parse_config`` raises for ``data``."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, base=base)
    return info.value


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)


class TestValidConfig:
    def test_minimal_config_loads_with_defaults(self, tmp_path: Path) -> None:
        """A minimal config parses, resolving data_dir against the file and filling in defaults."""
        config = parse_config(minimal(), base=tmp_path)
        assert config == Config(
            homeserver="http://127.0.0.1:8008",
            user_id="@abusebot:example.org",
            password="hunter2",
            data_dir=tmp_path / "data",
            management_room="!management:example.org",
            protected_rooms=("!lobby:example.org", "#help:example.org"),
        )

    def test_load_config_reads_yaml_file(self, tmp_path: Path) -> None:
        """load_config reads a YAML file and resolves relative paths next to it."""
        path = tmp_path / "abusebot.yaml"
        path.write_text(yaml.safe_dump(minimal()))
        assert load_config(path).ledger_path == tmp_path / "data" / "ledger.sqlite3"

    def test_room_v12_ids_without_server_are_accepted(self) -> None:
        """Room version 12 ids (``!`` and a hash, no server part) are valid rooms."""
        config = parse_config(minimal(management_room="!abc", protected_rooms=["!def", "!ghi:example.org"]))
        assert (config.management_room, config.protected_rooms) == ("!abc", ("!def", "!ghi:example.org"))

    def test_empty_protected_rooms_is_allowed(self) -> None:
        """A bot may start protecting no rooms yet."""
        assert parse_config(minimal(protected_rooms=[])).protected_rooms == ()


class TestSecrets:
    def test_password_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no password in the file, ABUSEBOT_PASSWORD is used."""
        monkeypatch.setenv("ABUSEBOT_PASSWORD", "from-env")
        assert parse_config(minimal(password=None)).password == "from-env"

    def test_password_file_relative_to_config(self, tmp_path: Path) -> None:
        """password_file is read relative to the config file's directory and stripped."""
        (tmp_path / "secret").write_text("from-file\n")
        assert parse_config(minimal(password=None, password_file="secret"), base=tmp_path).password == "from-file"

    def test_unreadable_password_file_is_named(self, tmp_path: Path) -> None:
        """A password_file that cannot be read is reported as password_file."""
        assert config_error(minimal(password=None, password_file="missing"), base=tmp_path).path == "password_file"

    def test_empty_password_file_is_named(self, tmp_path: Path) -> None:
        """An empty password_file is reported as password_file."""
        (tmp_path / "secret").write_text("\n")
        assert config_error(minimal(password=None, password_file="secret"), base=tmp_path).path == "password_file"

    def test_access_token_instead_of_password(self) -> None:
        """An access_token alone is enough to log in."""
        assert parse_config(minimal(password=None, access_token="syt_token")).access_token == "syt_token"


class TestMissingKeys:
    @pytest.mark.parametrize(
        "key", ["homeserver", "user_id", "password", "data_dir", "management_room", "protected_rooms"]
    )
    def test_every_required_key_is_named_when_missing(self, key: str) -> None:
        """Leaving out a required key raises a ConfigError naming exactly that key."""
        assert str(config_error(minimal(**{key: None}))).startswith(f"{key}: missing; expected ")

    @pytest.mark.parametrize("key", ["homeserver", "user_id", "data_dir", "management_room", "protected_rooms"])
    def test_null_counts_as_missing(self, key: str) -> None:
        """A key present but null (``key:`` in YAML) is reported as missing."""
        data = minimal()
        data[key] = None
        assert str(config_error(data)).startswith(f"{key}: missing")


class TestUnknownKeys:
    def test_unknown_top_level_key_is_named(self) -> None:
        """A misspelt key is named, not silently ignored."""
        assert config_error(minimal(moderator_powerlevel=50)).path == "moderator_powerlevel"

    def test_unknown_logging_key_is_named_with_its_path(self) -> None:
        """Unknown keys in a section are named with the section path."""
        assert config_error(minimal(logging={"colour": True})).path == "logging.colour"

    def test_top_level_must_be_a_mapping(self) -> None:
        """A YAML document that is a list is reported at the top level."""
        assert config_error(["homeserver"]).path == "(top level)"


class TestWrongTypes:
    @pytest.mark.parametrize("value", [True, False, "50", 2.5, 0, -1, 2**53, [50], {"level": 50}])
    def test_moderator_power_level_must_be_a_positive_integer(self, value: Any) -> None:
        """Booleans, strings, floats, lists and out-of-range numbers are refused for moderator_power_level."""
        err = config_error(minimal(moderator_power_level=value))
        assert str(err).startswith("moderator_power_level: expected an integer from 1 to ")

    @pytest.mark.parametrize("value", ["!room:example.org", {"room": "!room:example.org"}, 3, True])
    def test_protected_rooms_must_be_a_list(self, value: Any) -> None:
        """protected_rooms given as a string, mapping or scalar is named."""
        assert config_error(minimal(protected_rooms=value)).path == "protected_rooms"

    @pytest.mark.parametrize("bad", ["lobby", "room:example.org", "#alias-without-server", "! spaced", "!", 42, None])
    def test_protected_room_entry_is_named_by_index(self, bad: Any) -> None:
        """A bad entry in protected_rooms is reported with its index, e.g. protected_rooms[1]."""
        err = config_error(minimal(protected_rooms=["!ok:example.org", bad, "!fine"]))
        assert str(err).startswith("protected_rooms[1]: expected a room id")

    def test_management_room_may_not_be_protected(self) -> None:
        """The management room listed as protected is refused (it would be moderated by itself)."""
        data = minimal(protected_rooms=["!management:example.org"])
        assert config_error(data).path == "protected_rooms"

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("homeserver", "matrix.example.org"),
            ("homeserver", 8008),
            ("user_id", "abusebot"),
            ("user_id", "@abusebot"),
            ("management_room", "management"),
            ("notify_users", "yes"),
            ("sync_timeout_ms", 10),
            ("expiry_alert_after", True),
            ("command_prefix", ""),
            ("protections", ["spam"]),
            ("password", 1234),
        ],
    )
    def test_wrong_values_are_named(self, key: str, value: Any) -> None:
        """Each wrongly typed or shaped value is reported under its own key."""
        assert config_error(minimal(**{key: value})).path == key

    def test_logging_format_is_named_with_its_path(self) -> None:
        """A bad value inside a section is named with the full dotted path."""
        assert config_error(minimal(logging={"format": "xml"})).path == "logging.format"

    def test_long_values_are_shortened_in_the_message(self) -> None:
        """A huge wrong value does not flood the one-line error."""
        assert len(str(config_error(minimal(user_id="x" * 10000)))) < 200


def write_bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(minimal(protected_rooms=["!ok:example.org", "not-a-room"])))
    return path


class TestCli:
    @pytest.mark.parametrize("command", ["check-config", "run"])
    def test_bad_config_exits_2_with_one_line_naming_the_key(self, tmp_path: Path, command: str) -> None:
        """`abusebot check-config|run -c bad.yaml` exits 2 with one stderr line naming the key, no traceback."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ABUSEBOT_")}
        result = subprocess.run(
            [sys.executable, "-m", "abusebot", command, "-c", str(write_bad_config(tmp_path))],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert (result.returncode, result.stderr) == (
            2,
            "abusebot: config error: protected_rooms[1]: expected a room id (!id or !id:server)"
            " or alias (#name:server), got 'not-a-room'\n",
        )

    def test_invalid_yaml_is_reported_by_line(self, tmp_path: Path) -> None:
        """A YAML syntax error is reported with its line number."""
        path = tmp_path / "broken.yaml"
        path.write_text("homeserver: http://127.0.0.1:8008\nprotected_rooms: [unclosed\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.path.endswith(", line 3")


@pytest.mark.parametrize(
    ("community", "path"),
    [
        ({"rules": [{"id": "1"}]}, "community.rules[0].title"),
        ({"rules": [{"id": "1", "title": "a"}, {"id": 1, "title": "b"}]}, "community.rules[1].id"),
        ({"rules": [{"id": "1", "title": "a", "url": "ftp://x"}]}, "community.rules[0].url"),
        ({"modmail": {"accept_from": "friends"}}, "community.modmail.accept_from"),
        ({"modmail": {"max_open_cases": 0}}, "community.modmail.max_open_cases"),
        ({"modmail": {"anonymous_staff": "yes"}}, "community.modmail.anonymous_staff"),
        ({"reports": {"command": "!mod"}}, "community.reports.command"),
        ({"reports": {"urgent_mentions": "@moderators"}}, "community.reports.urgent_mentions"),
        ({"reports": {"poll_homeserver_reports": 1}}, "community.reports.poll_homeserver_reports"),
        ({"reports": {"colour": "red"}}, "community.reports.colour"),
    ],
)
def test_bad_community_sections_name_the_key_path(community: dict[str, object], path: str) -> None:
    """Every wrong ``community`` value is refused naming its key path."""
    from abusebot.config import ConfigError, parse_config

    base = {
        "homeserver": "http://127.0.0.1:8008",
        "user_id": "@bot:x",
        "password": "p",
        "data_dir": "/tmp/abusebot-test",
        "management_room": "!m:x",
        "protected_rooms": ["!p:x"],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config({**base, "community": community})
    assert caught.value.path == path


def test_the_second_chance_and_suggestions_sections_read_as_the_contract_writes_them() -> None:
    """The contract's YAML, as written, and the policy's defaults when it is absent."""
    contract = yaml.safe_load(
        """
second_chance:
  after: 30d
  probation: 30d
suggestions:
  room: null
  threshold: 10
  vote_reactions: ["👍", "👎"]
"""
    )
    config = parse_config(minimal(**contract))
    assert (config.second_chance.after_s, config.second_chance.probation_s) == (30 * 86400, 30 * 86400)
    assert config.suggestions.room is None
    assert (config.suggestions.threshold, config.suggestions.vote_reactions) == (10, ("👍", "👎"))
    assert parse_config(minimal()).second_chance == config.second_chance
    set_up = parse_config(minimal(suggestions={"room": "#ideas:example.org", "threshold": 0}))
    assert (set_up.suggestions.room, set_up.suggestions.threshold) == ("#ideas:example.org", 0)


def test_the_sample_config_is_a_valid_config() -> None:
    """``config.sample.yaml`` (every key, commented) loads as it is."""
    sample = yaml.safe_load((Path(__file__).parents[2] / "config.sample.yaml").read_text(encoding="utf-8"))
    config = parse_config(sample)
    assert config.suggestions.vote_reactions == ("👍", "👎")


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ({"second_chance": {"after": "soon"}}, "second_chance.after"),
        ({"second_chance": {"probation": 30}}, "second_chance.probation"),
        ({"second_chance": {"probation": "0s"}}, "second_chance.probation"),
        ({"second_chance": {"forever": True}}, "second_chance.forever"),
        ({"suggestions": {"room": "ideas"}}, "suggestions.room"),
        ({"suggestions": {"threshold": -1}}, "suggestions.threshold"),
        ({"suggestions": {"threshold": "10"}}, "suggestions.threshold"),
        ({"suggestions": {"vote_reactions": "👍"}}, "suggestions.vote_reactions"),
        ({"suggestions": {"vote_reactions": []}}, "suggestions.vote_reactions"),
        ({"suggestions": {"vote_reactions": ["👍", "👍"]}}, "suggestions.vote_reactions[1]"),
        ({"suggestions": {"vote_reactions": ["👍", 5]}}, "suggestions.vote_reactions[1]"),
        ({"suggestions": {"colour": "red"}}, "suggestions.colour"),
    ],
)
def test_bad_second_chance_and_suggestions_values_name_the_key_path(section: dict[str, Any], path: str) -> None:
    assert config_error(minimal(**section)).path == path


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        (None, None),
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_metrics_listen_is_an_address_and_a_port(listen: str | None, address: tuple[str, int] | None) -> None:
    assert parse_config(minimal(metrics={"listen": listen})).metrics.listen == address


@pytest.mark.parametrize(
    "listen", ["9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":9464", "host:９４６４", 9464]
)
def test_a_bad_metrics_address_names_the_key(listen: object) -> None:
    assert config_error(minimal(metrics={"listen": listen})).path == "metrics.listen"
