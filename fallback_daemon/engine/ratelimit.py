"""The global send-rate limit: send slots paced on the database clock and shared by every replica.

One row in Postgres holds the next free slot. A replica that claimed k messages reserves k consecutive slots
(one statement), sleeps until each slot, then calls the provider: the calls of all replicas together are
spaced exactly 1/pace apart, never bunched. `pace` is the configured rate minus `headroom` calls/s, which
absorbs timing jitter between the slot and the moment the provider counts the call (event-loop delays,
network): an exactly paced stream at `rate` would put `rate` calls into every sliding second with no margin,
and any call delayed then released next to a punctual one would be throttled.

Why not a token bucket or a per-second counter: a bucket of size B refilled at r lets B + r calls into a
sliding second, so staying under the cap costs B calls/s of throughput and still bunches calls in bursts of
B; a counter per (database) second admits `rate` at the end of one second and `rate` at the start of the
next, twice the cap in the sliding second across the boundary (the window Alibaba's and the sandbox's limiter
enforce). Pacing needs no burst at all, so nearly all of the cap can be used.

The database clock is the only clock: slots are database times, mapped onto each replica's clock (trusted
when synchronised, corrected by an estimate from the reservations' round trips when it is not). A call that
wakes too late for its slot takes a fresh one (see `tolerance_s`). A replica that dies holding reserved
slots only leaves a gap (at most its look-ahead); the others keep reserving at the full pace.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time

from fallback_daemon.db import sql, store

Q = sql.queries
SKEW_S = 0.05  # clock differences to the database below this are taken as measurement noise


class RateLimiter:
    """Reserves send slots from a pacing row shared by every replica.

    :param name: the row in `rate_limits` (one per rate-limited account or API).
    :param rate: the provider's cap, calls/s; no sliding second carries more than this.
    :param headroom: calls/s kept free below `rate` to absorb jitter (the pace is rate - headroom).
    :param horizon_s: how far ahead of now this replica books slots (bounds the wait of claimed messages).
    """

    def __init__(
        self, db: store.Store, *, name: str, rate: float, headroom: float, horizon_s: float = 0.25
    ) -> None:
        self._db = db
        self.name = name
        self.rate = rate
        self.pace = max(rate - headroom, rate / 2)
        self.spacing = 1.0 / self.pace
        self.horizon_s = horizon_s
        self.booked_until = 0.0  # local unix time of the last slot this replica reserved
        # (round trip, database clock - local clock at receive): the offset lies in [that, that + round trip]
        self._offsets: collections.deque[tuple[float, float]] = collections.deque(maxlen=32)

    @property
    def offset(self) -> float:
        """Database clock minus local clock, as used to place slots on the local clock.

        Synchronised clocks (NTP keeps hosts within a millisecond or so; one host shares one clock) are
        trusted as they are: an estimate from round trips through a busy event loop is noisier than that.
        Only a clock certainly off by more than SKEW_S (judged from the reservation with the lowest round
        trip: the offset lies within that round trip) is corrected, so a badly set host still paces with the
        others instead of bursting or stalling, and a slow round trip never shifts a synchronised one.
        """
        if not self._offsets:
            return 0.0
        rtt, low = min(self._offsets)  # the database read its clock between our send and receive
        high = low + rtt
        return (low + high) / 2 if low > SKEW_S or high < -SKEW_S else 0.0

    def room(self) -> int:
        """How many sends this replica may book now without reserving beyond its horizon."""
        ahead = max(0.0, self.booked_until - time.time())
        if ahead >= self.horizon_s:
            return 0
        return max(1, math.floor((self.horizon_s - ahead) * self.pace))

    def wait_hint(self) -> float:
        """How long until `room()` is positive again."""
        return max(0.001, self.booked_until - time.time() - self.horizon_s + self.spacing)

    async def reserve(self, count: int) -> list[float]:
        """Reserve `count` consecutive slots; returns the local unix time of each."""
        if count <= 0:
            return []
        row = None
        for _ in range(2):  # the first reservation ever creates the row and returns nothing
            sent = time.time()
            row = await self._db.fetchrow(Q["reserve_send_slots"], self.name, self.spacing, count)
            received = time.time()
            if row is not None:
                # The clock is read just before the answer leaves, so `received` is the closest local time.
                self._offsets.append((received - sent, row["now"] - received))
                break
        if row is None:
            raise RuntimeError(f"rate limit row {self.name!r} missing")  # unreachable: the upsert created it
        first = row["first"] - self.offset
        slots = [first + i * self.spacing for i in range(count)]
        self.booked_until = max(self.booked_until, slots[-1])
        return slots

    @property
    def tolerance_s(self) -> float:
        """How late a call may still use its slot.

        Calls made within [slot, slot + tolerance] put at most pace * (1 + tolerance) = rate calls into any
        sliding second, however the calls were delayed (a busy event loop, a stalled process); a call later
        than that takes a fresh slot instead, so a stall never releases a burst.
        """
        return (self.rate - self.pace) / self.pace

    async def wait(self, slot: float, stop: asyncio.Event | None = None) -> float | None:
        """Sleep until the local unix time `slot` and return it (or a fresh slot if that one was missed);
        None if `stop` was set first."""
        for _ in range(1000):
            delay = slot - time.time()
            if delay > 0:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            if stop is not None and stop.is_set():
                return None
            if time.time() - slot <= self.tolerance_s:
                return slot
            slot = (await self.reserve(1))[0]
        raise RuntimeError("no send slot could be kept")  # unreachable unless the clock is broken
