"""Scenario 4, accept API: POST /v1/messages one by one (with Idempotency-Key) and POST /v1/messages/batch.

The daemon process's sending is paused (FALLBACK_SEND_RATE=0.1) so the figure is the accept path alone. The
raw baseline runs the daemon's own `insert_messages` statement through asyncpg with the same batch sizes and
concurrency, without HTTP, JSON, validation or the senders' NOTIFY.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg

from bench import harness, replicas
from bench.harness import Q
from fallback_daemon.db import sql

SINGLE_CONCURRENCY = 32
BATCH = 500
BATCH_CONCURRENCY = 4


async def closed_loop(
    total: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Run one(i) for i in range(total) with `concurrency` workers; returns (seconds, per-call latencies)."""
    counter = iter(range(total))
    latencies: list[float] = []

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies


def columns(items: list[dict[str, Any]], keys: list[str | None]) -> list[list[Any]]:
    """insert_messages' twelve column arrays for these bodies (as Service.accept builds them)."""
    cols: list[list[Any]] = [[] for _ in range(12)]
    for body, key in zip(items, keys, strict=True):
        row = [
            key,
            body["ChannelType"],
            body["To"],
            body["From"],
            None,
            json.dumps(body),
            body["FallBackRule"],
            body["FallBackDuration"],
            body["FallBackContent"],
            "armed",
            float(body["FallBackDuration"]),
            None,  # request_hash (the API stores one with each keyed row)
        ]
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return cols


async def raw(
    dsn: str, n_single: int, n_batches: int
) -> tuple[tuple[float, list[float]], tuple[float, list[float]]]:
    pool = await asyncpg.create_pool(dsn, min_size=SINGLE_CONCURRENCY, max_size=SINGLE_CONCURRENCY)
    q = sql.queries["insert_messages"]
    try:

        async def single(i: int) -> None:
            # $13 notify channel (none), $14 urgent per row (FallBackUrgent, guards.py)
            await pool.fetch(q, *columns([replicas.body(i)], [f"raw-{i}"]), None, [False])

        async def batch(j: int) -> None:
            items = [replicas.body(j * BATCH + k) for k in range(BATCH)]
            await pool.fetch(q, *columns(items, [None] * BATCH), None, [False] * BATCH)

        return (
            await closed_loop(n_single, SINGLE_CONCURRENCY, single),
            await closed_loop(n_batches, BATCH_CONCURRENCY, batch),
        )
    finally:
        await pool.close()


async def run(b: harness.Bench) -> harness.Result:
    n_single = b.size(10_000, 300)
    n_batches = b.size(200, 4)
    result = harness.Result(scenario="4 accept API")
    dsn = await b.fresh_db("accept")
    (raw_s, raw_lat), (rawb_s, rawb_lat) = await raw(dsn, n_single, n_batches)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(Q["truncate"])  # the baseline's rows are not the daemon's to send
        await conn.execute(Q["analyze"])
    finally:
        await conn.close()
    sb_port, d_port = harness.free_port(), harness.free_port()
    async with (
        b.sandbox(sb_port, daemon_url=None) as sb,
        b.daemon(dsn, d_port, sb.url, name="daemon-accept", env={"FALLBACK_SEND_RATE": "0.1"}) as d,
        aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {harness.API_TOKEN}"},
            connector=aiohttp.TCPConnector(limit=SINGLE_CONCURRENCY),
        ) as http,
    ):

        async def single(i: int) -> None:
            async with http.post(
                f"{d.url}/v1/messages", json=replicas.body(i), headers={"Idempotency-Key": f"k{i}"}
            ) as resp:
                await resp.read()
                if resp.status != 202:
                    raise RuntimeError(f"accept answered {resp.status}")

        bodies = [
            json.dumps({"messages": [replicas.body(j * BATCH + k) for k in range(BATCH)]}).encode()
            for j in range(n_batches)
        ]

        async def batch(j: int) -> None:
            async with http.post(
                f"{d.url}/v1/messages/batch", data=bodies[j], headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()
                if resp.status != 202:
                    raise RuntimeError(f"batch accept answered {resp.status}")

        cpu = harness.CpuMeter([d.ps])
        cpu.start()
        single_s, single_lat = await closed_loop(n_single, SINGLE_CONCURRENCY, single)
        cpu_single = cpu.stop()
        cpu.start()
        batch_s, batch_lat = await closed_loop(n_batches, BATCH_CONCURRENCY, batch)
        cpu_batch = cpu.stop()
    result.details.update(
        {
            "single": n_single,
            "batches": n_batches,
            "batch_size": BATCH,
            "daemon_cpu_single": cpu_single,
            "daemon_cpu_batch": cpu_batch,
        }
    )
    result.add(
        name=f"single POST ({SINGLE_CONCURRENCY} clients)",
        unit="msg/s",
        daemon=n_single / single_s,
        raw=n_single / raw_s,
        target=">= 2,000/s",
        ok=n_single / single_s >= 2000,
        note=f"daemon CPU {cpu_single:.0f}% of a core",
    )
    result.add(
        name="single POST p99", unit="s", daemon=harness.pct(single_lat, 99), raw=harness.pct(raw_lat, 99)
    )
    total = n_batches * BATCH
    result.add(
        name=f"batch POST ({BATCH}/request, {BATCH_CONCURRENCY} clients)",
        unit="msg/s",
        daemon=total / batch_s,
        raw=total / rawb_s,
        target=">= 20,000/s",
        ok=total / batch_s >= 20_000,
        note=f"daemon CPU {cpu_batch:.0f}% of a core",
    )
    result.add(
        name="batch POST p99", unit="s", daemon=harness.pct(batch_lat, 99), raw=harness.pct(rawb_lat, 99)
    )
    return result
