"""End to end: the daemon and the sandbox as separate processes over HTTP, several hundred messages with
mixed outcomes, duplicates, reordering, receipts without TaskId, early and late receipts.

Expected outcomes follow from the sandbox's suffix table (last digit of To) and the FallBackRule; the
sandbox's journal is the ground truth for how many SMS it was asked to send.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import asyncpg

from tests.e2e import procs

API_TOKEN = "e2e-api-token-0123456789"
RECEIPT_TOKEN = "e2e-receipt-token-0123456789"
RULES = ("undelivered", "sentFailed", "unread")
N = 360
# last digit of To -> sandbox outcome
OUTCOME = {
    0: "read",
    1: "read",
    2: "read",
    3: "delivered",
    4: "delivered",
    5: "failed",
    6: "silent",
    7: "late",
    8: "rejected",
    9: "early",
}


def body(i: int) -> dict[str, Any]:
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
        "FallBackRule": RULES[(i // 10) % 3],
    }


def expected(i: int) -> dict[str, Any]:
    """What the rules say must happen to message i (before and after the late receipts are released)."""
    outcome, rule = OUTCOME[i % 10], RULES[(i // 10) % 3]
    fire = None
    if outcome == "failed":
        fire = "failed_receipt"
    elif outcome == "rejected":
        fire = "send_failed"
    elif (outcome == "delivered" and rule == "unread") or (
        outcome in ("silent", "late") and rule != "sentFailed"
    ):
        fire = "timeout"
    chat = {
        "read": "read",
        "early": "read",
        "delivered": "delivered",
        "failed": "failed",
        "silent": "sent",
        "late": "delivered",
        "rejected": "send_failed",
    }[outcome]
    return {
        "fire": fire,
        "chat": chat,
        "double": outcome == "late" and rule == "undelivered",
        "sms": None if fire is None else ("sms_failed" if i % 100 == 55 else "sms_delivered"),
    }


async def eventually(check: Any, what: str, attempts: int = 1200) -> None:
    """Poll a cross-process condition (bounded); the processes share no in-memory event with the test."""
    for _ in range(attempts):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_end_to_end_mixed_outcomes(db_dsn: str) -> None:
    """Exactly the right messages fall back, each exactly once; late and duplicate receipts follow the
    rules."""
    sb_port, d_port = procs.free_port(), procs.free_port()
    sb_url, d_url = f"http://127.0.0.1:{sb_port}", f"http://127.0.0.1:{d_port}"
    receipts = f"{d_url}/receipts/{RECEIPT_TOKEN}"
    sandbox_args = [
        "sandbox",
        "--port",
        str(sb_port),
        "--chatapp-callback",
        f"{receipts}/chatapp",
        "--sms-callback",
        f"{receipts}/sms",
        "--duplicate-rate",
        "0.3",
        "--omit-task-id-rate",
        "0.2",
        "--reorder",
        "--access-key-id",
        procs.SANDBOX_AK,
        "--access-key-secret",
        procs.SANDBOX_SK,
    ]
    daemon_env = procs.clean_env(
        {
            "DATABASE_URL": db_dsn,
            "FALLBACK_HTTP_PORT": str(d_port),
            "FALLBACK_API_TOKEN": API_TOKEN,
            "FALLBACK_RECEIPT_TOKEN": RECEIPT_TOKEN,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": procs.SANDBOX_AK,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": procs.SANDBOX_SK,
            "FALLBACK_CAMS_ENDPOINT": sb_url,
            "FALLBACK_SMS_ENDPOINT": sb_url,
            "FALLBACK_SMS_FROM": "E2E",
            "FALLBACK_LOG_FORMAT": "json",
        }
    )
    async with (
        procs.process("e2e-sandbox", sandbox_args, procs.clean_env({})) as sb,
        procs.process("e2e-daemon", ["run"], daemon_env) as daemon,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as http,
    ):
        await procs.wait_http(f"{sb_url}/sandbox/stats", sb)
        await procs.wait_http(f"{d_url}/readyz", daemon)
        conn = await asyncpg.connect(db_dsn)
        try:
            ids = await submit(http, d_url)
            await run_phases(conn, http, sb_url, ids)
            await check(conn, http, sb_url, ids)
        finally:
            await conn.close()


async def submit(http: aiohttp.ClientSession, d_url: str) -> dict[str, int]:
    """Half the messages one by one, half through the batch endpoint; returns id -> i."""
    ids: dict[str, int] = {}
    for i in range(N // 2):
        async with http.post(f"{d_url}/v1/messages", json=body(i), headers={"Idempotency-Key": f"m{i}"}) as r:
            assert r.status == 202, await r.text()
            ids[(await r.json())["id"]] = i
    batch = {"messages": [body(i) for i in range(N // 2, N)]}
    async with http.post(f"{d_url}/v1/messages/batch", json=batch) as r:
        assert r.status == 202, await r.text()
        for offset, m in enumerate((await r.json())["messages"]):
            ids[m["id"]] = N // 2 + offset
    # a client retry with the same key is not a second message
    async with http.post(f"{d_url}/v1/messages", json=body(0), headers={"Idempotency-Key": "m0"}) as r:
        assert r.status == 200
    return ids


async def run_phases(
    conn: asyncpg.Connection, http: aiohttp.ClientSession, sb_url: str, ids: dict[str, int]
) -> None:
    # Phase 1: sends and immediate receipts settle (no timer has run: they are 60 s out).
    behind: Counter[tuple[str, str, str, str]] = Counter()

    async def settled() -> bool:
        rows = await conn.fetch("SELECT id::text, chat_state, fallback_state FROM messages")
        behind.clear()
        for r in rows:
            i = ids[r["id"]]
            outcome = OUTCOME[i % 10]
            want = expected(i)["chat"] if outcome != "late" else "sent"
            immediate = expected(i)["fire"] in ("failed_receipt", "send_failed")
            if (
                r["chat_state"] != want
                or r["fallback_state"] == "firing"
                or (immediate and r["fallback_state"] != expected(i)["sms"])
            ):
                behind[(outcome, RULES[(i // 10) % 3], r["chat_state"], r["fallback_state"])] += 1
        return len(rows) == N and not behind

    try:
        await eventually(settled, "sends and receipts to settle", attempts=450)
    except AssertionError:
        raise AssertionError(f"not settled: {behind.most_common(10)}") from None
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE fallback_state='firing'") == 0
    # Phase 2: drive time through the database: every armed timer is now due.
    await conn.execute(
        "WITH l AS (SELECT id FROM messages WHERE fallback_state = 'armed' AND due_at IS NOT NULL "
        "ORDER BY id FOR UPDATE) "
        "UPDATE messages m SET due_at = now() FROM l WHERE m.id = l.id"
    )

    async def timers_done() -> bool:
        return not await conn.fetchval(
            "SELECT count(*) FROM messages WHERE (fallback_state='armed' AND due_at IS NOT NULL) "
            "OR fallback_state IN ('firing','sms_sent')"
        )

    await eventually(timers_done, "timers to fire and SMS receipts to arrive")
    # Phase 3: the late Delivered receipts arrive after the fallback fired.
    async with http.post(f"{sb_url}/sandbox/release-late") as r:
        assert r.status == 200

    async def late_applied() -> bool:
        n = await conn.fetchval("SELECT count(*) FROM messages WHERE chat_state = 'delivered'")
        want = sum(1 for i in range(N) if expected(i)["chat"] == "delivered")
        return n == want

    await eventually(late_applied, "late receipts to apply")


async def check(
    conn: asyncpg.Connection, http: aiohttp.ClientSession, sb_url: str, ids: dict[str, int]
) -> None:
    rows = await conn.fetch(
        "SELECT id::text, chat_state, fallback_state, fire_reason, double_delivered FROM messages"
    )
    async with http.get(f"{sb_url}/sandbox/journal") as r:
        journal = await r.json()
    sms_sends = {ref: e["sends"] for ref, e in journal["sms"].items()}
    wrong = []
    for r in rows:
        i = ids[r["id"]]
        want = expected(i)
        fired = r["fallback_state"] in ("sms_sent", "sms_delivered", "sms_failed")
        got = {
            "fire": r["fire_reason"] if fired else None,
            "chat": r["chat_state"],
            "double": r["double_delivered"],
            "sms": r["fallback_state"] if fired else None,
        }
        if got != want or sms_sends.get(r["id"], 0) != (1 if want["fire"] else 0):
            wrong.append((i, OUTCOME[i % 10], RULES[(i // 10) % 3], want, got, sms_sends.get(r["id"], 0)))
    assert wrong == []
    # every SMS the sandbox sent belongs to a message that had to fall back, exactly once
    assert sum(sms_sends.values()) == sum(1 for i in range(N) if expected(i)["fire"])
    # duplicates were pushed, stored once, and never applied twice
    pushed = Counter(
        (rep["message_id"], rep["status"])
        for e in journal["chat"].values()
        for rep in e["reports"]
        if rep["posted"]
    )
    assert any(n > 1 for n in pushed.values()), "the sandbox should have pushed duplicates"
    stored = await conn.fetchval("SELECT count(*) FROM receipts WHERE kind = 'chatapp'")
    assert stored == len(pushed)
    applied_twice = await conn.fetchval(
        "SELECT count(*) FROM (SELECT message_id, detail->>'receipt_id' FROM message_events "
        "WHERE kind = 'chat_receipt' GROUP BY 1, 2 HAVING count(*) > 1) d"
    )
    assert applied_twice == 0
    assert (
        await conn.fetchval("SELECT count(*) FROM receipts WHERE kind='chatapp' AND applied_at IS NULL") == 0
    )
