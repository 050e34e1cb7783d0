"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from abusebot.ledger import Ledger


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    """A real ledger (SQLite, WAL) in a temporary directory."""
    opened = await Ledger.open(tmp_path / "ledger.sqlite3")
    yield opened
    await opened.close()
