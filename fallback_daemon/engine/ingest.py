"""Receipts in: stored raw (deduplicated), matched by TaskId or MessageId, parked or applied; one commit."""

from __future__ import annotations

import collections
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg
import structlog

from fallback_daemon import metrics
from fallback_daemon.core import errorclasses, model, policy, ports
from fallback_daemon.db import sql
from fallback_daemon.engine.groupcommit import GroupCommit
from fallback_daemon.engine.outcomes import Outcome, Outcomes, _state, _unpark

log = structlog.get_logger("fallback_daemon.engine.service")
Q = sql.queries
R = TypeVar("R", model.ChatReceipt, model.SmsReceipt)


@dataclasses.dataclass(kw_only=True)
class IngestResult:
    received: int = 0
    duplicates: int = 0
    applied: int = 0
    parked: int = 0
    fired: int = 0
    double_delivered: int = 0
    channels: set[str] = dataclasses.field(default_factory=set)
    requests: int = 1  # the HTTP pushes written together in this transaction (engine/groupcommit.py)


def _uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class Ingest(Outcomes):
    """HTTP, MNS and SQS receipts go through here (and only here) to the write path."""

    feed: ports.FeedClock  # when receipts were last seen per channel; the feed gate reads it
    _chat_pushes: dict[str, GroupCommit[model.ChatReceipt, IngestResult]]  # by source
    _sms_pushes: dict[str, GroupCommit[model.SmsReceipt, IngestResult]]

    async def push_chat(self, receipts: Sequence[model.ChatReceipt], source: str) -> IngestResult:
        """An HTTP push: written with the pushes that arrive while another is written (group commit).

        Returns the result of the whole group (`requests` callers); it is logged once, in `_grouped`.
        """
        if not receipts:
            return IngestResult()
        group = self._chat_pushes.get(source)
        if group is None:
            group = self._chat_pushes[source] = _grouped("chatapp", source, self.ingest_chat)
        return await group.submit(receipts)

    async def push_sms(self, receipts: Sequence[model.SmsReceipt], source: str) -> IngestResult:
        """push_chat for SMS reports."""
        if not receipts:
            return IngestResult()
        group = self._sms_pushes.get(source)
        if group is None:
            group = self._sms_pushes[source] = _grouped("sms", source, self.ingest_sms)
        return await group.submit(receipts)

    async def ingest_chat(self, receipts: Sequence[model.ChatReceipt], source: str) -> IngestResult:
        """Store raw receipts (deduplicated), then apply the new ones; all in one transaction."""
        if not receipts:
            return IngestResult()
        async with self.db.transaction() as conn:
            return await self.ingest_chat_in(conn, receipts, source)

    async def ingest_chat_in(
        self, conn: asyncpg.Connection, receipts: Sequence[model.ChatReceipt], source: str
    ) -> IngestResult:
        """ingest_chat inside the caller's transaction."""
        result = IngestResult(received=len(receipts))
        by_key = {(r.message_id, _status_key(r)): r for r in receipts}
        # The provider-id advisory locks (docs/architecture.md) are taken by the insert, before its first row.
        new = await conn.fetch(
            Q["insert_receipts"],
            model.ReceiptKind.CHATAPP.value,
            source,
            [k[0] for k in by_key],
            [k[1] for k in by_key],
            [r.task_id for r in by_key.values()],
            [dict(r.raw) for r in by_key.values()],
            True,
        )
        result.duplicates = len(receipts) - len(new)
        if not new:
            self._count_receipts(model.ReceiptKind.CHATAPP, source, result, receipts)
            return result
        task_ids = [u for r in new if (u := _uuid(r["task_id"])) is not None]
        rows = await conn.fetch(Q["lock_messages"], task_ids, [r["provider_id"] for r in new], None)
        states = {r["id"]: _state(r) for r in rows}
        rows_by_id = {r["id"]: r for r in rows}
        by_pid = {r["provider_message_id"]: r["id"] for r in rows if r["provider_message_id"]}
        known_pid = {r["id"]: r["provider_message_id"] for r in rows}
        outcomes: list[Outcome] = []
        applied_ids: list[int] = []
        applied_mids: list[uuid.UUID] = []
        for rec in new:
            tid = _uuid(rec["task_id"])
            mid = tid if tid in states else by_pid.get(rec["provider_id"])
            if mid is None:
                continue
            r = by_key[(rec["provider_id"], rec["status"])]
            pid = rec["provider_id"] if known_pid.get(mid) is None else None
            if pid:
                known_pid[mid] = pid
            outcomes.append(
                Outcome(
                    message_id=mid,
                    event=policy.ChatReceipt(r.status),
                    provider_message_id=pid,
                    detail={
                        "status": r.raw_status,
                        "source": source,
                        "receipt_id": rec["id"],
                        "error_code": r.error_code,
                        "timestamp": r.timestamp.isoformat() if r.timestamp else None,
                    },
                )
            )
            applied_ids.append(rec["id"])
            applied_mids.append(mid)
        # Invariant: whoever records a provider MessageId applies the receipts parked under it.
        newly_known = {o.provider_message_id: o.message_id for o in outcomes if o.provider_message_id}
        extra, parked_ids, parked_mids = await _unpark(conn, newly_known, set(applied_ids))
        outcomes.extend(extra)
        applied_ids.extend(parked_ids)
        applied_mids.extend(parked_mids)
        result.parked = len({r["id"] for r in new} - set(applied_ids))
        decisions = await self._write(conn, states, outcomes, (applied_ids, applied_mids))
        result.applied = len(applied_ids)
        result.fired = sum(1 for d in decisions if d.fire_reason)
        result.double_delivered = sum(1 for d in decisions if d.double_delivered)
        result.channels = {rows_by_id[m]["channel"] for m in applied_mids if m in rows_by_id}
        self._count_receipts(model.ReceiptKind.CHATAPP, source, result, receipts)
        return result

    async def ingest_sms(self, receipts: Sequence[model.SmsReceipt], source: str) -> IngestResult:
        """SMS reports update the fallback leg; they match by our fallback id (= message id)."""
        if not receipts:
            return IngestResult()
        async with self.db.transaction() as conn:
            return await self.ingest_sms_in(conn, receipts, source)

    async def ingest_sms_in(
        self, conn: asyncpg.Connection, receipts: Sequence[model.SmsReceipt], source: str
    ) -> IngestResult:
        """ingest_sms inside the caller's transaction."""
        result = IngestResult(received=len(receipts))
        by_key = {(r.provider_id, r.raw_status): r for r in receipts}
        new = await conn.fetch(
            Q["insert_receipts"],
            model.ReceiptKind.SMS.value,
            source,
            [k[0] for k in by_key],
            [k[1] for k in by_key],
            [r.fallback_id for r in by_key.values()],
            [dict(r.raw) for r in by_key.values()],
            False,
        )
        result.duplicates = len(receipts) - len(new)
        ids = [u for r in new if (u := _uuid(r["task_id"])) is not None]
        rows = await conn.fetch(Q["lock_messages"], ids, [], None) if ids else []
        states = {r["id"]: _state(r) for r in rows}
        outcomes = []
        applied_ids: list[int] = []
        applied_mids: list[uuid.UUID] = []
        for rec in new:
            mid = _uuid(rec["task_id"])
            if mid not in states:
                result.parked += 1
                continue
            assert mid is not None
            r = by_key[(rec["provider_id"], rec["status"])]
            outcomes.append(
                Outcome(
                    message_id=mid,
                    event=policy.SmsReceipt(r.status),
                    sms_provider_id=r.provider_id,
                    detail={
                        "sms_status": r.raw_status,
                        "source": source,
                        "receipt_id": rec["id"],
                        "error_code": r.error_code,
                        # An opt-out report adds the number to the list (a trigger, same transaction).
                        **({"error_class": "opted_out"} if errorclasses.sms_opted_out(r.error_code) else {}),
                    },
                )
            )
            applied_ids.append(rec["id"])
            applied_mids.append(mid)
        decisions = await self._write(conn, states, outcomes, (applied_ids, applied_mids))
        result.applied = len(applied_ids)
        self._count_receipts(model.ReceiptKind.SMS, source, result, sms=receipts, decisions=decisions)
        return result

    async def ingest_queue_batch(
        self,
        kind: model.ReceiptKind,
        source: str,
        queue: str,
        chat: Sequence[model.ChatReceipt],
        sms: Sequence[model.SmsReceipt],
        dead: Sequence[tuple[str, str, str]],
    ) -> IngestResult:
        """One queue batch in one transaction: receipts applied and unparseable bodies dead-lettered.

        Args:
            dead: (queue message id, raw body, error) for each message that could not be parsed.
        """
        async with self.db.transaction() as conn:
            result = IngestResult()
            if chat:
                result = await self.ingest_chat_in(conn, chat, source)
            if sms:
                r2 = await self.ingest_sms_in(conn, sms, source)
                result.received += r2.received
                result.duplicates += r2.duplicates
                result.applied += r2.applied
                result.parked += r2.parked
            if dead:
                await conn.execute(
                    Q["insert_dead_letters"],
                    source,
                    queue,
                    kind.value,
                    [d[0] for d in dead],
                    [d[1] for d in dead],
                    [d[2] for d in dead],
                )
                metrics.dead_letters.labels(source).inc(len(dead))
            return result

    def _count_receipts(
        self,
        kind: model.ReceiptKind,
        source: str,
        result: IngestResult,
        chat: Sequence[model.ChatReceipt] = (),
        sms: Sequence[model.SmsReceipt] = (),
        decisions: Sequence[policy.Decision] = (),
    ) -> None:
        """Receipt metrics: every receipt received by its (closed-set) status; SMS outcomes from decisions.

        `fallback_sms_total{outcome=delivered|failed}` counts the SMS legs a receipt moved (a duplicate or a
        stale report moves none), so it agrees with the `sms_delivered`/`sms_failed` fallback states.
        """
        metrics.receipt_duplicates.labels(kind.value, source).inc(result.duplicates)
        metrics.receipts_parked.labels(kind.value).inc(max(0, result.parked))
        metrics.double_delivered.inc(result.double_delivered)
        now = time.time()
        # Counted per status, then one labelled child per status: `labels()` per receipt was ~5 % of the CPU
        # of a 100-receipt push.
        statuses = collections.Counter(r.status.value for r in chat)
        statuses.update(s.status.value for s in sms)  # SmsStatus delivered | failed | pending (`other`)
        for status, n in statuses.items():
            metrics.receipts.labels(kind.value, source, metrics.receipt_status(status)).inc(n)
        if chat:
            lag = metrics.receipt_lag.labels(source)
            for r in chat:
                if r.timestamp is not None:
                    lag.observe(max(0.0, now - r.timestamp.timestamp()))
        for d in decisions:
            if d.outcome in ("sms_delivered", "sms_failed"):
                metrics.fallback_sms.labels(d.outcome.removeprefix("sms_")).inc()
        if result.channels:
            self.feed.seen(result.channels, now)


def _grouped(
    kind: str, source: str, ingest: Callable[[Sequence[R], str], Awaitable[IngestResult]]
) -> GroupCommit[R, IngestResult]:
    """The group commit of one kind of push from one source: the callers' receipts in one `ingest` call."""

    async def apply(parts: list[Sequence[R]]) -> list[IngestResult]:
        result = await ingest([r for p in parts for r in p], source)
        result.requests = len(parts)
        log.info("receipts_ingested", kind=kind, **vars(result))
        return [result] * len(parts)

    return GroupCommit(apply, name=f"{kind}-{source}")


def _status_key(r: model.ChatReceipt) -> str:
    return r.status.value if r.status is not model.ReceiptStatus.OTHER else r.raw_status
