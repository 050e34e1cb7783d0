"""The host for features: each capability of the bot is a :class:`Feature` that declares what it
needs, and the host routes events to it, isolated and timed.

A feature declares:

* ``name``: unique (the host refuses a second feature of one name);
* ``roles``: the rooms it cares about (:class:`Role`: the management room, protected rooms,
  policy lists, direct chats with the bot; later features add roles such as a Space or a
  suggestions room through :meth:`Host.add_role`);
* ``event_types``: the event types it handles (``None``: all of them, state and timeline);
* its commands: rows for the one command table (:class:`abusebot.commands.Spec`), which the
  one authorization checkpoint guards like every other command;
* ``migrations``: its own tables, applied once each, in order, recorded per feature;
* ``start`` / ``ready`` (every feature started) / ``stop``, ``room_added`` (a room protected
  while running), ``room_left`` (the bot is out of one of its rooms), ``status()`` lines for
  ``!mod status``, and for ``!mod rooms`` the rooms it could not get (``room_problems``) and
  why it protects a room (``origin_of``).

The core never names a feature: the bot loads them from :data:`FACTORIES` (each module of
:mod:`abusebot.features` registers its own), and everything else goes through this host.
Handlers are isolated: one that raises is logged with its feature's name and never keeps the
others from the event. Each is timed (``!mod status`` shows the slowest).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import structlog

from abusebot.events import Event

if TYPE_CHECKING:
    from abusebot.commands import Spec
    from abusebot.ledger import Ledger
    from abusebot.rooms import RoomStore

log = structlog.get_logger("abusebot.host")


class Role(enum.Enum):
    """What a room is to the bot (a room may be several things)."""

    MANAGEMENT = "management"
    PROTECTED = "protected"
    POLICY_LIST = "policy_list"
    DIRECT = "direct"


class Feature:
    """One capability on the host. Subclasses set the class attributes and override what they use."""

    name: ClassVar[str] = ""
    roles: ClassVar[frozenset[Role | str]] = frozenset()
    #: ``None``: every event type.
    event_types: ClassVar[frozenset[str] | None] = None
    #: SQL scripts, applied once each in order (the host records which ran, per feature).
    migrations: ClassVar[tuple[str, ...]] = ()

    def commands(self) -> Sequence[Spec]:
        """This feature's rows of the command table."""
        return ()

    async def start(self) -> None:
        """Called once the rooms are joined and before the first event."""

    async def ready(self) -> None:
        """Called once every feature has started (what needs the others' hooks in place: a
        case's root that another feature renders)."""

    async def stop(self) -> None:
        """Called when the bot stops (pending work is in the ledger already)."""

    async def handle(self, event: Event) -> None:
        """One event of a room with one of ``roles`` and a type in ``event_types``."""

    async def room_added(self, room_id: str) -> None:
        """A room became protected while running (joined late, upgraded, invited): its state is known."""

    async def room_left(self, room_id: str) -> None:
        """The bot is no longer in a room of one of this feature's roles (kicked, banned, left)."""

    def wants_invite(self, room_id: str, inviter: str, direct: bool) -> bool:
        """Whether the bot should accept an invite to a room it is not configured for (the
        feature then owns it: :meth:`accepted` follows the join)."""
        return False

    async def accepted(self, room_id: str, inviter: str) -> None:
        """The bot joined a room this feature wanted (:meth:`wants_invite`)."""

    def status(self) -> list[str]:
        """Lines for ``!mod status``."""
        return []

    def room_problems(self) -> list[str]:
        """Rooms this feature should have and could not get (a Space's child it cannot join),
        one line each: said at start, in ``!mod status`` and in ``!mod rooms``."""
        return []

    def origin_of(self, room_id: str) -> str | None:
        """Why this feature protects ``room_id`` (``Space Community``), for ``!mod rooms``."""
        return None


@attrs.define
class HandlerStats:
    """How one feature's handler has fared: calls, failures, time."""

    calls: int = 0
    errors: int = 0
    total_s: float = 0.0
    slowest_s: float = 0.0


#: Feature factories, by name: each gets the bot's services and returns its feature.
FACTORIES: dict[str, Callable[[Any], Feature]] = {}


def feature(name: str) -> Callable[[Callable[[Any], Feature]], Callable[[Any], Feature]]:
    """Register a feature factory under ``name`` (a decorator, used by :mod:`abusebot.features`)."""

    def register(factory: Callable[[Any], Feature]) -> Callable[[Any], Feature]:
        if name in FACTORIES:
            raise ValueError(f"a feature named {name!r} is already registered")
        FACTORIES[name] = factory
        return factory

    return register


