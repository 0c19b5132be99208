"""The processes under test: daemon replicas (supervised: restarted when they exit, as Kubernetes would) and
the Alibaba sandbox (restartable on the same port with the same journal file), each a real child process.

A daemon exit the harness did not cause (it sent no signal) is a *death* and is recorded with the tail of
the daemon's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Whose daemon runs: this checkout, or another one (CHAOS_DAEMON_TREE / --tree: the "before" figures).
DAEMON_TREE = pathlib.Path(os.environ.get("CHAOS_DAEMON_TREE") or ROOT).absolute()
API_TOKEN = "chaos-api-token-0123456789"  # noqa: S105 - a local harness's own token
RECEIPT_TOKEN = "chaos-receipt-token-0123456789"  # noqa: S105 - likewise
SANDBOX_AK, SANDBOX_SK = "chaos-access-key", "chaos-access-secret-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALLBACK_", "ALIBABA_CLOUD_"))}
    env.pop("DATABASE_URL", None)
    env.update(extra)
    return env


@dataclasses.dataclass(kw_only=True)
class Death:
    """A daemon exit nobody asked for."""

    name: str
    returncode: int
    uptime_s: float
    log_tail: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Child:
    """One child process: `python <args>` in `cwd`, output appended to `log`."""

    def __init__(
        self, name: str, args: list[str], env: Mapping[str, str], log: pathlib.Path, cwd: pathlib.Path
    ) -> None:
        self.name, self.args, self.env, self.log, self.cwd = name, args, dict(env), log, cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.signalled = False  # the harness sent the signal that ends this incarnation

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.signalled = False
        with self.log.open("ab") as log:
            log.write(f"\n----- start {time.strftime('%H:%M:%S')} -----\n".encode())
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *self.args, env=self.env, stdout=log, stderr=log, cwd=self.cwd
            )
        self.started_at = time.monotonic()

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            assert self.proc is not None
            self.signalled = True
            self.proc.send_signal(sig)

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`."""
        if not self.alive:
            return
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.wait(), timeout_s)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await self.wait()

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


async def wait_http(url: str, child: Child, timeout_s: float = 60) -> bool:
    """Poll `url` until it answers 200; False if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if not child.alive:
                return False
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.05)
    return False


class Daemon:
    """One supervised replica: restarted `restart_delay_s` after any exit until `close()`."""

    def __init__(
        self,
        name: str,
        *,
        dsn: str,
        port: int,
        sandbox_url: str,
        log_dir: pathlib.Path,
        tree: pathlib.Path,
        env: Mapping[str, str],
        restart_delay_s: float = 0.5,
    ) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
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
                "FALLBACK_SMS_FROM": "Chaos",
                "FALLBACK_LOG_FORMAT": "json",
                "FALLBACK_LOG_LEVEL": "warning",
                "PYTHONPATH": str(tree),
                **env,
            }
        )
        self.child = Child(name, ["-m", "fallback_daemon", "run"], daemon_env, log_dir / f"{name}.log", tree)
        self.restart_delay_s = restart_delay_s
        self.deaths: list[Death] = []
        self.starts = 0
        self.kills = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.restarted = asyncio.Event()  # set at each (re)start

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def _spawn(self) -> None:
        await self.child.start()
        self.starts += 1
        self.restarted.set()

    async def _supervise(self) -> None:
        while True:
            rc = await self.child.wait()
            if not self.child.signalled and not self._closing:
                uptime = time.monotonic() - self.child.started_at
                self.deaths.append(
                    Death(name=self.name, returncode=rc, uptime_s=uptime, log_tail=self.child.tail())
                )
            if self._closing:
                return
            await asyncio.sleep(self.restart_delay_s)
            if self.closing():  # close() may have begun during the pause
                return
            await self._spawn()

    def closing(self) -> bool:
        return self._closing

    async def ready(self, timeout_s: float = 60) -> bool:
        return await wait_http(f"{self.url}/readyz", self.child, timeout_s)

    def kill9(self) -> None:
        self.kills += 1
        self.child.signal(signal.SIGKILL)

    def sigterm(self) -> None:
        self.kills += 1
        self.child.signal(signal.SIGTERM)

    async def close(self) -> None:
        self._closing = True
        await self.child.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Sandbox:
    """The sandbox as a child process with its journal in a file: a kill and restart keep the ground truth.

    Receipts go to `callback_base` (the harness's receipt balancer); pushes that fail are retried for about a
    minute (0.25 s doubling), as Alibaba retries a callback that did not answer 200.
    """

    def __init__(self, *, port: int, callback_base: str, log_dir: pathlib.Path, qps: int = 250) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.journal_path = log_dir / "sandbox-journal.jsonl"
        config = {
            "access_key_id": SANDBOX_AK,
            "access_key_secret": SANDBOX_SK,
            "qps": qps,
            "chatapp_callback_url": f"{callback_base}/chatapp",
            "sms_callback_url": f"{callback_base}/sms",
            "push_retries": 8,
            "push_backoff_s": 0.25,
            "journal_path": str(self.journal_path),
        }
        args = ["-m", "chaos.sandbox_proc", json.dumps({"port": port, "config": config})]
        self.child = Child("sandbox", args, clean_env({}), log_dir / "sandbox.log", ROOT)
        self.outages = 0

    async def start(self) -> None:
        await self.child.start()
        if not await wait_http(f"{self.url}/sandbox/stats", self.child):
            raise RuntimeError(f"the sandbox did not start: {self.child.tail()}")

    def kill9(self) -> None:
        self.outages += 1
        self.child.signal(signal.SIGKILL)

    async def journal(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/sandbox/journal") as r:
            r.raise_for_status()
            body: dict[str, Any] = await r.json()
            return body

    async def close(self) -> None:
        await self.child.stop()
