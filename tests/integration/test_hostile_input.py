"""Hostile and malformed input (issue 10), one regression test per class the adversarial pass found.

Each request goes over real loopback HTTP to the whole daemon (the sandbox as Alibaba); malformed HTTP that
aiohttp's client will not send (non-UTF-8 headers, bodies that lie about their encoding) is written raw on
a socket. Every refusal is a JSON 4xx naming the field or header, and changes nothing stored: the tests
compare a checksum of `messages`, `message_events` and `receipts` before and after.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import urllib.parse
import uuid
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
import structlog.testing
from aiohttp import web

from fallback_daemon import app, config
from fallback_daemon import web as web_
from fallback_daemon.db import store
from fallback_daemon.engine import service
from tests.integration import opsupport
from tests.integration.opsupport import TOKEN, send, wait_for

AUTH = f"Bearer {TOKEN}".encode()


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with opsupport.client() as s:
        yield s


async def raw(
    url: str,
    method: str,
    path: str,
    headers: Mapping[str, bytes] | None = None,
    body: bytes = b"",
) -> tuple[int, Any]:
    """One request written byte for byte on a fresh connection; returns (status, decoded JSON or None)."""
    parts = urllib.parse.urlsplit(url)
    head = [f"{method} {path} HTTP/1.1".encode(), f"Host: {parts.netloc}".encode(), b"Connection: close"]
    head += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}".encode())
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head_bytes, _, rest = answer.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.split(b"\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
    payload = rest[: int(fields.get(b"content-length", b"0"))]  # the first answer only
    assert len(answer) == len(head_bytes) + 4 + len(payload), "more than one answer on the connection"
    return int(status_line.split(b" ")[1]), json.loads(payload) if payload else None


async def stored(db: store.Store) -> tuple[Any, ...]:
    """Row counts and a checksum of every stored message, event and receipt."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM messages) AS messages,"
        " (SELECT count(*) FROM message_events) AS events,"
        " (SELECT count(*) FROM receipts) AS receipts,"
        " (SELECT md5(coalesce(string_agg(m::text, ',' ORDER BY m.id), '')) FROM messages m) AS m_sum,"
        " (SELECT md5(coalesce(string_agg(e::text, ',' ORDER BY e.id), '')) FROM message_events e) AS e_sum"
    )
    assert row is not None
    return tuple(row.values())


async def seed(
    daemon: app.Running, *, chat: str = "read", fallback: str = "cancelled", fire_reason: str | None = None
) -> str:
    """A message written as the pipeline would have left it, with its accepted event: `read`/`cancelled` is a
    story that is over; `sent`/`armed` (due in an hour) waits for its timer. No loop touches either by itself
    (the sender claims only `accepted`, the timer only what is due)."""
    mid = await daemon.svc.db.fetchval(
        "WITH m AS (INSERT INTO messages (channel, to_number, from_number, params, fallback_rule,"
        " fallback_duration_s, sms_text, chat_state, fallback_state, fire_reason, due_at,"
        " provider_message_id, sent_at)"
        " VALUES ('whatsapp', '6591234566', '6580000000', '{}'::jsonb, 'undelivered', 3600, 'hi by sms',"
        " $1, $2, $3, CASE WHEN $2 = 'armed' THEN now() + interval '1 hour' END,"
        " 'seed-' || gen_random_uuid(), now())"
        " RETURNING id)"
        " INSERT INTO message_events (message_id, kind) SELECT id, 'accepted' FROM m RETURNING message_id",
        chat,
        fallback,
        fire_reason,
    )
    return str(mid)


async def settled_message(daemon: app.Running, http: aiohttp.ClientSession) -> str:
    """A message whose story is over (read, fallback cancelled): nothing changes it by itself any more."""
    return await seed(daemon)


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def assert_refused(status: int, body: Any, expected_status: int, field: str) -> None:
    assert status == expected_status, body
    assert body["error"]["field"] == field, body


