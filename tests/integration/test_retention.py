"""Retention: finished rows older than the window leave in batches; anything unfinished or recent stays."""

from __future__ import annotations

import asyncio
import datetime
import uuid

import asyncpg

from fallback_daemon.db import store
from fallback_daemon.engine import retention

AGE = datetime.timedelta(days=40)


async def message(
    conn: asyncpg.Connection, chat: str, fallback: str, *, old: bool = True, due: bool = False
) -> uuid.UUID:
    """One message in the given states, created and last updated 40 days ago (or now), with an event."""
    mid: uuid.UUID = await conn.fetchval(
        "INSERT INTO messages (channel, to_number, from_number, params, fallback_rule, chat_state,"
        " fallback_state, due_at, created_at, updated_at)"
        " VALUES ('whatsapp', '6500000001', '6500000002', '{}', 'undelivered', $1, $2,"
        " CASE WHEN $3 THEN now() + interval '1 hour' END, now() - $4::interval, now() - $4::interval)"
        " RETURNING id",
        chat,
        fallback,
        due,
        AGE if old else datetime.timedelta(0),
    )
    await conn.execute("INSERT INTO message_events (message_id, kind) VALUES ($1, 'accepted')", mid)
    return mid


async def receipt(
    conn: asyncpg.Connection, provider_id: str, mid: uuid.UUID | None, *, old: bool = True
) -> None:
    """A chat receipt received 40 days ago (or now): applied to `mid`, or parked when `mid` is None."""
    await conn.execute(
        "INSERT INTO receipts (kind, source, provider_id, status, message_id, raw, received_at, applied_at)"
        " VALUES ('chatapp', 'http', $1, 'Read', $2, '{}', now() - $3::interval,"
        " CASE WHEN $2::uuid IS NULL THEN NULL ELSE now() - $3::interval END)",
        provider_id,
        mid,
        AGE if old else datetime.timedelta(0),
    )


async def test_sweep_purges_only_finished_old_rows_in_batches(db_dsn: str, db: store.Store) -> None:
    """Old finished messages (with their events, webhook sequences and receipts), old parked receipts, old
    replayed dead letters and the SMS budget counters of long-past days go; the rows of kept messages stay.
    Nothing cascades (migration 0010): the purge itself deletes what belongs to a message."""
    conn = await asyncpg.connect(db_dsn)
    try:
        done = [await message(conn, "read", "cancelled") for _ in range(5)]
        done.append(await message(conn, "failed", "sms_delivered"))
        done.append(await message(conn, "sent", "armed"))  # armed without a timer
        for i, mid in enumerate(done):
            await receipt(conn, f"pm-{i}", mid)
        keep = [
            await message(conn, "read", "cancelled", old=False),  # recent
            await message(conn, "sent", "armed", due=True),  # a pending timer
            await message(conn, "sent", "held"),  # waiting for an operator
            await message(conn, "failed", "firing"),  # mid-fallback
            await message(conn, "unknown", "armed"),  # ambiguous send, operator attention
            await message(conn, "accepted", "armed"),  # not even sent yet
        ]
        await receipt(conn, "parked-old", None)
        await receipt(conn, "parked-new", None, old=False)
        endpoint = await conn.fetchval(
            "INSERT INTO webhook_endpoints (url, secret) VALUES ('http://127.0.0.1:9/h', 's') RETURNING id"
        )
        await conn.executemany(
            "INSERT INTO webhook_sequences (message_id, endpoint_id, last_seq) VALUES ($1, $2, 1)",
            [(mid, endpoint) for mid in [*done, *keep]],
        )
        await conn.execute(
            "INSERT INTO dead_letters (source, queue, kind, body, error, received_at, replayed_at) VALUES"
            " ('mns', 'q', 'chatapp', 'x', 'e', now() - $1::interval, now() - $1::interval),"
            " ('mns', 'q', 'chatapp', 'y', 'e', now() - $1::interval, NULL)",
            AGE,
        )
        await conn.execute(  # SMS budget counters: one of a day long past the window, one of today
            "INSERT INTO sms_budget_usage (scope, key, day, used) VALUES"
            " ('global', '', current_date - 40, 7), ('global', '', current_date, 3)"
        )
        purged = await retention.RetentionLoop(
            retention.PgRetentionStore(db), days=30, batch=2, pause_s=0
        ).sweep()
        assert purged == {
            "purge_messages": len(done),
            "purge_parked_receipts": 1,
            "purge_dead_letters": 1,
            "purge_budget_usage": 1,
        }
        assert await conn.fetchval("SELECT used FROM sms_budget_usage") == 3
        left = {r["id"] for r in await conn.fetch("SELECT id FROM messages")}
        assert left == set(keep)
        events = {r["message_id"] for r in await conn.fetch("SELECT message_id FROM message_events")}
        assert events == set(keep)
        sequences = {r["message_id"] for r in await conn.fetch("SELECT message_id FROM webhook_sequences")}
        assert sequences == set(keep)
        assert [r["provider_id"] for r in await conn.fetch("SELECT provider_id FROM receipts")] == [
            "parked-new"
        ]
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 1
    finally:
        await conn.close()


