"""Durations as moderators type them: ``30s``, ``10m``, ``2h``, ``7d``, ``4w`` (and sums like ``1h30m``)."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d{1,9})([smhdw])", re.ASCII)
_WHOLE = re.compile(r"(?:\d{1,9}[smhdw])+", re.ASCII)
#: A sanction longer than this is a typo, not a plan; say "permanent" instead.
MAX_SECONDS = 10 * 365 * 86400


class DurationError(ValueError):
    """The text is not a duration we accept."""


def parse_duration(text: str) -> int:
    """Return the duration in seconds, or raise :class:`DurationError`.

    >>> parse_duration("1h30m")
    5400
    """
    text = text.strip().lower()
    if not _WHOLE.fullmatch(text):
        raise DurationError(f"not a duration: {text!r} (use e.g. 30s, 10m, 2h, 7d, 4w)")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if seconds <= 0:
        raise DurationError("a duration must be longer than zero")
    if seconds > MAX_SECONDS:
        raise DurationError("a duration may not exceed 10 years; leave it out for a permanent sanction")
    return seconds


def looks_like_duration(text: str) -> bool:
    """True when ``text`` has the shape of a duration (it may still be out of range)."""
    return bool(_WHOLE.fullmatch(text.strip().lower()))


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
