"""Every timed thing, one scheduler: sanction lifts, room unlocks, and what features add.

The ledger's ``jobs`` table is the source of truth (kind, key, payload, due time, attempts,
state); this loop only sleeps until the earliest due job (or until woken because a new one was
scheduled) and hands each due job to the handler registered for its kind. A job that fails is
retried with backoff until it succeeds; after ``alert_after`` failures the management room is
told, once. Jobs that fell due while the bot was down run as soon as it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from abusebot.actions import Moderation
from abusebot.audit import Message
from abusebot.ledger import Job, Ledger, now_ms

log = structlog.get_logger("abusebot.scheduler")

#: The loop re-reads the ledger at least this often, whatever it expects.
MAX_SLEEP_S = 60.0
BACKOFF_BASE_MS = 5_000
BACKOFF_MAX_MS = 15 * 60_000

#: A job handler: True when the job is done (or moot), False to retry later; may raise.
JobHandler = Callable[[Job], Awaitable[bool]]


class Scheduler:
    """Runs due jobs through the handler of their kind."""

    def __init__(self, ledger: Ledger, moderation: Moderation, *, alert_after: int = 3) -> None:
        self.ledger = ledger
        self.moderation = moderation
        self.alert_after = alert_after
        self.wake = moderation.wake_scheduler
        self._task: asyncio.Task[None] | None = None
        self.handlers: dict[str, tuple[JobHandler, str]] = {}
        self.register("lift", self._lift, "lifting a sanction")

    def register(self, kind: str, handler: JobHandler, what: str) -> None:
        """Run jobs of ``kind`` with ``handler``; ``what`` names them in an alert."""
        if kind in self.handlers:
            raise ValueError(f"a handler for {kind!r} jobs is already registered")
        self.handlers[kind] = (handler, what)

    def start(self) -> None:
        """Start the loop in the background."""
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        """Stop the loop (pending jobs stay in the ledger)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.run_due()
            except Exception as err:  # the loop must outlive any single bad job
                log.exception("scheduler_error", error=repr(err))
            next_at = await self.ledger.next_job_time()
            delay = MAX_SLEEP_S if next_at is None else max(0.0, (next_at - now_ms()) / 1000)
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), min(delay, MAX_SLEEP_S))

    async def run_due(self) -> int:
        """Run every job that is due now; return how many succeeded."""
        finished = 0
        for job in await self.ledger.due_jobs(now_ms()):
            handler, what = self.handlers.get(job.kind, (None, job.kind))
            error = ""
            if handler is None:
                ok, error = False, f"no handler for {job.kind!r} jobs"
            else:
                try:
                    ok = await handler(job)
                except Exception as err:
                    ok, error = False, repr(err)
            if ok:
                await self.ledger.finish_job(job.id)
                finished += 1
                log.info("job_done", kind=job.kind, key=job.key, job_id=job.id)
                continue
            await self._retry(job, what, error)
        return finished

    async def _retry(self, job: Job, what: str, error: str) -> None:
        attempts = job.attempts + 1
        delay = min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempts - 1))
        alert = attempts >= self.alert_after and not job.alerted
        await self.ledger.retry_job(
            job.id, now_ms() + delay, error or "failed in some rooms", alerted=job.alerted or alert
        )
        log.warning("job_failed", kind=job.kind, key=job.key, attempts=attempts, retry_in_s=delay / 1000, error=error)
        if not alert:
            return
        subject = ""
        inf = await self.ledger.get_infraction(job.infraction_id) if job.infraction_id is not None else None
        if inf is not None:
            subject = f" ({inf.kind} #{inf.id} of {inf.subject})"
        text = (
            f"⚠️ {what.capitalize()}{subject} has failed {attempts} times; "
            f"I keep retrying (next in {delay // 1000}s). Last error: {error or 'see logs'}"
        )
        await self.moderation.post(Message(text, text))
        await self.ledger.audit(
            actor="scheduler",
            action=f"{job.kind}_alert",
            outcome="failed",
            subject=inf.subject if inf is not None else None,
            infraction_id=job.infraction_id,
            reason=error[:300],
        )

    async def _lift(self, job: Job) -> bool:
        """A temporary sanction's time is over: lift it (moot if it was lifted or pardoned)."""
        inf = await self.ledger.get_infraction(job.infraction_id) if job.infraction_id is not None else None
        if inf is None or inf.state != "active":
            return True  # pardoned or lifted by hand meanwhile
        ok = await self.moderation.expire(inf)
        if ok:
            log.info("sanction_expired", infraction_id=inf.id, subject=inf.subject, kind=inf.kind)
        return ok

