"""Helpers to run the daemon and the sandbox as separate processes (the CLI, as an operator would)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
SANDBOX_AK, SANDBOX_SK = "e2e-access-key", "e2e-access-secret-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALLBACK_", "ALIBABA_CLOUD_"))}
    env.pop("DATABASE_URL", None)
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def process(
    name: str, args: list[str], env: Mapping[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run `python -m fallback_daemon <args>`; its output goes to tests/artifacts/<name>.log; SIGTERM on
    exit."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS / f"{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fallback_daemon", *args, env=dict(env), stdout=log, stderr=log, cwd=ROOT
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def wait_http(url: str, proc: asyncio.subprocess.Process, attempts: int = 600) -> None:
    """Wait until `url` answers 200 (or the process dies)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(attempts):
            if proc.returncode is not None:
                raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered 200")
