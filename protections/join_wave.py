"""Join wave: many new members in a room at once — alert, and optionally close the door a while."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from abusebot.events import Event
from protections import Alert, Context, Intent, LockRoom, Protection
from protections._window import Windows, event_time


@attrs.frozen
class JoinWaveSettings:
    """More than ``max_joins`` new joins in ``per_seconds``: alert; with ``lock``, invite-only for
    ``lock_seconds`` (then the previous join rule comes back)."""

    max_joins: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    per_seconds: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    lock: bool = True
    lock_seconds: int = attrs.field(default=600, validator=attrs.validators.ge(1))


class JoinWave(Protection):
    """Counts new joins per room (not profile changes) and reacts to a wave."""

    name = "join_wave"
    description = "more than max_joins joins in per_seconds: alert and (lock: true) invite-only for a while"
    Settings = JoinWaveSettings
    event_types = frozenset({"m.room.member"})

    def __init__(self) -> None:
        self.joins = Windows()
        self._quiet_until: dict[str, float] = {}

    async def check(self, event: Event, settings: JoinWaveSettings, ctx: Context) -> Sequence[Intent]:
        """Count a new join; on a wave, alert once and lock the room."""
        # A displayname or avatar change is also membership "join": only count real arrivals.
        if event.membership != "join" or event.prev_membership == "join":
            return []
        now = ctx.now()
        at = event_time(event.origin_server_ts, now)
        window = self.joins.add(event.room_id, at, event.state_key or event.sender, settings.per_seconds)
        if len(window) <= settings.max_joins or self._quiet_until.get(event.room_id, 0) > now:
            return []
        self.joins.clear(event.room_id)
        self._quiet_until[event.room_id] = now + settings.per_seconds
        label = ctx.room(event.room_id).name or event.room_id
        text = f"join wave in {label}: {len(window)} joins within {settings.per_seconds:g}s"
        intents: list[Intent] = [Alert(event.room_id, text)]
        if settings.lock:
            intents.append(LockRoom(event.room_id, settings.lock_seconds, text))
        return intents
