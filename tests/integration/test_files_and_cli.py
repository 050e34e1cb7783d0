"""Bad files, directories and permissions, from outside: one line and exit 2, never a traceback;
and the bot's data private to it (0700 directory, 0600 files, the WAL and SHM files too)."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World

EXIT_CONFIG = 2


def abusebot(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the ``abusebot`` command as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "abusebot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 2, one line on stderr naming what is wrong, no traceback."""
    assert result.returncode == EXIT_CONFIG, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("abusebot: config error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def good_config(synapse: SynapseServer, tmp_path: Path, **overrides: object) -> dict[str, object]:
    """A valid config for a freshly registered account (rooms need not exist for these checks)."""
    account = synapse.register(f"files-{os.urandom(3).hex()}")
    data: dict[str, object] = {
        "homeserver": synapse.url,
        "user_id": account.user_id,
        "password": account.password,
        "data_dir": str(tmp_path / "data"),
        "management_room": "!management:localhost",
        "protected_rooms": ["!protected:localhost"],
    }
    data.update(overrides)
    return data


def write(path: Path, data: dict[str, object], mode: int = 0o600) -> Path:
    path.write_text(yaml.safe_dump(data))
    path.chmod(mode)
    return path


# -- bad config files --------------------------------------------------------------------------

_rng = random.Random(20261201)
BAD_FILES: dict[str, bytes] = {
    **{f"random bytes #{n}": bytes(_rng.randrange(256) for _ in range(4096)) for n in range(3)},
    "UTF-16 with a BOM": "homeserver: http://127.0.0.1:1\nuser_id: '@a:b'\n".encode("utf-16"),
    "UTF-16 without a BOM": "homeserver: http://127.0.0.1:1\n".encode("utf-16-le"),
    "Latin-1": "homeserver: http://caf\xe9.example\n".encode("latin-1"),
    "NUL bytes": b"homeserver: \x00\x00\x00\n",
    "control characters": b"homeserver: \x07\x1b[31m\n",
    "deep nesting": b"[" * 5000 + b"]" * 5000,
    "a YAML tag for Python objects": b"homeserver: !!python/object/apply:os.system ['true']\n",
    "empty": b"",
    "a list at the top": b"- homeserver\n- user_id\n",
    "an integer of 5000 digits": b"moderator_power_level: " + b"9" * 5000 + b"\n",
    "a key given twice": b"homeserver: http://127.0.0.1:1\nhomeserver: http://127.0.0.1:2\n",
}


def _config_bytes(**overrides: object) -> bytes:
    data: dict[str, object] = {
        "homeserver": "http://127.0.0.1:9",
        "user_id": "@bot:localhost",
        "password": "x",
        "data_dir": "/tmp/abusebot-never-created",
        "management_room": "!m:localhost",
        "protected_rooms": ["!p:localhost"],
    }
    data.update(overrides)
    return yaml.safe_dump(data).encode()


BAD_VALUES: dict[str, tuple[bytes, str]] = {
    "a password file that is not UTF-8": (_config_bytes(password=None, password_file=sys.executable), "password_file"),
    "a prefix with a space": (_config_bytes(command_prefix="!mod x"), "command_prefix"),
    "a NUL in data_dir": (_config_bytes(data_dir="/tmp/a\x00b"), "data_dir"),
    "a data_dir name too long": (_config_bytes(data_dir="/tmp/" + "a" * 300), "data_dir"),
    "an infinite window": (_config_bytes(protections={"flood": {"per_seconds": float("inf")}}), "per_seconds"),
}


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_is_one_line_naming_its_key(tmp_path: Path, command: str, case: str) -> None:
    """Values that used to crash or slip through: one line naming the key, exit 2."""
    content, key = BAD_VALUES[case]
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    path.chmod(0o600)
    assert_one_line_exit_2(abusebot(command, "-c", str(path), cwd=tmp_path), key)


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_ledger_that_is_a_directory_is_one_line(tmp_path: Path, command: str) -> None:
    """A directory where the ledger file should be: one line, exit 2, before any network."""
    (tmp_path / "data" / "ledger.sqlite3").mkdir(parents=True)
    (tmp_path / "data").chmod(0o700)
    (tmp_path / "data" / "ledger.sqlite3").chmod(0o700)
    path = tmp_path / "config.yaml"
    path.write_bytes(_config_bytes(data_dir=str(tmp_path / "data")))
    path.chmod(0o600)
    assert_one_line_exit_2(abusebot(command, "-c", str(path), cwd=tmp_path), "ledger", "is not a file")


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("content", list(BAD_FILES))
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path: Path, command: str, content: str) -> None:
    """Random bytes, other encodings, hostile YAML: one line naming the file or key, exit 2."""
    path = tmp_path / "config.yaml"
    path.write_bytes(BAD_FILES[content])
    result = abusebot(command, "-c", str(path), cwd=tmp_path)
    assert_one_line_exit_2(result)


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_config_path_that_is_a_directory_is_one_line(tmp_path: Path, command: str) -> None:
    """``-c`` naming a directory, or a file that does not exist: one line with the path, exit 2."""
    assert_one_line_exit_2(abusebot(command, "-c", str(tmp_path), cwd=tmp_path), str(tmp_path))
    missing = tmp_path / "nope.yaml"
    assert_one_line_exit_2(abusebot(command, "-c", str(missing), cwd=tmp_path), str(missing))


