"""Scenario 2, steady load: 250 sends/s for 60 s through one daemon process and the sandbox process.

Messages are posted one by one at a fixed rate; their outcomes follow the sandbox's suffix table (most get
Sent/Delivered/Read receipts, a share fail, are rejected or stay silent). Timers fall due at a steady rate
during the window (armed rows seeded with due times spread over it, so the 60 s minimum FallBackDuration
does not stretch the run). Measured: the send rate the sandbox admitted per second, timer lateness, receipt
latency (provider Timestamp -> stored), and the CPU of the daemon, the sandbox and Postgres.
The raw baseline is a plain asyncpg timer loop draining the same number of timers per second on its own.

Scenario 2b, `steady-webhooks` (`python -m bench --only steady steady-webhooks`: both in one run), is the same
load with one webhook endpoint subscribed to every event type through `POST /v1/webhooks`, delivering to
bench/webhook_receiver.py (its own process, answers 204). It adds the events delivered per second, the lag
from state change to recorded 2xx, and the daemon's CPU per message until the events are delivered too;
its notes quote `steady`'s figures from the same run.

Scenario 2c, `steady-split` (`python -m bench --only steady steady-split`), is the same load against a
role-split deployment on the one database (docs/scaling.md "Roles", issue 11): `--role api` takes the POSTs
and the sandbox's receipt pushes, `--role senders` sends, `--role timers,workers` fires the timers. The daemon
CPU is the three processes' sum (each one's in the notes); its notes quote `steady`'s figures from the same
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import psutil

from bench import harness, replicas
from bench.harness import Q

RATE = 250
TIMERS_PER_S = 50
SEEDED_FROM = 90_000_000  # seeded rows' numbers (no clash with the posted ones)

# steady-webhooks: what the outbox holds (created_at is the state change's transaction time, delivered_at when
# the loop recorded the 2xx: their difference is what fallback_webhook_delivery_lag_seconds observes).
WEBHOOKS_PENDING = "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'"
WEBHOOKS_WINDOW = """
SELECT count(*) AS deliveries,
       count(*) FILTER (WHERE state = 'delivered') AS delivered,
       count(*) FILTER (WHERE created_at BETWEEN to_timestamp($1::float8) AND to_timestamp($2::float8))
           AS made_in_window,
       count(*) FILTER (WHERE delivered_at BETWEEN to_timestamp($1::float8) AND to_timestamp($2::float8))
           AS delivered_in_window,
       (extract(epoch FROM max(delivered_at)) - $1::float8)::float8 AS last_delivered_after_start_s,
       coalesce(sum(attempts), 0)::bigint AS attempts
FROM webhook_deliveries
"""
WEBHOOKS_LAG = """
SELECT extract(epoch FROM delivered_at - created_at)::float8 AS s
FROM webhook_deliveries WHERE state = 'delivered'
"""
WEBHOOKS_BY_TYPE = "SELECT event_type, count(*) AS n FROM webhook_deliveries GROUP BY 1 ORDER BY 2 DESC"

# steady-split: one process per --role value; the first takes the API calls and the receipts.
SPLIT_ROLES = ("api", "senders", "timers,workers")
# What a variant's notes call `steady`'s figures from the same run.
COMPARED = {"webhooks": "without endpoint", "split": "one all-roles process"}


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
    """Scenario 2 as it always ran: no webhook endpoint."""
    return await measure(b, webhooks=False)


async def run_webhooks(b: harness.Bench) -> harness.Result:
    """Scenario 2b (`--only steady steady-webhooks`): the same load, one endpoint subscribed to everything.

    The endpoint is made through the daemon's API (`POST /v1/webhooks`, no filter: every event type) once the
    daemon is up, pointing at bench/webhook_receiver.py in its own process (answers 204). The raw baseline is
    not run again (it has no webhooks to differ by); the figures of `steady` from the same run, when it ran
    first, are quoted in the notes for the comparison.
    """
    return await measure(b, webhooks=True)


async def run_split(b: harness.Bench) -> harness.Result:
    """Scenario 2c (`--only steady steady-split`): the same load, three role-split processes, one database.

    `--role api` (port the load generator posts to and the sandbox pushes receipts to), `--role senders`,
    `--role timers,workers`. No raw baseline (it has no processes to differ by); `steady`'s figures from the
    same run, when it ran first, are quoted in the notes.
    """
    return await measure(b, split=True)


@contextlib.asynccontextmanager
async def receiver(port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """bench/webhook_receiver.py as its own process on `port`; terminated at exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.webhook_receiver",
        str(port),
        cwd=harness.ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"webhook receiver did not start: {line!r}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def subscribe(d_url: str, hook_url: str) -> int:
    """POST /v1/webhooks: one endpoint, every event type (the API token has the operate scope here)."""
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {harness.API_TOKEN}"}) as http,
        http.post(f"{d_url}/v1/webhooks", json={"url": hook_url, "description": "bench steady"}) as resp,
    ):
        body = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"POST /v1/webhooks answered {resp.status}: {body}")
        return int(body["endpoint"]["id"])


