"""A spam wave across two rooms while the bot is ``kill -9``ed five times: nothing lost, nothing twice.

Twenty members (joined before the bot first started, so their joins are history) post 200
messages carrying a banned phrase, spread over two protected rooms, in small concurrent batches.
Meanwhile the bot, a separate process, is SIGKILLed at five random moments (during the wave and
while it is still working through it) and restarted each time. After the last restart, within a
bounded time:

* every one of the 200 events is redacted, by exactly one redaction event;
* every event has exactly one infraction (no two with the same source event, kind and subject),
  none left ``pending``, and the outbox has no ``pending`` row;
* each spammer has one "Moderation notices" room, in which every notice appears once, one per
  infraction of theirs (the ``(Reference: #id)`` lines name exactly their infractions);
* the management room carries each infraction's line once.

The ladder is warnings only and every violation is its own rung (``burst_seconds: 0``): each
message must then give exactly one infraction and one notice, so a duplicate or a loss shows, and
a mute or ban never stops a spammer's part of the wave half-way.

The kill schedule comes from ``random.Random(seed)``; the seed is printed (run with ``-s``) and
``CRASH_WAVE_SEED=<n>`` replays it. The bot's output (all runs) is in ``<tmp_path>/bot-process.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import sqlite3
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from abusebot.matrix import API, MatrixError, q
from abusebot.outbox import DM_ROOM_NAME
from abusebot.testing.synapse import SynapseServer
from abusebot.testing.world import Person, World
from tests.integration.test_loop import ledger_query, wait_for_checkpoint, wait_until

SEED = int(os.environ.get("CRASH_WAVE_SEED", "5181"))
PHRASE = "buy cheap crypto"
SPAMMERS = 20
PER_USER_PER_ROOM = 5  # 20 users x 2 rooms x 5 = 200 messages
BATCH = 10
KILLS = 5
SETTLE_TIMEOUT = 120.0
CONFIG: dict[str, Any] = {
    "protections": {
        "spam": {"banned_words": [PHRASE]},
        # Protections still see every event, but the wave is not also punished as a flood.
        "flood": {"max_messages": 100_000, "cross_room_max_messages": 100_000},
        "escalation": {"ladder": ["warning"], "burst_seconds": 0},
    },
    # info: the log shows resumes (outbox_resume, infraction_resumed) for the diagnosis of a failure.
    "logging": {"format": "console", "level": "info"},
}
REFERENCE = re.compile(r"\(Reference: #(\d+)\)")
WARNED_LINE = re.compile(r"^Warned .* infraction #(\d+)")


def _query(w: World, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """``ledger_query``, or ``[]`` while the ledger cannot be read (a kill in the middle of a write)."""
    try:
        return ledger_query(w, sql, *args)
    except sqlite3.Error:
        return []


def _count(w: World, sql: str, *args: Any) -> int | None:
    rows = _query(w, sql, *args)
    return int(rows[0][0]) if rows else None


async def _all_events(person: Person, room_id: str) -> list[dict[str, Any]]:
    """Every event of a room's timeline, oldest first, as ``person`` sees it."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        query: dict[str, Any] = {"dir": "b", "limit": 500}
        if token:
            query["from"] = token
        page = await person.call("GET", f"{API}/rooms/{q(room_id)}/messages", query=query)
        chunk = page.get("chunk") or []
        events.extend(chunk)
        token = page.get("end")
        if not chunk or not token:
            break
    events.reverse()
    return events


async def _is_redacted(person: Person, room_id: str, event_id: str) -> bool:
    event = await person.call("GET", f"{API}/rooms/{q(room_id)}/event/{q(event_id)}")
    return not event.get("content") and "redacted_because" in (event.get("unsigned") or {})


