"""Scenario 3, receipt ingest: HTTP pushes of 100-report arrays (as Alibaba pushes them) into the daemon.

Every receipt is a real state transition: N sent messages with a provider MessageId and an armed timer get a
Delivered then a Read report (Delivered cancels the timer), pushed by 8 concurrent pushers (the sandbox
pushes with 8 in flight). The raw baseline runs the same statements per 100-receipt batch with asyncpg (store
the raw receipts deduplicated, lock the messages, update them, write the events, mark the receipts applied),
8 at a time, without HTTP, parsing or policy. MNS batches of 16 are measured by `bench.mns_ingest` (the
queue work's harness) when the sandbox has MNS, with a small run here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
import uuid
from typing import Any

import aiohttp
import asyncpg

from bench import harness
from bench.harness import Q
from fallback_daemon.db import sql

CONCURRENCY = 8
PER_PUSH = 100
# MNS consumer poller counts measured (the last one carries the >= 5,000/s target): the consumer is bound by
# round trips, not CPU, so receipts/s grows with concurrent long polls (FALLBACK_MNS_POLLERS, default 2).
MNS_POLLERS = (4, 16)
CORE = sql.queries


def reports(messages: list[asyncpg.Record], status: str, start_ms: int) -> list[dict[str, Any]]:
    return [
        {
            "Status": status,
            "MessageId": m["provider_message_id"],
            "TaskId": str(m["id"]),
            "From": "6580000000",
            "To": "6500000000",
            "Timestamp": start_ms + i,
            "MsgFrameType": "template",
            "Type": "TEMPLATE",
            "ConversationId": "7000",
            "ConversationType": "utility",
        }
        for i, m in enumerate(messages)
    ]


def bodies(messages: list[asyncpg.Record]) -> list[bytes]:
    """Delivered for every message, then Read for every message, in pushes of PER_PUSH reports."""
    out = []
    now_ms = int(time.time() * 1000)
    for status in ("Delivered", "Read"):
        for i in range(0, len(messages), PER_PUSH):
            out.append(json.dumps(reports(messages[i : i + PER_PUSH], status, now_ms)).encode())
    return out


async def push_all(url: str, payloads: list[bytes]) -> tuple[float, list[float], int]:
    """POST every payload with CONCURRENCY in flight; returns (seconds, latencies, failures)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    latencies: list[float] = []
    failures = 0

    async def pusher(http: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                failures += resp.status != 200
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession() as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(pusher(http) for _ in range(CONCURRENCY)))
        return time.perf_counter() - t0, latencies, failures


