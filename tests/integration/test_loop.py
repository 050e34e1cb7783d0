"""The event loop's guarantees, against a real Synapse.

First start ignores history; restarts resume without handling anything twice; temporary
sanctions end on time across ``kill -9``; hostile events are survived; the homeserver may go
away and come back; rate limits are honoured; room upgrades are followed; gaps are fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from abusebot.events import Event
from abusebot.matrix import API, HomeserverUnavailable, MatrixError, q
from abusebot.safety import can_command
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import World, body_contains, replies_to

# -- helpers -----------------------------------------------------------------------------------

MSG = "m.room.message"
#: Protections still see every event, but a burst of test traffic is not punished as a flood.
NO_FLOOD_LIMIT = {"protections": {"flood": {"max_messages": 100_000, "cross_room_max_messages": 100_000}}}


def ledger_path(world: World) -> Path:
    """Where the world's bot keeps its ledger."""
    return world.base / "data" / "ledger.sqlite3"


def ledger_query(world: World, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run a query on the bot's ledger through a separate, read-only SQLite connection."""
    connection = sqlite3.connect(f"{ledger_path(world).as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def infractions_from(world: World, event_id: str) -> list[tuple[int, str, str]]:
    """``(id, kind, state)`` of the infractions recorded for the command ``event_id``."""
    rows = ledger_query(world, "SELECT id, kind, state FROM infractions WHERE source_event = ?", event_id)
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.25)


async def wait_for_checkpoint(world: World, timeout: float = 60.0) -> None:
    """Wait until the bot (possibly another process) has committed its first sync checkpoint and
    is in every protected room (at a first start it joins them after its first sync)."""

    async def committed() -> bool:
        with contextlib.suppress(sqlite3.Error):
            return bool(ledger_query(world, "SELECT 1 FROM kv WHERE key = 'sync_token'"))
        return False

    async def joined() -> bool:
        bot = world.bot_account.user_id
        return all([await world.mod.membership(room, bot) == "join" for room in world.protected])

    await wait_until(committed, timeout, "the bot's first sync checkpoint")
    await wait_until(joined, timeout, "the bot in every protected room")


def reply_count(world: World, room_id: str, event_id: str) -> int:
    """How many replies to ``event_id`` the moderator has seen in ``room_id``."""
    return sum(1 for event in world.mod.seen.get(room_id, []) if replies_to(event, event_id))


async def command(world: World, text: str, room_id: str | None = None, timeout: float = 30.0) -> str:
    """The moderator types ``text``; returns the bot's reply."""
    room = room_id or world.management
    event_id = await world.mod.say(room, text)
    return await world.mod.wait_for_reply(room, event_id, timeout)


async def assert_alive(world: World, timeout: float = 30.0) -> None:
    """The bot still answers ``!mod status`` (and, when in-process, its task is still running)."""
    reply = await command(world, "!mod status", timeout=timeout)
    assert "abusebot" in reply, reply
    if world._bot_task is not None:
        assert not world._bot_task.done()


async def retry_unavailable(operation: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Run ``operation``, retrying while the homeserver cannot be reached (stale connections)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await operation()
        except HomeserverUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# -- 1. first start ------------------------------------------------------------------------------


async def test_first_start_ignores_commands_typed_before_the_bot_ever_ran(world: World) -> None:
    """A command typed before the bot's first start is never obeyed; one typed after it is."""
    w = world
    spammer = w.members["spammer"]
    old = await w.mod.say(w.management, f"!mod ban {spammer.user_id} typed before the bot existed")
    await w.mod.start_watching()
    await w.start_bot()

    reply = await command(w, f"!mod history {spammer.user_id}")

    assert "has no infractions" in reply, reply
    assert reply_count(w, w.management, old) == 0
    assert await w.mod.membership(w.protected[0], spammer.user_id) == "join"
    assert infractions_from(w, old) == []


# -- 2. restart ----------------------------------------------------------------------------------


async def test_restart_resumes_from_checkpoint_without_handling_anything_twice(running: World) -> None:
    """After a graceful restart, a command typed while down is handled once and older ones not again."""
    w = running
    spammer = w.members["spammer"].user_id
    first = await w.mod.say(w.management, f"!mod note {spammer} first note")
    assert "Noted" in await w.mod.wait_for_reply(w.management, first)

    await w.stop_bot()
    while_down = await w.mod.say(w.management, f"!mod note {spammer} typed while the bot was down")
    await w.start_bot()

    assert "Noted" in await w.mod.wait_for_reply(w.management, while_down, timeout=30)
    await assert_alive(w)  # a later command: everything before it has been handled
    assert reply_count(w, w.management, first) == 1
    assert reply_count(w, w.management, while_down) == 1
    assert [kind for _, kind, _ in infractions_from(w, first)] == ["note"]
    assert [kind for _, kind, _ in infractions_from(w, while_down)] == ["note"]


# -- 3. kill -9 ----------------------------------------------------------------------------------


async def test_temporary_ban_is_lifted_on_time_after_kill_9_and_restart(world: World) -> None:
    """A temporary ban whose bot was SIGKILLed is lifted promptly once the bot runs again."""
    w = world
    spammer = w.members["spammer"].user_id
    room = w.protected[0]
    await w.mod.start_watching()
    w.spawn_bot()
    await wait_for_checkpoint(w)

    ban = await w.mod.say(w.management, f"!mod ban {spammer} 20s cooling off")
    assert "Banned" in await w.mod.wait_for_reply(w.management, ban, timeout=30)
    assert await w.mod.membership(room, spammer) == "ban"
    [(infraction_id, kind, state)] = infractions_from(w, ban)
    assert (kind, state) == ("ban", "active")
    w.kill_bot(signal.SIGKILL)  # while the ban still runs

    [(expires_at,)] = ledger_query(w, "SELECT expires_at FROM infractions WHERE id = ?", infraction_id)
    await asyncio.sleep(max(0.0, (expires_at + 500) / 1000 - time.time()))  # the expiry passes, bot dead
    assert await w.mod.membership(room, spammer) == "ban"  # nobody lifted it while the bot was down

    w.spawn_bot()

    async def unbanned() -> bool:
        return await w.mod.membership(room, spammer) != "ban"

    def pending_lifts() -> int:
        sql = "SELECT COUNT(*) FROM jobs WHERE infraction_id = ? AND state = 'pending'"
        return int(ledger_query(w, sql, infraction_id)[0][0])

    async def expired() -> bool:
        return infractions_from(w, ban) == [(infraction_id, "ban", "expired")] and pending_lifts() == 0

    await wait_until(unbanned, 30, "the unban after restart")
    await wait_until(expired, 30, "the infraction moving to 'expired' and its lift job finishing")
    w.kill_bot(signal.SIGTERM)
    assert infractions_from(w, ban) == [(infraction_id, "ban", "expired")]
    assert pending_lifts() == 0


async def test_kill_9_loses_no_committed_infraction(world: World) -> None:
    """Every infraction confirmed before a SIGKILL is in the ledger afterwards, and is not redone."""
    w = world
    spammer = w.members["spammer"].user_id
    await w.mod.start_watching()
    w.spawn_bot()
    await wait_for_checkpoint(w)

    texts = [
        f"!mod warn {spammer} first",
        f"!mod note {spammer} keeps posting links",
        f"!mod note {spammer} and again",
        f"!mod ban {spammer} third strike",
    ]
    commands: list[str] = []
    for text in texts:
        event_id = await w.mod.say(w.management, text)
        await w.mod.wait_for_reply(w.management, event_id, timeout=30)
        commands.append(event_id)
    w.kill_bot(signal.SIGKILL)  # right after the last confirmation

    recorded = [infractions_from(w, event_id) for event_id in commands]
    assert [[(kind, state) for _, kind, state in rows] for rows in recorded] == [
        [("warning", "active")],
        [("note", "active")],
        [("note", "active")],
        [("ban", "active")],
    ]

    w.spawn_bot()  # the last batch may be replayed: it must not act again
    history = await command(w, f"!mod history {spammer}", timeout=60)
    assert "4 infraction(s)" in history, history
    assert [reply_count(w, w.management, event_id) for event_id in commands] == [1, 1, 1, 1]
    w.kill_bot(signal.SIGTERM)


# -- 4. hostile events ---------------------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    """A dict nested ``depth`` levels deep."""
    value: dict[str, Any] = {"leaf": "!mod ban"}
    for level in range(depth):
        value = {f"k{level}": value, "list": [value] if level % 10 == 0 else []}
    return value


async def test_hostile_events_sent_by_clients_are_survived(synapse: SynapseServer, tmp_path: Path) -> None:
    """Odd events Synapse accepts from clients (60 KB, invisible/RTL unicode, NUL, deep nesting) crash nothing."""
    w = await World.create(synapse, tmp_path, members=("spammer", "bystander"), config=NO_FLOOD_LIMIT)
    try:
        await w.mod.start_watching()
        await w.start_bot()
        spammer, bystander = w.members["spammer"], w.members["bystander"]
        room = w.protected[0]
        kick = f"!mod kick {bystander.user_id}"
        html = "org.matrix.custom.html"
        pill = f"<a href='https://matrix.to/#/{bystander.user_id}'>b</a>"
        hostile: list[tuple[str, Mapping[str, Any], str]] = [
            (room, {"msgtype": "m.text", "body": "A" * 60_000}, MSG),
            (room, {"msgtype": "m.text", "body": "h\u200be\u200dl\u2060l\ufeffo \u202eknil\u202c \u2066x\u2069"}, MSG),
            (room, {"msgtype": "m.text", "body": "nul \u0000 inside"}, MSG),
            (room, {"msgtype": "m.text", "body": "deep", "org.example.deep": nested(60)}, MSG),
            (room, {"org.example.deep": nested(60)}, "org.example.custom"),
            (room, {"msgtype": "m.text", "body": f"\u202e{kick}"}, MSG),
            (room, {"msgtype": "m.text", "body": f"!mod\u202e kick {bystander.user_id}"}, MSG),
            (room, {"msgtype": "m.text", "body": f"{kick}\u202e\u200b"}, MSG),
            (room, {"msgtype": "org.example.weird", "body": kick}, MSG),
            (room, {"msgtype": "m.text", "body": kick, "format": html, "formatted_body": 5}, MSG),
            (room, {"msgtype": "m.text", "body": kick, "format": html, "formatted_body": None}, MSG),
            (
                room,
                {"msgtype": "m.text", "body": "x", "format": html, "formatted_body": f"!mod kick {pill}<mx-reply><<"},
                MSG,
            ),
            (room, {"msgtype": "m.text", "body": "x", "m.relates_to": {"m.in_reply_to": 5, "rel_type": ["x"]}}, MSG),
            (room, {"msgtype": "m.text", "body": "x", "m.new_content": "!mod kick"}, MSG),
            (w.management, {"msgtype": "m.text", "body": "!mod status \u202e\u200b\u2066"}, MSG),
            (w.management, {"msgtype": "m.text", "body": "!mod status", "format": html, "formatted_body": 5}, MSG),
        ]
        refused: list[str] = []
        for room_id, content, event_type in hostile:
            sender = w.mod if room_id == w.management else spammer
            try:
                event_id = await sender.send(room_id, content, event_type)
            except MatrixError as err:
                refused.append(f"{str(content)[:80]}: {err}")
                continue
            if room_id == w.management:  # the moderator's odd-but-valid status commands are answered
                assert "abusebot" in await w.mod.wait_for_reply(room_id, event_id)
            await assert_alive(w)
        assert not refused, f"Synapse now refuses these; move them to the raw-sync test: {refused}"
        assert await w.mod.membership(room, bystander.user_id) == "join"  # the spammer commands nothing
        assert ledger_query(w, "SELECT COUNT(*) FROM infractions WHERE kind = 'kick'") == [(0,)]
    finally:
        await w.close()


def _raw(event_id: str | None, sender: str, event_type: str, content: Any, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": event_type, "sender": sender, "content": content, "origin_server_ts": 1, **extra}
    if event_id is not None:
        raw["event_id"] = event_id
    return raw


def _timeline(room_id: str, *events: Any, state: Any = None) -> dict[str, Any]:
    joined: dict[str, Any] = {"timeline": {"events": list(events), "limited": False}}
    if state is not None:
        joined["state"] = {"events": state}
    return {"rooms": {"join": {room_id: joined}}}


async def test_hostile_raw_sync_events_are_ignored_without_crash_or_corruption(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    """Malformed events that only federation could deliver go through handle_sync harmlessly."""
    w = await World.create(synapse, tmp_path, members=("spammer", "bystander"), config=NO_FLOOD_LIMIT)
    try:
        await w.mod.start_watching()
        bot = await w.start_bot()
        mod, spammer, bystander = w.mod.user_id, w.members["spammer"].user_id, w.members["bystander"].user_id
        bot_id = w.bot_account.user_id
        room, management = w.protected[0], w.management
        fake = iter(range(1, 1_000_000))

        def eid() -> str:
            return f"$fake{next(fake)}:evil.example"

        text = "m.room.message"
        cases: list[Mapping[str, Any]] = [
            _timeline(room, _raw(eid(), spammer, text, {"msgtype": "m.text", "body": 12345})),
            _timeline(room, _raw(eid(), spammer, text, {"msgtype": "m.text", "body": ["!mod", "kick", bystander]})),
            _timeline(room, _raw(eid(), spammer, text, f"!mod kick {bystander}")),
            _timeline(room, _raw(eid(), spammer, text, {"body": f"!mod kick {bystander}"})),
            _timeline(management, _raw(eid(), mod, text, {"msgtype": 5, "body": {"!mod": "ban"}})),
            _timeline(room, _raw(eid(), spammer, "m.room.member", {"membership": "join"}, state_key=42)),
            _timeline(room, _raw(eid(), spammer, "m.room.member", {"membership": "join"}, state_key=[spammer])),
            # Unattributable: even from the moderator, an event without an id is not obeyed.
            _timeline(management, _raw(None, mod, text, {"msgtype": "m.text", "body": f"!mod ban {spammer}"})),
            _timeline(room, _raw(eid(), spammer, text, {"msgtype": "m.text", "body": "hi"}, origin_server_ts="17e11")),
            _timeline(room, _raw(eid(), spammer, text, {"msgtype": "m.text", "body": "x"}, origin_server_ts=2**80)),
            _timeline(
                room,
                _raw(
                    eid(),
                    spammer,
                    "m.room.power_levels",
                    {"users": {"@x": True, spammer: "100", bot_id: 100}, "ban": "50", "users_default": None},
                    state_key="",
                ),
            ),
            _timeline(
                management,
                _raw(eid(), spammer, "m.room.power_levels", {"users": {spammer: True}, "ban": "50"}, state_key=""),
                state=[_raw(eid(), spammer, "m.room.member", {"membership": "join"}, state_key=spammer, unsigned=5)],
            ),
            _timeline(
                room, _raw(eid(), spammer, "m.room.member", {"membership": "join"}, state_key=spammer, unsigned="x")
            ),
            _timeline(room, _raw(eid(), spammer, text, {"msgtype": "m.text", "body": "u"}, unsigned=[1, 2])),
            _timeline(room, _raw(eid(), spammer, text, {"msgtype": "m.text", "body": "m", "m.mentions": 3})),
            _timeline(room, _raw(eid(), spammer, text, {"msgtype": "m.text", "body": "f", "formatted_body": [1]})),
            _timeline(
                room,
                _raw(
                    eid(), spammer, "m.room.member", {"membership": 1}, state_key=spammer, unsigned={"prev_content": 3}
                ),
            ),
            _timeline(room, _raw(eid(), 5, text, {"msgtype": "m.text", "body": "!mod status"})),
            _timeline(room, _raw(eid(), spammer, 5, {})),
            _timeline(room, None, 5, "event", [], {}),
            _timeline(room, _raw(eid(), spammer, "m.room.tombstone", {"replacement_room": 5}, state_key="")),
            _timeline(room, _raw(eid(), spammer, "m.room.redaction", {"redacts": ["$a"]}, redacts=7)),
            {"rooms": {"join": {room: {"timeline": {"events": "not a list", "limited": True, "prev_batch": 9}}}}},
            {"rooms": {"join": {room: {"timeline": {"events": [], "limited": True, "prev_batch": "not-a-token"}}}}},
            {"rooms": {"join": {room: "not a room"}}},
            {"rooms": {"join": ["not", "a", "mapping"], "leave": 5, "invite": "x"}},
            {"rooms": "nothing"},
            {"next_batch": 17},
        ]
        since = await bot.ledger.get_kv("sync_token")
        with capture_logs() as logs:
            for case in cases:
                await bot.handle_sync(case, since)
                await assert_alive(w)

        failures = [entry for entry in logs if entry.get("log_level") in ("error", "critical", "exception")]
        assert not failures, failures
        assert any(entry.get("event") == "unusable_event" for entry in logs), "log capture did not work"
        assert await bot.ledger.get_kv("sync_token") != "17"

        # State is not corrupted: the bogus power levels make nobody a moderator or room admin.
        staff = bot.moderation.staff
        assert not staff.is_moderator(spammer)
        assert staff.is_moderator(mod)
        assert not can_command(spammer, bot.store.room(room), staff, management=False)
        assert await w.mod.membership(room, spammer) == "join"
        assert await w.mod.membership(room, bystander) == "join"

        # ...and the real path still refuses the spammer and obeys the moderator.
        attempt = await w.members["spammer"].say(room, f"!mod kick {bystander}")

        async def ignored() -> bool:
            rows = await bot.ledger.audit_rows(limit=20)
            return any(r["event_id"] == attempt and r["outcome"] == "ignored" for r in rows)

        await wait_until(ignored, 15, "the spammer's command being audited as ignored")
        reply = await command(w, f"!mod ban {spammer} spam")
        assert "Banned" in reply, reply
        assert await w.mod.membership(room, spammer) == "ban"
        assert await w.mod.membership(room, bystander) == "join"
    finally:
        await w.close()


# -- 5. homeserver outage ------------------------------------------------------------------------


async def test_bot_survives_homeserver_going_away_and_coming_back(tmp_path: Path) -> None:
    """When Synapse stops and restarts on the same database, the bot resumes and obeys commands."""
    server = SynapseServer(base_dir=tmp_path / "synapse")
    await asyncio.to_thread(server.start)
    w: World | None = None
    try:
        w = await World.create(server, tmp_path / "world")
        await w.mod.start_watching()
        await w.start_bot()
        await assert_alive(w)

        await asyncio.to_thread(server.kill, signal.SIGTERM)
        await asyncio.sleep(3)  # the outage: the bot's long-poll fails and it backs off
        assert w._bot_task is not None
        assert not w._bot_task.done()
        await asyncio.to_thread(server.restart)

        await retry_unavailable(w.mod.hs.whoami)  # the moderator's own connection recovers first
        spammer = w.members["spammer"].user_id
        event_id = await w.mod.say(w.management, f"!mod ban {spammer} after the outage")
        assert "Banned" in await w.mod.wait_for_reply(w.management, event_id, timeout=90)
        assert await w.mod.membership(w.protected[0], spammer) == "ban"
        assert not w._bot_task.done()
    finally:
        if w is not None:
            await w.close()
        await asyncio.to_thread(server.stop)


# -- 6. rate limits ------------------------------------------------------------------------------


async def test_rate_limited_writes_are_retried_until_every_reply_arrives(running: World) -> None:
    """With the bot throttled to 1 message/s, its writes get 429s, wait, and all still land."""
    w = running
    admin = w.person("admin", admin=True)
    w.synapse.set_ratelimit(admin.user.access_token, w.bot_account.user_id, per_second=1, burst=1)
    spammer = w.members["spammer"].user_id

    ban = await w.mod.say(w.management, f"!mod ban {spammer} flooding")
    history = await w.mod.say(w.management, f"!mod history {spammer}")
    status = await w.mod.say(w.management, "!mod status")

    assert "Banned" in await w.mod.wait_for_reply(w.management, ban, timeout=120)
    assert "1 infraction(s)" in await w.mod.wait_for_reply(w.management, history, timeout=120)
    assert "abusebot" in await w.mod.wait_for_reply(w.management, status, timeout=120)
    assert await w.mod.membership(w.protected[0], spammer) == "ban"
    assert w.bot.queue.rate_limited_count > 0


# -- 7. room upgrades ----------------------------------------------------------------------------


async def test_room_upgrade_is_followed_and_remembered_across_restart(running: World) -> None:
    """After the protected room is upgraded, bans land in the replacement, also after a restart."""
    w = running
    spammer = w.members["spammer"].user_id
    old = w.protected[0]
    reply = await w.mod.call("POST", f"{API}/rooms/{q(old)}/upgrade", {"new_version": "12"})
    new = str(reply["replacement_room"])

    await w.mod.wait_for(w.management, body_contains("upgraded", new), timeout=30)
    assert w.bot.store.protected == [new]
    assert "Banned" in await command(w, f"!mod ban {spammer} spam after the upgrade")
    assert await w.mod.membership(new, spammer) == "ban"

    await w.stop_bot()
    bot = await w.start_bot()
    assert bot.store.protected == [new]
    assert "Unbanned" in await command(w, f"!mod unban {spammer} second chance")
    assert await w.mod.membership(new, spammer) == "leave"


# -- 8. gaps -------------------------------------------------------------------------------------


async def test_limited_sync_gap_is_fetched_and_every_event_dispatched(synapse: SynapseServer, tmp_path: Path) -> None:
    """Events beyond the sync's timeline limit are fetched from the gap and all reach the handlers."""
    w = await World.create(synapse, tmp_path, config={**NO_FLOOD_LIMIT, "sync_timeout_ms": 1000})
    try:
        spammer = w.members["spammer"]
        room = w.protected[0]
        await w.start_bot()  # the first start: learn the position
        await w.stop_bot()
        # Let Synapse time out the long-poll the stopped bot abandoned: were it woken by the next
        # event, Synapse would cache that one-event response and serve it to the restarted bot.
        await asyncio.sleep(1.5)

        early = await w.mod.say(room, "!mod help ban")  # lands in the gap
        spam = [await spammer.say(room, f"spam {number}") for number in range(160)]
        late = await w.mod.say(room, "!mod help kick")  # in the (limited) timeline
        await w.mod.start_watching()

        dispatched: list[str] = []

        async def record(event: Event) -> None:
            dispatched.append(event.event_id)

        await w.start_bot(hooks=[record])
        assert "kick" in await w.mod.wait_for_reply(room, late, timeout=60)
        assert "ban" in await w.mod.wait_for_reply(room, early, timeout=30)

        missing = [event_id for event_id in spam if event_id not in dispatched]
        assert not missing, f"{len(missing)} of {len(spam)} gap events were never dispatched"
        assert len(dispatched) == len(set(dispatched)), "an event was dispatched twice"
        assert reply_count(w, room, early) == 1
        assert reply_count(w, room, late) == 1
    finally:
        await w.close()
