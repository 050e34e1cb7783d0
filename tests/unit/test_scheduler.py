"""The scheduler: due jobs run through their kind's handler; failures are retried with backoff and the
moderators alerted once; lifts of sanctions lifted meanwhile are moot.

A real :class:`Scheduler` and :class:`Moderation` over a real ledger (an SQLite file in ``tmp_path``)
and the :class:`FakeHomeserver`, with the scheduler's clock in the test's hands.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from abusebot import scheduler as scheduler_module
from abusebot.actions import Actor, Moderation, Scope
from abusebot.ledger import Job, Ledger, now_ms
from abusebot.matrix import MatrixError
from abusebot.rooms import RoomStore
from abusebot.scheduler import BACKOFF_BASE_MS, BACKOFF_MAX_MS, Scheduler
from abusebot.testing.fakes import FakeHomeserver
from tests.unit.test_moderation import ALICE, BOT, HOUR, MANAGEMENT, MOD, ROOMS, bodies, make_moderation, seed


@pytest.fixture
def hs() -> FakeHomeserver:
    """The fake homeserver (seeded by the ``store`` fixture)."""
    return FakeHomeserver(BOT)


@pytest.fixture
def store(hs: FakeHomeserver) -> RoomStore:
    """The rooms of the moderation tests, on the fake and in the store."""
    return seed(hs)


@pytest.fixture
def moderation(ledger: Ledger, hs: FakeHomeserver, store: RoomStore) -> Moderation:
    """A real Moderation over the ledger and the fake."""
    return make_moderation(ledger, hs, store)


class Clock:
    """The scheduler's ``now_ms``, moved by the test."""

    def __init__(self) -> None:
        self.now = now_ms()

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The scheduler's clock, frozen until a test moves it."""
    clock = Clock()
    monkeypatch.setattr(scheduler_module, "now_ms", clock)
    return clock


@pytest.fixture
def scheduler(ledger: Ledger, moderation: Moderation, clock: Clock) -> Scheduler:
    """A scheduler that alerts after three failures."""
    return Scheduler(ledger, moderation, alert_after=3)


def last_error(ledger: Ledger, kind: str, key: str) -> str | None:
    """The recorded error of the ``kind`` job of ``key`` (read with a second connection)."""
    db = sqlite3.connect(ledger.path)
    try:
        row = db.execute("SELECT last_error FROM jobs WHERE kind = ? AND key = ?", (kind, key)).fetchone()
    finally:
        db.close()
    return None if row is None else row[0]


async def job_of(ledger: Ledger, kind: str, key: str) -> Job:
    """The pending ``kind`` job of ``key``."""
    job = await ledger.pending_job(kind, key)
    assert job is not None
    return job


async def failing(job: Job) -> bool:
    """A handler that always raises."""
    raise RuntimeError("homeserver on fire")


class TestRunning:
    async def test_due_job_runs_its_handler_and_is_finished(
        self, scheduler: Scheduler, ledger: Ledger, clock: Clock
    ) -> None:
        """A job whose time has come is handed to its kind's handler (with its payload) and marked done."""
        handled: list[tuple[str, dict[str, object]]] = []

        async def handler(job: Job) -> bool:
            handled.append((job.key, dict(job.payload)))
            return True

        scheduler.register("ping", handler, "pinging")
        await ledger.add_job("ping", "k1", clock.now - 1, payload={"n": 1})
        assert await scheduler.run_due() == 1
        assert handled == [("k1", {"n": 1})]
        assert await ledger.pending_job("ping", "k1") is None
        assert await scheduler.run_due() == 0
        assert len(handled) == 1

    async def test_job_not_yet_due_waits(self, scheduler: Scheduler, ledger: Ledger, clock: Clock) -> None:
        """A job due in the future is not run until its time, then it is."""
        handled: list[str] = []

        async def handler(job: Job) -> bool:
            handled.append(job.key)
            return True

        scheduler.register("ping", handler, "pinging")
        await ledger.add_job("ping", "k1", clock.now + 60_000)
        assert await scheduler.run_due() == 0
        clock.now += 60_000
        assert await scheduler.run_due() == 1
        assert handled == ["k1"]

    async def test_registering_a_kind_twice_raises(self, scheduler: Scheduler) -> None:
        """A second handler for one kind is refused (``lift`` is registered by the scheduler itself)."""

        async def handler(job: Job) -> bool:
            return True

        scheduler.register("ping", handler, "pinging")
        with pytest.raises(ValueError, match="already registered"):
            scheduler.register("ping", handler, "pinging again")
        with pytest.raises(ValueError, match="'lift'"):
            scheduler.register("lift", handler, "lifting")

    async def test_unknown_kind_is_retried_not_crashed(
        self, scheduler: Scheduler, ledger: Ledger, clock: Clock
    ) -> None:
        """A job of a kind nobody handles stays pending, retried with its error; the jobs after it still run."""
        handled: list[str] = []

        async def handler(job: Job) -> bool:
            handled.append(job.key)
            return True

        scheduler.register("ping", handler, "pinging")
        await ledger.add_job("mystery", "m1", clock.now - 2)
        await ledger.add_job("ping", "k1", clock.now - 1)
        assert await scheduler.run_due() == 1
        assert handled == ["k1"]
        job = await job_of(ledger, "mystery", "m1")
        assert (job.attempts, job.next_attempt_at) == (1, clock.now + BACKOFF_BASE_MS)
        assert last_error(ledger, "mystery", "m1") == "no handler for 'mystery' jobs"


