"""The DBOS Transact peer's process: `python -m bench.dbos_worker MODE --url SYSTEM_DB_URL [options]`.

The idiomatic "DIY on DBOS" version of the daemon's core workloads, run as its own process (one DBOS
instance per process, its CPU measured apart from the harness) on the same Postgres server. It prints one
line `RESULT {json}` and exits. Modes:

- `burst`: N fallbacks as DELAYED workflows (enqueued on a queue with a delay; a success receipt would cancel
  one), all made due at one instant; each fires a step. Lateness = step start - due time.
- `steady`: messages enqueued at RATE/s on a queue whose limiter is the provider cap (RATE per second); each
  message workflow sends in a step, then waits for receipts with `recv_async(timeout=FallBackDuration)` and
  sends the SMS in a step on Failed or timeout. An in-process stand-in for the provider pushes the receipts
  with `DBOS.send_async` (what a DIY's webhook handler does) 0-50 ms after the send, with the sandbox's
  outcome mix. Timers fall due at TIMERS/s during the window: workflows parked in `recv_async` with spread
  timeouts (the waiting-workflow idiom). The provider calls themselves are no-op steps (no HTTP, no signing).
- `seed` / `recover`: restart with N pending: `seed` parks N fallback workflows (idiom `recv`: live
  workflows waiting in recv; idiom `delayed`: DELAYED queue rows), the first due at --first-due, the rest an
  hour later, then prints its result and waits to be SIGKILLed; `recover` is the new process: it launches
  DBOS (which recovers the pending workflows) and reports when the first due timer fired.

Needs `pip install dbos` (the `bench-dbos` extra); not a dependency of the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from dbos import DBOS, DBOSConfig, SetEnqueueOptions, SetWorkflowID

# (key, fired unix time, due unix time) of every fallback step that ran in this process.
FIRED: list[tuple[str, float, float]] = []
SENDS: list[float] = []  # unix time of every chat send step
PARKED: list[str] = []  # waiting_fallback workflows that reached their recv
DUE_BY_ID: dict[str, float] = {}  # seeded copies share their template's inputs: their due time by id
REJECTED: list[float] = []
RULES = ("undelivered", "sentFailed", "unread")
# The sandbox's suffix table (last digit of the number): 30% read, 20% delivered, 10% each failed, silent,
# late (Delivered withheld), rejected (the send call fails), early (Delivered before the send answer).
OUTCOMES = ("read", "read", "read", "delivered", "delivered", "failed", "silent", "late", "rejected", "early")
RECEIPTS = {
    "read": ("Sent", "Delivered", "Read"),
    "delivered": ("Sent", "Delivered"),
    "failed": ("Failed",),
    "silent": (),
    "late": ("Sent",),
    "rejected": (),
    "early": ("Delivered", "Read"),
}
SATISFIES = {
    "undelivered": {"Delivered", "Read"},
    "sentFailed": {"Sent", "Delivered", "Read"},
    "unread": {"Read"},
}
_pushes: set[asyncio.Task[None]] = set()


@DBOS.step()
async def send_sms(due: float) -> float:
    """The SMS call (a no-op stand-in); records which workflow fired it, and when."""
    now = time.time()
    FIRED.append((DBOS.workflow_id or "", now, due))
    return now


@DBOS.step()
async def send_chat(i: int) -> str | None:
    """The CAMS call (a no-op stand-in): returns a message id, None when the provider refused the send."""
    outcome = OUTCOMES[i % 10]
    if outcome == "rejected":
        REJECTED.append(time.time())
        return None
    SENDS.append(time.time())
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    # A fresh context: the push comes from outside the workflow (the provider's webhook), not from this step.
    task = asyncio.get_running_loop().create_task(
        push_receipts(workflow_id, RECEIPTS[outcome]), context=contextvars.Context()
    )
    _pushes.add(task)
    task.add_done_callback(_pushes.discard)
    return f"cams-{i}"


async def push_receipts(workflow_id: str, statuses: Sequence[str]) -> None:
    """The provider's receipt pushes, as a DIY webhook handler would hand them to the workflow."""
    for status in statuses:
        await asyncio.sleep(random.uniform(0.0, 0.05))
        await DBOS.send_async(workflow_id, status, topic="receipt")


@DBOS.step()
async def now_step() -> float:
    return time.time()


