"""The Consequence Escalation Ladder (CEL): one pure function decides the next consequence.

Default ladder: warning → mute 1h → ban 7d → permanent ban. The user's level is the highest ladder
level among their infractions within the decay window that still count (not pardoned, not
failed). The community's rules on top of the ladder:

* a user already warned once by the bot for a minor matter is not warned again (they skip to the
  next rung);
* a user whose first activity after joining is a violation joined only to break the rules: the
  top rung (permanent ban) at once;
* a user on probation (second chance) goes straight to the top rung;
* moderators may start at any level: their ``!mod mute`` / ``!mod ban`` record the level that
  sanction stands for (:func:`level_for`), and the ladder continues from there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs

from abusebot.durations import DurationError, format_duration, parse_duration
from abusebot.ledger import Infraction

DEFAULT_LADDER = ("warning", "mute 1h", "ban 7d", "ban")
DEFAULT_DECAY_DAYS = 90
#: Infraction states that no longer count toward the ladder.
NOT_COUNTING = frozenset({"pardoned", "failed", "pending"})
_STEP = re.compile(r"^(warning|mute|ban)(?:\s+(\S+))?$")


@attrs.frozen
class Step:
    """One rung: a kind and, for mutes and bans, a duration (``None`` = permanent)."""

    kind: str
    duration_s: int | None = None

    def __str__(self) -> str:
        if self.kind == "warning":
            return "warning"
        if self.duration_s is None:
            return f"permanent {self.kind}"
        return f"{self.kind} {format_duration(self.duration_s)}"


class LadderError(ValueError):
    """A ladder rung is not ``warning``, ``mute <duration>``, ``ban <duration>`` or ``ban``."""


def parse_ladder(rungs: Iterable[str]) -> tuple[Step, ...]:
    """Parse rungs like ``["warning", "mute 1h", "ban 7d", "ban"]``."""
    steps: list[Step] = []
    for index, rung in enumerate(rungs):
        match = _STEP.match(rung.strip().lower()) if isinstance(rung, str) else None
        if not match:
            raise LadderError(f"rung {index}: expected 'warning', 'mute <duration>', 'ban <duration>' or 'ban'")
        kind, duration = match.groups()
        if kind == "warning" and duration:
            raise LadderError(f"rung {index}: a warning has no duration")
        if kind == "mute" and not duration:
            raise LadderError(f"rung {index}: a mute needs a duration (e.g. 'mute 1h')")
        try:
            seconds = parse_duration(duration) if duration else None
        except DurationError as err:
            raise LadderError(f"rung {index}: {err}") from err
        steps.append(Step(kind, seconds))
    if not steps:
        raise LadderError("the ladder needs at least one rung")
    return tuple(steps)


@attrs.frozen
class Decision:
    """The consequence chosen: the rung's 1-based level, the step, and why."""

    level: int
    step: Step
    why: str


@attrs.frozen
class Ladder:
    """The configured ladder and its decay window."""

    steps: tuple[Step, ...] = parse_ladder(DEFAULT_LADDER)
    decay_days: int = DEFAULT_DECAY_DAYS

    @property
    def top(self) -> int:
        """The highest level (a permanent ban in the default ladder)."""
        return len(self.steps)

    def current_level(self, history: Iterable[Infraction], now_ms: int) -> int:
        """The highest ladder level among infractions that still count (0 = clean)."""
        horizon = now_ms - self.decay_days * 86_400_000
        levels = [
            inf.level
            for inf in history
            if inf.level is not None and inf.state not in NOT_COUNTING and inf.created_at >= horizon
        ]
        return max(levels, default=0)

    def decide(
        self,
        history: Sequence[Infraction],
        now_ms: int,
        *,
        minor: bool = True,
        first_activity: bool = False,
        probation: bool = False,
    ) -> Decision:
        """The next consequence for a user with ``history`` (any order) who just violated a rule."""
        if probation:
            return Decision(self.top, self.steps[-1], "on probation: any violation means the top of the ladder")
        if first_activity:
            return Decision(self.top, self.steps[-1], "joined only to break the rules (first activity was a violation)")
        level = min(self.top, self.current_level(history, now_ms) + 1)
        why = f"ladder level {level} of {self.top}"
        if self.steps[level - 1].kind == "warning" and minor and _warned_by_bot(history) and level < self.top:
            level += 1
            why = f"already warned once by the bot: ladder level {level} of {self.top}"
        return Decision(level, self.steps[level - 1], why)

    def level_for(self, kind: str, duration_s: int | None) -> int | None:
        """The ladder level a moderator's sanction stands for (first rung of that kind and duration)."""
        candidates = [i + 1 for i, step in enumerate(self.steps) if step.kind == kind]
        if not candidates:
            return None
        if kind == "ban" and duration_s is None:
            permanent = [i + 1 for i, s in enumerate(self.steps) if s.kind == "ban" and s.duration_s is None]
            return permanent[0] if permanent else self.top
        for level in candidates:  # the first rung at least as heavy as what the moderator chose
            step = self.steps[level - 1]
            if step.duration_s is None or duration_s is None or step.duration_s >= duration_s:
                return level
        return candidates[-1]

    def describe_next(self, level: int) -> str:
        """What happens next time, for the user's notice."""
        if level >= self.top:
            return "This is the last step of our ladder."
        return f"If this happens again, the next step is: {self.steps[level]}."


def _warned_by_bot(history: Iterable[Infraction]) -> bool:
    return any(
        inf.kind == "warning" and inf.origin == "protection" and inf.state not in ("pardoned", "failed")
        for inf in history
    )
