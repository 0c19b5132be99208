"""An in-memory `ports.EngineStore` with a fake clock, for unit tests of the loops; below it the in-memory
`ports.GateStore` (`MemoryGate`) and `ports.RetentionStore` (`MemoryRetention`) on the same kind of clock.

It follows the same rules as the Postgres implementation (`service.Service` + sql_files/queries/core.sql):
state changes of outcomes go through `policy.decide`; claims, in-flight marks, retries and leases are the
rows' fields below. `tests/integration/test_store_contract.py` runs the same scenarios against both stores,
so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fallback_daemon.core import errors, model, policy, ports
from fallback_daemon.core.model import ChatState as C
from fallback_daemon.core.model import FallbackState as F
from fallback_daemon.engine import service

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def at(self, t: float) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=t)


@dataclasses.dataclass
class Row:
    id: uuid.UUID
    to: str = "6591234567"
    channel: str = "whatsapp"
    params: dict[str, str] = dataclasses.field(default_factory=lambda: {"To": "6591234567"})
    rule: model.Rule = model.Rule.UNDELIVERED
    sms_text: str = "hello by sms"
    chat: C = C.ACCEPTED
    fallback: F = F.ARMED
    double_delivered: bool = False
    provider_id: str | None = None
    sms_id: str | None = None
    send_attempts: int = 0
    next_attempt_at: float = 0.0
    send_lease_until: float | None = None
    send_started_at: float | None = None
    due_at: float | None = None
    fire_reason: str | None = None
    hold_reason: str | None = None
    fire_lease_until: float | None = None
    fired_at: float | None = None
    sms_attempts: int = 0
    sms_started_at: float | None = None
    reconcile_at: float | None = None
    reconcile_attempts: int = 0
    last_error: str | None = None
    events: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)


class MemoryStore:
    def __init__(self, clock: FakeClock | None = None, *, reconcile_delay_s: float = 60.0) -> None:
        self.clock = clock or FakeClock()
        self.rows: dict[uuid.UUID, Row] = {}
        self.reconcile_delay_s = reconcile_delay_s
        self.down = False  # True: every call raises StoreError (the database is away)

    # ---- test helpers ----------------------------------------------------------------------------------
    def add(self, **fields: Any) -> Row:
        row = Row(id=uuid.uuid4(), **fields)
        self.rows[row.id] = row
        return row

    def kinds(self, mid: uuid.UUID) -> list[str]:
        return [k for k, _ in self.rows[mid].events]

    def _check(self) -> float:
        if self.down:
            raise errors.StoreError("database error: ConnectionRefusedError")
        return self.clock.now

    # ---- the port --------------------------------------------------------------------------------------
    async def apply(self, outcomes: Sequence[service.Outcome]) -> list[policy.Decision]:
        now = self._check()
        decisions = []
        for o in outcomes:
            r = self.rows.get(o.message_id)
            if r is None:
                continue
            state = policy.State(
                chat=r.chat, fallback=r.fallback, rule=r.rule, double_delivered=r.double_delivered
            )
            d = policy.decide(state, o.event)
            decisions.append(d)
            before = r.chat
            r.chat, r.fallback = d.chat, d.fallback
            r.double_delivered = (r.double_delivered or d.double_delivered) and r.fallback is not F.CANCELLED
            r.provider_id = r.provider_id or o.provider_message_id
            r.sms_id = r.sms_id or o.sms_provider_id
            r.last_error = o.error or r.last_error
            if d.fire_reason:
                r.fire_reason, r.due_at = d.fire_reason, now
            elif r.fallback is not F.ARMED:
                r.due_at = None
            r.hold_reason = (o.hold_reason or r.hold_reason) if r.fallback is F.HELD else None
            if r.chat is not C.SENDING:
                r.send_lease_until = None
            if r.chat not in (C.SENDING, C.UNKNOWN):
                r.send_started_at = None
            if r.chat is not C.UNKNOWN:
                r.reconcile_at, r.reconcile_attempts = None, 0
            elif before is not C.UNKNOWN:
                r.reconcile_at = (
                    r.send_started_at if r.send_started_at is not None else now
                ) + self.reconcile_delay_s
            if r.fallback is not F.FIRING:
                r.fire_lease_until = r.sms_started_at = None
            name = type(o.event).__name__
            r.events.append(
                (
                    "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_"),
                    {**o.detail, "outcome": d.outcome},
                )
            )
        await asyncio.sleep(0)
        return decisions

    async def claim_sends(self, limit: int, lease_s: float) -> list[model.ClaimedSend]:
        now = self._check()
        due = sorted(
            (r for r in self.rows.values() if r.chat is C.ACCEPTED and r.next_attempt_at <= now),
            key=lambda r: r.next_attempt_at,
        )[:limit]
        for r in due:
            r.chat, r.send_attempts, r.send_started_at = C.SENDING, r.send_attempts + 1, None
            r.send_lease_until = now + lease_s
        return [model.ClaimedSend(id=r.id, params=r.params, attempt=r.send_attempts) for r in due]

    async def mark_send_started(self, message_id: uuid.UUID, attempt: int) -> bool:
        now = self._check()
        r = self.rows[message_id]
        if r.chat is C.SENDING and r.send_attempts == attempt and (r.send_lease_until or 0) > now:
            r.send_started_at = now
            return True
        return False

    async def mark_sends_started(self, sends: Sequence[model.ClaimedSend]) -> set[uuid.UUID]:
        return {s.id for s in sends if await self.mark_send_started(s.id, s.attempt)}

    async def retry_send(
        self, message_id: uuid.UUID, delay_s: float, error: str, attempt: int | None = None
    ) -> None:
        now = self._check()
        r = self.rows[message_id]
        if r.chat is C.SENDING and (attempt is None or r.send_attempts == attempt):
            r.chat, r.next_attempt_at, r.last_error = C.ACCEPTED, now + delay_s, error
            r.send_lease_until = r.send_started_at = None
            r.events.append(("send_retry", {"error": error}))

    def _fallback(self, r: Row, *, lateness: float | None = None) -> model.FallbackSms:
        return model.FallbackSms(
            id=r.id,
            to=r.to,
            channel=r.channel,
            text=r.sms_text,
            template_params={},
            fire_reason=r.fire_reason,
            attempt=r.sms_attempts,
            firing_age_s=0.0 if r.fired_at is None else self.clock.now - r.fired_at,
            held=r.fallback is F.HELD,
            hold_reason=r.hold_reason,
            lateness_s=lateness,
        )

    async def claim_due(self, limit: int, lease_s: float) -> list[model.FallbackSms]:
        now = self._check()
        due = sorted(
            (
                r
                for r in self.rows.values()
                if r.fallback is F.ARMED and r.due_at is not None and r.due_at <= now
            ),
            key=lambda r: r.due_at or 0.0,
        )[:limit]
        out = []
        for r in due:
            lateness = now - (r.due_at or now)
            r.fallback, r.fire_reason, r.fired_at = F.FIRING, r.fire_reason or "timeout", now
            r.fire_lease_until, r.sms_attempts, r.sms_started_at = now + lease_s, r.sms_attempts + 1, None
            r.events.append(("fallback_fired", {"reason": r.fire_reason}))
            out.append(self._fallback(r, lateness=lateness))
        return out

    async def claim_sms_retries(self, limit: int, lease_s: float) -> list[model.FallbackSms]:
        now = self._check()
        due = [
            r
            for r in self.rows.values()
            if r.fallback is F.FIRING and r.sms_started_at is None and (r.fire_lease_until or 0) <= now
        ][:limit]
        for r in due:
            r.fire_lease_until, r.sms_attempts = now + lease_s, r.sms_attempts + 1
        return [self._fallback(r) for r in due]

    async def mark_sms_started(self, message_id: uuid.UUID, attempt: int) -> bool:
        now = self._check()
        r = self.rows[message_id]
        if (
            r.fallback is F.FIRING
            and r.sms_attempts == attempt
            and r.sms_started_at is None
            and (r.fire_lease_until or 0) > now
            and not policy.is_success(r.rule, r.chat)
        ):
            r.sms_started_at = now
            return True
        return False

    async def mark_sms_batch_started(self, sms: Sequence[model.FallbackSms]) -> set[uuid.UUID]:
        return {s.id for s in sms if await self.mark_sms_started(s.id, s.attempt)}

    async def sms_not_needed(self, message_id: uuid.UUID, attempt: int) -> bool:
        self._check()
        r = self.rows[message_id]
        if not (r.fallback is F.FIRING and r.sms_attempts == attempt and r.sms_started_at is None):
            return False
        [d] = await self.apply([service.Outcome(message_id=message_id, event=policy.SmsNotNeeded())])
        return d.fallback is F.CANCELLED

    async def retry_sms(
        self, message_id: uuid.UUID, attempt: int, delay_s: float, error: str, provider: str
    ) -> None:
        now = self._check()
        r = self.rows[message_id]
        if r.fallback is F.FIRING and r.sms_attempts == attempt:
            r.sms_started_at, r.fire_lease_until = None, now + delay_s
            r.events.append(("sms_retry", {"error": error, "provider": provider}))

    async def next_due_in(self) -> float | None:
        now = self._check()
        times = [r.due_at for r in self.rows.values() if r.fallback is F.ARMED and r.due_at is not None]
        times += [
            r.fire_lease_until
            for r in self.rows.values()
            if r.fallback is F.FIRING and r.sms_started_at is None and r.fire_lease_until is not None
        ]
        return min(times) - now if times else None

    async def recover_sends(self, limit: int) -> tuple[int, int]:
        now = self._check()
        stale = [r for r in self.rows.values() if r.chat is C.SENDING and (r.send_lease_until or 0) < now][
            :limit
        ]
        outcomes = [
            service.Outcome(
                message_id=r.id,
                event=policy.SendUnknown() if r.send_started_at is not None else policy.SendRequeued(),
            )
            for r in stale
        ]
        unknown = sum(1 for r in stale if r.send_started_at is not None)
        await self.apply(outcomes)
        return len(stale) - unknown, unknown

    async def claim_stale_firings(self, limit: int, lease_s: float) -> list[model.InFlightSms]:
        now = self._check()
        stale = [
            r
            for r in self.rows.values()
            if r.fallback is F.FIRING and r.sms_started_at is not None and (r.fire_lease_until or 0) < now
        ][:limit]
        for r in stale:
            r.fire_lease_until = now + lease_s
        return [
            model.InFlightSms(
                id=r.id,
                to=r.to,
                channel=r.channel,
                started_at=self.clock.at(r.sms_started_at or 0),
                attempt=r.sms_attempts,
            )
            for r in stale
        ]

    async def sms_absent(self, message_id: uuid.UUID, attempt: int, detail: str) -> None:
        now = self._check()
        r = self.rows[message_id]
        if r.fallback is F.FIRING and r.sms_attempts == attempt and r.sms_started_at is not None:
            r.sms_started_at, r.fire_lease_until = None, now
            r.events.append(("sms_reconciled_absent", {"detail": detail}))

    async def interrupt_firing(
        self, message_id: uuid.UUID, *, resend: bool, lease_s: float, detail: str
    ) -> model.FallbackSms | None:
        now = self._check()
        outcome = service.Outcome(
            message_id=message_id,
            event=policy.FiringInterrupted(resend=resend),
            hold_reason=None if resend else "sms_unknown",
        )
        decisions = await self.apply([outcome])
        if resend and decisions and decisions[0].fallback is F.FIRING:
            r = self.rows[message_id]
            r.fire_lease_until, r.sms_attempts, r.sms_started_at = now + lease_s, r.sms_attempts + 1, None
            return self._fallback(r)
        return None

    async def claim_reconcile(self, limit: int, lease_s: float) -> list[model.AmbiguousSend]:
        now = self._check()
        due = [
            r
            for r in self.rows.values()
            if r.chat is C.UNKNOWN and r.reconcile_at is not None and r.reconcile_at <= now
        ][:limit]
        for r in due:
            r.reconcile_at, r.reconcile_attempts = now + lease_s, r.reconcile_attempts + 1
        return [
            model.AmbiguousSend(
                id=r.id,
                params=r.params,
                started_at=self.clock.at(r.send_started_at or 0),
                lookups=r.reconcile_attempts,
            )
            for r in due
        ]

    async def reconcile_context(self, message_id: uuid.UUID, since: dt.datetime) -> tuple[list[str], int]:
        self._check()
        me = self.rows[message_id]
        others = [r for r in self.rows.values() if r.id != message_id and r.to == me.to]
        known = [r.provider_id for r in others if r.provider_id]
        peers = sum(1 for r in others if r.provider_id is None and r.send_started_at is not None)
        return known, peers

    async def reconcile_later(self, message_id: uuid.UUID, delay_s: float | None, detail: str) -> None:
        now = self._check()
        r = self.rows[message_id]
        if r.chat is C.UNKNOWN:
            r.reconcile_at = None if delay_s is None else now + delay_s
            r.events.append(
                ("reconcile_gave_up" if delay_s is None else "reconcile_undecided", {"detail": detail})
            )


class MemoryGate:
    """`ports.GateStore` in memory, following sql_files/queries/core.sql (flush_feed_health, feed_status,
    set_feed_gate): receipt times only move forward; the earliest unanswered send is the earliest send on
    the channel after its last receipt. Times are the fake clock's seconds."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.last_receipt: dict[str, float] = {}
        self.closed: dict[str, bool] = {}
        self.sends: list[tuple[str, float]] = []  # (channel, sent at)
        self.gate_writes: list[tuple[str, bool]] = []  # every set_gate call, in order
        self.down = False

    def sent(self, channel: str = "whatsapp", at: float | None = None) -> None:
        """Test helper: a chat message went out on `channel` (now, unless `at`)."""
        self.sends.append((channel, self.clock.now if at is None else at))

    def _check(self) -> float:
        if self.down:
            raise errors.StoreError("database error: ConnectionRefusedError")
        return self.clock.now

    async def record_receipts(self, seen: Mapping[str, float]) -> None:
        self._check()
        for channel, at in seen.items():
            self.last_receipt[channel] = max(at, self.last_receipt.get(channel, at))

    async def feed_status(self, channels: Sequence[str]) -> list[ports.FeedStatus]:
        now = self._check()
        out = []
        for channel in channels:
            last = self.last_receipt.get(channel)
            unanswered = [t for c, t in self.sends if c == channel and (last is None or t > last)]
            out.append(
                ports.FeedStatus(
                    channel=channel,
                    now=now,
                    last_receipt=last,
                    earliest_unanswered=min(unanswered, default=None),
                    gate_closed=self.closed.get(channel, False),
                )
            )
        return out

    async def set_gate(self, channel: str, closed: bool) -> None:
        self._check()
        self.gate_writes.append((channel, closed))
        self.closed[channel] = closed


