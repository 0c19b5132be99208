"""Scenario 7, the DBOS Transact peer: the DIY a user would build on DBOS, on the same Postgres, same run.

Each workload runs in its own `python -m bench.dbos_worker` process (bench/dbos_worker.py: the workflows and
why each is written the way it is) on a fresh system database of the bench's server:

- timer burst: 20,000 DELAYED fallback workflows made due at one instant (scenario 1's burst);
- steady: 250 messages/s for 60 s on a queue rate-limited to 250/s, each message a workflow that sends in a
  step and waits for its receipts in `recv_async(timeout=FallBackDuration)`, receipts pushed with
  `send_async` 0-50 ms after the send, 50 DELAYED timers/s falling due (scenario 2);
- restart with N pending: N fallbacks pending, the first already due, the process killed and a new one
  started: time from the new process's spawn until the due one fired, for DELAYED rows and for workflows
  waiting in recv (which recovery replays), and for the daemon (N armed rows, a fresh daemon process);
- pending-set size: bytes per pending DBOS fallback on disk (status + inputs rows) next to the daemon's.

The daemon's figures in the same rows come from scenarios 1 and 2 of the same run (`Bench.shared`) when
they ran. Needs `pip install -e '.[bench-dbos]'`; without it the DBOS cells say so and the daemon restart
row is still measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import math
import signal
import sys
import time
from typing import Any

import asyncpg

from bench import harness
from bench.harness import Q

WORKER_TIMEOUT_S = 300.0


async def dbos_database(b: harness.Bench, name: str) -> str:
    """A fresh, empty database for DBOS's system tables (DBOS creates its schema at launch)."""
    full = f"{b.prefix}_{name}"
    b.databases.append(full)
    conn = await asyncpg.connect(b.admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {full} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {full}")
    finally:
        await conn.close()
    return harness.with_database(b.admin_dsn, full)


async def worker(
    b: harness.Bench, mode: str, url: str, args: list[str], *, kill_after_result: bool = False
) -> dict[str, Any]:
    """Run one dbos_worker process; returns its RESULT (SIGKILLs it right after, with kill_after_result)."""
    log = (b.log_dir / f"dbos-{mode}.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.dbos_worker",
        mode,
        "--url",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        cwd=harness.ROOT,
        env=harness.clean_env({}),
    )
    assert proc.stdout is not None
    result: dict[str, Any] = {}
    try:
        async with asyncio.timeout(WORKER_TIMEOUT_S):
            while line := await proc.stdout.readline():
                if line.startswith(b"RESULT "):
                    result = json.loads(line[7:])
                    break
            if kill_after_result:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
    except TimeoutError:
        result.setdefault("error", f"timed out after {WORKER_TIMEOUT_S:.0f} s")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
    if not result:
        result = {"error": f"exited {proc.returncode} without a result (log: {log.name})"}
    return result


async def daemon_restart(b: harness.Bench, n: int) -> dict[str, float]:
    """N armed timers, one of them due already; a fresh daemon process: spawn -> that timer fired."""
    dsn = await b.fresh_db("restart")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(Q["seed_armed"], n - 1, time.time() + 3600, 3600.0, 0)
        await conn.execute(Q["seed_armed"], 1, time.time() - 0.5, 0.0, n)
        await conn.execute(Q["analyze"])
        sb_port, d_port = harness.free_port(), harness.free_port()
        async with b.sandbox(sb_port, daemon_url=None) as sb:
            spawned = time.time()
            async with b.daemon(dsn, d_port, sb.url, name="daemon-restart"):

                async def fired() -> bool:
                    return await conn.fetchval(Q["first_fired"]) is not None

                await harness.until(
                    fired, "the due timer to fire after the restart", timeout_s=60, every_s=0.02
                )
                first = await conn.fetchval(Q["first_fired"])
        row_bytes = await conn.fetchval(Q["table_bytes"], ["messages"]) / n
    finally:
        await conn.close()
    return {"first_fired_after_spawn_s": first - spawned, "bytes_per_pending": row_bytes}


async def dbos_bytes_per_pending(url: str, n: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        return float(
            await conn.fetchval(Q["table_bytes"], ["dbos.workflow_status", "dbos.workflow_input"]) / n
        )
    finally:
        await conn.close()


async def run(b: harness.Bench) -> harness.Result:
    result = harness.Result(scenario="7 DBOS peer")
    burst_n = b.size(20_000, 500)
    seconds = b.size(60, 3)
    pending_n = b.size(10_000, 200)
    have_dbos = importlib.util.find_spec("dbos") is not None
    out: dict[str, Any] = {}
    if have_dbos:
        out["burst"] = await worker(
            b, "burst", await dbos_database(b, "dbos_burst"), ["--n", str(burst_n), "--timeout", "200"]
        )
        out["steady"] = await worker(
            b,
            "steady",
            await dbos_database(b, "dbos_steady"),
            ["--seconds", str(seconds), "--rate", "250", "--timers", "50", "--timeout", "30"],
        )
        for idiom in ("delayed", "recv"):
            url = await dbos_database(b, f"dbos_restart_{idiom}")
            first_due = time.time() + 2.0  # due by the time the new process is up
            common = ["--n", str(pending_n), "--idiom", idiom, "--first-due", str(first_due)]
            out[f"seed_{idiom}"] = await worker(b, "seed", url, common, kill_after_result=True)
            if idiom == "delayed":
                out["dbos_bytes_per_pending"] = await dbos_bytes_per_pending(url, pending_n)
            await asyncio.sleep(max(0.0, first_due - time.time()))
            out[f"restart_{idiom}"] = await worker(
                b, "recover", url, [*common, "--spawned", str(time.time()), "--timeout", "150"]
            )
    out["daemon_restart"] = await daemon_restart(b, pending_n)
    result.details.update(out)
    report(b, result, out, have_dbos, burst_n=burst_n, pending_n=pending_n)
    return result


def _get(d: dict[str, Any], *path: str) -> float | None:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return None if d is None else float(d)  # type: ignore[arg-type]


def _why(d: dict[str, Any]) -> str:
    if "error" in d:
        return str(d["error"])
    if d.get("completed") is False:
        return "did not finish within its bound (figures are of what did)"
    return ""


def report(
    b: harness.Bench,
    result: harness.Result,
    out: dict[str, Any],
    have_dbos: bool,
    *,
    burst_n: int,
    pending_n: int,
) -> None:
    s = b.shared
    missing = "" if have_dbos else "dbos not installed: pip install -e '.[bench-dbos]'"
    burst, steady = out.get("burst", {}), out.get("steady", {})
    nan = math.nan
    result.add(
        name=f"burst {burst_n:,} due at once: fired",
        unit="rows/s",
        daemon=s.get("burst_rate"),
        raw=s.get("burst_raw_rate"),
        dbos=_get(burst, "fire_rate_per_s"),
        note=missing
        or _why(burst)
        or "DBOS: DELAYED workflows, 1 s background sweep to ENQUEUED, 1 s queue poll",
    )
    result.add(
        name="burst lateness p99",
        unit="s",
        daemon=s.get("burst_p99"),
        raw=s.get("burst_raw_p99"),
        dbos=_get(burst, "p99"),
        target="<= 1 s",
    )
    result.add(
        name="burst: CPU per fired timer (DBOS process)",
        unit="ms",
        daemon=None,
        dbos=_get(burst, "cpu_ms_per_timer"),
        note=f"DBOS API enqueue rate {_get(burst, 'enqueue_api_per_s') or nan:.0f} workflows/s",
    )
    result.add(
        name="steady 250/s: sends held (mean of full seconds)",
        unit="calls/s",
        daemon=s.get("steady_rate"),
        raw=250.0,
        dbos=_get(steady, "send_rate_mean_full_seconds"),
        note=missing
        or _why(steady)
        or f"DBOS busiest second {steady.get('busiest_second')}, busiest sliding second "
        f"{steady.get('busiest_sliding_second')} (limiter 250 per rolling second, 1 s poll)",
    )
    result.add(
        name="steady: timer lateness p99",
        unit="s",
        daemon=s.get("steady_timer_p99"),
        raw=s.get("steady_timer_raw_p99"),
        dbos=_get(steady, "timer", "p99"),
        target="<= 50 ms",
    )
    result.add(
        name="steady: CPU per message lifecycle",
        unit="ms/msg",
        daemon=s.get("steady_cpu_ms"),
        dbos=_get(steady, "cpu_ms_per_message"),
        target="<= 1 ms",
        note="DBOS: per message sent (provider calls are no-op steps, no HTTP)",
    )
    rd, rr = out.get("restart_delayed", {}), out.get("restart_recv", {})
    result.add(
        name=f"restart with {pending_n:,} pending: spawn -> first due fired",
        unit="s",
        daemon=_get(out, "daemon_restart", "first_fired_after_spawn_s"),
        dbos=_get(rd, "first_due_fired_after_spawn_s"),
        note=missing or _why(rd) or "DBOS column: DELAYED rows",
    )
    result.add(
        name="  same, DBOS workflows waiting in recv (replayed)",
        unit="s",
        daemon=None,
        dbos=_get(rr, "first_due_fired_after_spawn_s"),
        note=missing
        or _why(rr)
        or f"recovered and waiting when it fired: {rr.get('recovered_waiting')}; all {pending_n:,} replayed"
        f" after {rr.get('all_recovered_after_spawn_s') or nan:.1f} s",
    )
    with contextlib.suppress(TypeError, ValueError):
        result.add(
            name="pending set: bytes per pending timer on disk",
            unit="B",
            daemon=_get(out, "daemon_restart", "bytes_per_pending"),
            dbos=_get(out, "dbos_bytes_per_pending"),
            note="x 10.8 M pending = the disk the realistic set needs",
        )
