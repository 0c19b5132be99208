"""Scenario 2, steady load: 250 sends/s for 60 s through one daemon process and the sandbox process.

Messages are posted one by one at a fixed rate; their outcomes follow the sandbox's suffix table (most get
Sent/Delivered/Read receipts, a share fail, are rejected or stay silent). Timers fall due at a steady rate
during the window (armed rows seeded with due times spread over it, so the 60 s minimum FallBackDuration
does not stretch the run). Measured: the send rate the sandbox admitted per second, timer lateness, receipt
latency (provider Timestamp -> stored), and the CPU of the daemon, the sandbox and Postgres.
The raw baseline is a plain asyncpg timer loop draining the same number of timers per second on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import time
from typing import Any

import aiohttp
import asyncpg

from bench import harness, replicas
from bench.harness import Q

RATE = 250
TIMERS_PER_S = 50
SEEDED_FROM = 90_000_000  # seeded rows' numbers (no clash with the posted ones)


async def raw_steady(conn: asyncpg.Connection, n: int, seconds: float) -> list[float]:
    """Plain loop: timers due at a steady rate over `seconds`; returns each row's lateness (s)."""
    await conn.execute(Q["seed_raw_armed"], n, time.time() + 1.0, seconds, SEEDED_FROM)
    await conn.execute(Q["analyze"])
    lateness: list[float] = []
    while len(lateness) < n:
        rows = await conn.fetch(Q["raw_claim"], 500, 120.0)
        now = time.time()
        lateness.extend(now - r["due"] for r in rows)
        if len(rows) == 500:
            continue
        delay = await conn.fetchval(Q["raw_next_due"])
        await asyncio.sleep(1.0 if delay is None else min(1.0, max(0.0, delay)))
    return lateness


