"""Queue consumers: long-poll a ReceiptQueue, apply each batch in one transaction, delete only after commit.

A message that cannot be parsed is dead-lettered (raw body kept for operators) in the same transaction and
then deleted, so it does not loop. When Postgres is unavailable nothing is deleted: the queue redelivers
after its visibility timeout, and the receipt dedupe makes the redelivery harmless.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from fallback_daemon.core import errors, model, ports, receipts
from fallback_daemon.engine.ingest import IngestResult
from fallback_daemon.engine.loops import backoff, sleep_or_stop

log = structlog.get_logger("fallback_daemon.engine.consumers")


def parse_batch(
    kind: model.ReceiptKind, messages: list[ports.QueueMessage]
) -> tuple[list[model.ChatReceipt], list[model.SmsReceipt], list[tuple[str, str, str]]]:
    """Split a pulled batch into chat receipts, SMS receipts, and dead letters (id, body, error)."""
    chat: list[model.ChatReceipt] = []
    sms: list[model.SmsReceipt] = []
    dead: list[tuple[str, str, str]] = []
    for m in messages:
        try:
            payload = receipts.decode_mns_body(m.body)
            if kind is model.ReceiptKind.CHATAPP:
                chat.extend(receipts.parse_chatapp_reports(payload))
            else:
                sms.extend(receipts.parse_sms_reports(payload))
        except errors.ValidationError as exc:
            dead.append((m.message_id, m.body, str(exc)))
    return chat, sms, dead


class QueueConsumer:
    """`pollers` concurrent long-poll loops over one queue, handing each batch to `sink` (the service)."""

    def __init__(
        self,
        queue: ports.ReceiptQueue,
        sink: ports.ReceiptSink,
        *,
        pollers: int = 2,
        batch: int = 16,
        wait_s: int = 10,
    ) -> None:
        self.queue, self.sink = queue, sink
        self.pollers, self.batch, self.wait_s = pollers, batch, wait_s

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            for i in range(self.pollers):
                tg.create_task(self._poll_loop(stop), name=f"consumer-{self.queue.name}-{i}")

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self.poll_once(stop)
                failures = 0
            except (errors.TransientError, errors.StoreError, errors.PermanentError) as exc:
                failures += 1
                log.warning("queue_poll_failed", queue=self.queue.name, error=str(exc), failures=failures)
                await sleep_or_stop(stop, backoff(failures, cap=30.0))

    async def poll_once(self, stop: asyncio.Event | None = None) -> IngestResult | None:
        """Receive one batch, commit it, then delete it. Returns None when the queue was empty.

        A stop request cancels a long poll in progress (nothing was received, nothing is lost) but never
        the commit-then-delete that follows a receive.
        """
        receive = asyncio.ensure_future(self.queue.receive(max_messages=self.batch, wait_s=self.wait_s))
        if stop is not None:
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([receive, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not receive.done():
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receive
                return None
        messages = await receive
        if not messages:
            return None
        chat, sms, dead = parse_batch(self.queue.kind, messages)
        # Raises StoreError when Postgres is down: nothing is deleted, the queue redelivers.
        result = await self.sink.ingest_queue_batch(
            self.queue.kind, self.queue.source, self.queue.name, chat, sms, dead
        )
        await self.queue.delete([m.handle for m in messages])
        log.info(
            "queue_batch",
            queue=self.queue.name,
            messages=len(messages),
            dead=len(dead),
            applied=result.applied,
            duplicates=result.duplicates,
            parked=result.parked,
        )
        return result
