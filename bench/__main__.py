"""`python -m bench [--quick] [--only SCENARIO ...]`: run the benchmark scenarios, print the table, write
JSON.

Embedded Postgres under .data/bench by default, DATABASE_URL when set (each scenario makes its own database
on that server: the role needs CREATEDB). Results go to stdout and to bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

import asyncpg
import psutil

from bench import harness
from fallback_daemon.db import embedded

# name -> module of bench/ whose `run(bench)` measures it (or "module:function" for another entry point), in
# the order they run.
SCENARIOS: dict[str, str] = {
    "timers": "timers",
    "steady": "steady",
    "steady-webhooks": "steady:run_webhooks",
    "steady-split": "steady:run_split",
    "receipts": "receipts",
    "accept": "accept",
    "scale": "scale",
    "replicas": "replicas",
    "dbos": "dbos_peer",
}
# Scenarios a --quick run (the CI smoke test) leaves out unless named with --only: the DBOS peer needs the
# optional `bench-dbos` extra and minutes of its own; steady-webhooks is steady again with a webhook endpoint
# (issue 12), and steady-split is steady against three role-split processes (issue 11): comparisons that mean
# nothing at the quick sizes.
FULL_ONLY = frozenset({"dbos", "steady-webhooks", "steady-split"})
DATA_DIR = harness.ROOT / ".data" / "bench"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, a few seconds each (CI smoke test)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(SCENARIOS),
        metavar="SCENARIO",
        help=f"run only these scenarios ({', '.join(SCENARIOS)})",
    )
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON report path")
    parser.add_argument("--prefix", default="bench", help="name prefix of the databases made (and dropped)")
    parser.add_argument("--keep", action="store_true", help="keep the scenario databases for inspection")
    return parser.parse_args(argv)


def machine(server_version: str) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "postgres": server_version,
        "platform": platform.platform(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain")),
    }


def _git(*args: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603 (fixed arguments)
            ["git", *args],  # noqa: S607 (git from PATH, as a developer runs it)
            cwd=harness.ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout.strip()
    except OSError:
        return ""


def fmt(value: float | None, unit: str) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 10 else f"{value:.1f} s"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}" if unit else f"{value:.3g}"


def table(results: list[harness.Result]) -> str:
    head = ("scenario", "metric", "daemon", "raw SQL", "ratio", "DBOS", "target", "ok")
    rows = [head]
    for r in results:
        for m in r.metrics:
            ok = "" if m.ok is None else ("yes" if m.ok else "NO")
            ratio = "" if m.ratio is None else f"{m.ratio:.2f}x"
            dbos = "" if m.dbos is None else fmt(m.dbos, m.unit)
            rows.append(
                (r.scenario, m.name, fmt(m.daemon, m.unit), fmt(m.raw, m.unit), ratio, dbos, m.target, ok)
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        notes = [f"{m.name}: {m.note}" for m in r.metrics if m.note]
        lines.append(
            f"[{r.scenario}] {r.seconds:.0f} s, load {r.load_before} -> {r.load_after}"
            + ("; " + "; ".join(notes) if notes else "")
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    # SIGTERM (a `kill`, a CI timeout) unwinds the scenarios like Ctrl-C does, so the daemons and sandboxes
    # they started are stopped: a daemon left running from a killed run keeps claiming in the next run's
    # database of the same name (seen: two later steady runs timed out waiting for their send backlog).
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.time()
    external = os.environ.get("DATABASE_URL")
    dsn = external or await embedded.start(DATA_DIR)
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or harness.RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    bench = harness.Bench(
        dsn,
        quick=args.quick,
        log_dir=harness.RESULTS / "logs" / stamp,
        pg_data=None if external else DATA_DIR / "pg",
        prefix=args.prefix,
    )
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "started": stamp,
        "quick": args.quick,
        "machine": machine(version),
        "load_at_start": harness.load(),
        "scenarios": [],
        "errors": {},
    }
    results: list[harness.Result] = []
    for name in args.only or [n for n in SCENARIOS if not (args.quick and n in FULL_ONLY)]:
        print(f"== {name} (load {harness.load()})", flush=True)
        t0, load0 = time.monotonic(), harness.load()
        try:
            module_name, _, function = SCENARIOS[name].partition(":")
            module = importlib.import_module(f"bench.{module_name}")
            result = await getattr(module, function or "run")(bench)
        except Exception as exc:  # one failed scenario must not lose the others' figures
            traceback.print_exc()
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            continue
        result.seconds, result.load_before, result.load_after = time.monotonic() - t0, load0, harness.load()
        results.append(result)
        report["scenarios"].append(result.to_json())
        print(table([result]), flush=True)
    if not args.keep:
        await bench.drop_databases()
    report["seconds"] = round(time.time() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print()
    print(
        f"python -m bench {' '.join(sys.argv[1:])}".rstrip() + f"  ({report['seconds']:.0f} s, "
        f"{report['machine']['cores']} cores, {report['machine']['cpu']}, Postgres {version})"
    )
    print(table(results))
    print(f"report: {out}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse(None))))
    except asyncio.CancelledError:
        sys.exit(143)  # stopped by SIGTERM, after the processes it started were stopped
