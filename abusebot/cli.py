"""The ``abusebot`` command: ``run``, ``check-config``, ``report`` and ``demo``.

Exit status: 0 success, 1 runtime failure, 2 configuration error (one line naming the key).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from abusebot import __version__
from abusebot.config import Config, ConfigError, load_config

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _load(path: str) -> Config | None:
    from abusebot.pipeline import validate
    from policies.lists import parse_policy_config

    try:
        config = load_config(path)
        validate(config)  # the protections and escalation sections
        parse_policy_config(config)
        return config
    except ConfigError as err:
        print(f"abusebot: config error: {err}", file=sys.stderr)
        return None


async def _check(config: Config) -> int:
    """``check-config``: the file, data_dir, the homeserver, the login (reusing the stored
    session), and every room: resolves, joined or invited, powers, encryption."""
    import sqlite3

    from abusebot.files import DataDirError, Session, check_data_dir, prepare_data_dir, save_session
    from abusebot.ledger import Ledger, LedgerError
    from abusebot.matrix import Homeserver, HomeserverUnavailable, MatrixError

    for warning in config.warnings:
        print(f"abusebot: warning: {warning}", file=sys.stderr)
    try:
        print(check_data_dir(config.data_dir))
    except DataDirError as err:
        print(f"abusebot: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    hs = Homeserver(config.homeserver, config.user_id, config.device_name)
    ledger: Ledger | None = None
    try:
        if config.ledger_path.exists():
            try:
                ledger = await Ledger.open(config.ledger_path)
            except (sqlite3.Error, LedgerError) as err:
                problem = f"data_dir: cannot use the ledger {config.ledger_path}: {err}"
                print(f"abusebot: config error: {problem}", file=sys.stderr)
                return EXIT_CONFIG
        try:
            versions = await hs.request("GET", "/_matrix/client/versions")
        except (HomeserverUnavailable, MatrixError) as err:
            print(f"abusebot: the homeserver {config.homeserver} does not answer: {_why(err)}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"homeserver answers: {config.homeserver} (versions {', '.join(versions.get('versions', [])[-2:])})")
        try:
            how = await _log_in(config, hs, ledger)
        except (HomeserverUnavailable, MatrixError) as err:
            print(f"abusebot: cannot log in as {config.user_id}: {_why(err)}", file=sys.stderr)
            return EXIT_FAILURE
        if hs.user_id != config.user_id:
            print(f"abusebot: logged in as {hs.user_id}, but user_id says {config.user_id}", file=sys.stderr)
            return EXIT_CONFIG
        if how == "password":
            # Keep the session, so the next check and the bot itself reuse it instead of logging
            # in again (a few logins a minute hit the homeserver's login rate limit).
            prepare_data_dir(config.data_dir)
            save_session(config.data_dir, Session(hs.user_id, hs.device_id, hs.access_token))
        print(f"logged in as {hs.user_id} ({how})")
        print(await _device_line(hs))
        problems, fatal = await _check_rooms(config, hs)
        if fatal:
            print(f"abusebot: config error: {fatal}", file=sys.stderr)
            return EXIT_CONFIG
        if problems:
            print(f"abusebot: {len(problems)} problem(s):", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            return EXIT_FAILURE
        print("configuration OK")
        return EXIT_OK
    finally:
        if ledger is not None:
            await ledger.close()
        await hs.close()


async def _device_line(hs: Any) -> str:
    """The bot's device and whether the homeserver shows it cross-signed."""
    from abusebot.cross_signing import standing
    from abusebot.matrix import HomeserverUnavailable, MatrixError

    if not hs.device_id:
        return "device: unknown (the homeserver did not say which device the token is for); encryption is off"
    try:
        now, keys = await standing(hs.request, hs.user_id, hs.device_id)
    except (HomeserverUnavailable, MatrixError) as err:
        return f"device {hs.device_id}: cannot read its keys ({_why(err)})"
    ed25519 = (keys or {}).get("keys", {}).get(f"ed25519:{hs.device_id}")
    device = f"device {hs.device_id}" + (f" (ed25519 key {ed25519})" if isinstance(ed25519, str) else "")
    if now.complete:
        return f"{device}: cross-signed (master key {now.master})"
    return f"{device}: not cross-signed yet (the bot cross-signs itself when it starts)"


