"""The small Protocols the service layer sees; adapters in providers/ implement them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

from fallback_daemon import model


class ChatApi(Protocol):
    """CAMS SendChatappMessage."""

    async def send(self, *, task_id: str, params: Mapping[str, str]) -> str:
        """Send one message with our id as TaskId; return the provider MessageId.

        Raises:
            errors.TransientError, errors.PermanentError, errors.AmbiguousError
        """
        ...


class SmsGateway(Protocol):
    """An SMS provider for the fallback leg."""

    name: str

    async def send(self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]) -> str:
        """Send one SMS carrying our fallback id as its reference; return the provider's id.

        `text` is the resolved fallback text; template-based providers (SendSms) use `template_params`
        (the message's TemplateParams) instead.
        """
        ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class QueueMessage:
    """One message pulled from a receipt queue."""

    handle: str  # what delete() needs (MNS ReceiptHandle, SQS ReceiptHandle)
    body: str  # the body exactly as received (MNS: usually base64 of JSON)
    message_id: str = ""
    dequeue_count: int = 1


class ReceiptQueue(Protocol):
    """A queue of provider receipts (Alibaba MNS, AWS SQS)."""

    name: str  # e.g. the queue name, for logs, metrics and dead letters
    source: str  # "mns" | "sqs"
    kind: model.ReceiptKind  # what the messages carry

    async def receive(self, *, max_messages: int, wait_s: int) -> list[QueueMessage]:
        """Long-poll for up to max_messages; [] when the queue is empty (not an error)."""
        ...

    async def delete(self, handles: Sequence[str]) -> None:
        """Delete after commit. Raises errors.TransientError when the queue cannot be reached."""
        ...
