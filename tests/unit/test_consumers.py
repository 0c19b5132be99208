"""QueueConsumer against an in-memory queue and receipt sink (no queue server, no database).

The rule under test: a pulled batch is deleted only after the sink committed it; when the sink fails nothing
is deleted (the queue redelivers, the receipt dedupe makes that harmless); an unparseable body is handed to
the sink as a dead letter and then deleted with the rest, so it does not loop. The real MNS/SQS clients and
Postgres are covered by tests/integration/test_mns.py and test_sqs.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest

from fallback_daemon.core import errors, model, ports
from fallback_daemon.engine import consumers
from fallback_daemon.engine.ingest import IngestResult

HANG_S = 10.0  # a guard against a hang, never a speed target


def chat_body(pid: str, status: str = "Delivered") -> str:
    """An Alicom-style MNS body: base64 of one ChatApp status report."""
    report = {"MessageId": pid, "Status": status, "Timestamp": 1691043638000, "From": "1", "To": "2"}
    return base64.b64encode(json.dumps(report).encode()).decode()


def sms_body(out_id: str) -> str:
    report = {
        "phone_number": "6591234567",
        "send_time": "2024-01-01 00:00:00",
        "report_time": "2024-01-01 00:00:05",
        "success": True,
        "err_code": "DELIVERED",
        "err_msg": "ok",
        "sms_size": "1",
        "biz_id": "biz-1",
        "out_id": out_id,
    }
    return base64.b64encode(json.dumps(report).encode()).decode()


class MemoryQueue:
    """A `ports.ReceiptQueue`: every message not yet deleted is delivered again on each receive (as if its
    visibility timeout had passed). With `block=True` an empty receive waits until cancelled (a long poll)."""

    source = "mns"

    def __init__(self, log: list[Any], kind: model.ReceiptKind = model.ReceiptKind.CHATAPP) -> None:
        self.name = f"q-{kind.value}"
        self.kind = kind
        self.log = log
        self.messages: dict[str, ports.QueueMessage] = {}
        self.block = False
        self.delete_fails = False
        self.receiving = asyncio.Event()

    def put(self, body: str) -> str:
        n = len(self.messages) + 1
        message = ports.QueueMessage(handle=f"h{n}", body=body, message_id=f"m{n}")
        self.messages[message.handle] = message
        return message.handle

    async def receive(self, *, max_messages: int, wait_s: int) -> list[ports.QueueMessage]:
        self.receiving.set()
        if not self.messages and self.block:
            await asyncio.Event().wait()
        return list(self.messages.values())[:max_messages]

    async def delete(self, handles: Sequence[str]) -> None:
        if self.delete_fails:
            raise errors.TransientError("connect failed")
        self.log.append(("delete", sorted(handles)))
        for h in handles:
            self.messages.pop(h, None)


class RecordingSink:
    """A `ports.ReceiptSink` recording each committed batch; the next `failures` batches raise StoreError."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.failures = 0
        self.attempts = 0
        self.dead: list[tuple[str, str, str]] = []
        self.during_commit: asyncio.Event | None = None  # set while committing (a stop request, say)

    async def ingest_queue_batch(
        self,
        kind: model.ReceiptKind,
        source: str,
        queue: str,
        chat: Sequence[model.ChatReceipt],
        sms: Sequence[model.SmsReceipt],
        dead: Sequence[tuple[str, str, str]],
    ) -> IngestResult:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.during_commit is not None:
            self.during_commit.set()
        if self.failures > 0:
            self.failures -= 1
            raise errors.StoreError("database error: ConnectionRefusedError")
        self.dead.extend(dead)
        self.log.append(
            ("commit", queue, [r.message_id for r in chat], [r.fallback_id for r in sms], len(dead))
        )
        return IngestResult(received=len(chat) + len(sms), applied=len(chat) + len(sms))


def consumer(queue: MemoryQueue, sink: RecordingSink) -> consumers.QueueConsumer:
    return consumers.QueueConsumer(queue, sink, pollers=1, batch=16, wait_s=1)


async def test_a_batch_is_deleted_only_after_the_sink_committed_it() -> None:
    log: list[Any] = []
    queue, sink = MemoryQueue(log), RecordingSink(log)
    handles = [queue.put(chat_body("P1")), queue.put(chat_body("P2", "Read"))]
    result = await consumer(queue, sink).poll_once()
    assert result is not None and result.applied == 2
    assert log == [("commit", "q-chatapp", ["P1", "P2"], [], 0), ("delete", handles)]
    assert queue.messages == {}


