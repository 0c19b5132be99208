"""The SQS receipt consumer against moto over real HTTP (aiobotocore) and a real Postgres.

Receive → one transaction → delete after commit; unparseable bodies are dead-lettered and deleted; nothing is
deleted while Postgres is down; a receipt arriving over both SQS and HTTP is applied once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from fallback_daemon import app, config
from fallback_daemon.core import errors, model, policy, validation
from fallback_daemon.db import store
from fallback_daemon.engine import consumers, service
from fallback_daemon.providers import aws, sqs
from tests.e2e.procs import free_port

AWS_REGION = "us-east-1"
TOKEN = "test-api-token-0123456789"


@pytest.fixture
async def sqs_client(aws: str) -> AsyncIterator[Any]:
    async with aws_client("sqs", aws) as client:
        yield client


@contextlib.asynccontextmanager
async def aws_client(service_name: str, url: str) -> AsyncIterator[Any]:
    async with contextlib.AsyncExitStack() as stack:
        yield await aws.open_client(
            stack,
            aws.new_session(),
            service_name,
            region=AWS_REGION,
            endpoint_url=url,
            config=aws.client_config(connect_timeout_s=5, read_timeout_s=30, attempts=1, pool=4),
        )


async def new_queue(client: Any, **attributes: str) -> str:
    name = f"receipts-{uuid.uuid4().hex[:10]}"
    return str((await client.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"])


async def queue_depth(client: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = (await client.get_queue_attributes(QueueUrl=url, AttributeNames=names))["Attributes"]
    return int(attrs[names[0]]), int(attrs[names[1]])


def report(pid: str, status: str, **extra: object) -> dict[str, object]:
    return {"MessageId": pid, "Status": status, "Timestamp": 1691043638000, "From": "1", "To": "2", **extra}


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


async def test_batch_is_applied_in_one_transaction_then_deleted(
    svc: service.Service, sqs_client: Any
) -> None:
    """Raw, base64 and array bodies are applied in one Postgres transaction, then deleted from SQS."""
    mid = await accept_and_send(svc, "Q1")
    url = await new_queue(sqs_client)
    bodies = [
        json.dumps(report("Q1", "Sent")),
        base64.b64encode(json.dumps(report("Q1", "Delivered")).encode()).decode(),
        json.dumps([report("Q1", "Read", TaskId=str(mid))]),
    ]
    for body in bodies:
        await sqs_client.send_message(QueueUrl=url, MessageBody=body)
    queue = sqs.SqsQueue(sqs_client, queue_url=url, kind=model.ReceiptKind.CHATAPP)
    consumer = consumers.QueueConsumer(queue, svc, pollers=1, batch=sqs.MAX_MESSAGES, wait_s=1)

    result = await consumer.poll_once()

    assert result is not None
    assert (result.received, result.applied) == (3, 3)
    view = await svc.get_message(mid)
    assert view is not None
    assert (view["chat_state"], view["fallback_state"]) == ("read", "cancelled")
    rows = await svc.db.fetch("SELECT source, xmin::text AS tx FROM receipts")
    assert {r["source"] for r in rows} == {"sqs"}
    assert len({r["tx"] for r in rows}) == 1  # every receipt row was written by the same transaction
    assert await queue_depth(sqs_client, url) == (0, 0)


async def test_unparseable_body_is_dead_lettered_and_deleted(svc: service.Service, sqs_client: Any) -> None:
    """A body that is neither JSON nor base64 JSON is dead-lettered in the batch's transaction and deleted."""
    mid = await accept_and_send(svc, "Q2")
    url = await new_queue(sqs_client)
    await sqs_client.send_message(QueueUrl=url, MessageBody="<not a receipt>")
    await sqs_client.send_message(QueueUrl=url, MessageBody=json.dumps(report("Q2", "Delivered")))
    queue = sqs.SqsQueue(sqs_client, queue_url=url, kind=model.ReceiptKind.CHATAPP)

    result = await consumers.QueueConsumer(queue, svc, pollers=1, batch=10, wait_s=1).poll_once()

    assert result is not None
    assert result.applied == 1
    dead = await svc.db.fetchrow(
        "SELECT source, queue, kind, body, error, xmin::text AS tx FROM dead_letters"
    )
    assert dead is not None
    assert (dead["source"], dead["queue"], dead["kind"], dead["body"]) == (
        "sqs",
        queue.name,
        "chatapp",
        "<not a receipt>",
    )
    assert "MessageBody" in dead["error"]
    assert dead["tx"] == await svc.db.fetchval("SELECT xmin::text FROM receipts")  # same transaction
    assert (await svc.get_message(mid) or {})["chat_state"] == "delivered"
    assert await queue_depth(sqs_client, url) == (0, 0)


