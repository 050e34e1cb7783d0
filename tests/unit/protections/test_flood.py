"""Flood: sliding windows per room and across rooms, on intents only."""

from __future__ import annotations

from protections import Violation
from protections.flood import Flood, FloodSettings
from tests.unit.protections.helpers import FakeContext, member, message

SETTINGS = FloodSettings(max_messages=3, per_seconds=10, cross_room_max_messages=5)


async def burst(
    protection: Flood, ctx: FakeContext, count: int, *, room: str = "!a", step: float = 1.0, sender: str = "@u:x"
) -> list[object]:
    intents: list[object] = []
    for _ in range(count):
        intents += await protection.check(message(sender, room=room), SETTINGS, ctx)
        ctx.clock += step
    return intents


class TestFlood:
    async def test_messages_under_the_limit_pass(self) -> None:
        """Three messages in ten seconds with a limit of three is fine."""
        assert await burst(Flood(), FakeContext(), 3) == []

    async def test_one_over_the_limit_is_a_violation_that_redacts_the_burst(self) -> None:
        """The fourth message is a violation whose redactions cover the whole burst."""
        intents = await burst(Flood(), FakeContext(), 4)
        assert len(intents) == 1
        assert isinstance(intents[0], Violation)
        assert len(intents[0].also_redact) == 3

    async def test_a_burst_is_reported_once(self) -> None:
        """After triggering, the window restarts: five messages give one violation, not two."""
        assert len(await burst(Flood(), FakeContext(), 5)) == 1

    async def test_slow_messages_never_flood(self) -> None:
        """Fifty messages four seconds apart stay under three per ten seconds."""
        assert await burst(Flood(), FakeContext(), 50, step=4.0) == []

    async def test_windows_are_per_user(self) -> None:
        """Two users sharing a room have separate windows."""
        flood, ctx = Flood(), FakeContext()
        intents = []
        for i in range(6):
            intents += await flood.check(message(f"@u{i % 2}:x", room="!a"), SETTINGS, ctx)
        assert intents == []

    async def test_messages_across_rooms_add_up(self) -> None:
        """Six messages spread over three rooms exceed the cross-room limit of five."""
        flood, ctx = Flood(), FakeContext()
        intents = []
        for i in range(6):
            intents += await flood.check(message("@u:x", room=f"!r{i % 3}"), SETTINGS, ctx)
        assert len(intents) == 1
        assert "across rooms" in intents[0].rule
        assert len(intents[0].also_redact) + len(intents[0].also_redact_elsewhere) == 5

    async def test_replayed_backlog_is_counted_at_its_own_time(self) -> None:
        """Old messages replayed after a restart (a minute apart in reality) are not a flood."""
        flood, ctx = Flood(), FakeContext(now=10_000.0)
        intents = []
        for i in range(20):
            old = int((5_000 + i * 60) * 1000)
            intents += await flood.check(message("@u:x", ts=old), SETTINGS, ctx)
        assert intents == []

    async def test_future_timestamps_do_not_spread_a_live_flood(self) -> None:
        """A sender claiming timestamps an hour apart, all arriving now, is still flooding."""
        flood, ctx = Flood(), FakeContext(now=10_000.0)
        intents = []
        for i in range(4):
            intents += await flood.check(message("@u:x", ts=int((10_000 + 3600 * i) * 1000)), SETTINGS, ctx)
        assert len(intents) == 1

    def test_flood_ignores_redactions_state_and_membership(self) -> None:
        """Only messages and stickers are counted (Draupnir#187, #805)."""
        assert {"m.room.message", "m.sticker"} <= Flood.event_types
        assert not Flood.event_types & {"m.room.redaction", "m.reaction", "m.room.member"}
        assert member("@u:x").type not in Flood.event_types

    async def test_a_flood_in_one_room_removes_the_burst_in_the_others(self) -> None:
        """The violation in room A also removes the user's messages of the window in room B."""
        flood, ctx = Flood(), FakeContext()
        in_b = [message("@u:x", room="!b") for _ in range(2)]
        for event in in_b:
            assert await flood.check(event, SETTINGS, ctx) == []
        [violation] = await burst(flood, ctx, 4, room="!a", step=0.1)
        assert isinstance(violation, Violation)
        assert {eid for room, eid in violation.also_redact_elsewhere if room == "!b"} == {e.event_id for e in in_b}
        assert len(violation.also_redact) == 3

    async def test_a_flood_is_a_stream_to_stop_first_and_sweep(self) -> None:
        """A flood's violation asks the executor to stop the stream first and sweep the burst's
        rest for the window (a single spam message does not: its redaction goes first)."""
        [violation] = await burst(Flood(), FakeContext(), 4)
        assert isinstance(violation, Violation)
        assert violation.sweep_s == SETTINGS.per_seconds
