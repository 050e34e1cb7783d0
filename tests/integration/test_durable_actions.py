"""Two holes the write path had, reproduced against a real Synapse, closed by the outbox (record,
do idempotently, mark done; resume at start) and serialised state writes:

* ``kill -9`` right after a ban reached the homeserver: the ban stays in force, its infraction
  ``pending`` forever, with no lift and no reply (the command's replay key was claimed first).
* Mutes of different users from one batch read-modify-write ``m.room.power_levels`` at once, and
  all but one of them are lost, although each reports success.

The kill is placed exactly with a small proxy between the bot and Synapse: it forwards every
request, and when the homeserver has answered the ban it kills the bot before the answer
returns, the worst moment for a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest_asyncio
from aiohttp import web

from abusebot.actions import Actor, Scope
from abusebot.testing.proxy import Proxy
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, is_redaction_of
from tests.integration.test_loop import infractions_from, ledger_query, wait_for_checkpoint, wait_until


class KillingProxy(Proxy):
    """Forwards HTTP to ``upstream``; after a matching request succeeds upstream, calls ``kill``
    (once) instead of answering. Requests matching ``hold`` wait for ``release`` first."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.trigger: Callable[[str, str], bool] | None = None
        self.hold: Callable[[str, str], bool] | None = None
        self.release = asyncio.Event()
        self.held = asyncio.Event()
        self.kill: Callable[[], None] = lambda: None
        self.fired = asyncio.Event()

    async def before(self, request: web.Request) -> None:
        if self.hold is not None and self.hold(request.method, request.path):
            self.held.set()
            await self.release.wait()

    async def after(self, request: web.Request, status: int, body: bytes) -> bytes:
        trigger = self.trigger
        if trigger is not None and status < 300 and trigger(request.method, request.path):
            self.trigger = None
            self.kill()
            self.fired.set()
            raise web.HTTPBadGateway()  # the bot is gone; nobody reads this
        return body


@pytest_asyncio.fixture
async def proxy(synapse: SynapseServer) -> AsyncIterator[KillingProxy]:
    """A killing proxy in front of the session's Synapse."""
    p = KillingProxy(synapse.url)
    await p.start()
    yield p
    await p.close()


async def test_kill_9_right_after_a_ban_lands_still_lifts_it_on_time(
    synapse: SynapseServer, tmp_path: Path, proxy: KillingProxy
) -> None:
    """``!mod ban @u 5s``; the bot is SIGKILLed the moment Synapse has applied the ban. After a
    restart the ban must still be temporary: lifted on time, its infraction not left ``pending``,
    and the moderator answered."""
    w = await World.create(synapse, tmp_path)
    try:
        spammer, room = w.members["spammer"].user_id, w.protected[0]
        w.write_config({"homeserver": proxy.url})
        await w.mod.start_watching()
        w.spawn_bot()
        await wait_for_checkpoint(w)
        proxy.kill = lambda: w.kill_bot(signal.SIGKILL)
        proxy.trigger = lambda method, path: method == "POST" and path.endswith("/ban")

        command = await w.mod.say(w.management, f"!mod ban {spammer} 5s cooling off")
        await asyncio.wait_for(proxy.fired.wait(), 30)
        assert await w.mod.membership(room, spammer) == "ban"  # the crash came after the ban took hold
        started = time.monotonic()
        w.spawn_bot()

        async def lifted_and_settled() -> bool:
            states = [state for _, _, state in infractions_from(w, command)]
            return await w.mod.membership(room, spammer) != "ban" and states == ["expired"]

        await wait_until(lifted_and_settled, 25, "the 5 s ban lifted and its infraction expired after the crash")
        assert time.monotonic() - started < 25
        assert ledger_query(w, "SELECT COUNT(*) FROM infractions WHERE state = 'pending'") == [(0,)]
        await w.mod.wait_for_reply(w.management, command, timeout=10)
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        await w.close()


