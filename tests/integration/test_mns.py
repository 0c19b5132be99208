"""The MNS receipt consumer against the sandbox's MNS over real HTTP and a real Postgres.

Receive → one transaction → delete after commit; unparseable bodies are dead-lettered and deleted; nothing is
deleted while Postgres is down (redelivery with DequeueCount 2, applied once); temporary credentials are
refreshed before and after they expire; a receipt over both HTTP and MNS is applied once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest

from fallback_daemon import app, config
from fallback_daemon.core import errors, model, policy, ports, validation
from fallback_daemon.db import store
from fallback_daemon.engine import consumers, service
from fallback_daemon.providers import dybaseapi, mns
from fallback_daemon.sandbox import Sandbox, SandboxConfig, serve

AK, SK = "mns-test-ak", "mns-test-secret-0123"
UID = "1234567890"
CHAT_QUEUE = f"Alicom-Queue-{UID}-ChatAppStatus"
SMS_QUEUE = f"Alicom-Queue-{UID}-SmsReport"
OWN_QUEUE = "own-receipts"
TOKEN = "test-api-token-0123456789"


def sandbox_config(**overrides: Any) -> SandboxConfig:
    base: dict[str, Any] = {
        "access_key_id": AK,
        "access_key_secret": SK,
        "mns_uid": UID,
        "mns_visibility_timeout_s": 1,
        "mns_extra_queues": (OWN_QUEUE,),
    }
    return SandboxConfig(**{**base, **overrides})


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with await serve(sandbox_config()) as sb:
        yield sb


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Recording:
    """A ReceiptQueue wrapper that keeps what was received and checks, at delete time, what was committed."""

    def __init__(self, queue: mns.MnsQueue, db: store.Store | None = None) -> None:
        self.queue, self.db = queue, db
        self.name, self.source, self.kind = queue.name, queue.source, queue.kind
        self.received: list[ports.QueueMessage] = []
        self.committed_at_delete: int | None = None

    async def receive(self, *, max_messages: int, wait_s: int) -> list[ports.QueueMessage]:
        got = await self.queue.receive(max_messages=max_messages, wait_s=wait_s)
        self.received = got
        return got

    async def delete(self, handles: Sequence[str]) -> None:
        if self.db is not None:  # another pooled connection sees only committed rows
            self.committed_at_delete = await self.db.fetchval("SELECT count(*) FROM receipts")
        await self.queue.delete(handles)


def alicom_queue(
    sb: Sandbox, session: aiohttp.ClientSession, name: str = CHAT_QUEUE, **kw: Any
) -> tuple[mns.MnsQueue, dybaseapi.TokenCredentials]:
    client = dybaseapi.DybaseapiClient(
        session, endpoint=sb.url, access_key_id=AK, access_key_secret=config.Secret(SK)
    )
    kind = model.ReceiptKind.CHATAPP if name.endswith("ChatAppStatus") else model.ReceiptKind.SMS
    creds = dybaseapi.TokenCredentials(
        client, queue_name=name, message_type=dybaseapi.message_type_for(name, kind)
    )
    return mns.MnsQueue(session, endpoint=sb.url, queue_name=name, kind=kind, credentials=creds, **kw), creds


def own_queue(sb: Sandbox, session: aiohttp.ClientSession, name: str = OWN_QUEUE, **kw: Any) -> mns.MnsQueue:
    creds = mns.StaticCredentials(AK, config.Secret(SK))
    return mns.MnsQueue(
        session, endpoint=sb.url, queue_name=name, kind=model.ReceiptKind.CHATAPP, credentials=creds, **kw
    )


def report(pid: str, status: str, **extra: object) -> dict[str, object]:
    return {"MessageId": pid, "Status": status, "Timestamp": 1691043638000, "From": "1", "To": "2", **extra}


def put(sb: Sandbox, body: str | dict[str, object], queue: str = CHAT_QUEUE) -> None:
    """Enqueue like Alicom does: one base64-JSON message (a str body is sent as is)."""
    text = body if isinstance(body, str) else base64.b64encode(json.dumps(body).encode()).decode()
    sb.state.mns.queues[queue].send(text)


def counts(sb: Sandbox, queue: str = CHAT_QUEUE) -> dict[str, int]:
    return sb.state.mns.queues[queue].counts()


async def accept_and_send(svc: service.Service, pid: str, to: str = "6591234567") -> uuid.UUID:
    body = {
        "ChannelType": "whatsapp",
        "Type": "message",
        "MessageType": "text",
        "From": "6580000000",
        "To": to,
        "Content": {"text": "hello"},
        "FallBackContent": "hello by sms",
        "FallBackDuration": 120,
    }
    [a] = await svc.accept([validation.validate_send(body)], [None])
    await svc.claim_sends(10, 60)
    await svc.apply([service.Outcome(message_id=a.id, event=policy.SendOk(), provider_message_id=pid)])
    return a.id


# ---- consumer + Postgres ---------------------------------------------------------------------------------


async def test_batch_is_applied_in_one_transaction_then_deleted(
    svc: service.Service, sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """A batch of Alicom messages is applied in one transaction, committed, and only then deleted."""
    mid = await accept_and_send(svc, "M1")
    for status in ("Sent", "Delivered", "Read"):
        put(sandbox, report("M1", status, TaskId=str(mid)))
    queue, _ = alicom_queue(sandbox, session)
    recording = Recording(queue, svc.db)

    result = await consumers.QueueConsumer(recording, svc, pollers=1, batch=16, wait_s=1).poll_once()

    assert result is not None
    assert (result.received, result.applied) == (3, 3)
    assert recording.committed_at_delete == 3  # the commit was visible before the delete went out
    rows = await svc.db.fetch("SELECT source, xmin::text AS tx FROM receipts")
    assert {r["source"] for r in rows} == {"mns"}
    assert len({r["tx"] for r in rows}) == 1
    assert ((await svc.get_message(mid)) or {})["chat_state"] == "read"
    assert counts(sandbox)["messages"] == 0
    assert sandbox.stats()["mns_deleted"] == 3


async def test_unparseable_body_is_dead_lettered_and_deleted(
    svc: service.Service, sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """A body that is neither base64 JSON nor JSON becomes a dead letter with its raw body, and is deleted."""
    mid = await accept_and_send(svc, "M2")
    put(sandbox, "<not a receipt>")
    put(sandbox, report("M2", "Delivered"))
    queue, _ = alicom_queue(sandbox, session)

    result = await consumers.QueueConsumer(queue, svc, pollers=1, batch=16, wait_s=1).poll_once()

    assert result is not None and result.applied == 1
    dead = await svc.db.fetchrow(
        "SELECT source, queue, kind, body, error, queue_message_id FROM dead_letters"
    )
    assert dead is not None
    assert (dead["source"], dead["queue"], dead["kind"], dead["body"]) == (
        "mns",
        CHAT_QUEUE,
        "chatapp",
        "<not a receipt>",
    )
    assert dead["queue_message_id"] and "MessageBody" in dead["error"]
    assert ((await svc.get_message(mid)) or {})["chat_state"] == "delivered"
    assert counts(sandbox)["messages"] == 0


async def test_nothing_is_deleted_while_the_database_is_down(
    db_dsn: str, svc: service.Service, sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """With the pool closed nothing is deleted; the message returns after its visibility timeout with
    DequeueCount 2 and is then applied exactly once."""
    mid = await accept_and_send(svc, "M3")
    put(sandbox, report("M3", "Delivered"))
    queue, _ = alicom_queue(sandbox, session)
    recording = Recording(queue)
    down = await store.Store.connect(db_dsn, min_size=0, max_size=1)
    await down.close()

    with pytest.raises(errors.StoreError):
        await consumers.QueueConsumer(recording, service.Service(down), pollers=1, wait_s=1).poll_once()

    assert [m.dequeue_count for m in recording.received] == [1]
    assert counts(sandbox) == {"messages": 1, "inflight": 1, "visible": 0, "waiting": 0}
    # The long poll returns as soon as the message is visible again (visibility timeout: 1 s).
    result = await consumers.QueueConsumer(recording, svc, pollers=1, wait_s=5).poll_once()

    assert [m.dequeue_count for m in recording.received] == [2]
    assert result is not None and result.applied == 1
    assert counts(sandbox)["messages"] == 0
    events = [e for e in ((await svc.get_message(mid)) or {})["events"] if e["kind"] == "chat_receipt"]
    assert [e["status"] for e in events] == ["Delivered"]
    assert sandbox.stats()["mns_redelivered"] == 1


async def test_sms_reports_over_mns_update_the_fallback_leg(
    svc: service.Service, sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """A domestic SmsReport on the SmsReport queue (out_id = our id) moves sms_sent to sms_delivered."""
    mid = await accept_and_send(svc, "M4")
    await svc.db.execute("UPDATE messages SET due_at = now() - interval '1 second' WHERE id = $1", mid)
    assert len(await svc.claim_due(10, 60)) == 1
    await svc.apply([service.Outcome(message_id=mid, event=policy.SmsSent(), sms_provider_id="biz-4")])
    put(
        sandbox,
        {
            "phone_number": "6591234567",
            "send_time": "2024-01-01 00:00:00",
            "report_time": "2024-01-01 00:00:05",
            "success": True,
            "err_code": "DELIVERED",
            "err_msg": "ok",
            "sms_size": "1",
            "biz_id": "biz-4",
            "out_id": str(mid),
        },
        queue=SMS_QUEUE,
    )
    queue, _ = alicom_queue(sandbox, session, SMS_QUEUE)

    result = await consumers.QueueConsumer(queue, svc, pollers=1, wait_s=1).poll_once()

    assert result is not None and result.applied == 1
    assert ((await svc.get_message(mid)) or {})["fallback_state"] == "sms_delivered"


async def test_token_refresh_before_and_after_expiry(
    svc: service.Service, session: aiohttp.ClientSession
) -> None:
    """Short-lived tokens are replaced before they expire (no refusal); a token revoked early is refused once,
    replaced, and the request retried without the consumer noticing."""
    # A long visibility timeout: a stall of the machine between receive and delete must not redeliver a report
    # (this test is about tokens, and a redelivery would show up as a second, duplicate batch).
    async with await serve(sandbox_config(mns_token_ttl_s=3, mns_visibility_timeout_s=60)) as sb:
        queue, creds = alicom_queue(sb, session)
        consumer = consumers.QueueConsumer(queue, svc, pollers=1, wait_s=1)
        deadline = time.monotonic() + 6.5
        n = 0
        while time.monotonic() < deadline:  # time passes inside the 1 s long polls of an empty queue
            put(sb, report(f"T{n}", "Sent"))
            assert (await consumer.poll_once()) is not None
            assert await consumer.poll_once() is None
            n += 1
        assert creds.fetched >= 3
        assert sb.stats()["mns_token_denials"] == 0
        assert creds.fetched == sb.stats()["mns_tokens_issued"]
        # A token fetched now is valid for its whole ttl whatever the loop's last poll left: the current one
        # may have lapsed inside that poll, which is the consumer's business, not this check's.
        await creds.refresh(await creds.get())
        issued = sb.stats()["mns_tokens_issued"]
        # The fresh one is valid (so is any predecessor still inside its ttl, as tokens are replaced at 80 %
        # of their life); the first ones have expired by themselves.
        assert 1 <= sb.expire_tokens() < issued

        put(sb, report("T-last", "Sent"))
        result = await consumer.poll_once()

        assert result is not None and result.received == 1
        stats = sb.stats()
        assert (stats["mns_token_denials"], stats["mns_tokens_issued"]) == (1, creds.fetched)
        assert await svc.db.fetchval("SELECT count(*) FROM receipts") == n + 1


# ---- the adapter against the sandbox -----------------------------------------------------------------------


async def test_empty_queue_is_an_empty_list_and_long_poll_wakes_on_send(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """MessageNotExist after the wait is [], not an error; a waiting poll returns when a message arrives."""
    queue = own_queue(sandbox, session)
    assert await queue.receive(max_messages=16, wait_s=0) == []
    poll = asyncio.ensure_future(queue.receive(max_messages=16, wait_s=20))
    for _ in range(200):  # until the request is parked in the sandbox's long poll
        if counts(sandbox, OWN_QUEUE)["waiting"]:
            break
        await asyncio.sleep(0.01)
    assert counts(sandbox, OWN_QUEUE)["waiting"] == 1
    put(sandbox, "eyJhIjoxfQ==", OWN_QUEUE)
    [message] = await asyncio.wait_for(poll, 5)
    assert (message.body, message.dequeue_count) == ("eyJhIjoxfQ==", 1)


async def test_credentials_and_queue_errors(sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    """The static key on an Alicom queue is AccessDenied and a missing queue QueueNotExist: both permanent;
    a wrong secret for the token call is a permanent Dybaseapi error."""
    with pytest.raises(errors.PermanentError) as denied:
        await own_queue(sandbox, session, CHAT_QUEUE).receive(max_messages=1, wait_s=0)
    assert (denied.value.status, denied.value.code) == (403, "AccessDenied")
    with pytest.raises(errors.PermanentError) as missing:
        await own_queue(sandbox, session, "no-such-queue").receive(max_messages=1, wait_s=0)
    assert (missing.value.status, missing.value.code) == (404, "QueueNotExist")
    client = dybaseapi.DybaseapiClient(
        session, endpoint=sandbox.url, access_key_id=AK, access_key_secret=config.Secret("wrong")
    )
    with pytest.raises(errors.PermanentError) as bad:
        await client.query_token(message_type="ChatAppStatus", queue_name=CHAT_QUEUE)
    assert bad.value.code == "SignatureDoesNotMatch"


async def test_batch_delete_partial_failure_is_tolerated(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """A handle that died (here: ChangeMessageVisibility replaced it) fails inside BatchDelete's <Errors>
    body; the others are deleted and the call does not raise (the dead one will be redelivered)."""
    queue = own_queue(sandbox, session)
    put(sandbox, "YQ==", OWN_QUEUE)
    put(sandbox, "Yg==", OWN_QUEUE)
    first, second = await queue.receive(max_messages=16, wait_s=0)
    new_handle = await queue.change_visibility(first.handle, 30)
    assert new_handle != first.handle

    await queue.delete([first.handle, second.handle])

    assert counts(sandbox, OWN_QUEUE) == {"messages": 1, "inflight": 1, "visible": 0, "waiting": 0}
    await queue.delete([new_handle])
    assert counts(sandbox, OWN_QUEUE)["messages"] == 0
    assert (sandbox.stats()["mns_deleted"], sandbox.stats()["mns_delete_errors"]) == (2, 1)


async def test_stalled_delete_times_out_and_deletes_nothing(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """A held delete request ends in TransientError on the client; the sandbox never applies it and lets go
    when the client disconnects."""
    queue = own_queue(sandbox, session, request_timeout_s=0.3, delete_attempts=1)
    put(sandbox, "YQ==", OWN_QUEUE)
    [message] = await queue.receive(max_messages=1, wait_s=0)
    sandbox.stall_deletes(1)

    with pytest.raises(errors.TransientError):
        await queue.delete([message.handle])

    assert counts(sandbox, OWN_QUEUE)["messages"] == 1
    for _ in range(100):  # the sandbox notices the disconnect within its 50 ms look-ups
        if sandbox.stats()["mns_deletes_pending"] == 0:
            break
        await asyncio.sleep(0.05)
    assert (sandbox.stats()["mns_deletes_stalled"], sandbox.stats()["mns_deletes_pending"]) == (1, 0)


async def test_corrupt_body_is_retried_then_handed_over(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """A body whose MessageBodyMD5 does not match is released for a quick retry, and handed to the consumer
    (to be dead-lettered) on its third delivery instead of looping forever."""
    queue = own_queue(sandbox, session)
    put(sandbox, "eyJhIjoxfQ==", OWN_QUEUE)
    [stored] = sandbox.state.mns.queues[OWN_QUEUE]._messages.values()
    stored.body_md5 = "0" * 32  # what a corruption in transit would look like to the client
    deliveries = []
    for _ in range(mns.MD5_PASS_AFTER):
        deliveries.append(await queue.receive(max_messages=16, wait_s=5))  # released: back within ~1 s
    assert deliveries[:-1] == [[]] * (mns.MD5_PASS_AFTER - 1)
    [message] = deliveries[-1]
    assert (message.body, message.dequeue_count) == ("eyJhIjoxfQ==", mns.MD5_PASS_AFTER)


async def signed(
    session: aiohttp.ClientSession, sb: Sandbox, method: str, resource: str, body: bytes = b""
) -> tuple[int, bytes]:
    creds = mns.Credentials(access_key_id=AK, access_key_secret=config.Secret(SK))
    headers = mns.signed_headers(
        creds, method=method, resource=resource, date=mns.http_date(time.time()), body=body
    )
    async with session.request(method, f"{sb.url}{resource}", data=body or None, headers=headers) as resp:
        return resp.status, await resp.read()


async def test_sandbox_protocol_details(sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    """SendMessage answers 201 with the body MD5; numOfMessages outside 1..16 is InvalidArgument; a single
    ReceiveMessage answers a bare <Message> root."""
    path = f"/queues/{OWN_QUEUE}/messages"
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><Message xmlns="http://mns.aliyuncs.com/doc/v1/">'
        b"<MessageBody>eyJNZXNzYWdlSWQiOiJtMSJ9</MessageBody></Message>"
    )
    status, answer = await signed(session, sandbox, "POST", path, body)
    assert status == 201 and b"<MessageBodyMD5>" in answer
    for bad in ("0", "17"):
        status, answer = await signed(session, sandbox, "GET", f"{path}?numOfMessages={bad}&waitseconds=0")
        assert status == 400 and (mns.parse_error(answer) or mns.MnsError(code="")).code == "InvalidArgument"
    status, answer = await signed(session, sandbox, "GET", f"{path}?waitseconds=0")
    assert status == 200 and answer.lstrip().startswith(b"<?xml")
    [message] = mns.parse_messages(answer)
    assert message.md5_ok() and message.body == "eyJNZXNzYWdlSWQiOiJtMSJ9"
    batch = (
        b'<?xml version="1.0" encoding="UTF-8"?><Messages xmlns="http://mns.aliyuncs.com/doc/v1/">'
        + b"<Message><MessageBody>YQ==</MessageBody></Message>" * 3
        + b"</Messages>"
    )
    status, answer = await signed(session, sandbox, "POST", path, batch)
    assert status == 201 and answer.count(b"<MessageId>") == 3


# ---- through the daemon ------------------------------------------------------------------------------------


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    """The daemon with its in-process sandbox, reading both Alicom queues (the sandbox delivers into MNS)."""
    settings = config.load(
        {
            "DATABASE_URL": db_dsn,
            "FALLBACK_HTTP_PORT": "0",
            "FALLBACK_API_TOKEN": TOKEN,
            "FALLBACK_RECEIPT_TOKEN": "receipt-token-0123456789",
            "FALLBACK_LOG_LEVEL": "warning",
            "FALLBACK_MNS_CHATAPP_QUEUE": CHAT_QUEUE,
            "FALLBACK_MNS_SMS_QUEUE": SMS_QUEUE,
            "FALLBACK_MNS_WAIT_S": "1",
            "FALLBACK_MNS_POLLERS": "1",
        }
    )
    stop = asyncio.Event()
    started: asyncio.Future[app.Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        app.serve(
            settings,
            use_sandbox=True,
            started=started,
            stop=stop,
            sandbox_config=sandbox_config(access_key_id="sandbox-ak", access_key_secret="sandbox-secret"),
        )
    )
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    yield started.result()
    stop.set()
    await task


async def wait_until(probe: Any, attempts: int = 200) -> Any:
    """Poll `probe()` until it returns something truthy (cross-task condition wait, bounded)."""
    for _ in range(attempts):
        if value := await probe():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


async def test_same_receipts_over_http_and_mns_are_applied_once(daemon: app.Running) -> None:
    """With the sandbox delivering every report over both HTTP and MNS, each is stored and applied once."""
    assert daemon.sandbox_url is not None
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.get(f"{daemon.sandbox_url}/sandbox/mns") as resp:
            assert (await resp.json())["delivery"] == "mns"  # the daemon asked its sandbox for MNS delivery
        async with http.post(f"{daemon.sandbox_url}/sandbox/mns", json={"delivery": "both"}) as resp:
            assert resp.status == 200
        body = {
            "ChannelType": "whatsapp",
            "Type": "message",
            "MessageType": "text",
            "From": "6580000000",
            "To": "6591234560",
            "Content": {"text": "hi"},
            "FallBackContent": "hi by sms",
            "FallBackDuration": 60,
        }
        async with http.post(f"{daemon.url}/v1/messages", json=body) as resp:
            mid = uuid.UUID((await resp.json())["id"])

        async def settled() -> bool:
            async with http.get(f"{daemon.sandbox_url}/sandbox/stats") as resp:
                stats = await resp.json()
            view = await daemon.svc.get_message(mid)
            return bool(
                view
                and view["chat_state"] == "read"
                and stats["receipts_posted"] == 3
                and stats["mns_deleted"] == 3
            )

        await wait_until(settled)
    rows = await daemon.svc.db.fetch("SELECT status, source FROM receipts")
    assert sorted(r["status"] for r in rows) == ["Delivered", "Read", "Sent"]
    view = await daemon.svc.get_message(mid)
    assert view is not None
    statuses = [e["status"] for e in view["events"] if e["kind"] == "chat_receipt"]
    assert sorted(statuses) == ["Delivered", "Read", "Sent"]
