"""The receipt-feed health gate loop and the database-backed gauges behind /metrics.

Each replica flushes the receipt times it saw to `feed_health` and evaluates the gate with the pure
`policy.feed_gate_closed`; the timer claim holds timer fallbacks of a closed channel (SPEC §3).
"""

from __future__ import annotations

import asyncio

import structlog

from fallback_daemon import errors, metrics, policy, service, sql
from fallback_daemon.loops import wait_any

log = structlog.get_logger("fallback_daemon.health")
Q = sql.queries
CHANNELS = ("whatsapp", "viber", "messenger", "instagram", "telegram")


class GateLoop:
    def __init__(
        self,
        svc: service.Service,
        *,
        window_s: float,
        per_channel: dict[str, float] | None = None,
        interval_s: float = 5.0,
    ) -> None:
        self.svc = svc
        self.window_s = window_s
        self.per_channel = per_channel or {}
        self.interval_s = interval_s
        self.wake = asyncio.Event()
        self.watching_since: float | None = None  # database time of the first check

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
        seen = dict(self.svc.last_receipt)
        if seen:
            await self.svc.db.execute(Q["flush_feed_health"], list(seen), list(seen.values()))
        channels = sorted({*CHANNELS, *self.per_channel, *seen})
        states: dict[str, bool] = {}
        for row in await self.svc.db.fetch(Q["feed_status"], channels):
            channel = row["channel"]
            closed = policy.feed_gate_closed(
                now=row["now"],
                earliest_unanswered_send=row["earliest_unanswered"],
                window_s=self.window(channel),
            )
            states[channel] = closed
            if closed != row["gate_closed"]:
                await self.svc.db.execute(Q["set_feed_gate"], channel, closed)
                log.warning(
                    "feed_gate_closed" if closed else "feed_gate_opened",
                    channel=channel,
                    window_s=self.window(channel),
                )
            metrics.feed_gate.labels(channel).set(1 if closed else 0)
            # Every watched channel has a silence gauge, also one that never had a receipt (an alert on it
            # must not miss a feed that never came up): then it counts from this replica's first check.
            self.watching_since = self.watching_since or row["now"]
            last = row["last_receipt"] if row["last_receipt"] is not None else self.watching_since
            metrics.feed_silent.labels(channel).set(max(0.0, row["now"] - last))
            unanswered = row["earliest_unanswered"]
            metrics.feed_unanswered.labels(channel).set(
                0.0 if unanswered is None else max(0.0, row["now"] - unanswered)
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
