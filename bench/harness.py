"""Shared machinery of the benchmark: databases, the daemon and sandbox processes, percentiles, the machine's
load, and the result rows every scenario reports.

The daemon and the sandbox run as separate processes started through the CLI (`python -m fallback_daemon
run|sandbox`), exactly as an operator runs them; the raw-SQL baselines run in this process with asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import pathlib
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import asyncpg
import psutil

from fallback_daemon.db import migrate, sql

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
Q = sql.parse((pathlib.Path(__file__).parent / "queries.sql").read_text())
API_TOKEN = "bench-api-token-0123456789"  # noqa: S105 (a local benchmark's own token)
RECEIPT_TOKEN = "bench-receipt-token-0123456789"  # noqa: S105 (likewise)
SANDBOX_AK, SANDBOX_SK = "bench-access-key", "bench-access-secret-0123"
# BENCH_DAEMON_LOOP=asyncio|uvloop: the daemons' FALLBACK_EVENT_LOOP (unset: the daemon's default, uvloop)
DAEMON_LOOP = os.environ.get("BENCH_DAEMON_LOOP", "")


def load() -> str:
    """The 1/5/15-minute load averages, as `uptime` prints them (2 cores: 2.0 means both busy)."""
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass(kw_only=True)
class Metric:
    """One line of the table: the daemon's figure, the raw-SQL baseline's figure, and the target."""

    name: str
    unit: str
    daemon: float | None
    raw: float | None = None
    dbos: float | None = None  # the DBOS Transact peer's figure (bench/dbos_peer.py), when measured
    target: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.daemon is None or self.raw is None or self.raw == 0:
            return None
        return self.daemon / self.raw

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio": self.ratio}


@dataclasses.dataclass(kw_only=True)
class Result:
    """What one scenario measured; `details` holds the raw numbers behind the metrics."""

    scenario: str
    metrics: list[Metric] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    load_before: str = ""
    load_after: str = ""
    seconds: float = 0.0

    def add(self, **kwargs: Any) -> Metric:
        metric = Metric(**kwargs)
        self.metrics.append(metric)
        return metric

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seconds": round(self.seconds, 1),
            "load_before": self.load_before,
            "load_after": self.load_after,
            "metrics": [m.to_json() for m in self.metrics],
            "details": self.details,
        }


def with_database(dsn: str, name: str) -> str:
    import urllib.parse

    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@dataclasses.dataclass
class Proc:
    """A process this harness started: its name, URL and psutil handle."""

    name: str
    proc: asyncio.subprocess.Process
    url: str

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL: a replica dying without any chance to clean up."""
        if self.proc.returncode is None:
            self.proc.kill()


