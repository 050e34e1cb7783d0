"""Space protection: how fast a room added to a protected Space is protected, and how fast the
bans in force everywhere reach it; each against a baseline measured in the same run.

Run by hand (not a test)::

    .venv/bin/python -m benchmarks.bench_spaces [--trials 10] [--bans 200]

It starts its own Synapse on 127.0.0.1 and runs the bot in this process, protecting a Space.

(a) baseline: a moderator's message in the management room until the moderator's own
    ``/sync`` delivers it (one hop through the homeserver);
(b) child added: the moderator adds a room to the Space, until the moderator's ``/sync``
    delivers the bot's "Now protecting" line (the bot's sync, the walk, the join, the
    sanctions in force, the post: two hops and a join);
(c) bans reaching a new room: with ``--bans`` bans in force everywhere (of people not in the
    room), a room added to the Space until every one of them is banned there, against the same
    number of bans the moderator writes straight to the homeserver, one after another, in
    another room (what the homeserver itself takes).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from abusebot.ledger import Ledger
from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from benchmarks.bench_modmail import Arrivals, report, token
from tests.integration.spaces_helpers import add_child, create_space


def _done_bans(w: World, room: str) -> int:
    path = w.base / "data" / "ledger.sqlite3"
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10) as db:
        row = db.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'ban' AND room_id = ? AND state = 'done'", (room,))
        return int(row.fetchone()[0])


async def run(args: argparse.Namespace) -> None:
    plain: list[float] = []
    added: list[float] = []
    reach: list[float] = []
    direct: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-spaces-") as tmp:
        base = Path(tmp)
        synapse = SynapseServer(base_dir=base / "synapse")
        synapse.start()
        try:
            w = await World.create(synapse, base / "world", rooms=0, members=(), config={"notify_users": False})
            bot_id = w.bot_account.user_id
            server = bot_id.split(":", 1)[1]
            space = await create_space(w.mod, "Community")
            first = await w.mod.create_room(name="Main", power={bot_id: 100})
            await add_child(w.mod, space, first)
            w.write_config({"notify_users": False, "protected_rooms": [], "protected_spaces": [space]})
            await w.start_bot()
            await w.stop_bot()
            ledger = await Ledger.open(w.base / "data" / "ledger.sqlite3")
            people = [f"@ghost{number}:{server}" for number in range(args.bans)]
            for person in people:
                fields = {"kind": "ban", "scope": "*", "reason": "spam", "actor": "@mod:x", "origin": "command"}
                await ledger.add_infraction(subject=person, state="active", **fields)
            await ledger.close()
            watch = Arrivals(w.mod)
            try:
                await w.start_bot()
                await watch.start()
                for _ in range(args.trials):
                    t = token()
                    started = time.perf_counter()
                    await w.mod.say(w.management, f"ping {t}")
                    plain.append(await watch.wait(t) - started)
                    await asyncio.sleep(0.2)
                    t = token()
                    room = await w.mod.create_room(name=f"Child {t}", power={bot_id: 100})
                    started = time.perf_counter()
                    await add_child(w.mod, space, room)
                    added.append(await watch.wait(t) - started)
                    while _done_bans(w, room) < args.bans:  # noqa: ASYNC110 - another process's file
                        await asyncio.sleep(0.05)
                    reach.append(time.perf_counter() - started)
                    other = await w.mod.create_room(name="Direct", power={bot_id: 100})
                    started = time.perf_counter()
                    for person in people:
                        await w.mod.call("POST", f"{API}/rooms/{q(other)}/ban", {"user_id": person, "reason": "spam"})
                    direct.append(time.perf_counter() - started)
            finally:
                await watch.stop()
                await w.close()
        finally:
            synapse.stop()
    report("plain message trip (baseline)", plain, None)
    report("child added → 'Now protecting' seen", added, plain)
    report(f"{args.bans} bans written by hand (baseline)", direct, None)
    report(f"child added → its {args.bans} bans done", reach, direct)
    print(f"bans reaching a new room: {args.bans / sorted(reach)[len(reach) // 2]:.0f}/s")


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--bans", type=int, default=200)
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
