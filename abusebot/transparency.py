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
_PERIOD_HALF = re.compile(r"^([0-9]{4})H([12])$")
_PERIOD_YEAR = re.compile(r"^([0-9]{4})$")
_PERIOD_RANGE = re.compile(r"^([0-9]{4})-([0-9]{2})\.\.([0-9]{4})-([0-9]{2})$")
#: The years a period may name (its previous period, up to ten years before, stays a real date).
YEARS = (1980, 2999)
#: The protections' rule categories and details a report may print (their rules' own words).
PROTECTION_CATEGORIES = frozenset({"spam", "flood", "join flood"})
RULE_DETAILS = frozenset(
    {
        "banned phrase",
        "banned pattern",
        "invite link",
        "invite to another matrix room",
        "mass mention",
        "link to a denied domain",
        "link to a domain not allowed",
        "too many links",
        "@room ping",
        "new member posted a link",
        "new member posted media",
        "same message in several rooms",
    }
)
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
        return Period(_label(first, last), first, last)


def _month_ms(year: int, month: int) -> int:
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def parse_period(text: str) -> Period:
    """``2026H1``, ``2026H2``, ``2026`` (yearly) or ``2026-01..2026-06``; one period has one
    label (``2026-01..2026-06`` is ``2026H1``), so its snapshots find each other."""
    word = text.strip().upper()
    if found := _PERIOD_HALF.match(word):
        year, half = int(found.group(1)), int(found.group(2))
        first, last = (year, 1 if half == 1 else 7), (year, 6 if half == 1 else 12)
    elif found := _PERIOD_YEAR.match(word):
        year = int(found.group(1))
        first, last = (year, 1), (year, 12)
    elif found := _PERIOD_RANGE.match(word):
        first = (int(found.group(1)), int(found.group(2)))
        last = (int(found.group(3)), int(found.group(4)))
        if not (1 <= first[1] <= 12 and 1 <= last[1] <= 12) or last < first:
            raise PeriodError(f"{text[:40]!r}: months 01 to 12, the first not after the last")
        if (last[0] * 12 + last[1]) - (first[0] * 12 + first[1]) >= 120:
            raise PeriodError(f"{text[:40]!r}: at most ten years")
    else:
        raise PeriodError(f"{text[:40]!r} is not a period: write 2026H1, 2026H2, 2026 or 2026-01..2026-06")
    if not (YEARS[0] <= first[0] and last[0] <= YEARS[1]):
        raise PeriodError(f"{text[:40]!r}: a year from {YEARS[0]} to {YEARS[1]}")
    return Period(_label(first, last), first, last)


def _label(first: tuple[int, int], last: tuple[int, int]) -> str:
    """The one label of a span of months."""
    if first[0] == last[0] and (first[1], last[1]) == (1, 12):
        return str(first[0])
    if first[0] == last[0] and (first[1], last[1]) in ((1, 6), (7, 12)):
        return f"{first[0]}H{1 if first[1] == 1 else 2}"
    return f"{first[0]}-{first[1]:02d}..{last[0]}-{last[1]:02d}"


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


_IDENTIFYING = re.compile(r"@|://|^\s*[!$]|[!#$+][^\s:]*:[^\s]+|www\.", re.IGNORECASE)
_ALIAS = re.compile(r"^#([\w.-]{1,60}):\S+$")
_UNSAFE = re.compile(r"[^\w\s.,&()'+-]")


def public_label(label: str, number: int) -> str:
    """A room's name as the report may print it: a name that carries an id, an address or a link
    (a room admin chose it; an unnamed room's label is its id) becomes "room N"; an alias is its
    name without the server; markup characters are dropped; 60 characters."""
    alias = _ALIAS.match(label.strip())
    if alias:
        label = alias.group(1)
    if _IDENTIFYING.search(label):
        return f"room {number}"
    text = " ".join(_UNSAFE.sub("", label).split())[:60]
    return text or f"room {number}"


def labels_from(db_rows: Sequence[tuple[Any, ...]], rules: Sequence[Rule]) -> Labels:
    """Labels from ``transparency_rooms`` rows (room id, label, role); :func:`public_label`
    makes each safe to print."""
    rooms = {str(room): str(label) for room, label, role in db_rows if role == "protected"}
    management = next((str(room) for room, _, role in db_rows if role == "management"), None)
    return Labels(rooms=rooms, management=management, rules=tuple(rules))


def _kept_labels(db: sqlite3.Connection, tables: set[str], rules: Sequence[Rule]) -> Labels:
    rows = (
        db.execute("SELECT room_id, label, role FROM transparency_rooms").fetchall()
        if ("transparency_rooms" in tables)
        else []
    )
    return labels_from(rows, rules)


