"""One probe against the real Synapse: room labels kept for the report, and two publishes at once."""

from __future__ import annotations

import asyncio
import datetime
import re
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World
from abusebot.transparency import collect, current_half, labels_from, parse_period, render
from tests.integration.cases_helpers import command
from tests.integration.test_loop import ledger_query, wait_until


async def test_room_labels_and_two_publishes_at_once(synapse: SynapseServer, tmp_path: Path) -> None:
    w = await World.create(synapse, tmp_path, rooms=3, members=("member",))
    try:
        meta = w.protected[2]
        # A hostile room admin names their room after a person; another room has no name at all.
        await w.mod.put_state(w.protected[0], "m.room.name", {"name": "@alice:example.org"})
        await w.mod.put_state(w.protected[1], "m.room.name", {"name": ""})
        w.write_config({"transparency": {"publish_room": meta, "min_count": 1}})
        await w.mod.start_watching()
        await w.start_bot()
        half = current_half().label

        async def labels_kept() -> bool:
            return len(ledger_query(w, "SELECT label FROM transparency_rooms WHERE role = 'protected'")) >= 3

        await wait_until(labels_kept, 30, "the labels kept")
        # Two publishes of the same period at once (two moderators, or a double send).
        first = await w.mod.say(w.management, f"!mod stats publish {half}")
        second = await w.mod.say(w.management, f"!mod stats publish {half}")
        replies = await asyncio.gather(
            w.mod.wait_for_reply(w.management, first, timeout=40),
            w.mod.wait_for_reply(w.management, second, timeout=40),
        )
        rows = ledger_query(w, "SELECT id, supersedes_id, published_event IS NOT NULL FROM transparency_snapshots")
        # Publishing twice: one original, one correction naming it; both posted.
        assert sorted(rows) == [(1, None, 1), (2, 1, 1)], (rows, replies)
        # What `abusebot report` prints as room names (the ledger keeps the names as they are;
        # the report prints each made safe): never a user id or a room id.
        for room in w.protected[:2]:
            await command(w, f"!mod ban {w.members['member'].user_id} --room {room} 1h x")
        stored = ledger_query(w, "SELECT room_id, label, role FROM transparency_rooms")
        period = parse_period(str(datetime.datetime.now(datetime.timezone.utc).year))
        yearly = collect(w.bot.ledger.path, period, labels_from(stored, ()), 1)
        printed = list(yearly.by_room)
        assert printed, stored
        for label in printed:
            assert not re.search(r"[@!$#][\w.=-]+", label), printed
        assert not re.search(r"[@!$][\w.=-]+:", render(yearly, "md"))
    finally:
        await w.close()