# ---- 5xx from input --------------------------------------------------------------------------------------
async def test_non_utf8_authorization_header_is_a_400_on_every_route(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """A non-UTF-8 Authorization header is a 400 naming it on /v1 routes and on /ui, before authentication."""
    mid = await settled_message(daemon, http)
    before = await stored(daemon.svc.db)
    bad = {"Authorization": b"Bearer \xff\xfe\xfd"}
    for method, path in [
        ("GET", "/v1/messages"),
        ("GET", f"/v1/messages/{mid}"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/dead-letters"),
        ("POST", f"/v1/messages/{mid}/cancel"),
        ("POST", "/v1/messages"),
        ("GET", "/ui"),
    ]:
        status, body = await raw(daemon.url, method, path, bad)
        assert_refused(status, body, 400, "Authorization")
    assert await stored(daemon.svc.db) == before


async def test_non_utf8_cookie_is_a_400_on_v1_routes_and_ui(daemon: app.Running) -> None:
    """A `fallback_ui` cookie that is not UTF-8 is a 400 naming the Cookie header, on /v1 and on /ui."""
    for path in ("/v1/messages", "/v1/stats", "/ui"):
        status, body = await raw(daemon.url, "GET", path, {"Cookie": b"fallback_ui=\xc3\x28\xff"})
        assert_refused(status, body, 400, "Cookie")


async def test_body_not_in_its_content_encoding_is_a_400(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """gzip/deflate bodies that are not gzip/deflate: a 400 naming Content-Encoding on send, action and
    receipt endpoints; nothing is stored."""
    mid = await settled_message(daemon, http)
    before = await stored(daemon.svc.db)
    token = daemon.settings.receipt_token.reveal()
    for path in (
        "/v1/messages",
        "/v1/messages/batch",
        f"/v1/messages/{mid}/fire",
        f"/receipts/{token}/chatapp",
    ):
        for encoding in (b"gzip", b"deflate"):
            headers = {
                "Authorization": AUTH,
                "Content-Encoding": encoding,
                "Content-Type": b"application/json",
            }
            status, body = await raw(daemon.url, "POST", path, headers, b'{"not": "compressed"}')
            assert_refused(status, body, 400, "Content-Encoding")
    assert await stored(daemon.svc.db) == before


async def test_content_encodings_decoded_refused_or_bounded(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """A gzip or deflate send is decoded and accepted; br is a 415 naming Content-Encoding; a gzip bomb (a
    small body that decodes past FALLBACK_MAX_BODY_BYTES) is a 413 and stores nothing."""
    body = json.dumps(opsupport.BODY).encode()
    for encoding, data in [(b"gzip", gzip.compress(body)), (b"deflate", zlib.compress(body))]:
        headers = {"Authorization": AUTH, "Content-Encoding": encoding, "Content-Type": b"application/json"}
        status, answer = await raw(daemon.url, "POST", "/v1/messages", headers, data)
        assert status == 202, answer
    count = "SELECT count(*) FROM messages"  # (the two accepted above move on: only their number is fixed)
    before = await daemon.svc.db.fetchval(count)
    headers = {"Authorization": AUTH, "Content-Encoding": b"br", "Content-Type": b"application/json"}
    status, answer = await raw(daemon.url, "POST", "/v1/messages", headers, body)
    assert_refused(status, answer, 415, "Content-Encoding")
    bomb = gzip.compress(b" " * (daemon.settings.max_body_bytes + 1))
    headers = {"Authorization": AUTH, "Content-Encoding": b"gzip", "Content-Type": b"application/json"}
    status, answer = await raw(daemon.url, "POST", "/v1/messages", headers, bomb)
    assert_refused(status, answer, 413, "body")
    assert len(bomb) < daemon.settings.max_body_bytes // 100
    assert await daemon.svc.db.fetchval(count) == before


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/messages?limit=" + "1" * 5000, "limit"),
        ("GET", "/v1/messages?limit=" + "0" * 5000 + "7", "limit"),  # 7, but not in 20 characters
        ("GET", "/v1/stats?window=" + "9" * 4301, "window"),
        ("GET", "/v1/dead-letters?cursor=" + "5" * 4400, "cursor"),
        ("GET", "/v1/dead-letters?limit=" + "5" * 4400, "limit"),
        ("POST", "/v1/dead-letters/" + "7" * 4500 + "/replay", "id"),
    ],
)
async def test_integers_over_4300_digits_are_a_400(
    daemon: app.Running, http: aiohttp.ClientSession, method: str, path: str, field: str
) -> None:
    """Integers longer than Python's 4,300-digit conversion limit are refused as out of range, not a 500."""
    async with http.request(method, f"{daemon.url}{path}") as resp:
        assert_refused(resp.status, await resp.json(), 400, field)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("since", "0001-01-01T00:00:00+01:00"),
        ("since", "0001-01-01T05:00:00+05:01"),
        ("until", "9999-12-31T23:59:59-01:00"),
        ("until", "9999-12-31T23:00:00-23:59"),
        ("since", "253402300799.9999999"),
    ],
)
async def test_times_near_year_1_or_9999_with_offsets_are_a_400(
    daemon: app.Running, http: aiohttp.ClientSession, param: str, value: str
) -> None:
    """A time whose offset carries it out of years 1..9999 (OverflowError) is a 400 naming the parameter."""
    query = urllib.parse.urlencode({param: value})
    async with http.get(f"{daemon.url}/v1/messages?{query}") as resp:
        assert_refused(resp.status, await resp.json(), 400, param)


