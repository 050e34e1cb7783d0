"""Helpers shared by the tests of cases found by attacking them from outside."""

from __future__ import annotations

from typing import Any

from abusebot.matrix import API, q
from abusebot.testing.world import Person, World
from tests.integration.test_cases import CASE, from_bot, open_dm, say_in_thread, thread_of  # noqa: F401
from tests.integration.test_loop import ledger_query, wait_until  # noqa: F401


async def report(person: Person, room: str, target: str, text: str = "!report") -> str:
    return await person.send(
        room, {"msgtype": "m.text", "body": text, "m.relates_to": {"m.in_reply_to": {"event_id": target}}}
    )


async def command(w: World, text: str, timeout: float = 30) -> str:
    event = await w.mod.say(w.management, text)
    return await w.mod.wait_for_reply(w.management, event, timeout=timeout)


async def highlights(person: Person) -> list[dict[str, Any]]:
    reply = await person.call("GET", f"{API}/notifications", query={"only": "highlight", "limit": "100"})
    return list(reply.get("notifications", []))


async def history(person: Person, room: str, limit: int = 100) -> list[dict[str, Any]]:
    reply = await person.call("GET", f"{API}/rooms/{q(room)}/messages", query={"dir": "b", "limit": str(limit)})
    return list(reply.get("chunk", []))
