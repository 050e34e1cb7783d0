"""Join wave: many *distinct* new members in a room at once — alert, and optionally close the door
a while. One user leaving and re-joining over and over is not a wave: it is that user's abuse,
handled like a flood (a violation of theirs), and never a reason to close the room to everyone."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from abusebot.events import Event
from protections import Alert, Context, Evidence, Intent, LockRoom, Protection, Violation
from protections._window import Windows, event_time


@attrs.frozen
class JoinWaveSettings:
    """More than ``max_joins`` distinct new members in ``per_seconds``: alert; with ``lock``,
    invite-only for ``lock_seconds`` (then the previous join rule comes back). One user joining
    more than ``max_rejoins`` times in ``per_seconds`` breaks a rule of its own."""

    max_joins: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    per_seconds: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    lock: bool = True
    lock_seconds: int = attrs.field(default=600, validator=attrs.validators.ge(1))
    max_rejoins: int = attrs.field(default=5, validator=attrs.validators.ge(1))


class JoinWave(Protection):
    """Counts distinct new members per room (not profile changes) and reacts to a wave; counts
    one user's re-joins and reports their churn as a violation."""

    name = "join_wave"
    description = (
        "more than max_joins distinct new members in per_seconds: alert and (lock: true) invite-only for a while; "
        "one user joining more than max_rejoins times in per_seconds: a violation of theirs"
    )
    Settings = JoinWaveSettings
    event_types = frozenset({"m.room.member"})

    def __init__(self) -> None:
        self.joins = Windows()
        self.rejoins = Windows()
        self._quiet_until: dict[str, float] = {}
        self._churn_quiet_until: dict[tuple[str, str], float] = {}

    async def check(self, event: Event, settings: JoinWaveSettings, ctx: Context) -> Sequence[Intent]:
        """Count a new join; on a wave, alert once and lock the room; on churn, a violation."""
        # A displayname or avatar change is also membership "join": only count real arrivals.
        if event.membership != "join" or event.prev_membership == "join":
            return []
        now = ctx.now()
        at = event_time(event.origin_server_ts, now)
        member = event.state_key or event.sender
        churn_key = (event.room_id, member)
        if self._churn_quiet_until.get(churn_key, 0) > now:
            return []  # the same churn, already reported: one burst is one violation
        churn = self.rejoins.add(churn_key, at, event.event_id, settings.per_seconds)
        if len(churn) > settings.max_rejoins:
            self.rejoins.clear(churn_key)
            self._churn_quiet_until[churn_key] = now + settings.per_seconds
            return [
                Violation(
                    rule=f"join flood: joined more than {settings.max_rejoins} times in {settings.per_seconds:g}s",
                    user=member,
                    room_id=event.room_id,
                    evidence=Evidence(event.event_id, f"{len(churn)} joins in {settings.per_seconds:g}s"),
                    redact=False,
                )
            ]
        window = self.joins.add(event.room_id, at, member, settings.per_seconds)
        distinct = len({item for _, item in window})
        if distinct <= settings.max_joins or self._quiet_until.get(event.room_id, 0) > now:
            return []
        self.joins.clear(event.room_id)
        self._quiet_until[event.room_id] = now + settings.per_seconds
        label = ctx.room(event.room_id).name or event.room_id
        text = f"join wave in {label}: {distinct} new members within {settings.per_seconds:g}s"
        intents: list[Intent] = [Alert(event.room_id, text)]
        if settings.lock:
            intents.append(LockRoom(event.room_id, settings.lock_seconds, text))
        return intents
