"""The event loop: log in, join, sync, hand each event to commands and protections.

Checkpointing is ours, not matrix-nio's: nio saves its sync token *before* callbacks run, so a
crash then loses the batch. We commit ``next_batch`` to the ledger only after the whole batch
is handled. Handlers key what they did by ``(event_id, action)``, so a batch replayed after a
crash acts only where it had not acted yet.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import html
import json
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import attrs
import structlog

from abusebot import __version__, cross_signing
from abusebot.actions import Moderation
from abusebot.audit import Message, bullet_list, room_pill
from abusebot.commands import CommandHandler
from abusebot.config import Config
from abusebot.crypto import Crypto
from abusebot.events import Event, parse_event
from abusebot.features import load_all as load_features
from abusebot.files import Session, load_session, prepare_data_dir, save_session, take_session_from_ledger
from abusebot.host import FACTORIES, Host, Role
from abusebot.ledger import Ledger
from abusebot.matrix import Api, Homeserver, HomeserverUnavailable, MatrixError, Priority, WriteQueue
from abusebot.metrics import Metrics, MetricsServer
from abusebot.outbox import Outbox
from abusebot.pipeline import Pipeline
from abusebot.rooms import RoomStore
from abusebot.safety import cannot_act, room_problems
from abusebot.scheduler import Scheduler
from policies.lists import PolicyManager

log = structlog.get_logger("abusebot.bot")

#: Timeline events per room per sync; Synapse's default of 10 makes gaps common.
TIMELINE_LIMIT = 100
#: Rooms joined at once at start.
JOIN_CONCURRENCY = 8
#: Encrypted events kept for their keys (the oldest dropped first) and key requests under way.
MAX_WAITING = 2000
MAX_KEY_REQUESTS_IN_FLIGHT = 20
#: Direct-chat invites from people the bot will not talk to, declined a minute (more are ignored).
DECLINES_PER_MINUTE = 10
#: A sender whose encrypted messages stay unreadable this often in this window: one alert.
UNREADABLE_ALERT_AFTER = 3
UNREADABLE_WINDOW_S = 3600.0
#: At most this many events are fetched to fill one gap (a limited sync) before we move on.
MAX_GAP_EVENTS = 2000
SYNC_FILTER = json.dumps(
    {
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {
            "timeline": {"limit": TIMELINE_LIMIT},
            "ephemeral": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
            "state": {"lazy_load_members": False},
        },
    },
    separators=(",", ":"),
)
#: The very first sync only learns state: its timeline is history we must not punish.
FIRST_SYNC_FILTER = SYNC_FILTER.replace(f'"limit":{TIMELINE_LIMIT}', '"limit":1')

EventHook = Callable[[Event], Awaitable[object]]


class StartupError(Exception):
    """The bot cannot start (cannot log in, cannot reach the management room)."""


class Bot:
    """One running abusebot."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = RoomStore()
        self.started_at = time.time()
        self.last_sync_at: float | None = None
        self.last_event_ts: int | None = None
        self.events_handled = 0
        #: Extra observers of every event after the features (tests and benchmarks use them).
        self.hooks: list[EventHook] = []
        self._awaiting_invite: set[str] = set()
        #: Protected room → whether the bot could ban and mute there when last looked at.
        self._could: dict[str, tuple[bool, bool]] = {}
        self._declined: collections.deque[float] = collections.deque()
        #: Rooms whose whole state was read in this run (the others know only what syncs said).
        self._state_read: set[str] = set()
        #: Configured rooms the bot is not in yet (as configured, and their id when it resolves).
        self._to_join: list[tuple[str, str | None, str]] = []
        #: Rooms just joined → the time of our join (ms): their first batch's older events are history.
        self._fresh: dict[str, int] = {}
        self._joiner: asyncio.Task[None] | None = None
        self.crypto: Crypto | None = None
        #: ``metrics.listen``: the counters, and the server of /metrics and /healthz.
        self.metrics: Metrics | None = Metrics(self) if config.metrics.listen is not None else None
        self._metrics_server: MetricsServer | None = None
        self._key_requests: set[asyncio.Task[None]] = set()
        #: sender → (first unreadable event in the window, how many, when the moderators were told).
        self._unreadable: dict[str, tuple[float, int, float]] = {}
        self.cross_signing: cross_signing.Standing | None = None
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self.ledger: Ledger
        self.hs: Homeserver
        self.queue: WriteQueue
        self.api: Api
        self.moderation: Moderation
        self.commands: CommandHandler
        self.scheduler: Scheduler
        self.outbox: Outbox
        self.pipeline: Pipeline
        self.policies: PolicyManager
        self.host: Host

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the ledger, log in, join the rooms, learn their state."""
        cfg = self.config
        for warning in cfg.warnings:
            log.warning("secret_readable_by_others", detail=warning)
        tightened = prepare_data_dir(cfg.data_dir)  # DataDirError: one line, exit 2 (cli)
        if tightened:
            log.warning("data_dir_made_private", note="others could read these; now only the bot can", paths=tightened)
        self.ledger = await Ledger.open(cfg.ledger_path)
        if self.metrics is not None and self._metrics_server is None and cfg.metrics.listen is not None:
            # Up before the homeserver is reached: /healthz says "starting" meanwhile.
            self._metrics_server = MetricsServer(self.metrics, *cfg.metrics.listen)
            await self._metrics_server.start()
        self.hs = Homeserver(cfg.homeserver, cfg.user_id, cfg.device_name)
        await self._login()
        self.queue = WriteQueue(self.hs)
        self.api = Api(self.hs, self.queue)
        await self._start_crypto()
        self.outbox = Outbox(self.ledger, self.api)
        self.moderation = Moderation(
            config=cfg,
            ledger=self.ledger,
            api=self.api,
            store=self.store,
            bot_user_id=self.hs.user_id,
            outbox=self.outbox,
        )
        self.pipeline = Pipeline(cfg, self.store, self.moderation, self.ledger)
        await self.pipeline.load()
        self.pipeline.spawn = self.spawn
        if self.metrics is not None:
            self.pipeline.observe = self.metrics.protection
            self.outbox.on_result = self.metrics.action
        self.policies = PolicyManager(cfg, self.store, self.moderation, self.ledger)
        self.commands = CommandHandler(
            self.moderation,
            self.store,
            cfg.command_prefix,
            self.status_message,
            pipeline=self.pipeline,
            policies=self.policies,
        )
        self.scheduler = Scheduler(self.ledger, self.moderation, alert_after=cfg.expiry_alert_after)
        self.scheduler.register("command", self.commands.command_job, "answering a command")
        self.host = Host(self.store, self.ledger)
        for name in load_features():
            self.host.add(FACTORIES[name](self))
        for spec in self.host.commands():
            self.commands.add(spec)
        self.commands.room_notes = self.host.room_problems
        self.commands.room_origins = self.host.origins
        await self._join_rooms()
        # After the management room is known (a resumed line posts there), before any new event:
        # what a crash left half done is finished first.
        resumed = await self.moderation.resume()
        await self.moderation.reach_rooms(self.store.protected)
        await self.host.start()
        commands = await self.commands.resume()
        if resumed or commands:
            log.warning("resumed_after_crash", infractions=resumed, commands=commands)
        if await self.ledger.get_kv("sync_token") is None:
            await self._first_sync()
        self.scheduler.start()
        trim_heap()  # what loading the lists and rooms left behind
        for room_id in self.store.protected:
            self._could.setdefault(room_id, self._powers(room_id))
        await self.announce_start()
        if self._to_join:
            self._joiner = asyncio.create_task(self._join_the_rest())
        log.info(
            "started",
            user_id=self.hs.user_id,
            management_room=self.store.management_id,
            protected_rooms=len(self.store.protected),
            version=__version__,
        )

    async def joined(self) -> None:
        """Return once the rooms of a first start are joined (at once when there were none)."""
        if self._joiner is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(self._joiner)

    @property
    def settled(self) -> bool:
        """True once the first sync is done and no configured room is still being joined."""
        return self.last_sync_at is not None and not self._to_join and (self._joiner is None or self._joiner.done())

    async def close(self) -> None:
        """Stop background work and close connections."""
        if self._joiner is not None and not self._joiner.done():
            self._joiner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._joiner
        with contextlib.suppress(AttributeError):
            await self.commands.close()
        with contextlib.suppress(AttributeError):
            # Left pending in the outbox: the next start resumes them.
            tasks = list(self.outbox.background)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(AttributeError):
            await self.scheduler.stop()
        with contextlib.suppress(AttributeError):
            await self.host.stop()
        with contextlib.suppress(AttributeError):
            await self.queue.close()
        with contextlib.suppress(AttributeError):
            await self.hs.close()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
            self._metrics_server = None
        with contextlib.suppress(AttributeError):
            await self.ledger.close()

    def stop(self) -> None:
        """Ask the loop to stop after the batch in hand."""
        self._stop.set()

    async def run(self) -> None:
        """Start, sync until stopped (SIGTERM/SIGINT), close."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        started = False
        try:
            await self._with_retry("start", self.start)
            started = True
            await self.sync_forever()
        finally:
            await self.close()
            if started:  # a failed start is one line from the CLI, not a log of stopping
                log.info("stopped")

    async def _with_retry(self, what: str, operation: Callable[[], Awaitable[None]]) -> None:
        """Retry ``operation`` while the homeserver is unreachable (it may still be starting)."""
        delay = 1.0
        while True:
            try:
                await operation()
                return
            except HomeserverUnavailable as err:
                if self._stop.is_set():
                    raise
                log.warning("homeserver_unavailable", during=what, retry_in_s=delay, error=str(err))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    raise
                delay = min(60.0, delay * 2)

    async def _login(self) -> None:
        cfg = self.config
        stored = load_session(cfg.data_dir) or await take_session_from_ledger(self.ledger, cfg.data_dir, cfg.user_id)
        device_id = stored.device_id if stored is not None else None
        token = cfg.access_token or (stored.access_token if stored is not None else None)
        if token:
            self.hs.restore(token, device_id)
            try:
                owner = await self.hs.whoami()
            except MatrixError as err:
                if err.status != 401 or not cfg.password:
                    raise StartupError(f"the access token was refused: {err}") from err
                log.warning("stored_token_refused", error=str(err))
            else:
                if owner == cfg.user_id or cfg.access_token:
                    self.hs.user_id = owner
                    return
                # A stored session of another account (data_dir reused): log in afresh.
                log.warning("stored_token_of_another_user", owner=owner, user_id=cfg.user_id)
                self.hs.user_id = cfg.user_id
                device_id = None
                if not cfg.password:
                    raise StartupError(f"the stored session belongs to {owner}, not {cfg.user_id}")
        if not cfg.password:
            raise StartupError("no usable access token and no password to log in with")
        try:
            await self.hs.login_password(cfg.password, device_id)
        except MatrixError as err:
            raise StartupError(f"login failed: {err.error or err}") from err
        save_session(cfg.data_dir, Session(self.hs.user_id, self.hs.device_id, self.hs.access_token))
        log.info("logged_in", user_id=self.hs.user_id, device_id=self.hs.device_id)

    async def _start_crypto(self) -> None:
        """This device's keys: loaded from ``data_dir/crypto`` (made and uploaded on a first
        start); from here on, sends to an encrypted room are encrypted."""
        if not self.hs.device_id:
            log.error("encryption_off", reason="the homeserver did not say which device the access token is for")
            return
        self.crypto = Crypto(self.hs.user_id, self.hs.device_id, self.config.data_dir / "crypto")
        await self.crypto.maintain(self.hs.request, self.api.write)
        self.api.encryptor = self._encrypt
        try:
            hs, cfg = self.hs, self.config
            self.cross_signing = await cross_signing.ensure(
                hs.request, self.api.write, cfg.data_dir, hs.user_id, hs.device_id, cfg.password
            )
        except (MatrixError, HomeserverUnavailable) as err:
            # Still reads and sends encrypted; clients that exclude unverified devices will not
            # share their keys with it until this works.
            log.error("cross_signing_failed", error=str(err))
        log.info(
            "encryption_ready",
            device_id=self.hs.device_id,
            ed25519=self.crypto.identity_keys.get("ed25519"),
            cross_signed=self.cross_signing is not None and self.cross_signing.complete,
        )

    def encrypted(self, room_id: str) -> bool:
        """True for a room whose state says it is encrypted."""
        return self.store.known(room_id) and self.store.room(room_id).get("m.room.encryption") is not None

    async def _encrypt(
        self, room_id: str, event_type: str, content: Mapping[str, Any]
    ) -> tuple[str, Mapping[str, Any]]:
        if self.crypto is None or not self.encrypted(room_id):
            return event_type, content
        state = self.store.room(room_id)
        members = [*state.members("join"), *state.members("invite")]
        encrypted = await self.crypto.encrypt(
            room_id, event_type, content, members, self.hs.request, self.api.write, state.content("m.room.encryption")
        )
        return "m.room.encrypted", encrypted

    async def _join(self, room: str) -> str:
        room_id = await self.api.join(room)
        await self._read_state(room_id)
        return room_id

    async def _read_state(self, room_id: str) -> list[dict[str, Any]]:
        events = await self.hs.room_state(room_id)
        self.store.room(room_id).apply_all(events)
        self._state_read.add(room_id)
        return events

    async def _join_new(
        self, room: str, room_id: str | None, priority: int = Priority.MEMBERSHIP, via: Sequence[str] = ()
    ) -> str:
        """Join a room the bot was not in. Its first timeline is history from before the join
        (up to the sync's limit, and older than our checkpoint): what precedes our join in it
        is learnt as state, never acted on (see :meth:`_live_events`)."""
        if room_id is not None:
            self._fresh[room_id] = int(time.time() * 1000)  # before the join: its first batch may come first
        joined = await self.api.join(room, priority, via)
        self.store.joined(joined)  # from here on actions reach it (its state comes with the join's sync)
        if room_id is None:  # an alias: marked only now (the first batch may have been handled)
            self._fresh.setdefault(joined, int(time.time() * 1000))
        for raw in await self._read_state(joined):
            if raw.get("type") == "m.room.member" and raw.get("state_key") == self.hs.user_id:
                ts = raw.get("origin_server_ts")
                if isinstance(ts, int) and joined in self._fresh:
                    self._fresh[joined] = ts
        return joined

    async def _join_rooms(self) -> None:
        """Join the management room, and protect the rooms the bot is already in. Rooms it is
        not in yet are marked as being joined, and :meth:`_join_the_rest` joins them in the
        background once commands are answered (500 joins take a SQLite Synapse most of a minute)."""
        cfg = self.config
        management = await self.ledger.get_kv("management_room_override") or cfg.management_room
        try:
            self.store.management_id = await self._join(management)
        except MatrixError as err:
            raise StartupError(f"cannot join the management room {management}: {err}") from err
        extra = await self.ledger.added_rooms()
        replaced = await self.ledger.room_upgrades()
        wanted = list(dict.fromkeys([*cfg.protected_rooms, *extra]))
        joined = set(await self.hs.joined_rooms())
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)

        async def resolve(room: str) -> str | None:
            async with gate:
                return await self.hs.room_id(room)

        ids = await asyncio.gather(*(resolve(room) for room in wanted))
        present = [room_id for room_id in ids if room_id is not None and room_id in joined]
        done = 0

        async def learn(room_id: str) -> None:
            nonlocal done
            async with gate:
                try:
                    await self._read_state(room_id)
                except MatrixError as err:
                    log.error("cannot_read_protected_room", room_id=room_id, error=str(err))
                finally:
                    done += 1
                    if len(present) > 20 and done % 100 == 0:
                        log.info("reading_rooms", done=done, total=len(present))

        await asyncio.gather(*(learn(room_id) for room_id in present))
        # Rooms are protected in the configured order all the same; a room upgraded while we
        # were away is not protected: its successor (in ``extra``) is.
        configured = set(cfg.protected_rooms)
        for room, room_id in zip(wanted, ids, strict=True):
            if room_id is not None and room_id in replaced:
                continue
            origin = "config" if room in configured else "upgrade"
            if room_id is not None and room_id in joined:
                self.store.protect(room_id, origin=origin)
            else:
                if room_id is not None:
                    self.store.protect(room_id, joining=True, origin=origin)
                self._to_join.append((room, room_id, origin))

    async def _join_the_rest(self) -> None:
        """Join the configured rooms the bot is not in yet, a few at a time, with progress in
        the log and one summary line in the management room. Each is protected once joined."""
        todo, self._to_join = self._to_join, []
        if not todo:
            return
        started = time.monotonic()
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)
        joined: list[str] = []
        failed: list[str] = []
        log.info("joining_rooms", done=0, total=len(todo))

        async def join(room: str, room_id: str | None, origin: str) -> None:
            async with gate:
                try:
                    new = await self._join_new(room, room_id, Priority.BACKGROUND)
                except (MatrixError, HomeserverUnavailable) as err:
                    if room_id is not None:
                        self.store.unprotect(room_id, origin)  # a Space may protect it too
                        self._fresh.pop(room_id, None)
                    await self._await_invite(room)
                    failed.append(room)
                    log.error("cannot_join_protected_room", room=room, error=str(err), note="will join when invited")
                else:
                    self.store.protect(new, origin=origin)  # by id, when it was configured as an alias
                    joined.append(new)
                    await self._room_protected(new)
                done = len(joined) + len(failed)
                if done % 50 == 0 or done == len(todo):
                    log.info("joining_rooms", done=done, total=len(todo))

        await asyncio.gather(*(join(room, room_id, origin) for room, room_id, origin in todo))
        seconds = time.monotonic() - started
        problems = {r: m for r, m in room_problems(self.store, self.hs.user_id).items() if r in set(joined)}
        head = f"Joined {len(joined)} room(s) in {seconds:.0f} s; protecting {len(self.store.protected)} room(s)"
        if failed:
            head += f"; could not join {len(failed)} (I join them when invited)"
        if problems:
            head += f"; in {len(problems)} of the new ones I lack a power I need:"
        log.info("rooms_joined", joined=len(joined), failed=len(failed), seconds=round(seconds, 1))
        trim_heap()
        await self.moderation.post(self._problem_list(head, problems))

    async def _await_invite(self, room: str) -> None:
        """Remember a configured room we could not join, so its invite is accepted later."""
        room_id = await self.hs.room_id(room)
        if room_id is not None:
            self._awaiting_invite.add(room_id)

    async def _first_sync(self) -> None:
        """Learn state and the current position; act on nothing in this sync's timeline."""
        response = await self.hs.sync(None, 0, FIRST_SYNC_FILTER)
        for room_id, joined in _mapping(_mapping(response.get("rooms")).get("join")).items():
            if self._relevant(room_id):
                self.store.room(room_id).apply_all(_list(_mapping(joined.get("state")).get("events")))
                for raw in _list(_mapping(joined.get("timeline")).get("events")):
                    if isinstance(raw, Mapping) and "state_key" in raw:
                        self.store.room(room_id).apply(raw)
        await self.ledger.commit_checkpoint(str(response["next_batch"]))
        self.last_sync_at = time.time()  # a completed sync: status shows it, and start-up waits end here
        log.info("first_sync", note="history before this start is not acted on")

    # -- the loop ---------------------------------------------------------------------------------

    async def sync_forever(self) -> None:
        """Long-poll ``/sync`` until stopped, surviving homeserver outages and rate limits."""
        backoff = 1.0
        while not self._stop.is_set():
            since = await self.ledger.get_kv("sync_token")
            request = asyncio.create_task(self.hs.sync(since, self.config.sync_timeout_ms, SYNC_FILTER))
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({request, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if self._stop.is_set():
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await request
                break
            try:
                response = request.result()
            except MatrixError as err:
                wait = err.retry_after() if err.rate_limited else None
                if err.status == 401 and self.config.password:
                    save_session(self.config.data_dir, None)
                    await self._with_retry("relogin", self._login)
                    continue
                wait = wait if wait is not None else backoff
                log.warning("sync_failed", status=err.status, errcode=err.errcode, retry_in_s=round(wait, 2))
                await self._pause(wait)
                backoff = min(60.0, backoff * 2)
                continue
            except HomeserverUnavailable as err:
                log.warning("sync_failed", error=str(err), retry_in_s=round(backoff, 2))
                await self._pause(backoff * random.uniform(0.8, 1.2))
                backoff = min(60.0, backoff * 2)
                continue
            backoff = 1.0
            await self.handle_sync(response, since)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _guarded(self, room_id: str) -> bool:
        """The management room or a protected room: what a direct chat never becomes (a kick
        and re-invite, or a tombstone, in a member's own room must not make it protected)."""
        return room_id == self.store.management_id or self.store.is_protected(room_id)

    def _relevant(self, room_id: str) -> bool:
        return (
            room_id == self.store.management_id
            or self.store.is_protected(room_id)
            or (hasattr(self, "host") and bool(self.host.roles_of(room_id)))
        )

    async def handle_sync(self, response: Mapping[str, Any], since: str | None) -> None:
        """Handle one sync batch, then commit its checkpoint."""
        started = time.perf_counter()
        rooms = _mapping(response.get("rooms"))
        handled = 0
        arrived: set[str] = set()
        if self.crypto is not None:
            # Room keys first: this batch's events may need them. Encryption failing is logged,
            # never fatal: moderation does not depend on it.
            try:
                arrived = self.crypto.receive(response)
                await self.crypto.maintain(self.hs.request, self.api.write)
            except Exception as err:
                log.exception("key_maintenance_failed", error=repr(err))
        for room_id, invited in _mapping(rooms.get("invite")).items():
            await self._on_invite(room_id, _mapping(invited))
        for room_id, joined in _mapping(rooms.get("join")).items():
            if not isinstance(joined, Mapping):
                continue
            handled += await self._handle_room(room_id, joined, since)
        if arrived:
            # Events that waited for a key that came in this batch (perhaps before a restart):
            # handled now, late; forgotten only once handled.
            waiting = await self.ledger.waiting_for(arrived)
            for room_id, raw in waiting:
                if self._relevant(room_id):
                    handled += await self._dispatch_raw(room_id, raw, late=True)
            await self.ledger.forget_waiting(str(raw.get("event_id")) for _, raw in waiting)
        for room_id in _mapping(rooms.get("leave")):
            if self._guarded(room_id):
                text = f"⚠️ I am no longer in {self.store.label(room_id)} ({room_id}); I cannot protect it."
                log.error("removed_from_room", room_id=room_id)
                await self.moderation.post(Message(text, html.escape(text)))
            elif self.host.roles_of(room_id):
                await self.host.room_left(room_id)
        if self._batch_tasks:
            # Actions started by this batch run concurrently; the checkpoint waits for all of them.
            await asyncio.gather(*self._batch_tasks, return_exceptions=True)
            self._batch_tasks.clear()
        next_batch = response.get("next_batch")
        if isinstance(next_batch, str):
            await self.ledger.commit_checkpoint(next_batch)
        self.last_sync_at = time.time()
        if handled:
            log.info("batch", events=handled, ms=round((time.perf_counter() - started) * 1000, 2))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as part of the current batch (the checkpoint waits for it)."""
        self._batch_tasks.add(asyncio.create_task(coro))

    async def _on_invite(self, room_id: str, invited: Mapping[str, Any]) -> None:
        # Accept invites to the rooms we are configured for, and those a feature wants (a
        # member's direct chat); ignore every other invite.
        if await self.policies.on_invite(room_id):
            return  # a watched list we could not join at start
        wanted = {*self.config.protected_rooms, *self._awaiting_invite}
        if room_id not in wanted and not self._guarded(room_id):
            inviter, direct = self._invite_of(invited)
            owner = self.host.invite_owner(room_id, inviter, direct) if inviter else None
            if owner is None:
                if direct and self._may_decline():
                    # Declined, not left pending: the person sees the bot will not talk to them.
                    # A few a minute: a flood of invites costs the homeserver nothing more.
                    await self._quietly(self.api.leave(room_id))
                    log.info("invite_declined", room_id=room_id, inviter=inviter)
                else:
                    log.info("invite_ignored", room_id=room_id)
                return
            if await self._accept(room_id):
                await owner.accepted(room_id, inviter)
            return
        banned = self.policies.is_room_banned(room_id)
        if banned is not None:
            log.warning("invite_refused", room_id=room_id, list=banned.list_room, entity=banned.entity)
            return
        if not await self._accept(room_id):
            return
        self._awaiting_invite.discard(room_id)
        if room_id != self.store.management_id and not self.policies.is_list_room(room_id):
            self.store.protect(room_id)
            await self._room_protected(room_id)
        log.info("accepted_invite", room_id=room_id)

    async def join_watched(self, room: str, via: Sequence[str] = ()) -> str:
        """Join (once) a room a feature watches without protecting it (a suggestions room, a
        Space); what was said there before the join is history, never acted on. Returns the
        room's id."""
        room_id = await self.hs.resolve_alias(room) if room.startswith("#") else room
        if room_id in set(await self.hs.joined_rooms()):
            await self.ensure_state(room_id)
            return str(room_id)
        return await self._join_new(room, room_id, via=via)

    async def protect_room(self, room_id: str, origin: str) -> bool:
        """Protect ``room_id`` because of ``origin`` (``space``, ``subspace``), joining it first when the
        bot is not in it (what was said there before is history). A room that becomes protected
        gets every sanction in force everywhere (:meth:`_room_protected`). True when it was not
        protected before; a failed join raises, and leaves the room unprotected."""
        if self.store.is_protected(room_id):
            self.store.protect(room_id, origin=origin)
            return False
        if room_id in set(await self.hs.joined_rooms()):
            await self.ensure_state(room_id)
            self.store.protect(room_id, origin=origin)
        else:
            self.store.protect(room_id, joining=True, origin=origin)
            try:
                await self._join_new(room_id, room_id)
            except BaseException:
                self.store.unprotect(room_id, origin)
                self._fresh.pop(room_id, None)
                raise
        await self._room_protected(room_id)
        return True

    async def ensure_state(self, room_id: str) -> None:
        """Read ``room_id``'s whole state once in this run (a direct chat quiet since the start
        is known only by what syncs said of it)."""
        if room_id not in self._state_read:
            await self._read_state(room_id)

    def _may_decline(self) -> bool:
        """At most :data:`DECLINES_PER_MINUTE` invites declined a minute."""
        now = time.monotonic()
        while self._declined and now - self._declined[0] > 60:
            self._declined.popleft()
        if len(self._declined) >= DECLINES_PER_MINUTE:
            return False
        self._declined.append(now)
        return True

    async def _room_protected(self, room_id: str) -> None:
        """A room became protected while running: every ban and mute in force everywhere
        reaches it, then the features hear of it. A failure is logged; it never stops the joins
        or the loop."""
        self._could[room_id] = self._powers(room_id)
        await self._reach_quietly(room_id)
        await self.host.room_added(room_id)

    def _powers(self, room_id: str) -> tuple[bool, bool]:
        """Whether the bot may ban, and mute, in ``room_id`` (as its state says now)."""
        room = self.store.room(room_id)
        return cannot_act(room, self.hs.user_id, "ban") is None, cannot_act(room, self.hs.user_id, "mute") is None

    def _power_changed(self, room_id: str) -> None:
        """A protected room's power levels changed: given a power it lacked, the bot owes the
        room every sanction in force everywhere that it could not apply there (a Space's child
        joined at level 0 and raised later)."""
        now = self._powers(room_id)
        before = self._could.get(room_id, now)
        self._could[room_id] = now
        if any(after and not earlier for after, earlier in zip(now, before, strict=True)):
            log.info("room_power_gained", room_id=room_id)
            self.spawn(self._reach_quietly(room_id))

    async def _reach_quietly(self, room_id: str) -> None:
        try:
            await self.moderation.reach_rooms([room_id], everyone=True)
        except Exception as err:
            log.exception("reach_room_failed", room_id=room_id, error=repr(err))

    async def _accept(self, room_id: str) -> bool:
        """Join a room we were invited to; False (logged) when the join fails."""
        try:
            await self._join_new(room_id, room_id)
        except (MatrixError, HomeserverUnavailable) as err:
            self._fresh.pop(room_id, None)
            log.warning("invite_join_failed", room_id=room_id, error=str(err))
            return False
        return True

    def _invite_of(self, invited: Mapping[str, Any]) -> tuple[str, bool]:
        """Who invited the bot, and whether as a direct chat (from the invite's stripped state)."""
        for raw in _list(_mapping(invited.get("invite_state")).get("events")):
            if (
                isinstance(raw, Mapping)
                and raw.get("type") == "m.room.member"
                and raw.get("state_key") == self.hs.user_id
                and isinstance(raw.get("sender"), str)
            ):
                return str(raw["sender"]), _mapping(raw.get("content")).get("is_direct") is True
        return "", False

    async def _handle_room(self, room_id: str, joined: Mapping[str, Any], since: str | None) -> int:
        if room_id not in self._state_read and hasattr(self, "host") and Role.DIRECT in self.host.roles_of(room_id):
            # A direct chat first heard of in this run (configured rooms and lists are read at
            # start): its whole state first, or an encrypted one would be answered in the clear.
            try:
                await self._read_state(room_id)
            except (MatrixError, HomeserverUnavailable) as err:
                log.warning("room_state_unread", room_id=room_id, error=str(err))
        state = self.store.room(room_id)
        block = _list(_mapping(joined.get("state")).get("events"))
        state.apply_all(block)
        changed = any(isinstance(raw, Mapping) and raw.get("type") == "m.room.member" for raw in block)
        if changed and self.crypto is not None and self.encrypted(room_id):
            self.crypto.room_changed(room_id)  # members changed behind a gap: a new room key
        if not self._relevant(room_id):
            for raw in _list(_mapping(joined.get("timeline")).get("events")):
                if isinstance(raw, Mapping):
                    state.apply(raw)
            return 0
        timeline = _mapping(joined.get("timeline"))
        events = _list(timeline.get("events"))
        gap: list[Any] = []
        if room_id in self._fresh or any(self._our_join(raw) for raw in events):
            # Our first batch of a room just joined (in this run, or before a crash that came
            # ahead of its checkpoint): what precedes our join is history.
            events, found, since_join = self._live_events(room_id, joined, events)
            if not found and timeline.get("limited") and since and isinstance(timeline.get("prev_batch"), str):
                # Our join is older than a truncated timeline: what came between it and the
                # timeline is live too (from our join on, or by time when the join is not there).
                gap = self._after_join(await self._fetch_gap(room_id, str(timeline["prev_batch"]), since), since_join)
        elif timeline.get("limited") and since and isinstance(timeline.get("prev_batch"), str):
            gap = await self._fetch_gap(room_id, str(timeline["prev_batch"]), since)
        count = 0
        # Gap events are older than the state block we just applied: dispatch, do not apply.
        for raw, live in [*((g, False) for g in gap), *((e, True) for e in events)]:
            if live and isinstance(raw, Mapping) and "state_key" in raw:
                state.apply(raw)
                if raw.get("type") == "m.room.member" and self.crypto is not None and self.encrypted(room_id):
                    self.crypto.room_changed(room_id)  # who may read the bot's next message changed
            count += await self._dispatch_raw(room_id, raw)
        return count

    async def _dispatch_raw(self, room_id: str, raw: Any, *, late: bool = False) -> int:
        """Decrypt (when encrypted and we can), parse and dispatch one timeline event.

        An event that cannot be decrypted is still handed on as ``m.room.encrypted`` (floods
        count it; joins, bans and lists need no content) and kept in the ledger until its key
        arrives; then its cleartext is handed on ``late`` (what counts events counted it once)."""
        if (
            self.crypto is not None
            and isinstance(raw, Mapping)
            and raw.get("type") == "m.room.encrypted"
            and "state_key" not in raw
        ):
            clear, session = self.crypto.decrypt(raw, room_id)
            if clear is None:
                if late:
                    return 0  # still unreadable: it was handed on as it is already
                if session is not None and isinstance(raw.get("event_id"), str):
                    await self._wait_for_key(room_id, raw, session)
            else:
                raw = clear
        event = parse_event(raw, room_id)
        if event is None:
            log.warning("unusable_event", room_id=room_id)
            return 0
        await self.dispatch(attrs.evolve(event, late=True) if late else event)
        return 1

    async def _wait_for_key(self, room_id: str, raw: Mapping[str, Any], session: str) -> None:
        """Keep the event for its key, ask the sender's devices for it (once per session, in
        the background), and tell the moderators about a sender whose messages stay unreadable."""
        assert self.crypto is not None
        await self.ledger.add_waiting(str(raw["event_id"]), room_id, session, raw, keep=MAX_WAITING)
        request = self.crypto.key_request(raw, room_id)
        if request is not None and len(self._key_requests) < MAX_KEY_REQUESTS_IN_FLIGHT:
            txn, body = request
            path = f"/_matrix/client/v3/sendToDevice/m.room_key_request/{txn}"
            task = asyncio.create_task(self._quietly(self.api.write("PUT", path, body, Priority.BACKGROUND)))
            self._key_requests.add(task)
            task.add_done_callback(self._key_requests.discard)
        sender = raw.get("sender")
        if isinstance(sender, str) and self.store.is_protected(room_id):
            await self._note_unreadable(sender, room_id)

    async def _note_unreadable(self, sender: str, room_id: str) -> None:
        now = time.monotonic()
        first, count, alerted = self._unreadable.get(sender, (now, 0, 0.0))
        if now - first > UNREADABLE_WINDOW_S:
            first, count = now, 0
        count += 1
        self._unreadable[sender] = (first, count, alerted)
        if len(self._unreadable) > 10_000:
            self._unreadable.pop(next(iter(self._unreadable)))
        if count >= UNREADABLE_ALERT_AFTER and now - alerted > UNREADABLE_WINDOW_S:
            self._unreadable[sender] = (first, count, now)
            text = (
                f"⚠️ I cannot read {sender}'s encrypted messages in {self.store.label(room_id)} ({count} in the last"
                f" hour): their client does not share its room keys with me. I still count them for floods, but I"
                f" cannot check what they say."
            )
            log.warning("unreadable_sender", sender=sender, room_id=room_id, count=count)
            await self.moderation.post(Message(text, html.escape(text)))

    @staticmethod
    async def _quietly(write: Awaitable[Any]) -> None:
        with contextlib.suppress(Exception):  # a key request is a courtesy; its failure changes nothing
            await write

    def _our_join(self, raw: Any) -> bool:
        """True for the event of the bot joining a room (not a profile change of a member)."""
        if not (
            isinstance(raw, Mapping)
            and raw.get("type") == "m.room.member"
            and raw.get("state_key") == self.hs.user_id
            and _mapping(raw.get("content")).get("membership") == "join"
        ):
            return False
        before = _mapping(_mapping(raw.get("unsigned")).get("prev_content")).get("membership")
        return before != "join"

    def _last_join(self, events: list[Any]) -> int | None:
        """Where the bot's own (latest) join is in ``events``, if it is there."""
        return next((n for n in range(len(events) - 1, -1, -1) if self._our_join(events[n])), None)

    def _after_join(self, events: list[Any], since_join: int) -> list[Any]:
        """Of a gap's events (oldest first), those after our join (by position, else by time)."""
        at = self._last_join(events)
        if at is not None:
            return events[at + 1 :]
        return [raw for raw in events if isinstance(raw, Mapping) and _ts(raw) >= since_join]

    def _live_events(self, room_id: str, joined: Mapping[str, Any], events: list[Any]) -> tuple[list[Any], bool, int]:
        """The events of a just-joined room's first timeline that came after our join, whether
        our join was in it, and the time of our join (ms, as far as known). The ones before it
        are applied as state where they are state, and not dispatched."""
        ours = self._our_join
        since = self._fresh.pop(room_id, 0)
        at = self._last_join(events)
        found = at is not None
        if at is None:
            # Our join is older than this timeline (it is in the state block, or we know its
            # time): the leading events from before it are still history.
            for raw in _list(_mapping(joined.get("state")).get("events")):
                if ours(raw) and isinstance(raw.get("origin_server_ts"), int):
                    since = raw["origin_server_ts"]
            at = -1
            while at + 1 < len(events) and isinstance(events[at + 1], Mapping) and _ts(events[at + 1]) < since:
                at += 1
        state = self.store.room(room_id)
        history = events[: at + 1]
        for raw in history:
            if isinstance(raw, Mapping) and "state_key" in raw:
                state.apply(raw)
        if history:
            log.info("history_not_acted_on", room_id=room_id, events=len(history))
        return events[at + 1 :], found, since

    async def _fetch_gap(self, room_id: str, prev_batch: str, since: str) -> list[Any]:
        """Events between our last checkpoint and the start of a truncated timeline."""
        collected: list[Any] = []
        token: str | None = prev_batch
        while token and len(collected) < MAX_GAP_EVENTS:
            try:
                page = await self.hs.messages(room_id, token, direction="b", limit=100, end=since)
            except (MatrixError, HomeserverUnavailable) as err:
                log.warning("gap_fetch_failed", room_id=room_id, error=str(err))
                break
            chunk = _list(page.get("chunk"))
            if not chunk:
                break
            collected.extend(chunk)
            next_token = page.get("end")
            token = next_token if isinstance(next_token, str) and next_token != token else None
        collected.reverse()
        log.info("gap_filled", room_id=room_id, events=len(collected))
        return collected

    async def dispatch(self, event: Event) -> None:
        """Hand one event to the handlers; one that fails is logged, never fatal."""
        self.events_handled += 1
        if self.metrics is not None:
            self.metrics.event(event.type, event.is_state)
        if event.origin_server_ts:
            self.last_event_ts = event.origin_server_ts
        if event.sender == self.hs.user_id:
            # Never react to ourselves; but our own published rules are rules like any other.
            if event.is_state and Role.POLICY_LIST in self.host.roles_of(event.room_id):
                await self.host.dispatch(event, only={Role.POLICY_LIST})
            return
        bound = log.bind(room_id=event.room_id, event_id=event.event_id, sender=event.sender)
        if event.type == "m.room.power_levels" and event.state_key == "" and self.store.is_protected(event.room_id):
            self._power_changed(event.room_id)
        try:
            if event.type == "m.room.tombstone" and event.state_key == "" and self._guarded(event.room_id):
                await self._follow_upgrade(event)
                return  # a feature's room (a Space) follows its own upgrade
            # A command is obeyed (or refused) here, and then, like every event, meets the
            # policy lists and the protections: the prefix shields nothing. Moderators are exempt
            # from protections anyway; a protected room's admin is not (their "!mod" spam or a
            # burst of "!mod help" is spam or a flood like any other).
            await self.commands.handle(event)
        except Exception as err:
            bound.exception("event_handler_failed", handler="commands", error=repr(err), type=event.type)
        # Every feature that wants the event, each isolated and timed (the host logs a failure
        # with the feature's name and goes on with the others).
        await self.host.dispatch(event)
        for hook in self.hooks:
            try:
                await hook(event)
            except Exception as err:  # an observer failing never matters to the rest
                name = getattr(hook, "__qualname__", repr(hook))
                bound.exception("event_handler_failed", handler=name, error=repr(err), type=event.type)

    async def _follow_upgrade(self, event: Event) -> None:
        """A protected (or the management) room was upgraded: protect its replacement."""
        replacement = event.content.get("replacement_room")
        if not isinstance(replacement, str) or not replacement.startswith("!"):
            return
        if not self._guarded(event.room_id) or not await self.moderation.mark_source(
            _system_actor(event), "follow_upgrade"
        ):
            return
        old = event.room_id
        try:
            await self._join_new(replacement, replacement)
        except (MatrixError, HomeserverUnavailable) as err:
            self._fresh.pop(replacement, None)
            text = f"⚠️ {self.store.label(old)} was upgraded to {replacement}, but I could not join it: {err}"
            await self.moderation.post(Message(text, html.escape(text)))
            return
        management = old == self.store.management_id
        await self.ledger.record_upgrade(old, replacement, protect=not management)
        if management:
            self.store.management_id = replacement
            await self.ledger.set_kv("management_room_override", replacement)
        else:
            self.store.unprotect(old)
            self.store.protect(replacement, origin="upgrade")
            await self._room_protected(replacement)
        await self.ledger.audit(
            actor=event.sender,
            action="follow_upgrade",
            outcome="done",
            room=old,
            detail={"replacement": replacement},
            event_id=event.event_id,
        )
        text = f"Room {old} was upgraded; I now protect its replacement {replacement}."
        await self.moderation.post(Message(text, html.escape(text)))

    # -- status -----------------------------------------------------------------------------------

    async def status_message(self) -> Message:
        """``!mod status``: a summary that fits one event at any scale — counts, and only the
        rooms with a problem (``!mod rooms`` lists them all)."""
        counts = await self.ledger.counts()
        uptime = int(time.time() - self.started_at)
        lag = "never synced" if self.last_sync_at is None else f"{time.time() - self.last_sync_at:.1f}s since last sync"
        problems = room_problems(self.store, self.hs.user_id)
        rooms = self.store.protected
        members = sum(len(self.store.room(r).members()) for r in rooms)
        infractions = ", ".join(
            f"{count} {key.removeprefix('infractions_')}"
            for key, count in sorted(counts.items())
            if key.startswith("infractions_")
        )
        head = [
            f"abusebot {__version__} for {self.moderation.community}, "
            f"up {uptime // 3600}h{uptime % 3600 // 60:02d}m{uptime % 60:02d}s; "
            f"protecting {len(rooms)} room(s) ({members} memberships)"
            + (f"; joining {self.store.joining} more" if self.store.joining else ""),
            f"Sync: {lag}; {self.events_handled} events handled; rate-limited writes: {self.queue.rate_limited_count}",
            f"Ledger: infractions {infractions or 'none'}; {counts.get('audit_rows', 0)} audit rows; "
            f"{counts.get('pending_lifts', 0)} pending lift(s)",
            f"Outbox: {await self.ledger.outbox_depth()} intent(s) waiting; "
            f"{self.outbox.done_count} done, {self.outbox.failed_count} failed since start",
            self._encryption_line(await self.ledger.waiting_count()),
            *self.host.status(),
            *(f"⚠️ {line}" for line in self.host.room_problems()[:10]),
            f"Rooms with a problem: {len(problems)} of {len(rooms)}" + (" (details: !mod rooms)" if problems else ""),
        ]
        listing = self._problem_list(head[-1], problems)
        plain = "\n".join([*head[:-1], listing.plain])
        markup = "<br>".join(html.escape(line) for line in head[:-1]) + listing.html
        return Message(plain, markup)

    def _encryption_line(self, waiting: int) -> str:
        crypto = self.crypto
        if crypto is None:
            return "Encryption: off (no device id)"
        standing = self.cross_signing
        signed = (
            f"cross-signed (master key {standing.master})"
            if standing is not None and standing.complete
            else "NOT cross-signed (see the log)"
        )
        return (
            f"Encryption: device {self.hs.device_id}, {signed}; {crypto.decrypted} decrypted,"
            f" {crypto.undecryptable} undecryptable, {waiting} waiting for a key"
        )

    async def announce_start(self) -> None:
        """Tell the management room the bot is up, and where it lacks a power it needs."""
        problems = room_problems(self.store, self.hs.user_id)
        head = f"✅ abusebot {__version__} started: protecting {len(self.store.protected)} room(s)"
        if self._to_join:
            head += f", joining {len(self._to_join)} more (I say so when done)"
        unjoined = self.host.room_problems()
        if unjoined:
            head += "; " + "; ".join(f"⚠️ {line}" for line in unjoined[:10])
            if len(unjoined) > 10:
                head += f"; and {len(unjoined) - 10} more (!mod rooms)"
        if problems:
            head += f"; in {len(problems)} of them I lack a power I need:"
            for room_id, missing in problems.items():
                log.warning("room_power_missing", room_id=room_id, missing=missing)
        await self.moderation.post(self._problem_list(head, problems))

    def _problem_list(self, head: str, problems: Mapping[str, Sequence[str]]) -> Message:
        """``head`` and the rooms with a problem, each with what the bot lacks there (pills in HTML)."""
        items = [f"{self.store.label(r)} ({r}): missing {', '.join(missing)}" for r, missing in problems.items()]
        rich = [
            f"{room_pill(r, self.store.label(r))}: missing {html.escape(', '.join(missing))}"
            for r, missing in problems.items()
        ]
        return bullet_list(head, items, limit=20, max_chars=8000, html_items=rich)


def trim_heap() -> None:
    """Collect, then give the heap that a big load freed back to the OS: glibc keeps freed memory
    for reuse, so the peak of a first start (every room's state arriving at once, a large list
    streamed in) would otherwise stay the bot's resident size for good."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _system_actor(event: Event) -> Any:
    from abusebot.actions import Actor

    return Actor(event.sender, "system", event.event_id)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ts(raw: Mapping[str, Any]) -> int:
    ts = raw.get("origin_server_ts")
    return ts if isinstance(ts, int) else 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
