"""Per-second counts of admitted CAMS calls, for checking a global send rate from the provider's side.

`CountingLimiter` wraps the sandbox's QPS limiter: every decision is counted in the second (of the limiter's
clock, read once per call and shared with the limiter) it was made in, and the fullest sliding one-second
window seen is kept (that window is what the
limiter enforces, so `max_window <= qps` with `throttled == 0` proves no window ever went over the cap).
Served as JSON by `GET /sandbox/rates`.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

MAX_SECONDS = 3600  # per-second buckets kept (oldest dropped first)


class Rates:
    """Admitted and throttled calls per whole second of the clock, plus the fullest sliding window."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.admitted: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.throttled: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.max_window = 0
        self._recent: collections.deque[float] = collections.deque()

    def record(self, admitted: bool, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        second = math.floor(now)
        bucket = self.admitted if admitted else self.throttled
        bucket[second] = bucket.get(second, 0) + 1
        while len(bucket) > MAX_SECONDS:
            bucket.popitem(last=False)
        if admitted:
            recent = self._recent
            recent.append(now)
            while recent[0] <= now - 1.0:
                recent.popleft()
            self.max_window = max(self.max_window, len(recent))

    def reset(self) -> None:
        self.admitted.clear()
        self.throttled.clear()
        self._recent.clear()
        self.max_window = 0

    def to_json(self) -> dict[str, Any]:
        seconds = sorted({*self.admitted, *self.throttled})
        return {
            "max_window": self.max_window,
            "throttled": sum(self.throttled.values()),
            "per_second": [[s, self.admitted.get(s, 0), self.throttled.get(s, 0)] for s in seconds],
        }


class CountingLimiter:
    """The sandbox's QPS limiter with every decision recorded in `rates` (same `admit` interface)."""

    def __init__(self, inner: Any, clock: Callable[[], float]) -> None:
        self._inner = inner
        self._clock = clock
        self.rates = Rates(clock)

    def admit(self, key: str) -> bool:
        # One clock read for both: the limiter and the record must see the same instant, or the recorded
        # window (stamped a little later) can hold one call the limiter had already let slide out.
        now = self._clock()
        ok = bool(self._inner.admit(key, now))
        self.rates.record(ok, now)
        return ok
