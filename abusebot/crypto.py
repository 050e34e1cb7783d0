"""End-to-end encryption: nio's Olm machine (vodozemac underneath), fed from our raw ``/sync``.

The bot reads ``/sync`` as raw JSON (see :mod:`abusebot.bot`); this module gives nio's machine
what it needs from each batch — to-device events (room keys, key requests), ``device_lists``
and the one-time-key count — and does the key traffic it asks for (``keys/upload``,
``keys/query``, ``keys/claim``, ``sendToDevice``). In the middle it is pure: :meth:`decrypt`
turns an ``m.room.encrypted`` event into the cleartext event with the envelope's id, sender,
room and time; :meth:`encrypt` turns content for an encrypted room into ``m.room.encrypted``
content, sharing the room key first with every joined or invited member's devices.

An event that cannot be decrypted (its key has not arrived) is kept, keyed by its session, and
handed back by :meth:`receive` once the key arrives; meanwhile its sender's devices are asked
for the key. The keys live in nio's SQLite store in ``data_dir/crypto`` (the account, Olm and
Megolm sessions), so a restarted bot decrypts at once.

Moderation never depends on this: bans, redactions and power levels are not encrypted, and an
event the bot cannot read still reaches the protections as ``m.room.encrypted`` (floods are
counted by events, joins and lists need no content).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from nio.crypto import Olm
from nio.crypto.key_request import OutgoingKeyRequest
from nio.events import ForwardedRoomKeyEvent, RoomKeyEvent, ToDeviceEvent
from nio.responses import KeysClaimResponse, KeysQueryResponse, KeysUploadResponse
from nio.store import SqliteStore

log = structlog.get_logger("abusebot.crypto")

#: Sessions remembered as asked for; longer session ids are not asked for (nor kept) at all.
MAX_REQUESTED = 10_000
MAX_SESSION_ID = 128
#: Cleartext event types a room event may carry encrypted (state and room control never are).
NEVER_ENCRYPTED = ("m.room.", "m.policy.", "m.space.")
ALLOWED_ROOM_TYPES = frozenset({"m.room.message"})
#: Message indexes remembered against replays (per session and index; the oldest go first).
MAX_INDEXES = 100_000
ENCRYPTED = "m.room.encrypted"
MEGOLM = "m.megolm.v1.aes-sha2"

#: ``(method, path, body) -> reply``: a read or a write through the bot's one write path.
Call = Callable[[str, str, Any], Awaitable[Any]]


class RoomMembers:
    """What nio's ``update_tracked_users`` needs of a room: its users."""

    def __init__(self, room_id: str, users: Iterable[str]) -> None:
        self.room_id = room_id
        self.users = dict.fromkeys(users)


