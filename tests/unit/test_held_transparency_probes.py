"""Attack probes on the transparency statistics (unit level, real SQLite ledger)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import yaml

from abusebot.cases import MIGRATIONS as CASE_MIGRATIONS
from abusebot.cases import CaseStore, NewCase
from abusebot.cli import main
from abusebot.config import Rule
from abusebot.features.transparency import MIGRATIONS as TRANSPARENCY_MIGRATIONS
from abusebot.ledger import Ledger
from abusebot.transparency import Labels, PeriodError, collect, parse_period, render

MARCH = 1773576000000  # 2026-03-15 12:00 UTC
APRIL = MARCH + 31 * 86_400_000
DAY = 86_400_000
ROOM = "!r1:x"


def row(
    kind: str = "ban",
    scope: str = ROOM,
    at: int = MARCH,
    origin: str = "command",
    rule: str | None = None,
    reason: str = "",
    expires: int | None = None,
    state: str = "active",
    source_room: str | None = "!management:x",
    subject: str = "@victim:x",
) -> tuple:
    return (subject, kind, scope, reason, rule, "@mod:x", origin, at, expires, state, "{}", None, None, at, source_room)


async def insert(ledger: Ledger, rows: list[tuple]) -> None:
    async with ledger.transaction() as db:
        await db.executemany(
            "INSERT INTO infractions (subject, kind, scope, reason, rule, actor, origin, created_at, expires_at, state,"
            " undo, level, source_event, updated_at, source_room) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def all_formats(stats) -> dict[str, str]:
    return {fmt: render(stats, fmt) for fmt in ("md", "html", "json")}


async def assert_rollup_equals_raw(ledger: Ledger, periods=("2026H1", "2026H2", "2026", "2025", "2026-03..2026-04")):
    labels = Labels(rooms={ROOM: "Main"}, rules=(Rule("2", "Be kind", None),))
    for p in periods:
        kept = collect(ledger.path, parse_period(p), labels, 3)
        grouped = collect(ledger.path, parse_period(p), labels, 3, raw=True)
        assert kept == grouped, p


# -- JSON types and small counts ------------------------------------------------------------


async def test_json_report_total_is_a_number_when_it_can_be_shown(ledger: Ledger) -> None:
    await ledger.migrate_feature("cases", CASE_MIGRATIONS)
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row() for _ in range(5)])
    data = json.loads(render(collect(ledger.path, parse_period("2026H1"), Labels(), 3), "json"))
    # every other count shown is an int: so must the totals be (0 included)
    assert data["figures"]["actions"]["team"]["permanent ban"] == 5
    assert isinstance(data["figures"]["reports"]["total"], int), data["figures"]["reports"]


async def test_json_yearly_breakdowns_never_give_a_small_count(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    rooms = {"!r1:x": "Main", "!r2:x": "Meta"}
    await insert(ledger, [row(scope="!r1:x") for _ in range(5)] + [row(scope="!r2:x")])
    data = json.loads(render(collect(ledger.path, parse_period("2026"), Labels(rooms=rooms), 3), "json"))
    for section in ("by_room", "by_violation", "outcomes"):
        for name, value in data["yearly"][section].items():
            assert not (isinstance(value, int) and 0 < value < 3), (section, name, value)


async def test_json_schema_numbers_are_ints_or_fewer_than(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row() for _ in range(4)] + [row(kind="warning")])
    data = json.loads(render(collect(ledger.path, parse_period("2026"), Labels(), 3), "json"))
    assert data["schema_version"] == 1
    assert isinstance(data["schema_version"], int)

    def walk(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                if where == "" and k in ("definitions", "period", "previous_period"):
                    continue
                walk(v, f"{where}/{k}")
        elif isinstance(value, str):
            assert value in ("fewer than 3", "withheld"), where
        else:
            assert isinstance(value, int), where
            assert not isinstance(value, bool), where

    walk(data, "")


# -- complementary disclosure ---------------------------------------------------------------


def _number(text: str) -> int | None:
    return int(text) if text.lstrip("+-").isdigit() else None


async def test_a_small_kind_cannot_be_recovered_from_the_actors_total(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    # the team: 5 permanent bans and a single warning (a small cell)
    await insert(ledger, [row() for _ in range(5)] + [row(kind="warning")])
    from abusebot.transparency import summary_rows

    rows = summary_rows(collect(ledger.path, parse_period("2026H1"), Labels(), 3))
    index = next(i for i, r in enumerate(rows) if r[0].startswith("Actions: moderation team"))
    total = _number(rows[index][1])
    kinds = [rows[i][1] for i in range(index + 1, index + 6)]  # the five sanction kinds
    known = [_number(k) for k in kinds]
    hidden = [k for k in known if k is None]
    if total is not None and len(hidden) == 1:
        recovered = total - sum(k for k in known if k is not None)
        pytest.fail(f"the small cell is {recovered}: total {total}, kinds {kinds}")


async def test_a_small_channel_cannot_be_recovered_from_the_reports_total(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.migrate_feature("cases", CASE_MIGRATIONS)
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    cases = CaseStore(ledger)
    monkeypatch.setattr("abusebot.cases.now_ms", lambda: MARCH)
    for i, kind in enumerate(["modmail"] * 5 + ["report"]):
        await cases.open_case(
            NewCase(kind, kind, f"@p{i}:x", source_key=f"$c{i}", chat_room="!r:x", subject_room="!r:x"),
            (f"$c{i}", f"@p{i}:x", "user", "hello"),
        )
    from abusebot.transparency import summary_rows

    rows = summary_rows(collect(ledger.path, parse_period("2026H1"), Labels(), 3))
    total = _number(rows[0][1])
    channels = [rows[i][1] for i in range(1, 5)]
    known = [_number(c) for c in channels]
    if total is not None and known.count(None) == 1:
        pytest.fail(f"the small channel is {total - sum(k for k in known if k is not None)}: {rows[:5]}")


async def test_a_single_action_in_a_month_cannot_be_recovered_from_the_year(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    # 5 bans in March, a single ban in April (a single action in a month)
    await insert(ledger, [row() for _ in range(5)] + [row(at=APRIL)])
    data = json.loads(render(collect(ledger.path, parse_period("2026"), Labels(), 3), "json"))
    total = data["figures"]["actions"]["team"]["permanent ban"]
    months = [m["permanent ban"] for m in data["yearly"]["monthly"].values()]
    if isinstance(total, int) and sum(1 for m in months if isinstance(m, str)) == 1:
        hidden = total - sum(m for m in months if isinstance(m, int))
        pytest.fail(f"the single month's count is {hidden}: total {total}, months {months}")


# -- what may be named ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label",
    [
        "@alice:example.org",
        "alice@example.org",
        "!r1:x",  # an unnamed room: RoomStore.label falls back to the room id, and it is stored
        "$event123:example.org",
    ],
)
async def test_a_room_label_that_is_an_id_or_address_is_not_published(ledger: Ledger, label: str) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row() for _ in range(5)])
    stats = collect(ledger.path, parse_period("2026"), Labels(rooms={ROOM: label}), 3)
    for fmt, out in all_formats(stats).items():
        assert label not in out, fmt
        assert not re.search(r"[@!$][\w.=-]+:[\w.-]+", out), fmt
        assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", out), fmt


@pytest.mark.parametrize(
    "label",
    [
        "<script>alert(1)</script>",
        "<img src=https://evil.example/t.png>",
        "![x](https://evil.example/track.png)",
        "Main\n\n# I am a heading",
    ],
)
async def test_a_hostile_room_label_cannot_inject_into_the_markdown(ledger: Ledger, label: str) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row() for _ in range(5)])
    stats = collect(ledger.path, parse_period("2026"), Labels(rooms={ROOM: label}), 3)
    md = render(stats, "md")
    assert "<script" not in md
    assert "<img" not in md
    assert "](https://" not in md
    assert "\n# I am a heading" not in md


async def test_a_hostile_room_label_is_escaped_in_html(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row() for _ in range(5)])
    label = '<script>alert(1)</script><img src="https://evil.example/x">'
    html = render(collect(ledger.path, parse_period("2026"), Labels(rooms={ROOM: label}), 3), "html")
    assert "<script>alert" not in html
    assert "<img" not in html
    assert "evil.example" not in html  # a name carrying a link is "room N"


async def test_a_protection_rule_naming_someone_is_not_a_violation_type(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    rules = [
        "impersonation of @alice:example.org",
        "banned word: you are all idiots",
        "spam: alice@example.org",
    ]
    await insert(ledger, [row(origin="protection", rule=r) for r in rules for _ in range(4)])
    stats = collect(ledger.path, parse_period("2026"), Labels(), 3)
    for fmt, out in all_formats(stats).items():
        assert "alice" not in out.lower(), (fmt, dict(stats.by_violation))
        assert "idiots" not in out.lower(), (fmt, dict(stats.by_violation))


async def test_a_ban_reason_with_ids_quotes_and_script_is_never_shown(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    reasons = [
        'rule <script>alert(1)</script> "you are an idiot" @alice:example.org $ev:x',
        "rule @alice:example.org",
        "rule 2 " + "x" * 100_000,
        'RULE 2"><script>',
    ]
    await insert(ledger, [row(reason=r) for r in reasons for _ in range(4)])
    stats = collect(ledger.path, parse_period("2026"), Labels(rules=(Rule("2", "Be kind", None),)), 3)
    for fmt, out in all_formats(stats).items():
        for bad in ("<script>alert", '<script>"', "alice", "idiot", "$ev", "xxxx"):
            assert bad not in out.lower(), (fmt, bad)
    assert stats.by_violation.get("rule 2 (Be kind)") == 8


# -- HTML: self-contained ---------------------------------------------------------------------


async def test_html_makes_no_request(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row(at=MARCH + i * 20 * DAY) for i in range(12)])
    html = render(collect(ledger.path, parse_period("2026"), Labels(rooms={ROOM: "Main"}), 3), "html")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "@import" not in html
    assert "url(" not in html
    assert 'name="viewport"' in html
    assert "@media print" in html


# -- periods ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0000", "0001", "0001H1", "9999H2", "9999", "9999-12..9999-12", "0001-01..0001-03"])
def test_a_period_at_the_edge_of_the_calendar_is_refused_or_works(tmp_path: Path, text: str) -> None:
    """Either a PeriodError (exit 2 in the CLI), or a period whose bounds and previous period exist."""
    try:
        period = parse_period(text)
    except PeriodError:
        return
    period.start_ms, period.end_ms  # noqa: B018
    previous = period.previous()
    previous.start_ms, previous.end_ms  # noqa: B018


@pytest.mark.parametrize("text", ["２０２６H1", "٢٠٢٦H1", "2026-01..2026-06"])
def test_the_same_half_year_has_one_label(text: str) -> None:
    """Snapshots are keyed by the label: the same half under another spelling would not be a correction."""
    try:
        period = parse_period(text)
    except PeriodError:
        return
    assert period.label == "2026H1", period.label


@pytest.mark.parametrize(
    ("text", "months", "previous"),
    [
        ("2025-11..2026-02", 4, "2025-07..2025-10"),
        ("2024", 12, "2023"),
        ("2024-02..2024-02", 1, "2024-01..2024-01"),
        ("2020-01..2029-12", 120, "2010-01..2019-12"),
        ("2026-07..2026-12", 6, "2026H1"),
    ],
)
def test_periods_across_years_and_leap_years(text: str, months: int, previous: str) -> None:
    period = parse_period(text)
    assert len(period.months) == months
    assert period.previous().label == previous
    if text == "2024-02..2024-02":
        assert period.end_ms - period.start_ms == 29 * DAY


def test_more_than_ten_years_is_refused() -> None:
    with pytest.raises(PeriodError):
        parse_period("2020-01..2030-01")


async def test_a_ban_on_the_last_millisecond_of_december_counts_in_that_year(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    y2027 = parse_period("2027").start_ms
    await insert(ledger, [row(at=y2027 - 1) for _ in range(3)] + [row(at=y2027) for _ in range(4)])
    s26 = collect(ledger.path, parse_period("2026"), Labels(), 3)
    s27 = collect(ledger.path, parse_period("2027"), Labels(), 3)
    assert s26.figures.actions["team"]["permanent ban"] == 3
    assert s27.figures.actions["team"]["permanent ban"] == 4
    assert s27.previous.actions["team"]["permanent ban"] == 3
    assert s26.monthly["2026-12"]["permanent ban"] == 3
    await assert_rollup_equals_raw(ledger, ("2026", "2027", "2026-12..2027-01"))


# -- the rollup -------------------------------------------------------------------------------


async def test_the_rollup_follows_state_changes_in_any_order(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    kinds = ["warning", "mute", "kick", "ban", "note"]
    rows = []
    for i in range(60):
        rows.append(
            row(
                kind=kinds[i % 5],
                scope=[ROOM, "*", "!r2:x"][i % 3],
                origin=["command", "protection", "policy_list", "system"][i % 4],
                rule=["spam: invite link", None, "flood: more than 3 messages in 30s"][i % 3],
                reason=["rule 2", "", "because rule #2 x"][i % 3],
                state=["pending", "active", "failed"][i % 3],
                source_room=[ROOM, None, "!management:x"][i % 3],
                expires=None if i % 2 else MARCH + 1000,
                at=MARCH + (i % 5) * 30 * DAY,
            )
        )
    await insert(ledger, rows)
    await assert_rollup_equals_raw(ledger)
    states = ["pending", "active", "expired", "lifted", "pardoned", "failed"]
    async with ledger.transaction() as db:
        for step in range(6):
            for i in range(1, 61):
                await db.execute(
                    "UPDATE infractions SET state = ?, expires_at = ? WHERE id = ?",
                    (states[(i + step * 7) % 6], None if (i + step) % 3 else MARCH + step, i),
                )
    await assert_rollup_equals_raw(ledger)
    async with ledger.transaction() as db:  # updating to the same values, and expires_at alone
        await db.execute("UPDATE infractions SET state = state")
        await db.execute("UPDATE infractions SET expires_at = NULL WHERE id % 2 = 0")
        await db.execute("UPDATE infractions SET undo = '{\"x\": 1}', updated_at = updated_at + 1")
    await assert_rollup_equals_raw(ledger)


async def test_the_rollup_follows_a_change_of_source_room(ledger: Ledger) -> None:
    """``source_room`` is not among the frozen identity fields: a change of it must not make the
    rollup and the infractions disagree (own_room is computed from it)."""
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row(source_room=None) for _ in range(4)])
    try:
        async with ledger.transaction() as db:
            await db.execute("UPDATE infractions SET source_room = scope")
    except Exception:  # refused: fine, the rollup cannot drift
        return
    await assert_rollup_equals_raw(ledger)


async def test_the_rollup_agrees_before_1970(ledger: Ledger) -> None:
    """Records from before 1970 are filed under their own month by both ways of counting (the
    month of a negative time is floored, not truncated); a period that early is refused."""
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row(at=-500) for _ in range(3)] + [row(at=-31 * DAY) for _ in range(3)])
    rows = await ledger.fetch("SELECT month, SUM(n) FROM transparency_rollup GROUP BY 1 ORDER BY 1")
    assert rows == [("1969-11", 3), ("1969-12", 3)] or rows == [("1969-12", 6)]
    for early in ("1969", "1970H1"):
        with pytest.raises(PeriodError):
            parse_period(early)


async def test_rollup_made_after_and_kept_after_agree(ledger: Ledger) -> None:
    await insert(
        ledger, [row(kind=k, state=s) for k in ("ban", "mute", "kick") for s in ("active", "pending", "failed")]
    )
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row(kind="warning")])
    async with ledger.transaction() as db:
        await db.execute("UPDATE infractions SET state = 'active' WHERE state = 'pending'")
    await assert_rollup_equals_raw(ledger)


# -- ledgers ----------------------------------------------------------------------------------


async def test_an_old_ledger_without_the_feature_tables(ledger: Ledger) -> None:
    await insert(ledger, [row() for _ in range(4)])
    stats = collect(ledger.path, parse_period("2026"), Labels(), 3)
    assert stats.figures.actions["team"]["permanent ban"] == 4
    for out in all_formats(stats).values():
        assert out


async def test_the_report_reads_while_a_write_transaction_is_open(ledger: Ledger) -> None:
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row() for _ in range(4)])
    writer = sqlite3.connect(ledger.path, timeout=1)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO infractions (subject, kind, scope, reason, actor, origin, created_at, state, updated_at)"
            " VALUES ('@x:x', 'ban', '*', '', '@m:x', 'command', ?, 'active', ?)",
            (MARCH, MARCH),
        )
        stats = collect(ledger.path, parse_period("2026H1"), Labels(), 3)
        assert stats.figures.actions["team"]["permanent ban"] == 4
    finally:
        writer.rollback()
        writer.close()


# -- the CLI ----------------------------------------------------------------------------------


def _config(tmp_path: Path, **transparency) -> Path:
    data = {
        "homeserver": "http://127.0.0.1:8008",
        "user_id": "@abusebot:example.org",
        "password": "hunter2",
        "data_dir": str(tmp_path / "data"),
        "management_room": "!management:example.org",
        "protected_rooms": ["!lobby:example.org"],
    }
    if transparency:
        data["transparency"] = transparency
    path = tmp_path / "abusebot.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data").chmod(0o700)
    return path


def _one_line_exit_2(code: int, err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err


def test_cli_missing_ledger_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "-c", str(_config(tmp_path)), "--period", "2026H1"])
    _one_line_exit_2(code, capsys.readouterr().err)


@pytest.mark.parametrize("period", ["someday", "2026H3", "2026-00..2026-03", "0001", "9999H2", "0000"])
async def test_cli_bad_period_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], period: str
) -> None:
    config = _config(tmp_path)
    opened = await Ledger.open(tmp_path / "data" / "ledger.sqlite3")
    await opened.close()
    capsys.readouterr()
    try:
        code = main(["report", "-c", str(config), "--period", period])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    except Exception as err:  # a traceback: not what the contract promises
        pytest.fail(f"{period}: {type(err).__name__}: {err}")
    out = capsys.readouterr()
    if code == 0:  # accepted: then it must be a real report
        assert "Transparency report" in out.out
        return
    _one_line_exit_2(code, out.err)


async def test_cli_notes_not_utf8_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    (await Ledger.open(tmp_path / "data" / "ledger.sqlite3")).close  # noqa: B018
    notes = tmp_path / "notes.md"
    notes.write_bytes(b"\xff\xfe caf\xe9")
    code = main(["report", "-c", str(config), "--period", "2026", "--notes", str(notes)])
    _one_line_exit_2(code, capsys.readouterr().err)


async def test_cli_notes_with_script_are_escaped_in_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    opened = await Ledger.open(tmp_path / "data" / "ledger.sqlite3")
    await opened.close()
    notes = tmp_path / "notes.md"
    notes.write_text("We met.\n\n<script>alert(1)</script><img src=https://evil.example/x>")
    out = tmp_path / "r.html"
    assert (
        main(
            ["report", "-c", str(config), "--period", "2026", "--format", "html", "-o", str(out), "--notes", str(notes)]
        )
        == 0
    )
    html = out.read_text()
    assert "<script>alert" not in html
    assert "<img" not in html
    assert "We met." in html


async def test_cli_corrupt_ledger_is_one_line_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    (tmp_path / "data" / "ledger.sqlite3").write_bytes(b"not a database at all" * 100)
    code = main(["report", "-c", str(config), "--period", "2026"])
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


async def test_cli_json_output_from_an_old_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    opened = await Ledger.open(tmp_path / "data" / "ledger.sqlite3")
    await insert(opened, [row() for _ in range(3)])
    await opened.close()
    capsys.readouterr()
    assert main(["report", "-c", str(config), "--period", "2026H1", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["figures"]["actions"]["team"]["permanent ban"] == 3


async def test_html_has_no_script_as_documented(ledger: Ledger) -> None:
    """report_render/commit: "pygal: pure-Python SVG charts with no script"; the page embeds
    pygal's <script> config blocks nonetheless (js=[] drops only the external script)."""
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row() for _ in range(5)])
    html = render(collect(ledger.path, parse_period("2026"), Labels(), 3), "html")
    assert "<script" not in html.lower()


