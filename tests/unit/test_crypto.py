"""The bot's decryption, field by field, with a real Megolm session (vodozemac) and nio's store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import vodozemac
from nio.crypto import InboundGroupSession, OlmDevice
from nio.events import RoomKeyEvent

from abusebot.crypto import MEGOLM, Crypto

ROOM = "!room:example.org"
SENDER_KEY = "s" * 43


class Sender:
    """A member's outbound Megolm session, its key already in the bot's store."""

    def __init__(self, crypto: Crypto, room: str = ROOM) -> None:
        self.outbound = vodozemac.GroupSession()
        self.key = self.outbound.session_key.to_base64()  # from index 0: every message readable
        crypto.olm.inbound_group_store.add(InboundGroupSession(self.key, "e" * 43, SENDER_KEY, room))
        self.count = 0

    def event(self, body: str = "hello", *, room: str = ROOM, sender: str = "@u:example.org", **plain: Any) -> dict:
        self.count += 1
        payload = {"type": "m.room.message", "room_id": room, "content": {"msgtype": "m.text", "body": body}, **plain}
        return {
            "type": "m.room.encrypted",
            "event_id": f"$e{self.count}",
            "sender": sender,
            "origin_server_ts": 1000 + self.count,
            "content": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "sender_key": SENDER_KEY,
                "ciphertext": self.outbound.encrypt(json.dumps(payload).encode()).to_base64(),
                "session_id": self.outbound.session_id,
                "device_id": "DEV",
            },
        }


@pytest.fixture
def crypto(tmp_path: Path) -> Crypto:
    return Crypto("@bot:example.org", "BOTDEV", tmp_path / "crypto")


def test_cleartext_keeps_the_envelopes_id_sender_and_time(crypto: Crypto) -> None:
    raw = Sender(crypto).event("hi there")
    clear, waits = crypto.decrypt(raw, ROOM)
    assert clear is not None
    assert waits is None
    assert (clear["type"], clear["content"]["body"]) == ("m.room.message", "hi there")
    assert (clear["event_id"], clear["sender"], clear["origin_server_ts"]) == ("$e1", "@u:example.org", 1001)
    assert crypto.decrypted == 1


def test_a_replayed_ciphertext_under_another_event_is_refused(crypto: Crypto) -> None:
    raw = Sender(crypto).event("original")
    assert crypto.decrypt(raw, ROOM)[0] is not None
    assert crypto.decrypt(raw, ROOM)[0] is not None  # the same event again (a replayed batch) is fine
    copy = {**raw, "event_id": "$copy", "sender": "@mallory:example.org"}
    assert crypto.decrypt(copy, ROOM) == (None, None)
    assert crypto.undecryptable == 1


def test_cleartext_for_another_room_is_refused(crypto: Crypto) -> None:
    raw = Sender(crypto).event("elsewhere", room="!other:example.org")
    assert crypto.decrypt(raw, ROOM) == (None, None)


def test_a_known_device_whose_key_differs_is_a_forged_attribution(crypto: Crypto) -> None:
    sender = Sender(crypto)
    crypto.olm.device_store.add(OlmDevice("@u:example.org", "DEV", {"ed25519": "e" * 43, "curve25519": "other"}))
    assert crypto.decrypt(sender.event(), ROOM) == (None, None)


@pytest.mark.parametrize("event_type", ["m.room.member", "m.room.power_levels", "m.policy.rule.user", "m.space.child"])
def test_cleartext_claiming_a_state_or_control_type_is_refused(crypto: Crypto, event_type: str) -> None:
    """A member's encrypted "m.room.member" would be a forged join (a faked join wave)."""
    sender = Sender(crypto)
    raw = sender.event()
    payload = {"type": event_type, "room_id": ROOM, "content": {"membership": "join"}}
    raw["content"]["ciphertext"] = sender.outbound.encrypt(json.dumps(payload).encode()).to_base64()
    assert crypto.decrypt(raw, ROOM) == (None, None)


def test_reactions_stickers_and_polls_may_be_encrypted(crypto: Crypto) -> None:
    sender = Sender(crypto)
    for event_type in ("m.reaction", "m.sticker", "m.poll.start", "m.room.message"):
        raw = sender.event()
        payload = {"type": event_type, "room_id": ROOM, "content": {"body": "x"}}
        raw["content"]["ciphertext"] = sender.outbound.encrypt(json.dumps(payload).encode()).to_base64()
        clear, _ = crypto.decrypt(raw, ROOM)
        assert clear is not None
        assert clear["type"] == event_type