class Crypto:
    """The bot's one device's encryption: decrypt what it reads, encrypt what it sends."""

    def __init__(self, user_id: str, device_id: str, store_dir: Path) -> None:
        store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(store_dir, 0o700)
        # nio's store creates its files with the process's umask: none of them is for others.
        os.umask(os.umask(0o077) | 0o077)
        # The pickle key protects the sessions at rest only as well as the directory does: the
        # directory is the bot's alone (0700), as the session file and ledger are.
        store = SqliteStore(user_id, device_id, str(store_dir), pickle_key="", database_name="crypto.db")
        self.olm = _Olm(user_id, device_id, store)
        self.user_id = user_id
        self.device_id = device_id
        self.undecryptable = 0
        self.decrypted = 0
        self._indexes: OrderedDict[tuple[str, str, int], tuple[Any, Any]] = OrderedDict()
        #: Sessions asked for (once each; the oldest forgotten first).
        self._requested: OrderedDict[str, None] = OrderedDict()
        self._room_locks: dict[str, asyncio.Lock] = {}
        self._keys_lock = asyncio.Lock()

    @property
    def identity_keys(self) -> dict[str, str]:
        """This device's curve25519 and ed25519 keys."""
        return dict(self.olm.account.identity_keys)

    # -- reading ----------------------------------------------------------------------------------

    def receive(self, response: Mapping[str, Any]) -> set[str]:
        """Take the crypto parts of one sync batch. Returns the Megolm sessions whose keys came
        in it (events waiting for them can be decrypted now)."""
        counts = response.get("device_one_time_keys_count")
        if isinstance(counts, Mapping) and isinstance(counts.get("signed_curve25519"), int):
            self.olm.uploaded_key_count = counts["signed_curve25519"]
        elif self.olm.uploaded_key_count is None:
            self.olm.uploaded_key_count = 0  # none reported: none left on the server
        lists = response.get("device_lists")
        if isinstance(lists, Mapping):
            tracked = set(self.olm.device_store.users)
            changed = {u for key in ("changed", "left") for u in _strings(lists.get(key)) if u in tracked}
            if changed:
                self.olm.add_changed_users(changed)
                for room_id in list(self.olm.outbound_group_sessions):
                    # A member's devices changed: the next message gets a new room key.
                    self.olm.outbound_group_sessions.pop(room_id, None)
        arrived: set[str] = set()
        to_device = response.get("to_device")
        events = to_device.get("events") if isinstance(to_device, Mapping) else None
        for raw in events if isinstance(events, list) else []:
            if not isinstance(raw, dict):
                continue
            try:
                event = ToDeviceEvent.parse_event(raw)
                if event is None or not isinstance(event, ToDeviceEvent):
                    continue
                handled = self.olm.handle_to_device_event(event)
            except Exception as err:  # a hostile to-device event is one line, never a crash
                log.warning("to_device_unusable", type=raw.get("type"), sender=raw.get("sender"), error=repr(err))
                continue
            if isinstance(handled, (RoomKeyEvent, ForwardedRoomKeyEvent)) and isinstance(handled.session_id, str):
                arrived.add(handled.session_id)
        return arrived

    def decrypt(self, raw: Mapping[str, Any], room_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """``(cleartext, None)`` for an ``m.room.encrypted`` room event (the envelope's
        ``event_id``, ``sender``, ``origin_server_ts`` and ``unsigned`` kept); ``(None, session)``
        when its key has not arrived (keep the event for then); ``(None, None)`` when it never
        will be readable. Every failure is counted and logged with its reason.

        Field by field, with the Megolm session from nio's store (nio's own path validates the
        event against JSON schemas five times, ~85 % of the cost). Refused: a message index seen
        before with another event (a replay), a device whose known key is not the one that
        sent (a forged attribution), cleartext for another room."""
        content = raw.get("content")
        content = content if isinstance(content, Mapping) else {}
        sender_key, session_id, ciphertext = (content.get(k) for k in ("sender_key", "session_id", "ciphertext"))
        sender, device_id = raw.get("sender"), content.get("device_id")
        clear: Mapping[str, Any] | None = None
        why = None
        if content.get("algorithm") != MEGOLM:
            why = f"not Megolm: {str(content.get('algorithm'))[:60]}"
        elif not (isinstance(sender_key, str) and isinstance(session_id, str) and isinstance(ciphertext, str)):
            why = "malformed (sender_key, session_id and ciphertext must be strings)"
        else:
            why, clear = self._open(raw, room_id, sender_key, session_id, ciphertext, sender, device_id)
        if why is not None or clear is None:
            self.undecryptable += 1
            log.warning("undecryptable", room_id=room_id, event_id=raw.get("event_id"), sender=sender, reason=why)
            waits = why is not None and why.startswith("no session") and len(str(session_id)) <= MAX_SESSION_ID
            return None, str(session_id) if waits else None
        self.decrypted += 1
        out = {k: v for k, v in raw.items() if k not in ("type", "content")}
        out["type"] = clear["type"]
        body = dict(clear["content"])
        if "m.relates_to" not in body and isinstance(content.get("m.relates_to"), Mapping):
            body["m.relates_to"] = content["m.relates_to"]  # relations may stay in the clear
        out["content"] = body
        return out, None

    def _open(
        self,
        raw: Mapping[str, Any],
        room_id: str,
        sender_key: str,
        session_id: str,
        ciphertext: str,
        sender: Any,
        device_id: Any,
    ) -> tuple[str | None, Mapping[str, Any] | None]:
        session = self.olm.inbound_group_store.get(room_id, sender_key, session_id)
        if session is None:
            return "no session (its key has not arrived)", None
        try:
            plaintext, index = session.decrypt(ciphertext)
        except Exception as err:
            return f"decryption failed: {str(err)[:120]}", None
        seen = (raw.get("event_id"), raw.get("origin_server_ts"))
        known = self._indexes.setdefault((sender_key, session_id, index), seen)
        if known != seen:
            return "a message index already used by another event (a replay)", None
        while len(self._indexes) > MAX_INDEXES:
            self._indexes.popitem(last=False)
        if isinstance(sender, str) and isinstance(device_id, str):
            try:
                device = self.olm.device_store[sender][device_id]
            except KeyError:
                self.olm.users_for_key_query.add(sender)  # checked once its keys are known
            else:
                if device.curve25519 != sender_key:
                    return f"sent with a key that is not {sender}'s device {device_id}", None
        try:
            clear = json.loads(plaintext)
        except ValueError:
            return "the cleartext is not JSON", None
        if not (isinstance(clear, dict) and isinstance(clear.get("type"), str)):
            return "the cleartext has no type", None
        if not readable_type(clear["type"]):
            # State and room control are never encrypted: a cleartext "m.room.member" would be
            # a forged join (a join wave faked by a few members), a "m.policy.rule" a forged rule.
            return f"the cleartext claims a type that is never encrypted ({clear['type'][:60]})", None
        if not isinstance(clear.get("content"), dict):
            return "the cleartext has no content", None
        if clear.get("room_id", room_id) != room_id:
            return "the cleartext is for another room", None
        return None, clear

    def key_request(self, raw: Mapping[str, Any], room_id: str) -> tuple[str, dict[str, Any]] | None:
        """A key request for the session ``raw`` needs, to every device of its sender:
        ``(txn, sendToDevice body)``; ``None`` when that session was asked for already. The
        request is registered with nio, so the key, forwarded by the device that made the
        session, is accepted."""
        content = raw.get("content")
        content = content if isinstance(content, Mapping) else {}
        session, sender_key, sender = content.get("session_id"), content.get("sender_key"), raw.get("sender")
        if not (isinstance(session, str) and isinstance(sender_key, str) and isinstance(sender, str)):
            return None
        if session in self._requested or len(session) > MAX_SESSION_ID:
            return None
        self._requested[session] = None
        while len(self._requested) > MAX_REQUESTED:
            self._requested.popitem(last=False)
        request_id = hashlib.sha256(session.encode()).hexdigest()[:24]
        self.olm.outgoing_key_requests[session] = OutgoingKeyRequest(request_id, session, room_id, MEGOLM)
        body = {
            "action": "request",
            "body": {"algorithm": MEGOLM, "session_id": session, "room_id": room_id, "sender_key": sender_key},
            "request_id": request_id,
            "requesting_device_id": self.device_id,
        }
        return f"keyreq-{request_id}", {"messages": {sender: {"*": body}}}

    # -- keys -------------------------------------------------------------------------------------

    async def maintain(self, read: Call, write: Call) -> None:
        """Upload our keys, query others' and send key requests, as the machine asks."""
        async with self._keys_lock:
            if self.olm.should_upload_keys:
                reply = await write("POST", "/_matrix/client/v3/keys/upload", self.olm.share_keys())
                counts = reply.get("one_time_key_counts", {}) if isinstance(reply, Mapping) else {}
                self.olm.handle_response(
                    KeysUploadResponse(int(counts.get("curve25519", 0)), int(counts.get("signed_curve25519", 0)))
                )
                log.info("keys_uploaded", one_time_keys=counts.get("signed_curve25519", 0))
            if self.olm.should_query_keys:
                users = sorted(self.olm.users_for_key_query)
                reply = await read("POST", "/_matrix/client/v3/keys/query", {"device_keys": {u: [] for u in users}})
                if isinstance(reply, Mapping) and isinstance(reply.get("device_keys"), Mapping):
                    self.olm.handle_response(
                        KeysQueryResponse(dict(reply["device_keys"]), dict(reply.get("failures") or {}))
                    )
                    self.olm.users_for_key_query.difference_update(users)

    # -- sending ----------------------------------------------------------------------------------

    def room_changed(self, room_id: str) -> None:
        """Membership changed in an encrypted room: its next message gets a new room key."""
        self.olm.outbound_group_sessions.pop(room_id, None)

    async def encrypt(
        self,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        members: Iterable[str],
        read: Call,
        write: Call,
        rotation: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``m.room.encrypted`` content for ``content``, the room key shared first with every
        device of ``members`` that lacks it. ``rotation`` is the room's ``m.room.encryption``
        content: its ``rotation_period_ms`` / ``rotation_period_msgs`` bound each room key."""
        lock = self._room_locks.setdefault(room_id, asyncio.Lock())
        async with lock:
            self._rotate_as_asked(room_id, rotation or {})
            users = sorted(set(members) | {self.user_id})
            self.olm.update_tracked_users(RoomMembers(room_id, users))
            await self.maintain(read, write)
            if self.olm.should_share_group_session(room_id):
                await self._claim(users, read)
                devices = 0
                chunks = self.olm.share_group_session_parallel(room_id, users, ignore_unverified_devices=True)
                for number, (sharing_with, to_device) in enumerate(chunks):
                    session = self.olm.outbound_group_sessions[room_id].id
                    txn = f"share-{hashlib.sha256(session.encode()).hexdigest()[:16]}-{number}"
                    await write("PUT", f"/_matrix/client/v3/sendToDevice/{ENCRYPTED}/{txn}", to_device)
                    devices += len(sharing_with)
                # Shared with every device there is (none at all included).
                self.olm.outbound_group_sessions[room_id].shared = True
                self._rotate_as_asked(room_id, rotation or {})
                log.info("room_key_shared", room_id=room_id, devices=devices)
            encrypted = dict(self.olm.group_encrypt(room_id, {"type": event_type, "content": dict(content)}))
            relates = content.get("m.relates_to")
            if isinstance(relates, Mapping):
                # Relations travel in the clear (the spec's rule): the homeserver groups a thread
                # and clients place a reply or a reaction before they can decrypt it.
                encrypted["m.relates_to"] = dict(relates)
            return encrypted

    def _rotate_as_asked(self, room_id: str, rotation: Mapping[str, Any]) -> None:
        """Bound the room's current key by the room's own rotation settings (nio's defaults are
        a week and 100 messages); a wrong type is ignored, never a crash."""
        session = self.olm.outbound_group_sessions.get(room_id)
        if session is None:
            return
        ms, msgs = rotation.get("rotation_period_ms"), rotation.get("rotation_period_msgs")
        if isinstance(ms, int) and not isinstance(ms, bool) and 0 < ms < 10**12:
            session.max_age = timedelta(milliseconds=ms)
        if isinstance(msgs, int) and not isinstance(msgs, bool) and 0 < msgs < 10**9:
            session.max_messages = msgs

    async def _claim(self, users: list[str], read: Call) -> None:
        missing = self.olm.get_missing_sessions(users)
        if not missing:
            return
        body = {"one_time_keys": {u: dict.fromkeys(ds, "signed_curve25519") for u, ds in missing.items()}}
        reply = await read("POST", "/_matrix/client/v3/keys/claim", body)
        if isinstance(reply, Mapping) and isinstance(reply.get("one_time_keys"), Mapping):
            self.olm.handle_response(KeysClaimResponse(dict(reply["one_time_keys"]), dict(reply.get("failures") or {})))


def readable_type(event_type: str) -> bool:
    """Whether an encrypted event may carry ``event_type`` (messages, stickers, reactions,
    polls: yes; membership, power levels, rules and other state: never)."""
    if event_type in ALLOWED_ROOM_TYPES:
        return True
    return not event_type.startswith(NEVER_ENCRYPTED)


class _Olm(Olm):  # type: ignore[misc]
    """nio's machine, also accepting a key forwarded by the very device that made the session
    (the answer of a sender's client to our request); nio takes forwards only from our own
    devices, and the bot has one."""

    def _should_accept_forward(self, sender: str, sender_key: str, event: ForwardedRoomKeyEvent) -> bool:
        requested = self.outgoing_key_requests.get(event.session_id)
        if (
            requested is not None
            and event.algorithm == MEGOLM
            and event.room_id == requested.room_id
            # The device that made the session forwards it (``sender_key`` is the to-device
            # sender's key; the content names the session's own):
            and _mapping(event.source.get("content")).get("sender_key") == sender_key
        ):
            return True
        return bool(super()._should_accept_forward(sender, sender_key, event))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
