"""Expiring sanctions: temporary mutes and bans end on time, even across restarts.

The ledger's ``jobs`` table is the source of truth; this loop only sleeps until the earliest
due lift (or until woken because a new one was scheduled). A lift that fails is retried with
backoff until it succeeds; after ``alert_after`` failures the management room is told, once.
Lifts that fell due while the bot was down run as soon as it starts.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from abusebot.actions import Moderation
from abusebot.audit import Message
from abusebot.ledger import Ledger, now_ms

log = structlog.get_logger("abusebot.scheduler")

#: The loop re-reads the ledger at least this often, whatever it expects.
MAX_SLEEP_S = 60.0
BACKOFF_BASE_MS = 5_000
BACKOFF_MAX_MS = 15 * 60_000


class ExpiryScheduler:
    """Lifts temporary sanctions when their time is over."""

    def __init__(self, ledger: Ledger, moderation: Moderation, *, alert_after: int = 3) -> None:
        self.ledger = ledger
        self.moderation = moderation
        self.alert_after = alert_after
        self.wake = moderation.wake_scheduler
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop in the background."""
        self._task = asyncio.create_task(self._run(), name="expiry-scheduler")

    async def stop(self) -> None:
        """Stop the loop (pending lifts stay in the ledger)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.run_due()
            except Exception as err:  # the loop must outlive any single bad lift
                log.exception("scheduler_error", error=repr(err))
            next_at = await self.ledger.next_job_time()
            delay = MAX_SLEEP_S if next_at is None else max(0.0, (next_at - now_ms()) / 1000)
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), min(delay, MAX_SLEEP_S))

    async def run_due(self) -> int:
        """Run every lift that is due now; return how many succeeded."""
        lifted = 0
        for job in await self.ledger.due_jobs(now_ms()):
            inf = await self.ledger.get_infraction(job.infraction_id)
            if inf is None or inf.state != "active":
                await self.ledger.finish_job(job.id)  # pardoned or lifted by hand meanwhile
                continue
            error = ""
            try:
                ok = await self.moderation.expire(inf)
            except Exception as err:
                ok, error = False, repr(err)
            if ok:
                await self.ledger.finish_job(job.id)
                lifted += 1
                log.info("sanction_expired", infraction_id=inf.id, subject=inf.subject, kind=inf.kind)
                continue
            attempts = job.attempts + 1
            delay = min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempts - 1))
            alert = attempts >= self.alert_after and not job.alerted
            await self.ledger.retry_job(
                job.id, now_ms() + delay, error or "lift failed in some rooms", alerted=job.alerted or alert
            )
            log.warning("lift_failed", infraction_id=inf.id, attempts=attempts, retry_in_s=delay / 1000)
            if alert:
                text = (
                    f"⚠️ Lifting {inf.kind} #{inf.id} of {inf.subject} has failed {attempts} times; "
                    f"I keep retrying (next in {delay // 1000}s). Last error: {error or 'see logs'}"
                )
                await self.moderation.post(Message(text, text))
                await self.ledger.audit(
                    actor="scheduler",
                    action="lift_alert",
                    outcome="failed",
                    subject=inf.subject,
                    infraction_id=inf.id,
                    reason=error[:300],
                )
        return lifted