async def measure(b: harness.Bench, *, webhooks: bool = False, split: bool = False) -> harness.Result:
    seconds = 2.0 if b.quick else 60.0
    variant = "webhooks" if webhooks else "split" if split else None
    result = harness.Result(
        scenario={
            None: "2 steady load",
            "webhooks": "2b steady load + webhooks",
            "split": "2c steady load, role-split",
        }[variant]
    )
    name = {None: "steady", "webhooks": "steady_webhooks", "split": "steady_split"}[variant]
    dsn = await b.fresh_db(name)
    conn = await asyncpg.connect(dsn)
    hook: dict[str, Any] = {}
    try:
        await conn.execute(Q["raw_table"])
        raw_s = 1.0 if b.quick else 20.0
        raw = [] if variant else await raw_steady(conn, int(TIMERS_PER_S * raw_s), raw_s)
        await conn.execute(Q["truncate"])
        sb_port, d_port = harness.free_port(), harness.free_port()
        d_url = f"http://127.0.0.1:{d_port}"
        async with contextlib.AsyncExitStack() as stack:
            sb = await stack.enter_async_context(b.sandbox(sb_port, daemon_url=d_url, qps=RATE))
            # role -> process; one "all" process unless split (the first one takes the API and the receipts).
            daemons: dict[str, harness.Proc] = {}
            for i, roles in enumerate(SPLIT_ROLES if split else ("all",)):
                daemons[roles] = await stack.enter_async_context(
                    b.daemon(
                        dsn,
                        d_port if i == 0 else harness.free_port(),
                        sb.url,
                        name=f"daemon-{name.replace('_', '-')}"
                        + (f"-{roles.replace(',', '+')}" if split else ""),
                        args=["--role", roles] if split else (),
                    )
                )
            daemon = next(iter(daemons.values()))
            rcv_url = ""
            rcv: asyncio.subprocess.Process | None = None
            if webhooks:
                rcv_port = harness.free_port()
                rcv = await stack.enter_async_context(receiver(rcv_port))
                rcv_url = f"http://127.0.0.1:{rcv_port}"
                hook["endpoint_id"] = await subscribe(d_url, f"{rcv_url}/hook")
            lead = 3.0
            t_start = time.time() + lead
            await conn.execute(Q["seed_armed"], int(TIMERS_PER_S * seconds), t_start, seconds, SEEDED_FROM)
            await conn.execute(Q["analyze"])
            meters = {
                "daemon": harness.CpuMeter([d.ps for d in daemons.values()]),
                **({f"daemon {r}": harness.CpuMeter([d.ps]) for r, d in daemons.items()} if split else {}),
                "sandbox": harness.CpuMeter([sb.ps]),
                "postgres": harness.CpuMeter(harness.postgres_processes(b.pg_data)),
            }
            if rcv is not None:
                meters["receiver"] = harness.CpuMeter([psutil.Process(rcv.pid)])
            # The daemon's CPU from the first post until the lifecycles it started are done (backlog sent,
            # fallbacks fired by Failed receipts sent): CPU-seconds per message lifecycle (split: the sum of
            # the processes', each one's kept in the details).
            lifecycle = {r: harness.CpuMeter([d.ps]) for r, d in daemons.items()}
            await asyncio.sleep(max(0.0, t_start - time.time()))
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{sb.url}/sandbox/reset") as resp:
                    resp.raise_for_status()
                if rcv_url:
                    async with http.post(f"{rcv_url}/reset") as resp:
                        resp.raise_for_status()
            profiler = await start_profiler(daemon.proc.pid, seconds)
            for m in [*meters.values(), *lifecycle.values()]:
                m.start()
            posted, post_lat, post_errors = await generate(d_url, RATE, seconds)
            cpu = {k: m.stop() for k, m in meters.items()}
            t_end = time.time()

            async def drained() -> bool:
                return not await conn.fetchval(Q["count_chat"], ["accepted", "sending"])

            async def settled() -> bool:
                return not await conn.fetchval(Q["count_fallback"], ["firing"])

            async def delivered_all() -> bool:
                return not await conn.fetchval(WEBHOOKS_PENDING)

            backlog_s = await harness.until(drained, "the send backlog to drain", timeout_s=120)
            await harness.until(settled, "the fired fallbacks to be sent", timeout_s=120)
            await asyncio.sleep(1.0)  # the last receipts (0-50 ms delay, 5 ms batching) and their writes
            cpu_parts = {r: m.used_s() for r, m in lifecycle.items()}
            cpu_s = sum(cpu_parts.values())
            if webhooks:
                # With an endpoint, a lifecycle is done when its events are delivered too: the CPU figure
                # includes the deliveries still queued when the sends were done (the figure at the point
                # `steady` stops is kept in the details).
                hook["cpu_s_lifecycles_only"] = cpu_s
                hook["drain_after_lifecycles_s"] = await harness.until(
                    delivered_all, "the webhook deliveries to drain", timeout_s=600
                )
                cpu_s = sum(m.used_s() for m in lifecycle.values())
                async with aiohttp.ClientSession() as http, http.get(f"{rcv_url}/stats") as resp:
                    hook["receiver"] = await resp.json()
            if profiler is not None:
                await profiler.wait()
            async with aiohttp.ClientSession() as http, http.get(f"{sb.url}/sandbox/rates") as resp:
                rates = await resp.json()
        seeded = [r["s"] for r in await conn.fetch(Q["seeded_lateness"])]
        immediate = [r["ms"] / 1000 for r in await conn.fetch(Q["fired_lateness"], "failed_receipt")]
        receipt = [r["s"] for r in await conn.fetch(Q["receipt_latency"], t_start)]
        if webhooks:
            window = await conn.fetchrow(WEBHOOKS_WINDOW, t_start, t_end)
            assert window is not None  # an aggregate answers one row
            hook.update(dict(window.items()))
            hook["lag"] = [r["s"] for r in await conn.fetch(WEBHOOKS_LAG)]
            hook["by_type"] = {r["event_type"]: r["n"] for r in await conn.fetch(WEBHOOKS_BY_TYPE)}
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
        hook=hook if webhooks else None,
        variant=variant,
        cpu_parts=cpu_parts if split else None,
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
    hook: dict[str, Any] | None = None,
    variant: str | None = None,
    cpu_parts: dict[str, float] | None = None,
) -> None:
    """The rows; `variant` (None for `steady`, "webhooks", "split") quotes `steady`'s figures in the notes."""
    busy = [s for s, a, _ in rates["per_second"] if a > 0]
    # Whole seconds of offered load: the first and last two busy seconds are dropped (the ramp-up, and the
    # backlog running out part-way through the second after the last post: counting that one read as a
    # "slowest second" of 60-108 calls and took ~3 calls/s off the mean in session 6's runs).
    ends = (busy[1], busy[-2]) if len(busy) > 4 else (busy[0], busy[-1]) if busy else (0, 0)
    full = replicas.saturated(rates["per_second"], *ends) if busy else []
    counts = [a for _, a in full]
    mean = statistics.fmean(counts) if counts else 0.0
    cpu_ms = 1000 * cpu_s / posted if posted else math.nan

    def raw_pct(p: float) -> float | None:
        return harness.pct(raw, p) if raw else None  # the variants run no raw baseline

    # `steady` leaves its figures for the DBOS peer and for its variants (which must not overwrite them).
    base = dict(shared) if variant is not None else {}
    if variant is None:
        shared.update(
            steady_rate=mean,
            steady_timer_p50=harness.pct(seeded, 50),
            steady_timer_p99=harness.pct(seeded, 99),
            steady_timer_raw_p99=harness.pct(raw, 99),
            steady_cpu_ms=cpu_ms,
            steady_throttled=float(rates["throttled"]),
        )

    def without(key: str, unit: str) -> str:
        """`steady`'s figure from this run, quoted in a variant's notes."""
        if variant is None:
            return ""
        value = base.get(key)
        if value is None:
            return "no `steady` figure in this run"
        if unit == "s":
            return f"{COMPARED[variant]} (same run): {value * 1000:.1f} ms"
        return f"{COMPARED[variant]} (same run): {value:.3g} {unit}"

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
            **({"daemon_cpu_s_lifecycles_by_role": cpu_parts} if cpu_parts is not None else {}),
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
        note=f"slowest second {min(counts, default=0)}, throttled {rates['throttled']}"
        + (f"; {without('steady_rate', 'calls/s')}" if variant is not None else ""),
    )
    result.add(
        name="timer lateness p50",
        unit="s",
        daemon=harness.pct(seeded, 50),
        raw=raw_pct(50),
        note=without("steady_timer_p50", "s"),
    )
    result.add(
        name="timer lateness p99",
        unit="s",
        daemon=harness.pct(seeded, 99),
        raw=raw_pct(99),
        target="<= 50 ms",
        ok=harness.pct(seeded, 99) <= 0.05,
        note=f"{len(seeded)} timers at {TIMERS_PER_S}/s under load; "
        + (
            without("steady_timer_p99", "s")
            if variant is not None
            else "raw: same rate, nothing else running"
        ),
    )
    result.add(name="Failed receipt -> fallback fired p99", unit="s", daemon=harness.pct(immediate, 99))
    result.add(
        name="receipt latency p99 (Timestamp -> stored)",
        unit="s",
        daemon=harness.pct(receipt, 99),
        note="includes the sandbox's 0-50 ms delay and 5 ms batching",
    )
    by_role = [(k.removeprefix("daemon "), v) for k, v in cpu.items() if k.startswith("daemon ")]
    result.add(
        name="daemon CPU" + (f" (sum of {len(by_role)} processes)" if by_role else ""),
        unit="% of a core",
        daemon=cpu["daemon"],
        note=(f"per process: {', '.join(f'{r} {v:.0f}%' for r, v in by_role)}; " if by_role else "")
        + f"sandbox {cpu['sandbox']:.0f}%, Postgres {cpu['postgres']:.0f}% of a core",
    )
    result.add(
        name="daemon CPU per message lifecycle",
        unit="ms/msg",
        daemon=1000 * cpu_s / posted if posted else None,
        target="<= 1 ms",
        ok=bool(posted) and 1000 * cpu_s / posted <= 1.0,
        note=f"{cpu_s:.1f} CPU-s over {posted} messages, first post -> lifecycles done"
        + (" and their webhooks delivered" if hook is not None else "")
        + f" (includes the {len(seeded)} seeded timers' SMS)"
        + (
            f"; by process: {', '.join(f'{r} {v:.1f} CPU-s' for r, v in cpu_parts.items())}"
            if cpu_parts is not None
            else ""
        )
        + (f"; {without('steady_cpu_ms', 'ms/msg')}" if variant is not None else ""),
    )
    if hook is not None:
        report_webhooks(result, hook, cpu=cpu, posted=posted, seconds=seconds)