async def test_four_mutes_at_once_all_hold_on_the_homeserver(synapse: SynapseServer, tmp_path: Path) -> None:
    """Four users muted at the same moment (as four violations of one batch are): all four are at
    the muted level in the room afterwards, as the ledger says."""
    names = ("m1", "m2", "m3", "m4")
    w = await World.launch(synapse, tmp_path, members=names)
    try:
        room = w.protected[0]
        moderation = w.bot.moderation
        actor = Actor("protection:test", "protection")
        users = [w.members[name].user_id for name in names]
        outcomes = await asyncio.gather(
            *(
                moderation.mute(user, "at once", actor, Scope.everywhere(w.bot.store), duration_s=3600)
                for user in users
            )
        )
        assert all(outcome.ok for outcome in outcomes)
        assert len(ledger_query(w, "SELECT id FROM infractions WHERE kind = 'mute' AND state = 'active'")) == 4
        levels = (await w.mod.state(room, "m.room.power_levels") or {}).get("users", {})
        assert {user: levels.get(user) for user in users} == dict.fromkeys(users, -1)
    finally:
        await w.close()


async def test_twenty_mutes_and_unmutes_at_once_all_hold(synapse: SynapseServer, tmp_path: Path) -> None:
    """Ten users muted and ten unmuted, all twenty at the same moment, in one room: the room's power
    levels end exactly as the ledger says (serialised state writes lose none of them)."""
    names = tuple(f"u{n}" for n in range(20))
    w = await World.launch(synapse, tmp_path, members=names)
    try:
        room, moderation = w.protected[0], w.bot.moderation
        actor = Actor("@mod:test", "command")
        everywhere = Scope.everywhere(w.bot.store)
        users = [w.members[name].user_id for name in names]
        to_unmute, to_mute = users[:10], users[10:]
        first = await asyncio.gather(
            *(moderation.mute(u, "set-up", actor, everywhere, duration_s=3600) for u in to_unmute)
        )
        assert all(outcome.ok for outcome in first)
        outcomes = await asyncio.gather(
            *(moderation.mute(u, "at once", actor, everywhere, duration_s=3600) for u in to_mute),
            *(moderation.unmute(u, "at once", actor, everywhere) for u in to_unmute),
        )
        assert all(outcome.ok for outcome in outcomes)
        levels = (await w.mod.state(room, "m.room.power_levels") or {}).get("users", {})
        assert {u: levels.get(u) for u in users} == {**dict.fromkeys(to_mute, -1), **dict.fromkeys(to_unmute)}
        active = ledger_query(w, "SELECT subject FROM infractions WHERE kind = 'mute' AND state = 'active'")
        assert sorted(subject for (subject,) in active) == sorted(to_mute)
    finally:
        await w.close()


async def test_a_long_redact_command_does_not_delay_a_spam_redaction(synapse: SynapseServer, tmp_path: Path) -> None:
    """While ``!mod redact`` works through 150 messages, a spam message is redacted before that
    command is done: commands run off the sync loop, and harm removal goes first in the queue."""
    phrase = "buy cheap crypto"
    w = await World.create(
        synapse, tmp_path, members=("chatty", "spammer"), config={"protections": {"spam": {"banned_words": [phrase]}}}
    )
    try:
        chatty, spammer, room = w.members["chatty"], w.members["spammer"], w.protected[0]
        for number in range(150):
            await chatty.say(room, f"an ordinary message {number}")
        await w.mod.start_watching()
        await w.start_bot()
        command = await w.mod.say(w.management, f"!mod redact {chatty.user_id} 150")
        await w.mod.wait_for(room, is_redaction_of_sender_in(w, chatty.user_id))  # the command is under way
        spam = await spammer.say(room, f"{phrase} now")
        await w.mod.wait_for(room, is_redaction_of(spam), timeout=30)
        spam_done = time.monotonic()
        reply = await w.mod.wait_for_reply(w.management, command, timeout=120)
        command_done = time.monotonic()
        assert "150 message(s) removed" in reply
        assert spam_done < command_done
    finally:
        await w.close()


def is_redaction_of_sender_in(w: World, sender: str) -> Callable[[dict[str, object]], bool]:
    """Any redaction by the bot (the command's first ones)."""
    bot = w.bot_account.user_id
    return lambda event: event.get("type") == "m.room.redaction" and event.get("sender") == bot
