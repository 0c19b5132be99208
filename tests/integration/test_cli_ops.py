"""The operator CLI in a subprocess against a live daemon: `--json` output and the exit-code contract.

0 done; 1 not found or refused by the state; 2 bad argument, missing or wrong token; 3 daemon unreachable.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from fallback_daemon import app
from tests.e2e import procs
from tests.integration import opsupport


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with opsupport.client() as s:
        yield s


async def cli(daemon: app.Running, *args: str, token: str = opsupport.TOKEN) -> tuple[int, str, str]:
    """Run `python -m fallback_daemon <args>` pointed at the daemon; (exit code, stdout, stderr)."""
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    env = procs.clean_env({"FALLBACK_HTTP_HOST": host, "FALLBACK_HTTP_PORT": port,
                           "FALLBACK_API_TOKEN": token})  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fallback_daemon", *args, env=env, cwd=procs.ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_json_output_is_the_api_answer(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """`--json` prints the API's JSON: status by MessageId finds the message, list and stats parse."""
    ids = await opsupport.seed_mixed(http, daemon.url)
    async with http.get(f"{daemon.url}/v1/messages/{ids['read']}") as resp:
        pid = (await resp.json())["provider_message_id"]
    code, out, _ = await cli(daemon, "status", pid, "--json")
    assert (code, json.loads(out)["id"]) == (0, ids["read"])
    code, out, _ = await cli(daemon, "list", "--fallback-state", "sms_delivered", "--json")
    assert sorted(m["id"] for m in json.loads(out)["messages"]) == sorted([ids["failed"], ids["rejected"]])
    code, out, _ = await cli(daemon, "stats", "--window", "15m", "--json")
    assert (code, json.loads(out)["window_s"]) == (0, 900)


async def test_exit_codes(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """Not found or refused exits 1, a bad argument or token 2, an unreachable daemon 3, with a message."""
    ids = await opsupport.seed_mixed(http, daemon.url)
    code, _, err = await cli(daemon, "status", "no-such-message")
    assert (code, "no message matches" in err) == (1, True)
    code, _, err = await cli(daemon, "cancel", ids["read"], "--reason", "late")
    assert (code, "only an armed or held fallback" in err) == (1, True)
    code, _, err = await cli(daemon, "list", "--chat-state", "lost")
    assert (code, "--chat-state: " in err) == (2, True)  # the CLI's flag, not the API's field
    code, _, err = await cli(daemon, "stats", token="wrong-token-0123456789")
    assert (code, "FALLBACK_API_TOKEN" in err) == (2, True)
    code, _, err = await cli(daemon, "stats", token="")
    assert (code, "FALLBACK_API_TOKEN is not set" in err) == (2, True)
    code, _, err = await cli(daemon, "stats", "--url", f"http://127.0.0.1:{procs.free_port()}")
    assert (code, "cannot reach the daemon" in err) == (3, True)
