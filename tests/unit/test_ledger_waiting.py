"""Encrypted events waiting for their keys: kept in the ledger across restarts, bounded, handed
back by session and forgotten only once handled."""

from __future__ import annotations

from abusebot.ledger import Ledger


def envelope(n: int, session: str) -> dict[str, object]:
    return {"type": "m.room.encrypted", "event_id": f"$e{n}", "content": {"session_id": session}}


async def test_waiting_events_come_back_by_session_oldest_first_until_forgotten(ledger: Ledger) -> None:
    for n, session in enumerate(["a", "b", "a"]):
        await ledger.add_waiting(f"$e{n}", "!r:x", session, envelope(n, session), keep=100)
    back = await ledger.waiting_for({"a"})
    assert [(room, raw["event_id"]) for room, raw in back] == [("!r:x", "$e0"), ("!r:x", "$e2")]
    assert await ledger.waiting_for({"a"}) == back  # still there: a crash before handling loses nothing
    await ledger.forget_waiting(["$e0", "$e2"])
    assert await ledger.waiting_for({"a"}) == []
    assert [raw["event_id"] for _, raw in await ledger.waiting_for({"b"})] == ["$e1"]
    assert await ledger.waiting_count() == 1


async def test_waiting_events_are_bounded_the_oldest_dropped(ledger: Ledger) -> None:
    for n in range(30):
        await ledger.add_waiting(f"$e{n}", "!r:x", f"s{n}", envelope(n, f"s{n}"), keep=10)
    assert await ledger.waiting_count() == 10
    assert [raw["event_id"] for _, raw in await ledger.waiting_for({"s0", "s29"})] == ["$e29"]


async def test_the_same_event_kept_twice_is_one_row(ledger: Ledger) -> None:
    await ledger.add_waiting("$e1", "!r:x", "a", envelope(1, "a"), keep=10)
    await ledger.add_waiting("$e1", "!r:x", "a", envelope(1, "a"), keep=10)
    assert await ledger.waiting_count() == 1
