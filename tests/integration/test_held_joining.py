"""Attacks on the background joins of a first start."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp import web

from abusebot.events import Event
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, body_contains
from tests.integration.test_durable_actions import KillingProxy
from tests.integration.test_loop import wait_until

Pred = Callable[[str, str], bool]


class GateProxy(KillingProxy):
    """The killing proxy with named gates: requests matching a gate wait for it to open."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.gates: dict[str, tuple[Pred, asyncio.Event, asyncio.Event]] = {}

    def gate(self, name: str, pred: Pred) -> tuple[asyncio.Event, asyncio.Event]:
        opened, held = asyncio.Event(), asyncio.Event()
        self.gates[name] = (pred, opened, held)
        return opened, held

    async def before(self, request: web.Request) -> None:
        for pred, opened, held in list(self.gates.values()):
            if not opened.is_set() and pred(request.method, request.path):
                held.set()
                await opened.wait()
        await super().before(request)

    def open_all(self) -> None:
        for _, opened, _ in self.gates.values():
            opened.set()


@pytest_asyncio.fixture
async def proxy(synapse: SynapseServer) -> AsyncIterator[GateProxy]:
    p = GateProxy(synapse.url)
    await p.start()
    yield p
    p.open_all()
    await p.close()


def join_of(room_id: str) -> Pred:
    return lambda method, path: method == "POST" and "/join/" in path and room_id in path.replace("%21", "!")


def is_sync(method: str, path: str) -> bool:
    return method == "GET" and path.endswith("/sync")


async def _true(value: Any) -> bool:
    return bool(value)


class Seen:
    def __init__(self) -> None:
        self.ids: set[str] = set()

    async def __call__(self, event: Event) -> None:
        self.ids.add(event.event_id)


async def test_spam_between_the_join_and_a_late_first_batch_is_all_seen(
    synapse: SynapseServer, tmp_path: Path, proxy: GateProxy
) -> None:
    """The bot's join lands; its sync is slow (a busy loop, or held here); the spammer sends
    more than a timeline's worth (100). The first batch is then limited: the join is in the
    state block, and the events between the join and the start of the timeline must be fetched
    (as any gap is), not skipped."""
    w = await World.create(synapse, tmp_path, rooms=2)
    try:
        slow = w.protected[1]
        joining, joining_held = proxy.gate("join", join_of(slow))
        w.write_config({"homeserver": proxy.url})
        seen = Seen()
        bot = await w.start_bot(hooks=[seen], settled=False)
        await asyncio.wait_for(joining_held.wait(), 15)
        syncing, sync_held = proxy.gate("sync", is_sync)
        await asyncio.wait_for(sync_held.wait(), 15)  # the loop waits on a held /sync now
        joining.set()
        bot_id = w.bot_account.user_id

        async def in_room() -> bool:
            return await w.mod.membership(slow, bot_id) == "join"

        await wait_until(in_room, 15, "the bot's join")
        spammer = w.members["spammer"]
        sent = [await spammer.say(slow, f"after the join {n}") for n in range(120)]
        syncing.set()
        await wait_until(lambda: _true(bot.settled), 20, "settled")
        await wait_until(lambda: _true(sent[-1] in seen.ids), 20, "the last spam seen")
        await asyncio.sleep(1)
        missed = [n for n, e in enumerate(sent) if e not in seen.ids]
        assert not missed, f"{len(missed)} live events after the bot's join never handled (first {missed[:3]})"
    finally:
        proxy.open_all()
        await w.close()


async def test_kill_9_right_after_a_background_join_still_lets_the_ban_reach_the_room(
    synapse: SynapseServer, tmp_path: Path, proxy: GateProxy
) -> None:
    """``!mod ban`` while a room is being joined; kill -9 the moment the join lands (before the
    bot hears back). After the restart the room is one the bot is "already in": the ban must
    still reach it."""
    w = await World.create(synapse, tmp_path, rooms=2)
    try:
        slow = w.protected[1]
        joining, joining_held = proxy.gate("join", join_of(slow))
        w.write_config({"homeserver": proxy.url})
        await w.mod.start_watching()
        w.spawn_bot()
        await asyncio.wait_for(joining_held.wait(), 60)
        spammer = w.members["spammer"]
        asked = await w.mod.say(w.management, f"!mod ban {spammer.user_id} spam")
        reply = await w.mod.wait_for_reply(w.management, asked, timeout=30)
        print("BAN REPLY:", reply)
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = join_of(slow)
        joining.set()
        await asyncio.wait_for(proxy.fired.wait(), 30)
        assert await w.mod.membership(slow, w.bot_account.user_id) == "join"
        w.spawn_bot()
        await w.mod.wait_for(w.management, body_contains("protecting 2"), timeout=60)

        async def banned() -> bool:
            return await w.mod.membership(slow, spammer.user_id) == "ban"

        await wait_until(banned, 20, "the ban reaching the room joined just before the crash")
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        proxy.open_all()
        await w.close()