class MemoryRetention:
    """`ports.RetentionStore` in memory: per purge kind, the times its rows finished (fake clock seconds).
    A purge deletes the oldest rows finished longer than the window ago, at most `batch` of them.

    `on_purge`, when set, is called after each purge (e.g. to set a stop event mid-sweep); the next
    `failures` purges raise StoreError (the database is away).
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.finished: dict[str, list[float]] = {}
        self.calls: list[tuple[str, int]] = []  # (kind, rows deleted) per purge call
        self.on_purge: Callable[[], None] | None = None
        self.failures = 0

    def add(self, what: str, n: int, *, finished_at: float) -> None:
        self.finished.setdefault(what, []).extend([finished_at] * n)

    def left(self, what: str) -> int:
        return len(self.finished.get(what, []))

    async def purge(self, what: str, window_s: float, batch: int) -> int:
        await asyncio.sleep(0)  # a real query yields: a loop meeting only errors must not starve the others
        if self.failures > 0:
            self.failures -= 1
            raise errors.StoreError("database error: ConnectionRefusedError")
        rows = sorted(self.finished.get(what, []))
        old = [t for t in rows if t < self.clock.now - window_s][:batch]
        self.finished[what] = rows[len(old) :]
        self.calls.append((what, len(old)))
        if self.on_purge is not None:
            self.on_purge()
        return len(old)