async def test_the_report_is_one_consistent_snapshot_while_the_bot_writes(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot writes while the report reads: every number of one report must come from the same
    state of the ledger (one read transaction), else e.g. more people banned than bans."""
    await ledger.migrate_feature("transparency", TRANSPARENCY_MIGRATIONS)
    await insert(ledger, [row(subject=f"@p{i}:x") for i in range(4)])
    real_connect = sqlite3.connect
    path = ledger.path

    class Proxy:
        def __init__(self, inner: sqlite3.Connection) -> None:
            self.inner, self.calls = inner, 0

        def execute(self, *args):
            cursor = self.inner.execute(*args)
            self.calls += 1
            if self.calls == 2:  # the bot writes three bans meanwhile (a separate connection)
                writer = real_connect(path, timeout=5)
                writer.executemany(
                    "INSERT INTO infractions (subject, kind, scope, reason, actor, origin, created_at, state,"
                    " updated_at) VALUES (?, 'ban', '*', '', '@m:x', 'command', ?, 'active', ?)",
                    [(f"@new{i}:x", MARCH, MARCH) for i in range(3)],
                )
                writer.commit()
                writer.close()
            return cursor

        def close(self) -> None:
            self.inner.close()

    def connect(*args, **kwargs):
        return Proxy(real_connect(*args, **kwargs))

    monkeypatch.setattr("abusebot.transparency.sqlite3.connect", connect)
    stats = collect(path, parse_period("2026H1"), Labels(), 1)
    bans = stats.figures.actions["team"]["permanent ban"]
    assert stats.figures.people_banned_or_flagged <= bans, (stats.figures.people_banned_or_flagged, bans)
