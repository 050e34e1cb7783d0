"""Integration fixtures: one real Synapse for the whole session, a fresh world per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from abusebot.testing.e2e import EncryptedPerson
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """A real Synapse on 127.0.0.1 (SQLite, shared-secret registration, generous rate limits)."""
    server = SynapseServer(base_dir=tmp_path_factory.mktemp("synapse"))
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def world(synapse: SynapseServer, tmp_path: Path) -> AsyncIterator[World]:
    """A management room and one protected room, a moderator and a spammer; the bot not yet started."""
    w = await World.create(synapse, tmp_path)
    yield w
    await w.close()


@pytest_asyncio.fixture
async def running(world: World) -> AsyncIterator[World]:
    """``world`` with the bot running in-process and the moderator watching the rooms."""
    await world.mod.start_watching()
    await world.start_bot()
    yield world


MakePerson = Callable[[World, str], Awaitable[EncryptedPerson]]


@pytest_asyncio.fixture
async def encrypted_person(tmp_path: Path) -> AsyncIterator[MakePerson]:
    """A factory for encrypted users of a world (closed at the end)."""
    people: list[EncryptedPerson] = []

    async def make(world: World, name: str) -> EncryptedPerson:
        account = world.synapse.register(f"{name}-{world.tag}")
        person = EncryptedPerson(world.synapse.url, account, tmp_path / f"store-{name}")
        await person.start()
        people.append(person)
        return person

    yield make
    for person in people:
        await person.close()
