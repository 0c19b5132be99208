"""Operator statistics (GET /v1/stats): states, fallbacks by reason, timers, holds, pipeline, receipt feeds.

Read in one read-only repeatable-read transaction, so the numbers of one answer agree with each other.
Windowed figures count messages created (or fallbacks fired) in the last `window_s` seconds; timers, holds,
the pipeline and dead letters are the current totals.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

from fallback_daemon.db import sql, store

Q = sql.queries
WINDOW_DEFAULT, WINDOW_MAX = 3600, 7 * 86400
RECEIPT_SAMPLE = 10000
BUCKETS = (
    ("overdue", "overdue"),
    ("<1m", "lt_1m"),
    ("<5m", "lt_5m"),
    ("<15m", "lt_15m"),
    ("<1h", "lt_1h"),
    ("later", "later"),
)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _by(rows: Iterable[Mapping[str, Any] | asyncpg.Record], key: str, count: str = "n") -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        if r[count]:
            out[r[key]] = out.get(r[key], 0) + int(r[count])
    return dict(sorted(out.items()))


async def collect(db: store.Store, window_s: int, *, receipt_sample: int = RECEIPT_SAMPLE) -> dict[str, Any]:
    """Everything GET /v1/stats answers (see docs/operations.md for what each figure means)."""
    async with db.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        now = await conn.fetchval(Q["db_now"])
        states = await conn.fetch(Q["stats_states"], window_s)
        fired = await conn.fetch(Q["stats_fired"], window_s)
        suppressed = await conn.fetch(Q["stats_suppressed"], window_s)
        timers = await conn.fetchrow(Q["stats_pending_timers"])
        held = await conn.fetch(Q["stats_held"])
        pipeline = await conn.fetchrow(Q["stats_pipeline"])
        sending = await conn.fetch(Q["stats_sending"], window_s)
        errors = await conn.fetch(Q["stats_errors"], window_s, 5)
        feeds = await conn.fetch(Q["stats_receipts"], window_s, receipt_sample)
        health = await conn.fetch(Q["stats_feed_health"])
        dead = await conn.fetch(Q["stats_dead_letters"])
    assert timers is not None  # aggregates always return one row
    assert pipeline is not None
    return {
        "window_s": window_s,
        "generated_at": now.isoformat(),
        "messages": {
            "total": sum(int(r["n"]) for r in states),
            "by_chat_state": _by(states, "chat_state"),
            "by_fallback_state": _by(states, "fallback_state"),
            "by_state": [
                {"chat_state": r["chat_state"], "fallback_state": r["fallback_state"], "count": r["n"]}
                for r in sorted(states, key=lambda r: (r["chat_state"], r["fallback_state"]))
            ],
        },
        "fallbacks": {
            "fired": {
                "total": sum(int(r["fired"]) for r in fired),
                "by_reason": _by(fired, "reason", "fired"),
            },
            "double_delivered": {
                "total": sum(int(r["double_delivered"]) for r in fired),
                "by_reason": _by(fired, "reason", "double_delivered"),
            },
            "suppressed": {
                "total": sum(int(r["n"]) for r in suppressed),
                "by_reason": _by(suppressed, "reason"),
            },
            "sms_delivered": sum(int(r["sms_delivered"]) for r in fired),
            "sms_failed": sum(int(r["sms_failed"]) for r in fired),
        },
        "pending_timers": {
            "total": sum(int(timers[col]) for _, col in BUCKETS),
            "buckets": {label: int(timers[col]) for label, col in BUCKETS},
            "oldest_overdue_s": _round(timers["oldest_overdue_s"]) if timers["overdue"] else None,
        },
        "held": {
            "total": sum(int(r["n"]) for r in held),
            "by_reason": _by(held, "reason"),
            "by_reason_channel": [
                {
                    "reason": r["reason"],
                    "channel": r["channel"],
                    "count": r["n"],
                    "oldest_s": _round(r["oldest_s"]),
                }
                for r in held
            ],
        },
        "pipeline": {k: (_round(v) if isinstance(v, float) else v) for k, v in dict(pipeline).items()},
        "sending": [
            {
                "channel": r["channel"],
                "sent": r["sent"],
                "send_failed": r["send_failed"],
                "last_sent_at": _iso(r["last_sent_at"]),
                "since_last_sent_s": _round(r["since_last_sent_s"]),
            }
            for r in sending
        ],
        "errors": [{"error": r["error"], "count": r["n"]} for r in errors],
        "receipts": {
            "sample_limit": receipt_sample,
            "sampled": sum(int(r["n"]) for r in feeds),
            "feeds": [
                {
                    "source": r["source"],
                    "kind": r["kind"],
                    "channel": r["channel"],
                    "count": r["n"],
                    "last_at": _iso(r["last_at"]),
                    "since_last_s": _round(r["since_last_s"]),
                    "lag_p50_s": _round(r["lag_p50_s"]),
                    "lag_p99_s": _round(r["lag_p99_s"]),
                    "lag_max_s": _round(r["lag_max_s"]),
                }
                for r in feeds
            ],
        },
        "feed_health": [
            {
                "channel": r["channel"],
                "last_receipt_at": _iso(r["last_receipt_at"]),
                "since_last_s": _round(r["since_last_s"]),
                "gate_closed": r["gate_closed"],
                "changed_at": _iso(r["changed_at"]),
            }
            for r in health
        ],
        "dead_letters": {
            "pending": sum(int(r["n"]) for r in dead),
            "by_source": [
                {"source": r["source"], "kind": r["kind"], "count": r["n"], "oldest_at": _iso(r["oldest_at"])}
                for r in dead
            ],
        },
    }


# ---- charts: per-minute series (GET /v1/stats/series) ---------------------------------------------------
SERIES = ("sent", "delivered", "read", "failed", "fired", "sms_sent", "sms_delivered", "sms_failed")
SERIES_WINDOW_DEFAULT, SERIES_WINDOW_MAX = 3 * 3600, 6 * 3600
SERIES_SETTLE_S = 120.0  # a minute is rolled up this long after it closed (transactions still open)


async def roll_up(db: store.Store, *, settle_s: float = SERIES_SETTLE_S) -> None:
    """Roll the closed minutes since the mark (at most SERIES_WINDOW_MAX back) into event_minutes.

    Lazy, on read (the page asks every few seconds; no loop of its own): each minute is counted from the
    timeline once, and only the last few minutes are counted live on each read. A roll-up already running
    elsewhere is skipped (the lock is taken with SKIP LOCKED). The first roll-up of a database, or after a
    pause longer than the window, counts up to SERIES_WINDOW_MAX of events once.
    """
    async with db.transaction() as conn:
        mark = await conn.fetchval(Q["series_lock_progress"])
        if mark is None:
            return
        b = await conn.fetchrow(Q["series_bounds"], float(SERIES_WINDOW_MAX), settle_s, mark)
        assert b is not None
        if b["hi"] > b["lo"]:
            await conn.execute(Q["series_roll_up"], b["lo"], b["hi"])
            await conn.execute(Q["series_mark"], b["hi"])
            await conn.execute(Q["series_purge"])


async def series(
    db: store.Store, window_s: int, channel: str | None = None, *, settle_s: float = SERIES_SETTLE_S
) -> dict[str, Any]:
    """Per-minute counts by channel over the last `window_s` seconds, oldest minute first (the current,
    unfinished minute last), with a total over the channels."""
    await roll_up(db, settle_s=settle_s)
    async with db.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        b = await conn.fetchrow(Q["series_bounds"], float(window_s), settle_s, None)
        mark = await conn.fetchval(Q["series_progress"])
        now = await conn.fetchval(Q["db_now"])
        assert b is not None
        start: dt.datetime = b["range_start"]
        rows = await conn.fetch(Q["series_read"], start, mark)
    minutes = int((now - start).total_seconds() // 60) + 1
    per: dict[str, dict[str, list[int]]] = {}
    total = {s: [0] * minutes for s in SERIES}
    for r in rows:
        i = int((r["minute"] - start).total_seconds() // 60)
        if not 0 <= i < minutes or r["series"] not in total or (channel and r["channel"] != channel):
            continue
        ch = per.setdefault(r["channel"], {s: [0] * minutes for s in SERIES})
        ch[r["series"]][i] += int(r["n"])
        total[r["series"]][i] += int(r["n"])
    return {
        "window_s": window_s,
        "minute_s": 60,
        "from": start.isoformat(),
        "minutes": minutes,
        "generated_at": now.isoformat(),
        "rolled_through": _iso(mark),
        "series": list(SERIES),
        "channels": dict(sorted(per.items())),
        "total": total,
    }