def _why(err: Exception) -> str:
    from abusebot.matrix import MatrixError

    if isinstance(err, MatrixError):
        return f"{err.errcode or err.status}: {err.error}" if err.error else str(err)
    return str(err).split(": ", 1)[-1]


async def _log_in(config: Config, hs: Any, ledger: Any) -> str:
    """Log in as the bot will: the configured token, else the stored session, else the password."""
    from abusebot.files import load_session, take_session_from_ledger
    from abusebot.matrix import MatrixError

    if config.access_token:
        hs.restore(config.access_token, None)
        hs.user_id = await hs.whoami()
        return "access token from the config"
    session = load_session(config.data_dir)
    if session is None and ledger is not None:
        session = await take_session_from_ledger(ledger, config.data_dir, config.user_id)
    if session is not None:
        hs.restore(session.access_token, session.device_id)
        try:
            owner = await hs.whoami()
        except MatrixError as err:
            if err.status != 401:
                raise
        else:
            if owner == config.user_id:  # a session of another account is not ours to reuse
                hs.user_id = owner
                return "the bot's stored session"
        hs.user_id = config.user_id
    assert config.password is not None
    await hs.login_password(config.password, session.device_id if session is not None else None)
    return "password"


async def _check_rooms(config: Config, hs: Any) -> tuple[list[str], str | None]:
    """Each configured room: resolved, joined or invited, the powers the bot has, encryption.
    Returns (problems, fatal): fatal for a room that does not exist."""
    import json

    from abusebot.matrix import API, HomeserverUnavailable, MatrixError
    from abusebot.rooms import RoomState
    from abusebot.safety import missing_powers

    wanted = [
        ("management_room", config.management_room),
        *((f"protected_rooms[{i}]", room) for i, room in enumerate(config.protected_rooms)),
        *((f"protected_spaces[{i}]", room) for i, room in enumerate(config.protected_spaces)),
    ]
    ids: dict[str, str] = {}
    for key, room in wanted:
        if room.startswith("#"):
            try:
                ids[key] = await hs.resolve_alias(room)
            except (MatrixError, HomeserverUnavailable) as err:
                return [], f"{key}: {room} does not resolve ({_why(err)})"
        else:
            ids[key] = room
    # /joined_rooms and state reads, not /sync: Synapse caches a sync answer for minutes, so a
    # check right after the bot joined would still see the invites.
    joined = set(await hs.joined_rooms())
    outside = sorted(set(ids.values()) - joined)
    invited: set[str] = set()
    if outside:
        sync_filter = {
            "presence": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
            "room": {"rooms": outside, "timeline": {"limit": 0}, "state": {"types": []}},
        }
        reply = await hs.request("GET", f"{API}/sync", query={"timeout": 0, "filter": json.dumps(sync_filter)})
        invited = set((reply.get("rooms") or {}).get("invite") or {})
    states: dict[str, list[dict[str, Any]]] = {}
    for room_id in sorted(set(ids.values()) & joined):
        events = []
        for event_type in ("m.room.power_levels", "m.room.create", "m.room.encryption", "m.room.name"):
            content = await hs.state_event(room_id, event_type)
            if content is not None:
                events.append({"type": event_type, "state_key": "", "content": content})
        states[room_id] = events
    problems: list[str] = []
    for key, room in wanted:
        room_id = ids[key]
        label = room if room == room_id else f"{room} ({room_id})"
        if room_id in invited:
            print(f"{key} {label}: invited; I will join at start")
            continue
        space = key.startswith("protected_spaces")
        if room_id not in joined and space:
            # A public Space is joined at start (its rooms then, each reported by the start line).
            print(f"{key} {label}: not joined; I join it at start (invite {config.user_id} if it is not public)")
            continue
        if room_id not in joined:
            problems.append(f"{key} {label}: I am neither joined nor invited; invite {config.user_id}")
            continue
        state = RoomState(room_id)
        state.apply_all(states[room_id])
        state.apply({"type": "m.room.member", "state_key": hs.user_id, "content": {"membership": "join"}})
        notes = []
        if state.get("m.room.encryption") is not None:
            notes.append("encrypted (I read and answer there encrypted)")
        if space:
            if not state.is_space:
                problems.append(f"{key} {label}: not a Space (its create event has no type m.space)")
            print(f"{key} {label}: joined" + ("; a Space (its rooms are checked at start)" if state.is_space else ""))
            continue
        if key != "management_room":
            missing = missing_powers(state, hs.user_id)
            if missing:
                problems.append(f"{key} {label}: I lack the power for {', '.join(missing)}")
                notes.append("missing " + ", ".join(missing))
        name = f" “{state.name}”" if state.name else ""
        print(f"{key} {label}{name}: joined" + (f"; {'; '.join(notes)}" if notes else "; all powers I need"))
    return problems, None


