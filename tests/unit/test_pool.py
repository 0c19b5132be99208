"""The loops' bounded task pool: its `busy` count moves with its semaphore."""

from __future__ import annotations

import asyncio

from fallback_daemon.engine import loops


async def test_busy_drops_as_soon_as_a_call_releases_its_slot() -> None:
    """Once wait_free() returns, busy no longer counts the finished call (a full-pool loop cannot spin)."""
    pool = loops.Pool(1, "test")
    release = asyncio.Event()
    await pool.submit(release.wait)
    assert pool.busy == 1
    waiting = asyncio.create_task(pool.wait_free())
    release.set()
    await waiting
    assert pool.busy == 0
    await pool.drain(1.0)