async def test_a_locked_row_is_skipped_not_waited_for(db_dsn: str, db: store.Store) -> None:
    """A finished row a hot path holds locked is left for the next sweep; the sweep does not block on it."""
    conn = await asyncpg.connect(db_dsn)
    holder = await asyncpg.connect(db_dsn)
    try:
        locked = await message(conn, "read", "cancelled")
        free = await message(conn, "read", "cancelled")
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", locked)
        purged = await asyncio.wait_for(
            retention.RetentionLoop(retention.PgRetentionStore(db), days=30, batch=10, pause_s=0).sweep(), 10
        )
        assert purged["purge_messages"] == 1
        assert {r["id"] for r in await conn.fetch("SELECT id FROM messages")} == {locked}
        await tx.rollback()
        assert free not in {r["id"] for r in await conn.fetch("SELECT id FROM messages")}
    finally:
        await holder.close()
        await conn.close()


async def gone(conn: asyncpg.Connection, mid: uuid.UUID, task: asyncio.Task[None]) -> None:
    """Wait until the running loop has purged `mid` (polling the table); fails if the loop task ended."""
    while await conn.fetchval("SELECT count(*) FROM messages WHERE id = $1", mid):
        assert not task.done(), f"the loop ended early: {task}"
        await asyncio.sleep(0.01)


async def test_the_running_loop_sweeps_and_sweeps_again(db_dsn: str, db: store.Store) -> None:
    """run() itself purges (no direct sweep() call): a first sweep at start, another after each interval."""
    conn = await asyncpg.connect(db_dsn)
    stop = asyncio.Event()
    loop = retention.RetentionLoop(
        retention.PgRetentionStore(db), days=30, batch=10, pause_s=0, interval_s=0.01
    )
    try:
        first = await message(conn, "read", "cancelled")
        recent = await message(conn, "read", "cancelled", old=False)
        task = asyncio.create_task(loop.run(stop))
        await asyncio.wait_for(gone(conn, first, task), 30)
        async with conn.transaction():  # the running loop must not see the message before its event
            second = await message(conn, "failed", "sms_delivered")  # only a later sweep can see this one
        await asyncio.wait_for(gone(conn, second, task), 30)
        stop.set()
        await asyncio.wait_for(task, 30)
        assert {r["id"] for r in await conn.fetch("SELECT id FROM messages")} == {recent}
    finally:
        stop.set()
        await conn.close()


async def test_the_loop_stops_when_asked_between_sweeps(db_dsn: str, db: store.Store) -> None:
    """Once a sweep has run, setting `stop` ends run() during its hour-long pause instead of after it."""
    conn = await asyncpg.connect(db_dsn)
    stop = asyncio.Event()
    loop = retention.RetentionLoop(
        retention.PgRetentionStore(db), days=30, batch=10, pause_s=0, interval_s=3600
    )
    try:
        old = await message(conn, "read", "cancelled")
        task = asyncio.create_task(loop.run(stop))
        await asyncio.wait_for(gone(conn, old, task), 30)  # the first sweep ran; the pause follows it
        stop.set()
        await asyncio.wait_for(task, 30)  # a bound only against hanging: the pause is 3600 s
        assert task.exception() is None
    finally:
        stop.set()
        await conn.close()