# -- bad data directories -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_data_dir_that_cannot_be_created_is_one_line(synapse: SynapseServer, tmp_path: Path, command: str) -> None:
    """A data_dir under a regular file cannot be created: one line naming data_dir, exit 2."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = write(tmp_path / "config.yaml", good_config(synapse, tmp_path, data_dir=str(blocker / "data")))
    assert_one_line_exit_2(abusebot(command, "-c", str(config), cwd=tmp_path), "data_dir", str(blocker))


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_data_dir_that_is_a_file_is_one_line(synapse: SynapseServer, tmp_path: Path, command: str) -> None:
    """A data_dir that is a file: one line saying it is not a directory, exit 2."""
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    config = write(tmp_path / "config.yaml", good_config(synapse, tmp_path, data_dir=str(blocker)))
    assert_one_line_exit_2(abusebot(command, "-c", str(config), cwd=tmp_path), "data_dir", "not a directory")


def test_a_ledger_that_is_not_a_database_is_one_line(synapse: SynapseServer, tmp_path: Path) -> None:
    """A ledger file of garbage: ``run`` says which file, exit 2, and leaves the file as it was."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    ledger = data_dir / "ledger.sqlite3"
    garbage = bytes(random.Random(7).randrange(256) for _ in range(8192))
    ledger.write_bytes(garbage)
    ledger.chmod(0o600)
    config = write(tmp_path / "config.yaml", good_config(synapse, tmp_path))
    assert_one_line_exit_2(abusebot("run", "-c", str(config), cwd=tmp_path), "ledger", str(ledger))
    assert ledger.read_bytes() == garbage


