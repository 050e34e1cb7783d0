from __future__ import annotations

import pytest

from abusebot.durations import (
    MAX_SECONDS,
    DurationError,
    format_duration,
    looks_like_duration,
    parse_duration,
    take_duration,
)


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 604800), ("4w", 2419200)],
    )
    def test_single_units(self, text: str, seconds: int) -> None:
        """Each unit a moderator may type converts to the right number of seconds."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("1h30m", 5400), ("1d12h", 129600), ("1w1d1h1m1s", 604800 + 86400 + 3600 + 60 + 1), ("30m1h", 5400)],
    )
    def test_sums(self, text: str, seconds: int) -> None:
        """Concatenated parts add up, in any order."""
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("7days", 604800),
            ("2 days", 172800),
            ("1hr", 3600),
            ("30 min", 1800),
            ("5min", 300),
            ("1 hour", 3600),
            ("90 minutes", 5400),
            ("2 weeks", 1209600),
            ("1h 30m", 5400),
            ("45 secs", 45),
        ],
    )
    def test_words_people_write(self, text: str, seconds: int) -> None:
        """The forms moderators type anyway are read as the duration they clearly mean."""
        assert parse_duration(text) == seconds

    def test_case_and_surrounding_space_are_ignored(self) -> None:
        """Upper-case units and surrounding whitespace are accepted."""
        assert parse_duration("  2H\n") == 7200

    @pytest.mark.parametrize("text", ["0s", "0m", "0h0m", "000d"])
    def test_rejects_zero(self, text: str) -> None:
        """A duration of zero is refused."""
        with pytest.raises(DurationError, match="longer than zero"):
            parse_duration(text)

    @pytest.mark.parametrize("text", ["-5m", "-1h", "+5m"])
    def test_rejects_signs(self, text: str) -> None:
        """Negative (or explicitly signed) durations are refused."""
        with pytest.raises(DurationError, match="not a duration"):
            parse_duration(text)

    @pytest.mark.parametrize("text", ["1.5h", "0.5d", "1e3s", "1,5h"])
    def test_rejects_fractions(self, text: str) -> None:
        """Fractional or scientific numbers are refused."""
        with pytest.raises(DurationError, match="not a duration"):
            parse_duration(text)

    @pytest.mark.parametrize("text", ["1y", "3mo", "2ms", "7dayz", "1month", "10", "h", "m1", "2 d a y s"])
    def test_rejects_unknown_units(self, text: str) -> None:
        """Units other than seconds, minutes, hours, days and weeks (and missing units or numbers) are refused."""
        with pytest.raises(DurationError, match="not a duration"):
            parse_duration(text)

    @pytest.mark.parametrize("text", ["3651d", "522w", f"{MAX_SECONDS + 1}s", "999999999w"])
    def test_rejects_more_than_ten_years(self, text: str) -> None:
        """Anything longer than ten years is refused as a typo."""
        with pytest.raises(DurationError, match="10 years"):
            parse_duration(text)

    def test_accepts_exactly_ten_years(self) -> None:
        """The ten-year limit itself is allowed."""
        assert parse_duration(f"{MAX_SECONDS}s") == MAX_SECONDS

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "   ",
            "1h\x0030m",
            "1h;DROP TABLE infractions",
            "9999999999s",
            "1" * 10000 + "s",
            "１０m",  # fullwidth digits
            "١h",  # Arabic-Indic digit
            "𝟗s",  # mathematical bold digit
            "1h\u200b",  # zero-width space
            "1ｈ",  # fullwidth unit
            "NaNs",
            "infs",
        ],
    )
    def test_rejects_hostile_strings(self, text: str) -> None:
        """Whitespace, control characters, huge numbers and non-ASCII digits or units are refused."""
        with pytest.raises(DurationError):
            parse_duration(text)


class TestLooksLikeDuration:
    def test_out_of_range_still_looks_like_a_duration(self) -> None:
        """A well-shaped but too long duration has the shape of one (so `ban` reports it, not eats it)."""
        assert looks_like_duration("9999w")

    @pytest.mark.parametrize("text", ["spam", "١h", "", "𝟗s"])
    def test_words_do_not(self, text: str) -> None:
        """Reason words and non-ASCII digits do not look like durations."""
        assert not looks_like_duration(text)

    @pytest.mark.parametrize("text", ["1y", "7dayz", "2", "3rd"])
    def test_failed_durations_still_look_like_one(self, text: str) -> None:
        """A word starting with a digit looks like a duration, so a command refuses it rather than
        taking it as the start of a reason."""
        assert looks_like_duration(text)


class TestTakeDuration:
    @pytest.mark.parametrize(
        ("words", "expected"),
        [
            ("7days test ban", (604800, 1)),
            ("2 days spamming", (172800, 2)),
            ("for 2 days spamming", (172800, 3)),
            ("1hr", (3600, 1)),
            ("30 min calm down", (1800, 2)),
            ("2d 3h", (183600, 2)),
            ("spamming for 2 days", (None, 0)),
            ("", (None, 0)),
            ("for the spam", (None, 0)),
        ],
    )
    def test_reads_the_duration_at_the_start(self, words: str, expected: tuple[int | None, int]) -> None:
        """The duration is read from the start (one, two or three words); a reason is left alone."""
        assert take_duration(words.split()) == expected

    @pytest.mark.parametrize("words", ["7dayz test", "2 spamming", "3rd strike", "15 minuts", "for 2 dayz"])
    def test_a_failed_duration_is_refused_not_eaten(self, words: str) -> None:
        """A first word that looks like a duration but is not one is refused."""
        with pytest.raises(DurationError, match="looks like a duration"):
            take_duration(words.split())

    @pytest.mark.parametrize(
        ("words", "expected"),
        [
            ("1 hour 30 minutes spam", (5400, 4)),
            ("1h 30m 15s", (5415, 3)),
            ("2 days 3 hours", (183600, 4)),
            ("2 weeks 3 days", (1468800, 4)),
        ],
    )
    def test_the_whole_duration_is_taken(self, words: str, expected: tuple[int, int]) -> None:
        """A duration written in several words is read whole, never cut short into the reason."""
        assert take_duration(words.split()) == expected

    @pytest.mark.parametrize("words", ["７d spam", "٢d spam", "1h 15x spam"])
    def test_other_digits_and_a_number_after_the_duration_are_refused(self, words: str) -> None:
        """Full-width or Arabic-Indic digits, and a number right after the duration, are refused."""
        with pytest.raises(DurationError):
            take_duration(words.split())

    def test_out_of_range_says_why(self) -> None:
        """Too long is reported as too long."""
        with pytest.raises(DurationError, match="10 years"):
            take_duration(["9999w", "spam"])


class TestFormatDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(30, "30s"), (600, "10m"), (5400, "1h30m"), (604800 + 86400 + 3661, "1w1d1h1m1s"), (0, "0s"), (-5, "0s")],
    )
    def test_renders_largest_units_first(self, seconds: int, text: str) -> None:
        """Seconds render with the largest units first, and nothing positive renders as 0s."""
        assert format_duration(seconds) == text

    @pytest.mark.parametrize("seconds", [1, 59, 60, 61, 3599, 3600, 86399, 86400, 604799, 604800, 1234567, MAX_SECONDS])
    def test_round_trips_through_parse(self, seconds: int) -> None:
        """Whatever format_duration renders, parse_duration reads back to the same number of seconds."""
        assert parse_duration(format_duration(seconds)) == seconds

    @pytest.mark.parametrize("text", ["30s", "10m", "2h", "6d", "4w", "1w2d3h4m5s"])
    def test_canonical_text_round_trips(self, text: str) -> None:
        """A canonical duration string survives parse then format unchanged."""
        assert format_duration(parse_duration(text)) == text