async def test_nothing_is_deleted_while_the_database_is_down(svc: service.Service, sqs_client: Any) -> None:
    """With Postgres down the batch stays on SQS, returns after its visibility timeout, then applies."""
    mid = await accept_and_send(svc, "Q3")
    url = await new_queue(sqs_client, VisibilityTimeout="1")
    await sqs_client.send_message(QueueUrl=url, MessageBody=json.dumps(report("Q3", "Delivered")))
    queue = sqs.SqsQueue(sqs_client, queue_url=url, kind=model.ReceiptKind.CHATAPP)
    down = await store.Store.connect(
        f"postgresql://nobody@127.0.0.1:{free_port()}/none", min_size=0, max_size=1
    )
    try:
        with pytest.raises(errors.StoreError):
            await consumers.QueueConsumer(queue, service.Service(down), pollers=1, wait_s=1).poll_once()
    finally:
        await down.close()
    assert await queue_depth(sqs_client, url) == (0, 1)  # received, not deleted: in flight until it times out

    # Long polling returns as soon as the message is visible again; this time Postgres answers.
    result = await consumers.QueueConsumer(queue, svc, pollers=1, wait_s=5).poll_once()

    assert result is not None
    assert result.applied == 1
    assert (await svc.get_message(mid) or {})["chat_state"] == "delivered"
    assert await queue_depth(sqs_client, url) == (0, 0)


async def test_domestic_sms_report_over_sqs_updates_the_fallback_leg(
    svc: service.Service, sqs_client: Any
) -> None:
    """A domestic SmsReport (out_id = our fallback id) on the SMS queue moves sms_sent to sms_failed."""
    mid = await accept_and_send(svc, "Q4")
    await svc.db.execute("UPDATE messages SET due_at = now() - interval '1 second' WHERE id = $1", mid)
    assert len(await svc.claim_due(10, 60)) == 1
    await svc.apply([service.Outcome(message_id=mid, event=policy.SmsSent(), sms_provider_id="biz-4")])
    url = await new_queue(sqs_client)
    sms_report = {
        "phone_number": "6591234567",
        "send_time": "2024-01-01 00:00:00",
        "report_time": "2024-01-01 00:00:05",
        "success": False,
        "err_code": "UNDELIV",
        "err_msg": "failed",
        "sms_size": "1",
        "biz_id": "biz-4",
        "out_id": str(mid),
    }
    await sqs_client.send_message(
        QueueUrl=url, MessageBody=base64.b64encode(json.dumps(sms_report).encode()).decode()
    )
    queue = sqs.SqsQueue(sqs_client, queue_url=url, kind=model.ReceiptKind.SMS)

    result = await consumers.QueueConsumer(queue, svc, pollers=1, wait_s=1).poll_once()

    assert result is not None
    assert result.applied == 1
    assert (await svc.get_message(mid) or {})["fallback_state"] == "sms_failed"
    assert await queue_depth(sqs_client, url) == (0, 0)


async def test_sns_envelope_is_unwrapped(sqs_client: Any) -> None:
    """A receipt delivered through an SNS topic without raw delivery is handed over as the inner message."""
    url = await new_queue(sqs_client)
    inner = json.dumps(report("Q5", "Read"))
    envelope = {
        "Type": "Notification",
        "MessageId": "m",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
        "Message": inner,
    }
    await sqs_client.send_message(QueueUrl=url, MessageBody=json.dumps(envelope))
    queue = sqs.SqsQueue(sqs_client, queue_url=url, kind=model.ReceiptKind.CHATAPP)

    [message] = await queue.receive(max_messages=50, wait_s=1)

    assert (message.body, message.dequeue_count) == (inner, 1)


