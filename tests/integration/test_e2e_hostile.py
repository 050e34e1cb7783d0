"""Hostile to-device and malformed m.room.encrypted events from a plain user."""

from __future__ import annotations

from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import is_redaction_of
from tests.integration.conftest import MakePerson
from tests.integration.e2e_helpers import eventually, send_encrypted, to_device
from tests.integration.test_encryption import SPAM, encrypted_world

MEGOLM = "m.megolm.v1.aes-sha2"
OLM = "m.olm.v1.curve25519-aes-sha2"
HUGE = "A" * 30000


async def test_hostile_to_device_and_malformed_encrypted_events_do_not_stop_the_bot(
    synapse: SynapseServer, tmp_path: Path, encrypted_person: MakePerson
) -> None:
    w, mod, management, room = await encrypted_world(synapse, tmp_path, encrypted_person, SPAM)
    try:
        bot_id = w.bot_account.user_id
        spammer = w.person("hostile")
        await mod.invite(room, spammer.user_id)
        await spammer.join(room)
        bot = await w.start_bot()
        device = bot.hs.device_id
        curve = bot.crypto.identity_keys["curve25519"]
        bad_to_device = [
            ("m.room.encrypted", {"algorithm": OLM, "sender_key": 5, "ciphertext": {"x": {"type": "0", "body": {}}}}),
            (
                "m.room.encrypted",
                {"algorithm": OLM, "sender_key": "y" * 43, "ciphertext": {curve: {"type": 0, "body": "garbage"}}},
            ),
            (
                "m.room.encrypted",
                {"algorithm": OLM, "sender_key": "y" * 43, "ciphertext": {curve: {"type": 1, "body": HUGE}}},
            ),
            ("m.room.encrypted", {"algorithm": OLM, "sender_key": "y" * 43, "ciphertext": [1, 2]}),
            ("m.room.encrypted", {"algorithm": MEGOLM, "sender_key": "y" * 43, "ciphertext": "z", "session_id": "s"}),
            ("m.room_key", {"algorithm": MEGOLM, "room_id": room, "session_id": 1, "session_key": "x"}),
            ("m.room_key", {"algorithm": MEGOLM, "room_id": room, "session_id": "s1", "session_key": "AAAA"}),
            (
                "m.forwarded_room_key",
                {
                    "algorithm": MEGOLM,
                    "room_id": room,
                    "session_id": "s1",
                    "session_key": "x",
                    "sender_key": "y",
                    "sender_claimed_ed25519_key": "z",
                    "forwarding_curve25519_key_chain": "notalist",
                },
            ),
            (
                "m.room_key_request",
                {"action": "request", "body": "notadict", "request_id": 7, "requesting_device_id": ["x"]},
            ),
            ("m.room_key_request", {"action": "request_cancellation", "request_id": {}, "requesting_device_id": 1}),
            ("m.key.verification.request", {"from_device": 1, "methods": "x", "transaction_id": {}}),
            (
                "m.key.verification.start",
                {
                    "from_device": "X",
                    "method": "m.sas.v1",
                    "transaction_id": "t",
                    "key_agreement_protocols": 1,
                    "hashes": None,
                },
            ),
            ("m.dummy", {}),
        ]
        for event_type, content in bad_to_device:
            await to_device(spammer, event_type, {bot_id: {device: content}})
            await to_device(spammer, event_type, {bot_id: {"*": content}})
        bad_room = [
            {"algorithm": MEGOLM, "sender_key": "x" * 43, "ciphertext": "c", "session_id": 12345, "device_id": "D"},
            {"algorithm": MEGOLM, "sender_key": "x" * 43, "ciphertext": {"a": 1}, "session_id": "s2", "device_id": "D"},
            {"algorithm": MEGOLM, "ciphertext": "c", "session_id": "s3", "device_id": "D"},
            {"algorithm": MEGOLM, "sender_key": HUGE, "ciphertext": HUGE, "session_id": "s4", "device_id": HUGE[:1000]},
            {"algorithm": MEGOLM, "sender_key": "x" * 43, "ciphertext": "c", "session_id": HUGE, "device_id": "D"},
            {"algorithm": MEGOLM, "sender_key": "x" * 43, "ciphertext": "c", "session_id": {"x": 1}, "device_id": "D"},
            {"algorithm": OLM, "sender_key": "x" * 43, "ciphertext": {curve: {"type": 0, "body": "x"}}},
            {"algorithm": 7},
            {},
            {"algorithm": MEGOLM, "sender_key": None, "ciphertext": None, "session_id": None, "device_id": None},
            {"algorithm": MEGOLM, "sender_key": "x" * 43, "ciphertext": "c", "session_id": "s5", "device_id": 5},
            {
                "algorithm": MEGOLM,
                "sender_key": "x" * 43,
                "ciphertext": "c",
                "session_id": "s6",
                "device_id": "D",
                "m.relates_to": "notadict",
            },
            {
                "algorithm": MEGOLM,
                "sender_key": "x" * 43,
                "ciphertext": "c",
                "session_id": "s7",
                "device_id": "D",
                "m.relates_to": {"rel_type": "m.replace", "event_id": 5},
            },
        ]
        for content in bad_room:
            await send_encrypted(spammer, room, content)
        # device_lists / weird sync parts are from the server: not attacker-controlled.
        await eventually(lambda: bot.crypto.undecryptable >= len(bad_room) - 1, 30, "malformed events seen")
        spam = await spammer.say(room, "buy cheap pills here")
        await w.mod.wait_for(room, is_redaction_of(spam), timeout=20)
        await mod.say(management, "!mod status")
        status = await mod.wait_for_text(management, lambda e: e.sender == bot_id and "Encryption:" in e.body, 30)
        assert "undecryptable" in status.body
        assert w._bot_task is not None
        assert not w._bot_task.done()
        # a legitimate encrypted command still decrypts after all that
        await mod.say(management, "!mod help")
        await mod.wait_for_text(management, lambda e: e.sender == bot_id and "status" in e.body, 30)
    finally:
        await w.close()
