"""Helpers shared by the tests of second chances found by attacking them from outside."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from aiohttp import web

from abusebot.testing.proxy import Proxy
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from tests.integration.test_loop import ledger_query

VOTES = {"votes": {"min_duration": "2s", "default_duration": "6s", "max_duration": "60s", "rules_duration": "90s"}}
FLOOD = {"flood": {"max_messages": 3, "per_seconds": 30, "cross_room_max_messages": 50}}


class FailingProxy(Proxy):
    """Answers 502 (an upstream hiccup) to requests matching ``fail`` while it is set."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.fail: Callable[[str, str], bool] | None = None
        self.failed: list[str] = []

    async def before(self, request: web.Request) -> None:
        fail = self.fail
        if fail is not None and fail(request.method, request.path):
            self.failed.append(f"{request.method} {request.path}")
            raise web.HTTPBadGateway(
                text=json.dumps({"errcode": "M_UNKNOWN", "error": "bad gateway (probe)"}),
                content_type="application/json",
            )


def bodies(events: list[dict[str, Any]], sender: str, *fragments: str) -> list[str]:
    out = []
    for e in events:
        body = (e.get("content") or {}).get("body")
        if (
            e.get("sender") == sender
            and e.get("type") == "m.room.message"
            and isinstance(body, str)
            and all(f in body for f in fragments)
        ):
            out.append(body)
    return out


def vote_number(text: str) -> int:
    found = re.search(r"vote #(\d+)", text)
    assert found is not None, text
    return int(found.group(1))


def q1(w: World, sql: str, *args: Any) -> Any:
    rows = ledger_query(w, sql, *args)
    return rows[0][0] if rows else None


@pytest_asyncio.fixture
async def failing(synapse: SynapseServer) -> AsyncIterator[FailingProxy]:
    """A proxy in front of the session's Synapse that answers 502 to the requests it is told to."""
    p = FailingProxy(synapse.url)
    await p.start()
    yield p
    await p.close()
