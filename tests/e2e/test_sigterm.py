"""Graceful shutdown across processes: SIGTERM mid-run, then a restart, and nothing is stuck or lost.

The daemon runs as `python -m fallback_daemon run`; the sandbox runs in its own process with slow provider
answers (so CAMS and SMS calls are in flight when SIGTERM arrives), delayed receipts, and push retries long
enough to outlast the restart, as Alibaba retries a callback that did not answer 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping

import aiohttp
import asyncpg

from tests.e2e import procs
from tests.e2e import test_end_to_end as e2e

GRACE_S = 10.0
CALL_LATENCY_S = (0.2, 1.0)  # every CAMS/SMS answer takes this long: calls are in flight at SIGTERM
# A child process: the sandbox with the latency above as an aiohttp middleware in front of the ACS entry.
SLOW_SANDBOX = """
import asyncio, json, random, sys
from aiohttp import web
from fallback_daemon import sandbox

spec = json.loads(sys.argv[1])
low, high = spec["latency_s"]


@web.middleware
async def slow(request, handler):
    if request.method == "POST" and request.path == "/":
        await asyncio.sleep(random.uniform(low, high))
    return await handler(request)


async def main():
    application = sandbox.create_app(sandbox.SandboxConfig(**spec["config"]))
    application.middlewares.append(slow)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", spec["port"]).start()
    await asyncio.Event().wait()


asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def slow_sandbox(port: int, receipts_url: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """The sandbox in a child process (output in tests/artifacts/sigterm-sandbox.log); SIGTERM on exit."""
    spec = {
        "port": port,
        "latency_s": CALL_LATENCY_S,
        "config": {
            "access_key_id": procs.SANDBOX_AK,
            "access_key_secret": procs.SANDBOX_SK,
            "chatapp_callback_url": f"{receipts_url}/chatapp",
            "sms_callback_url": f"{receipts_url}/sms",
            "duplicate_rate": 0.3,
            "omit_task_id_rate": 0.2,
            "reorder": True,
            "receipt_delay_ms": [100, 1500],
            # a push that finds the daemon stopped is retried for minutes (0.25 s doubling, 10 times)
            "push_retries": 10,
            "push_backoff_s": 0.25,
        },
    }
    procs.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (procs.ARTIFACTS / "sigterm-sandbox.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SLOW_SANDBOX,
        json.dumps(spec),
        env=procs.clean_env({}),
        stdout=log,
        stderr=log,
        cwd=procs.ROOT,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def count(conn: asyncpg.Connection, where: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM messages WHERE {where}"))  # noqa: S608 - literals


async def in_flight(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        "sending": await count(conn, "chat_state = 'sending'"),
        "firing": await count(conn, "fallback_state = 'firing'"),
    }


async def submit_all(http: aiohttp.ClientSession, d_url: str) -> dict[str, int]:
    """All e2e.N messages in batches of 60 (id -> index i of e2e.body(i))."""
    ids: dict[str, int] = {}
    for start in range(0, e2e.N, 60):
        batch = {"messages": [e2e.body(i) for i in range(start, start + 60)]}
        async with http.post(f"{d_url}/v1/messages/batch", json=batch) as r:
            assert r.status == 202, await r.text()
            for offset, m in enumerate((await r.json())["messages"]):
                ids[m["id"]] = start + offset
    return ids


async def frozen(d_url: str) -> str:
    """Whether the daemon's event loop still answers /healthz (a loop that never yields ignores SIGTERM)."""
    timeout = aiohttp.ClientTimeout(total=3)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{d_url}/healthz") as r:
            return f"its event loop answers /healthz ({r.status})"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"its event loop is blocked: /healthz does not answer ({type(exc).__name__})"


MAKE_TIMEOUTS_DUE = """
WITH l AS (
    SELECT id FROM messages
    WHERE fallback_state = 'armed' AND due_at IS NOT NULL AND chat_state = 'sent' AND id = ANY($1::uuid[])
    ORDER BY id FOR UPDATE
)
UPDATE messages m SET due_at = now() FROM l WHERE m.id = l.id
"""


async def terminate_mid_run(
    conn: asyncpg.Connection, daemon: asyncio.subprocess.Process, d_url: str, ids: dict[str, int]
) -> tuple[dict[str, int], float]:
    """Wait until a third has been sent, make the sent timer fallbacks due, SIGTERM while calls are in flight.

    Returns what was in flight at the signal and how long the daemon took to exit.
    """

    async def third_sent() -> bool:
        return await _at_least(conn, "chat_state NOT IN ('accepted', 'sending')", e2e.N // 3)

    try:
        await e2e.eventually(third_sent, "a third of the messages to be sent", attempts=300)
    except AssertionError:
        raise AssertionError(f"sending stalled; {await frozen(d_url)}") from None
    # Only messages whose expected fate is a timeout fallback are made due early (expected() stays true).
    timeouts = [mid for mid, i in ids.items() if e2e.expected(i)["fire"] == "timeout"]
    await conn.execute(MAKE_TIMEOUTS_DUE, timeouts)
    await e2e.eventually(
        lambda: _at_least(conn, "fallback_state = 'firing'", 1), "a fallback to be firing", attempts=100
    )
    snapshot = await in_flight(conn)
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(daemon.wait(), GRACE_S + 20)
    except TimeoutError:
        why = await frozen(d_url)
        raise AssertionError(f"the daemon ignored SIGTERM for {GRACE_S + 20} s; {why}") from None
    return snapshot, time.monotonic() - started


async def _at_least(conn: asyncpg.Connection, where: str, n: int) -> bool:
    return await count(conn, where) >= n


def daemon_env(db_dsn: str, d_port: int, sb_url: str) -> Mapping[str, str]:
    return procs.clean_env(
        {
            "DATABASE_URL": db_dsn,
            "FALLBACK_HTTP_PORT": str(d_port),
            "FALLBACK_API_TOKEN": e2e.API_TOKEN,
            "FALLBACK_RECEIPT_TOKEN": e2e.RECEIPT_TOKEN,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": procs.SANDBOX_AK,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": procs.SANDBOX_SK,
            "FALLBACK_CAMS_ENDPOINT": sb_url,
            "FALLBACK_SMS_ENDPOINT": sb_url,
            "FALLBACK_SMS_FROM": "E2E",
            "FALLBACK_LOG_FORMAT": "json",
            "FALLBACK_SHUTDOWN_GRACE_S": str(GRACE_S),
            # Slow enough to be in flight, fast enough that no call times out; short leases, so anything the
            # first daemon left in `sending` or `firing` would be swept (and show up as wrong) after the
            # restart.
            "FALLBACK_SEND_RATE": "100",
            "FALLBACK_SEND_TIMEOUT_S": "3",
            "FALLBACK_FIRING_LEASE_S": "5",
        }
    )


async def test_sigterm_mid_run_loses_nothing(db_dsn: str) -> None:
    """SIGTERM mid-run drains in-flight calls and exits 0 in the grace; after a restart nothing is lost."""
    sb_port, d_port = procs.free_port(), procs.free_port()
    sb_url, d_url = f"http://127.0.0.1:{sb_port}", f"http://127.0.0.1:{d_port}"
    env = daemon_env(db_dsn, d_port, sb_url)
    conn = await asyncpg.connect(db_dsn)
    try:
        async with (
            slow_sandbox(sb_port, f"{d_url}/receipts/{e2e.RECEIPT_TOKEN}") as sb,
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {e2e.API_TOKEN}"}) as http,
        ):
            await procs.wait_http(f"{sb_url}/sandbox/stats", sb)
            async with procs.process("sigterm-daemon-1", ["run"], env) as first:
                await procs.wait_http(f"{d_url}/readyz", first)
                ids = await submit_all(http, d_url)
                snapshot, took = await terminate_mid_run(conn, first, d_url, ids)
            assert first.returncode == 0, f"exit {first.returncode} (tests/artifacts/sigterm-daemon-1.log)"
            assert took < GRACE_S + 3, f"took {took:.1f} s to stop with a {GRACE_S} s grace"
            assert snapshot["sending"] + snapshot["firing"] > 0, f"nothing in flight at SIGTERM: {snapshot}"
            # Drained, not abandoned: every call in flight at SIGTERM had its outcome recorded before exit.
            assert await in_flight(conn) == {"sending": 0, "firing": 0}
            assert await count(conn, "chat_state = 'accepted'") > 0, "SIGTERM came after all sends were done"

            async with procs.process("sigterm-daemon-2", ["run"], env) as second:
                await procs.wait_http(f"{d_url}/readyz", second)
                await e2e.run_phases(conn, http, sb_url, ids)
                await e2e.check(conn, http, sb_url, ids)
                assert await in_flight(conn) == {"sending": 0, "firing": 0}
                assert await count(conn, "fallback_state = 'held'") == 0
            assert second.returncode == 0
    finally:
        await conn.close()