class Host:
    """Holds the features, their migrations and roles, and routes events to them."""

    def __init__(self, store: RoomStore, ledger: Ledger) -> None:
        self.store = store
        self.ledger = ledger
        self.features: dict[str, Feature] = {}
        self.stats: dict[str, HandlerStats] = {}
        #: Role → a test of whether a room has it (features add roles for their own rooms).
        self._roles: dict[Role | str, Callable[[str], bool]] = {
            Role.MANAGEMENT: lambda room_id: room_id == store.management_id,
            Role.PROTECTED: store.is_protected,
        }

    def add(self, feature: Feature) -> None:
        """Add a feature (names are unique)."""
        if not feature.name:
            raise ValueError(f"{type(feature).__name__} has no name")
        if feature.name in self.features:
            raise ValueError(f"a feature named {feature.name!r} is already on the host")
        self.features[feature.name] = feature
        self.stats[feature.name] = HandlerStats()

    def add_role(self, role: Role | str, test: Callable[[str], bool]) -> None:
        """Say how to tell a room of ``role`` (the policy-list feature knows its lists, say)."""
        self._roles[role] = test

    def roles_of(self, room_id: str) -> set[Role | str]:
        """Every role ``room_id`` has."""
        return {role for role, test in self._roles.items() if test(room_id)}

    def commands(self) -> list[Spec]:
        """Every feature's command rows."""
        return [spec for feature in self.features.values() for spec in feature.commands()]

    async def start(self) -> None:
        """Apply each feature's migrations, then start the features in the order they were added."""
        for feature in self.features.values():
            if feature.migrations:
                await self.ledger.migrate_feature(feature.name, feature.migrations)
        for feature in self.features.values():
            await feature.start()
        for feature in self.features.values():
            await feature.ready()

    async def stop(self) -> None:
        """Stop the features, the last added first; one failing never keeps the others running."""
        for feature in reversed(list(self.features.values())):
            try:
                await feature.stop()
            except Exception as err:
                log.exception("feature_stop_failed", feature=feature.name, error=repr(err))

    async def room_added(self, room_id: str) -> None:
        """Tell every feature that ``room_id`` became protected; one failing never skips the others."""
        for feature in self.features.values():
            try:
                await feature.room_added(room_id)
            except Exception as err:
                log.exception("room_added_failed", feature=feature.name, room_id=room_id, error=repr(err))

    async def room_left(self, room_id: str) -> None:
        """Tell the features whose roles ``room_id`` has that the bot is out of it; one failing
        never skips the others."""
        roles = self.roles_of(room_id)
        for feature in self.features.values():
            if feature.roles.isdisjoint(roles):
                continue
            try:
                await feature.room_left(room_id)
            except Exception as err:
                log.exception("room_left_failed", feature=feature.name, room_id=room_id, error=repr(err))

    def invite_owner(self, room_id: str, inviter: str, direct: bool) -> Feature | None:
        """The first feature that wants an invite to an unconfigured room, if any."""
        for feature in self.features.values():
            try:
                if feature.wants_invite(room_id, inviter, direct):
                    return feature
            except Exception as err:
                log.exception("invite_check_failed", feature=feature.name, room_id=room_id, error=repr(err))
        return None

    def wants(self, feature: Feature, event: Event, roles: Iterable[Role | str]) -> bool:
        """Whether ``feature`` handles ``event`` in a room of ``roles``."""
        if feature.event_types is not None and event.type not in feature.event_types:
            return False
        return not feature.roles.isdisjoint(roles)

    async def dispatch(self, event: Event, only: set[Role | str] | None = None) -> None:
        """Give ``event`` to every feature that wants it (for its room's roles, or only ``only``
        of them), each isolated and timed."""
        roles = self.roles_of(event.room_id)
        if only is not None:
            roles &= only
        if not roles:
            return
        for feature in self.features.values():
            if not self.wants(feature, event, roles):
                continue
            stats = self.stats[feature.name]
            started = time.perf_counter()
            try:
                await feature.handle(event)
            except Exception as err:  # one failing handler never skips the others
                stats.errors += 1
                log.exception(
                    "event_handler_failed",
                    handler=feature.name,
                    error=repr(err),
                    type=event.type,
                    room_id=event.room_id,
                    event_id=event.event_id,
                )
            finally:
                elapsed = time.perf_counter() - started
                stats.calls += 1
                stats.total_s += elapsed
                stats.slowest_s = max(stats.slowest_s, elapsed)

    def room_problems(self) -> list[str]:
        """Every feature's room problems (one failing is logged and left out)."""
        lines: list[str] = []
        for feature in self.features.values():
            try:
                lines += feature.room_problems()
            except Exception as err:
                log.exception("room_problems_failed", feature=feature.name, error=repr(err))
        return lines

    def origins(self, room_id: str) -> list[str]:
        """What the features say of why ``room_id`` is protected."""
        found: list[str] = []
        for feature in self.features.values():
            try:
                origin = feature.origin_of(room_id)
            except Exception as err:
                log.exception("origin_failed", feature=feature.name, room_id=room_id, error=repr(err))
                continue
            if origin:
                found.append(origin)
        return found

    def status(self) -> list[str]:
        """Every feature's status lines, then one line on the handlers' timings."""
        lines = [line for feature in self.features.values() for line in feature.status()]
        timing = ", ".join(
            f"{name} {s.calls} events, {1000 * s.total_s / s.calls:.2f} ms mean, {1000 * s.slowest_s:.0f} ms max"
            + (f", {s.errors} failed" if s.errors else "")
            for name, s in self.stats.items()
            if s.calls
        )
        if timing:
            lines.append(f"Handlers: {timing}")
        return lines
