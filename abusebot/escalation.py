"""The Consequence Escalation Ladder (CEL): one pure function decides the next consequence.

Default ladder: warning → mute 1h → ban 7d → permanent ban. The user's level is the highest ladder
level among their infractions within the decay window that still count (not pardoned, not
failed). The community's rules on top of the ladder:

* a user already warned once by the bot for a minor matter is not warned again (they skip to the
  next rung);
* a user new to the community whose first activity is a *major* violation (a banned phrase,
  invite spam, mass mentions) joined only to break the rules: the top rung (permanent ban) at
  once. A minor one (links, an @room) gets the ordinary first step, like anyone's;
* a user on probation (second chance) goes straight to a permanent ban (the top level);
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
DEFAULT_BURST_SECONDS = 10
#: Infraction states that no longer count toward the ladder.
NOT_COUNTING = frozenset({"pardoned", "failed", "pending"})
#: Infraction kinds that are violations (a note is not).
VIOLATION_KINDS = frozenset({"warning", "mute", "kick", "ban"})
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
    #: True when the step is more than the next rung (the management room is told why).
    skipped: bool = False


@attrs.frozen
class Ladder:
    """The configured ladder and its decay window."""

    steps: tuple[Step, ...] = parse_ladder(DEFAULT_LADDER)
    decay_days: int = DEFAULT_DECAY_DAYS
    #: The bot's own violations of one user closer together than this are one burst: one rung
    #: (the rest is removed, not escalated). Four spam lines in two seconds are one offence.
    burst_seconds: int = DEFAULT_BURST_SECONDS

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
        next_level = min(self.top, self.current_level(history, now_ms) + 1)
        if probation:
            # The policy: on probation the only sanction is a permanent ban, whatever the top
            # rung of this community's ladder is.
            why = "on probation after a second chance: any violation means a permanent ban"
            return Decision(self.top, Step("ban"), why, skipped=next_level < self.top)
        if first_activity and not minor:
            why = "joined only to break the rules: new to the community, and the first activity was a major violation"
            return Decision(self.top, self.steps[-1], why, skipped=next_level < self.top)
        level = next_level
        why = f"ladder level {level} of {self.top}"
        if self.steps[level - 1].kind == "warning" and minor and _warned_by_bot(history) and level < self.top:
            level += 1
            return Decision(
                level, self.steps[level - 1], f"already warned once by the bot: ladder level {level}", skipped=True
            )
        return Decision(level, self.steps[level - 1], why)

    def standing(self, history: Sequence[Infraction], now_ms: int) -> tuple[int, Step]:
        """The user's standing: violations that still count (in the decay window, not pardoned
        or failed), and the step the ladder would take for their next one."""
        horizon = now_ms - self.decay_days * 86_400_000
        count = sum(
            1
            for inf in history
            if inf.kind in VIOLATION_KINDS and inf.state not in NOT_COUNTING and inf.created_at >= horizon
        )
        return count, self.decide(history, now_ms).step

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