@pytest.mark.parametrize(
    "cursor",
    [
        cursor_of(["2025-01-01T00:00:00+00:00", 12345]),  # a non-string id
        cursor_of(["2025-01-01T00:00:00+00:00", {"id": "x"}]),
        cursor_of([12345, str(uuid.UUID(int=1))]),
        cursor_of(["0001-01-01T00:00:00+05:00", str(uuid.UUID(int=1))]),  # out of range once in UTC
        cursor_of(["2025-01-01T00:00:00", str(uuid.UUID(int=1))]),  # naive
        cursor_of(["2025-01-01T00:00:00+00:00", str(uuid.UUID(int=1)), "extra"]),
        base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode(),  # deep nesting: RecursionError
        "!!!not-base64!!!",
    ],
)
async def test_tampered_cursors_are_a_400(
    daemon: app.Running, http: aiohttp.ClientSession, cursor: str
) -> None:
    """A cursor this API did not return is a 400 naming `cursor` (never a 500, never a 503 from Postgres)."""
    async with http.get(f"{daemon.url}/v1/messages", params={"cursor": cursor}) as resp:
        assert_refused(resp.status, await resp.json(), 400, "cursor")


NUL, SURROGATE = "a\u0000b", "a\ud800b"


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone_surrogate"])
async def test_nul_and_lone_surrogates_are_a_400_on_every_endpoint(
    daemon: app.Running, http: aiohttp.ClientSession, bad: str
) -> None:
    """Text Postgres cannot store is a 400 naming the field at the edge, on every endpoint; nothing stored."""
    mid = await settled_message(daemon, http)
    before = await stored(daemon.svc.db)
    token = daemon.settings.receipt_token.reveal()
    cases: list[tuple[str, dict[str, Any] | list[Any], str]] = [
        ("/v1/held/release", {"channel": bad}, "channel"),
        ("/v1/held/drop", {"hold_reason": bad}, "hold_reason"),
        ("/v1/held/release", {"all": True, "reason": bad}, "reason"),
        (f"/v1/messages/{mid}/cancel", {"actor": bad}, "actor"),
        (f"/v1/messages/{mid}/fire", {"reason": bad}, "reason"),
        (f"/v1/messages/{mid}/redrive", {"reason": bad}, "reason"),
        ("/v1/dead-letters/1/replay", {"actor": bad}, "actor"),
        ("/v1/messages", {**opsupport.BODY, "FallBackContent": bad}, "FallBackContent"),
        ("/v1/messages", {**opsupport.BODY, "Content": {"text": bad}}, "Content.text"),
        ("/v1/messages/batch", {"messages": [{**opsupport.BODY, "TaskId": bad}]}, "messages[0].TaskId"),
        (f"/receipts/{token}/chatapp", [{"MessageId": "m1", "Status": bad}], "[0]"),
    ]
    for path, payload, field in cases:
        # ensure_ascii: the bad text travels as a \\u escape, exactly as a hostile client sends it.
        data = json.dumps(payload).encode()
        async with http.post(
            f"{daemon.url}{path}", data=data, headers={"Content-Type": "application/json"}
        ) as r:
            body = await r.json()
            assert r.status == 400, (path, body)
            assert body["error"]["field"].startswith(field), (path, body)
    query = urllib.parse.quote(bad.encode("utf-8", "surrogatepass"))
    async with http.get(f"{daemon.url}/v1/messages?task_id={query}") as resp:
        assert_refused(resp.status, await resp.json(), 400, "task_id")
    assert await stored(daemon.svc.db) == before


