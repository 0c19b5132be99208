"""The retention loop against the in-memory retention store and a fake clock (no database).

What each purge query selects (finished, unlocked, older than the window) is covered against Postgres by
tests/integration/test_retention.py; here: batching, the window, stopping, and riding out store errors.
"""

from __future__ import annotations

import asyncio

import pytest

from fallback_daemon.engine import retention
from tests.unit.memstore import MemoryRetention

HANG_S = 10.0  # a guard against a hang, never a speed target
DAY = 86_400.0
M, P, D, B = retention.PURGES  # purge_messages, purge_parked_receipts, purge_dead_letters, budget usage
N = len(retention.PURGES)  # purges per sweep


def aged(now_days: float = 40.0) -> MemoryRetention:
    store = MemoryRetention()
    store.clock.advance(now_days * DAY)
    return store


def loop(
    store: MemoryRetention, *, days: float = 30.0, interval_s: float = 3600.0
) -> retention.RetentionLoop:
    return retention.RetentionLoop(store, days=days, batch=2, pause_s=0.0, interval_s=interval_s)


async def test_a_sweep_purges_in_batches_until_less_than_a_batch_is_left() -> None:
    store = aged()
    store.add(M, 5, finished_at=0.0)  # 40 days ago
    store.add(M, 2, finished_at=store.clock.now - 29 * DAY)  # within the 30-day window: kept
    store.add(P, 4, finished_at=0.0)
    purged = await loop(store).sweep()
    assert purged == {M: 5, P: 4, D: 0, B: 0}
    assert store.calls == [(M, 2), (M, 2), (M, 1), (P, 2), (P, 2), (P, 0), (D, 0), (B, 0)]
    assert (store.left(M), store.left(P)) == (2, 0)


async def test_a_stop_during_a_sweep_ends_it_after_the_current_batch() -> None:
    store = aged()
    store.add(M, 10, finished_at=0.0)
    store.add(P, 10, finished_at=0.0)
    stop = asyncio.Event()
    store.on_purge = stop.set
    purged = await loop(store).sweep(stop)
    assert purged == {M: 2, P: 0, D: 0, B: 0}
    assert store.calls == [(M, 2)], "no further batch and no other purge once stop was set"


async def test_the_loop_sweeps_again_after_each_interval() -> None:
    """run() sweeps at start and after each interval: rows finished in between go in the next sweep."""
    store = aged()
    store.add(M, 1, finished_at=0.0)
    stop = asyncio.Event()

    def between_sweeps() -> None:
        if len(store.calls) == N:  # the first sweep's last purge: age one more row past the window
            store.add(D, 1, finished_at=0.0)
        if len(store.calls) == 2 * N:
            stop.set()

    store.on_purge = between_sweeps
    await asyncio.wait_for(loop(store, interval_s=0.0).run(stop), HANG_S)
    assert store.calls == [(M, 1), (P, 0), (D, 0), (B, 0), (M, 0), (P, 0), (D, 1), (B, 0)]


async def test_the_loop_stops_during_its_pause_between_sweeps() -> None:
    store = aged()
    first_sweep = asyncio.Event()
    store.on_purge = lambda: first_sweep.set() if len(store.calls) == N else None
    stop = asyncio.Event()
    task = asyncio.create_task(loop(store, interval_s=3600.0).run(stop))
    await asyncio.wait_for(first_sweep.wait(), HANG_S)
    stop.set()
    await asyncio.wait_for(task, HANG_S)  # a bound against hanging only: the pause is an hour
    assert len(store.calls) == N


async def test_the_loop_rides_out_store_errors() -> None:
    """Two sweeps meet StoreError; the loop carries on and the third sweep purges."""
    store = aged()
    store.add(M, 1, finished_at=0.0)
    store.failures = 2
    stop = asyncio.Event()
    store.on_purge = lambda: stop.set() if len(store.calls) == 3 else None
    await asyncio.wait_for(loop(store, interval_s=0.0).run(stop), HANG_S)
    assert (store.failures, store.left(M), store.calls[0]) == (0, 0, (M, 1))


def test_a_window_of_zero_days_is_refused() -> None:
    with pytest.raises(ValueError, match="days must be > 0"):
        loop(MemoryRetention(), days=0.0)
