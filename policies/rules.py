"""Moderation policy rules, parsed field by field from raw state events.

A policy list is a room whose state holds rules (spec "Moderation policy lists"):
``m.policy.rule.user``, ``m.policy.rule.room`` and ``m.policy.rule.server``, plus the legacy
``m.room.rule.*`` and ``org.matrix.mjolnir.rule.*`` types that lists still use. ``entity`` is a glob
(:mod:`policies.glob`), ``recommendation`` says what to do, ``reason`` is free text. A rule is
removed by overwriting its ``(type, state_key)`` with empty content (and a redacted rule has lost
its fields), so both parse to :class:`Removed`.

Extensions understood here:

* MSC4205 hashed entities: instead of ``entity`` the content carries ``hashes`` (unstable
  ``org.matrix.msc4205.hashes``) as ``{"sha256": "<base64 of sha256 of the UTF-8 entity>"}``. The
  MSC's example is padded standard base64 (mautrix-go decodes it with ``StdEncoding``); unpadded
  and URL-safe spellings are accepted too. Hashes are stored normalised to unpadded standard
  base64 (see :func:`sha256_b64`). When a rule has a plain ``entity`` its hashes are ignored
  (Draupnir's rule too).
* MSC4204 ``m.takedown`` (unstable ``org.matrix.msc4204.takedown``): a stronger ban.

Recommendations are normalised: ``m.ban`` / ``org.matrix.mjolnir.ban`` → ``"ban"``, ``m.takedown``
/ ``org.matrix.msc4204.takedown`` → ``"takedown"``; anything else is kept as sent and never bans
(Draupnir v3.0.0 fixed bans caused by policies of *any* recommendation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "BAN",
    "KINDS",
    "MAX_REASON",
    "TAKEDOWN",
    "Removed",
    "Rule",
    "normalise_recommendation",
    "normalise_sha256",
    "parse_rule",
    "policy_kind",
    "sha256_b64",
    "type_quality",
]

KINDS = ("user", "room", "server")
BAN = "ban"
TAKEDOWN = "takedown"
MAX_REASON = 1000

# Event type → (kind, quality). When one list holds the same state key under several types, the
# highest quality wins (meowlnir `policylist/list.go` `typeQuality`).
_EVENT_TYPES: dict[str, tuple[str, int]] = {}
for _kind in KINDS:
    _EVENT_TYPES[f"m.policy.rule.{_kind}"] = (_kind, 3)
    _EVENT_TYPES[f"m.room.rule.{_kind}"] = (_kind, 2)
    _EVENT_TYPES[f"org.matrix.mjolnir.rule.{_kind}"] = (_kind, 1)
# The table's own key objects, so 100k parsed rules share one string per type.
_CANONICAL_TYPES = {event_type: event_type for event_type in _EVENT_TYPES}

_RECOMMENDATIONS = {
    "m.ban": BAN,
    "org.matrix.mjolnir.ban": BAN,
    "m.takedown": TAKEDOWN,
    "org.matrix.msc4204.takedown": TAKEDOWN,
}
_BANNING = frozenset({BAN, TAKEDOWN})
_MISSING: Any = object()


def policy_kind(event_type: str) -> str | None:
    """The rule kind (``user``, ``room``, ``server``) of a policy event type, else ``None``."""
    known = _EVENT_TYPES.get(event_type)
    return known[0] if known else None


def type_quality(event_type: str) -> int:
    """Precedence of an event type for the same state key: stable 3, ``m.room.rule`` 2, mjolnir 1."""
    known = _EVENT_TYPES.get(event_type)
    return known[1] if known else 0


def normalise_recommendation(raw: str) -> str:
    """``"ban"`` or ``"takedown"`` for the known spellings; anything else as sent.

    A list that literally sends ``"ban"`` (no namespace) is not using a known recommendation, so it
    is kept distinguishable (``"unrecognised:ban"``) and does not ban.
    """
    known = _RECOMMENDATIONS.get(raw)
    if known is not None:
        return known
    return f"unrecognised:{raw}" if raw in _BANNING else raw


def sha256_b64(entity: str) -> str:
    """MSC4205 hash of an entity: unpadded standard base64 of the SHA-256 of its UTF-8 bytes."""
    digest = hashlib.sha256(entity.encode("utf-8", "surrogatepass")).digest()
    return base64.b64encode(digest).decode("ascii").rstrip("=")


def normalise_sha256(value: object) -> str | None:
    """A SHA-256 hash as sent (padded or not, standard or URL-safe base64) in the form
    :func:`sha256_b64` produces, or ``None`` unless it decodes to exactly 32 bytes."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    unpadded = value.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        digest = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(digest) != 32:
        return None
    return base64.b64encode(digest).decode("ascii").rstrip("=")