async def test_nothing_is_deleted_when_the_sink_fails_and_the_redelivery_is_applied() -> None:
    log: list[Any] = []
    queue, sink = MemoryQueue(log), RecordingSink(log)
    handle = queue.put(chat_body("P1"))
    sink.failures = 1
    c = consumer(queue, sink)
    with pytest.raises(errors.StoreError):
        await c.poll_once()
    assert (log, list(queue.messages)) == ([], [handle]), "not deleted: the queue will redeliver it"
    result = await c.poll_once()
    assert result is not None and result.applied == 1
    assert log == [("commit", "q-chatapp", ["P1"], [], 0), ("delete", [handle])]


async def test_a_failed_delete_after_the_commit_leaves_the_message_for_redelivery() -> None:
    log: list[Any] = []
    queue, sink = MemoryQueue(log), RecordingSink(log)
    queue.put(chat_body("P1"))
    queue.delete_fails = True
    with pytest.raises(errors.TransientError):
        await consumer(queue, sink).poll_once()
    assert log == [("commit", "q-chatapp", ["P1"], [], 0)]
    assert len(queue.messages) == 1


async def test_a_poison_message_is_dead_lettered_in_the_batch_and_deleted() -> None:
    """An unparseable body (and a JSON one that is no report) goes to the sink as a dead letter with its
    raw body and error, in the same commit as the good one; then all three are deleted."""
    log: list[Any] = []
    queue, sink = MemoryQueue(log), RecordingSink(log)
    handles = [queue.put("<not a receipt>"), queue.put(chat_body("P1")), queue.put('{"Status": "Read"}')]
    result = await consumer(queue, sink).poll_once()
    assert result is not None and result.applied == 1
    assert log == [("commit", "q-chatapp", ["P1"], [], 2), ("delete", sorted(handles))]
    [(mid1, body1, error1), (mid3, body3, error3)] = sink.dead
    assert (mid1, body1, mid3, body3) == ("m1", "<not a receipt>", "m3", '{"Status": "Read"}')
    assert "MessageBody" in error1 and "MessageId" in error3


async def test_an_sms_queue_hands_sms_reports_to_the_sink() -> None:
    log: list[Any] = []
    queue, sink = MemoryQueue(log, model.ReceiptKind.SMS), RecordingSink(log)
    handle = queue.put(sms_body("11111111-2222-3333-4444-555555555555"))
    await consumer(queue, sink).poll_once()
    assert log == [
        ("commit", "q-sms", [], ["11111111-2222-3333-4444-555555555555"], 0),
        ("delete", [handle]),
    ]


async def test_an_empty_poll_commits_nothing() -> None:
    log: list[Any] = []
    sink = RecordingSink(log)
    assert await consumer(MemoryQueue(log), sink).poll_once() is None
    assert (log, sink.attempts) == ([], 0)


async def test_a_stop_cancels_a_long_poll_in_progress() -> None:
    log: list[Any] = []
    queue, sink = MemoryQueue(log), RecordingSink(log)
    queue.block = True
    stop = asyncio.Event()
    polling = asyncio.create_task(consumer(queue, sink).poll_once(stop))
    await asyncio.wait_for(queue.receiving.wait(), HANG_S)
    stop.set()
    assert await asyncio.wait_for(polling, HANG_S) is None
    assert (log, sink.attempts) == ([], 0)


async def test_a_stop_never_cuts_between_the_commit_and_the_delete() -> None:
    log: list[Any] = []
    queue, sink = MemoryQueue(log), RecordingSink(log)
    handle = queue.put(chat_body("P1"))
    stop = asyncio.Event()
    sink.during_commit = stop
    await asyncio.wait_for(consumer(queue, sink).poll_once(stop), HANG_S)
    assert stop.is_set()
    assert log == [("commit", "q-chatapp", ["P1"], [], 0), ("delete", [handle])]


async def test_the_poll_loop_backs_off_a_failing_sink_and_then_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The running loop meets StoreError twice, backs off (here 0 s), and applies the batch once."""
    monkeypatch.setattr(consumers, "backoff", lambda failures, **kw: 0.0)
    log: list[Any] = []
    queue, sink = MemoryQueue(log), RecordingSink(log)
    handle = queue.put(chat_body("P1"))
    sink.failures = 2
    queue.block = True
    c = consumer(queue, sink)
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_S
        while queue.messages:
            assert not task.done(), f"the loop ended: {task}"
            assert loop.time() < deadline, "the batch was never applied"
            await asyncio.sleep(0.001)
    finally:
        stop.set()
        await asyncio.wait_for(task, HANG_S)
    assert sink.attempts == 3
    assert log == [("commit", "q-chatapp", ["P1"], [], 0), ("delete", [handle])]
