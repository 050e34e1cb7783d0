"""Transparency: periods, the counts, and anonymisation — a ledger full of named people, rooms,
reasons and quotes, rendered in every format, shows none of them."""

from __future__ import annotations

import json
import random
import re

import pytest

from abusebot.cases import MIGRATIONS as CASE_MIGRATIONS
from abusebot.cases import CaseStore, NewCase
from abusebot.config import Rule
from abusebot.features.second_chance import MIGRATIONS as SECOND_CHANCE_MIGRATIONS
from abusebot.features.suggestions import MIGRATIONS as SUGGESTION_MIGRATIONS
from abusebot.features.transparency import MIGRATIONS as TRANSPARENCY_MIGRATIONS
from abusebot.features.votes import MIGRATIONS as VOTE_MIGRATIONS
from abusebot.ledger import Ledger
from abusebot.transparency import Labels, PeriodError, collect, parse_period, render, shown

#: 2026-03-15 12:00 UTC and 2026-08-10: one in each half.
MARCH, AUGUST = 1773576000000, 1786363200000


@pytest.mark.parametrize(
    ("text", "first", "last", "previous"),
    [
        ("2026H1", (2026, 1), (2026, 6), "2025H2"),
        ("2026h2", (2026, 7), (2026, 12), "2026H1"),
        ("2026", (2026, 1), (2026, 12), "2025"),
        ("2026-02..2026-04", (2026, 2), (2026, 4), "2025-11..2026-01"),
    ],
)
def test_periods_read_as_the_contract_writes_them(
    text: str, first: tuple[int, int], last: tuple[int, int], previous: str
) -> None:
    period = parse_period(text)
    assert (period.first, period.last, period.previous().label) == (first, last, previous)
    assert period.end_ms > period.start_ms


@pytest.mark.parametrize("text", ["2026H3", "26H1", "2026-13..2026-14", "2026-06..2026-01", "last year", ""])
def test_a_bad_period_says_what_is_expected(text: str) -> None:
    with pytest.raises(PeriodError):
        parse_period(text)


def test_small_counts_are_fewer_than_the_minimum() -> None:
    assert [shown(n, 3) for n in (0, 1, 2, 3, 40)] == ["0", "fewer than 3", "fewer than 3", "3", "40"]