class TestRetries:
    async def test_failing_handler_is_retried_with_backoff(
        self, scheduler: Scheduler, ledger: Ledger, clock: Clock
    ) -> None:
        """Each failure doubles the wait (5 s, 10 s, 20 s, …) up to 15 minutes; the job is never dropped."""
        scheduler.register("ping", failing, "pinging")
        await ledger.add_job("ping", "k1", clock.now)
        waits: list[int] = []
        for _ in range(10):
            assert await scheduler.run_due() == 0
            job = await job_of(ledger, "ping", "k1")
            waits.append(job.next_attempt_at - clock.now)
            assert await scheduler.run_due() == 0  # not due again before its time
            clock.now = job.next_attempt_at
        assert waits == [min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2**n) for n in range(10)]
        assert waits[-1] == BACKOFF_MAX_MS
        assert (await job_of(ledger, "ping", "k1")).attempts == 10
        assert last_error(ledger, "ping", "k1") == "RuntimeError('homeserver on fire')"

    async def test_handler_saying_not_done_is_retried(self, scheduler: Scheduler, ledger: Ledger, clock: Clock) -> None:
        """A handler that returns False (lifted in some rooms only) is retried like one that raised."""

        async def partly(job: Job) -> bool:
            return False

        scheduler.register("ping", partly, "pinging")
        await ledger.add_job("ping", "k1", clock.now)
        await scheduler.run_due()
        assert (await job_of(ledger, "ping", "k1")).attempts == 1
        assert last_error(ledger, "ping", "k1") == "failed in some rooms"

    async def test_management_room_is_alerted_once_after_alert_after_failures(
        self, scheduler: Scheduler, ledger: Ledger, hs: FakeHomeserver, clock: Clock
    ) -> None:
        """After the third failure the management room is alerted once, with the error, and one alert is audited."""
        scheduler.register("ping", failing, "pinging")
        await ledger.add_job("ping", "k1", clock.now)
        posted: list[int] = []
        for _ in range(5):
            await scheduler.run_due()
            posted.append(len(bodies(hs, MANAGEMENT)))
            clock.now = (await job_of(ledger, "ping", "k1")).next_attempt_at
        assert posted == [0, 0, 1, 1, 1]
        [alert] = bodies(hs, MANAGEMENT)
        assert alert.startswith("⚠️ Pinging has failed 3 times; I keep retrying (next in 20s).")
        assert "homeserver on fire" in alert
        assert (await job_of(ledger, "ping", "k1")).alerted
        alerts = [row for row in await ledger.audit_rows() if row["action"] == "ping_alert"]
        assert [(row["actor"], row["outcome"]) for row in alerts] == [("scheduler", "failed")]


