"""The Consequence Escalation Ladder as pure logic over ledger rows."""

from __future__ import annotations

import pytest

from abusebot.escalation import Ladder, LadderError, Step, parse_ladder
from abusebot.ledger import Infraction

DAY = 86_400_000
NOW = 1_000 * DAY


def inf(
    kind: str,
    level: int | None,
    *,
    days_ago: float = 1,
    state: str = "active",
    origin: str = "protection",
    number: int = 1,
) -> Infraction:
    created = int(NOW - days_ago * DAY)
    return Infraction(
        number, "@u:x", kind, "*", "r", None, "actor", origin, created, None, state, {}, level, None, created
    )


LADDER = Ladder()


class TestParseLadder:
    def test_default_rungs(self) -> None:
        """The default ladder is warning, mute 1h, ban 7d, permanent ban."""
        assert LADDER.steps == (Step("warning"), Step("mute", 3600), Step("ban", 7 * 86400), Step("ban"))

    @pytest.mark.parametrize("rungs", [[], ["kick"], ["mute"], ["warning 1h"], ["ban forever"], [3]])
    def test_bad_rungs_are_refused(self, rungs: list[object]) -> None:
        """Unknown kinds, a mute without a duration, a warning with one, and bad durations are refused."""
        with pytest.raises(LadderError):
            parse_ladder(rungs)  # type: ignore[arg-type]


class TestDecide:
    def test_a_clean_user_gets_the_first_rung(self) -> None:
        """No history: a warning, level 1."""
        decision = LADDER.decide([], NOW)
        assert (decision.level, decision.step.kind) == (1, "warning")

    def test_each_offence_climbs_one_rung(self) -> None:
        """After a level-2 mute, the next step is the 7-day ban."""
        decision = LADDER.decide([inf("warning", 1, number=1), inf("mute", 2, number=2)], NOW)
        assert (decision.level, decision.step) == (3, Step("ban", 7 * 86400))

    def test_the_top_rung_is_the_ceiling(self) -> None:
        """Someone already at the top stays at the top."""
        assert LADDER.decide([inf("ban", 4)], NOW).level == 4

    def test_infractions_older_than_the_decay_window_do_not_count(self) -> None:
        """A mute 100 days ago (decay 90) leaves the user clean, apart from the warning rule."""
        decision = LADDER.decide([inf("mute", 2, days_ago=100, origin="command")], NOW)
        assert decision.level == 1

    @pytest.mark.parametrize("state", ["pardoned", "failed", "pending"])
    def test_pardoned_failed_and_pending_infractions_do_not_count(self, state: str) -> None:
        """Only infractions that took effect count toward the ladder."""
        assert LADDER.decide([inf("mute", 2, state=state, origin="command")], NOW).level == 1

    def test_expired_and_lifted_sanctions_still_count(self) -> None:
        """A temporary ban that ran its course is still history within the window."""
        assert LADDER.decide([inf("ban", 3, state="expired")], NOW).level == 4

    def test_the_bot_warns_only_once_for_a_minor_matter(self) -> None:
        """A bot warning long ago (outside the window) still means no second warning: a mute."""
        decision = LADDER.decide([inf("warning", 1, days_ago=400)], NOW, minor=True)
        assert (decision.level, decision.step.kind) == (2, "mute")

    def test_a_moderators_warning_does_not_trigger_the_once_rule(self) -> None:
        """Only the bot's own warnings count for 'warned once by the bot'."""
        decision = LADDER.decide([inf("warning", 1, days_ago=400, origin="command")], NOW, minor=True)
        assert decision.step.kind == "warning"

    def test_joining_only_to_break_the_rules_is_a_permanent_ban(self) -> None:
        """A newcomer's first activity that is a major violation goes straight to the top rung,
        and the decision says it skipped rungs."""
        decision = LADDER.decide([], NOW, first_activity=True, minor=False)
        assert (decision.level, decision.step, decision.skipped) == (4, Step("ban"), True)
        assert "joined only to break the rules" in decision.why

    def test_a_newcomers_minor_first_violation_gets_the_first_rung(self) -> None:
        """Links or an @room as a first message never ban a newcomer: the ordinary first step."""
        decision = LADDER.decide([], NOW, first_activity=True, minor=True)
        assert (decision.level, decision.step, decision.skipped) == (1, Step("warning"), False)

    def test_standing_counts_violations_in_the_window_and_suggests_the_next_step(self) -> None:
        """Two violations within 90 days (a note and a pardoned one do not count): the 3rd rung next."""
        history = [
            inf("warning", 1, days_ago=10),
            inf("mute", 2, days_ago=5),
            inf("note", None, days_ago=1),
            inf("ban", 3, days_ago=2, state="pardoned"),
            inf("warning", 1, days_ago=200),
        ]
        count, step = LADDER.standing(history, NOW)
        assert (count, step) == (2, Step("ban", 7 * 86400))

    def test_probation_means_the_top_rung(self) -> None:
        """Any violation on probation is a permanent ban."""
        assert LADDER.decide([], NOW, probation=True).step == Step("ban")

    def test_moderators_may_start_high_and_the_ladder_continues(self) -> None:
        """After a moderator's 7-day ban (level 3), the next violation is the top rung."""
        level = LADDER.level_for("ban", 7 * 86400)
        assert level == 3
        assert LADDER.decide([inf("ban", level, origin="command")], NOW).level == 4


class TestLevelFor:
    @pytest.mark.parametrize(
        ("kind", "seconds", "level"),
        [
            ("mute", 600, 2),
            ("mute", 3600, 2),
            ("mute", 86400, 2),
            ("ban", 3600, 3),
            ("ban", None, 4),
            ("warning", None, 1),
            ("kick", None, None),
        ],
    )
    def test_a_sanction_maps_to_its_rung(self, kind: str, seconds: int | None, level: int | None) -> None:
        """Mutes are level 2, temporary bans 3, permanent bans 4; kicks are not on the ladder."""
        assert LADDER.level_for(kind, seconds) == level

    def test_describe_next_names_the_following_step(self) -> None:
        """After a warning the notice says a mute of 1h comes next."""
        assert LADDER.describe_next(1) == "If this happens again, the next step is: mute 1h."