@DBOS.workflow()
async def message_workflow(i: int, rule: str, duration_s: float) -> str:
    """One message's lifecycle: send, wait for receipts until FallBackDuration, SMS on Failed or timeout."""
    if await send_chat(i) is None:
        await send_sms(await now_step())
        return "rejected"
    deadline = await now_step() + duration_s  # a step, so a replay waits for the same deadline
    while True:
        status = await DBOS.recv_async("receipt", timeout_seconds=max(0.0, deadline - time.time()))
        if status is None:
            await send_sms(deadline)
            return "timeout"
        if status == "Failed":
            await send_sms(await now_step())
            return "failed"
        if status in SATISFIES[rule]:
            return "done"


@DBOS.workflow()
async def waiting_fallback(due: float) -> None:
    """A fallback timer as a waiting workflow: a receipt message cancels it, the recv timeout fires it."""
    due = DUE_BY_ID.get(DBOS.workflow_id or "", due)
    PARKED.append(DBOS.workflow_id or "")
    if await DBOS.recv_async("receipt", timeout_seconds=max(0.0, due - time.time())) is None:
        await send_sms(due)


@DBOS.workflow()
async def delayed_fallback(due: float) -> None:
    """A fallback timer as a DELAYED workflow: enqueued with a delay until due; a receipt cancels it."""
    await send_sms(due)


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def pct(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * p // 100) - 1))]


def lateness(fired: Sequence[tuple[str, float, float]]) -> dict[str, Any]:
    late = [f - d for _, f, d in fired]
    return {"n": len(late), "p50": pct(late, 50), "p99": pct(late, 99), "max": max(late, default=None)}


def launch(url: str, pool: int | None = None) -> None:
    config: DBOSConfig = {
        "name": "bench-fallback",
        "system_database_url": url,
        "enable_otlp": False,
        "log_level": "WARNING",
    }
    if pool:  # tuned: a larger system-database pool and executor (the defaults are DBOS's own)
        config["sys_db_pool_size"] = pool
        config["max_executor_threads"] = pool
    DBOS(config=config)
    DBOS.launch()


async def gather_bounded(coros: Any, limit: int = 64) -> None:
    slots = asyncio.Semaphore(limit)

    async def one(c: Any) -> None:
        async with slots:
            await c

    await asyncio.gather(*(one(c) for c in coros))


async def wait_for(check: Any, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.01)
    return True


async def clone_delayed(url: str, queue: Any, prefix: str, n: int, due_ms: Any, workflow: Any = None) -> None:
    """Seed n DELAYED workflows `<prefix><i>` through the database, like the daemon's bench seeds its rows.

    One workflow is enqueued through the API (`SetEnqueueOptions(delay_seconds=...)`), then its row is copied
    n times by one INSERT ... SELECT over generate_series with its own id and delay (`due_ms`: SQL over `i`)
    and removed: creating tens of thousands through the API would take minutes here (its rate is reported).
    """
    import asyncpg

    with SetWorkflowID(f"{prefix}template"), SetEnqueueOptions(delay_seconds=3600.0):
        await queue.enqueue_async(workflow or delayed_fallback, 0.0)
    template = f"{prefix}template"
    status_pick = {
        "workflow_uuid": f"'{prefix}' || i",
        "delay_until_epoch_ms": due_ms,
        "deduplication_id": "NULL",
    }
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            # The status row, then its inputs row (this DBOS version keeps inputs in dbos.workflow_input).
            for table, pick in (("workflow_status", status_pick), ("workflow_input", status_pick)):
                cols = [
                    r["column_name"]
                    for r in await conn.fetch(
                        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'dbos' "
                        "AND table_name = $1 ORDER BY ordinal_position",
                        table,
                    )
                ]
                select = ", ".join(pick.get(c, f"t.{c}") for c in cols)
                await conn.execute(
                    f"INSERT INTO dbos.{table} ({', '.join(cols)}) SELECT {select} "  # noqa: S608 (our SQL)
                    f"FROM dbos.{table} t, generate_series(0, {int(n)} - 1) AS i WHERE t.workflow_uuid = $1",
                    template,
                )
            await conn.execute("DELETE FROM dbos.workflow_input WHERE workflow_uuid = $1", template)
            await conn.execute("DELETE FROM dbos.workflow_status WHERE workflow_uuid = $1", template)
        await conn.execute("ANALYZE dbos.workflow_status")
    finally:
        await conn.close()


async def enqueue_rate(queue: Any, n: int) -> float:
    """Workflows/s enqueued through the API (DELAYED, an hour out; cancelled again afterwards)."""
    t0 = time.perf_counter()

    async def one(i: int) -> None:
        with SetWorkflowID(f"rate{i}"), SetEnqueueOptions(delay_seconds=7200.0):
            await queue.enqueue_async(delayed_fallback, 0.0)

    await gather_bounded(one(i) for i in range(n))
    return n / (time.perf_counter() - t0)


async def burst(args: argparse.Namespace) -> dict[str, Any]:
    """N DELAYED workflows made due at one instant; each fires the SMS step once its queue starts it."""
    queue = await DBOS.register_queue_async("timers")
    api_rate = await enqueue_rate(queue, min(args.n, 1000))
    due = time.time() + args.lead
    await clone_delayed(args.url, queue, "b", args.n, str(int(due * 1000)))
    c0 = cpu_s()
    ok = await wait_for(lambda: sum(1 for k, _, _ in FIRED if k.startswith("b")) >= args.n, args.timeout)
    used = cpu_s() - c0
    fired = [(k, f, due) for k, f, _ in FIRED if k.startswith("b")]
    times = sorted(f for _, f, _ in fired)
    return {
        "n": args.n,
        "completed": ok,
        "enqueue_api_per_s": api_rate,
        "fire_rate_per_s": len(times) / max(1e-9, times[-1] - times[0]) if len(times) > 1 else None,
        "cpu_ms_per_timer": 1000 * used / max(1, len(fired)),
        **lateness(fired),
    }


async def steady(args: argparse.Namespace) -> dict[str, Any]:
    chat = await DBOS.register_queue_async("chat", limiter={"limit": args.rate, "period": 1.0})
    seconds = args.seconds
    t_start = time.time() + args.lead
    n_timers = int(args.timers * seconds)

    timers = await DBOS.register_queue_async("timers")
    # The timers falling due in the window: DELAYED workflows t<j>, due t_start + seconds * j / n_timers.
    await clone_delayed(
        args.url,
        timers,
        "t",
        n_timers,
        f"{int(t_start * 1000)} + {int(seconds * 1000)}::bigint * i / {n_timers}",
    )
    await asyncio.sleep(max(0.0, t_start - time.time()))
    c0, w0 = cpu_s(), time.time()
    inflight: set[asyncio.Task[Any]] = set()
    posted = 0
    while (now := time.time()) - w0 < seconds:
        due = w0 + posted / args.rate
        if due > now:
            await asyncio.sleep(due - now)
        with SetWorkflowID(f"m{posted}"):
            task = asyncio.create_task(
                chat.enqueue_async(message_workflow, posted, RULES[(posted // 10) % 3], 60.0)
            )
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        posted += 1
    await asyncio.gather(*inflight)
    window_cpu = cpu_s() - c0
    window_end = time.time()
    failed = sum(1 for i in range(posted) if OUTCOMES[i % 10] in ("failed", "rejected"))
    done = await wait_for(
        lambda: (
            len(SENDS) + len(REJECTED) >= posted
            and sum(1 for k, _, _ in FIRED if k.startswith("m")) >= failed
            and sum(1 for k, _, _ in FIRED if k.startswith("t")) >= n_timers
        ),
        args.timeout,
    )
    await asyncio.sleep(1.0)  # the last receipts
    used = cpu_s() - c0
    per_second: dict[int, int] = {}
    for s in SENDS:
        per_second[int(s)] = per_second.get(int(s), 0) + 1
    busy = sorted(per_second)
    full = [per_second.get(s, 0) for s in range(busy[0] + 1, busy[-1])] if len(busy) > 2 else []
    ordered = sorted(SENDS)
    sliding, j = 0, 0
    for k, s in enumerate(ordered):
        while ordered[j] <= s - 1.0:
            j += 1
        sliding = max(sliding, k - j + 1)
    immediate = [f - d for k, f, d in FIRED if k.startswith("m") and f - d < 30]
    return {
        "posted": posted,
        "completed": done,
        "sends": len(SENDS),
        "send_rate_mean_full_seconds": sum(full) / len(full) if full else None,
        "busiest_second": max(per_second.values(), default=0),
        "busiest_sliding_second": sliding,
        "backlog_drain_s": max(ordered[-1] - window_end, 0.0) if ordered else None,
        "cpu_percent_window": 100 * window_cpu / max(1e-9, window_end - w0),
        "cpu_ms_per_message": 1000 * used / max(1, posted),
        "timer": lateness(
            [(k, f, t_start + seconds * int(k[1:]) / n_timers) for k, f, _ in FIRED if k.startswith("t")]
        ),
        "failed_to_sms_p99": pct(immediate, 99),
    }


async def seed(args: argparse.Namespace) -> dict[str, Any]:
    """Park N pending fallbacks p<i>: p0 due at --first-due, the others an hour later.

    idiom `delayed`: DELAYED queue rows (passive until due). idiom `recv`: PENDING workflows of this executor
    (`waiting_fallback`, which waits in `recv_async` for its timeout: a DIY's per-message workflow waiting for
    a receipt), as a crash leaves them; the new process's recovery replays every one. Both are seeded by
    copying one API-made row (`clone_delayed`), so seeding is not the bound.
    """
    queue = await DBOS.register_queue_async("timers")
    due_ms = (
        f"CASE WHEN i = 0 THEN {int(args.first_due * 1000)} ELSE {int((args.first_due + 3600) * 1000)} END"
    )
    await clone_delayed(
        args.url, queue, "p", args.n, due_ms, waiting_fallback if args.idiom == "recv" else None
    )
    if args.idiom == "recv":
        import asyncpg

        conn = await asyncpg.connect(args.url)
        try:  # the same rows as workflows already running on this executor, waiting in recv
            await conn.execute(
                "UPDATE dbos.workflow_status SET status = 'PENDING', queue_name = NULL, "
                "delay_until_epoch_ms = NULL, executor_id = $1 WHERE workflow_uuid LIKE 'p%'",
                "local",
            )
        finally:
            await conn.close()
    return {"n": args.n, "idiom": args.idiom}


async def recover(args: argparse.Namespace) -> dict[str, Any]:
    await DBOS.register_queue_async("timers")  # (recovery of the PENDING rows started in DBOS.launch())
    ok = await wait_for(lambda: any(k == "p0" for k, _, _ in FIRED), args.timeout)
    first = next((f for k, f, _ in FIRED if k == "p0"), None)
    at_first = len(PARKED)
    everyone = args.idiom == "recv" and await wait_for(lambda: len(PARKED) >= args.n, args.timeout)
    return {
        "idiom": args.idiom,
        "fired": ok,
        "first_due_fired_after_spawn_s": None if first is None else first - args.spawned,
        "lateness_s": None if first is None else first - args.first_due,
        "recovered_waiting": at_first,
        # recv idiom: every pending workflow replayed up to its recv (DELAYED rows are never replayed)
        "all_recovered_after_spawn_s": time.time() - args.spawned if everyone else None,
    }


MODES = {"burst": burst, "steady": steady, "seed": seed, "recover": recover}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.dbos_worker", description=__doc__)
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--url", required=True, help="the DBOS system database (postgresql://...)")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--rate", type=int, default=250)
    p.add_argument("--timers", type=float, default=50.0, help="steady: timers falling due per second")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--lead", type=float, default=2.0)
    p.add_argument("--idiom", choices=("recv", "delayed"), default="recv")
    p.add_argument("--first-due", type=float, default=0.0, help="seed/recover: unix time the first is due")
    p.add_argument("--spawned", type=float, default=0.0, help="recover: unix time the harness spawned us")
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument(
        "--pool", type=int, default=0, help="sys_db_pool_size and max_executor_threads (0: defaults)"
    )
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> int:
    started = time.time()
    if args.mode == "recover":
        DUE_BY_ID.update({"p0": args.first_due, **{f"p{i}": args.first_due + 3600 for i in range(1, args.n)}})
    launch(args.url, args.pool)
    launched = time.time()
    try:
        result = await MODES[args.mode](args)
    finally:
        if args.mode != "seed":
            DBOS.destroy()
    result["launch_s"] = launched - started
    print("RESULT " + json.dumps(result), flush=True)
    if args.mode == "seed":
        await asyncio.sleep(3600)  # the harness SIGKILLs this process: the "crash" before the restart
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(amain(parse(None))))
