"""Suggestions latency: a member's suggestion until the moderators see the bot's vote reaction
on it, and a moderator's state reaction (🟢) until they see the bot's mirror of it; each
against a plain message trip measured in the same minutes.

Run by hand (not a test)::

    .venv/bin/python -m benchmarks.bench_suggestions [--trials 20]

It starts its own Synapse on 127.0.0.1 and runs the bot in this process, with a suggestions
room. The moderator's own ``/sync`` loop timestamps every arrival. Each trial:

(a) baseline: the member's plain message in the suggestions room (a reply: not a suggestion),
    until the moderator's ``/sync`` delivers it (one hop through the homeserver);
(b) vote reactions: the member's suggestion, until the moderator's ``/sync`` delivers the
    bot's 👍 on it (the bot's sync, the store, the send, the moderator's sync);
(c) mirror: the moderator's 🟢 on it, until the bot's own 🟢 arrives (the bot's sync, the
    state change recorded, the mark recorded, the send).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from benchmarks.bench_modmail import Arrivals, report, token


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-suggestions-") as tmp:
        base = Path(tmp)
        synapse = SynapseServer(base_dir=base / "synapse")
        synapse.start()
        try:
            w = await World.create(synapse, base / "world", members=("member",), config={"notify_users": False})
            member, bot_id = w.members["member"], w.bot_account.user_id
            room = await w.mod.create_room(name="Suggestions")
            await member.join(room)
            w.write_config({"notify_users": False, "suggestions": {"room": room, "threshold": 1000}})
            watch = Arrivals(w.mod)
            try:
                await w.start_bot()
                for _ in range(200):
                    if await w.mod.membership(room, bot_id) == "join":
                        break
                    await asyncio.sleep(0.1)
                await watch.start()
                first = await member.say(room, "warming up")
                await watch.wait(f"{bot_id} {first} 👍")
                plain: list[float] = []
                votes: list[float] = []
                mirror: list[float] = []
                for _ in range(args.trials):
                    t = token()
                    started = time.perf_counter()
                    await member.send(
                        room,
                        {
                            "msgtype": "m.text",
                            "body": f"agreed {t}",
                            "m.relates_to": {"m.in_reply_to": {"event_id": first}},
                        },
                    )
                    plain.append(await watch.wait(t) - started)
                    await asyncio.sleep(0.3)
                    started = time.perf_counter()
                    idea = await member.say(room, f"an idea {token()}")
                    votes.append(await watch.wait(f"{bot_id} {idea} 👍") - started)
                    await asyncio.sleep(0.3)
                    started = time.perf_counter()
                    relates = {"rel_type": "m.annotation", "event_id": idea, "key": "🟢"}
                    await w.mod.send(room, {"m.relates_to": relates}, event_type="m.reaction")
                    mirror.append(await watch.wait(f"{bot_id} {idea} 🟢") - started)
                    await asyncio.sleep(0.3)
            finally:
                await watch.stop()
                await w.close()
        finally:
            synapse.stop()
    report("plain message trip (baseline)", plain, None)
    report("suggestion → the bot's 👍 on it", votes, plain)
    report("staff 🟢 → the bot's 🟢 mirror", mirror, plain)


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