def test_check_config_checks_the_data_dir(synapse: SynapseServer, tmp_path: Path) -> None:
    """check-config reports what it found about data_dir; the session it logs in with is kept
    there (created private), so the next run reuses it. (The rooms of this config do not exist:
    that is a problem it names, exit 1.)"""
    config = write(tmp_path / "config.yaml", good_config(synapse, tmp_path))
    result = abusebot("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "I am neither joined nor invited" in result.stderr
    assert f"data_dir {tmp_path / 'data'} will be created" in result.stdout
    assert mode_of(tmp_path / "data") == 0o700
    again = abusebot("check-config", "-c", str(config), cwd=tmp_path)
    assert f"data_dir {tmp_path / 'data'} exists" in again.stdout
    assert "(the bot's stored session)" in again.stdout


# -- the bot's files are private ----------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_data_dir_and_every_ledger_file_are_private(synapse: SynapseServer, tmp_path: Path) -> None:
    """A first start creates data_dir 0700 and the ledger, its WAL and its SHM file 0600."""
    w = await World.launch(synapse, tmp_path)
    try:
        event_id = await w.mod.say(w.management, f"!mod note {w.members['spammer'].user_id} a write for the WAL")
        await w.mod.wait_for_reply(w.management, event_id)
        data = tmp_path / "data"
        assert mode_of(data) == 0o700
        files = {p.name: mode_of(p) for p in data.iterdir() if p.is_file()}
        assert {"ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm", "cross_signing.json"} <= set(files), files
        assert set(files.values()) == {0o600}, files
        assert mode_of(data / "crypto") == 0o700  # the device's keys
        keys = {p.name: mode_of(p) for p in (data / "crypto").iterdir()}
        assert "crypto.db" in keys, keys
        assert set(keys.values()) == {0o600}, keys
    finally:
        await w.close()


async def test_loose_modes_are_tightened_at_start_and_said_once(synapse: SynapseServer, tmp_path: Path) -> None:
    """A data_dir at 0755 with a ledger at 0644 (an older abusebot's): at start both are made
    private, one log line says so, and the config file holding the password, readable by others,
    gets a warning naming it."""
    w = await World.create(synapse, tmp_path)
    try:
        data = tmp_path / "data"
        data.mkdir(mode=0o755)
        data.chmod(0o755)
        ledger = data / "ledger.sqlite3"
        sqlite3.connect(ledger).close()
        ledger.chmod(0o644)
        w.config_path.chmod(0o644)
        with capture_logs() as logs:
            await w.mod.start_watching()
            await w.start_bot()
            event_id = await w.mod.say(w.management, "!mod status")
            await w.mod.wait_for_reply(w.management, event_id)
        assert mode_of(data) == 0o700
        assert {mode_of(p) for p in data.iterdir() if p.is_file()} == {0o600}
        assert {mode_of(p) for p in data.iterdir() if p.is_dir()} == {0o700}
        tightened = [entry for entry in logs if entry.get("event") == "data_dir_made_private"]
        assert len(tightened) == 1, tightened
        assert any(str(ledger) in path for path in tightened[0]["paths"])
        warnings = [entry for entry in logs if entry.get("event") == "secret_readable_by_others"]
        assert len(warnings) == 1, warnings
        assert str(w.config_path) in warnings[0]["detail"], warnings

        await w.stop_bot()
        with capture_logs() as logs:
            await w.start_bot()
        assert not [entry for entry in logs if entry.get("event") == "data_dir_made_private"]
    finally:
        await w.close()


def test_check_config_warns_about_a_readable_secret(synapse: SynapseServer, tmp_path: Path) -> None:
    """check-config names a config file (or password file) others can read; 0600 files are quiet."""
    exposed = write(tmp_path / "exposed.yaml", good_config(synapse, tmp_path), mode=0o644)
    result = abusebot("check-config", "-c", str(exposed), cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # the rooms of good_config do not exist
    assert f"warning: {exposed} holds the bot's password" in result.stderr

    secret = tmp_path / "password.txt"
    data = good_config(synapse, tmp_path)
    secret.write_text(str(data.pop("password")))
    secret.chmod(0o640)
    via_file = write(tmp_path / "via-file.yaml", {**data, "password_file": str(secret)}, mode=0o644)
    result = abusebot("check-config", "-c", str(via_file), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"warning: {secret} holds the bot's password" in result.stderr
    assert str(via_file) not in result.stderr  # it holds no secret itself

    private = write(tmp_path / "private.yaml", good_config(synapse, tmp_path), mode=0o600)
    result = abusebot("check-config", "-c", str(private), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "warning" not in result.stderr
