"""The global send-rate limit, a token bucket in Postgres shared by every replica."""

from __future__ import annotations

from fallback_daemon import sql, store

Q = sql.queries


class RateLimiter:
    """Grants send tokens from a shared bucket.

    The bucket refills at (rate - burst)/s and holds at most `burst`, so no one-second window can see more
    than `rate` grants whatever the replicas do.
    """

    def __init__(self, db: store.Store, *, name: str, rate: float, burst: int) -> None:
        self._db = db
        self.name = name
        self.capacity = float(max(1, burst))
        self.refill = max(0.1, rate - self.capacity) if rate > self.capacity else rate
        self.capacity = min(self.capacity, max(1.0, rate))

    async def acquire(self, wanted: int) -> int:
        """Up to `wanted` tokens, possibly 0; never blocks."""
        row = await self._db.fetchrow(Q["acquire_tokens"], self.name, self.refill, self.capacity, wanted)
        return int(row["granted"]) if row else 0

    async def refund(self, count: int) -> None:
        await self._db.execute(Q["refund_tokens"], self.name, count, self.capacity)

    def wait_hint(self) -> float:
        """How long until about one token is back."""
        return min(0.05, 1.0 / self.refill)
