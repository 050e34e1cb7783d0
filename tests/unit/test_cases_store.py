"""The case store's contract on a real ledger, and the pure parts of cases: the members'
grammar, mention words, excerpts, rule citations and the appeal line of notices."""

from __future__ import annotations

import sqlite3

import pytest

from abusebot.audit import cited_rules, user_notice
from abusebot.cases import MIGRATIONS, CaseStore, NewCase, excerpt, mentions_word, parse_appeal
from abusebot.config import Rule
from abusebot.ledger import Ledger


@pytest.fixture
async def store(ledger: Ledger) -> CaseStore:
    await ledger.migrate_feature("cases", MIGRATIONS)
    return CaseStore(ledger)


def modmail(source: str = "$first", user: str = "@amy:x") -> NewCase:
    return NewCase("modmail", "modmail", user, source_key=source, chat_room="!dm:x")


async def test_a_replayed_source_finds_the_case_it_opened(store: CaseStore) -> None:
    first, new = await store.open_case(modmail(), ("$first", "@amy:x", "user", "hello"))
    again, new_again = await store.open_case(modmail(), ("$first", "@amy:x", "user", "hello"))
    assert new
    assert not new_again
    assert again.id == first.id
    assert await store.transcript_counts(first.id) == {"user": 1}
    assert (await store.by_message("$first")) == first


async def test_a_message_of_one_event_is_recorded_once(store: CaseStore) -> None:
    case, _ = await store.open_case(modmail(), ("$first", "@amy:x", "user", "hello"))
    one, new = await store.add_message(case.id, "$second", "@amy:x", "user", "more")
    two, new_again = await store.add_message(case.id, "$second", "@amy:x", "user", "more")
    assert one == two
    assert new
    assert not new_again
    assert await store.transcript_counts(case.id) == {"user": 2}


async def test_cases_and_their_messages_are_never_deleted(store: CaseStore, ledger: Ledger) -> None:
    case, _ = await store.open_case(modmail(), ("$first", "@amy:x", "user", "hello"))
    for sql in ("DELETE FROM cases WHERE id = ?", "DELETE FROM case_messages WHERE case_id = ?"):
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            async with ledger.transaction() as db:
                await db.execute(sql, (case.id,))
    with pytest.raises(sqlite3.IntegrityError, match="cannot change"):
        async with ledger.transaction() as db:
            await db.execute("UPDATE case_messages SET body = 'rewritten' WHERE case_id = ?", (case.id,))
    with pytest.raises(sqlite3.IntegrityError, match="identity"):
        async with ledger.transaction() as db:
            await db.execute("UPDATE cases SET opener = '@someone:x' WHERE id = ?", (case.id,))


async def test_an_outcome_once_set_is_final(store: CaseStore, ledger: Ledger) -> None:
    case, _ = await store.open_case(modmail(), None)
    assert await store.close(case.id, "actioned", "@mod:x", "note", "$cmd")
    assert not await store.close(case.id, "invalid", "@mod:x", "", "$cmd2")
    with pytest.raises(sqlite3.IntegrityError, match="final"):
        async with ledger.transaction() as db:
            await db.execute("UPDATE cases SET outcome = 'invalid' WHERE id = ?", (case.id,))
    closed = await store.get(case.id)
    assert closed is not None
    assert (closed.state, closed.outcome, closed.decided_by_event) == ("closed", "actioned", "$cmd")


async def test_a_closed_case_without_an_outcome_cannot_exist(store: CaseStore, ledger: Ledger) -> None:
    case, _ = await store.open_case(modmail(), None)
    with pytest.raises(sqlite3.IntegrityError):
        async with ledger.transaction() as db:
            await db.execute("UPDATE cases SET state = 'closed' WHERE id = ?", (case.id,))


