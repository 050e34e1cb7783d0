"""Transparency in the management room: ``!mod stats [P]`` answers with a period's anonymised
statistics (:mod:`abusebot.transparency`); ``!mod stats publish <P>`` posts them to
``transparency.publish_room`` and records an immutable snapshot. Publishing a period again
posts a correction that names and supersedes the earlier snapshot; both stay in the ledger.

The feature also keeps the label of every protected room (its name or alias) in the ledger, so
that ``abusebot report`` — which reads the ledger alone — can say "Main" instead of a room id.

Durability, in order: the snapshot is recorded (keyed by the command), then posted (keyed by
the snapshot), then its event noted: a command replayed after a crash posts nothing twice.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import jinja2
import structlog

from abusebot.actions import Actor
from abusebot.audit import Message
from abusebot.commands import Authorized, CommandHandler, Parsed, Spec, UsageError, text_message
from abusebot.host import Feature, feature
from abusebot.ledger import now_ms
from abusebot.transparency import (
    PeriodError,
    Stats,
    as_json,
    collect,
    current_half,
    parse_period,
    small_counts_note,
    summary_rows,
)

log = structlog.get_logger("abusebot.transparency")

MIGRATIONS = (
    """
    CREATE TABLE transparency_rooms (
        room_id  TEXT PRIMARY KEY,
        label    TEXT NOT NULL,
        role     TEXT NOT NULL CHECK (role IN ('protected','management'))
    ) WITHOUT ROWID;

    CREATE TABLE transparency_snapshots (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        period           TEXT NOT NULL,
        generated_at     INTEGER NOT NULL,
        min_count        INTEGER NOT NULL,
        counts           TEXT NOT NULL,
        published_by     TEXT NOT NULL,
        source_event     TEXT NOT NULL UNIQUE,
        supersedes_id    INTEGER REFERENCES transparency_snapshots (id),
        room_id          TEXT NOT NULL,
        published_event  TEXT
    );
    CREATE INDEX transparency_snapshots_by_period ON transparency_snapshots (period, id);
    CREATE TRIGGER transparency_snapshots_never_deleted BEFORE DELETE ON transparency_snapshots
    BEGIN SELECT RAISE(ABORT, 'published statistics are never deleted'); END;
    CREATE TRIGGER transparency_snapshots_frozen
    BEFORE UPDATE OF id, period, generated_at, min_count, counts, published_by, source_event, supersedes_id, room_id
    ON transparency_snapshots
    BEGIN SELECT RAISE(ABORT, 'a published snapshot cannot change: publish a correction'); END;
    CREATE TRIGGER transparency_snapshots_posted_once BEFORE UPDATE OF published_event ON transparency_snapshots
    WHEN OLD.published_event IS NOT NULL
    BEGIN SELECT RAISE(ABORT, 'a snapshot is posted once'); END;
    """,
    # 2: the counts by month, kept as infractions are written (a report over a million of them
    # reads a few thousand rows). What a reason cites ("rule 2") is kept as its first word, and
    # shown only when it is a configured rule's id.
    """
    CREATE TABLE transparency_rollup (
        month      TEXT NOT NULL,
        origin     TEXT NOT NULL,
        kind       TEXT NOT NULL,
        permanent  INTEGER NOT NULL,
        own_room   INTEGER NOT NULL,
        scope      TEXT NOT NULL,
        rule       TEXT NOT NULL,
        cited      TEXT NOT NULL,
        n          INTEGER NOT NULL,
        PRIMARY KEY (month, origin, kind, permanent, own_room, scope, rule, cited)
    ) WITHOUT ROWID;
    INSERT INTO transparency_rollup
        SELECT strftime('%Y-%m', created_at / 1000.0, 'unixepoch'), origin, kind, expires_at IS NULL,
               COALESCE(scope = source_room, 0), scope, COALESCE(rule, ''),
               CASE WHEN instr(lower(reason), 'rule ') > 0
                    THEN lower(substr(reason, instr(lower(reason), 'rule ') + 5, 12)) ELSE '' END,
               COUNT(*)
        FROM infractions WHERE state NOT IN ('failed', 'pending') AND kind <> 'note'
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;
    CREATE TRIGGER transparency_rollup_inserted AFTER INSERT ON infractions
    WHEN NEW.state NOT IN ('failed', 'pending') AND NEW.kind <> 'note'
    BEGIN
        INSERT INTO transparency_rollup
        VALUES (strftime('%Y-%m', NEW.created_at / 1000.0, 'unixepoch'), NEW.origin, NEW.kind, NEW.expires_at IS NULL,
                COALESCE(NEW.scope = NEW.source_room, 0), NEW.scope, COALESCE(NEW.rule, ''),
                CASE WHEN instr(lower(NEW.reason), 'rule ') > 0
                     THEN lower(substr(NEW.reason, instr(lower(NEW.reason), 'rule ') + 5, 12)) ELSE '' END, 1)
        ON CONFLICT (month, origin, kind, permanent, own_room, scope, rule, cited) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER transparency_rollup_updated AFTER UPDATE OF state, expires_at, source_room ON infractions
    WHEN NEW.kind <> 'note'
    BEGIN
        UPDATE transparency_rollup SET n = n - 1
        WHERE OLD.state NOT IN ('failed', 'pending')
          AND month = strftime('%Y-%m', OLD.created_at / 1000.0, 'unixepoch') AND origin = OLD.origin
          AND kind = OLD.kind AND permanent = (OLD.expires_at IS NULL)
          AND own_room = COALESCE(OLD.scope = OLD.source_room, 0) AND scope = OLD.scope
          AND rule = COALESCE(OLD.rule, '')
          AND cited = (CASE WHEN instr(lower(OLD.reason), 'rule ') > 0
                            THEN lower(substr(OLD.reason, instr(lower(OLD.reason), 'rule ') + 5, 12)) ELSE '' END);
        INSERT INTO transparency_rollup
        SELECT strftime('%Y-%m', NEW.created_at / 1000.0, 'unixepoch'), NEW.origin, NEW.kind, NEW.expires_at IS NULL,
               COALESCE(NEW.scope = NEW.source_room, 0), NEW.scope, COALESCE(NEW.rule, ''),
               CASE WHEN instr(lower(NEW.reason), 'rule ') > 0
                    THEN lower(substr(NEW.reason, instr(lower(NEW.reason), 'rule ') + 5, 12)) ELSE '' END, 1
        WHERE NEW.state NOT IN ('failed', 'pending')
        ON CONFLICT (month, origin, kind, permanent, own_room, scope, rule, cited) DO UPDATE SET n = n + 1;
    END;
    """,
)

_TABLE = jinja2.Environment(autoescape=True).from_string(
    "<p><strong>{{ head }}</strong></p>"
    "<table><tr><th></th><th>{{ period }}</th><th>change</th></tr>"
    "{% for what, now, delta in rows %}<tr><td>{{ what }}</td><td>{{ now }}</td><td>{{ delta }}</td></tr>{% endfor %}"
    "</table><p>{{ foot }}</p>"
)


def table_message(head: str, period: str, rows: Sequence[tuple[str, str, str]], foot: str) -> Message:
    """Statistics as one message: lines of text, and an HTML table (escaped by the template)."""
    plain = "\n".join([head, *(f"{what.strip()}: {now} ({delta})" for what, now, delta in rows), foot]).strip()
    return Message(plain, _TABLE.render(head=head, period=period, rows=rows, foot=foot))


class TransparencyFeature(Feature):
    """``!mod stats`` and ``!mod stats publish``; the rooms' labels for the report."""

    name: ClassVar[str] = "transparency"
    migrations: ClassVar[tuple[str, ...]] = MIGRATIONS

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.config = bot.config.transparency

    async def start(self) -> None:
        """Keep every protected room's label (and the management room's id)."""
        await self._keep_labels(list(self.bot.store.protected))

    async def room_added(self, room_id: str) -> None:
        """A room protected while running: its label too."""
        await self._keep_labels([room_id])

    async def _keep_labels(self, rooms: Sequence[str]) -> None:
        store = self.bot.store
        rows = [(room, store.label(room)[:100], "protected") for room in rooms]
        if store.management_id:
            rows.append((store.management_id, "management room", "management"))
        async with self.bot.ledger.transaction() as db:
            await db.executemany(
                "INSERT INTO transparency_rooms (room_id, label, role) VALUES (?, ?, ?)"
                " ON CONFLICT (room_id) DO UPDATE SET label = excluded.label, role = excluded.role",
                rows,
            )

    async def stats(self, period_text: str | None) -> Stats:
        """A period's statistics, read off the ledger in a thread (a year over a large ledger
        takes a moment; the bot goes on meanwhile)."""
        try:
            period = parse_period(period_text) if period_text else current_half()
        except PeriodError as err:
            raise UsageError("stats", str(err)) from err
        path, n, rules = self.bot.ledger.path, self.config.min_count, self.bot.config.rules
        return await asyncio.to_thread(functools.partial(collect, path, period, None, n, rules=rules))

    # -- commands ------------------------------------------------------------------------------

    def commands(self) -> Sequence[Spec]:
        """``stats``: management room only."""
        return [
            Spec(
                "stats",
                "stats [P] | stats publish <P>",
                "Anonymised statistics of a period (2026H1, 2026H2, 2026, 2026-01..2026-06; default: this"
                " half-year so far); publish: post them to the transparency room and keep a snapshot.",
                _parse_stats,
                self._stats,
                room_admins=False,
                scoped=False,
            )
        ]

    async def _stats(self, handler: CommandHandler, parsed: Parsed, auth: Authorized, actor: Actor) -> Message:
        if parsed.words and parsed.words[0] == "publish":
            return await self._publish(parsed.words[1], actor)
        stats = await self.stats(parsed.words[0] if parsed.words else None)
        n = stats.min_count
        period, previous = stats.period.label, stats.period.previous().label
        so_far = " (so far)" if stats.period.end_ms > now_ms() else ""
        head = f"📊 Statistics for {period}{so_far}, anonymised; change against {previous}:"
        foot = small_counts_note(n)
        return table_message(head, stats.period.label, summary_rows(stats), foot)

    async def _publish(self, period_text: str, actor: Actor) -> Message:
        if self.config.publish_room is None:
            raise UsageError("stats", "there is no transparency.publish_room in the config to publish to")
        assert actor.event_id is not None
        ledger = self.bot.ledger
        found = await self._snapshot_of(actor.event_id)
        if not found:
            stats = await self.stats(period_text)
            room_id = await self.bot.join_watched(self.config.publish_room)
            # The numbers as published, and the table as posted: a replay posts what was recorded.
            snapshot_data = {"report": as_json(stats), "rows": summary_rows(stats)}
            counts = json.dumps(snapshot_data, sort_keys=True, ensure_ascii=False)
            async with ledger.transaction() as db:
                async with db.execute(
                    "SELECT id FROM transparency_snapshots WHERE period = ? ORDER BY id DESC LIMIT 1",
                    (stats.period.label,),
                ) as cursor:
                    earlier = await cursor.fetchone()
                await db.execute(
                    "INSERT INTO transparency_snapshots (period, generated_at, min_count, counts, published_by,"
                    " source_event, supersedes_id, room_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        stats.period.label,
                        now_ms(),
                        stats.min_count,
                        counts,
                        actor.name,
                        actor.event_id,
                        earlier[0] if earlier else None,
                        room_id,
                    ),
                )
                await ledger.audit_in(
                    db,
                    actor=actor.name,
                    action="stats_publish",
                    outcome="requested",
                    reason=stats.period.label,
                    event_id=actor.event_id,
                )
            found = await self._snapshot_of(actor.event_id)
        snapshot, period, counts_json, supersedes, room_id, posted = found[0]
        message = self._public(int(snapshot), str(period), json.loads(counts_json), supersedes)
        new = self.bot.moderation.send_intent(room_id, message, key=f"stats-publish:{snapshot}", mentions=[])
        result = await self.bot.outbox.do(new)
        if not result.ok:
            return text_message(f"⚠️ Snapshot #{snapshot} of {period} is recorded but not posted: {result.error}")
        event_id = result.value.get("event_id")
        if posted is None and isinstance(event_id, str):
            async with ledger.transaction() as db:
                await db.execute(
                    "UPDATE transparency_snapshots SET published_event = ? WHERE id = ? AND published_event IS NULL",
                    (event_id, snapshot),
                )
        log.info("stats_published", snapshot=snapshot, period=period, supersedes=supersedes)
        label = self.bot.store.label(room_id)
        if supersedes:
            return text_message(
                f"✅ Published a correction of {period} to {label}: snapshot #{snapshot} supersedes #{supersedes}."
            )
        return text_message(f"✅ Published the statistics for {period} to {label} (snapshot #{snapshot}).")

    async def _snapshot_of(self, event_id: str) -> list[tuple[Any, ...]]:
        """The snapshot the command ``event_id`` recorded (none yet, or the one a replay finds)."""
        rows = await self.bot.ledger.fetch(
            "SELECT id, period, counts, supersedes_id, room_id, published_event FROM transparency_snapshots"
            " WHERE source_event = ?",
            (event_id,),
        )
        return [tuple(row) for row in rows]

    def _public(self, snapshot: int, period: str, counts: dict[str, Any], supersedes: int | None) -> Message:
        """The published post, from the snapshot's own numbers (a replay posts what was recorded)."""
        head = f"📊 Moderation statistics for {period} (snapshot #{snapshot})"
        if supersedes:
            head = f"📊 Correction — moderation statistics for {period} (snapshot #{snapshot} supersedes #{supersedes})"
        n = int(counts["report"]["min_count"])
        foot = f"Anonymised: no one is named. {small_counts_note(n)}"
        rows = [(str(what), str(now), str(delta)) for what, now, delta in counts["rows"]]
        return table_message(head, period, rows, foot)


def _parse_stats(name: str, args: list[str], room: str | None, flags: frozenset[str]) -> Parsed:
    if not args:
        return Parsed(name)
    if args[0].lower() == "publish":
        if len(args) != 2:
            raise UsageError(name, "stats publish <period>, like 2026H1")
        try:
            parse_period(args[1])
        except PeriodError as err:
            raise UsageError(name, str(err)) from err
        return Parsed(name, words=("publish", args[1]))
    if len(args) != 1:
        raise UsageError(name, "stats [period] or stats publish <period>")
    try:
        parse_period(args[0])
    except PeriodError as err:
        raise UsageError(name, str(err)) from err
    return Parsed(name, words=(args[0],))


@feature("transparency")
def build(bot: Any) -> Feature:
    """Transparency statistics."""
    return TransparencyFeature(bot)
