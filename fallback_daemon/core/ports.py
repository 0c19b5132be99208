"""The small Protocols the service layer sees; adapters in providers/ implement them."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from fallback_daemon.core import model

if TYPE_CHECKING:
    from fallback_daemon.engine.ingest import IngestResult


class LookupResult(enum.StrEnum):
    """What a provider query says about an ambiguous send (docs/reconciliation.md)."""

    FOUND = "found"  # the provider has it: go on with its id
    ABSENT = "absent"  # provably not sent: safe to send again
    UNKNOWN = "unknown"  # cannot tell (no query API, query failed, ambiguous match)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lookup:
    """The answer of `ChatApi.lookup` / `SmsGateway.lookup`; never raised, always returned."""

    result: LookupResult
    provider_id: str | None = None  # MessageId / BizId when found (None if the query API does not return it)
    status: str | None = None  # provider's status text when found
    detail: str = ""  # why (for the timeline), e.g. "ListChatappMessage: 0 of 3 candidates match"
    candidates: int = 0  # rows the query returned that could have been this send


class ChatApi(Protocol):
    """CAMS SendChatappMessage."""

    async def send(self, *, task_id: str, params: Mapping[str, str]) -> str:
        """Send one message with our id as TaskId; return the provider MessageId.

        Raises:
            errors.TransientError (errors.Throttled when throttled), errors.PermanentError,
            errors.AmbiguousError
        """
        ...

    async def lookup(
        self,
        *,
        task_id: str,
        params: Mapping[str, str],
        since: datetime,
        until: datetime,
        exclude_ids: Collection[str] = (),
    ) -> Lookup:
        """Was the send with this TaskId (params = the exact SendChatappMessage params we sent, see
        messages.params) written between since and until? Never raises for provider trouble: UNKNOWN.

        `exclude_ids` are MessageIds already known to belong to *other* messages (same To, same window):
        ListChatappMessage does not return the TaskId, so without them another message of ours to the same
        user could be taken for this one.
        """
        ...


class SmsGateway(Protocol):
    """An SMS provider for the fallback leg."""

    name: str

    def route(self, *, to: str, channel: str) -> SmsGateway:
        """The gateway that handles this number/channel (a router picks; a plain gateway returns itself)."""
        ...

    async def send(self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]) -> str:
        """Send one SMS carrying our fallback id as its reference; return the provider's id.

        `text` is the resolved fallback text; template-based providers (SendSms) use `template_params`
        (the message's TemplateParams) instead.
        """
        ...

    async def lookup(self, *, fallback_id: str, to: str, since: datetime, until: datetime) -> Lookup:
        """Did the SMS with this fallback id go out between since and until? Never raises: UNKNOWN."""
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


class RateLimit(Protocol):
    """Paced send slots shared by every replica (ratelimit.RateLimiter)."""

    def room(self) -> int: ...

    def wait_hint(self) -> float: ...

    async def reserve(self, count: int) -> list[float]: ...

    async def wait(self, slot: float, stop: asyncio.Event | None = None) -> float | None: ...


class EngineStore(Protocol):
    """The database as the engine's loops see it: claims, in-flight marks, retries, outcomes, recovery.

    Postgres implements it (`service.Service`, SQL in sql_files/queries/core.sql); the unit tests use an
    in-memory one (tests/unit/memstore.py). Every method raises errors.StoreError when the database fails.
    Outcomes go through `apply`, i.e. through `policy.decide`: the one write path of state changes.
    """

    async def apply(self, outcomes: Sequence[Any]) -> list[Any]: ...

    async def claim_sends(self, limit: int, lease_s: float) -> list[model.ClaimedSend]: ...

    async def mark_send_started(self, message_id: uuid.UUID, attempt: int) -> bool: ...

    async def mark_sends_started(self, sends: Sequence[model.ClaimedSend]) -> set[uuid.UUID]: ...

    async def retry_send(
        self, message_id: uuid.UUID, delay_s: float, error: str, attempt: int | None = None
    ) -> None: ...

    async def claim_due(self, limit: int, lease_s: float) -> list[model.FallbackSms]: ...

    async def claim_sms_retries(self, limit: int, lease_s: float) -> list[model.FallbackSms]: ...

    async def mark_sms_started(self, message_id: uuid.UUID, attempt: int) -> bool: ...

    async def mark_sms_batch_started(self, sms: Sequence[model.FallbackSms]) -> set[uuid.UUID]: ...

    async def sms_not_needed(self, message_id: uuid.UUID, attempt: int) -> bool: ...

    async def retry_sms(
        self, message_id: uuid.UUID, attempt: int, delay_s: float, error: str, provider: str
    ) -> None: ...

    async def next_due_in(self) -> float | None: ...

    async def recover_sends(self, limit: int) -> tuple[int, int]: ...

    async def claim_stale_firings(self, limit: int, lease_s: float) -> list[model.InFlightSms]: ...

    async def sms_absent(self, message_id: uuid.UUID, attempt: int, detail: str) -> None: ...

    async def interrupt_firing(
        self, message_id: uuid.UUID, *, resend: bool, lease_s: float, detail: str
    ) -> model.FallbackSms | None: ...

    async def claim_reconcile(self, limit: int, lease_s: float) -> list[model.AmbiguousSend]: ...

    async def reconcile_context(self, message_id: uuid.UUID, since: datetime) -> tuple[list[str], int]: ...

    async def reconcile_later(self, message_id: uuid.UUID, delay_s: float | None, detail: str) -> None: ...


class FeedClock:
    """When this process last saw a receipt per channel (Unix seconds): written by ingest, read by the gate.

    One instance is made by the composition root (app.py) and handed to both sides, so the gate does not
    reach into the service for it. Times only move forward: a late batch cannot make a feed look older.
    """

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def seen(self, channels: Iterable[str], at: float) -> None:
        for channel in channels:
            self._last[channel] = max(at, self._last.get(channel, at))

    def last(self, channel: str) -> float | None:
        return self._last.get(channel)

    def snapshot(self) -> dict[str, float]:
        """Every channel seen so far -> its last receipt time (a copy)."""
        return dict(self._last)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedStatus:
    """One channel as the gate sees it; times are Unix seconds from the store's clock."""

    channel: str
    now: float
    last_receipt: float | None  # the latest receipt any replica recorded for the channel
    earliest_unanswered: float | None  # the earliest send on the channel with no receipt since
    gate_closed: bool  # as last recorded


class GateStore(Protocol):
    """The receipt-feed health gate's database (health.PgGateStore; tests/unit/memstore.py in memory)."""

    async def record_receipts(self, seen: Mapping[str, float]) -> None:
        """Merge this replica's last receipt times (channel -> Unix seconds) into the shared ones."""
        ...

    async def feed_status(self, channels: Sequence[str]) -> list[FeedStatus]: ...

    async def set_gate(self, channel: str, closed: bool) -> None: ...


class RetentionStore(Protocol):
    """The retention loop's database (retention.PgRetentionStore)."""

    async def purge(self, what: str, window_s: float, batch: int) -> int:
        """Delete up to `batch` rows of kind `what` finished longer than `window_s` ago; how many went."""
        ...


class ReceiptSink(Protocol):
    """Where a queue consumer hands a pulled batch (`service.Service`): one transaction per batch."""

    async def ingest_queue_batch(
        self,
        kind: model.ReceiptKind,
        source: str,
        queue: str,
        chat: Sequence[model.ChatReceipt],
        sms: Sequence[model.SmsReceipt],
        dead: Sequence[tuple[str, str, str]],
    ) -> IngestResult:
        """Apply the receipts and store the dead letters (queue message id, body, error), then commit.

        Raises errors.StoreError when nothing was committed (the consumer then deletes nothing).
        """
        ...