_NO_HASHES: Mapping[str, str] = MappingProxyType({})


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value)) if value else _NO_HASHES


def _event_type_for_kind(rule: Rule) -> str:
    return f"m.policy.rule.{rule.kind}"


@attrs.frozen(kw_only=True)
class Rule:
    """One policy rule held by a list room's state key.

    ``entity`` is the glob or literal (``None`` for a hashed rule, which has ``hashes["sha256"]``).
    ``recommendation`` is normalised (see :func:`normalise_recommendation`).
    """

    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    entity: str | None
    hashes: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)
    recommendation: str
    reason: str = ""
    list_room: str
    state_key: str
    event_type: str = attrs.field(default=attrs.Factory(_event_type_for_kind, takes_self=True))
    event_id: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.entity is None and "sha256" not in self.hashes:
            raise ValueError("a rule needs an entity or a sha256 hash")

    @property
    def is_ban(self) -> bool:
        """Whether this rule asks for a ban (``m.ban`` and legacy spellings, or a takedown)."""
        return self.recommendation in _BANNING

    @property
    def is_takedown(self) -> bool:
        """Whether this is an MSC4204 takedown (a ban that also removes content)."""
        return self.recommendation == TAKEDOWN

    @property
    def is_hashed(self) -> bool:
        """Whether the rule names its entity only by hash (MSC4205)."""
        return self.entity is None


@attrs.frozen
class Removed:
    """The state key no longer holds a rule: empty content, or a redacted rule."""

    kind: str
    state_key: str
    event_type: str
    list_room: str


def parse_rule(raw_state_event: object, list_room: str) -> Rule | Removed | None:
    """Parse one raw state event from ``list_room``, field by field, never raising.

    Returns a :class:`Rule`; :class:`Removed` for empty content or content with neither an entity
    nor hashes (a redacted rule); ``None`` for events that are not policy rules (other types, no
    string state key) or are malformed (content not an object, entity not a string, recommendation
    missing or not a string, hashes without a valid SHA-256).

    Note for callers: state replaces state, so a malformed event of a policy type (``policy_kind``
    is not ``None``) with a string state key also ends whatever rule that key held before.
    """
    if not isinstance(raw_state_event, Mapping):
        return None
    event_type = raw_state_event.get("type")
    if not isinstance(event_type, str) or event_type not in _EVENT_TYPES:
        return None
    event_type = _CANONICAL_TYPES[event_type]
    kind = _EVENT_TYPES[event_type][0]
    state_key = raw_state_event.get("state_key")
    content = raw_state_event.get("content")
    if not isinstance(state_key, str) or not isinstance(content, Mapping):
        return None
    if not content:
        return Removed(kind, state_key, event_type, list_room)

    entity = content.get("entity", _MISSING)
    if entity is not _MISSING and not isinstance(entity, str):
        return None
    hashes: Mapping[str, str] = _NO_HASHES
    if entity is _MISSING or entity == "":
        entity = None
        hashes_raw = content.get("hashes")
        if hashes_raw is None:
            hashes_raw = content.get("org.matrix.msc4205.hashes")
        if hashes_raw is None:
            return Removed(kind, state_key, event_type, list_room)
        sha256 = normalise_sha256(hashes_raw.get("sha256")) if isinstance(hashes_raw, Mapping) else None
        if sha256 is None:
            return None
        hashes = {"sha256": sha256}

    recommendation = content.get("recommendation")
    if not isinstance(recommendation, str):
        return None
    reason = content.get("reason")
    event_id = raw_state_event.get("event_id")
    return Rule(
        kind=kind,
        entity=entity,
        hashes=hashes,
        recommendation=normalise_recommendation(recommendation),
        # Interned: a big list repeats a few reasons ("spam", "ban evasion") thousands of times,
        # and every rule of a type names it; one copy each, not one per rule.
        reason=sys.intern(reason[:MAX_REASON]) if isinstance(reason, str) else "",
        list_room=list_room,
        state_key=state_key,
        event_type=sys.intern(event_type),
        event_id=event_id if isinstance(event_id, str) else None,
    )