async def _dm_rooms(person: Person, bot_id: str) -> list[str]:
    """The notices rooms the bot made for ``person`` (invited or joined), joined now."""
    reply = await person.call("GET", f"{API}/sync", query={"timeout": 0, "filter": '{"room":{"timeline":{"limit":1}}}'})
    rooms = reply.get("rooms") or {}
    found: list[str] = []
    for room_id, invite in (rooms.get("invite") or {}).items():
        events = (invite.get("invite_state") or {}).get("events") or []
        senders = {e.get("sender") for e in events if e.get("type") == "m.room.member"}
        names = {(e.get("content") or {}).get("name") for e in events if e.get("type") == "m.room.name"}
        if bot_id in senders and DM_ROOM_NAME in names:
            await person.join(room_id)
            found.append(room_id)
    for room_id in rooms.get("join") or {}:
        with contextlib.suppress(MatrixError):
            name = await person.state(room_id, "m.room.name") or {}
            if name.get("name") == DM_ROOM_NAME:
                found.append(room_id)
    return sorted(set(found))


async def test_spam_wave_over_two_rooms_survives_five_kill_9s(synapse: SynapseServer, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"\n[crash-wave] seed={SEED} (replay: CRASH_WAVE_SEED={SEED})")
    names = tuple(f"spammer{n:02d}" for n in range(SPAMMERS))
    w = await World.create(synapse, tmp_path, rooms=2, members=names, config=CONFIG)
    log_path = w.base / "bot-process.log"

    def mark(text: str) -> None:
        """A line in the bot's log (timestamped like the bot's own), to line the two up."""
        at = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        with log_path.open("a") as handle:
            handle.write(f"{at} === [test] {text}\n")

    def bot_was_up() -> bool:
        """Whether the bot run just killed had finished starting (resume included)."""
        with log_path.open(errors="replace") as handle:
            since_spawn = handle.read().rsplit("=== [test] spawn", 1)[-1]
        return "] started " in since_spawn

    try:
        rooms = list(w.protected)
        bot_id = w.bot_account.user_id
        mark("spawn 0 (first start)")
        w.spawn_bot()
        await wait_for_checkpoint(w)

        # Everything random is drawn up front, so the seed alone fixes the plan.
        plan = [(name, room, n) for name in names for room in rooms for n in range(PER_USER_PER_ROOM)]
        rng.shuffle(plan)
        pauses = [rng.uniform(0.05, 0.3) for _ in range(0, len(plan), BATCH)]
        # The first kill lands early in the wave; each later one a while after the previous
        # restart: a start takes ~2 s (most of it Python's imports), so some kills come while the
        # bot is still starting (resuming), most while it is working through the wave.
        gaps = [rng.uniform(0.5, 3.0)] + [rng.uniform(1.0, 7.0) for _ in range(KILLS - 1)]
        downtimes = [rng.uniform(0.0, 1.5) for _ in range(KILLS)]
        print(f"[crash-wave] kill gaps (s after wave start / previous restart): {[round(g, 2) for g in gaps]}")
        print(f"[crash-wave] downtimes (s): {[round(d, 2) for d in downtimes]}")

        sent: dict[str, tuple[str, str]] = {}  # event id -> (room, sender)
        kills: list[dict[str, Any]] = []
        started = time.monotonic()
        wave_done: float | None = None

        async def wave() -> None:
            nonlocal wave_done
            for index, start in enumerate(range(0, len(plan), BATCH)):
                batch = plan[start : start + BATCH]

                async def post(name: str, room: str, n: int) -> None:
                    member = w.members[name]
                    text = f"{PHRASE}! {name} offer {n} in room {rooms.index(room) + 1}, DM me"
                    sent[await member.say(room, text)] = (room, member.user_id)

                await asyncio.gather(*(post(*item) for item in batch))
                await asyncio.sleep(pauses[index])
            wave_done = time.monotonic() - started

        async def crasher() -> None:
            for number, (gap, down) in enumerate(zip(gaps, downtimes, strict=True), 1):
                await asyncio.sleep(gap)
                w.kill_bot(signal.SIGKILL)
                at = time.monotonic() - started
                mark(f"SIGKILL {number} at {at:.2f}s")
                pending_intents = _query(w, "SELECT kind, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY 1")
                kills.append(
                    {
                        "kill": number,
                        "at_s": round(at, 2),
                        "wave": "during" if wave_done is None else "after",
                        "bot": "running" if bot_was_up() else "starting/resuming",
                        "messages_sent": len(sent),
                        "infractions": _count(w, "SELECT COUNT(*) FROM infractions"),
                        "pending_infractions": _count(w, "SELECT COUNT(*) FROM infractions WHERE state = 'pending'"),
                        "pending_intents": dict(pending_intents),
                    }
                )
                await asyncio.sleep(down)
                mark(f"spawn {number}")
                w.spawn_bot()

        await asyncio.gather(wave(), crasher())
        last_restart = time.monotonic()
        print(f"[crash-wave] wave of {len(sent)} messages sent in {wave_done:.2f}s")
        for kill in kills:
            print(f"[crash-wave] kill: {kill}")
        assert len(sent) == len(plan) == 200

        # -- settle ------------------------------------------------------------------------------
        unredacted = set(sent)

        async def settled() -> bool:
            for event_id in list(unredacted):
                room, _ = sent[event_id]
                if await _is_redacted(w.mod, room, event_id):
                    unredacted.discard(event_id)
            infracted = _query(w, "SELECT COUNT(DISTINCT source_event) FROM infractions WHERE source_event IS NOT NULL")
            pending = _count(w, "SELECT COUNT(*) FROM infractions WHERE state = 'pending'")
            outbox_pending = _count(w, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
            return (
                not unredacted
                and bool(infracted)
                and infracted[0][0] >= len(sent)
                and pending == 0
                and outbox_pending == 0
            )

        try:
            await wait_until(settled, SETTLE_TIMEOUT, "the wave being fully handled after the last restart")
        finally:
            print(f"[crash-wave] settled {time.monotonic() - last_restart:.1f}s after the last restart")
            print(f"[crash-wave] still unredacted: {len(unredacted)}")
            print(
                "[crash-wave] ledger now: infractions "
                f"{_query(w, 'SELECT state, COUNT(*) FROM infractions GROUP BY 1')}, outbox "
                f"{_query(w, 'SELECT state, COUNT(*) FROM outbox GROUP BY 1')}"
            )
            print(f"[crash-wave] bot log: {log_path}")
        await asyncio.sleep(2.0)  # a late duplicate would have time to show

        # -- the ledger --------------------------------------------------------------------------
        by_kind_state = ledger_query(w, "SELECT kind, state, COUNT(*) FROM infractions GROUP BY 1, 2 ORDER BY 1, 2")
        outbox = ledger_query(w, "SELECT kind, state, COUNT(*) FROM outbox GROUP BY 1, 2 ORDER BY 1, 2")
        duplicates = ledger_query(
            w,
            "SELECT source_event, kind, subject, COUNT(*) FROM infractions WHERE source_event IS NOT NULL"
            " GROUP BY 1, 2, 3 HAVING COUNT(*) > 1",
        )
        infractions = ledger_query(w, "SELECT id, subject, kind, state, source_event FROM infractions ORDER BY id")
        failed_intents = ledger_query(w, "SELECT id, kind, room_id, key, error FROM outbox WHERE state = 'failed'")
        dm_rooms_ledger = dict(ledger_query(w, "SELECT user_id, room_id FROM dm_rooms"))
        print(f"[crash-wave] infractions by kind/state: {by_kind_state}")
        print(f"[crash-wave] outbox by kind/state: {outbox}")
        print(f"[crash-wave] failed intents: {failed_intents}")

        assert duplicates == [], f"duplicate infractions: {duplicates}"
        assert {row[4] for row in infractions} == set(sent), "infractions not one-to-one with the spam events"
        assert [(kind, state) for kind, state, _ in by_kind_state] == [("warning", "active")], by_kind_state
        assert len(infractions) == len(sent)
        for _, subject, _, _, source in infractions:
            assert sent[source][1] == subject, (source, subject)
        assert all(state != "pending" for _, state, _ in outbox), outbox
        assert failed_intents == [], failed_intents

        # -- the rooms: one redaction per spam event ---------------------------------------------
        redactions: Counter[str] = Counter()
        for room in rooms:
            for event in await _all_events(w.mod, room):
                if event.get("type") == "m.room.redaction" and event.get("sender") == bot_id:
                    redactions[event.get("redacts") or (event.get("content") or {}).get("redacts")] += 1
        doubly = {event_id: n for event_id, n in redactions.items() if n > 1}
        print(
            f"[crash-wave] redacted: {len(sent) - len(unredacted)}/{len(sent)}; redaction events by the bot: "
            f"{sum(redactions.values())} (events redacted more than once: {len(doubly)})"
        )
        assert set(redactions) >= set(sent)
        assert doubly == {}, f"events redacted more than once: {doubly}"

        # -- the notices: one room per spammer, each notice once --------------------------------
        ids_of: dict[str, set[int]] = {}
        for infraction_id, subject, *_ in infractions:
            ids_of.setdefault(subject, set()).add(int(infraction_id))
        dm_total = 0
        dm_problems: list[str] = []
        room_counts: Counter[int] = Counter()
        for name in names:
            member = w.members[name]
            dm_rooms = await _dm_rooms(member, bot_id)
            room_counts[len(dm_rooms)] += 1
            bodies: Counter[str] = Counter()
            for room_id in dm_rooms:
                for event in await _all_events(member, room_id):
                    if event.get("type") == "m.room.message" and event.get("sender") == bot_id:
                        bodies[str((event.get("content") or {}).get("body", ""))] += 1
            dm_total += sum(bodies.values())
            repeated = {" | ".join(REFERENCE.findall(body)) or body[:60]: n for body, n in bodies.items() if n > 1}
            references = [int(m.group(1)) for body in bodies for m in REFERENCE.finditer(body)]
            if len(dm_rooms) != 1:
                remembered = dm_rooms_ledger.get(member.user_id)
                dm_problems.append(f"{name}: {len(dm_rooms)} notices rooms {dm_rooms} (ledger: {remembered})")
            if repeated:
                dm_problems.append(f"{name}: notices sent more than once: {repeated}")
            if sorted(references) != sorted(ids_of.get(member.user_id, set())):
                missing = sorted(ids_of.get(member.user_id, set()) - set(references))
                extra = sorted(set(references) - ids_of.get(member.user_id, set()))
                dm_problems.append(f"{name}: notices missing for {missing}, unexpected for {extra}")
        print(
            f"[crash-wave] DMs: {dm_total} notices to {len(names)} spammers; "
            f"spammers by number of notices rooms: {dict(room_counts)}"
        )

        # -- the management room: each infraction's line once ------------------------------------
        lines: Counter[int] = Counter()
        for event in await _all_events(w.mod, w.management):
            if event.get("sender") == bot_id and event.get("type") == "m.room.message":
                match = WARNED_LINE.match(str((event.get("content") or {}).get("body", "")))
                if match:
                    lines[int(match.group(1))] += 1
        print(
            f"[crash-wave] management lines: {sum(lines.values())} for {len(lines)} infractions "
            f"(more than once: {sum(1 for n in lines.values() if n > 1)})"
        )
        with log_path.open(errors="replace") as handle:
            log_text = handle.read()
        print(
            "[crash-wave] bot log: "
            + ", ".join(
                f"{word}={log_text.count(word)}"
                for word in ("outbox_resume", "infraction_resumed", "resumed_after_crash", "gap_filled", "Traceback")
            )
        )
        assert dm_problems == [], "\n".join(dm_problems)
        assert dm_total == len(sent)
        assert {i: n for i, n in lines.items() if n > 1} == {}, "management lines posted more than once"
        assert set(lines) == {i for i, *_ in infractions}, "management lines missing or unexpected"

        w.kill_bot(signal.SIGTERM)
        print(f"[crash-wave] total {time.monotonic() - started:.1f}s from the wave's start")
    finally:
        with contextlib.suppress(Exception):
            w.kill_bot(signal.SIGTERM)
        await w.close()
