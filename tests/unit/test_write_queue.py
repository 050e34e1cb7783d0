from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from abusebot.matrix import Homeserver, HomeserverUnavailable, MatrixError, Priority, Write, WriteQueue

LIMITED = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests"}


class FakeHomeserver:
    """Answers each request from a script: an exception to raise, or a reply to return."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str, Any]] = []

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        self.requests.append((method, path, body))
        outcome = self.script.pop(0) if self.script else {"event_id": "$ok"}
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class RecordingSleep:
    """An injected sleep that records how long it was asked to wait and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@asynccontextmanager
async def write_queue(homeserver: Any, sleep: RecordingSleep, **options: Any) -> AsyncIterator[WriteQueue]:
    """A WriteQueue over a fake homeserver, closed afterwards."""
    queue = WriteQueue(cast(Homeserver, homeserver), sleep=sleep, **options)
    try:
        yield queue
    finally:
        await queue.close()


def write(label: str = "send", priority: int = Priority.MESSAGE) -> Write:
    return Write(priority, "PUT", f"/{label}", {"label": label}, label)


def jittered(base: float, attempt: int) -> Callable[[float], bool]:
    """Whether a wait is the ±20 % jittered exponential backoff for ``attempt``."""
    nominal = base * 2 ** (attempt - 1)
    return lambda wait: 0.8 * nominal - 0.05 <= wait <= 1.2 * nominal


class TestRateLimits:
    async def test_waits_retry_after_ms_from_body(self) -> None:
        """A 429 with retry_after_ms in the body waits that long, then retries and succeeds."""
        sleep = RecordingSleep()
        hs = FakeHomeserver(MatrixError(429, {**LIMITED, "retry_after_ms": 1234}), {"event_id": "$sent"})
        async with write_queue(hs, sleep) as queue:
            assert (await queue.submit(write()), sleep.calls) == (
                {"event_id": "$sent"},
                [pytest.approx(1.234, abs=0.05)],
            )

    async def test_waits_retry_after_header_without_body_field(self) -> None:
        """Without retry_after_ms, the Retry-After header (seconds) is honoured."""
        sleep = RecordingSleep()
        hs = FakeHomeserver(MatrixError(429, LIMITED, {"Retry-After": "3"}), {})
        async with write_queue(hs, sleep) as queue:
            await queue.submit(write())
        assert sleep.calls == [pytest.approx(3, abs=0.05)]

    async def test_body_field_wins_over_header(self) -> None:
        """When both are given, the body's retry_after_ms is used."""
        sleep = RecordingSleep()
        hs = FakeHomeserver(MatrixError(429, {**LIMITED, "retry_after_ms": 500}, {"Retry-After": "30"}), {})
        async with write_queue(hs, sleep) as queue:
            await queue.submit(write())
        assert sleep.calls == [pytest.approx(0.5, abs=0.05)]

    async def test_m_limit_exceeded_with_other_status_is_rate_limited(self) -> None:
        """M_LIMIT_EXCEEDED is a rate limit whatever the HTTP status."""
        sleep = RecordingSleep()
        hs = FakeHomeserver(MatrixError(400, {**LIMITED, "retry_after_ms": 200}), {})
        async with write_queue(hs, sleep) as queue:
            await queue.submit(write())
        assert sleep.calls == [pytest.approx(0.2, abs=0.05)]

    async def test_exponential_backoff_without_hints(self) -> None:
        """With neither body field nor header, waits double each attempt (with jitter)."""
        sleep = RecordingSleep()
        hs = FakeHomeserver(*(MatrixError(429, LIMITED) for _ in range(4)), {})
        async with write_queue(hs, sleep, base_backoff=1.0, max_backoff=60.0) as queue:
            await queue.submit(write())
        assert [jittered(1.0, n)(wait) for n, wait in enumerate(sleep.calls, start=1)] == [True] * 4

    async def test_backoff_is_capped(self) -> None:
        """Backoff never exceeds max_backoff (plus jitter)."""
        sleep = RecordingSleep()
        hs = FakeHomeserver(*(MatrixError(429, LIMITED) for _ in range(8)), {})
        async with write_queue(hs, sleep, base_backoff=1.0, max_backoff=4.0) as queue:
            await queue.submit(write())
        assert max(sleep.calls) <= 4.0 * 1.2

    async def test_attempts_are_capped_and_last_error_raised(self) -> None:
        """After max_attempts rate-limited tries the caller gets the last error."""
        errors = [MatrixError(429, {**LIMITED, "retry_after_ms": 10, "n": n}) for n in range(1, 6)]
        hs = FakeHomeserver(*errors)
        async with write_queue(hs, RecordingSleep(), max_attempts=3) as queue:
            with pytest.raises(MatrixError) as info:
                await queue.submit(write())
        assert (info.value is errors[2], len(hs.requests)) == (True, 3)

    async def test_counts_rate_limits(self) -> None:
        """Each rate-limited attempt is counted for status reporting."""
        hs = FakeHomeserver(*(MatrixError(429, {**LIMITED, "retry_after_ms": 1}) for _ in range(2)), {})
        async with write_queue(hs, RecordingSleep()) as queue:
            await queue.submit(write())
            assert queue.rate_limited_count == 2


