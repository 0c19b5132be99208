"""AWS SQS as a `ports.ReceiptQueue`: long-poll ReceiveMessage, DeleteMessageBatch after commit.

Bodies carry the same receipt JSON as Alibaba's MNS queues (a report object or the HTTP push's JSON array,
raw or base64); `receipts.decode_mns_body` decodes both. An SNS notification envelope (an SNS topic
subscribed to the queue without raw message delivery) is unwrapped to its `Message` first.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

import structlog
from aiobotocore.session import AioSession

from fallback_daemon import config
from fallback_daemon.core import model, ports
from fallback_daemon.providers import aws

log = structlog.get_logger("fallback_daemon.providers.sqs")

MAX_MESSAGES = 10  # ReceiveMessage and DeleteMessageBatch take at most 10
MAX_WAIT_S = 20  # the longest long poll SQS allows


def queue_name(queue_url: str) -> str:
    """The last path segment of a queue URL (https://sqs.eu-west-1.amazonaws.com/123456789012/name)."""
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def unwrap_sns_envelope(body: str) -> str:
    """The `Message` of an SNS notification envelope; any other body unchanged."""
    if not body.lstrip().startswith("{") or '"TopicArn"' not in body:
        return body
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, dict) and value.get("Type") == "Notification":
        message = value.get("Message")
        if isinstance(message, str):
            return message
    return body


class SqsQueue:
    """One SQS queue carrying one kind of receipt (ChatAppStatus or SMS reports).

    :param client: an open aiobotocore SQS client (owned by the caller).
    :param queue_url: the queue's URL, as GetQueueUrl returns it.
    :param kind: what the messages carry.
    """

    source = "sqs"

    def __init__(self, client: Any, *, queue_url: str, kind: model.ReceiptKind) -> None:
        self._client = client
        self.queue_url = queue_url
        self.kind = kind
        self.name = queue_name(queue_url)

    async def receive(self, *, max_messages: int, wait_s: int) -> list[ports.QueueMessage]:
        """Long-poll for up to min(max_messages, 10) messages; [] when the queue stayed empty.

        Raises:
            errors.TransientError, errors.PermanentError
        """
        async with aws.map_errors(sent_is_ambiguous=False):
            response = await self._client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(MAX_MESSAGES, max_messages)),
                WaitTimeSeconds=max(0, min(MAX_WAIT_S, wait_s)),
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        return [
            ports.QueueMessage(
                handle=m["ReceiptHandle"],
                body=unwrap_sns_envelope(m.get("Body") or ""),
                message_id=m.get("MessageId") or "",
                dequeue_count=int((m.get("Attributes") or {}).get("ApproximateReceiveCount") or 1),
            )
            for m in response.get("Messages") or ()
        ]

    async def delete(self, handles: Sequence[str]) -> None:
        """DeleteMessageBatch in chunks of 10, after the batch was committed.

        Entries SQS refuses (typically an expired receipt handle) are logged with their codes and left:
        the message comes back after its visibility timeout and the receipt dedupe makes that harmless.

        Raises:
            errors.TransientError: SQS could not be reached (nothing is lost: the queue redelivers).
            errors.PermanentError: the whole call was refused (e.g. access denied, queue gone).
        """
        failed: list[dict[str, Any]] = []
        for start in range(0, len(handles), MAX_MESSAGES):
            chunk = handles[start : start + MAX_MESSAGES]
            async with aws.map_errors(sent_is_ambiguous=False):
                response = await self._client.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
                )
            failed.extend(response.get("Failed") or ())
        if failed:
            log.warning(
                "sqs_delete_partially_failed",
                queue=self.name,
                failed=len(failed),
                total=len(handles),
                codes=sorted({str(f.get("Code") or "") for f in failed}),
                sender_fault=any(bool(f.get("SenderFault")) for f in failed),
            )


async def open_queues(
    settings: config.Settings, *, stack: contextlib.AsyncExitStack, session: AioSession
) -> list[SqsQueue]:
    """The configured SQS receipt queues (none without a queue URL), sharing one client closed by `stack`."""
    wanted = [
        (url, kind)
        for url, kind in (
            (settings.sqs_chatapp_queue_url, model.ReceiptKind.CHATAPP),
            (settings.sqs_sms_queue_url, model.ReceiptKind.SMS),
        )
        if url
    ]
    if not wanted:
        return []
    client = await aws.open_client(
        stack,
        session,
        "sqs",
        region=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        # The read timeout must outlast the long poll; receive and delete are safe to repeat.
        config=aws.client_config(
            connect_timeout_s=5.0,
            read_timeout_s=settings.sqs_wait_s + 10.0,
            attempts=3,
            pool=settings.sqs_pollers * len(wanted) + 2,
        ),
    )
    return [SqsQueue(client, queue_url=url, kind=kind) for url, kind in wanted]
