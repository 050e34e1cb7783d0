"""Shared bits for the Space attack tests."""

from __future__ import annotations

from abusebot.testing.world import World
from tests.integration.cases_helpers import command
from tests.integration.spaces_helpers import add_child, create_space, remove_child, server_of  # noqa: F401
from tests.integration.test_cases import from_bot, open_dm  # noqa: F401
from tests.integration.test_loop import ledger_query, wait_until  # noqa: F401


async def settle(w: World) -> None:
    """A command answered after a change: the batch holding the change was handled."""
    await command(w, "!mod status")
