"""The one place that decides whom the bot must never act on, and who may command it.

Exempt from any action (commands, protections, policy lists alike):

* the bot itself;
* moderators: management-room members at or above the moderator power level;
* anyone whose power level in the room is not below the bot's own there;
* room v12 creators (they rank above every level; see :mod:`abusebot.power`);
* for a command given by a protected room's admin (not by a management-room moderator):
  anyone whose power level there is not below the commander's, exactly as Matrix itself
  would refuse that admin the same ban, kick or power change (:func:`beyond_reach`).

Keeping this in one function is deliberate: Mjolnir's CVE-2025-24024 came from a check that
moved. Every caller asks :func:`refusal`; none re-derives the rule.
"""

from __future__ import annotations

import attrs

from abusebot.rooms import RoomState, RoomStore


@attrs.frozen
class Staff:
    """Who the bot is and who moderates, as known right now."""

    bot_user_id: str
    management: RoomState
    moderator_level: int

    def is_moderator(self, user_id: str) -> bool:
        """A management-room member at or above the moderator level (creators count)."""
        if user_id == self.bot_user_id:
            return False
        if self.management.membership(user_id) != "join":
            return False
        return self.management.power_levels.user_level(user_id) >= self.moderator_level

    def moderators(self) -> list[str]:
        """Every moderator now, sorted (whom an urgent call pings; a vote's electorate)."""
        return sorted(user for user in self.management.members("join") if self.is_moderator(user))


def refusal(target: str, room: RoomState | None, staff: Staff, commander: str | None = None) -> str | None:
    """Why the bot must not act on ``target`` in ``room``, or ``None`` when it may.

    ``room`` may be ``None`` for actions with no room (notes); then only the room-independent
    rules apply. ``commander`` is set when a protected room's admin gave the command: their
    reach there is bounded by their own power level (:func:`beyond_reach`).
    """
    if target == staff.bot_user_id:
        return "I will not act on myself."
    if staff.is_moderator(target):
        return f"{target} is a moderator (management room power level ≥ {staff.moderator_level})."
    if room is not None:
        levels = room.power_levels
        if target in levels.creators:
            return f"{target} created {room.name or room.room_id} (room version {room.room_version})."
        bot_level = levels.user_level(staff.bot_user_id)
        target_level = levels.user_level(target)
        if target_level >= bot_level:
            return (
                f"{target} has power level {target_level} in {room.name or room.room_id}, not below mine ({bot_level})."
            )
        if commander is not None:
            return beyond_reach(target, room, commander)
    return None


def beyond_reach(target: str, room: RoomState, commander: str) -> str | None:
    """Why ``commander`` (a protected room's admin) may not have the bot act on ``target`` in
    ``room``, or ``None``.

    Matrix lets a member ban, kick or change the power of only those *below* their own level;
    the bot, which usually ranks higher, must not lend an admin the reach the room denies them.
    """
    levels = room.power_levels
    commander_level = levels.user_level(commander)
    target_level = levels.user_level(target)
    if target_level >= commander_level:
        return (
            f"{target} has power level {target_level} in {room.name or room.room_id}, "
            f"not below yours ({commander_level})."
        )
    return None


def can_command(sender: str, room: RoomState, staff: Staff, *, management: bool) -> bool:
    """Whether ``sender`` may command the bot from ``room``.

    The management room's moderators command everywhere; in a protected room, users whose power
    level there allows banning command for that room only. Never the bot itself.
    """
    if sender == staff.bot_user_id:
        return False
    if management:
        return staff.is_moderator(sender)
    if room.membership(sender) != "join":
        return False
    levels = room.power_levels
    return levels.user_level(sender) >= levels.ban


#: Which power each action needs in a room, by the names moderators read.
ACTION_POWERS: dict[str, tuple[str, ...]] = {
    "ban": ("ban",),
    "unban": ("ban", "kick"),
    "kick": ("kick",),
    "mute": ("power levels",),
    "unmute": ("power levels",),
    "redact": ("redact",),
    "warning": (),
}
#: Everything the bot may need somewhere (for ``!mod rooms`` and the start-up line).
ALL_POWERS = ("ban", "kick", "redact", "power levels", "server ACL")


def _required(room: RoomState, power: str) -> int:
    levels = room.power_levels
    if power == "ban":
        return levels.ban
    if power == "kick":
        return levels.kick
    if power == "redact":
        return levels.redact
    if power == "power levels":
        return levels.event_level("m.room.power_levels", state=True)
    return levels.event_level("m.room.server_acl", state=True)


def missing_powers(room: RoomState, bot_user_id: str, powers: tuple[str, ...] = ALL_POWERS) -> list[str]:
    """The powers of ``powers`` the bot lacks in ``room``, each as "ban (needs 50, I have 0)";
    ``["anything (I am not in the room)"]`` when it is not joined."""
    if room.membership(bot_user_id) != "join":
        return ["anything (I am not in the room)"] if powers else []
    own = room.power_levels.user_level(bot_user_id)
    return [
        f"{power} (needs {_required(room, power)}, I have {own})"
        for power in powers
        if own < _required(room, power)
    ]


def cannot_act(room: RoomState, bot_user_id: str, action: str) -> str | None:
    """Why the bot cannot do ``action`` in ``room`` at all (it lacks the power), or ``None``."""
    missing = missing_powers(room, bot_user_id, ACTION_POWERS.get(action, ()))
    return "I lack the power for " + ", ".join(missing) if missing else None


def room_problems(store: RoomStore, bot_user_id: str) -> dict[str, list[str]]:
    """Each protected room where the bot lacks a power it may need, and which ones."""
    problems: dict[str, list[str]] = {}
    for room_id in store.protected:
        missing = missing_powers(store.room(room_id), bot_user_id)
        if missing:
            problems[room_id] = missing
    return problems
