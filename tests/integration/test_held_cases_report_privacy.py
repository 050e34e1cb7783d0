"""``!report`` privacy and targeting, seen from the protected room."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, is_redaction_of
from tests.integration.cases_helpers import history, ledger_query, report


async def test_the_room_cannot_tell_that_a_redacted_line_was_a_report(synapse: SynapseServer, tmp_path: Path) -> None:
    """README: "The bot removes your `!report` line at once, so the room never sees who
    reported … The person you reported is never told who reported them, nor that a report
    exists." The bot's redaction carries the reason "report received privately", which every
    member (the reported one too) sees on the reporter's deleted message."""
    w = await World.create(synapse, tmp_path, members=("spammer", "reporter"))
    try:
        room = w.protected[0]
        spammer, reporter = w.members["spammer"], w.members["reporter"]
        await w.mod.start_watching()
        await w.start_bot()
        bad = await spammer.say(room, "you are all idiots")
        rep = await report(reporter, room, bad, "!report insults")
        await w.mod.wait_for(room, is_redaction_of(rep), timeout=20)
        await asyncio.sleep(1)
        # What the reported person can read in the room about the reporter's deleted line.
        seen = [e for e in await history(spammer, room) if e.get("event_id") == rep or is_redaction_of(rep)(e)]
        assert seen, "the spammer should at least see the deleted event"
        leaked = [
            e
            for e in seen
            if "report" in json.dumps(e.get("content", {})).lower()
            or "report" in json.dumps(e.get("unsigned", {}).get("redacted_because", {})).lower()
        ]
        assert leaked == [], json.dumps(leaked, indent=1)[:1500]
    finally:
        await w.close()


async def test_report_typed_in_a_thread_without_a_reply_does_not_name_a_bystander(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """In a thread, clients send a plain message with a *falling-back* ``m.in_reply_to`` (the
    thread's latest event, ``is_falling_back: true``): it is no reply. ``!report`` typed so in a
    thread must not report — and name in a case — whoever happened to write last there."""
    w = await World.create(synapse, tmp_path, members=("author", "bystander", "reporter"))
    try:
        _bot_id, room = w.bot_account.user_id, w.protected[0]
        author, bystander, reporter = (w.members[n] for n in ("author", "bystander", "reporter"))
        await w.mod.start_watching()
        await w.start_bot()
        root = await author.say(room, "what do you think of the new release?")
        last = await bystander.send(
            room,
            {
                "msgtype": "m.text",
                "body": "looks good to me",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": root},
                },
            },
        )
        rep = await reporter.send(
            room,
            {
                "msgtype": "m.text",
                "body": "!report",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": last},
                },
            },
        )
        await w.mod.wait_for(room, is_redaction_of(rep), timeout=20)
        await asyncio.sleep(3)
        named = ledger_query(w, "SELECT user_id FROM case_people WHERE role = 'named'")
        assert (bystander.user_id,) not in named, "the bystander who wrote last in the thread was reported"
    finally:
        await w.close()