def report_webhooks(
    result: harness.Result, hook: dict[str, Any], *, cpu: dict[str, float], posted: int, seconds: float
) -> None:
    """The webhook variant's own rows: how fast the events went out, how late, and the receiver's view."""
    lag = hook.pop("lag")
    rcv = hook.get("receiver", {})
    last = hook["last_delivered_after_start_s"]  # None when nothing was delivered
    last = math.nan if last is None else last
    lifecycles_only = hook.get("cpu_s_lifecycles_only", math.nan)
    result.details["webhooks"] = {
        **hook,
        "lag_p50_s": harness.pct(lag, 50),
        "lag_p99_s": harness.pct(lag, 99),
        "lag_max_s": max(lag, default=math.nan),
        "cpu_ms_per_message_at_lifecycles_done": 1000 * lifecycles_only / posted if posted else None,
        "events_per_message": hook["deliveries"] / posted if posted else None,
    }
    result.add(
        name="webhook events delivered/s (in the posting window)",
        unit="events/s",
        daemon=hook["delivered_in_window"] / seconds if seconds > 0 else None,
        note=f"{hook['made_in_window'] / seconds:.0f}/s made in the window; {hook['deliveries']} in all,"
        f" {hook['delivered']} delivered, the last {last:.1f} s after the"
        f" first post ({hook['drain_after_lifecycles_s']:.1f} s after the lifecycles were done);"
        f" {hook['attempts']} attempts",
    )
    result.add(
        name="webhook lag p50 (state change -> 2xx recorded)",
        unit="s",
        daemon=harness.pct(lag, 50),
    )
    result.add(
        name="webhook lag p99 (state change -> 2xx recorded)",
        unit="s",
        daemon=harness.pct(lag, 99),
        note=f"max {max(lag, default=math.nan):.1f} s; at the receiver p99"
        f" {(rcv.get('lag_p99_s') or math.nan) * 1000:.0f} ms over {rcv.get('received', 0)} requests"
        f" ({rcv.get('repeats', 0)} repeated ids);"
        f" receiver CPU {cpu.get('receiver', math.nan):.0f}% of a core",
    )
