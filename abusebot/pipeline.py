"""The protection pipeline: every event of the protected rooms through every enabled protection.

Protections decide (they return intents); the executor acts. In ``observe`` mode a protection's
intents go to the observing executor, which only reports what it would have done. A protection
that raises is logged and skipped; it never stops the others or the loop.

Exempt (one rule, :func:`abusebot.safety.refusal`): the bot, moderators, anyone at or above the
bot's power level in the room, room v12 creators.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import attrs
import structlog

from abusebot.actions import Actor, Moderation, Outcome, Scope, redact_intent
from abusebot.audit import Message
from abusebot.config import Config, ConfigError
from abusebot.escalation import DEFAULT_BURST_SECONDS, DEFAULT_LADDER, Ladder, LadderError, parse_ladder
from abusebot.events import Event
from abusebot.ledger import Job, Ledger
from abusebot.matrix import Priority
from abusebot.outbox import intent as outbox_intent
from abusebot.rooms import RoomState, RoomStore
from abusebot.safety import refusal
from protections import (
    REGISTRY,
    Alert,
    Intent,
    LockRoom,
    Protection,
    SettingsError,
    Violation,
    build_settings,
    load_all,
)

log = structlog.get_logger("abusebot.pipeline")

MODES = ("act", "observe")
#: What a flood's sweep removes: everything a user can post in a stream.
SWEPT_TYPES = frozenset(
    {"m.room.message", "m.sticker", "m.room.encrypted", "m.poll.start", "org.matrix.msc3381.poll.start", "m.reaction"}
)
#: The join rule a join-wave lock sets (and the only one its restore will replace).
LOCKED_RULE = "invite"

#: Keys of a protection's config section that are not its settings.
SECTION_KEYS = ("enabled", "mode")


@attrs.frozen
class Setup:
    """One protection's effective configuration."""

    enabled: bool
    mode: str
    settings: Any
    room_settings: Mapping[str, Any] = attrs.field(factory=dict)

    def settings_for(self, room_id: str) -> Any:
        """The settings in force in ``room_id`` (its override, else the global ones)."""
        return self.room_settings.get(room_id, self.settings)


