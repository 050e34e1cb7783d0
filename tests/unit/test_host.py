"""The host for features: routing by role and event type, isolation, timing, migrations, names."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from abusebot.events import Event, parse_event
from abusebot.features import load_all
from abusebot.host import FACTORIES, Feature, Host, Role
from abusebot.ledger import Ledger
from abusebot.rooms import RoomStore

MANAGEMENT = "!management:example.org"
ROOM = "!room:example.org"
ELSEWHERE = "!elsewhere:example.org"


def message(room_id: str, body: str = "hi", event_type: str = "m.room.message") -> Event:
    event = parse_event(
        {
            "type": event_type,
            "event_id": f"${body}",
            "sender": "@someone:example.org",
            "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": body},
        },
        room_id,
    )
    assert event is not None
    return event


class Recorder(Feature):
    """Records the events it gets."""

    name: ClassVar[str] = "recorder"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.PROTECTED})

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, event: Event) -> None:
        self.seen.append(event.event_id)


class Broken(Feature):
    """Raises on every event."""

    name: ClassVar[str] = "broken"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.PROTECTED, Role.MANAGEMENT})

    async def handle(self, event: Event) -> None:
        raise RuntimeError("boom")


class Reactions(Feature):
    """Only reactions, only in the management room."""

    name: ClassVar[str] = "reactions"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.MANAGEMENT})
    event_types: ClassVar[frozenset[str] | None] = frozenset({"m.reaction"})

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, event: Event) -> None:
        self.seen.append(event.event_id)


class WithTable(Feature):
    """Brings a table of its own."""

    name: ClassVar[str] = "with_table"
    migrations: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE with_table_items (id INTEGER PRIMARY KEY, text TEXT NOT NULL);",
        "ALTER TABLE with_table_items ADD COLUMN extra TEXT;",
    )


@pytest.fixture
def host(ledger: Ledger) -> Host:
    store = RoomStore()
    store.management_id = MANAGEMENT
    store.protect(ROOM)
    return Host(store, ledger)


async def test_a_failing_feature_never_keeps_the_event_from_the_others(host: Host) -> None:
    """A feature that raises is counted as failed; the feature after it still gets the event."""
    recorder = Recorder()
    host.add(Broken())
    host.add(recorder)
    await host.dispatch(message(ROOM))
    assert recorder.seen == ["$hi"]
    assert (host.stats["broken"].errors, host.stats["recorder"].errors) == (1, 0)


async def test_events_go_only_to_features_of_the_rooms_role_and_type(host: Host) -> None:
    """A protected-room feature does not see the management room; a reaction-only feature sees
    reactions only; a room with no role reaches no feature."""
    recorder, reactions = Recorder(), Reactions()
    host.add(recorder)
    host.add(reactions)
    await host.dispatch(message(MANAGEMENT, "m1"))
    await host.dispatch(message(MANAGEMENT, "r1", "m.reaction"))
    await host.dispatch(message(ROOM, "p1"))
    await host.dispatch(message(ELSEWHERE, "x1"))
    assert recorder.seen == ["$p1"]
    assert reactions.seen == ["$r1"]


async def test_a_role_a_feature_adds_routes_its_rooms(host: Host) -> None:
    """A role added by a feature (a suggestions room, say) routes that room's events to it."""

    class Suggestions(Recorder):
        name: ClassVar[str] = "suggestions"
        roles: ClassVar[frozenset[Role | str]] = frozenset({"suggestions"})  # type: ignore[assignment]

    feature = Suggestions()
    host.add(feature)
    host.add_role("suggestions", lambda room_id: room_id == ELSEWHERE)
    await host.dispatch(message(ELSEWHERE, "s1"))
    assert feature.seen == ["$s1"]


async def test_a_second_feature_of_one_name_is_refused(host: Host) -> None:
    """Feature names are unique on the host."""
    host.add(Recorder())
    with pytest.raises(ValueError, match="recorder"):
        host.add(Recorder())


async def test_a_features_migrations_run_once_each_in_order(host: Host, ledger: Ledger, tmp_path: Path) -> None:
    """A feature's tables are created at start and not again at the next start."""
    host.add(WithTable())
    await host.start()
    await host.start()  # a second start (a restart) applies nothing twice
    assert await ledger.migrate_feature("with_table", WithTable.migrations) == 2
    async with ledger.transaction() as db:
        await db.execute("INSERT INTO with_table_items (text, extra) VALUES ('a', 'b')")


async def test_the_handlers_are_timed(host: Host) -> None:
    """Each call is counted and timed, and the status line names the feature."""
    host.add(Recorder())
    for number in range(3):
        await host.dispatch(message(ROOM, f"e{number}"))
    assert host.stats["recorder"].calls == 3
    assert any("recorder 3 events" in line for line in host.status())


def test_the_features_of_the_package_register_themselves() -> None:
    """Every module of abusebot.features registers a factory; policy lists run first (a Space's
    list room is known as one before the Space is walked), protections after them."""
    names = load_all()
    assert names[:3] == ["policy_lists", "spaces", "protections"]
    assert set(names) <= set(FACTORIES)
