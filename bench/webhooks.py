"""`python -m bench.webhooks [--events N] [--deliveries N] [--concurrency N]`: what outcome events cost.

1. The outbox trigger's cost on the write path: N message_events rows inserted (one statement, and in
   statements of 500 as `outcomes._write` batches them) with the trigger disabled, enabled without any
   endpoint, and enabled with one endpoint subscribed to every type. Median of 3 runs each.
2. The delivery rate: N deliveries to a receiver on loopback (its own process, answering 204), drained by one
   `WebhookLoop`; events/s from the first claim to the last recorded result.

Embedded Postgres under .data/bench by default, DATABASE_URL when set (a database is created and dropped).
Figures and the command that made them: docs/webhooks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from bench import harness
from fallback_daemon.db import embedded, migrate, store
from fallback_daemon.engine import webhooks

RECEIVER = """
import asyncio, sys
from aiohttp import web

async def ok(request):
    await request.read()
    return web.Response(status=204)

async def main():
    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""
INSERT_MESSAGES = """
INSERT INTO messages (channel, to_number, from_number, params, fallback_rule, fallback_state, chat_state,
                      client_task_id, idempotency_key)
SELECT 'whatsapp', '659' || lpad(g::text, 7, '0'), '6580000000', '{}'::jsonb, 'undelivered', 'armed', 'sent',
       $2 || 'task-' || g, $2 || 'key-' || g
FROM generate_series(1, $1) AS g
RETURNING id
"""
# A Delivered receipt as outcomes._write records it: message.delivered + fallback.cancelled with a subscriber.
INSERT_EVENTS = """
INSERT INTO message_events (message_id, kind, detail)
SELECT id, 'chat_receipt', '{"outcome": "receipt_fallback_cancelled", "chat": "delivered",
                              "fallback": "cancelled", "status": "Delivered"}'::jsonb
FROM unnest($1::uuid[]) AS id
"""


async def insert_cost(conn: asyncpg.Connection, ids: list[uuid.UUID], chunk: int) -> float:
    """Seconds to insert one event per id, `chunk` per statement, in one transaction (rolled back)."""
    tr = conn.transaction()
    await tr.start()
    try:
        started = time.perf_counter()
        for i in range(0, len(ids), chunk):
            await conn.execute(INSERT_EVENTS, ids[i : i + chunk])
        return time.perf_counter() - started
    finally:
        await tr.rollback()


async def trigger_cost(conn: asyncpg.Connection, n: int) -> dict[str, Any]:
    ids = [r["id"] for r in await conn.fetch(INSERT_MESSAGES, n, "cost-")]
    await conn.execute("ANALYZE")
    out: dict[str, Any] = {}
    variants = (
        ("no_trigger", "ALTER TABLE message_events DISABLE TRIGGER message_events_webhooks", False),
        ("trigger_0_endpoints", "ALTER TABLE message_events ENABLE TRIGGER message_events_webhooks", False),
        ("trigger_1_endpoint", "ALTER TABLE message_events ENABLE TRIGGER message_events_webhooks", True),
    )
    for name, ddl, subscribed in variants:
        await conn.execute(ddl)
        await conn.execute("DELETE FROM webhook_endpoints")
        if subscribed:
            await conn.execute(
                "INSERT INTO webhook_endpoints (url, secret) VALUES ('http://127.0.0.1:9/x', $1)",
                webhooks.new_secret(),
            )
        for chunk in (n, 500):
            runs = [await insert_cost(conn, ids, chunk) for _ in range(3)]
            seconds = statistics.median(runs)
            out[f"{name}/{'one_statement' if chunk == n else 'statements_of_500'}"] = {
                "seconds": round(seconds, 4),
                "events_per_s": round(n / seconds),
                "us_per_event": round(seconds / n * 1e6, 1),
            }
    await conn.execute("DELETE FROM webhook_endpoints")
    await conn.execute("ALTER TABLE message_events ENABLE TRIGGER message_events_webhooks")
    return out


async def delivery_rate(dsn: str, n: int, concurrency: int) -> dict[str, Any]:
    port = harness.free_port()
    receiver = subprocess.Popen(  # noqa: ASYNC220, S603 - our own receiver script, for the whole run
        [sys.executable, "-c", RECEIVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        db = await store.Store.connect(dsn, min_size=2, max_size=10)
        try:
            wh = webhooks.WebhookStore(db)
            await wh.create(webhooks.NewEndpoint(url=f"http://127.0.0.1:{port}/hook"))
            await db.execute("ALTER TABLE message_events DISABLE TRIGGER message_events_webhooks")
            ids = [r["id"] for r in await db.fetch(INSERT_MESSAGES, n, "rate-")]
            await db.execute("ALTER TABLE message_events ENABLE TRIGGER message_events_webhooks")
            for i in range(0, n, 1000):  # one delivery per event: message.delivered + fallback.cancelled = 2
                await db.execute(INSERT_EVENTS, ids[i : i + 1000])
            total = int(await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'"))
            loop = webhooks.WebhookLoop(wh, timeout_s=10, concurrency=concurrency, gauges_every_s=3600)
            stop = asyncio.Event()
            started = time.perf_counter()
            task = asyncio.create_task(loop.run(stop))
            pending = "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'"
            while await db.fetchval(pending):  # noqa: ASYNC110 - the loop's progress is in the database
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
            stop.set()
            await task
            return {
                "deliveries": total,
                "concurrency": concurrency,
                "seconds": round(seconds, 3),
                "events_per_s": round(total / seconds),
            }
        finally:
            await db.close()
    finally:
        receiver.terminate()
        receiver.wait()


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--deliveries", type=int, default=5_000, help="messages (2 deliveries each)")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    admin = os.environ.get("DATABASE_URL") or await embedded.start(harness.ROOT / ".data" / "bench")
    name = f"bench_webhooks_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    dsn = harness.with_database(admin, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.migrate(conn)
            cost = await trigger_cost(conn, args.events)
            print(json.dumps({"trigger_cost": cost}, indent=2), flush=True)
        finally:
            await conn.close()
        rate = await delivery_rate(dsn, args.deliveries, args.concurrency)
        print(json.dumps({"delivery": rate}, indent=2))
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
