"""Transparency: anonymised statistics every six months and a yearly report, computed from the
ledger — the Django Code of Conduct working group's model (reports received, people named,
actions by the team and by local representatives, people banned or flagged, reports with no
action), with appeals, second chances, votes and suggestions besides.

Pure parts and I/O are apart: :func:`collect` reads the ledger (read-only, so it runs while the
bot writes) into :class:`Stats` — counts only, nothing that names anyone; :func:`render` turns
stats into Markdown, HTML (one self-contained page, charts inline as SVG) or JSON.

Anonymisation, enforced here and by a test:

* the collector selects counts and categories only: never a user id, display name, event id,
  reason, excerpt or quote; a violation's type is a protection's rule category, a community
  rule's title, or "moderators' decision"; rooms are named by the label the bot keeps for them;
* no date finer than the month;
* a count from 1 to ``min_count - 1`` is shown as "fewer than N";
* a breakdown row (a room, a type of violation) below ``min_count`` is folded into "other", so
  a single case in a room cannot be told apart.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from abusebot.config import Rule

SCHEMA_VERSION = 1
#: The kinds of action counted, in order.
ACTION_KINDS = ("warning", "mute", "kick", "temporary ban", "permanent ban", "removed messages")
#: Who acted: the moderation team, a protected room's own admins, the bot by itself.
ACTORS = ("team", "local", "automatic")
ACTOR_LABELS = {
    "team": "moderation team",
    "local": "local representatives (room admins)",
    "automatic": "automatic (protections, policy lists)",
}
CHANNELS = ("modmail", "report", "mention", "homeserver")
CHANNEL_LABELS = {"modmail": "ModMail", "report": "!report", "mention": "urgent mention", "homeserver": "homeserver"}
REPORT_KINDS = ("modmail", "report", "mention")
NO_ACTION = ("no-action", "invalid")
_PERIOD_HALF = re.compile(r"^(\d{4})H([12])$")
_PERIOD_YEAR = re.compile(r"^(\d{4})$")
_PERIOD_RANGE = re.compile(r"^(\d{4})-(\d{2})\.\.(\d{4})-(\d{2})$")
#: A protection's rule that is a category ("spam: invite link"), not a detail with numbers.
_CATEGORY = re.compile(r"^[a-z][a-z @'-]{0,40}(: [a-z][a-z @'-]{0,40})?$")
OTHER = "other"


class PeriodError(ValueError):
    """A period that cannot be read; the message says what is expected."""


@attrs.frozen
class Period:
    """A span of whole months: ``2026H1``, ``2026H2``, ``2026`` or ``2026-01..2026-06``."""

    label: str
    first: tuple[int, int]  # (year, month), inclusive
    last: tuple[int, int]  # (year, month), inclusive

    @property
    def months(self) -> list[tuple[int, int]]:
        """Every (year, month) of the period."""
        out, (year, month) = [], self.first
        while (year, month) <= self.last:
            out.append((year, month))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return out

    @property
    def yearly(self) -> bool:
        """A calendar year: the report adds the yearly sections."""
        return self.first[1] == 1 and self.last == (self.first[0], 12)

    @property
    def start_ms(self) -> int:
        """The period's first millisecond (UTC)."""
        return _month_ms(*self.first)

    @property
    def end_ms(self) -> int:
        """The first millisecond after the period (UTC)."""
        year, month = self.last
        return _month_ms(*((year + 1, 1) if month == 12 else (year, month + 1)))

    def previous(self) -> Period:
        """The period of the same length just before (for the change since)."""
        n = len(self.months)
        year, month = self.first
        index = year * 12 + (month - 1) - n
        first = (index // 12, index % 12 + 1)
        index_last = year * 12 + (month - 1) - 1
        last = (index_last // 12, index_last % 12 + 1)
        if self.yearly:
            label = str(first[0])
        elif n == 6 and first[1] in (1, 7):
            label = f"{first[0]}H{1 if first[1] == 1 else 2}"
        else:
            label = f"{first[0]}-{first[1]:02d}..{last[0]}-{last[1]:02d}"
        return Period(label, first, last)


def _month_ms(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def parse_period(text: str) -> Period:
    """``2026H1``, ``2026H2``, ``2026`` (yearly) or ``2026-01..2026-06``."""
    word = text.strip().upper()
    if found := _PERIOD_HALF.match(word):
        year, half = int(found.group(1)), int(found.group(2))
        return Period(word, (year, 1 if half == 1 else 7), (year, 6 if half == 1 else 12))
    if found := _PERIOD_YEAR.match(word):
        year = int(found.group(1))
        return Period(word, (year, 1), (year, 12))
    if found := _PERIOD_RANGE.match(word):
        first = (int(found.group(1)), int(found.group(2)))
        last = (int(found.group(3)), int(found.group(4)))
        if not (1 <= first[1] <= 12 and 1 <= last[1] <= 12) or last < first:
            raise PeriodError(f"{text[:40]!r}: months 01 to 12, the first not after the last")
        if (last[0] * 12 + last[1]) - (first[0] * 12 + first[1]) >= 120:
            raise PeriodError(f"{text[:40]!r}: at most ten years")
        return Period(f"{first[0]}-{first[1]:02d}..{last[0]}-{last[1]:02d}", first, last)
    raise PeriodError(f"{text[:40]!r} is not a period: write 2026H1, 2026H2, 2026 or 2026-01..2026-06")


def current_half(now_s: float | None = None) -> Period:
    """The half-year we are in (so far)."""
    today = dt.datetime.fromtimestamp(time.time() if now_s is None else now_s, tz=dt.timezone.utc)
    return parse_period(f"{today.year}H{1 if today.month <= 6 else 2}")


# -- the numbers --------------------------------------------------------------------------------


@attrs.frozen
class Figures:
    """The counts of one period (every number the semiannual statistics give)."""

    reports: Mapping[str, int]  # by channel
    people_named: int
    actions: Mapping[str, Mapping[str, int]]  # actor → kind → count
    people_banned_or_flagged: int
    reports_no_action: int
    appeals: Mapping[str, int]
    second_chances: Mapping[str, int]
    votes_held: int
    suggestions: Mapping[str, int]

    @property
    def reports_total(self) -> int:
        """Reports received, all channels."""
        return sum(self.reports.values())

    def actions_total(self, actor: str) -> int:
        """Sanctions of one actor, all kinds (removed messages are counted apart: not a sanction)."""
        return sum(n for kind, n in self.actions.get(actor, {}).items() if kind != "removed messages")


@attrs.frozen
class Stats:
    """A period's figures, the previous period's (for the change), and for a year the yearly
    sections."""

    period: Period
    figures: Figures
    previous: Figures
    min_count: int
    by_room: Mapping[str, int] = attrs.field(factory=dict)
    by_violation: Mapping[str, int] = attrs.field(factory=dict)
    outcomes: Mapping[str, int] = attrs.field(factory=dict)
    monthly: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)  # "2026-03" → kind → count
    notes: str = ""


@attrs.frozen
class Labels:
    """What the collector may name: rooms by their label, the management room, the rules."""

    rooms: Mapping[str, str] = attrs.field(factory=dict)
    management: str | None = None
    rules: Sequence[Rule] = ()


def _tables(db: sqlite3.Connection) -> set[str]:
    return {str(name) for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _violation_type(origin: str, rule: str | None, cited: str | None) -> str:
    if origin == "policy_list":
        return "policy list"
    if origin == "protection" and rule:
        text = rule.strip().lower()
        if _CATEGORY.match(text):
            return text
        head = text.split(":", 1)[0]
        return head if _CATEGORY.match(head) else "protection"
    return cited or "moderators' decision"


def _kind(kind: str, permanent: bool) -> str | None:
    if kind == "ban":
        return "permanent ban" if permanent else "temporary ban"
    return kind if kind in ("warning", "mute", "kick") else None


def collect(
    path: Path, period: Period, labels: Labels, min_count: int = 3, notes: str = "", *, raw: bool = False
) -> Stats:
    """Read the ledger at ``path`` (read-only: the bot may be running) into the period's stats
    (``raw``: off the infractions themselves, not the rollup; the same numbers, slower)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        tables = _tables(db)
        figures, extra = _figures(db, tables, period, labels, yearly=period.yearly, raw=raw)
        previous, _ = _figures(db, tables, period.previous(), labels, yearly=False, raw=raw)
    finally:
        db.close()
    return Stats(period, figures, previous, min_count, notes=notes, **extra)


def _figures(
    db: sqlite3.Connection, tables: set[str], period: Period, labels: Labels, *, yearly: bool, raw: bool
) -> tuple[Figures, dict[str, Any]]:
    start, end = period.start_ms, period.end_ms
    actions: dict[str, Counter[str]] = {actor: Counter() for actor in ACTORS}
    by_room: Counter[str] = Counter()
    by_violation: Counter[str] = Counter()
    monthly: dict[str, Counter[str]] = defaultdict(Counter)
    rules = {rule.id.lower(): f"rule {rule.id} ({rule.title})" for rule in labels.rules}
    for when, origin, kind, permanent, in_own_room, scope, rule, cited, count in _grouped(db, tables, period, raw=raw):
        label = _kind(str(kind), bool(permanent))
        if label is None:
            continue
        actor = _actor(str(origin), bool(in_own_room), str(scope))
        actions[actor][label] += count
        if yearly:
            monthly[str(when)][label] += count
            room = "all rooms" if scope == "*" else labels.rooms.get(str(scope), OTHER)
            by_room[room] += count
            found = _FIRST_WORD.match(str(cited or ""))
            title = rules.get(found.group(1)) if found else None
            by_violation[_violation_type(str(origin), str(rule or "") or None, title)] += count
    _removed(db, tables, start, end, actions, monthly if yearly else None)
    people = db.execute(
        "SELECT COUNT(DISTINCT subject) FROM infractions WHERE kind IN ('ban', 'note') AND created_at >= ?"
        " AND created_at < ? AND state NOT IN ('failed', 'pending')",
        (start, end),
    ).fetchone()[0]
    reports: Counter[str] = Counter()
    named = no_action = 0
    appeals: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    if "cases" in tables:
        marks = ",".join("?" * len(REPORT_KINDS))
        for channel, count in db.execute(
            f"SELECT channel, COUNT(*) FROM cases WHERE kind IN ({marks}) AND opened_at >= ? AND opened_at < ?"
            " GROUP BY channel",
            (*REPORT_KINDS, start, end),
        ):
            reports[str(channel)] += count
        named = db.execute(
            f"SELECT COUNT(DISTINCT p.user_id) FROM case_people p JOIN cases c ON c.id = p.case_id"
            f" WHERE p.role = 'named' AND c.kind IN ({marks}) AND c.opened_at >= ? AND c.opened_at < ?",
            (*REPORT_KINDS, start, end),
        ).fetchone()[0]
        for kind, outcome, count in db.execute(
            "SELECT kind, COALESCE(outcome, 'open'), COUNT(*) FROM cases WHERE opened_at >= ? AND opened_at < ?"
            " GROUP BY 1, 2",
            (start, end),
        ):
            if kind in REPORT_KINDS:
                outcomes[str(outcome)] += count
                if outcome in NO_ACTION:
                    no_action += count
            elif kind == "appeal":
                appeals["received"] += count
                if outcome in ("upheld", "overturned"):
                    appeals[str(outcome)] += count
    second: Counter[str] = Counter()
    if "second_chances" in tables:
        second["requested"] = _count(db, "second_chances WHERE requested_at >= ? AND requested_at < ?", start, end)
        second["granted"] = _count(
            db, "second_chances WHERE state = 'granted' AND decided_at >= ? AND decided_at < ?", start, end
        )
        second["probation violations"] = _count(
            db,
            "second_chances WHERE probation_outcome = 'violated' AND probation_until >= ? AND probation_until < ?",
            start,
            end,
        )
    votes = _count(db, "votes WHERE opened_at >= ? AND opened_at < ?", start, end) if "votes" in tables else 0
    suggestions: Counter[str] = Counter()
    if "suggestions" in tables:
        suggestions["received"] = _count(db, "suggestions WHERE created_at >= ? AND created_at < ?", start, end)
        for state, count in db.execute(
            "SELECT state, COUNT(DISTINCT suggestion_id) FROM suggestion_states WHERE at >= ? AND at < ? GROUP BY 1",
            (start, end),
        ):
            suggestions["discussed" if state == "discussing" else str(state)] += count
    figures = Figures(
        reports={channel: reports.get(channel, 0) for channel in CHANNELS},
        people_named=int(named),
        actions={actor: {kind: actions[actor].get(kind, 0) for kind in ACTION_KINDS} for actor in ACTORS},
        people_banned_or_flagged=int(people),
        reports_no_action=no_action,
        appeals={key: appeals.get(key, 0) for key in ("received", "upheld", "overturned")},
        second_chances={key: second.get(key, 0) for key in ("requested", "granted", "probation violations")},
        votes_held=votes,
        suggestions={
            key: suggestions.get(key, 0) for key in ("received", "discussed", "approved", "denied", "implemented")
        },
    )
    extra: dict[str, Any] = {}
    if yearly:
        months = [f"{year}-{month:02d}" for year, month in period.months]
        extra = {
            "by_room": dict(by_room),
            "by_violation": dict(by_violation),
            "outcomes": dict(outcomes),
            "monthly": {m: {kind: monthly[m].get(kind, 0) for kind in ACTION_KINDS} for m in months},
        }
    return figures, extra


_FIRST_WORD = re.compile(r"#?([0-9a-z]+)")
_SELECT_COUNTED = (
    "strftime('%Y-%m', created_at / 1000, 'unixepoch'), origin, kind, expires_at IS NULL,"
    " COALESCE(scope = source_room, 0), scope, COALESCE(rule, ''),"
    " CASE WHEN instr(lower(reason), 'rule ') > 0"
    " THEN lower(substr(reason, instr(lower(reason), 'rule ') + 5, 12)) ELSE '' END"
)


def _grouped(
    db: sqlite3.Connection, tables: set[str], period: Period, *, raw: bool = False
) -> Iterable[tuple[Any, ...]]:
    """The period's counted infractions as (month, origin, kind, permanent, in its own room,
    scope, rule, what the reason cites, count): from the rollup the transparency feature keeps,
    or (an older ledger, or ``raw``) grouped off the infractions themselves — the same numbers."""
    if "transparency_rollup" in tables and not raw:
        first, last = (f"{y}-{m:02d}" for y, m in (period.first, period.last))
        return db.execute(
            "SELECT month, origin, kind, permanent, own_room, scope, rule, cited, SUM(n) FROM transparency_rollup"
            " WHERE month >= ? AND month <= ? AND n > 0 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8",
            (first, last),
        )
    return db.execute(
        f"SELECT {_SELECT_COUNTED}, COUNT(*) FROM infractions WHERE created_at >= ? AND created_at < ?"
        " AND state NOT IN ('failed', 'pending') AND kind <> 'note' GROUP BY 1, 2, 3, 4, 5, 6, 7, 8",
        (period.start_ms, period.end_ms),
    )


def _count(db: sqlite3.Connection, where: str, start: int, end: int) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {where}", (start, end)).fetchone()[0])


def _actor(origin: str, in_own_room: bool, scope: str) -> str:
    if origin in ("protection", "policy_list"):
        return "automatic"
    # A protected room's admin acts in their own room only (its scope is the room they typed in);
    # the management room's moderators act everywhere, or in a room they name with --room.
    if origin == "command" and in_own_room and scope != "*":
        return "local"
    return "team"


def _removed(
    db: sqlite3.Connection,
    tables: set[str],
    start: int,
    end: int,
    actions: dict[str, Counter[str]],
    monthly: dict[str, Counter[str]] | None,
) -> None:
    """Messages removed: the protections' redactions (the outbox), and the moderators' (their
    ``!mod redact``'s audit rows: everywhere is the team's, one room a room's admin's)."""
    month = "strftime('%Y-%m', created_at / 1000, 'unixepoch')"
    for when, count in db.execute(
        f"SELECT {month}, COUNT(*) FROM outbox WHERE kind = 'redact' AND state = 'done' AND created_at >= ?"
        " AND created_at < ? AND json_extract(payload, '$.reason') LIKE 'Removed:%' GROUP BY 1",
        (start, end),
    ):
        actions["automatic"]["removed messages"] += count
        if monthly is not None:
            monthly[str(when)]["removed messages"] += count
    month = "strftime('%Y-%m', at / 1000, 'unixepoch')"
    for when, room, count in db.execute(
        f"SELECT {month}, room, SUM(COALESCE(json_extract(detail, '$.redacted'), 0)) FROM audit"
        " WHERE action = 'redact' AND outcome = 'done' AND at >= ? AND at < ? GROUP BY 1, 2",
        (start, end),
    ):
        actions["team" if room in ("*", None) else "local"]["removed messages"] += int(count or 0)
        if monthly is not None:
            monthly[str(when)]["removed messages"] += int(count or 0)


# -- anonymised presentation --------------------------------------------------------------------


def small_counts_note(min_count: int) -> str:
    """How small counts are shown, in one sentence."""
    if min_count <= 1:
        return "Every count is shown as it is."
    return f'Counts from 1 to {min_count - 1} are shown as "fewer than {min_count}".'


def shown(count: int, min_count: int) -> str:
    """A count as published: 1 to ``min_count - 1`` is "fewer than N"."""
    if 0 < count < min_count:
        return f"fewer than {min_count}"
    return str(count)


def change(now: int, before: int, min_count: int) -> str:
    """The change since the previous period, when both counts may be shown."""
    if 0 < now < min_count or 0 < before < min_count:
        return "—"
    if now == before:
        return "="
    return f"{now - before:+d}"


def folded(counts: Mapping[str, int], min_count: int) -> list[tuple[str, int]]:
    """A breakdown with every row below ``min_count`` folded into "other" (so no single case
    stands out), largest first, "other" last."""
    rows: list[tuple[str, int]] = []
    other = 0
    for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if count <= 0:
            continue
        if count < min_count or name == OTHER:
            other += count
        else:
            rows.append((name, count))
    if other:
        rows.append((OTHER, other))
    return rows


def summary_rows(stats: Stats) -> list[tuple[str, str, str]]:
    """(what, this period, change) for the semiannual table, anonymised."""
    f, p, n = stats.figures, stats.previous, stats.min_count
    rows: list[tuple[str, int, int]] = [("Reports received", f.reports_total, p.reports_total)]
    rows += [(f"  by {CHANNEL_LABELS[channel]}", f.reports[channel], p.reports[channel]) for channel in CHANNELS]
    rows.append(("People named in reports", f.people_named, p.people_named))
    for actor in ACTORS:
        rows.append((f"Actions: {ACTOR_LABELS[actor]}", f.actions_total(actor), p.actions_total(actor)))
        rows += [(f"  {kind}", f.actions[actor][kind], p.actions[actor][kind]) for kind in ACTION_KINDS]
    rows += [
        ("People banned or flagged", f.people_banned_or_flagged, p.people_banned_or_flagged),
        ("Reports where no action was taken", f.reports_no_action, p.reports_no_action),
    ]
    rows += [(f"Appeals {key}", f.appeals[key], p.appeals[key]) for key in f.appeals]
    rows += [(f"Second chances {key}", f.second_chances[key], p.second_chances[key]) for key in f.second_chances]
    rows.append(("Votes held", f.votes_held, p.votes_held))
    rows += [(f"Suggestions {key}", f.suggestions[key], p.suggestions[key]) for key in f.suggestions]
    return [(what, shown(now, n), change(now, before, n)) for what, now, before in rows]


def as_json(stats: Stats) -> dict[str, Any]:
    """The same numbers, machine-readable (with the small counts given as "fewer than N")."""
    n = stats.min_count

    def cells(values: Mapping[str, int]) -> dict[str, int | str]:
        return {key: (shown(v, n) if 0 < v < n else v) for key, v in values.items()}

    def figures(f: Figures) -> dict[str, Any]:
        return {
            "reports": {"total": shown(f.reports_total, n), "by_channel": cells(f.reports)},
            "people_named": cells({"n": f.people_named})["n"],
            "actions": {actor: cells(f.actions[actor]) for actor in ACTORS},
            "people_banned_or_flagged": cells({"n": f.people_banned_or_flagged})["n"],
            "reports_no_action": cells({"n": f.reports_no_action})["n"],
            "appeals": cells(f.appeals),
            "second_chances": cells(f.second_chances),
            "votes_held": cells({"n": f.votes_held})["n"],
            "suggestions": cells(f.suggestions),
        }

    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "period": stats.period.label,
        "previous_period": stats.period.previous().label,
        "min_count": n,
        "definitions": DEFINITIONS,
        "figures": figures(stats.figures),
        "previous": figures(stats.previous),
    }
    if stats.period.yearly:
        out["yearly"] = {
            "by_room": dict(folded(stats.by_room, n)),
            "by_violation": dict(folded(stats.by_violation, n)),
            "outcomes": dict(folded(stats.outcomes, n)),
            "monthly": {month: cells(kinds) for month, kinds in stats.monthly.items()},
        }
    return out


DEFINITIONS = {
    "date_basis": "a report, appeal or request counts in the month it was received; an action when it was taken",
    "reports": "ModMail conversations, !report, urgent calls of the moderators, and the homeserver's reports",
    "people_named": "distinct people named in the period's reports",
    "team": "actions by the moderators from the management room, and the staff's votes",
    "local": "actions a protected room's own admins took there",
    "automatic": "actions the bot's protections and the policy lists took by themselves",
    "people_banned_or_flagged": "distinct people banned, or given a moderator's note",
    "no_action": "reports closed as no-action or invalid",
    "actions": "sanctions (warnings, mutes, kicks, bans); removed messages are counted apart",
    "small_counts": "counts from 1 to min_count - 1 are shown as 'fewer than min_count'",
}


def render(stats: Stats, fmt: str) -> str:
    """The report as ``md``, ``html`` or ``json``."""
    if fmt == "json":
        return json.dumps(as_json(stats), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    from abusebot.report_render import render_template

    return render_template(stats, fmt)


def month_labels(months: Iterable[str]) -> list[str]:
    """``2026-03`` → ``Mar 2026``."""
    out = []
    for month in months:
        year, number = month.split("-")
        out.append(f"{calendar.month_abbr[int(number)]} {year}")
    return out
