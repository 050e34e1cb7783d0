"""Encrypted rooms: spam → redaction seen in an encrypted protected room, and the cost of one
decryption.

Run by hand (not a test)::

    .venv/bin/python -m benchmarks.bench_encrypted [--trials 20] [--decrypt-events 2000]

It starts its own Synapse on 127.0.0.1 and runs the bot in this process. The protected room is
encrypted; an encrypted moderator (matrix-nio's own client, ``abusebot.testing.e2e``) made it,
and a spammer with an encrypting client is a member. The config bans the phrase "buy cheap
pills". An observer (a plain member; it needs no keys: both the envelopes and the redactions
arrive as events) timestamps arrivals in its own ``/sync`` loop. Each trial, alternating:

(a) baseline: the spammer's harmless *encrypted* message, from just before its send until the
    observer's ``/sync`` delivers it (one hop through the homeserver);
(b) the spammer's encrypted message with the banned phrase, until the observer sees its
    redaction (the bot's sync, decryption, the pipeline, the redact request, the observer's sync).

One spammer sends every trial (so its room key is shared once, before the timers; the ladder's
step after the first trial is a mute or ban in the ledger only: ``escalation`` is set so every
offence is a warning). Then, with no homeserver: the bot's own :class:`~abusebot.crypto.Crypto`
decrypts ``--decrypt-events`` Megolm events made by a second vodozemac session (µs per event),
against parsing the same number of plain events (:func:`abusebot.events.parse_event`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from abusebot.testing.e2e import EncryptedPerson
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from benchmarks._stats import percentile
from benchmarks.bench_reaction_latency import RedactionObserver

CONFIG = {
    "protections": {"spam": {"banned_words": ["buy cheap pills"]}, "escalation": {"ladder": ["warning"]}},
    "notify_users": False,
}


async def reaction(args: argparse.Namespace, base: Path, synapse: SynapseServer) -> tuple[list[float], list[float]]:
    """(plain trips, spam → redaction) in seconds, alternating, in one encrypted room."""
    w = await World.create(synapse, base / "world", members=())
    bot_id = w.bot_account.user_id
    people: list[EncryptedPerson] = []
    try:
        mod = EncryptedPerson(synapse.url, synapse.register(f"emod-{w.tag}"), base / "emod")
        spammer = EncryptedPerson(synapse.url, synapse.register(f"espam-{w.tag}"), base / "espam")
        people += [mod, spammer]
        for person in people:
            await person.start()
        room = await mod.create_room(
            name="Encrypted lobby", invite=[bot_id, w.mod.user_id, spammer.user_id], power={bot_id: 100}
        )
        await w.mod.join(room)
        await spammer.join(room)
        w.write_config({"protected_rooms": [room], **CONFIG})
        await w.mod.start_watching()
        await w.start_bot()
        observer = RedactionObserver(w.mod, room)
        await observer.start()
        await spammer.say(room, "warming up")  # shares the spammer's room key with the bot, untimed
        await asyncio.sleep(1)
        plain: list[float] = []
        spam: list[float] = []
        for trial in range(args.trials + 1):
            await spammer.settle()  # untimed: members and devices known, the room key shared
            started = time.perf_counter()
            event_id = await send(spammer, room, f"hello {trial}")
            arrived = await observer.event(event_id) - started
            await asyncio.sleep(0.3)
            await spammer.settle()
            started = time.perf_counter()
            event_id = await send(spammer, room, f"buy cheap pills {trial}")
            redacted = await observer.redaction(event_id) - started
            if trial:  # the first is a warm-up
                plain.append(arrived)
                spam.append(redacted)
            await asyncio.sleep(0.3)
        await observer.stop()
        return plain, spam
    finally:
        for person in people:
            await person.close()
        await w.close()


async def send(person: EncryptedPerson, room: str, text: str) -> str:
    """Encrypt and send, nothing else (the timed part of a trial)."""
    from nio.responses import RoomSendResponse

    reply = await person.client.room_send(
        room, "m.room.message", {"msgtype": "m.text", "body": text}, ignore_unverified_devices=True
    )
    assert isinstance(reply, RoomSendResponse), reply
    return str(reply.event_id)


def decryption_cost(count: int, base: Path) -> tuple[float, float]:
    """(µs per decrypted event, µs per parsed plain event), the bot's own code, no homeserver."""
    import vodozemac
    from nio.crypto import InboundGroupSession

    from abusebot.crypto import Crypto
    from abusebot.events import parse_event

    crypto = Crypto("@bot:bench", "BENCHDEV", base / "crypto")
    sender_key = "s" * 43
    outbound = vodozemac.GroupSession()
    inbound = InboundGroupSession(outbound.session_key.to_base64(), "e" * 43, sender_key, "!room:bench")
    crypto.olm.inbound_group_store.add(inbound)
    room = "!room:bench"
    events: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []
    for n in range(count):
        content = {"msgtype": "m.text", "body": f"message {n} with some words in it"}
        payload = '{"type":"m.room.message","room_id":"!room:bench","content":' + _json(content) + "}"
        base_event = {"event_id": f"$e{n}", "sender": "@u:bench", "origin_server_ts": 1_700_000_000_000 + n}
        events.append(
            {
                **base_event,
                "type": "m.room.encrypted",
                "content": {
                    "algorithm": "m.megolm.v1.aes-sha2",
                    "sender_key": sender_key,
                    "ciphertext": outbound.encrypt(payload.encode()).to_base64(),
                    "session_id": outbound.session_id,
                    "device_id": "SENDER",
                },
            }
        )
        plain.append({**base_event, "type": "m.room.message", "content": content})
    started = time.perf_counter()
    for raw in events:
        clear, _ = crypto.decrypt(raw, room)
        assert clear is not None
        assert clear["content"]["msgtype"] == "m.text"
        parse_event(clear, room)
    decrypt_us = (time.perf_counter() - started) / count * 1e6
    started = time.perf_counter()
    for raw in plain:
        parse_event(raw, room)
    parse_us = (time.perf_counter() - started) / count * 1e6
    return decrypt_us, parse_us


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-encrypted-"))
    decrypt_us, parse_us = decryption_cost(args.decrypt_events, base)
    print(f"decryption, {args.decrypt_events} events, the bot's Crypto.decrypt + parse_event, no homeserver:")
    print(
        f"  {decrypt_us:.1f} µs per encrypted event; a plain event's parse {parse_us:.1f} µs"
        f" ({decrypt_us / parse_us:.0f}x)"
    )
    synapse = SynapseServer(base_dir=base / "synapse")
    synapse.start()
    try:
        plain, spam = await reaction(args, base, synapse)
    finally:
        synapse.stop()
    p50_plain, p50_spam = statistics.median(plain), statistics.median(spam)
    p90_plain, p90_spam = percentile(plain, 90), percentile(spam, 90)
    print(f"\nencrypted protected room, {len(plain)} trials each, alternating:")
    print(f"  (a) a plain encrypted message's trip: p50 {p50_plain * 1000:6.1f} ms, p90 {p90_plain * 1000:6.1f} ms")
    print(f"  (b) spam → its redaction seen:        p50 {p50_spam * 1000:6.1f} ms, p90 {p90_spam * 1000:6.1f} ms")
    print(f"  ratio (b)/(a): p50 {p50_spam / p50_plain:.2f}x, p90 {p90_spam / p90_plain:.2f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--decrypt-events", type=int, default=2000)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
