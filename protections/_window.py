"""Sliding windows of timestamps, shared by rate-style protections."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

#: Events whose timestamp is within this many seconds of now are "live": we count them at our
#: own clock (a sender-chosen timestamp must not spread a flood out). Older ones are a backlog
#: after a restart or a gap, counted at their own (never future) time, so a replayed backlog is
#: not mistaken for a fresh burst.
LIVE_SKEW_S = 60.0


def event_time(origin_server_ts: int, now: float) -> float:
    """The time to count an event at (seconds)."""
    ts = origin_server_ts / 1000
    if ts <= 0 or abs(now - ts) < LIVE_SKEW_S:
        return now
    return min(ts, now)


class Windows:
    """Per-key deques of ``(time, item)``, trimmed to a window; idle keys are dropped."""

    def __init__(self) -> None:
        self._windows: dict[Hashable, deque[tuple[float, str]]] = {}
        self._adds = 0

    def add(self, key: Hashable, at: float, item: str, window_s: float) -> deque[tuple[float, str]]:
        """Record ``item`` at ``at`` and return the key's window (oldest first)."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = deque()
        window.append((at, item))
        horizon = at - window_s
        while window and window[0][0] < horizon:
            window.popleft()
        self._adds += 1
        if self._adds % 10_000 == 0:
            self._prune(at - window_s)
        return window

    def clear(self, key: Hashable) -> None:
        """Forget a key (after it triggered, so one burst is one violation)."""
        self._windows.pop(key, None)

    def _prune(self, horizon: float) -> None:
        stale = [key for key, window in self._windows.items() if not window or window[-1][0] < horizon]
        for key in stale:
            del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)
