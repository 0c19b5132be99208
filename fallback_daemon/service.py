"""Use cases: accept messages, record send outcomes, ingest receipts, fire due fallbacks, recover.

Every state change goes through `policy.decide` and is written in one transaction with its event rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog

from fallback_daemon import errors, metrics, model, policy, sql, store
from fallback_daemon.model import ChatState, FallbackState

log = structlog.get_logger("fallback_daemon.service")
Q = sql.queries
NOTIFY_EVERY_S = 0.005  # accepts notify the senders at most this often (plus one trailing NOTIFY)
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
    id: uuid.UUID
    created: bool


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


def _state(row: Mapping[str, Any]) -> policy.State:
    return policy.State(
        chat=ChatState(row["chat_state"]),
        fallback=FallbackState(row["fallback_state"]),
        rule=model.Rule(row["fallback_rule"]),
        double_delivered=row["double_delivered"],
    )


def _event_name(event: policy.Event) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


class Service:
    def __init__(self, db: store.Store, *, sms_template: str | None = None, timer_scale: float = 1.0) -> None:
        self.db = db
        self.sms_template = sms_template
        self.timer_scale = timer_scale
        self.last_receipt: dict[
            str, float
        ] = {}  # channel -> unix time, flushed to feed_health by the gate loop
        self._notified_at = -1.0  # monotonic time of the last "new messages" NOTIFY sent by accept
        self._trailing: asyncio.Task[None] | None = None

    # ---- accept ---------------------------------------------------------------------------------------------
    def sms_text(self, req: model.SendRequest) -> str | None:
        if req.fallback_content:
            return req.fallback_content
        if self.sms_template:
            return fill_template(self.sms_template, req.template_params)
        return None

    async def accept(
        self, requests: Sequence[model.SendRequest], keys: Sequence[str | None]
    ) -> list[Accepted]:
        """Store messages durably (one transaction); a repeated idempotency key returns the original."""
        cols: list[list[Any]] = [[] for _ in range(11)]
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
            ]
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        # One statement (messages, their events and the NOTIFY) is one transaction and one round trip. A key
        # that conflicted belongs to a row that is committed by now (ON CONFLICT waits for its inserter).
        notify = self._notify_now()
        inserted = await self.db.fetch(Q["insert_messages"], *cols, store.CHANNEL_SEND if notify else None)
        if inserted and not notify:
            self._notify_soon()
        by_key = {r["idempotency_key"]: r["id"] for r in inserted if r["idempotency_key"] is not None}
        missing = [k for k in keys if k is not None and k not in by_key]
        existing = {}
        if missing:
            rows = await self.db.fetch(Q["messages_by_idempotency_keys"], missing)
            existing = {r["idempotency_key"]: r["id"] for r in rows}
        fresh = iter(r["id"] for r in inserted if r["idempotency_key"] is None)
        result = []
        for key in keys:
            if key is None:
                result.append(Accepted(id=next(fresh), created=True))
            elif key in by_key:
                result.append(Accepted(id=by_key[key], created=True))
            else:
                result.append(Accepted(id=existing[key], created=False))
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
        await self._write(conn, states, outcomes)
        if applied_ids:
            await conn.execute(Q["mark_receipts_applied"], applied_ids, applied_mids)
        result.applied = len(applied_ids)
        self._count_receipts(model.ReceiptKind.SMS, source, result)
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
    ) -> None:
        metrics.receipt_duplicates.labels(kind.value, source).inc(result.duplicates)
        metrics.receipts_parked.labels(kind.value).inc(max(0, result.parked))
        metrics.double_delivered.inc(result.double_delivered)
        now = time.time()
        for r in chat:
            metrics.receipts.labels(kind.value, source, r.raw_status).inc()
            if r.timestamp is not None:
                metrics.receipt_lag.labels(source).observe(max(0.0, now - r.timestamp.timestamp()))
        if result.channels:
            self.last_receipt.update(dict.fromkeys(result.channels, now))

    # ---- loops' database work ---------------------------------------------------------------------------
    async def claim_sends(self, limit: int, lease_s: float) -> list[asyncpg.Record]:
        return await self.db.fetch(Q["claim_sends"], limit, lease_s)

    async def retry_send(self, message_id: uuid.UUID, delay_s: float, error: str) -> None:
        await self.db.execute(Q["retry_send"], message_id, delay_s, error)

    async def claim_due(self, limit: int, lease_s: float) -> list[asyncpg.Record]:
        """The at-most-once transition armed → firing for due fallbacks, committed before any SMS call."""
        return await self.db.fetch(Q["claim_due_fallbacks"], limit, lease_s)

    async def next_due_in(self) -> float | None:
        return await self.db.fetchval(Q["next_due_in"])

    async def recover(self, *, limit: int, resend: bool, lease_s: float) -> list[asyncpg.Record]:
        """Sweep expired leases: sends become `unknown`; firings are parked or re-claimed for a resend."""
        async with self.db.transaction() as conn:
            stale_sends = [r["id"] for r in await conn.fetch(Q["stale_sends"], limit)]
            stale_firings = [r["id"] for r in await conn.fetch(Q["stale_firings"], limit)]
            ids = sorted({*stale_sends, *stale_firings})
            if not ids:
                return []
            rows = await conn.fetch(Q["lock_messages"], ids, [])
            states = {r["id"]: _state(r) for r in rows}
            outcomes = [
                Outcome(
                    message_id=m,
                    event=policy.SendUnknown(),
                    error="send lease expired (replica stopped mid-send)",
                )
                for m in stale_sends
            ] + [
                Outcome(
                    message_id=m,
                    event=policy.FiringInterrupted(resend=resend),
                    hold_reason=None if resend else "interrupted",
                    detail={"mode": "resend" if resend else "park"},
                )
                for m in stale_firings
            ]
            await self._write(conn, states, outcomes)
            resends = []
            if resend:
                for m in stale_firings:
                    row = await conn.fetchrow(Q["renew_firing"], m, lease_s)
                    if row is not None:
                        resends.append(row)
        return resends

    # ---- queries ----------------------------------------------------------------------------------------------
    async def get_message(self, message_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.db.fetchrow(Q["get_message"], message_id)
        if row is None:
            return None
        events = await self.db.fetch(Q["get_events"], message_id)
        return message_view(row, events)

    async def counts(self) -> list[asyncpg.Record]:
        return await self.db.fetch(Q["count_by_state"])


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


def message_view(row: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
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
