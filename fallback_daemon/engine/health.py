"""The receipt-feed health gate loop and the database-backed gauges behind /metrics.

Each replica flushes the receipt times its ingest recorded on the shared `ports.FeedClock` to the store and
evaluates the gate with the pure `policy.feed_gate_closed`; the timer claim holds timer fallbacks of a closed
channel (SPEC §3). The loop sees the database only through `ports.GateStore` (`PgGateStore` here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import structlog

from fallback_daemon import metrics
from fallback_daemon.core import errors, policy, ports
from fallback_daemon.db import sql, store
from fallback_daemon.engine.loops import wait_any

if TYPE_CHECKING:
    from fallback_daemon.engine import service

log = structlog.get_logger("fallback_daemon.engine.health")
Q = sql.queries
CHANNELS = ("whatsapp", "viber", "messenger", "instagram", "telegram")


class PgGateStore:
    """`ports.GateStore` over Postgres (the `feed_health` table; SQL in sql_files/queries/core.sql)."""

    def __init__(self, db: store.Store) -> None:
        self.db = db

    async def record_receipts(self, seen: Mapping[str, float]) -> None:
        await self.db.execute(Q["flush_feed_health"], list(seen), list(seen.values()))

    async def feed_status(self, channels: Sequence[str]) -> list[ports.FeedStatus]:
        return [
            ports.FeedStatus(
                channel=r["channel"],
                now=r["now"],
                last_receipt=r["last_receipt"],
                earliest_unanswered=r["earliest_unanswered"],
                gate_closed=r["gate_closed"],
            )
            for r in await self.db.fetch(Q["feed_status"], list(channels))
        ]

    async def set_gate(self, channel: str, closed: bool) -> None:
        await self.db.execute(Q["set_feed_gate"], channel, closed)


class GateLoop:
    """Every `interval_s` (or when woken): flush `feed`, then open or close each channel's gate.

    :param feed: the clock the ingest side writes receipt times to (the same object: app.py makes one).
    :param window_s: silence after an unanswered send that closes a channel's gate; 0 disables it.
    :param per_channel: channel -> window overriding `window_s` (a channel named only here is watched too).
    """

    def __init__(
        self,
        gate_store: ports.GateStore,
        *,
        feed: ports.FeedClock,
        window_s: float,
        per_channel: Mapping[str, float] | None = None,
        interval_s: float = 5.0,
    ) -> None:
        self.store = gate_store
        self.feed = feed
        self.window_s = window_s
        self.per_channel = dict(per_channel or {})
        self.interval_s = interval_s
        self.wake = asyncio.Event()
        self.watching_since: float | None = None  # store time of the first check

    def window(self, channel: str) -> float:
        return self.per_channel.get(channel, self.window_s)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_once()
            except errors.StoreError as exc:
                log.warning("feed_gate_check_failed", error=str(exc))
            await wait_any(stop, self.wake, self.interval_s)

    async def check_once(self) -> dict[str, bool]:
        """Flush local receipt times, then open or close each channel's gate; returns channel -> closed."""
        seen = self.feed.snapshot()
        if seen:
            await self.store.record_receipts(seen)
        channels = sorted({*CHANNELS, *self.per_channel, *seen})
        states: dict[str, bool] = {}
        for f in await self.store.feed_status(channels):
            closed = policy.feed_gate_closed(
                now=f.now, earliest_unanswered_send=f.earliest_unanswered, window_s=self.window(f.channel)
            )
            states[f.channel] = closed
            if closed != f.gate_closed:
                await self.store.set_gate(f.channel, closed)
                log.warning(
                    "feed_gate_closed" if closed else "feed_gate_opened",
                    channel=f.channel,
                    window_s=self.window(f.channel),
                )
            metrics.feed_gate.labels(f.channel).set(1 if closed else 0)
            # Every watched channel has a silence gauge, also one that never had a receipt (an alert on it
            # must not miss a feed that never came up): then it counts from this replica's first check.
            if self.watching_since is None:
                self.watching_since = f.now
            last = f.last_receipt if f.last_receipt is not None else self.watching_since
            metrics.feed_silent.labels(f.channel).set(max(0.0, f.now - last))
            unanswered = f.earliest_unanswered
            metrics.feed_unanswered.labels(f.channel).set(
                0.0 if unanswered is None else max(0.0, f.now - unanswered)
            )
        return states


async def refresh_gauges(svc: service.Service) -> None:
    """Set the gauges from Postgres (called on each /metrics scrape)."""
    row = await svc.db.fetchrow(Q["gauge_counts"])
    if row is not None:
        metrics.pending_timers.set(row["pending_timers"])
        metrics.held.set(row["held"])
    row = await svc.db.fetchrow(Q["metrics_overdue"], metrics.OVERDUE_AFTER_S, metrics.SMS_RECEIPT_WAIT_S)
    if row is not None:
        metrics.overdue_timers.set(row["overdue_timers"])
        metrics.oldest_overdue.set(row["oldest_overdue_s"])
        metrics.sms_without_receipt.set(row["sms_without_receipt"])
    metrics.messages_by_state.clear()
    for r in await svc.db.fetch(Q["recent_counts_by_state"], 3600.0):
        metrics.messages_by_state.labels(r["chat_state"], r["fallback_state"]).set(r["n"])
