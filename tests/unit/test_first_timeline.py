"""A room's first timeline after the bot joined it: what precedes the join is history.

``Bot._handle_room`` is driven with sync payloads as Synapse sends them for a newly joined room
(up to the timeline limit of events from before the join, then ours, then live ones); the bot's
dispatch is replaced by a recorder so only the routing is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

from abusebot.bot import Bot
from abusebot.config import Config
from abusebot.events import Event
from abusebot.matrix import Homeserver

BOT = "@bot:example.org"
ROOM = "!room:example.org"


def make_bot() -> tuple[Bot, list[str]]:
    config = Config(
        homeserver="http://127.0.0.1:8008",
        user_id=BOT,
        data_dir=Path("unused"),
        management_room="!mgmt:example.org",
        protected_rooms=(ROOM,),
        password="unused",
    )
    bot = Bot(config)
    bot.hs = create_autospec(Homeserver, instance=True)
    bot.hs.user_id = BOT
    bot.hs.messages.return_value = {"chunk": []}  # the gap behind a truncated timeline: empty here
    bot.store.protect(ROOM)
    dispatched: list[str] = []

    async def record(event: Event) -> None:
        dispatched.append(event.event_id)

    bot.dispatch = record  # type: ignore[method-assign]
    return bot, dispatched


def message(n: int, ts: int) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "event_id": f"$m{n}",
        "sender": "@spammer:example.org",
        "origin_server_ts": ts,
        "content": {"msgtype": "m.text", "body": f"spam {n}"},
    }


def our_join(ts: int, before: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "m.room.member",
        "state_key": BOT,
        "event_id": f"$join{ts}",
        "sender": BOT,
        "origin_server_ts": ts,
        "content": {"membership": "join"},
    }
    if before:
        event["unsigned"] = {"prev_content": {"membership": before}}
    return event


def joined(timeline: list[dict[str, Any]], state: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"state": {"events": state or []}, "timeline": {"events": timeline, "limited": True, "prev_batch": "p"}}


async def test_events_before_our_join_in_the_timeline_are_not_dispatched() -> None:
    bot, dispatched = make_bot()
    timeline = [message(1, 100), message(2, 200), our_join(300, before="invite"), message(3, 400)]
    await bot._handle_room(ROOM, joined(timeline), since="s1")
    assert dispatched == ["$m3"]
    bot.hs.messages.assert_not_called()  # no gap is filled back into the room's past


async def test_a_join_found_after_a_crash_ahead_of_its_checkpoint_still_cuts_off_history() -> None:
    """Not marked as just joined in this run (the bot joined, then died before the checkpoint):
    our join in the timeline is enough."""
    bot, dispatched = make_bot()
    timeline = [message(1, 100), our_join(300), message(3, 400), message(4, 500)]
    await bot._handle_room(ROOM, joined(timeline), since="s1")
    assert dispatched == ["$m3", "$m4"]


async def test_a_profile_change_of_the_bot_is_not_a_join() -> None:
    bot, dispatched = make_bot()
    timeline = [message(1, 100), our_join(300, before="join"), message(3, 400)]
    await bot._handle_room(ROOM, {"timeline": {"events": timeline}}, since="s1")
    assert dispatched == ["$m1", "$join300", "$m3"]


async def test_when_our_join_is_in_the_state_block_its_time_separates_history() -> None:
    bot, dispatched = make_bot()
    bot._fresh[ROOM] = 250
    timeline = [message(1, 100), message(2, 200), message(3, 400)]
    await bot._handle_room(ROOM, joined(timeline, state=[our_join(300, before="invite")]), since="s1")
    assert dispatched == ["$m3"]
    assert ROOM not in bot._fresh  # only the first batch after the join is cut
    bot.hs.messages.assert_called_once()  # our join is older than the timeline: the gap is filled


async def test_a_room_marked_as_just_joined_without_its_join_in_sight_uses_the_time_of_the_join_request() -> None:
    bot, dispatched = make_bot()
    bot._fresh[ROOM] = 250
    await bot._handle_room(ROOM, joined([message(1, 100), message(2, 260)]), since="s1")
    assert dispatched == ["$m2"]


async def test_history_state_events_are_still_learnt() -> None:
    bot, dispatched = make_bot()
    name = {
        "type": "m.room.name",
        "state_key": "",
        "event_id": "$name",
        "sender": "@mod:example.org",
        "origin_server_ts": 150,
        "content": {"name": "Renamed"},
    }
    await bot._handle_room(ROOM, joined([message(1, 100), name, our_join(300, before="invite")]), since="s1")
    assert dispatched == []
    assert bot.store.label(ROOM) == "Renamed"


async def test_the_gap_behind_a_truncated_first_timeline_is_live_from_our_join_on() -> None:
    """Our join is in neither the timeline nor the state block, but in the gap behind a limited
    timeline: the gap's events after it are dispatched, the ones before it are not."""
    bot, dispatched = make_bot()
    bot._fresh[ROOM] = 250
    bot.hs.messages.return_value = {"chunk": [message(5, 320), our_join(300, before="invite"), message(4, 200)]}
    await bot._handle_room(ROOM, joined([message(6, 400)]), since="s1")
    assert dispatched == ["$m5", "$m6"]
