"""The global send-rate limit: slots paced on the database clock, shared by every replica's limiter."""

from __future__ import annotations

import asyncio
import itertools
import time

from fallback_daemon.db import store
from fallback_daemon.engine import ratelimit


async def test_replicas_get_disjoint_slots_paced_at_rate_minus_headroom(db: store.Store) -> None:
    """Three limiters reserving at once get interleaved slots ~1/pace apart, so no second is over the rate."""
    limiters = [ratelimit.RateLimiter(db, name="cams", rate=100, headroom=2) for _ in range(3)]
    batches = await asyncio.gather(*(lim.reserve(20) for lim in limiters for _ in range(3)))
    slots = sorted(s for batch in batches for s in batch)
    assert len(slots) == 180
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) > 1 / 98 - 0.003  # each replica maps the database clock to its own, within a few ms
    in_any_second = max(sum(1 for s in slots if t <= s < t + 1) for t in slots)
    assert in_any_second <= 100


async def test_an_idle_limiter_gives_a_slot_now_and_no_burst_credit(db: store.Store) -> None:
    """After idling, the first slot is now (not in the past): idle time never turns into a burst."""
    limiter = ratelimit.RateLimiter(db, name="cams", rate=50, headroom=1)
    [first] = await limiter.reserve(1)
    [later] = await limiter.reserve(1)
    assert abs(first - time.time()) < 0.5
    assert later - first >= 1 / 49 - 1e-4


async def test_room_stops_at_the_horizon(db: store.Store) -> None:
    """A replica books at most `horizon_s` of slots ahead; room comes back as they draw near."""
    limiter = ratelimit.RateLimiter(db, name="cams", rate=100, headroom=0, horizon_s=0.2)
    assert limiter.room() == 20
    await limiter.reserve(limiter.room())
    assert limiter.room() <= 1
    assert 0 < limiter.wait_hint() <= 0.25


async def test_a_missed_slot_is_replaced_by_a_fresh_one(db: store.Store) -> None:
    """A call waking later than the tolerance takes a fresh slot, not its old one (a stall never bursts)."""
    limiter = ratelimit.RateLimiter(db, name="cams", rate=100, headroom=2)
    stale = time.time() - 1.0
    kept = await limiter.wait(stale)
    assert kept > stale + 0.5
    assert time.time() - kept <= limiter.tolerance_s + 0.1