class TestOtherErrors:
    @pytest.mark.parametrize("status", [400, 403, 404, 500])
    async def test_other_errors_are_not_retried(self, status: int) -> None:
        """A refusal like 403 M_FORBIDDEN is raised at once, without waiting or retrying."""
        sleep = RecordingSleep()
        hs = FakeHomeserver(MatrixError(status, {"errcode": "M_FORBIDDEN", "error": "no"}), {})
        async with write_queue(hs, sleep) as queue:
            with pytest.raises(MatrixError):
                await queue.submit(write())
        assert (len(hs.requests), sleep.calls) == (1, [])

    async def test_unavailable_homeserver_is_retried_with_backoff(self) -> None:
        """A connection failure is retried after exponential backoff until the homeserver answers."""
        sleep = RecordingSleep()
        hs = FakeHomeserver(HomeserverUnavailable("refused"), HomeserverUnavailable("reset"), {"event_id": "$ok"})
        async with write_queue(hs, sleep, base_backoff=0.5) as queue:
            result = await queue.submit(write())
        assert (result, [jittered(0.5, n)(w) for n, w in enumerate(sleep.calls, start=1)]) == (
            {"event_id": "$ok"},
            [True, True],
        )

    async def test_unavailable_homeserver_attempts_are_capped(self) -> None:
        """When the homeserver stays unreachable, the caller gets HomeserverUnavailable after max_attempts."""
        hs = FakeHomeserver(*(HomeserverUnavailable(f"down {n}") for n in range(5)))
        async with write_queue(hs, RecordingSleep(), max_attempts=4) as queue:
            with pytest.raises(HomeserverUnavailable, match="down 3"):
                await queue.submit(write())

    async def test_one_failure_does_not_stop_the_worker(self) -> None:
        """After a write fails, the same worker carries on with the next one."""
        hs = FakeHomeserver(MatrixError(403, {"errcode": "M_FORBIDDEN"}), {"event_id": "$next"})
        async with write_queue(hs, RecordingSleep(), workers=1) as queue:
            with pytest.raises(MatrixError):
                await queue.submit(write("first"))
            assert await queue.submit(write("second")) == {"event_id": "$next"}


class BlockingHomeserver:
    """Holds the first request until released; records the order requests arrive in."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.order: list[str] = []

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        self.order.append(path)
        if path == "/first":
            self.started.set()
            await self.release.wait()
        return {}


class TestPriorities:
    async def test_ban_jumps_ahead_of_redaction_and_message(self) -> None:
        """With one worker busy, a ban queued after a message and a redaction is sent first."""
        hs = BlockingHomeserver()
        async with write_queue(hs, RecordingSleep(), workers=1) as queue:
            first = asyncio.create_task(queue.submit(write("first", Priority.MESSAGE)))
            await asyncio.wait_for(hs.started.wait(), timeout=5)
            later = [
                asyncio.create_task(queue.submit(write(label, priority)))
                for label, priority in (
                    ("message", Priority.MESSAGE),
                    ("redact", Priority.REDACT),
                    ("state", Priority.STATE),
                    ("kick", Priority.MEMBERSHIP),
                    ("ban", Priority.BAN),
                )
            ]
            await _until(lambda: len(queue._heap) == len(later))
            hs.release.set()
            await asyncio.wait_for(asyncio.gather(first, *later), timeout=5)
        assert hs.order == ["/first", "/ban", "/kick", "/redact", "/state", "/message"]

    async def test_equal_priorities_keep_submission_order(self) -> None:
        """Writes of the same priority go out in the order they were queued."""
        hs = BlockingHomeserver()
        async with write_queue(hs, RecordingSleep(), workers=1) as queue:
            first = asyncio.create_task(queue.submit(write("first")))
            await asyncio.wait_for(hs.started.wait(), timeout=5)
            later = [asyncio.create_task(queue.submit(write(f"m{n}"))) for n in range(5)]
            await _until(lambda: len(queue._heap) == len(later))
            hs.release.set()
            await asyncio.wait_for(asyncio.gather(first, *later), timeout=5)
        assert hs.order == ["/first", "/m0", "/m1", "/m2", "/m3", "/m4"]


async def _until(condition: Callable[[], bool], rounds: int = 1000) -> None:
    """Let other tasks run until ``condition`` holds (bounded; no wall-clock sleeping)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")
