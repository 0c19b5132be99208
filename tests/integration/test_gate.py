"""The receipt-feed health gate against a real Postgres: hold (not drop) timer fallbacks while a channel's
feed is silent, keep failure-triggered fallbacks firing, reopen when receipts return, release on demand."""

from __future__ import annotations

from typing import Any

from fallback_daemon import metrics
from fallback_daemon.core import policy
from fallback_daemon.db import store
from fallback_daemon.engine import health, service
from tests.integration.test_service import accept_and_send, chat_receipt, make_due


def gate_loop(svc: service.Service, **kw: Any) -> health.GateLoop:
    """The gate over Postgres, reading the receipt times `svc`'s ingest records (as app.py wires it)."""
    return health.GateLoop(health.PgGateStore(svc.db), feed=svc.feed, **kw)


async def silence(db: store.Store, seconds: int) -> None:
    """Drive time through the database: every send happened `seconds` ago and no receipt came since."""
    await db.execute("UPDATE messages SET sent_at = now() - $1 * interval '1 second'", float(seconds))


async def test_gate_holds_timer_fallbacks_when_feed_is_silent(svc: service.Service, db: store.Store) -> None:
    """After a full window of silence following a send, a due timer fallback is held with reason feed_down."""
    mid = await accept_and_send(svc, "G1")
    gate = gate_loop(svc, window_s=60)
    assert (await gate.check_once())["whatsapp"] is False
    await silence(db, 120)
    assert (await gate.check_once())["whatsapp"] is True
    assert metrics.feed_gate.labels("whatsapp")._value.get() == 1
    await make_due(db, mid)
    [row] = await svc.claim_due(10, 60)
    assert (row.held, row.hold_reason) == (True, "feed_down")
    view = await svc.get_message(mid)
    assert (view["fallback_state"], view["events"][-1]["kind"]) == ("held", "fallback_held")


async def test_failure_triggered_fallbacks_still_fire_through_a_closed_gate(
    svc: service.Service, db: store.Store
) -> None:
    """A Failed receipt is evidence, not silence: its fallback fires even while the gate is closed."""
    mid = await accept_and_send(svc, "G2")
    await silence(db, 120)
    gate = gate_loop(svc, window_s=60)
    await gate.check_once()
    await db.execute("UPDATE feed_health SET gate_closed = true")
    await svc.ingest_chat([chat_receipt("G2", "Failed", str(mid))], "http")
    [row] = await svc.claim_due(10, 60)
    assert (row.held, row.fire_reason) == (False, "failed_receipt")


async def test_gate_reopens_when_receipts_return_and_held_can_be_released(
    svc: service.Service, db: store.Store
) -> None:
    """A receipt on the channel reopens the gate; a held fallback stays held until an operator releases it."""
    held_id = await accept_and_send(svc, "G3")
    other = await accept_and_send(svc, "G4")
    gate = gate_loop(svc, window_s=60)
    await silence(db, 120)
    await gate.check_once()
    await make_due(db, held_id)
    await svc.claim_due(10, 60)
    await svc.ingest_chat([chat_receipt("G4", "Delivered", str(other))], "http")
    assert (await gate.check_once())["whatsapp"] is False
    view = await svc.get_message(held_id)
    assert view["fallback_state"] == "held"
    await svc.apply(
        [service.Outcome(message_id=held_id, event=policy.OperatorFire(), detail={"actor": "ops"})]
    )
    [row] = await svc.claim_due(10, 60)
    assert (row.id, row.held, row.fire_reason) == (held_id, False, "operator")


async def test_success_still_cancels_a_held_fallback(svc: service.Service, db: store.Store) -> None:
    """A late Delivered for a held message cancels it: holding is what avoids the SMS wave."""
    mid = await accept_and_send(svc, "G5")
    await silence(db, 120)
    await gate_loop(svc, window_s=60).check_once()
    await make_due(db, mid)
    await svc.claim_due(10, 60)
    await svc.ingest_chat([chat_receipt("G5", "Delivered", str(mid))], "http")
    view = await svc.get_message(mid)
    assert (view["chat_state"], view["fallback_state"]) == ("delivered", "cancelled")


async def test_gate_disabled_per_channel(svc: service.Service, db: store.Store) -> None:
    """A per-channel window of 0 disables the gate there while other channels keep the default."""
    await accept_and_send(svc, "G6")
    await silence(db, 1000)
    states = await gate_loop(svc, window_s=60, per_channel={"whatsapp": 0}).check_once()
    assert states["whatsapp"] is False
