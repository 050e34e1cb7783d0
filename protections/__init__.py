"""Pluggable protections: each module here defines one, and registers itself by importing.

A protection is a small declarative class:

* ``name`` — unique (the registry refuses a duplicate at import time);
* ``Settings`` — a frozen attrs class with defaults and validators (read from the config's
  ``protections.<name>`` section, per-room overrides, and ``!mod protections set``);
* ``event_types`` — which event types it wants;
* ``async check(event, settings, ctx)`` — returns *intents* (:class:`Violation`, :class:`Alert`,
  :class:`LockRoom`). It never calls the homeserver: the pipeline's executor acts (or, in observe
  mode, only reports), so a protection is tested by asserting on what it returns.

The core never imports a specific protection; :func:`load_all` imports every module of this
package. To add one, see ``protections/README.md``.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

import attrs

from abusebot.events import Event
from abusebot.rooms import RoomState

SEVERITIES = ("minor", "major")


@attrs.frozen
class Evidence:
    """What proves a violation: the event and a short excerpt of it."""

    event_id: str | None
    excerpt: str = ""

    @classmethod
    def of(cls, event: Event, text: str | None = None, limit: int = 120) -> Evidence:
        """Evidence from an event, with at most ``limit`` characters of text."""
        excerpt = " ".join((text if text is not None else event.text).split())
        if len(excerpt) > limit:
            excerpt = excerpt[: limit - 1] + "…"
        return cls(event.event_id, excerpt)


@attrs.frozen
class Violation:
    """A user broke a rule: redact the evidence (when ``redact``), then escalate on the ladder."""

    rule: str
    user: str
    room_id: str
    evidence: Evidence
    severity: str = "minor"
    redact: bool = True
    #: The other events to remove with it (e.g. the rest of a flood).
    also_redact: tuple[str, ...] = ()
    #: ``(room_id, event_id)`` of events in other rooms to remove with it (e.g. the same spam
    #: posted in several rooms).
    also_redact_elsewhere: tuple[tuple[str, str], ...] = ()
    #: Non-zero for a *stream* (a flood): the sanction goes out before the clean-up, and until it
    #: is in force and for this many seconds after, whatever else of the user's arrives (sent
    #: before it took hold, or the rest of the burst) is removed too, in every room, without a
    #: new violation: one burst is one rung of the ladder. Zero for a single message, whose
    #: redaction goes out first.
    sweep_s: float = 0.0


@attrs.frozen
class Alert:
    """Tell the management room something (no action)."""

    room_id: str
    text: str


@attrs.frozen
class LockRoom:
    """Switch a room to invite-only for ``seconds``, then restore its previous join rule."""

    room_id: str
    seconds: int
    reason: str


Intent = Violation | Alert | LockRoom


class Context(Protocol):
    """The narrow view of the bot a protection gets."""

    bot_user_id: str

    def now(self) -> float:
        """Wall-clock seconds (a fake clock in tests)."""

    def room(self, room_id: str) -> RoomState:
        """Read-only room state."""

    def joined_at(self, room_id: str, user_id: str) -> float | None:
        """When the user's current membership began (as far as the bot saw), or ``None``."""

    def rooms(self) -> Sequence[str]:
        """The protected room ids."""


S = TypeVar("S", bound=attrs.AttrsInstance)


class Protection:
    """Base class: subclasses set ``name``, ``description``, ``Settings`` and ``event_types``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Settings: ClassVar[type[Any]]
    event_types: ClassVar[frozenset[str]] = frozenset({"m.room.message"})
    #: Enabled unless the configuration says otherwise.
    enabled_by_default: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)

    async def check(self, event: Event, settings: Any, ctx: Context) -> Sequence[Intent]:
        """Inspect one event; return the intents (empty when all is well)."""
        raise NotImplementedError


class DuplicateProtection(Exception):
    """Two protections claim the same name."""


REGISTRY: dict[str, type[Protection]] = {}


def register(cls: type[Protection]) -> type[Protection]:
    """Add a protection class to the registry; refuses duplicates and incomplete classes."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    if not attrs.has(getattr(cls, "Settings", None) or object):
        raise TypeError(f"protection {cls.name!r} needs an attrs Settings class")
    existing = REGISTRY.get(cls.name)
    # The same class seen again (a module reloaded) is not a duplicate; another class is.
    if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
        raise DuplicateProtection(f"two protections are named {cls.name!r}: {existing!r} and {cls!r}")
    REGISTRY[cls.name] = cls
    return cls


class SettingsError(ValueError):
    """A protection setting is unknown or has the wrong type; ``key`` names it."""

    def __init__(self, key: str, expected: str, got: object) -> None:
        self.key = key
        self.expected = expected
        self.got = got
        super().__init__(f"{key}: expected {expected}, got {got!r}")


def _convert(value: Any, kind: Any, key: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingsError(key, "true or false", value)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(key, "an integer", value)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SettingsError(key, "a finite number", value)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise SettingsError(key, "a string", value)
        return value
    if getattr(kind, "__origin__", None) is tuple:  # tuple[str, ...]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise SettingsError(key, "a list of strings", value)
        return tuple(value)
    raise SettingsError(key, f"a value of type {kind}", value)


def build_settings(settings_class: type[S], values: Mapping[str, Any], base: S | None = None) -> S:
    """Settings from ``values`` over ``base`` (or the defaults); validators run; :class:`SettingsError`
    names the first bad key."""
    attrs.resolve_types(settings_class)
    fields = {field.name: field for field in attrs.fields(settings_class)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        field = fields.get(key)
        if field is None:
            raise SettingsError(key, "one of " + ", ".join(sorted(fields)), key)
        changes[key] = _convert(value, field.type, key)
    try:
        if base is not None:
            return _evolve(base, changes)
        return settings_class(**changes)
    except (ValueError, TypeError) as err:
        raise SettingsError(_bad_key(settings_class, changes, base), "a valid value", str(err)) from err


def _evolve(base: S, changes: Mapping[str, Any]) -> S:
    """``base`` with ``changes``, built through its ``__init__`` so every validator runs (what
    ``attrs.evolve`` does, typed for a settings class known only as a type variable)."""
    return type(base)(**{**attrs.asdict(base, recurse=False), **changes})


def _bad_key(settings_class: type[S], changes: Mapping[str, Any], base: S | None) -> str:
    """The first of ``changes`` that its validator refuses on its own (for the error message)."""
    try:
        start = base if base is not None else settings_class()
        for key, value in changes.items():
            try:
                _evolve(start, {key: value})
            except (ValueError, TypeError):
                return key
    except (ValueError, TypeError):
        pass
    return next(iter(changes), "settings")


def load_all() -> Mapping[str, type[Protection]]:
    """Import every module of this package (each registers its protection); return the registry."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return REGISTRY
