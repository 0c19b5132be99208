"""Use cases: accept messages, record send outcomes, ingest receipts, fire due fallbacks, recover.

Every state change goes through `policy.decide` and is written in one transaction with its event rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog

from fallback_daemon import errors, metrics, model, policy, sql, store
from fallback_daemon.model import ChatState, FallbackState

log = structlog.get_logger("fallback_daemon.service")
Q = sql.queries
NOTIFY_EVERY_S = 0.005  # accepts notify the senders at most this often (plus one trailing NOTIFY)
Row = Mapping[str, Any] | asyncpg.Record  # a driver row or a plain mapping (tests, views)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """One event for one message, with what it teaches us about provider ids."""

    message_id: uuid.UUID
    event: policy.Event
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    provider_message_id: str | None = None
    sms_provider_id: str | None = None
    error: str | None = None
    hold_reason: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Accepted:
    """One accepted message: new (`created`), or the one its idempotency key named, as it is now."""

    id: uuid.UUID
    created: bool
    chat_state: str = ChatState.ACCEPTED.value
    fallback_state: str | None = None


@dataclasses.dataclass(kw_only=True)
class IngestResult:
    received: int = 0
    duplicates: int = 0
    applied: int = 0
    parked: int = 0
    fired: int = 0
    double_delivered: int = 0
    channels: set[str] = dataclasses.field(default_factory=set)


def fill_template(template: str, params: Mapping[str, str]) -> str:
    """Replace {name} with TemplateParams[name] (missing names become empty); no format-string evaluation."""
    return _PLACEHOLDER.sub(lambda m: params.get(m.group(1), ""), template)


def _uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _state(row: Row) -> policy.State:
    return policy.State(
        chat=ChatState(row["chat_state"]),
        fallback=FallbackState(row["fallback_state"]),
        rule=model.Rule(row["fallback_rule"]),
        double_delivered=row["double_delivered"],
    )


def _event_name(event: policy.Event) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


class Service:
    def __init__(
        self,
        db: store.Store,
        *,
        sms_template: str | None = None,
        timer_scale: float = 1.0,
        reconcile_delay_s: float = 60.0,
    ) -> None:
        self.db = db
        self.reconcile_delay_s = (
            reconcile_delay_s  # first provider lookup of an ambiguous send, after its write
        )
        self.sms_template = sms_template
        self.timer_scale = timer_scale
        self.last_receipt: dict[
            str, float
        ] = {}  # channel -> unix time, flushed to feed_health by the gate loop
        self._notified_at = -1.0  # monotonic time of the last "new messages" NOTIFY sent by accept
        self._trailing: asyncio.Task[None] | None = None

    # ---- accept -------------------------------------------------------------------------------------------
    def sms_text(self, req: model.SendRequest) -> str | None:
        if req.fallback_content:
            return req.fallback_content
        if self.sms_template:
            return fill_template(self.sms_template, req.template_params)
        return None

    async def accept(
        self,
        requests: Sequence[model.SendRequest],
        keys: Sequence[str | None],
        *,
        request_hash: str | None = None,
    ) -> list[Accepted]:
        """Store messages durably (one transaction); a repeated idempotency key returns the original.

        Args:
            request_hash: digest of the request body (`validation.request_digest`), stored with each keyed
                row. A key already stored with another digest raises errors.IdempotencyMismatch, and nothing
                of this call is stored. A replay answers with the message's current state.
        """
        cols: list[list[Any]] = [[] for _ in range(12)]
        for req, key in zip(requests, keys, strict=True):
            text = self.sms_text(req)
            fb = policy.initial_fallback(has_sms=text is not None)
            timer = policy.timer_seconds(req.rule, req.duration_s)
            row = [
                key,
                req.channel,
                req.to,
                req.sender,
                req.client_task_id,
                dict(req.params),
                req.rule.value,
                req.duration_s,
                text,
                fb.value,
                None if timer is None else timer * self.timer_scale,
                None if key is None else request_hash,
            ]
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        # One statement (messages, their events and the NOTIFY) is one transaction and one round trip. A key
        # that conflicted belongs to a row that is committed by now (ON CONFLICT waits for its inserter). A
        # keyed batch runs in a transaction instead: if one of its keys turns out to belong to another
        # request, the items inserted beside it are rolled back with the refusal.
        channel = store.CHANNEL_SEND if self._notify_now() else None
        keyed = [k for k in keys if k is not None]
        if len(keyed) > 1:
            async with self.db.transaction() as conn:
                inserted = await conn.fetch(Q["insert_messages"], *cols, channel)
                existing = await _replayed(conn.fetch, inserted, keyed, request_hash)
        else:
            inserted = await self.db.fetch(Q["insert_messages"], *cols, channel)
            existing = await _replayed(self.db.fetch, inserted, keyed, request_hash)
        if inserted and channel is None:
            self._notify_soon()
        by_key = {r["idempotency_key"]: r for r in inserted if r["idempotency_key"] is not None}
        fresh = iter(r for r in inserted if r["idempotency_key"] is None)
        result = []
        for key in keys:
            new = next(fresh) if key is None else by_key.get(key)
            if new is not None:
                result.append(Accepted(id=new["id"], created=True, fallback_state=new["fallback_state"]))
            else:
                old = existing[str(key)]  # a key this call did not insert (None always inserts)
                result.append(
                    Accepted(
                        id=old["id"],
                        created=False,
                        chat_state=old["chat_state"],
                        fallback_state=old["fallback_state"],
                    )
                )
        return result

    def _notify_now(self) -> bool:
        """Whether this accept should NOTIFY the senders itself: at most once per NOTIFY_EVERY_S.

        A NOTIFY in every accept serialises their commits: Postgres takes one global lock per notifying commit
        and holds it through the WAL flush, which halved accept throughput (no group commit).
        """
        now = time.monotonic()
        if now - self._notified_at >= NOTIFY_EVERY_S:
            self._notified_at = now
            return True
        return False

    def _notify_soon(self) -> None:
        """Make sure a NOTIFY follows this (committed, not notified) accept within NOTIFY_EVERY_S."""
        if self._trailing is None:
            self._trailing = asyncio.create_task(self._trailing_notify(), name="accept-notify")

    async def _trailing_notify(self) -> None:
        await asyncio.sleep(max(0.0, self._notified_at + NOTIFY_EVERY_S - time.monotonic()))
        # Cleared before sending: an accept committing from now on schedules its own NOTIFY.
        self._trailing = None
        self._notified_at = time.monotonic()
        try:
            await self.db.execute("SELECT pg_notify($1, '')", store.CHANNEL_SEND)
        except errors.StoreError as exc:  # the senders' polling picks the messages up anyway
            log.warning("send_notify_failed", error=str(exc))

    # ---- generic application of outcomes ----------------------------------------------------------------
    async def apply(self, outcomes: Sequence[Outcome]) -> list[policy.Decision]:
        """Apply outcomes (send results, SMS results, operator actions) in one transaction."""
        if not outcomes:
            return []
        async with self.db.transaction() as conn:
            pids = sorted({o.provider_message_id for o in outcomes if o.provider_message_id})
            if pids:
                await conn.execute(Q["lock_provider_ids"], pids)
            ids = sorted({o.message_id for o in outcomes})
            rows = await conn.fetch(Q["lock_messages"], ids, [])
            states = {r["id"]: _state(r) for r in rows}
            known = {r["id"]: r["provider_message_id"] for r in rows}
            # Receipts that beat the send response and could not be matched by TaskId wait here.
            new_pids = {
                o.provider_message_id: o.message_id
                for o in outcomes
                if o.provider_message_id and known.get(o.message_id) is None
            }
            extra, parked_ids, parked_mids = await _unpark(conn, new_pids, set())
            decisions = await self._write(conn, states, [*outcomes, *extra])
            if parked_ids:
                await conn.execute(Q["mark_receipts_applied"], parked_ids, parked_mids)
        return decisions

    async def _write(
        self, conn: asyncpg.Connection, states: dict[uuid.UUID, policy.State], outcomes: Iterable[Outcome]
    ) -> list[policy.Decision]:
        """Decide each outcome in order against the evolving state, then write rows and events in batch."""
        final: dict[uuid.UUID, dict[str, Any]] = {}
        ev_ids: list[uuid.UUID] = []
        ev_kinds: list[str] = []
        ev_details: list[dict[str, Any]] = []
        decisions = []
        notify = False
        for o in outcomes:
            state = states.get(o.message_id)
            if state is None:
                continue
            d = policy.decide(state, o.event)
            decisions.append(d)
            acc = final.setdefault(
                o.message_id,
                {"fire": None, "dbl": False, "pid": None, "spid": None, "err": None, "hold": None},
            )
            acc["pid"] = acc["pid"] or o.provider_message_id
            acc["spid"] = acc["spid"] or o.sms_provider_id
            acc["err"] = o.error or acc["err"]
            acc["hold"] = o.hold_reason or acc["hold"]
            if d.fire_reason:
                acc["fire"] = d.fire_reason
                notify = True
            acc["dbl"] = acc["dbl"] or d.double_delivered
            states[o.message_id] = dataclasses.replace(
                state,
                chat=d.chat,
                fallback=d.fallback,
                double_delivered=state.double_delivered or d.double_delivered,
            )
            detail = {**o.detail, "outcome": d.outcome, "chat": d.chat.value, "fallback": d.fallback.value}
            if o.error:
                detail["error"] = o.error
            ev_ids.append(o.message_id)
            ev_kinds.append(_event_name(o.event))
            ev_details.append(detail)
            log.info("decision", message_id=str(o.message_id), kind=ev_kinds[-1], **detail)
        if final:
            mids = list(final)
            await conn.execute(
                Q["update_messages"],
                mids,
                [states[m].chat.value for m in mids],
                [states[m].fallback.value for m in mids],
                [final[m]["fire"] for m in mids],
                [final[m]["dbl"] for m in mids],
                [final[m]["pid"] for m in mids],
                [final[m]["err"] for m in mids],
                [final[m]["hold"] for m in mids],
                [final[m]["spid"] for m in mids],
                self.reconcile_delay_s,
            )
            await conn.execute(Q["insert_events"], ev_ids, ev_kinds, ev_details)
        if notify:
            await conn.execute("SELECT pg_notify($1, '')", store.CHANNEL_DUE)
        return decisions

    # ---- receipts -----------------------------------------------------------------------------------------
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
        await conn.execute(Q["lock_provider_ids"], sorted({r.message_id for r in receipts}))
        new = await conn.fetch(
            Q["insert_receipts"],
            model.ReceiptKind.CHATAPP.value,
            source,
            [k[0] for k in by_key],
            [k[1] for k in by_key],
            [r.task_id for r in by_key.values()],
            [dict(r.raw) for r in by_key.values()],
        )
        result.duplicates = len(receipts) - len(new)
        if not new:
            self._count_receipts(model.ReceiptKind.CHATAPP, source, result, receipts)
            return result
        task_ids = [u for r in new if (u := _uuid(r["task_id"])) is not None]
        rows = await conn.fetch(Q["lock_messages"], task_ids, [r["provider_id"] for r in new])
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
        decisions = await self._write(conn, states, outcomes)
        if applied_ids:
            await conn.execute(Q["mark_receipts_applied"], applied_ids, applied_mids)
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
        )
        result.duplicates = len(receipts) - len(new)
        ids = [u for r in new if (u := _uuid(r["task_id"])) is not None]
        rows = await conn.fetch(Q["lock_messages"], ids, []) if ids else []
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
                    },
                )
            )
            applied_ids.append(rec["id"])
            applied_mids.append(mid)
        decisions = await self._write(conn, states, outcomes)
        if applied_ids:
            await conn.execute(Q["mark_receipts_applied"], applied_ids, applied_mids)
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
        for r in chat:
            metrics.receipts.labels(kind.value, source, metrics.receipt_status(r.status.value)).inc()
            if r.timestamp is not None:
                metrics.receipt_lag.labels(source).observe(max(0.0, now - r.timestamp.timestamp()))
        for s in sms:  # SmsStatus delivered | failed | pending (in progress or unknown: `other`)
            metrics.receipts.labels(kind.value, source, metrics.receipt_status(s.status.value)).inc()
        for d in decisions:
            if d.outcome in ("sms_delivered", "sms_failed"):
                metrics.fallback_sms.labels(d.outcome.removeprefix("sms_")).inc()
        if result.channels:
            self.last_receipt.update(dict.fromkeys(result.channels, now))

    # ---- loops' database work ---------------------------------------------------------------------------
    # Each outbound call is a durable attempt: claimed (leased, fenced by its attempt count), then marked in
    # flight in its own commit just before the request is written (docs/architecture.md: the transitions).
    async def claim_sends(self, limit: int, lease_s: float) -> list[model.ClaimedSend]:
        rows = await self.db.fetch(Q["claim_sends"], limit, lease_s)
        return [model.ClaimedSend(id=r["id"], params=r["params"], attempt=r["send_attempts"]) for r in rows]

    async def mark_send_started(self, message_id: uuid.UUID, attempt: int) -> bool:
        """Record that the request is about to be written; False: the claim was lost, do not send."""
        return await self.db.fetchval(Q["mark_send_started"], message_id, attempt) is not None

    async def retry_send(
        self, message_id: uuid.UUID, delay_s: float, error: str, attempt: int | None = None
    ) -> None:
        await self.db.execute(Q["retry_send"], message_id, delay_s, error, attempt)

    async def claim_due(self, limit: int, lease_s: float) -> list[model.FallbackSms]:
        """The at-most-once transition armed → firing for due fallbacks, committed before any SMS call."""
        return [_fallback_sms(r) for r in await self.db.fetch(Q["claim_due_fallbacks"], limit, lease_s)]

    async def claim_sms_retries(self, limit: int, lease_s: float) -> list[model.FallbackSms]:
        """Firing fallbacks whose SMS is due again: a scheduled retry, or a claim that died before writing."""
        return [_fallback_sms(r) for r in await self.db.fetch(Q["claim_sms_retries"], limit, lease_s)]

    async def mark_sms_started(self, message_id: uuid.UUID, attempt: int) -> bool:
        return await self.db.fetchval(Q["mark_sms_started"], message_id, attempt) is not None

    async def sms_not_needed(self, message_id: uuid.UUID, attempt: int) -> bool:
        """This attempt's SMS was not written and the chat succeeded meanwhile: cancel it (SmsNotNeeded)."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(Q["lock_unstarted_firing"], message_id, attempt)
            if not rows:
                return False
            decisions = await self._write(
                conn,
                {r["id"]: _state(r) for r in rows},
                [Outcome(message_id=message_id, event=policy.SmsNotNeeded())],
            )
        return bool(decisions) and decisions[0].fallback is FallbackState.CANCELLED

    async def retry_sms(
        self, message_id: uuid.UUID, attempt: int, delay_s: float, error: str, provider: str
    ) -> None:
        await self.db.execute(Q["retry_sms"], message_id, attempt, delay_s, error, provider)

    async def next_due_in(self) -> float | None:
        seconds = await self.db.fetchval(Q["next_due_in"])
        return None if seconds is None else float(seconds)

    async def recover_sends(self, limit: int) -> tuple[int, int]:
        """Expired send leases: never written → sent again; written → `unknown` (then reconciled).

        Returns (requeued, unknown).
        """
        async with self.db.transaction() as conn:
            stale = await conn.fetch(Q["stale_sends"], limit)
            if not stale:
                return 0, 0
            rows = await conn.fetch(Q["lock_messages"], sorted(r["id"] for r in stale), [])
            states = {r["id"]: _state(r) for r in rows}
            outcomes = [
                Outcome(
                    message_id=r["id"],
                    event=policy.SendUnknown(),
                    error="send lease expired after the request was written",
                )
                if r["started"]
                else Outcome(
                    message_id=r["id"],
                    event=policy.SendRequeued(),
                    detail={"why": "send lease expired before the request was written"},
                )
                for r in stale
            ]
            await self._write(conn, states, outcomes)
        unknown = sum(1 for r in stale if r["started"])
        return len(stale) - unknown, unknown

    async def claim_stale_firings(self, limit: int, lease_s: float) -> list[model.InFlightSms]:
        """In-flight SMS whose outcome was never recorded (lease expired): re-leased for reconciliation."""
        rows = await self.db.fetch(Q["claim_stale_firings"], limit, lease_s)
        return [
            model.InFlightSms(
                id=r["id"],
                to=r["to_number"],
                channel=r["channel"] or "",
                started_at=r["sms_started_at"],
                attempt=r["sms_attempts"],
            )
            for r in rows
        ]

    async def sms_absent(self, message_id: uuid.UUID, attempt: int, detail: str) -> None:
        await self.db.execute(Q["sms_absent"], message_id, attempt, detail)

    async def interrupt_firing(
        self, message_id: uuid.UUID, *, resend: bool, lease_s: float, detail: str
    ) -> model.FallbackSms | None:
        """Undecidable in-flight SMS: park it (at most once) or re-lease it for one more (at least once)."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(Q["lock_messages"], [message_id], [])
            states = {r["id"]: _state(r) for r in rows}
            outcome = Outcome(
                message_id=message_id,
                event=policy.FiringInterrupted(resend=resend),
                hold_reason=None if resend else "sms_unknown",
                detail={"mode": "resend" if resend else "park", "lookup": detail},
            )
            decisions = await self._write(conn, states, [outcome])
            if resend and decisions and decisions[0].fallback is FallbackState.FIRING:
                row = await conn.fetchrow(Q["renew_firing"], message_id, lease_s)
                return None if row is None else _fallback_sms(row)
        return None

    async def claim_reconcile(self, limit: int, lease_s: float) -> list[model.AmbiguousSend]:
        """Ambiguous chat sends whose next provider lookup is due (leased to this replica)."""
        rows = await self.db.fetch(Q["claim_reconcile"], limit, lease_s)
        return [
            model.AmbiguousSend(
                id=r["id"],
                params=r["params"],
                started_at=r["send_started_at"] or r["created_at"],
                lookups=r["reconcile_attempts"],
            )
            for r in rows
        ]

    async def reconcile_context(self, message_id: uuid.UUID, since: Any) -> tuple[list[str], int]:
        """(MessageIds of our other messages to the number since `since`, other ambiguous sends to it)."""
        row = await self.db.fetchrow(Q["reconcile_context"], message_id, since)
        if row is None:
            return [], 0
        return list(row["known"]), int(row["ambiguous_peers"])

    async def reconcile_later(self, message_id: uuid.UUID, delay_s: float | None, detail: str) -> None:
        await self.db.execute(Q["reconcile_later"], message_id, delay_s, detail)

    # ---- queries ------------------------------------------------------------------------------------------
    async def get_message(self, message_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.db.fetchrow(Q["get_message"], message_id)
        if row is None:
            return None
        events = await self.db.fetch(Q["get_events"], message_id)
        return message_view(row, events)

    async def counts(self) -> list[asyncpg.Record]:
        return await self.db.fetch(Q["count_by_state"])


async def _replayed(
    fetch: Callable[..., Awaitable[list[asyncpg.Record]]],
    inserted: Sequence[asyncpg.Record],
    keys: Sequence[str],
    request_hash: str | None,
) -> dict[str, asyncpg.Record]:
    """The stored rows of the keys this accept did not insert; refuses a key stored for another request."""
    done = {r["idempotency_key"] for r in inserted}
    missing = [k for k in keys if k not in done]
    if not missing:
        return {}
    rows = {r["idempotency_key"]: r for r in await fetch(Q["messages_by_idempotency_keys"], missing)}
    for key in missing:
        stored = rows[key]["request_hash"]
        if request_hash is not None and stored is not None and stored != request_hash:
            raise errors.IdempotencyMismatch(
                f"Idempotency-Key was first used with a different request body (message {rows[key]['id']});"
                " send a new request with a new key"
            )
    return rows


def _template_params(raw: str | None) -> dict[str, str]:
    """The message's TemplateParams (stored as the JSON string sent to CAMS), for template SMS providers."""
    if not raw:
        return {}
    value = json.loads(raw)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _fallback_sms(r: Row) -> model.FallbackSms:
    return model.FallbackSms(
        id=r["id"],
        to=r["to_number"],
        channel=r["channel"] or "",
        text=r["sms_text"] or "",
        template_params=_template_params(r["template_params"]),
        fire_reason=r["fire_reason"],
        attempt=r["sms_attempts"],
        firing_age_s=float(r["firing_age_s"] or 0.0),
        held=r["fallback_state"] == "held",
        hold_reason=r["hold_reason"],
        lateness_s=r["lateness_s"],
    )


