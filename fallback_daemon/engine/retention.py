"""The retention loop: purges finished rows older than the retention window, in small batches.

Finished messages (with their events and receipts), receipts that never matched a message, and replayed
dead letters leave `batch` rows per statement (FOR UPDATE SKIP LOCKED, by primary key), with a pause between
batches, so a sweep never holds locks a hot path needs nor saturates the database. Every replica may run it:
SKIP LOCKED hands each batch to one of them. SQL in sql/queries/retention.sql.
"""

from __future__ import annotations

import asyncio

import structlog

from fallback_daemon.core import errors, ports
from fallback_daemon.db import sql, store
from fallback_daemon.engine.loops import sleep_or_stop

log = structlog.get_logger("fallback_daemon.engine.retention")
Q = sql.queries
PURGES = ("purge_messages", "purge_parked_receipts", "purge_dead_letters", "purge_budget_usage")


class PgRetentionStore:
    """`ports.RetentionStore` over Postgres: `what` names one of the `PURGES` queries."""

    def __init__(self, db: store.Store) -> None:
        self.db = db

    async def purge(self, what: str, window_s: float, batch: int) -> int:
        return len(await self.db.fetch(Q[what], window_s, batch))


class RetentionLoop:
    """Sweeps every `interval_s`; each sweep deletes in batches until nothing older than the window is left.

    :param purger: the database side (`PgRetentionStore`; an in-memory one in the unit tests).
    :param days: the retention window (rows finished longer ago than this are purged); must be > 0.
    :param batch: rows per statement.
    :param pause_s: pause between two batches (keeps the sweep a background trickle).
    :param interval_s: pause between two sweeps.
    """

    def __init__(
        self,
        purger: ports.RetentionStore,
        *,
        days: float,
        batch: int,
        pause_s: float = 0.1,
        interval_s: float = 600.0,
    ) -> None:
        if days <= 0:
            raise ValueError("retention days must be > 0 (0 disables the loop: do not start it)")
        self.purger = purger
        self.window_s = days * 86_400.0
        self.batch = batch
        self.pause_s = pause_s
        self.interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep(stop)
            except errors.StoreError as exc:
                log.warning("retention_failed", error=str(exc))
            await sleep_or_stop(stop, self.interval_s)

    async def sweep(self, stop: asyncio.Event | None = None) -> dict[str, int]:
        """One sweep (ended early when `stop` is set); returns how many rows each purge deleted."""
        stop = stop if stop is not None else asyncio.Event()
        purged = dict.fromkeys(PURGES, 0)
        for name in PURGES:
            while not stop.is_set():
                deleted = await self.purger.purge(name, self.window_s, self.batch)
                purged[name] += deleted
                if deleted < self.batch:
                    break
                await sleep_or_stop(stop, self.pause_s)
        if any(purged.values()):
            log.info("retention_purged", window_days=self.window_s / 86_400, **purged)
        return purged
