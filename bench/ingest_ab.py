"""`python -m bench.ingest_ab`: the daemon's own CPU per receipt on the ingest path, levers A/B in one run.

The HTTP receipt scenario (`--only receipts`) measures the whole daemon, but on a machine whose speed drifts
by tens of percent between minutes (a shared VM) two runs minutes apart cannot tell a 10 % lever from the
drift. This runs the service in-process (no HTTP) on the bench's Postgres and alternates the variants round
by round, so drift hits each one alike. Each round seeds N sent messages with an armed timer and pushes a
Delivered report for each, in pushes of 100 from 8 concurrent callers (as `--only receipts` does); the
figure is this process's CPU (time.process_time: the Python side, not Postgres) per receipt, the median
over rounds, and the wall time per round.

Variants (a full factorial of three levers):
- `push`: `ingest_chat` per push (one transaction each, as before group commit) or `push_chat` (group commit,
  engine/groupcommit.py);
- `log`: structlog's PrintLogger (a write + flush per line) or `logs.LineBuffer` (one write per loop pass),
  into a real file, the JSON chain as the daemon configures it;
- `jsonb`: the jsonb parameter codec, json.dumps or msgspec (`store.encode_jsonb`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from bench import harness
from bench.harness import Q
from bench.receipts import reports
from fallback_daemon import logs
from fallback_daemon.core import model, receipts
from fallback_daemon.db import embedded, migrate, store
from fallback_daemon.engine import service

CONCURRENCY = 8


async def connect_store(dsn: str, *, jsonb: str) -> store.Store:
    """A Store whose pool encodes jsonb parameters with json.dumps or msgspec."""
    encoder = json.dumps if jsonb == "json" else store.encode_jsonb

    async def init(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec("jsonb", encoder=encoder, decoder=json.loads, schema="pg_catalog")
        await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    pool = await asyncpg.create_pool(dsn, min_size=CONCURRENCY, max_size=CONCURRENCY, init=init)
    return store.Store(pool, dsn)


async def one_round(
    db: store.Store, conn: asyncpg.Connection, n: int, *, per_push: int, push: str, log_file: Any, log: str
) -> tuple[float, float]:
    """Seed, then ingest one Delivered per message; returns (CPU s, wall s) of the ingest alone."""
    await conn.execute(Q["truncate"])
    rows = await conn.fetch(Q["seed_sent"], n)
    now_ms = int(time.time() * 1000)
    pushes: list[Sequence[model.ChatReceipt]] = [
        receipts.parse_chatapp_reports(reports(rows[i : i + per_push], "Delivered", now_ms))
        for i in range(0, len(rows), per_push)
    ]
    logs.configure(fmt="json", level="info", file=log_file, cache=False, buffered=log == "buffer")
    svc = service.Service(db)
    queue = list(reversed(pushes))

    async def caller() -> None:
        while queue:
            batch = queue.pop()
            if push == "group":
                await svc.push_chat(batch, "http")
            else:
                await svc.ingest_chat(batch, "http")

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    await asyncio.sleep(0)  # the buffered lines of the last pass
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    applied = await conn.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NOT NULL")
    if applied != n:
        raise RuntimeError(f"{applied} of {n} receipts applied")
    return cpu, wall


async def main(args: argparse.Namespace) -> int:
    admin = os.environ.get("DATABASE_URL") or await embedded.start(embedded_dir())
    name = "bench_ingest_ab"
    conn = await asyncpg.connect(admin)
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    dsn = harness.with_database(admin, name)
    conn = await asyncpg.connect(dsn)
    await migrate.migrate(conn)
    await conn.execute(Q["raw_table"])
    stores = {j: await connect_store(dsn, jsonb=j) for j in ("json", "msgspec")}
    variants = list(
        itertools.product(
            ("each", "group") if "push" in args.levers else ("group",),
            ("print", "buffer") if "log" in args.levers else ("buffer",),
            ("json", "msgspec") if "jsonb" in args.levers else ("msgspec",),
        )
    )
    cpu: dict[tuple[str, str, str], list[float]] = {v: [] for v in variants}
    wall: dict[tuple[str, str, str], list[float]] = {v: [] for v in variants}
    saved_stderr = sys.stderr
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=True) as log_file:
        try:
            for r in range(args.rounds + 1):  # round 0 warms up (plans, caches) and is not counted
                order = variants if r % 2 == 0 else list(reversed(variants))
                for v in order:
                    c, w = await one_round(
                        stores[v[2]],
                        conn,
                        args.n,
                        per_push=args.per_push,
                        push=v[0],
                        log_file=log_file,
                        log=v[1],
                    )
                    if r:
                        cpu[v].append(c)
                        wall[v].append(w)
        finally:
            logs.configure(fmt="json", level="warning", file=saved_stderr, cache=False)
            for s in stores.values():
                await s.close()
            await conn.close()
    print(
        f"python -m bench.ingest_ab --n {args.n} --rounds {args.rounds} --per-push {args.per_push}"
        f" --levers {','.join(args.levers)}: median of {args.rounds} rounds"
    )
    print("push   log     jsonb    | CPU µs / receipt | wall ms / round | receipts/s (this process)")
    for v in variants:
        c_us = statistics.median(cpu[v]) / args.n * 1e6
        w_s = statistics.median(wall[v])
        print(f"{v[0]:<6} {v[1]:<7} {v[2]:<8} | {c_us:16.1f} | {w_s * 1000:15.0f} | {args.n / w_s:,.0f}")
    return 0


def embedded_dir() -> Any:
    return harness.ROOT / ".data" / "bench"  # the embedded server `python -m bench` uses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="receipts per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds per variant (default 5)")
    parser.add_argument("--per-push", type=int, default=100, help="receipts per push (default 100)")
    parser.add_argument(
        "--levers",
        type=lambda v: v.split(","),
        default=["push", "log", "jsonb"],
        help="levers to vary, comma-separated (push,log,jsonb; the others stay at the new setting)",
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
