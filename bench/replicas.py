"""Scenario 6, replicas: three daemon processes on one database send a backlog through the sandbox's cap.

The sandbox counts admitted CAMS calls per second and keeps the fullest sliding one-second window
(`GET /sandbox/rates`); one replica is killed (SIGKILL) half-way to show the global rate adapt. Then every
armed timer is made due through the database, and the sandbox's journal shows no fallback SMS sent twice.
The reference column is the configured cap itself.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import aiohttp
import asyncpg

from bench import harness
from bench.harness import Q

CAP = 250
REPLICAS = 3
SETTLED = ["sms_sent", "sms_delivered", "sms_failed"]


def body(i: int) -> dict[str, Any]:
    """Message i; the last digit of To picks the sandbox outcome (read, delivered, failed, silent, ...)."""
    return {
        "ChannelType": "whatsapp",
        "Type": "template",
        "TemplateCode": "order_shipped",
        "Language": "en",
        "From": "6580000000",
        "To": f"65{i:08d}",
        "TemplateParams": {"order": str(i)},
        "FallBackContent": f"order {i} shipped",
        "FallBackDuration": 60,
        "FallBackRule": ("undelivered", "sentFailed", "unread")[(i // 10) % 3],
    }


async def submit(http: aiohttp.ClientSession, url: str, n: int, *, chunk: int = 1000) -> None:
    for start in range(0, n, chunk):
        batch = {"messages": [body(i) for i in range(start, min(n, start + chunk))]}
        async with http.post(f"{url}/v1/messages/batch", json=batch) as resp:
            if resp.status != 202:
                raise RuntimeError(f"batch submit answered {resp.status}: {await resp.text()}")


def saturated(per_second: list[list[int]], since: int, until: int) -> list[tuple[int, int]]:
    """(second, admitted) for whole seconds strictly inside [since, until] (the partial ends dropped)."""
    return [(s, a) for s, a, _ in per_second if since < s < until]


async def run(b: harness.Bench) -> harness.Result:
    n = b.size(CAP * 40, 300)
    result = harness.Result(scenario="6 replicas")
    dsn = await b.fresh_db("replicas")
    ports = [harness.free_port() for _ in range(REPLICAS)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    sb_port = harness.free_port()
    conn = await asyncpg.connect(dsn)
    try:
        async with contextlib.AsyncExitStack() as stack:
            sb = await stack.enter_async_context(b.sandbox(sb_port, daemon_url=urls[0], qps=CAP))
            env = {"FALLBACK_SEND_RATE": str(CAP)}
            daemons = [
                await stack.enter_async_context(b.daemon(dsn, port, sb.url, name=f"replica-{i + 1}", env=env))
                for i, port in enumerate(ports)
            ]
            http = await stack.enter_async_context(
                aiohttp.ClientSession(headers={"Authorization": f"Bearer {harness.API_TOKEN}"})
            )
            async with http.post(f"{sb.url}/sandbox/reset") as resp:
                resp.raise_for_status()
            t_submit = time.time()
            await submit(http, urls[0], n)

            async def half_sent() -> bool:
                return await conn.fetchval(Q["count_not_accepted"]) >= n // 2

            await harness.until(half_sent, "half of the backlog to be sent", timeout_s=600)
            mono_kill = await sandbox_clock(http, sb.url)
            killed_at = await conn.fetchval(Q["now"])
            daemons[-1].kill()
            await daemons[-1].proc.wait()

            async def drained() -> bool:
                return not await conn.fetchval(Q["count_chat"], ["accepted"])

            await harness.until(drained, "the backlog to drain", timeout_s=600)
            sending_took = time.time() - t_submit
            async with http.get(f"{sb.url}/sandbox/rates") as resp:
                rates = await resp.json()
            # Drive every armed timer through the database, then let the two live replicas fire them.
            await conn.execute(Q["drive_timers"])

            async def fired() -> bool:
                # Rows the killed replica left `firing` wait for their lease (recovery sweep): not counted.
                return not await conn.fetchval(Q["pending_fallbacks"], killed_at)

            await harness.until(fired, "the timers to fire", timeout_s=300)
            async with http.get(f"{sb.url}/sandbox/journal") as resp:
                journal = await resp.json()
        twice = await conn.fetchval(Q["fired_twice"])
    finally:
        await conn.close()
    report(result, rates, journal, twice, n=n, mono_kill=mono_kill, took=sending_took)
    return result


async def sandbox_clock(http: aiohttp.ClientSession, url: str) -> int:
    """The sandbox's current whole second (its rates are keyed on its own monotonic clock)."""
    async with http.get(f"{url}/sandbox/rates") as resp:
        per_second = (await resp.json())["per_second"]
    return int(per_second[-1][0]) if per_second else 0


def report(
    result: harness.Result,
    rates: dict[str, Any],
    journal: dict[str, Any],
    twice: int,
    *,
    n: int,
    mono_kill: int,
    took: float,
) -> None:
    per_second = rates["per_second"]
    busy = [s for s, a, _ in per_second if a > 0]
    first, last = (busy[0], busy[-1]) if busy else (0, 0)
    full = saturated(per_second, first, last)
    before = [a for s, a in full if s < mono_kill]
    after = [a for s, a in full if s > mono_kill]
    counts = [a for _, a in full]
    mean = statistics.fmean(counts) if counts else 0.0
    sms_sends = [e["sends"] for e in journal["sms"].values()]
    result.details.update(
        {
            "messages": n,
            "replicas": REPLICAS,
            "cap": CAP,
            "sending_seconds": took,
            "max_sliding_window": rates["max_window"],
            "throttled": rates["throttled"],
            "per_second": per_second,
            "killed_at_second": mono_kill,
            "rate_before_kill": statistics.fmean(before) if before else None,
            "rate_after_kill": statistics.fmean(after) if after else None,
            "sms": len(sms_sends),
            "sms_sent_twice": sum(1 for s in sms_sends if s > 1),
            "fired_twice": twice,
        }
    )
    result.add(
        name=f"global send rate, {REPLICAS} replicas (mean of full seconds)",
        unit="calls/s",
        daemon=mean,
        raw=CAP,
        target=">= 0.99x cap",
        ok=mean >= 0.99 * CAP,
        note=f"before/after killing one: {result.details['rate_before_kill'] or 0:.1f}/"
        f"{result.details['rate_after_kill'] or 0:.1f}",
    )
    result.add(
        name="busiest whole second",
        unit="calls",
        daemon=max(counts, default=0),
        raw=CAP,
        target="<= cap +1%",
        ok=max(counts, default=0) <= CAP * 1.01,
    )
    result.add(
        name="busiest sliding 1-s window",
        unit="calls",
        daemon=rates["max_window"],
        raw=CAP,
        target="<= cap +1%",
        ok=rates["max_window"] <= CAP * 1.01,
    )
    result.add(
        name="throttling answers from the sandbox",
        unit="",
        daemon=rates["throttled"],
        target="0",
        ok=rates["throttled"] == 0,
    )
    dup = result.details["sms_sent_twice"] + twice
    result.add(
        name="fallbacks fired twice",
        unit="",
        daemon=dup,
        target="0",
        ok=dup == 0,
        note=f"{len(sms_sends)} fallback SMS",
    )
