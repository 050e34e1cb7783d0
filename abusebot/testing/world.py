"""A small moderated world on a real Synapse: people, rooms, and a running bot.

Used by the integration tests, ``abusebot demo`` and the benchmarks. Each :class:`World` gets
fresh users (random suffixes) and fresh rooms, so tests sharing one Synapse do not interfere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from abusebot.matrix import API, Homeserver, q
from abusebot.testing.synapse import RegisteredUser, SynapseServer

EventPredicate = Callable[[Mapping[str, Any]], bool]


class Person:
    """A Matrix user driven by a test: sends events and watches rooms through ``/sync``."""

    def __init__(self, url: str, user: RegisteredUser) -> None:
        self.user = user
        self.user_id = user.user_id
        self.hs = Homeserver(url, user.user_id)
        self.hs.restore(user.access_token, user.device_id)
        self.since: str | None = None
        self.seen: dict[str, list[dict[str, Any]]] = {}

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.hs.close()

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """A raw client-server API call as this person."""
        return await self.hs.request(method, path, body, **kwargs)

    async def create_room(
        self,
        *,
        name: str | None = None,
        invite: list[str] | None = None,
        power: Mapping[str, int] | None = None,
        public: bool = True,
        room_version: str | None = None,
        extra_power: Mapping[str, Any] | None = None,
    ) -> str:
        """Create a room; ``power`` sets user levels (the creator keeps 100)."""
        users = dict(power or {})  # the creator gets 100 (or, in v12, unlimited power) by itself
        body: dict[str, Any] = {
            "preset": "public_chat" if public else "private_chat",
            "invite": invite or [],
            "power_level_content_override": {"users": users, **(extra_power or {})},
        }
        if name:
            body["name"] = name
        if room_version:
            body["room_version"] = room_version
        reply = await self.call("POST", f"{API}/createRoom", body)
        return str(reply["room_id"])

    async def join(self, room: str) -> str:
        """Join by id or alias."""
        reply = await self.call("POST", f"{API}/join/{q(room)}", {})
        return str(reply["room_id"])

    async def invite(self, room_id: str, user_id: str) -> None:
        """Invite someone."""
        await self.call("POST", f"{API}/rooms/{q(room_id)}/invite", {"user_id": user_id})

    async def send(self, room_id: str, content: Mapping[str, Any], event_type: str = "m.room.message") -> str:
        """Send any timeline event; returns its id."""
        txn = secrets.token_hex(8)
        reply = await self.call("PUT", f"{API}/rooms/{q(room_id)}/send/{q(event_type)}/{txn}", dict(content))
        return str(reply["event_id"])

    async def say(self, room_id: str, text: str, html: str | None = None) -> str:
        """Send a text message (with an optional HTML body)."""
        content: dict[str, Any] = {"msgtype": "m.text", "body": text}
        if html is not None:
            content.update(format="org.matrix.custom.html", formatted_body=html)
        return await self.send(room_id, content)

    async def put_state(self, room_id: str, event_type: str, content: Mapping[str, Any], state_key: str = "") -> str:
        """Send a state event."""
        reply = await self.call("PUT", f"{API}/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}", dict(content))
        return str(reply["event_id"])

    async def state(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        """One state event's content (``None`` when absent)."""
        return await self.hs.state_event(room_id, event_type, state_key)

    async def membership(self, room_id: str, user_id: str) -> str | None:
        """A user's membership in a room."""
        content = await self.state(room_id, "m.room.member", user_id)
        return None if content is None else content.get("membership")

    async def start_watching(self) -> None:
        """Take a sync position now; :meth:`wait_for` sees events from here on."""
        reply = await self.hs.request(
            "GET", f"{API}/sync", query={"timeout": 0, "filter": '{"room":{"timeline":{"limit":1}}}'}
        )
        self.since = reply["next_batch"]

    async def poll(self, timeout_ms: int = 1000) -> None:
        """One sync; new timeline events are added to :attr:`seen`."""
        if self.since is None:
            await self.start_watching()
        reply = await self.hs.request(
            "GET",
            f"{API}/sync",
            query={"since": self.since, "timeout": timeout_ms, "filter": '{"room":{"timeline":{"limit":200}}}'},
            timeout=timeout_ms / 1000 + 30,
        )
        self.since = reply["next_batch"]
        for room_id, joined in reply.get("rooms", {}).get("join", {}).items():
            self.seen.setdefault(room_id, []).extend(joined.get("timeline", {}).get("events", []))

    async def wait_for(self, room_id: str, predicate: EventPredicate, timeout: float = 15.0) -> dict[str, Any]:
        """The first event in ``room_id`` (seen since watching began) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            events = self.seen.get(room_id, [])
            for event in events[checked:]:
                if predicate(event):
                    return event
            checked = len(events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching event in {room_id} within {timeout}s")
            await self.poll(int(min(remaining, 2.0) * 1000))

    async def wait_for_reply(self, room_id: str, event_id: str, timeout: float = 15.0) -> str:
        """The body of the bot's reply to ``event_id``."""
        event = await self.wait_for(room_id, lambda e: replies_to(e, event_id), timeout)
        return str(event["content"].get("body", ""))


def replies_to(event: Mapping[str, Any], event_id: str) -> bool:
    """True when ``event`` is a rich reply to ``event_id``."""
    content = event.get("content") or {}
    relates = content.get("m.relates_to") or {}
    return (relates.get("m.in_reply_to") or {}).get("event_id") == event_id