async def generate(url: str, rate: float, seconds: float) -> tuple[int, list[float], int]:
    """POST messages one by one at `rate`/s for `seconds`; returns (posted, latencies, errors)."""
    latencies: list[float] = []
    errors = 0
    slots = asyncio.Semaphore(256)  # bounded in flight: a stalled daemon slows the generator, never floods it

    async def post(http: aiohttp.ClientSession, i: int) -> None:
        nonlocal errors
        try:
            started = time.perf_counter()
            async with http.post(f"{url}/v1/messages", json=replicas.body(i)) as resp:
                await resp.read()
                if resp.status != 202:
                    errors += 1
            latencies.append(time.perf_counter() - started)
        finally:
            slots.release()

    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {harness.API_TOKEN}"}, connector=aiohttp.TCPConnector(limit=256)
    ) as http:
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        i = 0
        while (now := time.monotonic()) - t0 < seconds:
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
            await slots.acquire()
            task = asyncio.create_task(post(http, i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)
    return i, latencies, errors


async def start_profiler(pid: int, seconds: float) -> asyncio.subprocess.Process | None:
    """BENCH_PYSPY=<file>: py-spy samples the daemon through the posting window (collapsed stacks, 100 Hz).

    `py-spy record` needs ptrace rights (root, or CAP_SYS_PTRACE); idle samples are left out, so the profile
    is where the daemon spent CPU. Summarise with `python -m bench.profile_top <file>`.
    """
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return None
    return await asyncio.create_subprocess_exec(
        os.environ.get("BENCH_PYSPY_BIN", "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, int(seconds))),
        "--rate",
        "100",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        out,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def run(b: harness.Bench) -> harness.Result:
    seconds = 2.0 if b.quick else 60.0
    result = harness.Result(scenario="2 steady load")
    dsn = await b.fresh_db("steady")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(Q["raw_table"])
        raw_s = 1.0 if b.quick else 20.0
        raw = await raw_steady(conn, int(TIMERS_PER_S * raw_s), raw_s)
        await conn.execute(Q["truncate"])
        sb_port, d_port = harness.free_port(), harness.free_port()
        d_url = f"http://127.0.0.1:{d_port}"
        async with contextlib.AsyncExitStack() as stack:
            sb = await stack.enter_async_context(b.sandbox(sb_port, daemon_url=d_url, qps=RATE))
            daemon = await stack.enter_async_context(b.daemon(dsn, d_port, sb.url, name="daemon-steady"))
            lead = 3.0
            t_start = time.time() + lead
            await conn.execute(Q["seed_armed"], int(TIMERS_PER_S * seconds), t_start, seconds, SEEDED_FROM)
            await conn.execute(Q["analyze"])
            meters = {
                "daemon": harness.CpuMeter([daemon.ps]),
                "sandbox": harness.CpuMeter([sb.ps]),
                "postgres": harness.CpuMeter(harness.postgres_processes(b.pg_data)),
            }
            # The daemon's CPU from the first post until the lifecycles it started are done (backlog sent,
            # fallbacks fired by Failed receipts sent): CPU-seconds per message lifecycle.
            lifecycle = harness.CpuMeter([daemon.ps])
            await asyncio.sleep(max(0.0, t_start - time.time()))
            async with aiohttp.ClientSession() as http, http.post(f"{sb.url}/sandbox/reset") as resp:
                resp.raise_for_status()
            profiler = await start_profiler(daemon.proc.pid, seconds)
            for m in [*meters.values(), lifecycle]:
                m.start()
            posted, post_lat, post_errors = await generate(d_url, RATE, seconds)
            cpu = {k: m.stop() for k, m in meters.items()}
            t_end = time.time()

            async def drained() -> bool:
                return not await conn.fetchval(Q["count_chat"], ["accepted", "sending"])

            async def settled() -> bool:
                return not await conn.fetchval(Q["count_fallback"], ["firing"])

            backlog_s = await harness.until(drained, "the send backlog to drain", timeout_s=120)
            await harness.until(settled, "the fired fallbacks to be sent", timeout_s=120)
            await asyncio.sleep(1.0)  # the last receipts (0-50 ms delay, 5 ms batching) and their writes
            cpu_s = lifecycle.used_s()
            if profiler is not None:
                await profiler.wait()
            async with aiohttp.ClientSession() as http, http.get(f"{sb.url}/sandbox/rates") as resp:
                rates = await resp.json()
        seeded = [r["s"] for r in await conn.fetch(Q["seeded_lateness"])]
        immediate = [r["ms"] / 1000 for r in await conn.fetch(Q["fired_lateness"], "failed_receipt")]
        receipt = [r["s"] for r in await conn.fetch(Q["receipt_latency"], t_start)]
    finally:
        await conn.close()
    report(
        result,
        shared=b.shared,
        rates=rates,
        raw=raw,
        seeded=seeded,
        immediate=immediate,
        receipt=receipt,
        cpu=cpu,
        cpu_s=cpu_s,
        posted=posted,
        post_lat=post_lat,
        post_errors=post_errors,
        seconds=t_end - t_start,
        backlog_s=backlog_s,
    )
    return result


def report(
    result: harness.Result,
    *,
    shared: dict[str, float],
    rates: dict[str, Any],
    raw: list[float],
    seeded: list[float],
    immediate: list[float],
    receipt: list[float],
    cpu: dict[str, float],
    cpu_s: float,
    posted: int,
    post_lat: list[float],
    post_errors: int,
    seconds: float,
    backlog_s: float,
) -> None:
    busy = [s for s, a, _ in rates["per_second"] if a > 0]
    full = replicas.saturated(rates["per_second"], busy[0], busy[-1]) if busy else []
    counts = [a for _, a in full]
    mean = statistics.fmean(counts) if counts else 0.0
    shared.update(
        steady_rate=mean,
        steady_timer_p99=harness.pct(seeded, 99),
        steady_timer_raw_p99=harness.pct(raw, 99),
        steady_cpu_ms=1000 * cpu_s / posted if posted else math.nan,
        steady_throttled=float(rates["throttled"]),
    )
    result.details.update(
        {
            "posted": posted,
            "post_errors": post_errors,
            "window_s": seconds,
            "backlog_drain_s": backlog_s,
            "post_p99_s": harness.pct(post_lat, 99),
            "per_second": rates["per_second"],
            "throttled": rates["throttled"],
            "cpu_percent_of_one_core": cpu,
            "daemon_cpu_s_lifecycles": cpu_s,
            "cpu_ms_per_message": 1000 * cpu_s / posted if posted else None,
            "timers": len(seeded),
            "immediate_fallbacks": len(immediate),
            "receipts": len(receipt),
            "raw_timers": len(raw),
        }
    )
    result.add(
        name=f"send rate held (offered {RATE}/s, mean of full seconds)",
        unit="calls/s",
        daemon=mean,
        raw=float(RATE),
        note=f"slowest second {min(counts, default=0)}, throttled {rates['throttled']}",
    )
    result.add(name="timer lateness p50", unit="s", daemon=harness.pct(seeded, 50), raw=harness.pct(raw, 50))
    result.add(
        name="timer lateness p99",
        unit="s",
        daemon=harness.pct(seeded, 99),
        raw=harness.pct(raw, 99),
        target="<= 50 ms",
        ok=harness.pct(seeded, 99) <= 0.05,
        note=f"{len(seeded)} timers at {TIMERS_PER_S}/s under load; raw: same rate, nothing else running",
    )
    result.add(name="Failed receipt -> fallback fired p99", unit="s", daemon=harness.pct(immediate, 99))
    result.add(
        name="receipt latency p99 (Timestamp -> stored)",
        unit="s",
        daemon=harness.pct(receipt, 99),
        note="includes the sandbox's 0-50 ms delay and 5 ms batching",
    )
    result.add(
        name="daemon CPU",
        unit="% of a core",
        daemon=cpu["daemon"],
        note=f"sandbox {cpu['sandbox']:.0f}%, Postgres {cpu['postgres']:.0f}% of a core",
    )
    result.add(
        name="daemon CPU per message lifecycle",
        unit="ms/msg",
        daemon=1000 * cpu_s / posted if posted else None,
        target="<= 1 ms",
        ok=bool(posted) and 1000 * cpu_s / posted <= 1.0,
        note=f"{cpu_s:.1f} CPU-s over {posted} messages, first post -> lifecycles done"
        f" (includes the {len(seeded)} seeded timers' SMS)",
    )