async def _unpark(
    conn: asyncpg.Connection, pid_to_mid: Mapping[str, uuid.UUID], exclude: set[int]
) -> tuple[list[Outcome], list[int], list[uuid.UUID]]:
    """Outcomes for receipts parked under provider ids that just became known (caller holds their locks)."""
    outcomes: list[Outcome] = []
    ids: list[int] = []
    mids: list[uuid.UUID] = []
    if not pid_to_mid:
        return outcomes, ids, mids
    for r in await conn.fetch(Q["lock_parked_receipts"], list(pid_to_mid)):
        if r["id"] in exclude:
            continue
        mid = pid_to_mid[r["provider_id"]]
        ids.append(r["id"])
        mids.append(mid)
        outcomes.append(
            Outcome(
                message_id=mid,
                event=policy.ChatReceipt(_receipt_status(r["status"])),
                detail={"status": r["status"], "receipt_id": r["id"], "parked": True},
            )
        )
    return outcomes, ids, mids


def _status_key(r: model.ChatReceipt) -> str:
    return r.status.value if r.status is not model.ReceiptStatus.OTHER else r.raw_status


def _receipt_status(key: str) -> model.ReceiptStatus:
    try:
        return model.ReceiptStatus(key)
    except ValueError:
        return model.ReceiptStatus.OTHER


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def message_view(row: Row, events: Iterable[Row]) -> dict[str, Any]:
    """The JSON shape of GET /v1/messages/{id}."""
    return {
        "id": str(row["id"]),
        "channel": row["channel"],
        "to": row["to_number"],
        "from": row["from_number"],
        "task_id": row["client_task_id"],
        "chat_state": row["chat_state"],
        "fallback_state": row["fallback_state"],
        "fallback_rule": row["fallback_rule"],
        "fallback_duration_s": row["fallback_duration_s"],
        "provider_message_id": row["provider_message_id"],
        "sms_id": row["sms_provider_id"],
        "due_at": _iso(row["due_at"]),
        "fire_reason": row["fire_reason"],
        "hold_reason": row["hold_reason"],
        "double_delivered": row["double_delivered"],
        "send_attempts": row["send_attempts"],
        "last_error": row["last_error"],
        "created_at": _iso(row["created_at"]),
        "sent_at": _iso(row["sent_at"]),
        "fired_at": _iso(row["fired_at"]),
        "updated_at": _iso(row["updated_at"]),
        "events": [{"at": _iso(e["at"]), "kind": e["kind"], **e["detail"]} for e in events],
    }