@pytest.mark.parametrize(
    ("content_type", "body", "field"),
    [
        (b"application/x-www-form-urlencoded", b"token=\xff\xfe", "body"),  # not UTF-8
        (b"application/x-www-form-urlencoded; charset=utf-16", b"token=abc", "body"),
        (b"application/x-www-form-urlencoded; charset=no-such-charset", b"token=abc", "Content-Type"),
        (b"multipart/form-data", b"--x\r\n", "body"),  # no boundary
        (b"multipart/form-data; boundary=zz", b"not multipart", "body"),
    ],
)
async def test_malformed_login_forms_are_a_400(
    daemon: app.Running, content_type: bytes, body: bytes, field: str
) -> None:
    """POST /ui/login with a form that cannot be parsed (charset, boundary) is a 400 naming what is wrong."""
    status, answer = await raw(daemon.url, "POST", "/ui/login", {"Content-Type": content_type}, body)
    assert_refused(status, answer, 400, field)


async def test_static_file_name_too_long_is_a_404(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """GET /ui/static/<300 characters> is a 404 (the OS refuses the name), not a 500."""
    async with http.get(f"{daemon.url}/ui/static/{'a' * 300}") as resp:
        assert resp.status == 404
    async with http.get(f"{daemon.url}/ui/static/{'a' * 300}/b.js") as resp:
        assert resp.status == 404


# ---- stored changes from refused requests --------------------------------------------------------------
async def test_refused_cancel_and_fire_leave_the_row_as_it_was(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """A 409 cancel or fire does not write the row (updated_at stays): only its timeline event is added."""
    mid = await settled_message(daemon, http)
    q = "SELECT m::text FROM messages m WHERE id = $1"
    row_before = await daemon.svc.db.fetchval(q, uuid.UUID(mid))
    for verb in ("cancel", "fire"):
        async with http.post(f"{daemon.url}/v1/messages/{mid}/{verb}", json={"actor": "eve"}) as resp:
            assert resp.status == 409, await resp.text()
    assert await daemon.svc.db.fetchval(q, uuid.UUID(mid)) == row_before
    async with http.get(f"{daemon.url}/v1/messages/{mid}") as resp:
        events = (await resp.json())["events"]
    assert [(e["kind"], e["outcome"], e["actor"]) for e in events if e.get("actor") == "eve"] == [
        ("operator_cancel", "operator_cancel_refused", "eve"),
        ("operator_fire", "operator_fire_refused", "eve"),
    ]


async def test_cancel_after_fire_is_a_409_and_the_sms_goes_out(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """fire answers what will happen; a cancel after it is refused (409), whether or not the timer loop has
    claimed the fallback yet, and the SMS is sent."""
    mid = await send(http, daemon.url, "6591234566")  # never delivered: armed, a 600 s timer
    await wait_for(http, daemon.url, mid, lambda v: any(e["kind"] == "chat_receipt" for e in v["events"]))
    async with http.post(f"{daemon.url}/v1/messages/{mid}/fire") as resp:
        fired = await resp.json()
        assert resp.status == 200, fired
    assert fired["outcome"] == "operator_fire"
    assert "timer loop" in fired["next"]
    async with http.post(f"{daemon.url}/v1/messages/{mid}/cancel") as resp:
        refused = await resp.json()
        assert resp.status == 409, refused
    view = await wait_for(http, daemon.url, mid, lambda v: v["fallback_state"] == "sms_delivered")
    assert view["fire_reason"] == "operator"


async def test_cancel_of_a_fallback_due_now_is_refused_before_the_timer_claims_it(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """An armed fallback with a fire_reason (fired, not claimed yet) refuses a cancel and keeps its row."""
    # The state a fire leaves between its commit and the timer's claim, held there (due in an hour).
    mid = await seed(daemon, chat="sent", fallback="armed", fire_reason="operator")
    q = "SELECT m::text FROM messages m WHERE id = $1"
    row_before = await daemon.svc.db.fetchval(q, uuid.UUID(mid))
    async with http.post(f"{daemon.url}/v1/messages/{mid}/cancel") as resp:
        body = await resp.json()
        assert resp.status == 409, body
    assert "was fired (operator)" in body["error"]["message"]
    assert await daemon.svc.db.fetchval(q, uuid.UUID(mid)) == row_before
    async with http.post(f"{daemon.url}/v1/messages/{mid}/fire") as resp:
        again = await resp.json()
        assert resp.status == 200, again
    assert again["outcome"] == "operator_fire_already_due"
    assert await daemon.svc.db.fetchval(q, uuid.UUID(mid)) == row_before


# ---- idempotency -----------------------------------------------------------------------------------------
async def test_idempotency_keys_are_scoped_to_the_endpoint(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """A batch keyed `k` does not collide with a single send keyed `k:0`: every item is a new message."""
    async with http.post(
        f"{daemon.url}/v1/messages",
        json={**opsupport.BODY, "To": "6591234570"},
        headers={"Idempotency-Key": "k:0"},
    ) as resp:
        assert resp.status == 202
        single = (await resp.json())["id"]
    batch = {"messages": [{**opsupport.BODY, "To": "6591234571"}, {**opsupport.BODY, "To": "6591234572"}]}
    async with http.post(
        f"{daemon.url}/v1/messages/batch", json=batch, headers={"Idempotency-Key": "k"}
    ) as resp:
        assert resp.status == 202
        items = (await resp.json())["messages"]
    assert [i["created"] for i in items] == [True, True]
    assert single not in {i["id"] for i in items}
    assert await daemon.svc.db.fetchval("SELECT count(*) FROM messages") == 3


async def test_same_key_with_a_different_body_is_a_422_and_stores_nothing(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """Reusing a key with another body is a 422 naming Idempotency-Key, for single sends and for batches
    (a batch that only adds an item stores none of it); the same body again is a replay (200)."""
    one = {**opsupport.BODY, "To": "6591234573"}
    async with http.post(f"{daemon.url}/v1/messages", json=one, headers={"Idempotency-Key": "s1"}) as resp:
        assert resp.status == 202
    batch = {"messages": [one]}
    async with http.post(
        f"{daemon.url}/v1/messages/batch", json=batch, headers={"Idempotency-Key": "b1"}
    ) as resp:
        assert resp.status == 202
    before = await daemon.svc.db.fetchval("SELECT count(*) FROM messages")
    for path, body, key in [
        ("/v1/messages", {**one, "To": "6591234574"}, "s1"),
        ("/v1/messages/batch", {"messages": [one, {**one, "To": "6591234575"}]}, "b1"),
        ("/v1/messages/batch", {"messages": [{**one, "FallBackContent": "other"}]}, "b1"),
    ]:
        async with http.post(f"{daemon.url}{path}", json=body, headers={"Idempotency-Key": key}) as resp:
            answer = await resp.json()
            assert_refused(resp.status, answer, 422, "Idempotency-Key")
        assert "different request body" in answer["error"]["message"]
    assert await daemon.svc.db.fetchval("SELECT count(*) FROM messages") == before
    reordered = dict(reversed(list(one.items())))  # the same body, keys in another order: a replay
    async with http.post(
        f"{daemon.url}/v1/messages", json=reordered, headers={"Idempotency-Key": "s1"}
    ) as resp:
        assert resp.status == 200


async def test_replay_returns_the_current_state(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """A replayed key answers with the message as it is now (read, fallback cancelled), not `accepted`."""
    body = {**opsupport.BODY, "To": "6591234560"}
    async with http.post(f"{daemon.url}/v1/messages", json=body, headers={"Idempotency-Key": "r1"}) as resp:
        first = await resp.json()
    assert (first["state"], first["created"]) == ("accepted", True)
    await wait_for(http, daemon.url, first["id"], lambda v: v["chat_state"] == "read")
    async with http.post(f"{daemon.url}/v1/messages", json=body, headers={"Idempotency-Key": "r1"}) as resp:
        assert resp.status == 200
        again = await resp.json()
    assert (again["id"], again["state"], again["fallback_state"], again["created"]) == (
        first["id"],
        "read",
        "cancelled",
        False,
    )


# ---- leaks -----------------------------------------------------------------------------------------------
async def test_phone_numbers_in_error_texts_are_masked(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """An error answer that would quote a phone number (an unknown field named like one) masks it."""
    async with http.post(f"{daemon.url}/v1/messages", json={**opsupport.BODY, "6591234567": "x"}) as resp:
        body = await resp.json()
        assert resp.status == 400
    assert "6591234567" not in json.dumps(body)
    assert body["error"]["field"] == "659*****67"


# ---- slow clients ----------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def short_deadlines(svc: service.Service) -> AsyncIterator[str]:
    """The daemon's application (no loops) served with read deadlines of a quarter second."""
    settings = config.load(
        {"FALLBACK_API_TOKEN": TOKEN, "FALLBACK_RECEIPT_TOKEN": "receipt-token-0123456789"}
    )
    application = web_.create_app(settings, svc, header_timeout_s=0.25, body_timeout_s=0.25)
    runner = web.AppRunner(application, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_half_sent_request_head_is_closed_at_the_header_deadline(svc: service.Service) -> None:
    """A connection that never completes its request head is closed by the daemon (no answer, no handler)."""
    async with short_deadlines(svc) as url:
        parts = urllib.parse.urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), timeout=30) == b""  # EOF: closed by the server
        finally:
            writer.close()
        async with aiohttp.ClientSession() as s, s.get(f"{url}/healthz") as resp:
            assert resp.status == 200  # a complete request is served as ever


async def test_body_that_stops_arriving_is_a_408(svc: service.Service) -> None:
    """A body sent in part, then stalled, is a 408 naming `body` at the body deadline; nothing stored."""
    async with short_deadlines(svc) as url:
        parts = urllib.parse.urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n" + b'{"ChannelType": "wh'
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=30)
        finally:
            writer.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(payload)["error"]["field"] == "body"
    assert await svc.db.fetchval("SELECT count(*) FROM messages") == 0


async def test_malformed_http_is_one_warning_without_a_traceback(
    daemon: app.Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Framing aiohttp's parser refuses is its 400, logged as one WARNING line with no traceback (an outsider
    cannot flood the ERROR log)."""
    caplog.set_level(logging.WARNING, logger="aiohttp.server")
    headers = {"Authorization": AUTH, "Transfer-Encoding": b"chunked"}
    status, _ = await raw_status(
        daemon.url, "POST", "/v1/messages", headers, b"zz\r\nnot a chunk\r\n0\r\n\r\n"
    )
    assert status == 400
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert records[0].exc_info is None
    assert "http_request_malformed" in records[0].getMessage()


async def raw_status(
    url: str, method: str, path: str, headers: Mapping[str, bytes], body: bytes
) -> tuple[int, bytes]:
    """Like `raw`, for answers that are not JSON: (status, everything after the status line)."""
    parts = urllib.parse.urlsplit(url)
    head = [f"{method} {path} HTTP/1.1".encode(), f"Host: {parts.netloc}".encode(), b"Connection: close"]
    head += [name.encode() + b": " + value for name, value in headers.items()]
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest


async def test_body_abandoned_mid_chunk_is_not_an_error_log(svc: service.Service) -> None:
    """A client that sends part of a chunked body and closes its side gets no traceback into the ERROR log
    (an outsider could flood it): the boundary logs one info line, and nothing is stored."""
    with structlog.testing.capture_logs() as logged:
        async with short_deadlines(svc) as url:
            parts = urllib.parse.urlsplit(url)
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            try:
                writer.write(
                    b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH + b"\r\n"
                    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"
                )
                await writer.drain()
                writer.write_eof()
                await asyncio.wait_for(reader.read(), timeout=30)
            finally:
                writer.close()
    assert [e for e in logged if e["log_level"] in ("error", "critical")] == []
    assert any(e["event"] == "request_abandoned" for e in logged)
    assert await svc.db.fetchval("SELECT count(*) FROM messages") == 0
