"""Raw Matrix events parsed field by field into :class:`Event`.

We do not use matrix-nio's event classes on the hot path: nio turns any event whose content has
a wrongly typed field into ``BadEvent`` and runs no text callback on it, so a spammer could send
``"body": 12`` with a ``formatted_body`` full of spam and slip past. Here a wrong type is
recorded in :attr:`Event.malformed` (a signal for protections) and never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

#: Synapse refuses PDUs over 64 KiB; nothing legitimate needs more text than that inspected.
MAX_TEXT = 65536
#: Canonical JSON integers (and so timestamps and power levels) live within ±(2^53 - 1).
MAX_INT = 2**53 - 1


@attrs.frozen(slots=True)
class Event:
    """One room event, with the fields moderation cares about pulled out safely."""

    event_id: str
    room_id: str
    sender: str
    type: str
    origin_server_ts: int
    content: Mapping[str, Any]
    state_key: str | None = None
    body: str | None = None
    formatted_body: str | None = None
    msgtype: str | None = None
    membership: str | None = None
    prev_membership: str | None = None
    displayname: str | None = None
    redacts: str | None = None
    malformed: tuple[str, ...] = ()
    #: An encrypted event handled once already as ``m.room.encrypted`` (its key came late), now
    #: handed on again as its cleartext: what counts events has counted it.
    late: bool = False
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def is_state(self) -> bool:
        """True for state events (they carry a ``state_key``, even an empty one)."""
        return self.state_key is not None

    @property
    def text(self) -> str:
        """The visible text of a message: body and formatted body, for matching."""
        return "\n".join(part for part in (self.body, self.formatted_body) if part)


def _str_field(content: Mapping[str, Any], key: str, malformed: list[str]) -> str | None:
    if key not in content:
        return None
    value = content[key]
    if isinstance(value, str):
        return value[:MAX_TEXT]
    malformed.append(key)
    return None


def parse_event(raw: Any, room_id: str) -> Event | None:
    """Parse one event dict from a sync or ``/messages`` response.

    Returns ``None`` only when the event cannot be attributed or addressed (no string
    ``event_id``/``sender``/``type``); such an event can neither be acted on nor redacted.
    """
    if not isinstance(raw, Mapping):
        return None
    event_id, sender, event_type = raw.get("event_id"), raw.get("sender"), raw.get("type")
    if not (isinstance(event_id, str) and isinstance(sender, str) and isinstance(event_type, str)):
        return None
    malformed: list[str] = []
    content = raw.get("content")
    if not isinstance(content, Mapping):
        if content is not None:
            malformed.append("content")
        content = {}
    ts = raw.get("origin_server_ts")
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_INT:
        malformed.append("origin_server_ts")
        ts = 0
    state_key = raw.get("state_key")
    if state_key is not None and not isinstance(state_key, str):
        malformed.append("state_key")
        state_key = None

    body = formatted = msgtype = membership = prev_membership = displayname = redacts = None
    if event_type in ("m.room.message", "m.sticker"):
        body = _str_field(content, "body", malformed)
        formatted = _str_field(content, "formatted_body", malformed)
        msgtype = _str_field(content, "msgtype", malformed)
        if event_type == "m.room.message" and msgtype is None and "msgtype" not in malformed:
            malformed.append("msgtype")
    elif event_type == "m.room.member":
        membership = _str_field(content, "membership", malformed)
        displayname = _str_field(content, "displayname", malformed)
        unsigned = raw.get("unsigned")
        if isinstance(unsigned, Mapping):
            prev = unsigned.get("prev_content")
            if isinstance(prev, Mapping) and isinstance(prev.get("membership"), str):
                prev_membership = prev["membership"]
    elif event_type == "m.room.redaction":
        # Room v11 moved `redacts` into content; older versions have it top-level.
        value = content.get("redacts", raw.get("redacts"))
        redacts = value if isinstance(value, str) else None

    return Event(
        event_id=event_id,
        room_id=room_id,
        sender=sender,
        type=event_type,
        origin_server_ts=ts,
        content=content,
        state_key=state_key,
        body=body,
        formatted_body=formatted,
        msgtype=msgtype,
        membership=membership,
        prev_membership=prev_membership,
        displayname=displayname,
        redacts=redacts,
        malformed=tuple(malformed),
        raw=raw,
    )


def relation(content: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(thread root, replied-to event)`` from ``m.relates_to``, read field by field (a wrong
    type is no relation)."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, Mapping):
        return None, None
    thread = relates.get("rel_type") == "m.thread"
    root = relates.get("event_id") if thread else None
    reply = relates.get("m.in_reply_to")
    target = reply.get("event_id") if isinstance(reply, Mapping) else None
    if thread and relates.get("is_falling_back") is True:
        target = None  # a thread's fallback points at its latest message: no reply was made
    return (
        root if isinstance(root, str) and root.startswith("$") else None,
        target if isinstance(target, str) and target.startswith("$") else None,
    )
