"""Helpers for attacking the encryption support: hand-made encrypted events and withheld keys."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from abusebot.matrix import API, q
from abusebot.testing.e2e import EncryptedPerson
from abusebot.testing.world import Person


async def eventually(check: Any, timeout: float = 20, what: str = "condition") -> None:
    """Wait until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what} not met within {timeout}s")


def raw_of(url: str, person: EncryptedPerson) -> Person:
    """A plain HTTP client with the encrypted person's token (to send hand-made events)."""
    return Person(url, person.account)


async def send_encrypted(raw: Person, room: str, content: dict[str, Any]) -> str:
    """Send hand-made ``m.room.encrypted`` content; returns the event id."""
    reply = await raw.call("PUT", f"{API}/rooms/{q(room)}/send/m.room.encrypted/{uuid.uuid4().hex}", content)
    return str(reply["event_id"])


async def to_device(raw: Person, event_type: str, messages: dict[str, Any]) -> None:
    """Send a hand-made to-device message."""
    await raw.call("PUT", f"{API}/sendToDevice/{q(event_type)}/{uuid.uuid4().hex}", {"messages": messages})


async def withheld_session(person: EncryptedPerson, room: str, users: list[str]) -> list[dict[str, Any]]:
    """Start a new outbound Megolm session for ``room`` and return its key-share to-device
    bodies *without sending them*; the session is marked shared so group_encrypt works."""
    await person.settle()
    olm = person.client.olm
    assert olm is not None
    olm.create_outbound_group_session(room)
    missing = olm.get_missing_sessions(users)
    if missing:
        await person.client.keys_claim(missing)
    shares = [body for _, body in olm.share_group_session_parallel(room, users, ignore_unverified_devices=True)]
    olm.outbound_group_sessions[room].shared = True
    return shares


def encrypt(
    person: EncryptedPerson, room: str, event_type: str, content: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """Megolm content for any cleartext, with the person's current session (a hostile client)."""
    olm = person.client.olm
    assert olm is not None
    return dict(olm.group_encrypt(room, {"type": event_type, "content": content, **extra}))


def waiting(world: Any) -> int:
    """How many encrypted events wait for their key in the bot's ledger (read from outside)."""
    from tests.integration.test_loop import ledger_query

    return int(ledger_query(world, "SELECT COUNT(*) FROM waiting_for_keys")[0][0])


def forged(session_id: str) -> dict[str, Any]:
    """Megolm-shaped content naming a session nobody shared (never decryptable)."""
    return {
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": "x" * 43,
        "ciphertext": "c",
        "session_id": session_id,
        "device_id": "D",
    }