def _run(config: Config) -> int:
    import sqlite3

    from abusebot import logs
    from abusebot.bot import Bot, StartupError
    from abusebot.files import DataDirError
    from abusebot.ledger import LedgerError

    logs.configure(config.logging.format, config.logging.level)
    bot = Bot(config)
    try:
        asyncio.run(bot.run())
    except DataDirError as err:
        print(f"abusebot: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as err:
        print(f"abusebot: cannot start: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except (sqlite3.Error, LedgerError) as err:
        print(f"abusebot: config error: data_dir: cannot use the ledger {config.ledger_path}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``abusebot`` console script."""
    parser = argparse.ArgumentParser(prog="abusebot", description="A Matrix protection bot.")
    parser.add_argument("--version", action="version", version=f"abusebot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bot")
    run.add_argument("-c", "--config", required=True, help="path to the YAML configuration")
    check = sub.add_parser("check-config", help="validate the config, reach the homeserver and log in")
    check.add_argument("-c", "--config", required=True, help="path to the YAML configuration")
    report = sub.add_parser("report", help="write the anonymised transparency report of a period")
    report.add_argument("-c", "--config", required=True, help="path to the YAML configuration")
    report.add_argument("--period", required=True, help="2026H1, 2026H2, 2026 (yearly) or 2026-01..2026-06")
    report.add_argument("--format", choices=("md", "html", "json"), default="md", help="default: md")
    report.add_argument("-o", "--output", help="the file to write (default: standard output)")
    report.add_argument("--notes", help="a Markdown file of the staff's own notes, for a yearly report")
    demo = sub.add_parser("demo", help="run a scripted scenario against a throwaway Synapse")
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from abusebot.demo import main as demo_main

        return demo_main(keep=args.keep)
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    if args.command == "check-config":
        return asyncio.run(_check(config))
    if args.command == "report":
        return _report(config, args.period, args.format, args.output, args.notes)
    return _run(config)


def _report(config: Config, period_text: str, fmt: str, output: str | None, notes_path: str | None) -> int:
    """``report``: read the ledger (also while the bot runs: read-only) and write the report.
    Progress goes to standard error; the report to ``output`` or standard output."""
    import contextlib
    import sqlite3
    import time
    from pathlib import Path

    from abusebot.transparency import PeriodError, collect, parse_period, render

    def say(text: str) -> None:
        print(f"abusebot report: {text}", file=sys.stderr, flush=True)

    try:
        period = parse_period(period_text)
    except PeriodError as err:
        print(f"abusebot: config error: --period: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if not config.ledger_path.exists():
        print(f"abusebot: config error: data_dir: no ledger at {config.ledger_path}", file=sys.stderr)
        return EXIT_CONFIG
    notes = ""
    if notes_path is not None:
        try:
            notes = Path(notes_path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            print(
                f"abusebot: config error: --notes: expected a readable UTF-8 file, got {notes_path} ({err})",
                file=sys.stderr,
            )
            return EXIT_CONFIG
    started = time.perf_counter()
    try:
        # A file that is not a ledger is one line, before any progress is said.
        with contextlib.closing(sqlite3.connect(f"file:{config.ledger_path}?mode=ro", uri=True)) as db:
            db.execute("PRAGMA schema_version")
        say(f"reading the ledger for {period.label} (and {period.previous().label}, for the change)…")
        stats = collect(
            config.ledger_path, period, None, config.transparency.min_count, notes=notes, rules=config.rules
        )
        say(f"read in {time.perf_counter() - started:.2f} s; rendering {fmt}…")
        text = render(stats, fmt)
    except sqlite3.Error as err:
        print(f"abusebot: cannot read the ledger {config.ledger_path}: {err}", file=sys.stderr)
        return EXIT_FAILURE
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as err:
            print(f"abusebot: cannot write {output}: {err}", file=sys.stderr)
            return EXIT_FAILURE
        say(f"wrote {output} ({len(text.encode())} bytes) in {time.perf_counter() - started:.2f} s")
    return EXIT_OK