def _violation_type(origin: str, rule: str | None, cited: str | None) -> str:
    """A protection's rule by its category ("flood", "spam: invite link") from a fixed
    vocabulary — a rule's text may carry details, a phrase, a name — a policy list, a
    configured rule a reason cites, or "moderators' decision"."""
    if origin == "policy_list":
        return "policy list"
    if origin == "protection" and rule:
        head, _, detail = rule.strip().lower().partition(":")
        detail = detail.strip()
        for suffix in (" in a membership reason", " in display name"):
            detail = detail.removesuffix(suffix)
        if head in PROTECTION_CATEGORIES:
            return f"{head}: {detail}" if detail in RULE_DETAILS else head
        return "protection"
    return cited or "moderators' decision"


def _kind(kind: str, permanent: bool) -> str | None:
    if kind == "ban":
        return "permanent ban" if permanent else "temporary ban"
    return kind if kind in ("warning", "mute", "kick") else None


def collect(
    path: Path,
    period: Period,
    labels: Labels | None = None,
    min_count: int = 3,
    notes: str = "",
    *,
    rules: Sequence[Rule] = (),
    raw: bool = False,
) -> Stats:
    """Read the ledger at ``path`` (read-only: the bot may be running) into the period's stats.
    ``labels``: the rooms' names, else those the transparency feature keeps in the ledger, with
    ``rules``; ``raw``: off the infractions themselves, not the rollup (the same numbers, slower)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, isolation_level=None)
    try:
        # One read transaction: every count of the report from the same moment of the ledger,
        # however the bot writes meanwhile (WAL keeps that moment for the reader).
        db.execute("BEGIN")
        tables = _tables(db)
        if labels is None:
            labels = _kept_labels(db, tables, rules)
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
    names = {room: public_label(label, n) for n, (room, label) in enumerate(sorted(labels.rooms.items()), 1)}
    for when, origin, kind, permanent, in_own_room, scope, rule, cited, count in _grouped(db, tables, period, raw=raw):
        label = _kind(str(kind), bool(permanent))
        if label is None:
            continue
        actor = _actor(str(origin), bool(in_own_room), str(scope))
        actions[actor][label] += count
        if yearly:
            monthly[str(when)][label] += count
            room = "all rooms" if scope == "*" else names.get(str(scope), OTHER)
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
    "strftime('%Y-%m', created_at / 1000.0, 'unixepoch'), origin, kind, expires_at IS NULL,"
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
    month = "strftime('%Y-%m', created_at / 1000.0, 'unixepoch')"
    for when, count in db.execute(
        f"SELECT {month}, COUNT(*) FROM outbox WHERE kind = 'redact' AND state = 'done' AND created_at >= ?"
        " AND created_at < ? AND json_extract(payload, '$.reason') LIKE 'Removed:%' GROUP BY 1",
        (start, end),
    ):
        actions["automatic"]["removed messages"] += count
        if monthly is not None:
            monthly[str(when)]["removed messages"] += count
    month = "strftime('%Y-%m', at / 1000.0, 'unixepoch')"
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


#: A count hidden only so that a small one beside it cannot be worked out from their total.
WITHHELD = "withheld"
Cell = int | str


def cell(count: int, min_count: int) -> Cell:
    """A count as published: the number, or "fewer than N" for 1 to ``min_count - 1``."""
    return f"fewer than {min_count}" if 0 < count < min_count else count


def shown(count: int, min_count: int) -> str:
    """A count as published, in words."""
    return str(cell(count, min_count))


def protected(values: Sequence[int], min_count: int) -> list[Cell]:
    """A group of counts whose total is published: the small ones are "fewer than N", and when
    only one is, the smallest other one is withheld too — else the total minus the others
    would give the small one away."""
    out: list[Cell] = [cell(v, min_count) for v in values]
    small = [i for i, v in enumerate(values) if 0 < v < min_count]
    others = [i for i, v in enumerate(values) if v >= min_count]
    if len(small) == 1 and others:
        out[min(others, key=lambda i: (values[i], i))] = WITHHELD
    return out


def change(now: Cell, before: Cell) -> str:
    """The change since the previous period, when both counts are published as numbers."""
    if not isinstance(now, int) or not isinstance(before, int):
        return "—"
    if now == before:
        return "="
    return f"{now - before:+d}"


def folded(counts: Mapping[str, int], min_count: int) -> list[tuple[str, Cell]]:
    """A breakdown (rooms, types of violation, outcomes) whose rows below ``min_count`` are
    folded into "other" — and, while "other" itself is small, the smallest rows after them —
    so no single case stands out, nor comes out of the total by subtraction. Largest first."""
    rows = sorted(((name, c) for name, c in counts.items() if c > 0 and name != OTHER), key=lambda r: (-r[1], r[0]))
    other = counts.get(OTHER, 0) + sum(c for _, c in rows if c < min_count)
    rows = [(name, c) for name, c in rows if c >= min_count]
    while rows and 0 < other < min_count:
        other += rows.pop()[1]
    out: list[tuple[str, Cell]] = [(name, c) for name, c in rows]
    if other:
        out.append((OTHER, cell(other, min_count)))
    return out


@attrs.frozen
class Published:
    """A period's figures as they may be published: every cell a number, "fewer than N" or
    withheld (a group's second cell beside a small one)."""

    reports: Mapping[str, Cell]  # "total" and each channel
    actions: Mapping[str, Mapping[str, Cell]]  # actor → "total" and each kind
    single: Mapping[str, Cell]  # people named, banned or flagged, no action, votes held
    appeals: Mapping[str, Cell]
    second_chances: Mapping[str, Cell]
    suggestions: Mapping[str, Cell]


def published(f: Figures, n: int) -> Published:
    """``f`` made publishable (:func:`protected` for each group with a total)."""
    channels = protected([f.reports[c] for c in CHANNELS], n)
    actions: dict[str, dict[str, Cell]] = {}
    for actor in ACTORS:
        sanctions = [kind for kind in ACTION_KINDS if kind != "removed messages"]
        cells = protected([f.actions[actor][kind] for kind in sanctions], n)
        actions[actor] = {"total": cell(f.actions_total(actor), n), **dict(zip(sanctions, cells, strict=True))}
        actions[actor]["removed messages"] = cell(f.actions[actor]["removed messages"], n)
    return Published(
        reports={"total": cell(f.reports_total, n), **dict(zip(CHANNELS, channels, strict=True))},
        actions=actions,
        single={
            "people named": cell(f.people_named, n),
            "people banned or flagged": cell(f.people_banned_or_flagged, n),
            "reports with no action": cell(f.reports_no_action, n),
            "votes held": cell(f.votes_held, n),
        },
        appeals={k: cell(v, n) for k, v in f.appeals.items()},
        second_chances={k: cell(v, n) for k, v in f.second_chances.items()},
        suggestions={k: cell(v, n) for k, v in f.suggestions.items()},
    )


def monthly_cells(stats: Stats) -> dict[str, dict[str, Cell]]:
    """The month-by-month table, each kind's column protected like a group (its total is
    the year's, which the summary gives)."""
    months = list(stats.monthly)
    out: dict[str, dict[str, Cell]] = {m: {} for m in months}
    for kind in ACTION_KINDS:
        column = protected([stats.monthly[m][kind] for m in months], stats.min_count)
        for m, value in zip(months, column, strict=True):
            out[m][kind] = value
    return out


def summary_rows(stats: Stats) -> list[tuple[str, str, str]]:
    """(what, this period, change) for the semiannual table, anonymised."""
    now, before = published(stats.figures, stats.min_count), published(stats.previous, stats.min_count)
    rows: list[tuple[str, Cell, Cell]] = [("Reports received", now.reports["total"], before.reports["total"])]
    rows += [(f"  by {CHANNEL_LABELS[c]}", now.reports[c], before.reports[c]) for c in CHANNELS]
    rows.append(("People named in reports", now.single["people named"], before.single["people named"]))
    for actor in ACTORS:
        a, b = now.actions[actor], before.actions[actor]
        rows.append((f"Actions: {ACTOR_LABELS[actor]}", a["total"], b["total"]))
        rows += [(f"  {kind}", a[kind], b[kind]) for kind in ACTION_KINDS]
    rows += [
        (what, now.single[key], before.single[key])
        for what, key in (
            ("People banned or flagged", "people banned or flagged"),
            ("Reports where no action was taken", "reports with no action"),
        )
    ]
    rows += [(f"Appeals {k}", now.appeals[k], before.appeals[k]) for k in now.appeals]
    rows += [(f"Second chances {k}", now.second_chances[k], before.second_chances[k]) for k in now.second_chances]
    rows.append(("Votes held", now.single["votes held"], before.single["votes held"]))
    rows += [(f"Suggestions {k}", now.suggestions[k], before.suggestions[k]) for k in now.suggestions]
    return [(what, str(a), change(a, b)) for what, a, b in rows]


def as_json(stats: Stats) -> dict[str, Any]:
    """The same numbers, machine-readable: each count an integer, or the string "fewer than N",
    or "withheld"."""
    n = stats.min_count

    def figures(f: Figures) -> dict[str, Any]:
        p = published(f, n)
        return {
            "reports": {"total": p.reports["total"], "by_channel": {c: p.reports[c] for c in CHANNELS}},
            "people_named": p.single["people named"],
            "actions": {actor: dict(p.actions[actor]) for actor in ACTORS},
            "people_banned_or_flagged": p.single["people banned or flagged"],
            "reports_no_action": p.single["reports with no action"],
            "appeals": dict(p.appeals),
            "second_chances": dict(p.second_chances),
            "votes_held": p.single["votes held"],
            "suggestions": dict(p.suggestions),
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
            "monthly": monthly_cells(stats),
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
    "withheld": "a count hidden so that a small one beside it cannot be worked out from their total",
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