class Bench:
    """The run's context: the admin DSN, size mode, and helpers to make databases and start processes."""

    def __init__(
        self,
        admin_dsn: str,
        *,
        quick: bool,
        log_dir: pathlib.Path,
        pg_data: pathlib.Path | None = None,
        prefix: str = "bench",
    ) -> None:
        self.admin_dsn = admin_dsn
        self.prefix = prefix
        self.databases: list[str] = []
        self.quick = quick
        self.log_dir = log_dir
        self.pg_data = (
            pg_data  # the embedded server's data folder (for its CPU and RSS); None with DATABASE_URL
        )
        self.shared: dict[str, float] = {}  # figures one scenario leaves for a later one to compare with
        log_dir.mkdir(parents=True, exist_ok=True)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    async def fresh_db(self, scenario: str) -> str:
        """Drop and re-create the scenario's database (<prefix>_<scenario>), migrate it; returns its DSN."""
        name = f"{self.prefix}_{scenario}"
        self.databases.append(name)
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        dsn = with_database(self.admin_dsn, name)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.migrate(conn)
            await conn.execute(Q["raw_table"])
        finally:
            await conn.close()
        return dsn

    async def drop_databases(self) -> None:
        """Drop every database this run made."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for name in self.databases:
                await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def process(
        self, name: str, args: list[str], env: Mapping[str, str], url: str
    ) -> AsyncIterator[Proc]:
        """Run `python -m fallback_daemon <args>` (output in the log folder); SIGTERM at exit."""
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fallback_daemon", *args, env=dict(env), stdout=log, stderr=log, cwd=ROOT
        )
        handle = Proc(name, proc, url)
        try:
            await wait_http(f"{url}/readyz" if args[0] == "run" else f"{url}/sandbox/stats", proc)
            yield handle
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()

    def sandbox(
        self, port: int, *, daemon_url: str | None, qps: int = 250, extra: Sequence[str] = ()
    ) -> contextlib.AbstractAsyncContextManager[Proc]:
        """The Alibaba sandbox as its own process; receipts go to `daemon_url` (None: nowhere)."""
        args = [
            "sandbox",
            "--port",
            str(port),
            "--qps",
            str(qps),
            "--access-key-id",
            SANDBOX_AK,
            "--access-key-secret",
            SANDBOX_SK,
            *extra,
        ]
        if daemon_url:
            receipts = f"{daemon_url}/receipts/{RECEIPT_TOKEN}"
            args += ["--chatapp-callback", f"{receipts}/chatapp", "--sms-callback", f"{receipts}/sms"]
        # The sandbox always runs on the stdlib loop: the rig stays put when the daemon's loop is the lever.
        env = clean_env({"FALLBACK_EVENT_LOOP": "asyncio"})
        return self.process(f"sandbox-{port}", args, env, f"http://127.0.0.1:{port}")

    def daemon(
        self,
        dsn: str,
        port: int,
        sandbox_url: str,
        *,
        name: str = "daemon",
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> contextlib.AbstractAsyncContextManager[Proc]:
        """One daemon replica as its own process, talking to the sandbox, on database `dsn`.

        `args` are added to `run --no-migrate` (e.g. `["--role", "timers,workers"]`, docs/scaling.md "Roles").
        """
        daemon_env = clean_env(
            {
                "DATABASE_URL": dsn,
                "FALLBACK_HTTP_PORT": str(port),
                "FALLBACK_API_TOKEN": API_TOKEN,
                "FALLBACK_RECEIPT_TOKEN": RECEIPT_TOKEN,
                "ALIBABA_CLOUD_ACCESS_KEY_ID": SANDBOX_AK,
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SANDBOX_SK,
                "FALLBACK_CAMS_ENDPOINT": sandbox_url,
                "FALLBACK_SMS_ENDPOINT": sandbox_url,
                "FALLBACK_SMS_FROM": "Bench",
                "FALLBACK_LOG_FORMAT": "json",
                **({"FALLBACK_EVENT_LOOP": DAEMON_LOOP} if DAEMON_LOOP else {}),
                **(env or {}),
            }
        )
        return self.process(name, ["run", "--no-migrate", *args], daemon_env, f"http://127.0.0.1:{port}")


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALLBACK_", "ALIBABA_CLOUD_"))}
    env.pop("DATABASE_URL", None)
    env.update(extra)
    return env


async def wait_http(url: str, proc: asyncio.subprocess.Process, attempts: int = 600) -> None:
    """Poll `url` until it answers 200 (bounded); fail if the process exits first."""
    async with aiohttp.ClientSession() as http:
        for _ in range(attempts):
            if proc.returncode is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never answered 200")


async def until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float, every_s: float = 0.1
) -> float:
    """Poll a cross-process condition until it holds; returns the time it took (raises after `timeout_s`)."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(every_s)


class CpuMeter:
    """CPU seconds used by a set of processes between `start()` and `stop()` (psutil)."""

    def __init__(self, procs: Sequence[psutil.Process]) -> None:
        self.procs = list(procs)
        self._start: dict[int, float] = {}
        self._t0 = 0.0

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {p.pid: self._cpu(p) for p in self.procs}

    def stop(self) -> float:
        """CPU use as a percentage of one core over the interval."""
        wall = time.monotonic() - self._t0
        used = sum(self._cpu(p) - self._start.get(p.pid, 0.0) for p in self.procs)
        return 100.0 * used / wall if wall > 0 else math.nan

    def used_s(self) -> float:
        """CPU seconds used since `start()` (user + system, all the processes)."""
        return sum(self._cpu(p) - self._start.get(p.pid, 0.0) for p in self.procs)


def postgres_processes(data_dir: pathlib.Path | None) -> list[psutil.Process]:
    """The postmaster of the embedded server under `data_dir` and its children (backends, writers)."""
    if data_dir is None:
        return []
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        master = psutil.Process(pid)
        return [master, *master.children(recursive=True)]
    except (OSError, ValueError, psutil.Error):
        return []
