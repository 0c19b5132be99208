"""Outcome events end to end: the daemon and the sandbox as processes, a real receiver on loopback that checks
every Standard Webhooks signature, fails the first attempts of each event and is down for a while; the daemon
is killed with SIGKILL while deliveries are pending and started again.

Done when: every event in the outbox reached the receiver at least once, each webhook-id always carried the
same body, and each message's sequence numbers are 1..n without a gap. The schedule is shortened through
FALLBACK_WEBHOOK_RETRY_SCHEDULE instead of sleeping through minutes.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from fallback_daemon.engine import webhooks
from tests.e2e import procs
from tests.e2e import test_end_to_end as e2e
from tests.e2e import test_sigterm as sigterm

N = 90
DIGITS = (0, 3, 5, 6, 8)  # sandbox outcome by last digit of To: read, delivered, failed, silent, rejected
FAILS_PER_EVENT = 2  # the receiver answers 500 to the first two attempts of every webhook-id
SCHEDULE = ",".join(["0", "0.2", "0.4"] + ["1"] * 40)  # plenty of attempts to outlast the outage
FINAL_CHAT = ("read", "delivered", "failed", "send_failed", "sent")
FINAL_FALLBACK = ("cancelled", "sms_delivered", "sms_failed")


def body(i: int) -> dict[str, Any]:
    return {**e2e.body(i), "FallBackRule": "undelivered", "TaskId": f"task-{i}"}


class Receiver:
    """Verifies each signature, fails the first attempts of each id, records what it accepted."""

    def __init__(self, secret: str, port: int) -> None:
        self.secret, self.port = secret, port
        self.attempts: dict[str, int] = defaultdict(int)
        self.bodies: dict[str, set[bytes]] = defaultdict(set)
        self.accepted: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if not webhooks.verify(self.secret, request.headers, raw, now=time.time()):
            self.bad_signatures += 1
            return web.Response(status=401)
        wid = request.headers["webhook-id"]
        self.attempts[wid] += 1
        self.bodies[wid].add(raw)
        if self.attempts[wid] <= FAILS_PER_EVENT:
            return web.Response(status=500, text="not yet")
        self.accepted[wid] = await request.json()
        return web.Response(status=204)

    async def up(self) -> None:
        application = web.Application()
        application.router.add_post("/hooks", self.handle)
        self.runner = web.AppRunner(application, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Receiver]:
        await self.up()
        try:
            yield self
        finally:
            await self.down()


async def scalar(conn: asyncpg.Connection, query: str, *args: object) -> Any:
    return await conn.fetchval(query, *args)


async def test_webhooks_survive_failures_an_outage_and_kill_9(db_dsn: str) -> None:
    sb_port, d_port, rx_port = procs.free_port(), procs.free_port(), procs.free_port()
    sb_url, d_url = f"http://127.0.0.1:{sb_port}", f"http://127.0.0.1:{d_port}"
    env = {
        **sigterm.daemon_env(db_dsn, d_port, sb_url),
        "FALLBACK_WEBHOOK_RETRY_SCHEDULE": SCHEDULE,
        "FALLBACK_WEBHOOK_TIMEOUT_S": "2",
        "FALLBACK_WEBHOOK_CONCURRENCY": "8",
    }
    secret = webhooks.new_secret()
    rx = Receiver(secret, rx_port)
    conn = await asyncpg.connect(db_dsn)
    try:
        async with (
            sigterm.slow_sandbox(sb_port, f"{d_url}/receipts/{e2e.RECEIPT_TOKEN}") as sb,
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {e2e.API_TOKEN}"}) as http,
            rx.serving(),
        ):
            await procs.wait_http(f"{sb_url}/sandbox/stats", sb)
            async with procs.process("webhooks-daemon-1", ["run"], env) as first:
                await procs.wait_http(f"{d_url}/readyz", first)
                async with http.post(
                    f"{d_url}/v1/webhooks",
                    json={"url": f"http://127.0.0.1:{rx_port}/hooks", "secret": secret},
                ) as r:
                    assert r.status == 201, await r.text()
                picked = [i for i in range(N * 2) if i % 10 in DIGITS][:N]
                batch = {"messages": [body(i) for i in picked]}
                async with http.post(f"{d_url}/v1/messages/batch", json=batch) as r:
                    assert r.status == 202, await r.text()
                    ids = [m["id"] for m in (await r.json())["messages"]]

                async def legs_done() -> bool:
                    """Every chat leg and immediate fallback final (silent ones wait for their timer)."""
                    n = await scalar(
                        conn,
                        "SELECT count(*) FROM messages WHERE chat_state = ANY($1::text[]) AND"
                        " (fallback_state = ANY($2::text[])"
                        "  OR (chat_state = 'sent' AND fallback_state = 'armed'))",
                        list(FINAL_CHAT),
                        list(FINAL_FALLBACK),
                    )
                    return int(n) == N

                await e2e.eventually(legs_done, "sends, receipts and immediate fallbacks to settle")
                await e2e.eventually(lambda: _some(rx), "a first delivery to succeed (after its failures)")
                await rx.down()  # the receiver goes away …
                pending = await scalar(
                    conn, "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'"
                )
                assert pending > 0, "every delivery was done before the kill"
                first.send_signal(signal.SIGKILL)  # … and the daemon dies mid-way, leases and all
                await first.wait()
            assert first.returncode == -signal.SIGKILL

            restarted = await scalar(conn, "SELECT now()")
            async with procs.process("webhooks-daemon-2", ["run"], env) as second:
                await procs.wait_http(f"{d_url}/readyz", second)

                async def refused_after_restart() -> bool:
                    n = await scalar(
                        conn,
                        "SELECT count(*) FROM webhook_deliveries"
                        " WHERE last_attempt_at > $1 AND last_status IS NULL",
                        restarted,
                    )
                    return int(n) > 0

                await e2e.eventually(refused_after_restart, "the restarted daemon to find the receiver down")
                await rx.up()  # back after a while
                # the silent messages' timers fall due now: events made after the restart, same sequences
                await conn.execute(sigterm.MAKE_TIMEOUTS_DUE, ids)

                async def all_delivered() -> bool:
                    final = await scalar(
                        conn,
                        "SELECT count(*) FROM messages WHERE fallback_state = ANY($1::text[])",
                        list(FINAL_FALLBACK),
                    )
                    left = await scalar(
                        conn, "SELECT count(*) FROM webhook_deliveries WHERE state <> 'delivered'"
                    )
                    return int(final) == N and int(left) == 0

                await e2e.eventually(all_delivered, "every event delivered", attempts=1800)
        rows = await conn.fetch(
            "SELECT id, message_id, event_type, sequence, attempts FROM webhook_deliveries ORDER BY id"
        )
    finally:
        await conn.close()

    assert rx.bad_signatures == 0
    assert len(rows) >= N * 2, f"only {len(rows)} events for {N} messages"
    missing = [webhooks.webhook_id(r["id"]) for r in rows if webhooks.webhook_id(r["id"]) not in rx.accepted]
    assert missing == [], f"{len(missing)} events never reached the receiver"
    assert all(len(b) == 1 for b in rx.bodies.values()), "a webhook-id was sent with two different bodies"
    assert all(rx.attempts[webhooks.webhook_id(r["id"])] > FAILS_PER_EVENT for r in rows)
    per_message: dict[str, list[int]] = defaultdict(list)
    for payload in rx.accepted.values():
        per_message[payload["data"]["message_id"]].append(payload["data"]["sequence"])
    gaps = {m: s for m, s in per_message.items() if sorted(s) != list(range(1, len(s) + 1))}
    assert gaps == {}
    assert set(per_message) == set(ids)
    # every message says how its chat leg ended, and each fallback that fired says so (with its reason)
    types = defaultdict(set)
    for payload in rx.accepted.values():
        types[payload["data"]["message_id"]].add(payload["type"])
        assert payload["data"]["task_id"].startswith("task-")
    for mid in ids:
        assert types[mid] & {"message.sent", "message.failed"}, types[mid]
        assert types[mid] & {"fallback.cancelled", "fallback.sms_delivered", "fallback.sms_failed"}, types[
            mid
        ]
    assert sum("fallback.fired" in t for t in types.values()) >= N * 3 // 5  # failed, silent, rejected


async def _some(rx: Receiver) -> bool:
    return bool(rx.accepted)
