"""ModMail latency: a member's message in their direct chat until the moderators see it in the
case's thread, and a moderator's ``!mod reply`` until the member sees it; each against a plain
message trip measured in the same minutes.

Run by hand (not a test)::

    .venv/bin/python -m benchmarks.bench_modmail [--trials 20]

It starts its own Synapse on 127.0.0.1 and runs the bot in this process. A member opens a direct
chat with the bot and a case (first message, answered). Observers' own ``/sync`` loops (the
moderator's and the member's) timestamp every arrival. Each trial, alternating:

(a) baseline: the member's plain message in the protected room, until the moderator's ``/sync``
    delivers it (one hop through the homeserver);
(b) ModMail in: the member's message in the direct chat, until the moderator's ``/sync``
    delivers the bot's copy in the case's thread (the bot's sync, the case store, the send, the
    moderator's sync);
(c) ModMail out: the moderator's ``!mod reply <N> …`` in the management room, until the member's
    ``/sync`` delivers the relayed answer (the bot's sync, the command lane, the store, the send).

A trial takes at least 7 s: a member passes at most 10 messages a minute to the moderators.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from abusebot.matrix import API
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World
from benchmarks._stats import percentile


class Arrivals:
    """A person's own ``/sync`` loop noting when each message body first arrived (its ``T-``
    tokens), and each reaction (as ``"<sender> <event id> <key>"``)."""

    def __init__(self, person: Person) -> None:
        self.person = person
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reply = await self.person.call("GET", f"{API}/sync", query={"timeout": "0"})
        since = reply["next_batch"]

        async def loop() -> None:
            nonlocal since
            flt = json.dumps({"room": {"timeline": {"limit": 50}, "state": {"lazy_load_members": True}}})
            while True:
                try:
                    reply = await self.person.call(
                        "GET", f"{API}/sync", query={"since": since, "timeout": "30000", "filter": flt}, timeout=60
                    )
                except Exception as err:  # a hiccup of the homeserver: sync again
                    print(f"observer sync failed: {err!r}")
                    await asyncio.sleep(0.5)
                    continue
                now = time.perf_counter()
                since = reply["next_batch"]
                for joined in (reply.get("rooms", {}).get("join") or {}).values():
                    for event in joined.get("timeline", {}).get("events", []):
                        relates = (event.get("content") or {}).get("m.relates_to") or {}
                        if event.get("type") == "m.reaction":  # "<sender> <event> <key>"
                            mark = f"{event.get('sender')} {relates.get('event_id')} {relates.get('key')}"
                            self.seen.setdefault(mark, now)
                        body = (event.get("content") or {}).get("body")
                        if isinstance(body, str):
                            for token in body.split():
                                if token.startswith("T-"):
                                    self.seen.setdefault(token, now)
                self.changed.set()

        self._task = asyncio.create_task(loop())

    async def wait(self, token: str, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while token not in self.seen:
            if time.monotonic() > deadline:
                raise TimeoutError(token)
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1)
        return self.seen[token]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def token() -> str:
    return f"T-{secrets.token_hex(6)}"


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-modmail-") as tmp:
        base = Path(tmp)
        synapse = SynapseServer(base_dir=base / "synapse")
        synapse.start()
        try:
            w = await World.create(synapse, base / "world", members=("member",), config={"notify_users": False})
            mod_watch = Arrivals(w.mod)
            member = w.members["member"]
            member_watch = Arrivals(member)
            try:
                bot_id = w.bot_account.user_id
                await w.start_bot()
                reply = await member.call(
                    "POST",
                    f"{API}/createRoom",
                    {"preset": "trusted_private_chat", "is_direct": True, "invite": [bot_id]},
                )
                dm = str(reply["room_id"])
                for _ in range(200):
                    if await member.membership(dm, bot_id) == "join":
                        break
                    await asyncio.sleep(0.1)
                await mod_watch.start()
                await member_watch.start()
                opening = token()
                await member.say(dm, f"opening the case {opening}")
                await mod_watch.wait(opening)
                rows = w.bot.host.features["cases"]
                [(number,)] = await rows.bot.ledger.fetch("SELECT id FROM cases")
                await asyncio.sleep(1)
                plain: list[float] = []
                inbound: list[float] = []
                outbound: list[float] = []
                for _ in range(args.trials):
                    # A member may pass 10 messages a minute to the moderators: a trial every 7 s.
                    trial_started = time.monotonic()
                    t = token()
                    started = time.perf_counter()
                    await member.say(w.protected[0], f"hello {t}")
                    plain.append(await mod_watch.wait(t) - started)
                    await asyncio.sleep(0.3)
                    t = token()
                    started = time.perf_counter()
                    await member.say(dm, f"more for the case {t}")
                    inbound.append(await mod_watch.wait(t) - started)
                    await asyncio.sleep(0.3)
                    t = token()
                    started = time.perf_counter()
                    await w.mod.say(w.management, f"!mod reply {number} thanks {t}")
                    outbound.append(await member_watch.wait(t) - started)
                    await asyncio.sleep(max(0.3, 7.0 - (time.monotonic() - trial_started)))
            finally:
                await mod_watch.stop()
                await member_watch.stop()
                await w.close()
        finally:
            synapse.stop()
    report("plain message trip (baseline)", plain, None)
    report("ModMail: member → moderators' thread", inbound, plain)
    report("ModMail: !mod reply → member", outbound, plain)


def report(name: str, values: list[float], baseline: list[float] | None) -> None:
    median = statistics.median(values)
    line = f"{name:40s} median {1000 * median:7.1f} ms  p90 {1000 * percentile(values, 90):7.1f} ms  (n={len(values)})"
    if baseline:
        line += f"  ratio {median / statistics.median(baseline):.2f}×"
    print(line)


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
