"""The daemon's HTTP surface over real loopback HTTP, with the in-process sandbox as Alibaba."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from fallback_daemon import app, config

TOKEN = "test-api-token-0123456789"


@contextlib.asynccontextmanager
async def running_daemon(
    db_dsn: str, sandbox_config: object | None = None, **env: str
) -> AsyncIterator[app.Running]:
    """The whole daemon in-process (sandbox included), on a free port, stopped on exit."""
    settings = config.load(
        {
            "DATABASE_URL": db_dsn,
            "FALLBACK_HTTP_PORT": "0",
            "FALLBACK_API_TOKEN": TOKEN,
            "FALLBACK_RECEIPT_TOKEN": "receipt-token-0123456789",
            "FALLBACK_LOG_LEVEL": "warning",
            **env,
        }
    )
    stop = asyncio.Event()
    started: asyncio.Future[app.Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        app.serve(settings, use_sandbox=True, started=started, stop=stop, sandbox_config=sandbox_config)
    )
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield started.result()
    finally:
        stop.set()
        await task


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with running_daemon(db_dsn) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
        yield s


BODY: dict[str, Any] = {
    "ChannelType": "whatsapp",
    "Type": "message",
    "MessageType": "text",
    "From": "6580000000",
    "To": "6591234560",
    "Content": {"text": "hi"},
    "FallBackContent": "hi by sms",
    "FallBackDuration": 60,
}


async def wait_for(
    http: aiohttp.ClientSession, url: str, predicate: Any, attempts: int = 200
) -> dict[str, Any]:
    """Poll a message until `predicate(view)` holds (cross-task condition wait, bounded)."""
    for _ in range(attempts):
        async with http.get(url) as resp:
            view = await resp.json()
        if predicate(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition never held; last view: {view}")


async def test_send_receipts_and_timeline(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """POST /v1/messages answers 202 after commit; the sandbox's Sent/Delivered/Read arrive and cancel the
    fallback."""
    async with http.post(f"{daemon.url}/v1/messages", json=BODY) as resp:
        assert resp.status == 202
        created = await resp.json()
    assert created["state"] == "accepted"
    view = await wait_for(
        http, f"{daemon.url}/v1/messages/{created['id']}", lambda v: v["chat_state"] == "read"
    )
    assert view["fallback_state"] == "cancelled"
    assert view["provider_message_id"]
    kinds = [e["kind"] for e in view["events"]]
    assert kinds[0] == "accepted"
    assert "send_ok" in kinds
    assert kinds.count("chat_receipt") >= 3


async def test_rejected_send_fires_sms(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """A send that CAMS rejects (suffix 8) fails the chat leg and the SMS goes out and is delivered."""
    async with http.post(f"{daemon.url}/v1/messages", json={**BODY, "To": "6591234568"}) as resp:
        mid = (await resp.json())["id"]
    view = await wait_for(
        http, f"{daemon.url}/v1/messages/{mid}", lambda v: v["fallback_state"] == "sms_delivered"
    )
    assert (view["chat_state"], view["fire_reason"]) == ("send_failed", "send_failed")
    assert view["sms_id"]


async def test_idempotency_key_over_http(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """The same Idempotency-Key and body returns the original message id with 200, not a second message; the
    key with another body is a 422 (tests/integration/test_hostile_input.py covers the rest)."""
    h = {"Idempotency-Key": "order-42"}
    async with http.post(f"{daemon.url}/v1/messages", json=BODY, headers=h) as r1:
        first = await r1.json()
    async with http.post(f"{daemon.url}/v1/messages", json=BODY, headers=h) as r2:
        second = await r2.json()
        assert r2.status == 200
    assert second["id"] == first["id"]
    async with http.post(f"{daemon.url}/v1/messages", json={**BODY, "To": "6599999999"}, headers=h) as r3:
        assert r3.status == 422
        assert (await r3.json())["error"]["field"] == "Idempotency-Key"
    assert await daemon.svc.db.fetchval("SELECT count(*) FROM messages") == 1


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"FallBackDuration": 59}, "FallBackDuration"),
        ({"FallBackRule": "sometimes"}, "FallBackRule"),
        ({"ChannelType": "sms"}, "ChannelType"),
        ({"To": "12ab"}, "To"),
        ({"Fallbackduration": 60}, "Fallbackduration"),
    ],
)
async def test_bad_input_is_400_naming_the_field(
    daemon: app.Running, http: aiohttp.ClientSession, patch: dict[str, Any], field: str
) -> None:
    """An invalid body gets 400 with a JSON error naming the field, and nothing is stored."""
    async with http.post(f"{daemon.url}/v1/messages", json={**BODY, **patch}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == field
    assert await daemon.svc.db.fetchval("SELECT count(*) FROM messages") == 0


async def test_auth_and_tokens(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """/v1 needs the bearer token (401); a wrong receipt token is 404; a malformed receipt body is 400."""
    async with aiohttp.ClientSession() as anon, anon.post(f"{daemon.url}/v1/messages", json=BODY) as resp:
        assert resp.status == 401
    async with http.post(f"{daemon.url}/receipts/wrong-token-0123456789/chatapp", json=[]) as resp:
        assert resp.status == 404
    token = daemon.settings.receipt_token.reveal()
    async with http.post(f"{daemon.url}/receipts/{token}/chatapp", data=b'[{"Status": 1}') as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "body"
    async with http.post(f"{daemon.url}/receipts/{token}/chatapp", json=[{"Status": "Read"}]) as resp:
        assert resp.status == 400
        assert "MessageId" in (await resp.json())["error"]["field"]
    assert await daemon.svc.db.fetchval("SELECT count(*) FROM receipts") == 0


async def test_receipt_ack_shape(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """A valid receipt push is answered 200 {"code":0,"msg":"success"} and stored (parked: unknown id)."""
    token = daemon.settings.receipt_token.reveal()
    report = [
        {"Status": "Delivered", "MessageId": "unknown-1", "Timestamp": 1691043638000, "From": "1", "To": "2"}
    ]
    async with http.post(f"{daemon.url}/receipts/{token}/chatapp", json=report) as resp:
        assert resp.status == 200
        assert await resp.json() == {"code": 0, "msg": "success"}
    assert await daemon.svc.db.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NULL") == 1


async def test_health_endpoints(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """/healthz and /readyz answer 200 on a running daemon."""
    for path in ("/healthz", "/readyz"):
        async with http.get(daemon.url + path) as resp:
            assert resp.status == 200


def test_run_refuses_without_credentials() -> None:
    """Without provider credentials and without --sandbox, start-up fails naming the variable."""
    with pytest.raises(Exception, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        app.check_can_run(config.load({}), use_sandbox=False)


async def test_unknown_message_404(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """GET of an id that does not exist is 404; a malformed id is 400."""
    async with http.get(f"{daemon.url}/v1/messages/00000000-0000-0000-0000-000000000000") as resp:
        assert resp.status == 404
    async with http.get(f"{daemon.url}/v1/messages/nope") as resp:
        assert resp.status == 400


async def test_metrics_endpoint(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """/metrics serves the Prometheus text format with the send, receipt and timer metrics."""
    async with http.post(f"{daemon.url}/v1/messages", json=BODY) as resp:
        mid = (await resp.json())["id"]
    await wait_for(http, f"{daemon.url}/v1/messages/{mid}", lambda v: v["chat_state"] == "read")
    async with http.get(f"{daemon.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    for name in (
        "fallback_sends_total",
        "fallback_receipts_total",
        "fallback_pending_timers",
        "fallback_provider_latency_seconds_bucket",
        "fallback_held",
    ):
        assert name in text
    assert 'fallback_sends_total{outcome="ok"}' in text


async def test_throttled_sends_are_retried_until_sent(db_dsn: str, http: aiohttp.ClientSession) -> None:
    """Against a sandbox capped at 5 calls/s and a daemon allowed 50/s, throttled sends back off and all go
    out."""
    from fallback_daemon import metrics, sandbox

    before = metrics.throttled.labels("cams")._value.get()
    async with running_daemon(
        db_dsn,
        sandbox.SandboxConfig(qps=5),
        FALLBACK_SEND_RATE="50",
        FALLBACK_SEND_BURST="10",
        FALLBACK_SEND_MAX_ATTEMPTS="50",
    ) as d:
        bodies = {"messages": [{**BODY, "To": f"659123{i:03d}0"} for i in range(30)]}
        async with http.post(f"{d.url}/v1/messages/batch", json=bodies) as resp:
            ids = [m["id"] for m in (await resp.json())["messages"]]
        for mid in ids:
            await wait_for(
                http, f"{d.url}/v1/messages/{mid}", lambda v: v["chat_state"] == "read", attempts=600
            )
        retried = await d.svc.db.fetchval("SELECT count(*) FROM message_events WHERE kind = 'send_retry'")
    assert retried > 0
    assert metrics.throttled.labels("cams")._value.get() > before
