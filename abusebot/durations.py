"""Durations as moderators type them: ``30s``, ``10m``, ``2h``, ``7d``, ``4w``, sums like ``1h30m``,
and the words people write anyway (``7days``, ``2 days``, ``1hr``, ``30 min``).

A duration is never guessed: text is either a duration it clearly is, or refused. A command
reads its duration with :func:`take_duration`, which also refuses a word that *looks* like a
failed duration (``7dayz``, a bare ``2``), so such a word can never slip into the reason of a
permanent ban.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_SECOND, _MINUTE, _HOUR, _DAY, _WEEK = 1, 60, 3600, 86400, 7 * 86400
#: Every unit word accepted, lower-case. Months and years are left out on purpose: "1m" is a
#: minute, and a month's length is a matter of opinion; write 30d or 4w.
UNITS: dict[str, int] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), _SECOND),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), _MINUTE),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), _HOUR),
    **dict.fromkeys(("d", "day", "days"), _DAY),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), _WEEK),
}
_PART = re.compile(r"(\d{1,9})\s*([a-z]+)", re.ASCII)
_WHOLE = re.compile(r"(?:\d{1,9}\s*[a-z]+\s*)+", re.ASCII)
#: A sanction longer than this is a typo, not a plan; say "permanent" instead.
MAX_SECONDS = 10 * 365 * 86400
EXAMPLES = "e.g. 30m, 2h, 7d, 4w or 2 days"


class DurationError(ValueError):
    """The text is not a duration we accept."""


def parse_duration(text: str) -> int:
    """Return the duration in seconds, or raise :class:`DurationError`.

    >>> parse_duration("1h30m"), parse_duration("2 days"), parse_duration("1hr")
    (5400, 172800, 3600)
    """
    text = text.strip().lower()
    if not text.isascii() or not _WHOLE.fullmatch(text):
        raise DurationError(f"not a duration: {text[:40]!r} ({EXAMPLES})")
    seconds = 0
    for number, unit in _PART.findall(text):
        if unit not in UNITS:
            raise DurationError(f"not a duration: {text[:40]!r}: unknown unit {unit!r} ({EXAMPLES})")
        seconds += int(number) * UNITS[unit]
    if seconds <= 0:
        raise DurationError("a duration must be longer than zero")
    if seconds > MAX_SECONDS:
        raise DurationError("a duration may not exceed 10 years; leave it out for a permanent sanction")
    return seconds


def looks_like_duration(text: str) -> bool:
    """True when ``text`` starts the way a duration does (an ASCII digit): it is one, or a failed one."""
    first = text.strip()[:1]
    return first != "" and first in "0123456789"


def take_duration(words: Sequence[str]) -> tuple[int | None, int]:
    """Read a duration from the start of ``words``: ``(seconds, words used)``, or ``(None, 0)``
    when the words do not start with one. All of it is taken: ``2 days``, ``for 2 days``,
    ``1 hour 30 minutes``.

    Raises :class:`DurationError` when the first word looks like a duration but is not one, or a
    duration-like word follows the duration, so no such word is ever taken for a reason.
    """
    start = 1 if len(words) > 1 and words[0].lower() == "for" and _numeric(words[1]) else 0
    if len(words) <= start or not _numeric(words[start]):
        return None, 0
    if not looks_like_duration(words[start]):
        raise DurationError(f"{words[start][:40]!r}: write a duration with the digits 0-9 ({EXAMPLES})")
    problem: DurationError | None = None
    for count in range(min(len(words) - start, 8), 0, -1):  # the longest duration there is
        try:
            seconds = parse_duration(" ".join(words[start : start + count]))
        except DurationError as err:
            if count == 1:
                problem = err
            continue
        used = start + count
        if used < len(words) and _numeric(words[used]):
            raise DurationError(
                f"{words[used][:40]!r} after the duration looks like a duration but is not one ({EXAMPLES}). "
                "A reason may not start with a number: put a word first."
            )
        return seconds, used
    assert problem is not None
    if "longer than zero" in str(problem) or "10 years" in str(problem):
        raise problem
    raise DurationError(
        f"{words[start][:40]!r} looks like a duration but is not one ({EXAMPLES}). "
        "A reason may not start with a number: put a word first."
    )


def mentions_a_duration(words: Sequence[str]) -> str | None:
    """"for 2 days" inside a reason (a duration written in the wrong place), or ``None``."""
    for index in range(len(words) - 1):
        if words[index].lower() == "for" and _numeric(words[index + 1]):
            try:
                seconds, used = take_duration(words[index:])
            except DurationError:
                continue
            if seconds is not None:
                return " ".join(words[index:used])
    return None


def _numeric(word: str) -> bool:
    """Starts with a digit of any script (a non-ASCII one is refused, never read as a reason)."""
    first = word.strip()[:1]
    return first.isdigit() or first.isdecimal()


def format_duration(seconds: int | float) -> str:
    """Render seconds the way a moderator would write them, largest units first."""
    seconds = int(seconds)
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