async def _fill(
    ledger: Ledger,
    people: list[str],
    rooms: list[str],
    secrets: list[str],
    monkeypatch: pytest.MonkeyPatch,
    rollup_first: bool = False,
) -> None:
    """Many named people, rooms, moderators, reasons and quotes, across 2026 (``rollup_first``:
    the transparency feature's rollup exists before they are written, else it is made after)."""
    if rollup_first:
        await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    for name, scripts in (
        ("cases", CASE_MIGRATIONS),
        ("votes", VOTE_MIGRATIONS),
        ("second_chance", SECOND_CHANCE_MIGRATIONS),
        ("suggestions", SUGGESTION_MIGRATIONS),
    ):
        await ledger.migrate_feature(name, scripts)
    rng = random.Random(7)
    rows = []
    for i in range(600):
        at = (MARCH if i % 2 else AUGUST) + rng.randrange(0, 40) * 86_400_000
        kind = rng.choice(["warning", "mute", "kick", "ban", "ban", "note"])
        room = rng.choice([*rooms, "*"])
        origin = rng.choice(["command", "protection", "policy_list"])
        rule = rng.choice(["spam: invite link", f"flood: more than {i} messages in 30s", secrets[i % len(secrets)]])
        expires = None if kind in ("warning", "kick", "note") or rng.random() < 0.5 else at + 3_600_000
        rows.append(
            (
                people[i % len(people)],
                kind,
                room,
                f"{secrets[i % len(secrets)]} rule 2",
                rule if origin != "command" else None,
                people[(i + 3) % len(people)],
                origin,
                at,
                expires,
                "active",
                "{}",
                None,
                f"$event{i}secret",
                at,
                room if origin == "command" and i % 3 else "!management:x",
            )
        )
    async with ledger.transaction() as db:
        await db.executemany(
            "INSERT INTO infractions (subject, kind, scope, reason, rule, actor, origin, created_at, expires_at, state,"
            " undo, level, source_event, updated_at, source_room) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    cases = CaseStore(ledger)
    for i in range(90):
        # Cases are opened "now": now is March for the even ones, August for the odd ones.
        monkeypatch.setattr("abusebot.cases.now_ms", lambda i=i: MARCH if i % 2 == 0 else AUGUST)
        kind = ["modmail", "report", "mention", "appeal"][i % 4]
        channel = {"appeal": "modmail"}.get(kind, kind if i % 8 else "homeserver" if kind == "report" else kind)
        case, _ = await cases.open_case(
            NewCase(
                kind,
                channel,
                people[i % len(people)],
                source_key=f"$case{i}",
                chat_room=rooms[i % len(rooms)],
                subject_room=rooms[i % len(rooms)],
                subject_event=f"$reported{i}",
                excerpt=secrets[i % len(secrets)],
                named=(people[(i + 1) % len(people)],),
                reporters=(people[(i + 2) % len(people)],),
                appeal_reason=secrets[(i + 1) % len(secrets)] if kind == "appeal" else None,
            ),
            (f"$case{i}", people[i % len(people)], "user", secrets[i % len(secrets)]),
        )
        outcome = {"appeal": "upheld"}.get(kind, "no-action" if i % 3 else "actioned")
        await cases.close(case.id, outcome, people[(i + 4) % len(people)], secrets[(i + 2) % len(secrets)], None)
    async with ledger.transaction() as db:
        for i in range(5):
            said, more = secrets[i % len(secrets)], secrets[(i + 1) % len(secrets)]
            await db.execute(
                "INSERT INTO votes (kind, question, opened_by, opened_at, earliest_close_at, closes_at,"
                " electorate_size, quorum, needed, source_key, subject) VALUES ('general', ?, ?, ?, ?, ?, 3, 0.6, 2,"
                " ?, ?)",
                (said, people[i], MARCH, MARCH, MARCH + 1000, f"$vote{i}", people[i + 1]),
            )
            await db.execute(
                "INSERT INTO suggestions (room_id, event_id, author, excerpt, created_at) VALUES (?, ?, ?, ?, ?)",
                (rooms[0], f"$idea{i}", people[i], said, AUGUST),
            )
            await db.execute(
                "INSERT INTO second_chances (user_id, requested_at, source_key, statement, state, refusal)"
                " VALUES (?, ?, ?, ?, 'ineligible', ?)",
                (people[i], MARCH, f"$ask{i}", said, more),
            )
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)