def is_redaction_of(event_id: str) -> EventPredicate:
    """Predicate: a redaction of ``event_id`` (room v11+ keeps ``redacts`` in the content)."""

    def predicate(event: Mapping[str, Any]) -> bool:
        redacts = event.get("redacts") or (event.get("content") or {}).get("redacts")
        return event.get("type") == "m.room.redaction" and redacts == event_id

    return predicate


def body_contains(*fragments: str) -> EventPredicate:
    """Predicate: an ``m.room.message`` whose body contains every fragment."""

    def predicate(event: Mapping[str, Any]) -> bool:
        body = (event.get("content") or {}).get("body")
        return event.get("type") == "m.room.message" and isinstance(body, str) and all(f in body for f in fragments)

    return predicate


class World:
    """A management room, protected rooms, a moderator, members, and the bot's config."""

    def __init__(self, synapse: SynapseServer, base: Path) -> None:
        self.synapse = synapse
        self.base = base
        self.tag = secrets.token_hex(3)
        self.people: list[Person] = []
        self.members: dict[str, Person] = {}
        self.bot_account: RegisteredUser
        self.mod: Person
        self.management: str
        self.protected: list[str] = []
        self.config_path = base / "config.yaml"
        self.bot: Any = None
        self._bot_task: asyncio.Task[None] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def person(self, name: str, admin: bool = False) -> Person:
        """Register a new user ``name-<tag>`` and return them."""
        account = self.synapse.register(f"{name}-{self.tag}", admin=admin)
        person = Person(self.synapse.url, account)
        self.people.append(person)
        return person

    @classmethod
    async def create(
        cls,
        synapse: SynapseServer,
        base: Path,
        *,
        rooms: int = 1,
        members: tuple[str, ...] = ("spammer",),
        config: Mapping[str, Any] | None = None,
        room_version: str | None = None,
        bot_admin: bool = False,
    ) -> World:
        """Build the world: users, rooms (bot at 100, moderator at 100), members joined
        (``bot_admin``: the bot's account is a Synapse admin, as for polling reports)."""
        base.mkdir(parents=True, exist_ok=True)
        world = cls(synapse, base)
        world.bot_account = synapse.register(f"abusebot-{world.tag}", admin=bot_admin)
        bot_id = world.bot_account.user_id
        world.mod = world.person("mod")
        world.management = await world.mod.create_room(
            name="Moderators", invite=[bot_id], power={bot_id: 50}, public=False
        )
        for number in range(rooms):
            room_id = await world.mod.create_room(
                name=f"Protected {number + 1}", invite=[bot_id], power={bot_id: 100}, room_version=room_version
            )
            world.protected.append(room_id)

        for name in members:
            member = world.person(name)
            for room_id in world.protected:
                await member.join(room_id)
            world.members[name] = member
        world.write_config(config or {})
        return world

    @classmethod
    async def launch(cls, synapse: SynapseServer, base: Path, **kwargs: Any) -> World:
        """:meth:`create` the world, let the moderator watch the rooms, and start the bot."""
        world = await cls.create(synapse, base, **kwargs)
        await world.mod.start_watching()
        await world.start_bot()
        return world

    def write_config(self, extra: Mapping[str, Any]) -> None:
        """Write the bot's YAML config (``extra`` keys override the defaults)."""
        data: dict[str, Any] = {
            "homeserver": self.synapse.url,
            "user_id": self.bot_account.user_id,
            "password": self.bot_account.password,
            "data_dir": str(self.base / "data"),
            "management_room": self.management,
            "protected_rooms": list(self.protected),
            "logging": {"format": "console", "level": "warning"},
            "sync_timeout_ms": 5000,
            **extra,
        }
        self.config_path.write_text(yaml.safe_dump(data))

    async def start_bot(
        self, hooks: Sequence[Callable[[Any], Awaitable[None]]] = (), timeout: float = 30, *, settled: bool = True
    ) -> Any:
        """Run the bot in this process (as a task) and wait (at most ``timeout`` s) until it is syncing
        and (``settled``) has joined the rooms it joins in the background at a first start.

        ``hooks`` are appended to ``bot.hooks`` before the first sync, so they see every event.
        """
        from abusebot.bot import Bot
        from abusebot.config import load_config

        bot = Bot(load_config(self.config_path))
        bot.hooks.extend(hooks)
        self.bot = bot
        self._bot_task = asyncio.create_task(bot.run(), name="bot")
        deadline = time.monotonic() + timeout
        while not (bot.settled if settled else bot.last_sync_at is not None):
            if self._bot_task.done():
                self._bot_task.result()
                raise RuntimeError("the bot stopped during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not complete a sync within {timeout}s")
            await asyncio.sleep(0.02)
        return bot

    async def stop_bot(self) -> None:
        """Stop the in-process bot gracefully."""
        if self.bot is not None and self._bot_task is not None:
            self.bot.stop()
            await asyncio.wait_for(self._bot_task, 30)
        self.bot = None
        self._bot_task = None

    def spawn_bot(self) -> subprocess.Popen[bytes]:
        """Run the bot as a separate process (``python -m abusebot run``), for kill -9 tests."""
        log = open(self.base / "bot-process.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "abusebot", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        return self.process

    def kill_bot(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the bot process and wait for it to end."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None

    async def close(self) -> None:
        """Stop the bot and close every person's session."""
        with contextlib.suppress(Exception):
            await self.stop_bot()
        self.kill_bot()
        for person in self.people:
            await person.close()
