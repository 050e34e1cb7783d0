"""Helpers shared by the tests of suggestions found by attacking them from outside."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from abusebot.matrix import API, q
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World
from tests.integration.test_cases import from_bot
from tests.integration.test_loop import ledger_query, wait_until
from tests.integration.test_suggestions import command, marked, marks, react

__all__ = [
    "VOTES",
    "bot_messages",
    "command",
    "from_bot",
    "ledger_query",
    "marked",
    "marks",
    "react",
    "redact",
    "suggestions_world",
    "wait_until",
]

VOTES = {"👍", "👎"}


async def suggestions_world(
    synapse: SynapseServer,
    tmp_path: Path,
    members: tuple[str, ...] = ("ann", "bob", "cy"),
    threshold: int = 10,
    public: bool = True,
    extra: dict[str, Any] | None = None,
    start: bool = True,
) -> tuple[World, str]:
    w = await World.create(synapse, tmp_path, members=members)
    room = await w.mod.create_room(name="Suggestions", public=public)
    if public:
        for person in w.members.values():
            await person.join(room)
    w.write_config(
        {"suggestions": {"room": room, "threshold": threshold, "vote_reactions": ["👍", "👎"]}, **(extra or {})}
    )
    await w.mod.start_watching()
    if start:
        await start_and_join(w, room)
    return w, room


async def start_and_join(w: World, room: str) -> None:
    await w.start_bot()
    bot_id = w.bot_account.user_id

    async def joined() -> bool:
        return await w.mod.membership(room, bot_id) == "join"

    await wait_until(joined, 20, "the bot joining the suggestions room")


async def bot_messages(w: World, room: str, *fragments: str) -> list[dict[str, Any]]:
    """Every message of the bot in ``room`` (read with /messages) containing the fragments."""
    reply = await w.mod.call("GET", f"{API}/rooms/{q(room)}/messages", query={"dir": "b", "limit": "500"})
    pred = from_bot(w.bot_account.user_id, *fragments)
    return [e for e in reply.get("chunk", []) if pred(e)]


async def redact(person: Person, room: str, event_id: str) -> str:
    import secrets

    reply = await person.call(
        "PUT", f"{API}/rooms/{q(room)}/redact/{q(event_id)}/{secrets.token_hex(6)}", {"reason": "probe"}
    )
    return str(reply["event_id"])


async def settle(seconds: float = 2.0) -> None:
    await asyncio.sleep(seconds)