async def test_no_person_room_id_reason_or_quote_appears_in_any_format(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = [f"@person{i}-{name}:example.org" for i, name in enumerate(["alice", "bob", "carol", "dave", "erin"] * 8)]
    rooms = [f"!secretroom{i}:example.org" for i in range(6)]
    secrets = [f"quote-{i}-you are all idiots" for i in range(12)] + ["mailto:someone@example.org"]
    await _fill(ledger, people, rooms, secrets, monkeypatch)
    labels = Labels(
        rooms={rooms[0]: "Main", rooms[1]: "Meta", rooms[2]: "Off-topic"},
        rules=(Rule("2", "Be kind", "https://example.org/rules#2"),),
    )
    notes = "We added a second moderator shift.\n\nWe met 12 times."
    for period in ("2026H1", "2026H2", "2026"):
        stats = collect(ledger.path, parse_period(period), labels, min_count=3, notes=notes)
        for fmt in ("md", "html", "json"):
            out = render(stats, fmt)
            lowered = out.lower()
            for secret in [*people, *rooms, *secrets, "alice", "$event", "$case", "$reported", "secretroom"]:
                assert secret.lower() not in lowered, (period, fmt, secret)
            assert not re.search(r"@[\w.=-]+:[\w.-]+", out), (period, fmt)  # no user id of any shape
            assert not re.search(r"[!$][\w-]+:[\w.-]+", out), (period, fmt)  # no room or event id
            # No date finer than the month: no day of a month anywhere.
            assert not re.search(r"\b20\d\d-\d\d-\d\d\b", out), (period, fmt)
    yearly = collect(ledger.path, parse_period("2026"), labels, min_count=3, notes=notes)
    assert yearly.figures.reports_total > 0
    assert yearly.by_room  # labelled rooms, the rest folded into "other"
    data = json.loads(render(yearly, "json"))
    assert data["schema_version"] == 1
    assert set(data["yearly"]["by_room"]) <= {"Main", "Meta", "Off-topic", "all rooms", "other"}
    assert "rule 2 (Be kind)" in data["yearly"]["by_violation"]
    assert "flood" in data["yearly"]["by_violation"]  # the category, not the numbers of the rule
    assert "We met 12 times." in render(yearly, "md")


async def test_the_counts_follow_the_ledger(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures against the ledger's own counts."""
    await _fill(ledger, [f"@p{i}:x" for i in range(10)], ["!r1:x", "!r2:x"], ["why", "because"], monkeypatch)
    h1 = collect(ledger.path, parse_period("2026H1"), Labels(), min_count=3)
    rows = await ledger.fetch(
        "SELECT COUNT(*) FROM infractions WHERE created_at >= ? AND created_at < ? AND kind <> 'note'",
        (h1.period.start_ms, h1.period.end_ms),
    )
    counted = sum(h1.figures.actions_total(actor) for actor in ("team", "local", "automatic"))
    assert counted == rows[0][0]
    reports = await ledger.fetch(
        "SELECT COUNT(*) FROM cases WHERE kind IN ('modmail','report','mention') AND opened_at >= ? AND opened_at < ?",
        (h1.period.start_ms, h1.period.end_ms),
    )
    assert h1.figures.reports_total == reports[0][0]
    assert h1.figures.votes_held == 5
    assert h1.figures.second_chances["requested"] == 5
    assert h1.previous.reports_total == 0
    h2 = collect(ledger.path, parse_period("2026H2"), Labels(), min_count=3)
    assert h2.figures.suggestions["received"] == 5
    assert h2.previous.reports_total == h1.figures.reports_total


@pytest.mark.parametrize("rollup_first", [True, False])
async def test_the_rollup_gives_the_numbers_the_infractions_give(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, rollup_first: bool
) -> None:
    """Kept as infractions are written and change state (or made at once from an older ledger),
    the rollup counts what grouping the infractions themselves counts."""
    await _fill(
        ledger,
        [f"@p{i}:x" for i in range(30)],
        ["!r1:x", "!r2:x"],
        ["rule 2 why", "#2 x"],
        monkeypatch,
        rollup_first=rollup_first,
    )
    async with ledger.transaction() as db:  # what the bot does to records: settle, fail, lift, shorten
        await db.execute("UPDATE infractions SET state = 'failed' WHERE id % 11 = 0")
        await db.execute("UPDATE infractions SET state = 'lifted' WHERE id % 13 = 0 AND state = 'active'")
        await db.execute("UPDATE infractions SET expires_at = created_at + 60000 WHERE id % 17 = 0")
        await db.execute("UPDATE infractions SET state = 'pending' WHERE id % 19 = 0")
        await db.execute("UPDATE infractions SET state = 'active' WHERE id % 38 = 0")
    labels = Labels(rooms={"!r1:x": "Main"}, rules=(Rule("2", "Be kind", None),))
    for period in ("2026H1", "2026H2", "2026", "2026-03..2026-04"):
        kept = collect(ledger.path, parse_period(period), labels, 3)
        grouped = collect(ledger.path, parse_period(period), labels, 3, raw=True)
        assert kept == grouped, period
    assert "rule 2 (Be kind)" in collect(ledger.path, parse_period("2026"), labels, 3).by_violation


@pytest.mark.parametrize(
    ("label", "printed"),
    [
        ("Main", "Main"),
        ("Off-topic (chat)", "Off-topic (chat)"),
        ("#help:example.org", "help"),
        ("@alice:example.org's room", "room 4"),
        ("write to alice@example.org", "room 4"),
        ("see https://example.org/x", "room 4"),
        ("!abcdef:example.org", "room 4"),
        ("<b>Meta</b> | *x*", "bMetab x"),
        ("   ", "room 4"),
    ],
)
def test_a_room_name_is_printed_only_when_it_names_no_one(label: str, printed: str) -> None:
    """A room admin chooses the name: one carrying an id, an address or a link is "room N"."""
    from abusebot.transparency import public_label

    assert public_label(label, 4) == printed
