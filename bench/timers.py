"""Scenario 1, timer burst: N fallbacks due at the same instant.

Claim + transition (armed -> firing) through the daemon's `Service.claim_due` against a plain asyncpg
`FOR UPDATE SKIP LOCKED` UPDATE on an equivalent table, with the same loop (sleep until the next due time,
capped at 1 s; claim again at once while batches come back full); then end to end, the daemon process's
TimerLoop sending every SMS to the sandbox process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg

from bench import harness
from bench.harness import Q
from fallback_daemon.db import store
from fallback_daemon.engine import service

BATCH = 500  # the daemon's default FALLBACK_FIRE_BATCH
LEASE_S = 120.0
DONE = ["sms_sent", "sms_delivered", "sms_failed"]


@dataclasses.dataclass(kw_only=True)
class Drain:
    """How one loop drained a burst: rows/s while draining and lateness (s) of each row at its claim."""

    n: int
    rate: float
    p50: float
    p99: float
    max: float
    lead_s: float = 0.0  # how far ahead of their due time the rows were seeded
    prep_s: float = (
        0.0  # seeding + ANALYZE: a prep longer than the lead makes every row late before the loop runs
    )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def drain(
    claim: Callable[[], Awaitable[list[Any]]],
    next_due: Callable[[], Awaitable[float | None]],
    n: int,
    due: float,
    *,
    batch: int = BATCH,
    max_sleep_s: float = 1.0,
) -> Drain:
    """Run a timer loop until `n` rows (all due at `due`, unix time) were claimed."""
    lateness: list[float] = []
    first = last = 0.0
    while len(lateness) < n:
        started = time.time()
        rows = await claim()
        now = time.time()
        if rows:
            first = first or started
            last = now
            lateness.extend([now - due] * len(rows))
            if len(rows) == batch:
                continue
        delay = await next_due()
        await asyncio.sleep(max_sleep_s if delay is None else min(max_sleep_s, max(0.0, delay)))
    return Drain(
        n=n,
        rate=n / max(1e-9, last - first),
        p50=harness.pct(lateness, 50),
        p99=harness.pct(lateness, 99),
        max=max(lateness),
    )


async def burst(
    conn: asyncpg.Connection,
    svc: service.Service,
    kind: str,
    n: int,
    *,
    first_number: int = 0,
    lead_s: float = 1.5,
) -> Drain:
    """Seed `n` rows due `lead_s` from now in `messages` (daemon) or `raw_messages` (raw) and drain them.

    The seeding and ANALYZE must end before the due time, or the rows are late before either loop runs (at
    10 M pending rows they take seconds: scenario 5 sizes `lead_s` from a timed ANALYZE); `prep_s` records it.
    """
    started = time.time()
    due = started + lead_s
    if kind == "raw":
        await conn.execute(Q["seed_raw_armed"], n, due, 0.0, first_number)
        await conn.execute(Q["analyze"])

        async def claim() -> list[Any]:
            return await conn.fetch(Q["raw_claim"], BATCH, LEASE_S)

        async def next_due() -> float | None:
            return await conn.fetchval(Q["raw_next_due"])

        prep_s = time.time() - started
        return dataclasses.replace(await drain(claim, next_due, n, due), lead_s=lead_s, prep_s=prep_s)
    await conn.execute(Q["seed_armed"], n, due, 0.0, first_number)
    await conn.execute(Q["analyze"])

    async def claim_daemon() -> list[Any]:
        return await svc.claim_due(BATCH, LEASE_S)

    prep_s = time.time() - started
    return dataclasses.replace(
        await drain(claim_daemon, svc.next_due_in, n, due), lead_s=lead_s, prep_s=prep_s
    )


def median(runs: list[Drain]) -> Drain:
    """The run with the median rate (its lateness figures come with it)."""
    return sorted(runs, key=lambda d: d.rate)[len(runs) // 2]


async def run(b: harness.Bench) -> harness.Result:
    n = b.size(20_000, 500)
    reps = 1 if b.quick else 3
    result = harness.Result(scenario="1 timer burst")
    dsn = await b.fresh_db("timers")
    conn = await asyncpg.connect(dsn)
    db = await store.Store.connect(dsn, min_size=2, max_size=10)
    try:
        await conn.execute(Q["raw_table"])
        svc = service.Service(db)
        runs: dict[str, list[Drain]] = {"raw": [], "daemon": []}
        for _ in range(reps):
            for kind in ("raw", "daemon"):  # interleaved, so drift in the machine's load hits both
                await conn.execute(Q["truncate"])
                runs[kind].append(await burst(conn, svc, kind, n))
        raw, dmn = median(runs["raw"]), median(runs["daemon"])
        b.shared["burst_p99"] = dmn.p99
        b.shared.update(burst_rate=dmn.rate, burst_raw_rate=raw.rate, burst_raw_p99=raw.p99)
        result.details["claim_runs"] = {k: [d.to_json() for d in v] for k, v in runs.items()}
        result.add(
            name=f"claim+transition, {n} due at once",
            unit="rows/s",
            daemon=dmn.rate,
            raw=raw.rate,
            target=">= 0.5x raw",
            ok=dmn.rate >= 0.5 * raw.rate,
        )
        result.add(name="burst lateness p50", unit="s", daemon=dmn.p50, raw=raw.p50)
        result.add(
            name="burst lateness p99",
            unit="s",
            daemon=dmn.p99,
            raw=raw.p99,
            target="<= 1 s",
            ok=dmn.p99 <= 1.0,
        )
        result.add(name="burst lateness max", unit="s", daemon=dmn.max, raw=raw.max)
        await conn.execute(Q["truncate"])
        await end_to_end(b, dsn, conn, n, result)
    finally:
        await db.close()
        await conn.close()
    return result


async def end_to_end(
    b: harness.Bench, dsn: str, conn: asyncpg.Connection, n: int, result: harness.Result
) -> None:
    """The daemon process fires the burst and sends every SMS to the sandbox process (no SMS cap there)."""
    sb_port, d_port = harness.free_port(), harness.free_port()
    d_url = f"http://127.0.0.1:{d_port}"
    async with (
        b.sandbox(sb_port, daemon_url=d_url) as sb,
        b.daemon(dsn, d_port, sb.url, name="daemon-timers"),
    ):
        due = time.time() + 3.0
        await conn.execute(Q["seed_armed"], n, due, 0.0, 0)
        await conn.execute(Q["analyze"])

        async def all_sent() -> bool:
            return await conn.fetchval(Q["count_fallback"], DONE) == n

        await harness.until(all_sent, "every burst SMS to be sent", timeout_s=300)
        took = time.time() - due
        sms = [r["s"] for r in await conn.fetch(Q["sms_lateness"])]
        claim_ms = [r["ms"] for r in await conn.fetch(Q["fired_lateness"], "timeout")]
        async with aiohttp.ClientSession() as http, http.get(f"{sb.url}/sandbox/journal") as resp:
            journal = await resp.json()
        sends = [e["sends"] for e in journal["sms"].values()]
    twice = await conn.fetchval(Q["fired_twice"])
    result.details["end_to_end"] = {
        "n": n,
        "seconds": took,
        "sms_per_s": n / took,
        "sms_lateness_p50": harness.pct(sms, 50),
        "sms_lateness_p99": harness.pct(sms, 99),
        "claim_lateness_ms_p99": harness.pct(claim_ms, 99),
        "sandbox_sms": len(sends),
        "sandbox_sms_sent_twice": sum(1 for s in sends if s > 1),
        "fired_twice": twice,
        "claim_lateness_ms_mean": statistics.fmean(claim_ms) if claim_ms else None,
    }
    result.add(
        name="end to end: SMS accepted by sandbox",
        unit="SMS/s",
        daemon=n / took,
        note=f"{len(sends)} SMS, {sum(1 for s in sends if s > 1)} sent twice",
    )
    result.add(
        name="end to end: SMS lateness p99",
        unit="s",
        daemon=harness.pct(sms, 99),
        note="due -> provider accepted, recorded",
    )
    result.add(name="end to end: claim lateness p99", unit="s", daemon=harness.pct(claim_ms, 99) / 1000)