async def test_missing_queue_is_a_permanent_error(sqs_client: Any, aws: str) -> None:
    """A queue URL that does not exist maps to PermanentError (the consumer backs off, it does not crash)."""
    queue = sqs.SqsQueue(sqs_client, queue_url=f"{aws}/123456789012/nope", kind=model.ReceiptKind.CHATAPP)
    with pytest.raises(errors.PermanentError) as info:
        await queue.receive(max_messages=10, wait_s=0)
    assert "NonExistentQueue" in info.value.code


@pytest.mark.usefixtures("aws_credentials")
async def test_unreachable_sqs_is_transient() -> None:
    """No server at the endpoint maps to TransientError (retried with backoff)."""
    url = f"http://127.0.0.1:{free_port()}"
    async with aws_client("sqs", url) as client:
        queue = sqs.SqsQueue(client, queue_url=f"{url}/123456789012/q", kind=model.ReceiptKind.CHATAPP)
        with pytest.raises(errors.TransientError):
            await queue.receive(max_messages=10, wait_s=0)
        with pytest.raises(errors.TransientError):
            await queue.delete(["handle"])


# ---- through the daemon ---------------------------------------------------------------------------------


@pytest.fixture
async def daemon(db_dsn: str, aws: str, sqs_client: Any) -> AsyncIterator[tuple[app.Running, str]]:
    """The daemon with the sandbox as Alibaba and an SQS ChatApp receipt queue on moto."""
    queue_url = await new_queue(sqs_client)
    settings = config.load(
        {
            "DATABASE_URL": db_dsn,
            "FALLBACK_HTTP_PORT": "0",
            "FALLBACK_API_TOKEN": TOKEN,
            "FALLBACK_RECEIPT_TOKEN": "receipt-token-0123456789",
            "FALLBACK_LOG_LEVEL": "warning",
            "FALLBACK_SQS_CHATAPP_QUEUE_URL": queue_url,
            "FALLBACK_SQS_WAIT_S": "1",
            "FALLBACK_SQS_POLLERS": "1",
            "FALLBACK_AWS_REGION": AWS_REGION,
            "FALLBACK_AWS_ENDPOINT_URL": aws,
        }
    )
    stop = asyncio.Event()
    started: asyncio.Future[app.Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(app.serve(settings, use_sandbox=True, started=started, stop=stop))
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    yield started.result(), queue_url
    stop.set()
    await task


async def wait_until(probe: Any, attempts: int = 200) -> Any:
    """Poll `probe()` until it returns something truthy (cross-task condition wait, bounded)."""
    for _ in range(attempts):
        if value := await probe():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


async def test_duplicate_over_sqs_and_http_is_applied_once(
    daemon: tuple[app.Running, str], sqs_client: Any
) -> None:
    """The same Delivered receipt over HTTP and over SQS is stored and applied once; SQS is drained."""
    running, queue_url = daemon
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {
        "ChannelType": "whatsapp",
        "Type": "message",
        "MessageType": "text",
        "From": "6580000000",
        "To": "6591234566",
        "Content": {"text": "hi"},
        "FallBackContent": "hi by sms",
        "FallBackDuration": 60,
    }
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{running.url}/v1/messages", json=body) as resp:
            mid = (await resp.json())["id"]

        async def sent() -> dict[str, Any] | None:
            view = await running.svc.get_message(uuid.UUID(mid))
            return view if view and view["provider_message_id"] and view["chat_state"] == "sent" else None

        view = await wait_until(sent)  # suffix 6: the sandbox pushes Sent only, never Delivered
        delivered = [report(view["provider_message_id"], "Delivered", TaskId=mid)]
        token = running.settings.receipt_token.reveal()
        async with http.post(f"{running.url}/receipts/{token}/chatapp", json=delivered) as resp:
            assert resp.status == 200
        await sqs_client.send_message(QueueUrl=queue_url, MessageBody=json.dumps(delivered))

        async def drained() -> bool:
            return await queue_depth(sqs_client, queue_url) == (0, 0)

        await wait_until(drained)
    rows = await running.svc.db.fetch("SELECT source FROM receipts WHERE status = 'Delivered'")
    assert [r["source"] for r in rows] == ["http"]
    final = await running.svc.get_message(uuid.UUID(mid))
    assert final is not None
    assert (final["chat_state"], final["fallback_state"]) == ("delivered", "cancelled")
    statuses = [e.get("status") for e in final["events"] if e["kind"] == "chat_receipt"]
    assert statuses.count("Delivered") == 1