async def raw_batch(pool: asyncpg.Pool, batch: list[dict[str, Any]]) -> None:
    """The daemon's database work for one push, as plain statements in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        pids = [r["MessageId"] for r in batch]
        new = await conn.fetch(  # takes the provider-id advisory locks first, as the daemon's does
            CORE["insert_receipts"],
            "chatapp",
            "raw",
            pids,
            [r["Status"] for r in batch],
            [r["TaskId"] for r in batch],
            [json.dumps(r) for r in batch],
            True,
        )
        ids = [uuid.UUID(r["task_id"]) for r in new]
        rows = await conn.fetch(CORE["lock_messages"], ids, [], None)
        status = "read" if batch[0]["Status"] == "Read" else "delivered"
        mids = [r["id"] for r in rows]
        n = len(mids)
        await conn.execute(  # messages, events and receipts applied: one statement, as the daemon writes them
            CORE["write_outcomes"],
            mids,
            [status] * n,
            ["cancelled"] * n,
            [None] * n,
            [False] * n,
            [None] * n,
            [None] * n,
            [None] * n,
            [None] * n,
            60.0,
            mids,
            ["chat_receipt"] * n,
            [json.dumps({"status": batch[0]["Status"]})] * n,
            [r["id"] for r in new],
            mids,
            None,
        )


async def raw_all(dsn: str, payloads: list[bytes]) -> tuple[float, list[float]]:
    pool = await asyncpg.create_pool(dsn, min_size=CONCURRENCY, max_size=CONCURRENCY)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            batch = json.loads(queue.get_nowait())
            started = time.perf_counter()
            await raw_batch(pool, batch)
            latencies.append(time.perf_counter() - started)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - t0, latencies
    finally:
        await pool.close()


async def run(b: harness.Bench) -> harness.Result:
    n = b.size(50_000, 1_000)  # messages; two receipts each
    result = harness.Result(scenario="3 receipt ingest")
    dsn = await b.fresh_db("receipts")
    conn = await asyncpg.connect(dsn)
    try:
        # Raw baseline first, on its own copy of the messages.
        payloads = bodies(await conn.fetch(Q["seed_sent"], n))
        await conn.execute(Q["analyze"])
        raw_s, raw_lat = await raw_all(dsn, payloads)
        await conn.execute(Q["truncate"])
        payloads = bodies(await conn.fetch(Q["seed_sent"], n))
        await conn.execute(Q["analyze"])
        sb_port, d_port = harness.free_port(), harness.free_port()
        async with (
            b.sandbox(sb_port, daemon_url=None) as sb,
            b.daemon(dsn, d_port, sb.url, name="daemon-receipts") as d,
        ):
            cpu = harness.CpuMeter([d.ps])
            cpu.start()
            took, lat, failures = await push_all(
                f"{d.url}/receipts/{harness.RECEIPT_TOKEN}/chatapp", payloads
            )
            cpu_pct = cpu.stop()
        applied = await conn.fetchval(Q["count_applied_receipts"])
    finally:
        await conn.close()
    total = 2 * n
    result.details.update(
        {
            "receipts": total,
            "pushes": len(payloads),
            "failures": failures,
            "applied": applied,
            "daemon_cpu_percent": cpu_pct,
            "raw_seconds": raw_s,
            "daemon_seconds": took,
        }
    )
    result.add(
        name=f"HTTP receipts ({PER_PUSH}/push, {CONCURRENCY} pushers)",
        unit="receipts/s",
        daemon=total / took,
        raw=total / raw_s,
        target=">= 10,000/s",
        ok=total / took >= 10_000,
        note=f"{failures} failed pushes, {applied}/{total} applied, daemon CPU {cpu_pct:.0f}% of a core",
    )
    result.add(
        name="push response time p99",
        unit="s",
        daemon=harness.pct(lat, 99),
        raw=harness.pct(raw_lat, 99),
        target="< 100 ms",
        ok=harness.pct(lat, 99) < 0.1,
    )
    await mns(b, result)
    return result


async def mns(b: harness.Bench, result: harness.Result) -> None:
    """MNS batches of 16 through the queue work's own harness (a subprocess), when the sandbox has MNS."""
    if (
        importlib.util.find_spec("fallback_daemon.sandbox.mns") is None
        or importlib.util.find_spec("bench.mns_ingest") is None
    ):
        result.add(
            name="MNS receipts (batches of 16)", unit="receipts/s", daemon=None, note="no sandbox MNS yet"
        )
        return
    count = b.size(20_000, 200)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.mns_ingest",
        "--receipts",
        str(count),
        "--pollers",
        *[str(n) for n in MNS_POLLERS],
        "--batch",
        "16",
        cwd=harness.ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    text, _ = await proc.communicate()
    (b.log_dir / "mns_ingest.log").write_bytes(text)
    # Its table rows are "<pollers> <seconds> <receipts/s>".
    rows = [line.split() for line in text.decode(errors="replace").splitlines()]
    rates = [float(r[2]) for r in rows if len(r) == 3 and all(x.replace(".", "", 1).isdigit() for x in r)]
    if proc.returncode != 0 or not rates:
        result.add(
            name="MNS receipts (batches of 16)",
            unit="receipts/s",
            daemon=None,
            note=f"bench.mns_ingest exited {proc.returncode} (see mns_ingest.log)",
        )
        return
    result.details["mns_receipts_per_s"] = rates[-1]
    result.details["mns_receipts_per_s_by_pollers"] = dict(zip(MNS_POLLERS, rates, strict=False))
    for pollers, rate in zip(MNS_POLLERS, rates, strict=False):
        result.add(
            name=f"MNS receipts ({count}, batches of 16, {pollers} pollers)",
            unit="receipts/s",
            daemon=rate,
            target=">= 5,000/s" if pollers == MNS_POLLERS[-1] else "",
            ok=rate >= 5000 if pollers == MNS_POLLERS[-1] else None,
            note="bench.mns_ingest (Alicom mode, sandbox MNS; FALLBACK_MNS_POLLERS sets the daemon's count)",
        )
