"""Policy lists the bot watches, applies and publishes.

* **Watching**: each list room's full state is loaded at start (progress is logged), then its
  changes arrive through sync like any other event.
* **Applying**: a user ban rule bans matching members of every protected room (reason from the
  rule, actor = the list) and anyone matching who joins later. When a rule is removed, only the
  bans the bot made *because of that rule* are lifted (the ledger knows which), unless another
  rule still matches. Server rules become each protected room's ``m.room.server_acl``
  (``allow: ["*"]``, never denying our own server), debounced. Room rules make the bot refuse to
  join or protect those rooms.
* **Safety**: a rule that would match the bot, a moderator, a room admin, everyone, or our own
  server is never applied; the management room is told which rule of which list.
* Rule changes are handled one at a time (a lock), so rapid add/remove churn leaves no stray ban.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import html
import time
from collections.abc import Mapping
from typing import Any

import attrs
import structlog

from abusebot.actions import Actor, Moderation, Scope
from abusebot.audit import Message
from abusebot.config import Config, ConfigError
from abusebot.events import Event
from abusebot.ledger import Ledger
from abusebot.matrix import HomeserverUnavailable, MatrixError
from abusebot.outbox import intent as outbox_intent
from abusebot.rooms import ACTIVE, RoomStore
from policies.glob import compile_glob, has_wildcards
from policies.matcher import RuleIndex
from policies.rules import Removed, Rule, parse_rule, policy_kind
from policies.safety import PolicySafety

log = structlog.get_logger("abusebot.policies")

#: Server ACL changes are gathered for this long, then sent as one event per room.
ACL_DEBOUNCE_S = 0.5
PUBLISH_TYPE = "m.policy.rule.user"
#: MSC3784: the room type of a policy list room.
POLICY_ROOM_TYPE = "support.feline.policy.lists.msc.v1"
PROGRESS_EVERY = 1000
#: A rule that bans many: this many bans in flight at once, progress logged every so many.
FAN_OUT_CONCURRENCY = 8
PROGRESS_FAN_OUT = 100


@attrs.frozen
class ListOptions:
    """How the bot treats one watched list."""

    apply: bool = True
    allow: bool = False
    auto_unban: bool = True

    def describe(self) -> str:
        """Human summary of the options."""
        parts = ["allow-list" if self.allow else ("applied" if self.apply else "watched only (dont_apply)")]
        if not self.allow:
            parts.append("auto-unban" if self.auto_unban else "no auto-unban")
        return ", ".join(parts)


def _options(value: Any, path: str) -> ListOptions:
    if value is None:
        return ListOptions()
    if not isinstance(value, Mapping):
        raise ConfigError(path, "a mapping with room and options", value)
    known = {"room", "dont_apply", "allow", "auto_unban"}
    for key in value:
        if key not in known:
            raise ConfigError(f"{path}.{key}", "one of " + ", ".join(sorted(known)), key)
    flags = {}
    for key in ("dont_apply", "allow", "auto_unban"):
        if key in value and not isinstance(value[key], bool):
            raise ConfigError(f"{path}.{key}", "true or false", value[key])
        flags[key] = value.get(key)
    return ListOptions(
        apply=not flags["dont_apply"] if flags["dont_apply"] is not None else True,
        allow=bool(flags["allow"]),
        auto_unban=flags["auto_unban"] if flags["auto_unban"] is not None else True,
    )


def parse_policy_config(config: Config) -> tuple[dict[str, ListOptions], str | None]:
    """``policy_lists: {watch: [room | {room, dont_apply, allow, auto_unban}], publish: room}``."""
    section = config.policy_lists
    for key in section:
        if key not in ("watch", "publish"):
            raise ConfigError(f"policy_lists.{key}", "watch or publish", key)
    watch = section.get("watch") or []
    if not isinstance(watch, list):
        raise ConfigError("policy_lists.watch", "a list of room ids or aliases", watch)
    lists: dict[str, ListOptions] = {}
    for i, entry in enumerate(watch):
        path = f"policy_lists.watch[{i}]"
        room = entry.get("room") if isinstance(entry, Mapping) else entry
        if not isinstance(room, str) or not room.startswith(("!", "#")) or " " in room:
            raise ConfigError(path if not isinstance(entry, Mapping) else f"{path}.room", "a room id or alias", room)
        lists[room] = _options(entry if isinstance(entry, Mapping) else None, path)
    publish = section.get("publish")
    if publish is not None and (not isinstance(publish, str) or not publish.startswith(("!", "#"))):
        raise ConfigError("policy_lists.publish", "a room id or alias", publish)
    return lists, publish


def rule_ref(rule: Rule | Removed) -> str:
    """How the ledger names a rule: list room, event type, state key."""
    return f"{rule.list_room} {rule.event_type} {rule.state_key}"


class PolicyManager:
    """Watches, applies and publishes moderation policy lists."""

    def __init__(self, config: Config, store: RoomStore, moderation: Moderation, ledger: Ledger) -> None:
        self.config = config
        self.store = store
        self.moderation = moderation
        self.ledger = ledger
        self.api = moderation.api
        self.index = RuleIndex()
        self.lists: dict[str, ListOptions] = {}
        self.aliases: dict[str, str] = {}
        self.publish_room: str | None = None
        self.unsafe: dict[str, str] = {}
        self._rules: dict[str, Rule] = {}
        #: Lists we could not join at start (room id → options): loaded when the bot is invited.
        self.awaiting_invite: dict[str, ListOptions] = {}
        self._lock = asyncio.Lock()
        self._acl_task: asyncio.Task[None] | None = None
        #: A rule's bans in progress, by rule ref.
        self._fan_outs: dict[str, asyncio.Task[list[str]]] = {}
        self._safety: tuple[tuple[Any, ...], PolicySafety] | None = None
        #: Ids of the latest rule events handled (for status and tests; the rules live in the index).
        self.recent_rule_events: collections.deque[str] = collections.deque(maxlen=1000)
        self.own_server = moderation.bot_user_id.split(":", 1)[1]

    # -- start-up -------------------------------------------------------------------------------

    async def load(self) -> None:
        """Join and load every watched list (config plus moderators' changes), then apply them."""
        configured, publish = parse_policy_config(self.config)
        persisted = await self.ledger.watched_lists()
        wanted: dict[str, ListOptions] = dict(configured)
        for room, options in persisted.items():
            if options is None:
                wanted.pop(room, None)
            else:
                wanted[room] = ListOptions(**options)
        publish = await self.ledger.get_kv("publish_list") or publish
        if publish:
            try:
                self.publish_room = await self._join(publish)
                wanted.setdefault(self.publish_room, ListOptions())
            except (MatrixError, HomeserverUnavailable) as err:
                log.error("cannot_join_publish_list", room=publish, error=str(err))
        loaded: set[str] = set()
        for number, (room, options) in enumerate(wanted.items(), 1):
            try:
                await self.watch(room, options, persist=False, apply=False)
                loaded.update(r for r in self.lists if r == room or self.aliases.get(r) == room)
            except (MatrixError, HomeserverUnavailable) as err:
                # A list we cannot load is unknown, never empty: its rules are simply not applied.
                log.error("cannot_load_list", room=room, error=str(err), note="will load it when invited")
                await self._await_invite(room, options)
            log.info("lists_loading", done=number, total=len(wanted))
        await self.apply_everything()
        await self._lift_orphaned(loaded)

    async def _await_invite(self, room: str, options: ListOptions) -> None:
        room_id = await self.api.hs.room_id(room)
        if room_id is None:
            return
        if room_id != room:
            self.aliases[room_id] = room
        self.awaiting_invite[room_id] = options

    async def on_invite(self, room_id: str) -> bool:
        """An invite to a list we could not load at start: load and apply it now. True when the
        invite was to such a list (handled here, whatever the outcome)."""
        options = self.awaiting_invite.pop(room_id, None)
        if options is None:
            return False
        try:
            await self.watch(room_id, options, persist=False)
        except (MatrixError, HomeserverUnavailable) as err:
            self.awaiting_invite[room_id] = options
            log.warning("cannot_load_list", room=room_id, error=str(err))
        return True

    async def _join(self, room: str) -> str:
        room_id = await self.api.join(room)
        if room.startswith("#"):
            self.aliases[room_id] = room
        return room_id

    async def watch(self, room: str, options: ListOptions, *, persist: bool = True, apply: bool = True) -> int:
        """Start following a list; returns how many rules it has."""
        room_id = await self._join(room)
        self.lists[room_id] = options
        room_state = self.store.room(room_id)
        count = 0
        started = time.monotonic()
        safety = self.safety()  # prepared once for the whole list, not per rule
        # One event at a time: the rule index is the list's only copy in memory.
        for number, raw in enumerate(await self.api.hs.room_state_stream(room_id), 1):
            if not isinstance(raw, Mapping):
                continue
            rule = parse_rule(raw, room_id)
            if isinstance(rule, Rule):
                self._add(rule, safety)
                count += 1
            else:
                room_state.apply(raw)
            if number % PROGRESS_EVERY == 0:
                log.info("list_loading", room_id=room_id, events=number, rules=count)
                await asyncio.sleep(0)  # let the loop breathe while a large list loads
        log.info("list_loaded", room_id=room_id, rules=count, ms=round((time.monotonic() - started) * 1000, 1))
        if persist:
            await self.ledger.set_watched_list(room_id, attrs.asdict(options))
        if self.unsafe:
            await self._report_unsafe(room_id)
        if apply:
            await self.apply_everything()
        return count

    async def unwatch(self, room: str) -> int:
        """Stop following a list; its rules stop applying (bans already made stay)."""
        room_id = room if room.startswith("!") else await self.api.hs.resolve_alias(room)
        if room_id not in self.lists:
            return -1
        removed = len(self.index.remove_list(room_id))
        for ref, rule in list(self._rules.items()):
            if rule.list_room == room_id:
                del self._rules[ref]
        for ref in [r for r in self.unsafe if r.startswith(room_id + " ")]:
            del self.unsafe[ref]
        del self.lists[room_id]
        await self.ledger.set_watched_list(room_id, None)
        self._schedule_acl()
        return removed

    def is_list_room(self, room_id: str) -> bool:
        """True for a watched list (its state changes are rule changes)."""
        return room_id in self.lists

    # -- the rule set ---------------------------------------------------------------------------

    def _protected_users(self) -> set[str]:
        """Moderators, and every protected room's admins (level ≥ ban or ≥ the bot's) and creators.

        Admins are read from the power-level map, not by scanning members: a room of 100,000
        members would otherwise cost ~0.1 s per rule change. Only when ``users_default`` itself
        reaches the threshold is everyone an admin (then every member counts).
        """
        staff = self.moderation.staff
        users = {u for u in staff.management.members() if staff.is_moderator(u)}
        for room_id in self.store.protected:
            if not self.store.vouched(room_id):
                continue  # a sub-Space's room: its admins are nobody's staff here
            room = self.store.room(room_id)
            levels = room.power_levels
            threshold = min(levels.ban, levels.user_level(self.moderation.bot_user_id))
            if levels.users_default >= threshold:
                users |= set(room.members())
            users |= {user for user, level in levels.users.items() if level >= threshold}
            users |= set(levels.creators)
        return users

    def safety(self) -> PolicySafety:
        """The safety filter for the current staff, admins and protected rooms: rebuilt only when
        a power level or the management room's membership changed (one rule costs no scan)."""
        management = self.store.room(self.store.management_id)
        key = (
            self.store.management_id,
            management.member_version,
            tuple((room_id, id(self.store.room(room_id).power_levels)) for room_id in self.store.protected),
        )
        if self._safety is None or self._safety[0] != key:
            safety = PolicySafety(
                bot_user_id=self.moderation.bot_user_id,
                protected_users=self._protected_users(),
                own_server=self.own_server,
                protected_rooms=[*self.store.protected, self.store.management_id],
            )
            self._safety = (key, safety)
        return self._safety[1]

    def _forget(self, ref: str) -> Rule | None:
        old = self._rules.pop(ref, None)
        self.unsafe.pop(ref, None)
        if old is not None:
            self.index.remove(old.kind, old.list_room, old.state_key, event_type=old.event_type)
        return old

    def _add(self, rule: Rule, safety: PolicySafety) -> str | None:
        """Index a rule unless it is unsafe; returns the reason it was refused, if it was."""
        ref = rule_ref(rule)
        self._forget(ref)
        reason = safety.unsafe_reason(rule)
        if reason:
            self.unsafe[ref] = reason
            log.warning("unsafe_rule", ref=ref, entity=rule.entity, reason=reason)
            return reason
        self._rules[ref] = rule
        self.index.add(rule)
        return None

    def allow_lists(self) -> set[str]:
        """The rooms of lists marked as allow-lists."""
        return {room for room, options in self.lists.items() if options.allow}

    def ban_rules(self, kind: str, entity: str) -> list[Rule]:
        """Ban rules from applied lists that match ``entity`` (allow-lists override)."""
        rules = self.index.ban_rules_for(kind, entity, self.allow_lists())
        return [r for r in rules if self.lists.get(r.list_room, ListOptions(apply=False)).apply]

    def is_room_banned(self, room: str) -> Rule | None:
        """A room rule that forbids protecting or joining ``room``, if any."""
        rules = self.ban_rules("room", room)
        return rules[0] if rules else None

    # -- events ---------------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        """Pipeline hook: rule changes in list rooms, joins and manual bans in protected rooms."""
        if event.room_id in self.lists and event.is_state:
            if event.sender != self.moderation.bot_user_id or event.room_id == self.publish_room:
                await self.on_rule_event(event.raw, event.room_id)
            return
        if not self.store.is_protected(event.room_id) or event.type != "m.room.member" or not event.state_key:
            return
        if event.membership in ("join", "invite", "knock") and event.prev_membership != "join":
            await self.check_member(event.state_key, source=event.event_id)
        elif event.membership == "ban" and event.sender != self.moderation.bot_user_id and self.publish_room:
            await self._offer_publish(event)

    async def on_rule_event(self, raw: Mapping[str, Any], room_id: str) -> None:
        """A state event in a list room: a rule added, changed or removed."""
        try:
            await self._on_rule_event(raw, room_id)
        finally:
            event_id = raw.get("event_id")
            if isinstance(event_id, str):
                self.recent_rule_events.append(event_id)

    async def _on_rule_event(self, raw: Mapping[str, Any], room_id: str) -> None:
        parsed = parse_rule(raw, room_id)
        if parsed is None:
            # State replaces state: a malformed event of a policy type still ends the rule its
            # state key held (it must not linger because its replacement is unreadable).
            kind = policy_kind(str(raw.get("type", "")))
            state_key = raw.get("state_key")
            if kind is None or not isinstance(state_key, str):
                return
            parsed = Removed(kind, state_key, str(raw["type"]), room_id)
        async with self._lock:
            ref = rule_ref(parsed)
            if isinstance(parsed, Removed):
                old = self._forget(ref)
                if old is not None:
                    await self._revoke(old)
                return
            previous = self._rules.get(ref)
            refused = self._add(parsed, self.safety())
            if refused:
                await self._alert_unsafe(parsed, refused)
                if previous is not None:
                    await self._revoke(previous)
                return
            if previous is not None and not parsed.is_ban and previous.is_ban:
                await self._revoke(previous)
            if parsed.is_ban:
                await self._apply_rule(parsed)

    async def check_member(self, user_id: str, source: str | None = None) -> bool:
        """Ban ``user_id`` if an applied rule matches them; True when banned."""
        if self.moderation.check(user_id, Scope.everywhere(self.store)):
            return False
        rules = self.ban_rules("user", user_id)
        if not rules:
            return False
        await self._ban(user_id, rules[0], source)
        return True

    # -- applying -------------------------------------------------------------------------------

    async def apply_to_room(self, room_id: str) -> int:
        """A room protected while running (joined late, upgraded into, invited to): its members
        meet every applied rule, and it gets the server ACL. (Bans in force everywhere already
        reach it through :meth:`Moderation.reach_room`.) Returns bans made."""
        banned = 0
        for user, membership in sorted(self.store.room(room_id).memberships().items()):
            if membership not in ACTIVE or self.moderation.check(user, Scope.room(room_id)):
                continue
            rules = self.ban_rules("user", user)
            if rules:  # one already banned everywhere is left to Moderation.reach_rooms
                banned += await self._ban(user, rules[0], f"{room_id}|{user}")
        if banned:
            log.info("lists_applied_to_room", room_id=room_id, banned=banned)
        self._schedule_acl()
        return banned

    def _members(self) -> set[str]:
        """Everyone joined, invited or knocking in a protected room."""
        return {
            user
            for room_id in self.store.protected
            for user, membership in self.store.room(room_id).memberships().items()
            if membership in ACTIVE
        }

    async def _already_banned(self, user_id: str) -> bool:
        return any(inf.scope == "*" for inf in await self.ledger.active(user_id, "ban"))

    async def _ban(self, user_id: str, rule: Rule, source: str | None = None) -> bool:
        if await self._already_banned(user_id):
            return False
        label = self.label(rule.list_room)
        reason = f"{rule.reason or 'banned by policy list'} ({label})"
        outcome = await self.moderation.ban(
            user_id,
            reason,
            Actor(rule.list_room, "policy_list", rule.event_id or source),
            Scope.everywhere(self.store),
            rule=rule_ref(rule),
            notify=False,
            quiet=True,
        )
        return outcome.ok

    async def _apply_rule(self, rule: Rule) -> list[str]:
        """Apply one new ban rule to current members: find them (O(members matched) for an exact
        rule, one pass over the members for a glob), then ban them off the sync loop (see
        :meth:`_fan_out`). Returns the users it will ban."""
        if rule.kind == "server":
            self._schedule_acl()
            return []
        if rule.kind == "room":
            protected = [r for r in self.store.protected if self.ban_rules("room", r)]
            if protected:
                await self._post(
                    f"⚠️ {self.label(rule.list_room)} lists a room I protect ({', '.join(protected)}) "
                    f"as {rule.recommendation}: I keep protecting it; decide what to do."
                )
            return []
        if not self.lists.get(rule.list_room, ListOptions()).apply:
            return []
        everywhere = Scope.everywhere(self.store)
        targets = [
            user
            for user in self._targets(rule)
            if not self.moderation.check(user, everywhere) and self.ban_rules("user", user)
        ]
        if targets:
            ref = rule_ref(rule)
            task = asyncio.create_task(self._fan_out(rule, targets), name=f"fan-out {ref}")
            self._fan_outs[ref] = task
            task.add_done_callback(functools.partial(self._fan_out_ended, ref))
        return targets

    def _targets(self, rule: Rule) -> list[str]:
        """The current members (joined, invited, knocking) of the protected rooms a rule matches."""
        entity = rule.entity
        found: dict[str, None] = {}
        if entity is not None and not has_wildcards(entity):
            folded = entity.lower()
            for room_id in self.store.protected:
                room = self.store.room(room_id)
                for user in {entity, folded}:
                    if room.membership(user) in ACTIVE:
                        found[user] = None
                for user in room.mixed_case():
                    if user.lower() == folded and room.membership(user) in ACTIVE:
                        found[user] = None
            return sorted(found)
        if entity is not None:
            glob = compile_glob(entity)

            def matches(user: str) -> bool:
                return glob.matches_folded(user.lower())
        else:
            single = RuleIndex()  # a hashed rule: the index knows how to compare hashes
            single.add(rule)

            def matches(user: str) -> bool:
                return bool(single.match("user", user))

        for room_id in self.store.protected:
            for user, membership in self.store.room(room_id).memberships().items():
                if membership in ACTIVE and user not in found and matches(user):
                    found[user] = None
        return sorted(found)

    async def _fan_out(self, rule: Rule, targets: list[str]) -> list[str]:
        """Ban ``targets`` because of ``rule``, a few at a time, through the executor, off the sync
        loop; progress in the log, one summary line in the management room. Stops if the rule
        is removed or replaced meanwhile (its revocation waits for this to stop)."""
        ref = rule_ref(rule)
        started = time.monotonic()
        gate = asyncio.Semaphore(FAN_OUT_CONCURRENCY)
        banned: list[str] = []
        done = 0

        async def one(user: str) -> None:
            nonlocal done
            async with gate:
                if self._rules.get(ref) is not rule:
                    return
                if await self._ban(user, rule):
                    banned.append(user)
                done += 1
                if len(targets) >= PROGRESS_FAN_OUT and done % PROGRESS_FAN_OUT == 0:
                    log.info("fan_out_progress", rule=ref, done=done, total=len(targets), banned=len(banned))

        await asyncio.gather(*(one(user) for user in targets))
        banned.sort()
        log.info(
            "fan_out_done", rule=ref, targets=len(targets), banned=len(banned), s=round(time.monotonic() - started, 3)
        )
        shown = ", ".join(banned[:20]) + (f" and {len(banned) - 20} more" if len(banned) > 20 else "")
        await self._post(
            f"Policy list {self.label(rule.list_room)}: rule {rule.entity or '(hashed)'} "
            f"({rule.reason or 'no reason'}) — banned {len(banned)} member(s)" + (f": {shown}" if banned else "")
        )
        return banned

    def _fan_out_ended(self, ref: str, task: asyncio.Task[list[str]]) -> None:
        if self._fan_outs.get(ref) is task:
            del self._fan_outs[ref]

    async def _stop_fan_out(self, ref: str) -> None:
        """Wait for a rule's fan-out to stop (it checks the rule before each ban)."""
        task = self._fan_outs.get(ref)
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def apply_everything(self) -> int:
        """Check every current member against every applied rule; ACLs too. Returns bans made."""
        members = sorted(self._members())
        banned = 0
        started = time.process_time()
        for number, user in enumerate(members, 1):
            if self.ban_rules("user", user) and not self.moderation.check(user, Scope.everywhere(self.store)):
                rules = self.ban_rules("user", user)
                if await self._ban(user, rules[0]):
                    banned += 1
            if number % PROGRESS_EVERY == 0:
                log.info("applying_lists", members=number, total=len(members), banned=banned)
                await asyncio.sleep(0)
        log.info(
            "lists_applied",
            members=len(members),
            banned=banned,
            cpu_s=round(time.process_time() - started, 3),
            rules=len(self.index),
        )
        if banned:
            await self._post(f"Policy lists applied: banned {banned} member(s) of the protected rooms.")
        self._schedule_acl()
        return banned

    async def _revoke(self, rule: Rule) -> None:
        """A rule went away: lift the bans made because of it (only those), if the list says so."""
        options = self.lists.get(rule.list_room, ListOptions())
        if rule.kind == "server":
            self._schedule_acl()
            return
        if rule.kind != "user" or not options.auto_unban:
            return
        ref = rule_ref(rule)
        await self._stop_fan_out(ref)
        lifted = []
        for inf in await self._infractions_of(ref):
            if self.ban_rules("user", inf.subject):
                continue  # another rule still bans them
            _, failed = await self.moderation.undo(inf)
            if failed:
                log.warning("revoke_failed", infraction_id=inf.id, failed=failed)
                continue
            await self.ledger.update_infraction(
                inf.id, state="lifted", actor=rule.list_room, reason=f"rule {rule.entity or rule.state_key} removed"
            )
            lifted.append(inf.subject)
        if lifted:
            await self._post(
                f"Policy list {self.label(rule.list_room)}: rule {rule.entity or '(hashed)'} was removed "
                f"— lifted the ban(s) I made because of it: {', '.join(lifted)}"
            )

    async def _lift_orphaned(self, loaded: set[str]) -> None:
        """Lift bans whose rule went away while the bot was stopped, as a live removal would: the
        catch-up sync may never show the removal (and a rule not loaded is not forgotten then)."""
        lifted: dict[str, list[str]] = {}
        for inf in await self.ledger.active_by_origin("policy_list", "ban"):
            ref = inf.rule or ""
            list_room = ref.split(" ", 1)[0]
            options = self.lists.get(list_room)
            if list_room not in loaded or options is None or not options.auto_unban:
                continue  # a list we could not load is unknown, never empty
            rule = self._rules.get(ref)
            if (rule is not None and rule.is_ban) or ref in self.unsafe or self.ban_rules("user", inf.subject):
                continue
            _, failed = await self.moderation.undo(inf)
            if failed:
                log.warning("revoke_failed", infraction_id=inf.id, failed=failed)
                continue
            await self.ledger.update_infraction(
                inf.id, state="lifted", actor=list_room, reason="its rule was removed while I was stopped"
            )
            lifted.setdefault(list_room, []).append(inf.subject)
        for list_room, users in lifted.items():
            await self._post(
                f"Policy list {self.label(list_room)}: rules were removed while I was stopped "
                f"— lifted the ban(s) I made because of them: {', '.join(users)}"
            )

    async def _infractions_of(self, ref: str) -> list[Any]:
        return await self.ledger.active_by_rule("policy_list", ref)

    # -- server ACLs ----------------------------------------------------------------------------

    def server_acl(self) -> dict[str, Any]:
        """The ACL content the server rules call for (our own server is never denied)."""
        deny = sorted(
            {
                r.entity
                for r in self._rules.values()
                if r.kind == "server" and r.is_ban and r.entity and self.lists.get(r.list_room, ListOptions()).apply
            }
        )
        return {"allow": ["*"], "deny": deny, "allow_ip_literals": False}

    def _schedule_acl(self) -> None:
        if self._acl_task is not None and not self._acl_task.done():
            self._acl_task.cancel()
        self._acl_task = asyncio.create_task(self._sync_acl_later())

    async def _sync_acl_later(self) -> None:
        await asyncio.sleep(ACL_DEBOUNCE_S)
        await self.sync_acl()

    async def sync_acl(self) -> list[str]:
        """Write the ACL to every protected room whose ACL differs; returns the rooms changed."""
        wanted = self.server_acl()
        if not wanted["deny"] and not any(self.store.room(r).get("m.room.server_acl") for r in self.store.protected):
            return []
        changed = []
        for room_id in self.store.protected:
            current = self.store.room(room_id).content("m.room.server_acl")
            if sorted(current.get("deny", [])) == wanted["deny"] and current.get("allow") == ["*"]:
                continue
            # A change applied to a fresh read, serialised per room (the outbox's ``acl`` intent).
            result = await self.moderation.outbox.do(outbox_intent("acl", room_id, content=wanted))
            if result.ok:
                changed.append(room_id)
            else:
                log.warning("acl_failed", room_id=room_id, error=result.error)
        if changed:
            await self.ledger.audit(
                actor="policy_lists",
                action="server_acl",
                outcome="done",
                detail={"rooms": changed, "deny": wanted["deny"]},
            )
            await self._post(
                f"Server ACL updated in {len(changed)} room(s): denying "
                f"{', '.join(wanted['deny']) or 'no servers'} (always allowing everyone else)."
            )
        return changed

    # -- publishing -----------------------------------------------------------------------------

    async def publish_ban(self, user_id: str, reason: str) -> str | None:
        """Write a user ban rule to our published list; returns the list room, or None without one."""
        if self.publish_room is None:
            return None
        content = {"entity": user_id, "recommendation": "m.ban", "reason": reason}
        await self._put_rule(user_id, content)
        return self.publish_room

    async def _put_rule(self, user_id: str, content: dict[str, Any]) -> None:
        assert self.publish_room is not None
        result = await self.moderation.outbox.do(
            outbox_intent(
                "state", self.publish_room, event_type=PUBLISH_TYPE, state_key=f"rule:{user_id}", content=content
            )
        )
        if not result.ok:
            raise MatrixError(502, {"error": result.error or "the rule could not be written"})

    async def unpublish(self, user_id: str) -> bool:
        """Remove our published rule for ``user_id``; True when there was one."""
        if self.publish_room is None:
            return False
        current = await self.api.hs.state_event(self.publish_room, PUBLISH_TYPE, f"rule:{user_id}")
        if not current:
            return False
        await self._put_rule(user_id, {})
        return True

    async def create_list(self, alias: str) -> str:
        """Create a new policy list room, publish to it from now on, and watch it."""
        localpart = alias[1:].split(":", 1)[0]
        moderators = [u for u in self.moderation.staff.management.members() if self.moderation.staff.is_moderator(u)]
        room_id = await self.api.create_room(
            {
                "preset": "public_chat",
                "room_alias_name": localpart,
                "name": f"{localpart} (moderation policy list)",
                "topic": "A Matrix moderation policy list published by abusebot.",
                "creation_content": {"type": POLICY_ROOM_TYPE},
                # No "users" here: room v12 rejects the creator in it, older versions require it.
                "power_level_content_override": {"events_default": 50, "state_default": 50},
            }
        )
        if moderators:
            levels = dict(await self.api.hs.state_event(room_id, "m.room.power_levels", "") or {})
            levels["users"] = {**dict.fromkeys(moderators, 50), **dict(levels.get("users") or {})}
            await self.moderation.outbox.do(
                outbox_intent("state", room_id, event_type="m.room.power_levels", state_key="", content=levels)
            )
        self.publish_room = room_id
        self.aliases[room_id] = alias
        await self.ledger.set_kv("publish_list", room_id)
        await self.watch(room_id, ListOptions())
        return room_id

    async def _offer_publish(self, event: Event) -> None:
        target = event.state_key or ""
        if await self._already_banned(target):
            return  # the bot's own ban, or one it already knows
        reason = event.content.get("reason")
        reason = reason if isinstance(reason, str) else ""
        await self.ledger.audit(
            actor=event.sender,
            action="manual_ban_seen",
            outcome="done",
            subject=target,
            room=event.room_id,
            reason=reason,
            event_id=event.event_id,
        )
        await self._post(
            f"{event.sender} banned {target} in {self.store.label(event.room_id)}"
            + (f" ({reason})" if reason else "")
            + ". To ban them everywhere and add them to our "
            f"policy list, reply with: {self.config.command_prefix} ban {target} --list "
            f"{reason or 'reason'}"
        )

    # -- preview and reporting ------------------------------------------------------------------

    async def preview(self, room: str) -> Message:
        """What watching ``room`` would do, without watching it."""
        room_id = await self._join(room)
        state = await self.api.hs.room_state(room_id)
        preview = RuleIndex()
        safety = self.safety()
        unsafe: list[str] = []
        servers: set[str] = set()
        rules = 0
        for raw in state:
            rule = parse_rule(raw, room_id)
            if not isinstance(rule, Rule):
                continue
            rules += 1
            if rule.kind == "server" and rule.is_ban and rule.entity:
                servers.add(rule.entity)
            reason = safety.unsafe_reason(rule)
            if reason:
                unsafe.append(f"{rule.entity or '(hashed)'}: {reason}")
            else:
                preview.add(rule)
        would_ban = sorted(
            u
            for u in self._members()
            if preview.ban_rules_for("user", u, self.allow_lists())
            and not self.moderation.check(u, Scope.everywhere(self.store))
        )
        servers_shown = sorted(servers)
        lines = [
            f"Preview of {room} ({rules} rules):",
            f"would ban {len(would_ban)} current member(s)" + (f": {', '.join(would_ban[:30])}" if would_ban else ""),
            f"would deny {len(servers_shown)} server(s) in the ACL"
            + (f": {', '.join(servers_shown[:30])}" if servers_shown else ""),
            f"{len(unsafe)} rule(s) would be refused as unsafe" + ("".join(f"\n  • {u}" for u in unsafe[:20])),
        ]
        text = "\n".join(lines)
        return Message(text, html.escape(text).replace("\n", "<br>"))

    def describe(self) -> list[str]:
        """One line per watched list, and the published list."""
        counts: dict[str, int] = {}
        for rule in self._rules.values():
            counts[rule.list_room] = counts.get(rule.list_room, 0) + 1
        lines = [
            f"{self.label(room)}: {_rules(counts.get(room, 0))}, {options.describe()}"
            for room, options in self.lists.items()
        ]
        if self.unsafe:
            lines.append(f"{len(self.unsafe)} unsafe rule(s) refused")
        lines.append(f"publishing to: {self.label(self.publish_room) if self.publish_room else 'none'}")
        return lines

    def label(self, room_id: str) -> str:
        """Alias (or name) of a list room, else its id."""
        return self.aliases.get(room_id) or self.store.label(room_id)

    async def _alert_unsafe(self, rule: Rule, reason: str) -> None:
        await self.ledger.audit(
            actor=rule.list_room,
            action="rule_refused",
            outcome="refused",
            reason=reason,
            detail={"entity": rule.entity, "ref": rule_ref(rule)},
        )
        await self._post(
            f"⛔ Not applying rule {rule.entity or '(hashed)'} from {self.label(rule.list_room)}: {reason}"
        )

    async def _report_unsafe(self, room_id: str) -> None:
        refused = [(ref, why) for ref, why in self.unsafe.items() if ref.startswith(room_id + " ")]
        if refused:
            details = "; ".join(f"{ref.split(' ', 2)[2]}: {why}" for ref, why in refused[:10])
            await self._post(f"⛔ {len(refused)} rule(s) of {self.label(room_id)} are not applied: {details}")

    async def _post(self, text: str) -> None:
        await self.moderation.post(Message(text, html.escape(text)))

    async def close(self) -> None:
        """Cancel a pending ACL update."""
        if self._acl_task is not None:
            self._acl_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acl_task


def _rules(count: int) -> str:
    return "1 rule" if count == 1 else f"{count} rules"