def _section(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(path, "a mapping", value)
    return value


def parse_ladder_config(config: Config) -> Ladder:
    """The ``protections.escalation`` section as a :class:`Ladder`."""
    section = _section(config.protections.get("escalation"), "protections.escalation")
    for key in section:
        if key not in ("ladder", "decay_days", "burst_seconds"):
            raise ConfigError(f"protections.escalation.{key}", "ladder, decay_days or burst_seconds", key)
    rungs = section.get("ladder", list(DEFAULT_LADDER))
    if not isinstance(rungs, list):
        raise ConfigError("protections.escalation.ladder", "a list of rungs like 'mute 1h'", rungs)
    try:
        steps = parse_ladder(rungs)
    except LadderError as err:
        raise ConfigError("protections.escalation.ladder", str(err), rungs) from err
    decay = section.get("decay_days", 90)
    if isinstance(decay, bool) or not isinstance(decay, int) or not 1 <= decay <= 3650:
        raise ConfigError("protections.escalation.decay_days", "an integer from 1 to 3650", decay)
    burst = section.get("burst_seconds", DEFAULT_BURST_SECONDS)
    if isinstance(burst, bool) or not isinstance(burst, int) or not 0 <= burst <= 3600:
        raise ConfigError("protections.escalation.burst_seconds", "an integer from 0 to 3600", burst)
    return Ladder(steps, decay, burst)


def parse_setups(config: Config, overrides: Mapping[str, Any] | None = None) -> dict[str, Setup]:
    """Every registered protection's setup from the config (and persisted ``!mod protections``
    changes); raises :class:`ConfigError` naming the key path."""
    registry = load_all()
    overrides = overrides or {}
    for name in config.protections:
        if name != "escalation" and name not in registry:
            raise ConfigError(f"protections.{name}", "a known protection: " + ", ".join(sorted(registry)), name)
    setups: dict[str, Setup] = {}
    for name, cls in registry.items():
        path = f"protections.{name}"
        section = dict(_section(config.protections.get(name), path))
        persisted = dict(overrides.get(name, {}))
        enabled = persisted.get("enabled", section.get("enabled", cls.enabled_by_default))
        if not isinstance(enabled, bool):
            raise ConfigError(f"{path}.enabled", "true or false", enabled)
        mode = persisted.get("mode", section.get("mode", "act"))
        if mode not in MODES:
            raise ConfigError(f"{path}.mode", "act or observe", mode)
        values = {k: v for k, v in section.items() if k not in SECTION_KEYS}
        try:
            settings = build_settings(cls.Settings, values)
            settings = build_settings(cls.Settings, persisted.get("settings", {}), base=settings)
        except SettingsError as err:
            raise ConfigError(f"{path}.{err.key}", err.expected, err.got) from err
        room_settings = {}
        for room, room_section in config.rooms.items():
            room_path = f"rooms.{room}.protections.{name}"
            room_protections = _section(
                _section(room_section, f"rooms.{room}").get("protections"), f"rooms.{room}.protections"
            )
            values = dict(_section(room_protections.get(name), room_path))
            if values:
                try:
                    room_settings[room] = build_settings(cls.Settings, values, base=settings)
                except SettingsError as err:
                    raise ConfigError(f"{room_path}.{err.key}", err.expected, err.got) from err
        setups[name] = Setup(enabled, mode, settings, room_settings)
    for room, room_section in config.rooms.items():
        for key in _section(room_section, f"rooms.{room}"):
            if key != "protections":
                raise ConfigError(f"rooms.{room}.{key}", "protections", key)
        for name in _section(_section(room_section, f"rooms.{room}").get("protections"), f"rooms.{room}.protections"):
            if name not in registry:
                raise ConfigError(f"rooms.{room}.protections.{name}", "a known protection", name)
    return setups


def validate(config: Config) -> None:
    """Validate the protections and escalation sections (for start-up and ``check-config``)."""
    parse_setups(config)
    parse_ladder_config(config)


class PipelineContext:
    """The narrow, read-only view protections get."""

    def __init__(self, store: RoomStore, bot_user_id: str) -> None:
        self._store = store
        self.bot_user_id = bot_user_id
        self._joined: dict[tuple[str, str], float] = {}

    def now(self) -> float:
        """Wall-clock seconds."""
        return time.time()

    def room(self, room_id: str) -> RoomState:
        """Room state."""
        return self._store.room(room_id)

    def rooms(self) -> Sequence[str]:
        """Protected room ids."""
        return self._store.protected

    def joined_at(self, room_id: str, user_id: str) -> float | None:
        """When we saw the user join ``room_id`` (this run), or ``None``."""
        return self._joined.get((room_id, user_id))

    def note_membership(self, event: Event) -> None:
        """Track joins (a new join, not a profile change) for 'new member' rules."""
        if event.type != "m.room.member" or event.state_key is None:
            return
        key = (event.room_id, event.state_key)
        if event.membership == "join" and event.prev_membership != "join":
            self._joined[key] = (event.origin_server_ts / 1000) or self.now()
        elif event.membership in ("leave", "ban"):
            self._joined.pop(key, None)


class Executor:
    """Carries out intents (``act``) or reports them (``observe``)."""

    def __init__(self, moderation: Moderation, ledger: Ledger, ladder: Ladder) -> None:
        self.moderation = moderation
        self.ledger = ledger
        self.ladder = ladder
        #: Rooms under a join-wave lock (the ledger's ``room_locks``, cached for the sync path).
        self.locked: set[str] = set()
        # One escalation at a time per user, so two violations in one batch climb two rungs.
        self._user_locks: dict[str, asyncio.Lock] = {}
        #: Users whose flood is being sanctioned (``None``) or until when (monotonic) to sweep.
        self._sweeps: dict[str, float | None] = {}
        #: When each user last took a rung (monotonic): one burst of violations is one rung.
        self._rungs: dict[str, float] = {}

    async def run(self, intent: Intent, protection: str, mode: str, *, first_activity: bool = False) -> None:
        """Act on (or, observing, report) one intent."""
        if isinstance(intent, Violation):
            if mode == "observe":
                await self._observe_violation(intent, protection, first_activity)
            else:
                await self._act_violation(intent, protection, first_activity)
        elif isinstance(intent, Alert):
            prefix = "[observe] " if mode == "observe" else ""
            await self.moderation.post(_text(f"{prefix}⚠️ {protection}: {intent.text}"))
        elif isinstance(intent, LockRoom):
            if mode == "observe":
                await self.moderation.post(
                    _text(
                        f"[observe] {protection} would switch {self.moderation.store.label(intent.room_id)} to "
                        f"invite-only for {intent.seconds}s: {intent.reason}"
                    )
                )
            else:
                await self.lock_room(intent, protection)

    async def _act_violation(self, v: Violation, protection: str, first_activity: bool) -> None:
        actor = Actor(f"protection:{protection}", "protection", v.evidence.event_id)
        key = v.evidence.event_id or f"{v.room_id}:{v.user}:{v.rule}"
        ids = [(v.room_id, i) for i in (v.evidence.event_id, *v.also_redact) if i] if v.redact else []
        ids += v.also_redact_elsewhere if v.redact else []
        if v.sweep_s > 0:
            await self._act_on_stream(v, actor, key, ids, first_activity)
            return
        # Remove the harm first, before any bookkeeping: a redaction's transaction id is derived
        # from the event id, so a second redaction of the same event (replay, two protections)
        # is deduplicated by the homeserver and harmless.
        redactions = None
        if ids:
            redactions = asyncio.gather(*(self._redact(room_id, event_id, v.rule) for room_id, event_id in ids))
        try:
            async with self._user_locks.setdefault(v.user, asyncio.Lock()):
                if await self._takes_a_rung(v, actor, key):
                    await self._escalation(v, actor, first_activity, talk_after=redactions)
        finally:
            if redactions is not None:
                await redactions

    async def _takes_a_rung(self, v: Violation, actor: Actor, key: str) -> bool:
        """Whether the violation takes a rung: not when it was handled before (a replayed batch;
        the claim is written with its infraction, in one transaction), nor within a burst."""
        if await self.ledger.is_processed(key, "violation") or await self._same_burst(v, actor, key):
            return False
        if actor.event_id is None:  # nothing to claim with the infraction: claim it here
            await self.ledger.mark_processed(key, "violation")
        self._rungs[v.user] = time.monotonic()
        return True

    def _escalation(self, v: Violation, actor: Actor, first_activity: bool, **extra: Any) -> Awaitable[Outcome]:
        """The ladder's step for ``v`` (see :meth:`escalate`)."""
        return self.escalate(
            v.user,
            v.rule,
            actor,
            severity=v.severity,
            first_activity=first_activity,
            evidence=v.evidence.excerpt,
            claim="violation",
            **extra,
        )

    async def _same_burst(self, v: Violation, actor: Actor, key: str) -> bool:
        """True when the user took a rung less than ``burst_seconds`` ago: this violation is part of
        the same burst (removed, recorded in the audit log, but not another rung)."""
        last = self._rungs.get(v.user)
        # A flood's burst is its window; any other violation's is the ladder's burst_seconds.
        if last is None or time.monotonic() - last >= (v.sweep_s or self.ladder.burst_seconds):
            return False
        await self.ledger.audit(
            actor=actor.name,
            action="violation",
            outcome="done",
            subject=v.user,
            room=v.room_id,
            reason=f"{v.rule} (part of the same burst: removed, no new rung)",
            event_id=v.evidence.event_id,
        )
        await self.ledger.mark_processed(key, "violation")
        log.info("violation_in_same_burst", user=v.user, rule=v.rule, event_id=v.evidence.event_id)
        return True

    async def _act_on_stream(
        self, v: Violation, actor: Actor, key: str, ids: list[tuple[str, str]], first_activity: bool
    ) -> None:
        """A flood: stop the stream (the sanction) first, then clean up. Until the sanction is in
        force and ``v.sweep_s`` after, the user's further messages are swept (:meth:`sweeping`)."""
        self.begin_sweep(v.user)
        enforced = asyncio.Event()
        try:
            async with self._user_locks.setdefault(v.user, asyncio.Lock()):
                if await self._takes_a_rung(v, actor, key):
                    sanction = asyncio.ensure_future(
                        self._escalation(v, actor, first_activity, on_enforced=enforced.set)
                    )
                    waiter = asyncio.ensure_future(enforced.wait())
                    # The clean-up waits for the sanction to reach the homeserver, not for its
                    # notice and management-room line.
                    await asyncio.wait({sanction, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    cleanup = asyncio.gather(
                        *(self._redact(r, e, v.rule, Priority.REDACT) for r, e in ids), return_exceptions=True
                    )
                    try:
                        await sanction
                    finally:
                        await cleanup
                elif ids:
                    await asyncio.gather(*(self._redact(r, e, v.rule, Priority.REDACT) for r, e in ids))
        finally:
            self._sweeps[v.user] = time.monotonic() + v.sweep_s

    def begin_sweep(self, user: str) -> None:
        """From now until the sanction is in force (and a while after), remove all of ``user``'s messages."""
        self._sweeps[user] = None

    def sweeping(self, user: str) -> bool:
        """True while ``user``'s flood is being sanctioned, or was within its sweep window."""
        if user not in self._sweeps:
            return False
        until = self._sweeps[user]
        if until is None or until > time.monotonic():
            return True
        del self._sweeps[user]
        return False

    async def sweep(self, event: Event) -> None:
        """Remove one more message of a user whose flood is being (or was just) sanctioned."""
        await self._redact(event.room_id, event.event_id, "flood: the rest of the burst", Priority.REDACT)

    async def _redact(self, room_id: str, event_id: str, rule: str, priority: int = Priority.BAN) -> None:
        # One intent per event: a second redaction of it (replay, two protections) is the first.
        result = await self.moderation.outbox.do(redact_intent(room_id, event_id, f"Removed: {rule}", priority))
        if not result.ok:
            log.warning("redact_failed", room_id=room_id, event_id=event_id, error=result.error)

    async def escalate(
        self,
        user: str,
        rule: str,
        actor: Actor,
        *,
        severity: str = "minor",
        first_activity: bool = False,
        evidence: str = "",
        scope: Scope | None = None,
        reason: str | None = None,
        talk_after: Awaitable[Any] | None = None,
        on_enforced: Callable[[], None] | None = None,
        claim: str | None = None,
    ) -> Outcome:
        """Apply the ladder's next step to ``user`` for breaking ``rule``.

        ``talk_after``: the step (its ban, notice and line) waits for this, the redaction: a ban's,
        a DM room's creation and a post's requests compete with the redaction at the homeserver
        and measurably delay it (a newcomer's first spam: 2.25-2.54x the plain trip before).
        ``on_enforced`` is called once the step is in force on the homeserver (or recorded, for a
        warning), before its notice and management-room line.
        """
        m = self.moderation
        scope = scope or Scope.everywhere(m.store)
        history = await self.ledger.history(user, limit=500)
        decision = self.ladder.decide(
            history,
            _now_ms(),
            minor=severity == "minor",
            first_activity=first_activity,
            probation=await self.on_probation(user),
        )
        text = reason or f"{rule}" + (f' ("{evidence}")' if evidence else "")
        next_step = self.ladder.describe_next(decision.level)
        step = decision.step
        why = decision.why if decision.skipped else None  # more than the next rung: say why
        if talk_after is not None:
            # Whatever the step, the redaction is answered first: the ban's and the notice's
            # requests (a DM room's creation above all) compete with it at the homeserver.
            await talk_after
        if step.kind == "warning":
            outcome = await m.warn(
                user,
                text,
                actor,
                scope,
                rule=rule,
                level=decision.level,
                next_step=next_step,
                on_enforced=on_enforced,
                why=why,
                claim=claim,
            )
        else:
            sanction = m.mute if step.kind == "mute" else m.ban
            outcome = await sanction(
                user,
                text,
                actor,
                scope,
                duration_s=step.duration_s,
                rule=rule,
                level=decision.level,
                next_step=next_step,
                on_enforced=on_enforced,
                why=why,
                claim=claim,
            )
        log.info(
            "escalated", user=user, rule=rule, level=decision.level, step=str(step), why=decision.why, ok=outcome.ok
        )
        return outcome

    async def on_probation(self, user: str) -> bool:
        """Second-chance probation (a later feature records it in the ``probation`` table)."""
        until = await self.ledger.probation_until(user)
        return until is not None and until > _now_ms()

    async def _observe_violation(self, v: Violation, protection: str, first_activity: bool) -> None:
        history = await self.ledger.history(v.user, limit=500)
        decision = self.ladder.decide(
            history,
            _now_ms(),
            minor=v.severity == "minor",
            first_activity=first_activity,
            probation=await self.on_probation(v.user),
        )
        what = f"redact {v.evidence.event_id} and " if v.redact and v.evidence.event_id else ""
        await self.moderation.post(
            _text(
                f"[observe] {protection} would {what}apply {decision.step} to {v.user} ({decision.why}) "
                f'for {v.rule} in {self.moderation.store.label(v.room_id)}: "{v.evidence.excerpt}"'
            )
        )

    async def lock_room(self, intent: LockRoom, protection: str) -> None:
        """Switch to invite-only now; restore the previous join rule after ``intent.seconds``.

        The lock (and its restore, a job) is recorded before the room is closed: a crash in
        between leaves a record whose restore finds the room not closed by us and leaves it
        alone. The restore happens only while the join rule is still the one the bot set: a
        moderator's change during the lock is the newer decision.
        """
        m = self.moderation
        room_id = intent.room_id
        if room_id in self.locked:
            return  # already locked; the existing job restores it
        current = await m.api.hs.state_event(room_id, "m.room.join_rules") or {"join_rule": "public"}
        previous = current.get("join_rule", "public")
        if previous == LOCKED_RULE:
            await m.post(_text(f"⚠️ {protection}: {intent.reason}. {m.store.label(room_id)} is already invite-only."))
            return
        until_ms = int((time.time() + intent.seconds) * 1000)
        if not await self.ledger.add_room_lock(room_id, current, until_ms):
            return  # a lock recorded earlier (another run) is still pending: its restore stands
        self.locked.add(room_id)
        result = await m.outbox.do(
            outbox_intent("join_rule", room_id, content={**current, "join_rule": LOCKED_RULE}, priority=Priority.BAN)
        )
        if not result.ok:
            self.locked.discard(room_id)
            await self.ledger.remove_room_lock(room_id)
            await self.ledger.audit(
                actor=f"protection:{protection}",
                action="lock_room",
                outcome="failed",
                room=room_id,
                reason=intent.reason,
                detail={"error": result.error},
            )
            await m.post(
                _text(f"⚠️ {protection}: {intent.reason}. I could not close {m.store.label(room_id)}: {result.error}")
            )
            return
        await self.ledger.set_room_lock_event(room_id, str(result.value.get("event_id", "")))
        m.wake_scheduler.set()
        await self.ledger.audit(
            actor=f"protection:{protection}",
            action="lock_room",
            outcome="done",
            room=room_id,
            reason=intent.reason,
            detail={"seconds": intent.seconds, "previous": previous},
        )
        await m.post(
            _text(
                f"🔒 {protection}: {intent.reason}. {m.store.label(room_id)} is invite-only for "
                f"{intent.seconds}s; I will restore the join rule '{previous}' afterwards "
                "(unless a moderator changes it meanwhile)."
            )
        )

    async def unlock_job(self, job: Job) -> bool:
        """The scheduler's handler for ``unlock`` jobs."""
        return await self.unlock(job.key)

    async def unlock(self, room_id: str) -> bool:
        """Restore the join rule a lock replaced, if the room's join rule is still the event the
        lock set; then forget the lock. False when the homeserver did not answer (retried)."""
        locks = await self.ledger.room_locks()
        if room_id not in locks:
            self.locked.discard(room_id)
            return True
        lock = locks[room_id]
        previous = lock.previous.get("join_rule", "public")
        m = self.moderation
        guard: dict[str, Any] = (
            {"only_if_event": lock.locked_event} if lock.locked_event else {"only_if_rule": LOCKED_RULE}
        )
        result = await m.outbox.do(
            outbox_intent("join_rule", room_id, content=dict(lock.previous), priority=Priority.BAN, **guard)
        )
        if not result.ok:
            log.warning("unlock_failed", room_id=room_id, error=result.error)
            return False
        restored = None if result.value.get("left_alone") else previous
        found = result.value.get("found")
        await self.ledger.remove_room_lock(room_id)
        self.locked.discard(room_id)
        await self.ledger.audit(
            actor="pipeline",
            action="unlock_room",
            outcome="done",
            room=room_id,
            detail={"restored": restored, "found": found, "left_alone": restored is None},
        )
        if restored is None:
            text = (
                f"🔓 {m.store.label(room_id)}: the join-wave lock is over. Someone changed the join rule "
                f"(now '{found}') meanwhile, so I leave it as it is."
            )
        else:
            text = f"🔓 {m.store.label(room_id)}: join rule restored to '{restored}'."
        log.info("room_unlocked", room_id=room_id, restored=restored, found=found)
        await m.post(_text(text))
        return True

    def overridden(self, event: Event) -> bool:
        """A moderator (anyone but the bot) changed the join rule of a room the bot locked: the
        lock is theirs now. Its restore is dropped, so a later wave can lock the room again."""
        if event.room_id not in self.locked:
            return False
        self.locked.discard(event.room_id)
        return True

    async def release(self, event: Event) -> None:
        """Forget a lock a moderator overrode (and its restore job), and say so."""
        await self.ledger.remove_room_lock(event.room_id)
        await self.ledger.audit(
            actor=event.sender,
            action="unlock_room",
            outcome="done",
            room=event.room_id,
            detail={"overridden_by": event.sender, "join_rule": event.content.get("join_rule")},
            event_id=event.event_id,
        )
        m = self.moderation
        await m.post(
            _text(
                f"🔓 {m.store.label(event.room_id)}: {event.sender} changed the join rule to "
                f"'{event.content.get('join_rule')}' during the join-wave lock; the lock is over and I will not "
                "restore anything."
            )
        )

    async def unlock_now(self, room_id: str) -> bool:
        """End a lock early (``!mod unlock``); False when the bot holds no lock on the room."""
        if room_id not in await self.ledger.room_locks():
            return False
        await self.unlock(room_id)
        return True

    async def resume_locks(self) -> None:
        """After a restart: know which rooms are locked (their restores are jobs, already due or not)."""
        self.locked = set(await self.ledger.room_locks())


class Pipeline:
    """Feeds events to protections and their intents to the executor."""

    def __init__(self, config: Config, store: RoomStore, moderation: Moderation, ledger: Ledger) -> None:
        self.config = config
        self.store = store
        self.moderation = moderation
        self.ledger = ledger
        self.ladder = parse_ladder_config(config)
        self.executor = Executor(moderation, ledger, self.ladder)
        self.context = PipelineContext(store, moderation.bot_user_id)
        self.setups: dict[str, Setup] = {}
        self.instances: dict[str, Protection] = {}
        #: Users seen active this run (their first activity is behind them) and users who joined
        #: new to the community and have not acted yet.
        self._known: set[str] = set()
        self._newcomers: set[str] = set()
        self.errors = 0
        #: Told each protection's time on each event (the metrics), when set.
        self.observe: Callable[[str, float], None] | None = None
        #: How intents are run: awaited inline by default; the bot runs them as tasks of the batch.
        self.spawn: Callable[[Coroutine[Any, Any, None]], object] = _inline

    async def load(self) -> None:
        """Build the protections from config plus what moderators changed (persisted)."""
        overrides = await self.ledger.protection_settings()
        self.setups = parse_setups(self.config, overrides)
        self.instances = {name: REGISTRY[name]() for name in self.setups}

    def exempt(self, user_id: str, room: RoomState) -> bool:
        """True when protections must leave ``user_id`` alone in ``room``."""
        return refusal(user_id, room, self.moderation.staff) is not None

    async def handle(self, event: Event) -> list[tuple[str, Intent]]:
        """Run every enabled protection on ``event``; act on what they find; return the intents."""
        if not self.store.is_protected(event.room_id):
            return []
        self.context.note_membership(event)
        room = self.store.room(event.room_id)
        if (
            event.type == "m.room.join_rules"
            and event.sender != self.moderation.bot_user_id
            and self.executor.overridden(event)
        ):
            await self.spawn_or_run(self.executor.release(event))
        if self.exempt(event.sender, room):
            return []
        if event.type in SWEPT_TYPES and self.executor.sweeping(event.sender):
            # The rest of a burst being sanctioned: removed, and not a new violation.
            await self.spawn_or_run(self.executor.sweep(event))
            return []
        first_activity = await self._first_activity(event)
        found: list[tuple[str, Intent]] = []
        for name, protection in self.instances.items():
            setup = self.setups[name]
            if not setup.enabled or event.type not in protection.event_types:
                continue
            started = time.perf_counter() if self.observe is not None else 0.0
            try:
                intents = await protection.check(event, setup.settings_for(event.room_id), self.context)
                if self.observe is not None:
                    self.observe(name, time.perf_counter() - started)
            except Exception as err:
                self.errors += 1
                log.exception("protection_failed", protection=name, event_id=event.event_id, error=repr(err))
                continue
            for intent in intents:
                found.append((name, intent))
                if isinstance(intent, Violation) and intent.sweep_s > 0 and setup.mode == "act":
                    # Marked now, not when the task starts: the next event of this batch (the
                    # same burst, perhaps in another room) must already be swept.
                    self.executor.begin_sweep(intent.user)
                await self.spawn_or_run(self._run_intent(intent, name, setup.mode, first_activity, event.event_id))
        if found:
            log.info(
                "event_processed",
                room_id=event.room_id,
                event_id=event.event_id,
                sender=event.sender,
                protections_hit=sorted({n for n, _ in found}),
            )
        return found

    async def spawn_or_run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task of the batch (the bot) or inline (tests, benchmarks)."""
        result = self.spawn(coro)
        if asyncio.iscoroutine(result):
            await result

    async def _first_activity(self, event: Event) -> bool:
        """Whether ``event`` is the first activity of a user new to the community.

        New: no earlier membership in any protected room (room state) and no earlier message or
        record (the ledger), when their join arrived. Their first non-membership event is their
        first activity; after it they are known, across restarts.
        """
        if event.type == "m.room.member":
            user = event.state_key or event.sender
            arrived = event.membership == "join" and event.prev_membership in (None, "invite", "knock")
            if arrived and user not in self._known and await self._new_to_community(user, event.room_id):
                self._newcomers.add(user)
            return False
        user = event.sender
        if user in self._known:
            return False
        self._known.add(user)
        # Still new only if nothing was recorded since the join (a moderator's warning, a ban
        # lifted again): any record makes them someone the community knows.
        first = user in self._newcomers and not await self.ledger.is_known(user)
        self._newcomers.discard(user)
        await self.ledger.mark_known(user)
        return first

    async def _new_to_community(self, user: str, joined_room: str) -> bool:
        for room_id in self.store.protected:
            if room_id != joined_room and self.store.room(room_id).membership(user) in ("join", "leave", "ban"):
                return False
        return not await self.ledger.is_known(user)

    async def _run_intent(self, intent: Intent, name: str, mode: str, first_activity: bool, event_id: str) -> None:
        try:
            await self.executor.run(intent, name, mode, first_activity=first_activity)
        except Exception as err:
            self.errors += 1
            log.exception("intent_failed", protection=name, event_id=event_id, error=repr(err))

    # -- moderator controls (persisted) -------------------------------------------------------------

    async def _persist(self, name: str, **changes: Any) -> None:
        overrides = await self.ledger.protection_settings()
        entry = overrides.setdefault(name, {})
        for key, value in changes.items():
            if key == "settings":
                entry.setdefault("settings", {}).update(value)
            else:
                entry[key] = value
        self.setups = parse_setups(self.config, overrides)  # validates before saving
        await self.ledger.change_protection(
            name, enabled=changes.get("enabled"), mode=changes.get("mode"), settings=changes.get("settings")
        )

    async def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable a protection (persisted)."""
        await self._persist(name, enabled=enabled)

    async def set_mode(self, name: str, mode: str) -> None:
        """Switch a protection between act and observe (persisted)."""
        await self._persist(name, mode=mode)

    async def set_value(self, name: str, key: str, value: Any) -> None:
        """Change one setting (validated, persisted)."""
        await self._persist(name, settings={key: value})

    def describe(self) -> list[str]:
        """One line per protection: state, mode, settings, as a moderator reads them."""
        lines = []
        for name, setup in sorted(self.setups.items()):
            state = "enabled" if setup.enabled else "disabled"
            settings = ", ".join(
                f"{f.name}={show_setting(getattr(setup.settings, f.name))}" for f in attrs.fields(type(setup.settings))
            )
            lines.append(f"{name}: {state}, {setup.mode}" + (f" — {settings}" if settings else ""))
        return lines


def show_setting(value: Any, most: int = 6) -> str:
    """A setting's value as typed in the config, not as Python prints it: on/off, ``10``,
    ``a, b, c`` (long lists cut with "… (N in all)"), ``none`` for an empty list."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple | list):
        if not value:
            return "none"
        shown = ", ".join(str(item) for item in value[:most])
        return f"[{shown}, … ({len(value)} in all)]" if len(value) > most else f"[{shown}]"
    return str(value)


def _text(text: str) -> Message:
    return Message(text, html.escape(text))


def _inline(coro: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None]:
    return coro


def _now_ms() -> int:
    return int(time.time() * 1000)
