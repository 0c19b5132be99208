"""The in-memory store of the loops' unit tests behaves like the Postgres one (same scenarios, both stores).

`tests/unit/memstore.py` is only worth its unit tests if it follows the rules of `service.Service` and the SQL
in core.sql: these scenarios run against both and compare the observable states and claim results.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from fallback_daemon.core import model, policy
from fallback_daemon.db import store
from fallback_daemon.engine import service
from tests.integration.test_service import req
from tests.unit.memstore import MemoryStore


class PgHarness:
    def __init__(self, svc: service.Service, db: store.Store) -> None:
        self.s, self.db = svc, db

    async def new(self) -> uuid.UUID:
        [a] = await self.s.accept([req()], [None])
        return a.id

    async def expire(self) -> None:
        """Every lease and lookup time ran out (time is driven through the database)."""
        await self.db.execute(
            "UPDATE messages SET send_lease_until = now() - interval '1 s', next_attempt_at = now(), "
            "fire_lease_until = now() - interval '1 s', reconcile_at = CASE WHEN reconcile_at IS NULL "
            "THEN NULL ELSE now() END, due_at = CASE WHEN due_at IS NULL THEN NULL ELSE now() END"
        )

    async def double(self, mid: uuid.UUID) -> bool:
        return bool(await self.db.fetchval("SELECT double_delivered FROM messages WHERE id = $1", mid))

    async def state(self, mid: uuid.UUID) -> tuple[str, str, str | None]:
        v = await self.s.get_message(mid)
        assert v is not None
        return v["chat_state"], v["fallback_state"], v["hold_reason"]


class MemHarness:
    def __init__(self) -> None:
        self.s = MemoryStore(reconcile_delay_s=0.0)

    async def new(self) -> uuid.UUID:
        return self.s.add(due_at=120.0).id

    async def expire(self) -> None:
        self.s.clock.advance(10_000)

    async def double(self, mid: uuid.UUID) -> bool:
        return self.s.rows[mid].double_delivered

    async def state(self, mid: uuid.UUID) -> tuple[str, str, str | None]:
        r = self.s.rows[mid]
        return r.chat.value, r.fallback.value, r.hold_reason


@pytest.fixture(params=["postgres", "memory"])
def h(request: pytest.FixtureRequest, db: store.Store) -> Any:
    if request.param == "memory":
        return MemHarness()
    return PgHarness(service.Service(db, reconcile_delay_s=0.0), db)


async def test_claim_fence_and_requeue(h: Any) -> None:
    mid = await h.new()
    [c1] = await h.s.claim_sends(10, 60)
    assert (c1.id, c1.attempt) == (mid, 1)
    await h.expire()
    assert await h.s.recover_sends(10) == (1, 0)
    [c2] = await h.s.claim_sends(10, 60)
    assert c2.attempt == 2
    assert await h.s.mark_sends_started([c1]) == set(), "the first claim lost its fencing token"
    assert not await h.s.mark_send_started(mid, 1)
    assert await h.s.mark_sends_started([c2]) == {mid}
    await h.expire()
    assert await h.s.recover_sends(10) == (0, 1)
    assert await h.state(mid) == ("unknown", "armed", None)


async def test_reconcile_claims_then_gives_up(h: Any) -> None:
    mid = await h.new()
    [c] = await h.s.claim_sends(10, 60)
    assert await h.s.mark_send_started(mid, c.attempt)
    await h.expire()
    await h.s.recover_sends(10)
    await h.expire()
    [a] = await h.s.claim_reconcile(10, 60)
    assert (a.id, a.lookups) == (mid, 1)
    assert await h.s.claim_reconcile(10, 60) == []
    await h.s.reconcile_later(mid, None, "undecided")
    await h.expire()
    assert await h.s.claim_reconcile(10, 60) == []
    await h.s.apply([service.Outcome(message_id=mid, event=policy.SendAbsent())])
    assert await h.state(mid) == ("accepted", "armed", None)


async def test_sms_attempts_retry_and_recovery(h: Any) -> None:
    mid = await h.new()
    await h.s.claim_sends(10, 60)
    await h.s.apply([service.Outcome(message_id=mid, event=policy.SendOk(), provider_message_id="pc1")])
    await h.expire()
    [f] = await h.s.claim_due(10, 60)
    assert (f.id, f.attempt, f.fire_reason, f.held) == (mid, 1, "timeout", False)
    assert await h.s.mark_sms_started(mid, 1)
    await h.s.retry_sms(mid, 1, 0.0, "connect failed", "p")
    assert await h.s.claim_stale_firings(10, 60) == [], "a retry is not in flight"
    await h.expire()
    [r] = await h.s.claim_sms_retries(10, 60)
    assert r.attempt == 2
    assert await h.s.mark_sms_started(mid, 2)
    await h.expire()
    assert await h.s.claim_sms_retries(10, 60) == [], "in flight: never resent blindly"
    [stale] = await h.s.claim_stale_firings(10, 60)
    assert (stale.id, stale.attempt) == (mid, 2)
    await h.s.sms_absent(mid, 2, "absent")
    [again] = await h.s.claim_sms_retries(10, 60)
    assert again.attempt == 3
    assert await h.s.mark_sms_started(mid, 3)
    assert await h.s.interrupt_firing(mid, resend=False, lease_s=60, detail="?") is None
    assert await h.state(mid) == ("sent", "held", "sms_unknown")


async def test_a_success_since_the_firing_makes_the_sms_not_needed(h: Any) -> None:
    mid = await h.new()
    await h.s.claim_sends(10, 60)
    await h.s.apply([service.Outcome(message_id=mid, event=policy.SendOk(), provider_message_id="pc2")])
    await h.expire()
    [f] = await h.s.claim_due(10, 60)
    await h.s.apply([service.Outcome(message_id=mid, event=policy.ChatReceipt(model.ReceiptStatus.READ))])
    assert not await h.s.mark_sms_started(mid, f.attempt)
    assert not await h.s.sms_not_needed(mid, f.attempt + 1), "another attempt's claim is not touched"
    assert await h.s.sms_not_needed(mid, f.attempt)
    assert (await h.state(mid))[:2] == ("read", "cancelled")
    assert not await h.double(mid), "no SMS went out: not a double delivery"


async def test_a_claims_batch_mark_fences_and_skips_a_satisfied_chat(h: Any) -> None:
    """mark_sms_batch_started marks exactly what mark_sms_started would, row by row, in one write."""
    mids = [await h.new() for _ in range(3)]
    await h.s.claim_sends(10, 60)
    await h.s.apply(
        [
            service.Outcome(message_id=m, event=policy.SendOk(), provider_message_id=f"pb{i}")
            for i, m in enumerate(mids)
        ]
    )
    await h.expire()
    claimed = sorted(await h.s.claim_due(10, 60), key=lambda f: mids.index(f.id))
    assert [f.id for f in claimed] == mids
    read, stale, fresh = claimed
    await h.s.apply([service.Outcome(message_id=read.id, event=policy.ChatReceipt(model.ReceiptStatus.READ))])
    stale_token = dataclasses.replace(stale, attempt=stale.attempt + 1)
    assert await h.s.mark_sms_batch_started([read, stale_token, fresh]) == {fresh.id}
    assert not await h.s.mark_sms_started(fresh.id, fresh.attempt), "already in flight"
    assert await h.s.mark_sms_started(stale.id, stale.attempt), "an unmarked row keeps its own claim"
    assert await h.s.mark_sms_batch_started([]) == set()
