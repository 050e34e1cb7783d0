"""Which policy rules must not be applied, whatever list they come from.

A shared list is third-party input. One entry like ``*``, ``@*:*`` or ``@*:our.server`` would ban
everyone, and a rule naming a moderator would lock the community's own staff out. meowlnir's
``hacky_rule_filter`` ignores every policy that matches a configured canary (its own server is
always one); Mjolnir skips its own server when compiling ACLs. This module does both, for every
kind of rule:

* user rules: not the bot, not a protected user (moderators, room admins: the caller passes
  them), not a canary that stands for "any user" (``@abusebot-canary-x7:anything.invalid``,
  ``@a:b``: ``*``, ``@*``, ``@*:*``, ``?*``, ``*:*``… all match one of them), not a canary on our
  own server (``@*:our.server`` would ban all our users);
* server rules: not our own server, not the bot's or a protected user's server, not a canary
  server (``*``, ``*.*``…);
* room rules: not a protected room (the caller may pass them), not a canary room.

A hashed rule (MSC4205) names one entity, so it can only be compared with the hashes of the bot,
the protected users and rooms, and the servers above.
"""

from __future__ import annotations

from collections.abc import Iterable

from policies.glob import compile_glob, has_wildcards
from policies.rules import Rule, sha256_b64

__all__ = ["EVERY_ROOM_CANARIES", "EVERY_SERVER_CANARIES", "EVERY_USER_CANARIES", "PolicySafety", "unsafe_reason"]

EVERY_USER_CANARIES = ("@abusebot-canary-x7:anything.invalid", "@a:b")
EVERY_SERVER_CANARIES = ("anything.invalid", "b")
EVERY_ROOM_CANARIES = ("!abusebot-canary-x7:anything.invalid", "!a", "#abusebot-canary-x7:anything.invalid", "#a:b")
OWN_SERVER_CANARY_LOCALPARTS = ("abusebot-canary-x7", "a")


def _server_of(user_id: str) -> str | None:
    _, colon, server = user_id.partition(":")
    return server.lower() if colon and server else None


class PolicySafety:
    """The safety filter, prepared once for a given bot, staff and server (cheap per rule)."""

    def __init__(
        self,
        *,
        bot_user_id: str,
        protected_users: Iterable[str] = (),
        own_server: str,
        protected_rooms: Iterable[str] = (),
    ) -> None:
        self.own_server = own_server.lower()
        # id (as given) → why it is protected; the bot first so it is named as such
        users: dict[str, str] = {}
        for user in protected_users:
            users.setdefault(user, f"matches protected user {user}")
        users[bot_user_id] = f"matches the bot ({bot_user_id})"
        self._users = users
        self._users_folded = {user.lower(): why for user, why in users.items()}
        self._user_hashes = {sha256_b64(user): why for user, why in users.items()}

        servers: dict[str, str] = {}
        for user in users:
            server = _server_of(user)
            if server is not None:
                servers.setdefault(server, f"matches {server}, the server of {user}")
        servers[self.own_server] = f"matches our own server ({self.own_server})"
        self._servers = servers
        self._server_hashes = {sha256_b64(server): why for server, why in servers.items()}

        rooms = {room: f"matches protected room {room}" for room in protected_rooms}
        self._rooms = rooms
        self._rooms_folded = {room.lower(): why for room, why in rooms.items()}
        self._room_hashes = {sha256_b64(room): why for room, why in rooms.items()}

        own = self.own_server
        self._own_users = tuple(f"@{localpart}:{own}" for localpart in OWN_SERVER_CANARY_LOCALPARTS)

    def unsafe_reason(self, rule: Rule) -> str | None:
        """Why ``rule`` must not be applied, or ``None`` when it may be."""
        if rule.kind == "user":
            return self._check(
                rule,
                self._users,
                self._users_folded,
                self._user_hashes,
                ((EVERY_USER_CANARIES, "matches every user"), (self._own_users, "matches every user of our server")),
            )
        if rule.kind == "server":
            return self._check(
                rule,
                self._servers,
                self._servers,
                self._server_hashes,
                ((EVERY_SERVER_CANARIES, "matches every server"),),
            )
        return self._check(
            rule, self._rooms, self._rooms_folded, self._room_hashes, ((EVERY_ROOM_CANARIES, "matches every room"),)
        )

    @staticmethod
    def _check(
        rule: Rule,
        named: dict[str, str],
        named_folded: dict[str, str],
        hashes: dict[str, str],
        canaries: tuple[tuple[tuple[str, ...], str], ...],
    ) -> str | None:
        if rule.entity is None:
            return hashes.get(rule.hashes.get("sha256", ""))
        if not has_wildcards(rule.entity):
            return named_folded.get(rule.entity.lower())
        glob = compile_glob(rule.entity)
        for entities, why in canaries:
            for canary in entities:
                if glob.matches(canary):
                    return f"{why} (it matches {canary})"
        for entity, why in named.items():
            if glob.matches(entity):
                return why
        return None


def unsafe_reason(
    rule: Rule,
    *,
    bot_user_id: str,
    protected_users: Iterable[str],
    own_server: str,
    protected_rooms: Iterable[str] = (),
) -> str | None:
    """Why ``rule`` must not be applied (it would hit the bot, staff, everyone, or our server), or
    ``None``. For many rules, build one :class:`PolicySafety` and reuse it."""
    safety = PolicySafety(
        bot_user_id=bot_user_id, protected_users=protected_users, own_server=own_server, protected_rooms=protected_rooms
    )
    return safety.unsafe_reason(rule)
