"""A test user with encryption: matrix-nio's own client, with its own key store in a temp dir.

It is a different implementation from the bot's (nio's ``AsyncClient`` runs the whole sync and
key exchange itself), so a test where it reads the bot's encrypted reply checks the bot against
a client that is not the bot's own code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nio import AsyncClient, AsyncClientConfig, MegolmEvent, RoomMessageNotice, RoomMessageText
from nio.exceptions import LocalProtocolError
from nio.responses import RoomCreateResponse, RoomSendResponse

from abusebot.testing.synapse import RegisteredUser

ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


class EncryptedPerson:
    """A registered user whose client encrypts and decrypts (nio with the ``e2e`` extra)."""

    def __init__(self, url: str, account: RegisteredUser, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        self.account = account
        self.user_id = account.user_id
        self.client = AsyncClient(
            url,
            account.user_id,
            device_id=account.device_id,
            store_path=str(store),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
        )
        self.client.restore_login(account.user_id, account.device_id, account.access_token)
        #: room id → the events seen there (decrypted where nio could).
        self.seen: dict[str, list[Any]] = {}
        self.client.add_event_callback(self._on_event, (RoomMessageText, RoomMessageNotice, MegolmEvent))
        self._task: asyncio.Task[None] | None = None

    async def _on_event(self, room: Any, event: Any) -> None:
        self.seen.setdefault(room.room_id, []).append(event)

    async def start(self) -> None:
        """Upload keys and sync until closed."""
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        await self.client.sync(timeout=0, full_state=True)
        self._task = asyncio.create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        # nio's loop ends on its own races (a key query another call made first: "No key query
        # required"); a test client must keep syncing all the same.
        while True:
            with contextlib.suppress(LocalProtocolError):
                await self.client.sync_forever(timeout=1000, full_state=True)
            await asyncio.sleep(0.1)

    async def settle(self) -> None:
        """One more sync round, so the rooms' members and devices are known before sending."""
        await self.client.sync(timeout=0)
        if self.client.should_query_keys:
            with contextlib.suppress(LocalProtocolError):  # the sync loop queried them first
                await self.client.keys_query()

    async def create_room(
        self, *, name: str | None, invite: list[str], power: dict[str, int] | None = None, direct: bool = False
    ) -> str:
        """An encrypted, private room (``direct``: a direct chat, as Element opens one); ``power``
        sets user levels."""
        reply = await self.client.room_create(
            name=name,
            invite=invite,
            is_direct=direct,
            initial_state=[ENCRYPTION],
            power_level_override={"users": dict(power or {})},  # the creator has 100 (or more, in v12)
        )
        assert isinstance(reply, RoomCreateResponse), reply
        return str(reply.room_id)

    async def invite(self, room_id: str, user_id: str) -> None:
        """Invite someone."""
        await self.client.room_invite(room_id, user_id)

    async def join(self, room_id: str) -> None:
        """Join a room (invited first, for a private one)."""
        await self.client.join(room_id)

    async def say(self, room_id: str, text: str) -> str:
        """Send an (encrypted, in an encrypted room) text message; returns its event id."""
        await self.settle()
        reply = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": text}, ignore_unverified_devices=True
        )
        assert isinstance(reply, RoomSendResponse), reply
        return str(reply.event_id)

    async def wait_for_text(self, room_id: str, test: Callable[[Any], bool], timeout: float = 20) -> Any:
        """The first text message or notice in ``room_id`` that passes ``test``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.seen.get(room_id, []):
                if isinstance(event, (RoomMessageText, RoomMessageNotice)) and test(event):
                    return event
            await asyncio.sleep(0.1)
        events = self.seen.get(room_id, [])
        undecrypted = [e for e in events if isinstance(e, MegolmEvent)]
        syncing = "syncing" if self._task is not None and not self._task.done() else f"not syncing: {self._task}"
        raise TimeoutError(
            f"no matching message in {room_id} within {timeout}s ({len(events)} seen, {len(undecrypted)}"
            f" undecrypted; {syncing})"
        )

    async def close(self) -> None:
        """Stop syncing and close the client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.close()
