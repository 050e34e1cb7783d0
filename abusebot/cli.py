"""The ``abusebot`` command: ``run``, ``check-config`` and ``demo``.

Exit status: 0 success, 1 runtime failure, 2 configuration error (one line naming the key).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

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
    from abusebot.files import DataDirError, check_data_dir
    from abusebot.matrix import Homeserver, HomeserverUnavailable, MatrixError

    for warning in config.warnings:
        print(f"abusebot: warning: {warning}", file=sys.stderr)
    try:
        print(check_data_dir(config.data_dir))
    except DataDirError as err:
        print(f"abusebot: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    hs = Homeserver(config.homeserver, config.user_id, config.device_name)
    try:
        try:
            versions = await hs.request("GET", "/_matrix/client/versions")
        except (HomeserverUnavailable, MatrixError) as err:
            print(f"abusebot: homeserver {config.homeserver} does not answer: {err}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"homeserver answers: {config.homeserver} (versions {', '.join(versions.get('versions', [])[-2:])})")
        try:
            if config.access_token:
                hs.restore(config.access_token, None)
                user = await hs.whoami()
            else:
                assert config.password is not None
                await hs.login_password(config.password)
                user = hs.user_id
                await hs.request("POST", "/_matrix/client/v3/logout", {})
        except (HomeserverUnavailable, MatrixError) as err:
            print(f"abusebot: cannot log in as {config.user_id}: {err}", file=sys.stderr)
            return EXIT_FAILURE
        if user != config.user_id:
            print(f"abusebot: logged in as {user}, but user_id says {config.user_id}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"logged in as {user}: configuration OK")
        return EXIT_OK
    finally:
        await hs.close()


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
    return _run(config)