async def test_one_open_appeal_per_infraction(store: CaseStore) -> None:
    def appeal(source: str) -> NewCase:
        return NewCase("appeal", "modmail", "@amy:x", source_key=source, infraction_id=7, appeal_reason="why")

    first, _ = await store.open_case(appeal("$a"), None)
    with pytest.raises(sqlite3.IntegrityError):
        await store.open_case(appeal("$b"), None)
    assert (await store.open_appeal_of(7)) == first
    await store.close(first.id, "upheld", "@mod:x", "", "$cmd")
    second, new = await store.open_case(appeal("$c"), None)
    assert new
    assert second.id != first.id


async def test_only_a_reply_sets_the_time_of_the_first_answer(store: CaseStore) -> None:
    case, _ = await store.open_case(modmail(), ("$first", "@amy:x", "user", "hello"))
    await store.add_message(case.id, "$note", "@mod:x", "note", "internal")
    assert (await store.get(case.id)).first_answer_at is None  # type: ignore[union-attr]
    await store.add_message(case.id, "$reply", "@mod:x", "reply", "answer")
    answered = (await store.get(case.id)).first_answer_at  # type: ignore[union-attr]
    await store.add_message(case.id, "$reply2", "@mod:x", "reply", "again")
    assert answered is not None
    assert (await store.get(case.id)).first_answer_at == answered  # type: ignore[union-attr]


async def test_infractions_of_a_case_are_linked_ones_and_those_its_thread_commands_made(
    store: CaseStore, ledger: Ledger
) -> None:
    case, _ = await store.open_case(modmail(), None)
    by_hand = await ledger.add_infraction(
        subject="@bob:x", kind="note", scope="*", reason="r", actor="@m:x", origin="command"
    )
    from_thread = await ledger.add_infraction(
        subject="@bob:x", kind="warning", scope="*", reason="r", actor="@m:x", origin="command", source_event="$cmd"
    )
    await ledger.add_infraction(
        subject="@bob:x", kind="warning", scope="*", reason="r", actor="@m:x", origin="command", source_event="$other"
    )
    assert await store.link(case.id, by_hand.id, "@m:x")
    assert not await store.link(case.id, by_hand.id, "@m:x")
    await store.command_in_thread("$cmd", case.id)
    assert [i for i, _, _ in await store.infractions(case.id)] == [by_hand.id, from_thread.id]


async def test_people_named_and_reporters_are_kept_once_each(store: CaseStore) -> None:
    report = NewCase(
        "report",
        "report",
        "@r1:x",
        source_key="$rep",
        subject_room="!room:x",
        subject_event="$bad",
        named=("@bad:x",),
        reporters=("@r1:x",),
    )
    case, _ = await store.open_case(report, None)
    assert await store.add_person(case.id, "@r2:x", "reporter", "@r2:x")
    assert not await store.add_person(case.id, "@r2:x", "reporter", "@r2:x")
    assert await store.people(case.id) == {"named": ["@bad:x"], "reporter": ["@r1:x", "@r2:x"]}
    assert (await store.open_report_of("!room:x", "$bad")) == case
    assert (await store.open_report_of("!other:x", "$bad")) is None


async def test_blocking_is_state_that_can_be_lifted(store: CaseStore) -> None:
    assert await store.block("@amy:x", "@mod:x", "abusive")
    assert not await store.block("@amy:x", "@mod:x", "again")
    assert await store.blocked("@amy:x")
    assert await store.unblock("@amy:x")
    assert not await store.unblock("@amy:x")
    assert not await store.blocked("@amy:x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("appeal #42 I did nothing wrong", (42, "I did nothing wrong")),
        ("Appeal 42: it was a joke", (42, "it was a joke")),
        ("APPEAL #42", (42, "")),
        ("appeal I was only answering", (None, "I was only answering")),
        ("appeal", (None, "")),
        ("appeal: 7 - sorry\nsecond line", (7, "sorry\nsecond line")),
        ("appeal 42nd street", (None, "42nd street")),
    ],
)
def test_the_appeal_grammar(text: str, expected: tuple[int | None, str]) -> None:
    request = parse_appeal(text)
    assert request is not None
    assert (request.infraction_id, request.reason) == expected