class TestLifts:
    async def ban(self, moderation: Moderation, store: RoomStore) -> int:
        """A one-hour ban of ALICE everywhere; its infraction id."""
        outcome = await moderation.ban(
            ALICE, "spam", Actor(MOD, "command", "$cmd1"), Scope.everywhere(store), duration_s=HOUR
        )
        assert outcome.infraction is not None
        return outcome.infraction.id

    async def test_due_lift_expires_a_temporary_ban(
        self,
        scheduler: Scheduler,
        moderation: Moderation,
        store: RoomStore,
        ledger: Ledger,
        hs: FakeHomeserver,
        clock: Clock,
    ) -> None:
        """When a temporary ban's time is over, its lift job unbans everywhere, expires it and is finished."""
        inf_id = await self.ban(moderation, store)
        assert await scheduler.run_due() == 0  # not yet
        clock.now = (await job_of(ledger, "lift", str(inf_id))).due_at
        assert await scheduler.run_due() == 1
        assert [hs.membership(room, ALICE) for room in ROOMS] == ["leave", "leave"]
        inf = await ledger.get_infraction(inf_id)
        assert inf is not None
        assert inf.state == "expired"
        assert await ledger.pending_job("lift", str(inf_id)) is None

    async def test_lift_of_a_pardoned_infraction_is_moot(
        self,
        scheduler: Scheduler,
        moderation: Moderation,
        store: RoomStore,
        ledger: Ledger,
        hs: FakeHomeserver,
        clock: Clock,
    ) -> None:
        """A lift job left for an infraction pardoned meanwhile is finished without acting or posting."""
        inf_id = await self.ban(moderation, store)
        assert (await moderation.pardon(inf_id, "mistake", Actor(MOD, "command", "$cmd2"))).ok
        await ledger.add_job("lift", str(inf_id), clock.now, infraction_id=inf_id)  # the stale job
        writes, sent = list(hs.writes), list(hs.sent)
        assert await scheduler.run_due() == 1
        assert (hs.writes, hs.sent) == (writes, sent)
        assert await ledger.pending_job("lift", str(inf_id)) is None
        inf = await ledger.get_infraction(inf_id)
        assert inf is not None
        assert inf.state == "pardoned"

    async def test_failing_lift_is_retried_and_alert_names_the_infraction(
        self,
        scheduler: Scheduler,
        moderation: Moderation,
        store: RoomStore,
        ledger: Ledger,
        hs: FakeHomeserver,
        clock: Clock,
    ) -> None:
        """A lift whose unbans fail stays pending and active; the alert names the ban and its subject."""
        inf_id = await self.ban(moderation, store)
        hs.fail["unban"] = MatrixError(500, {"error": "down"})
        clock.now = (await job_of(ledger, "lift", str(inf_id))).due_at
        for _ in range(3):
            assert await scheduler.run_due() == 0
            clock.now = (await job_of(ledger, "lift", str(inf_id))).next_attempt_at
        inf = await ledger.get_infraction(inf_id)
        assert inf is not None
        assert inf.state == "active"
        [alert] = [line for line in bodies(hs, MANAGEMENT) if line.startswith("⚠️")]
        assert alert.startswith(f"⚠️ Lifting a sanction (ban #{inf_id} of {ALICE}) has failed 3 times")

        del hs.fail["unban"]
        assert await scheduler.run_due() == 1
        assert [hs.membership(room, ALICE) for room in ROOMS] == ["leave", "leave"]


class TestLoop:
    async def test_started_loop_runs_a_job_scheduled_while_it_sleeps(
        self, ledger: Ledger, moderation: Moderation
    ) -> None:
        """The background loop, woken when a job is added, runs it without waiting for its next minute."""
        scheduler = Scheduler(ledger, moderation)
        ran = asyncio.Event()

        async def handler(job: Job) -> bool:
            ran.set()
            return True

        scheduler.register("ping", handler, "pinging")
        scheduler.start()
        try:
            await asyncio.sleep(0.05)  # the loop is asleep now (nothing due)
            await ledger.add_job("ping", "k1", now_ms())
            scheduler.wake.set()
            await asyncio.wait_for(ran.wait(), 5)
            for _ in range(100):  # the handler has answered; the loop marks the job done next
                if await ledger.pending_job("ping", "k1") is None:
                    break
                await asyncio.sleep(0.01)
        finally:
            await scheduler.stop()
        assert await ledger.pending_job("ping", "k1") is None
