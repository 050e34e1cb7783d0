"""Join wave: new joins per room; profile changes do not count."""

from __future__ import annotations

from protections import Alert, LockRoom, Violation
from protections.join_wave import JoinWave, JoinWaveSettings
from tests.unit.protections.helpers import FakeContext, member

SETTINGS = JoinWaveSettings(max_joins=3, per_seconds=60, lock=True, lock_seconds=120)


class TestJoinWave:
    async def test_joins_up_to_the_limit_pass(self) -> None:
        """Three joins with a limit of three raise nothing."""
        wave, ctx = JoinWave(), FakeContext()
        intents = [i for n in range(3) for i in await wave.check(member(f"@u{n}:x"), SETTINGS, ctx)]
        assert intents == []

    async def test_a_wave_alerts_and_locks_once(self) -> None:
        """The fourth join raises an alert and a lock; further joins in the wave raise nothing more."""
        wave, ctx = JoinWave(), FakeContext()
        intents = [i for n in range(8) for i in await wave.check(member(f"@u{n}:x"), SETTINGS, ctx)]
        assert [type(i) for i in intents] == [Alert, LockRoom]
        assert intents[1].seconds == 120

    async def test_without_lock_only_alerts(self) -> None:
        """lock: false gives the alert alone."""
        wave, ctx = JoinWave(), FakeContext()
        settings = JoinWaveSettings(max_joins=1, per_seconds=60, lock=False)
        intents = [i for n in range(2) for i in await wave.check(member(f"@u{n}:x"), settings, ctx)]
        assert [type(i) for i in intents] == [Alert]

    async def test_profile_changes_are_not_joins(self) -> None:
        """Display-name changes (join after join) never count toward a wave."""
        wave, ctx = JoinWave(), FakeContext()
        intents = [i for n in range(10) for i in await wave.check(member(f"@u{n}:x", prev="join"), SETTINGS, ctx)]
        assert intents == []

    async def test_joins_spread_over_time_are_not_a_wave(self) -> None:
        """Ten joins thirty seconds apart stay under three per minute."""
        wave, ctx = JoinWave(), FakeContext()
        intents = []
        for n in range(10):
            intents += await wave.check(member(f"@u{n}:x"), SETTINGS, ctx)
            ctx.clock += 30
        assert intents == []

    async def test_rooms_are_counted_separately(self) -> None:
        """Joins in different rooms do not add up."""
        wave, ctx = JoinWave(), FakeContext()
        intents = [i for n in range(6) for i in await wave.check(member(f"@u{n}:x", room=f"!r{n % 2}"), SETTINGS, ctx)]
        assert intents == []

    async def test_a_wave_counts_distinct_members(self) -> None:
        """One user joining twenty times is not a wave: no alert, no lock."""
        wave, ctx = JoinWave(), FakeContext()
        intents = [i for _ in range(20) for i in await wave.check(member("@churn:x"), SETTINGS, ctx)]
        assert not [i for i in intents if isinstance(i, Alert | LockRoom)]

    async def test_one_users_rejoins_are_their_violation_once(self) -> None:
        """Twenty re-joins of one user within the window: one violation of theirs, nothing redacted."""
        wave, ctx = JoinWave(), FakeContext()
        settings = JoinWaveSettings(max_joins=3, per_seconds=60, max_rejoins=5)
        intents = [i for _ in range(20) for i in await wave.check(member("@churn:x"), settings, ctx)]
        assert [type(i) for i in intents] == [Violation]
        assert intents[0].user == "@churn:x"
        assert intents[0].redact is False

    async def test_rejoins_after_the_window_are_a_new_violation(self) -> None:
        """Churn again after the window has passed is reported again."""
        wave, ctx = JoinWave(), FakeContext()
        settings = JoinWaveSettings(max_joins=3, per_seconds=60, max_rejoins=2)
        first = [i for _ in range(3) for i in await wave.check(member("@churn:x"), settings, ctx)]
        ctx.clock += 61
        second = [i for _ in range(3) for i in await wave.check(member("@churn:x"), settings, ctx)]
        assert len(first) == len(second) == 1