@pytest.mark.parametrize(
    "content",
    [
        {"algorithm": "m.megolm.v1.aes-sha2", "sender_key": 5, "session_id": "s", "ciphertext": "c"},
        {"algorithm": "m.megolm.v1.aes-sha2", "sender_key": "k", "session_id": ["s"], "ciphertext": "c"},
        {"algorithm": "m.megolm.v1.aes-sha2", "sender_key": "k", "session_id": "s", "ciphertext": {"a": 1}},
        {"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {}},
        {"algorithm": None},
        {},
    ],
)
def test_malformed_envelopes_are_counted_never_raised(crypto: Crypto, content: dict[str, Any]) -> None:
    raw = {"type": "m.room.encrypted", "event_id": "$x", "sender": "@u:example.org", "content": content}
    assert crypto.decrypt(raw, ROOM) == (None, None)  # nothing to wait for: no key makes these readable
    assert crypto.undecryptable == 1


def test_garbage_ciphertext_of_a_known_session_is_counted(crypto: Crypto) -> None:
    raw = Sender(crypto).event()
    raw["content"]["ciphertext"] = "AAAA" * 40
    assert crypto.decrypt(raw, ROOM) == (None, None)


def test_an_event_waits_for_its_key_which_is_asked_for_once(crypto: Crypto, tmp_path: Path) -> None:
    other = Crypto("@bot:example.org", "BOTDEV", tmp_path / "elsewhere")
    sender = Sender(other)  # the key is in another store: not ours yet
    raw = sender.event("late")
    assert crypto.decrypt(raw, ROOM) == (None, sender.outbound.session_id)
    request = crypto.key_request(raw, ROOM)
    assert request is not None
    body = request[1]["messages"]["@u:example.org"]["*"]
    assert body["body"]["session_id"] == sender.outbound.session_id
    assert crypto.key_request(raw, ROOM) is None  # asked once per session
    assert sender.outbound.session_id in crypto.olm.outgoing_key_requests  # so nio accepts the answer

    crypto.olm.inbound_group_store.add(InboundGroupSession(sender.key, "e" * 43, SENDER_KEY, ROOM))
    arrived = RoomKeyEvent({}, "@u:example.org", SENDER_KEY, ROOM, sender.outbound.session_id, "m.megolm.v1.aes-sha2")
    crypto.olm.handle_to_device_event = lambda event: arrived  # type: ignore[method-assign]
    olm = {"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": SENDER_KEY, "ciphertext": {}}
    to_device = {"events": [{"type": "m.room.encrypted", "sender": "@u:x", "content": olm}]}
    sessions = crypto.receive({"to_device": to_device})
    assert sessions == {sender.outbound.session_id}
    clear, _ = crypto.decrypt(raw, ROOM)
    assert clear is not None
    assert clear["content"]["body"] == "late"


def test_an_over_long_session_id_is_neither_kept_nor_asked_for(crypto: Crypto) -> None:
    content = {"algorithm": MEGOLM, "sender_key": "k", "session_id": "s" * 5000, "ciphertext": "c"}
    raw = {"type": "m.room.encrypted", "event_id": "$x", "sender": "@u:example.org", "content": content}
    assert crypto.decrypt(raw, ROOM) == (None, None)
    assert crypto.key_request(raw, ROOM) is None


def test_remembered_key_requests_are_bounded(crypto: Crypto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("abusebot.crypto.MAX_REQUESTED", 10)
    for n in range(50):
        content = {"algorithm": MEGOLM, "sender_key": "k", "session_id": f"s{n}", "ciphertext": "c"}
        crypto.key_request({"sender": "@u:example.org", "content": content}, ROOM)
    assert len(crypto._requested) == 10


def test_hostile_sync_crypto_sections_never_raise(crypto: Crypto) -> None:
    for response in (
        {"to_device": {"events": [None, 5, {"type": 7}, {"type": "m.room.encrypted", "content": "x"}]}},
        {"to_device": "nope", "device_lists": {"changed": [1, None], "left": "x"}},
        {"device_one_time_keys_count": {"signed_curve25519": "many"}},
    ):
        assert crypto.receive(response) == set()


async def test_the_room_key_follows_the_rooms_rotation_settings(crypto: Crypto) -> None:
    """``rotation_period_msgs: 2`` in ``m.room.encryption``: the third message gets a new room
    key (nio's default would be 100); wrong types are ignored."""

    async def no_call(method: str, path: str, body: Any) -> Any:
        return {}

    sessions = []
    for n in range(3):
        content = await crypto.encrypt(
            ROOM, "m.room.message", {"body": str(n)}, [], no_call, no_call, {"rotation_period_msgs": 2}
        )
        sessions.append(content["session_id"])
    assert sessions[0] == sessions[1] != sessions[2]
    await crypto.encrypt(ROOM, "m.room.message", {}, [], no_call, no_call, {"rotation_period_ms": "soon"})
    assert crypto.olm.outbound_group_sessions[ROOM].max_messages == 2  # unchanged by a wrong type