@pytest.mark.parametrize("text", ["appealing to reason", "I want to appeal #4", "appeal-worthy", "hello"])
def test_text_that_is_not_an_appeal(text: str) -> None:
    assert parse_appeal(text) is None


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("@moderators help", True),
        ("hey @Moderators!", True),
        ("(@moderators)", True),
        ("@moderators_team", False),
        ("@moderators:example.org is a user", False),
        ("mail moderators@example.org", False),
        ("x@moderators", False),
        ("nothing", False),
    ],
)
def test_mention_words_are_whole_words(text: str, found: bool) -> None:
    assert (mentions_word(text, ["@moderators"]) is not None) is found


def test_an_excerpt_is_one_line_without_invisible_characters() -> None:
    text = "line one\nline\u202e two\u200b " + "x" * 1000
    cut = excerpt(text, 50)
    assert "\n" not in cut
    assert "\u202e" not in cut
    assert "\u200b" not in cut
    assert len(cut) == 50
    assert cut.endswith("…")


RULES = (Rule("1", "Be respectful", "https://e.org/coc#1"), Rule("spam", "No spam"))


def test_rules_named_in_a_reason_are_cited() -> None:
    assert cited_rules("breaking rule 1 and Rule #spam.", RULES) == list(RULES)
    assert cited_rules("rules 10", RULES) == []
    assert cited_rules("", RULES) == []


def test_a_sanction_notice_ends_with_how_to_appeal_it_when_modmail_reads_it() -> None:
    notice = user_notice(
        kind="ban",
        where="Python",
        reason="rule 1",
        duration_s=None,
        rules_url=None,
        infraction_id=42,
        appeal=True,
        rules=RULES,
    )
    assert notice.plain.splitlines()[-1] == (
        "If you believe this was a mistake, you may appeal: reply here with appeal #42 <why>"
    )
    assert "Rule 1 (Be respectful): https://e.org/coc#1" in notice.plain
    assert "not read" not in notice.plain
    closed = user_notice(
        kind="ban", where="Python", reason="r", duration_s=None, rules_url=None, infraction_id=42, appeal=False
    )
    assert "replies to this message are not read" in closed.plain
    assert "appeal #" not in closed.plain
    lifted = user_notice(
        kind="unban", where="Python", reason="r", duration_s=None, rules_url=None, infraction_id=None, appeal=True
    )
    assert "appeal" not in lifted.plain


async def test_the_second_chance_migration_keeps_every_case_and_its_guards(ledger: Ledger) -> None:
    await ledger.migrate_feature("cases", MIGRATIONS[:1])
    cases = CaseStore(ledger)
    old, _ = await cases.open_case(modmail(), ("$first", "@amy:x", "user", "hello"))
    await cases.add_message(old.id, "$second", "@amy:x", "user", "more")
    await ledger.migrate_feature("cases", MIGRATIONS)
    assert await ledger.fetch("PRAGMA foreign_key_check") == []
    assert await cases.get(old.id) == old
    assert await cases.transcript_counts(old.id) == {"user": 2}
    new, _ = await cases.open_case(
        NewCase("second_chance", "modmail", "@amy:x", source_key="$ask", chat_room="!dm:x", infraction_id=7),
        ("$ask", "@amy:x", "user", "second chance please"),
    )
    assert new.id == old.id + 1
    with pytest.raises(sqlite3.IntegrityError):  # one open request per person
        await cases.open_case(
            NewCase("second_chance", "modmail", "@amy:x", source_key="$again", chat_room="!dm:x"), None
        )
    assert await cases.close(new.id, "granted", "votes", "", None)
    with pytest.raises(sqlite3.IntegrityError, match="final"):
        async with ledger.transaction() as db:
            await db.execute("UPDATE cases SET outcome = 'denied' WHERE id = ?", (new.id,))
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        async with ledger.transaction() as db:
            await db.execute("DELETE FROM cases WHERE id = ?", (old.id,))
