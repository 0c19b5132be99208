"""Each guard against a real Postgres, through the timer claim (`Service.claim_due`): budgets (global, prefix,
space; hold and drop; a release re-checks), opt-outs (API list and an SMS provider's answer), the deny-list,
quiet hours (deferred, urgent goes through), error classes in the firing event. Time is the database's."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from fallback_daemon import metrics
from fallback_daemon.core import errors, model, policy, ports
from fallback_daemon.db import store
from fallback_daemon.engine import guards, loops, service
from fallback_daemon.ops import operations, opinput
from tests.integration.test_service import accept_and_send, chat_receipt, make_due, req


def counter(metric: Any, label: str) -> float:
    return float(metric.labels(label)._value.get())


def configure(svc: service.Service, **kw: Any) -> None:
    svc.guard_config = guards.GuardConfig(**kw)


async def due_batch(
    svc: service.Service, n: int, *, to: str = "6591234567", **extra: object
) -> list[uuid.UUID]:
    """n messages sent and due now, the first one due earliest."""
    ids = [await accept_and_send(svc, f"P-{uuid.uuid4().hex[:8]}", To=to, **extra) for _ in range(n)]
    for i, mid in enumerate(ids):
        await svc.db.execute(
            "UPDATE messages SET due_at = now() - $2 * interval '1 second' WHERE id = $1", mid, float(n - i)
        )
    return ids


async def events(svc: service.Service, mid: uuid.UUID, kind: str) -> list[dict[str, Any]]:
    view = await svc.get_message(mid)
    assert view is not None
    return [{"detail": e} for e in view["events"] if e["kind"] == kind]  # the view flattens the detail


async def row(db: store.Store, mid: uuid.UUID) -> Mapping[str, Any]:
    r = await db.fetchrow(
        "SELECT fallback_state, hold_reason, due_at, fire_reason FROM messages WHERE id=$1", mid
    )
    assert r is not None
    return dict(r)


class TestBudgets:
    async def test_the_budget_edge_holds_the_rest_and_a_release_checks_again(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """Budget 2, 3 due: two fire, the third is held (budget) with the limit in its timeline; releasing it
        while the budget is spent holds it again; after the limit is raised the release fires it."""
        gs = guards.GuardStore(db)
        await gs.set_budget("global", "", 2, "test")
        ids = await due_batch(svc, 3)
        before = counter(metrics.guard_blocked, "budget")
        claimed = await svc.claim_due(10, 60)
        assert sorted(c.held for c in claimed) == [False, False, True]
        held = next(c for c in claimed if c.held)
        assert held.hold_reason == "budget" and held.id == ids[2]  # the latest due loses
        assert (await row(db, held.id))["fallback_state"] == "held"
        [blocked] = await events(svc, held.id, "fallback_blocked")
        assert (blocked["detail"]["guard"], blocked["detail"]["limit"], blocked["detail"]["action"]) == (
            "budget",
            2,
            "hold",
        )
        assert counter(metrics.guard_blocked, "budget") == before + 1
        _, budgets = await gs.list_budgets()
        assert [(b["daily_limit"], b["used_today"]) for b in budgets] == [(2, 2)]

        ops = operations.Operations(svc)
        action = opinput.Action(actor="test", reason="retry")
        await ops.held("release", action, hold_reason="budget")
        [again] = await svc.claim_due(10, 60)
        assert (again.id, again.held, again.hold_reason) == (held.id, True, "budget")

        await gs.set_budget("global", "", 3, "test")
        await ops.held("release", action, ids=[held.id])
        [fired] = await svc.claim_due(10, 60)
        assert (fired.id, fired.held, fired.fire_reason) == (held.id, False, "operator")
        _, budgets = await gs.list_budgets()
        assert budgets[0]["used_today"] == 3

    async def test_drop_and_the_prefix_and_space_scopes(self, svc: service.Service, db: store.Store) -> None:
        """FALLBACK_BUDGET_ACTION=drop suppresses; a 0 budget on a prefix and on a CustSpaceId stops only
        their numbers and messages."""
        configure(svc, budget_action="drop")
        gs = guards.GuardStore(db)
        await gs.set_budget("prefix", "1876", 0, None)
        await gs.set_budget("space", "shop-b", 0, None)
        [jamaica] = await due_batch(svc, 1, to="18765550100")
        [shop_b] = await due_batch(svc, 1, CustSpaceId="shop-b")
        [shop_a] = await due_batch(svc, 1, CustSpaceId="shop-a")
        claimed = await svc.claim_due(10, 60)
        assert [c.id for c in claimed] == [shop_a]
        for mid, scope in ((jamaica, "prefix"), (shop_b, "space")):
            assert (await row(db, mid))["fallback_state"] == "suppressed"
            [e] = await events(svc, mid, "fallback_blocked")
            assert (e["detail"]["scope"], e["detail"]["action"]) == (scope, "drop")

    async def test_the_day_is_counted_in_the_budget_zone(self, svc: service.Service, db: store.Store) -> None:
        """Usage rows are keyed by today's date in FALLBACK_BUDGET_TZ (the database clock)."""
        configure(svc, budget_tz="Pacific/Kiritimati")  # UTC+14: often a day ahead of UTC
        await guards.GuardStore(db).set_budget("global", "", 5, None)
        await due_batch(svc, 1)
        await svc.claim_due(10, 60)
        day = await db.fetchval("SELECT (now() AT TIME ZONE 'Pacific/Kiritimati')::date")
        assert await db.fetchval("SELECT used FROM sms_budget_usage WHERE day = $1", day) == 1


class TestOptOutsAndDenyList:
    async def test_an_opted_out_number_is_dropped(self, svc: service.Service, db: store.Store) -> None:
        """A listed number never gets the SMS: suppressed, `fallback_blocked` opt_out, no budget spent."""
        gs = guards.GuardStore(db)
        await gs.set_budget("global", "", 10, None)
        assert await gs.add_opt_outs(["6591234567"], source="api", reason="asked") == (1, 0)
        assert await gs.add_opt_outs(["6591234567", "6591234568"], source="api", reason=None) == (1, 1)
        [mid] = await due_batch(svc, 1)
        assert await svc.claim_due(10, 60) == []
        assert (await row(db, mid))["fallback_state"] == "suppressed"
        [e] = await events(svc, mid, "fallback_blocked")
        assert (e["detail"]["guard"], e["detail"]["reason"]) == ("opt_out", "timeout")
        assert await db.fetchval("SELECT coalesce(sum(used), 0) FROM sms_budget_usage") == 0
        assert await gs.remove_opt_out("6591234567") is True
        assert await gs.remove_opt_out("6591234567") is False

    async def test_a_deny_listed_prefix_is_dropped(self, svc: service.Service, db: store.Store) -> None:
        configure(svc, deny_prefixes=("882", "8816"))
        [sat] = await due_batch(svc, 1, to="88161234567")
        [ok] = await due_batch(svc, 1)
        assert [c.id for c in await svc.claim_due(10, 60)] == [ok]
        [e] = await events(svc, sat, "fallback_blocked")
        assert (e["detail"]["guard"], e["detail"]["prefix"]) == ("deny_prefix", "8816")

    async def test_an_opted_out_sms_answer_adds_the_number(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """The SMS provider refuses with an opt-out code: the fallback is sms_failed, the answer is recorded
        with error_class opted_out, and the number joins the list (same transaction, source provider)."""
        [mid] = await due_batch(svc, 1, to="6597777777")
        [claimed] = await svc.claim_due(10, 60)
        sent = asyncio.Event()

        class Refusing:
            name = "refusing"

            def route(self, *, to: str, channel: str) -> Refusing:
                return self

            async def send(
                self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]
            ) -> str:
                sent.set()
                raise errors.PermanentError("W-BLACK: blacklisted", code="W-BLACK")

            async def lookup(
                self, *, fallback_id: str, to: str, since: dt.datetime, until: dt.datetime
            ) -> ports.Lookup:
                return ports.Lookup(result=ports.LookupResult.UNKNOWN)

        timer = loops.TimerLoop(
            svc, Refusing(), batch=10, lease_s=60, max_sleep_s=0.05, concurrency=2, sms_max_attempts=3
        )
        writer_done = asyncio.Event()
        writing = asyncio.create_task(timer.writer.run(writer_done))
        await timer.submit(claimed)
        await sent.wait()
        await timer.pool.drain(5)
        writer_done.set()
        await writing
        assert (await row(db, mid))["fallback_state"] == "sms_failed"
        [e] = await events(svc, mid, "sms_rejected")
        assert (e["detail"]["error_class"], e["detail"]["error_code"]) == ("opted_out", "W-BLACK")
        listed = await db.fetchrow(
            "SELECT source, message_id, reason FROM sms_opt_outs WHERE number = $1", "6597777777"
        )
        assert listed is not None and (listed["source"], listed["message_id"]) == ("provider", mid)
        assert "W-BLACK" in listed["reason"]


class TestQuietHours:
    async def test_deferred_until_the_window_opens_urgent_goes_through(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """Inside a quiet window the fallback stays armed with due_at moved to the window's end (counted as
        deferred, `fallback_deferred` in its timeline); FallBackUrgent fires now."""
        now = await db.fetchval("SELECT now()")
        start = (now - dt.timedelta(minutes=30)).astimezone(dt.UTC)
        end = (now + dt.timedelta(minutes=90)).astimezone(dt.UTC)
        window = guards.QuietHours(
            prefix="65", start=start.hour * 60 + start.minute, end=end.hour * 60 + end.minute, tz="UTC"
        )
        configure(svc, quiet_hours=(window,))
        [later] = await due_batch(svc, 1)
        [urgent] = await due_batch(svc, 1, FallBackUrgent=True)
        before = counter(metrics.guard_deferred, "quiet_hours")
        assert [c.id for c in await svc.claim_due(10, 60)] == [urgent]
        r = await row(db, later)
        expected = guards.quiet_until("6591234567", now, (window,))
        assert expected is not None
        assert (r["fallback_state"], r["due_at"]) == ("armed", expected[1])
        [e] = await events(svc, later, "fallback_deferred")
        assert (e["detail"]["guard"], e["detail"]["prefix"]) == ("quiet_hours", "65")
        assert counter(metrics.guard_deferred, "quiet_hours") == before + 1
        assert await svc.claim_due(10, 60) == []  # not due again before the window opens
        configure(svc)  # the window is over (as the clock would make it): it fires
        await make_due(db, later)
        assert [c.id for c in await svc.claim_due(10, 60)] == [later]


class TestErrorClasses:
    async def test_a_never_deliverable_receipt_fires_at_once_and_is_counted(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """A Failed receipt with 131047 (outside the 24 h window) makes the fallback due now; the firing
        event names the class and fallback_error_class_total{outside_window} counts it."""
        mid = await accept_and_send(svc, "EC1")
        receipt = chat_receipt("EC1", "Failed", str(mid))
        raw = {**receipt.raw, "ErrorCode": "131047"}
        receipt = dataclasses.replace(receipt, raw=raw, error_code="131047")
        await svc.ingest_chat([receipt], "http")
        before = counter(metrics.error_classes, "outside_window")
        [fired] = await svc.claim_due(10, 60)
        assert (fired.id, fired.fire_reason) == (mid, "failed_receipt")
        [e] = await events(svc, mid, "fallback_fired")
        assert (e["detail"]["error_class"], e["detail"]["never_deliverable"], e["detail"]["error_code"]) == (
            "outside_window",
            True,
            "131047",
        )
        assert counter(metrics.error_classes, "outside_window") == before + 1

    async def test_a_permanent_send_error_is_classified(self, svc: service.Service, db: store.Store) -> None:
        [a] = await svc.accept([req()], [None])
        await svc.claim_sends(10, 60)
        await svc.apply(
            [
                service.Outcome(
                    message_id=a.id,
                    event=policy.SendFailed(),
                    error="InvalidParameter.PhoneNumberError: the number is wrong",
                )
            ]
        )
        [fired] = await svc.claim_due(10, 60)
        assert fired.fire_reason == "send_failed"
        [e] = await events(svc, a.id, "fallback_fired")
        assert (e["detail"]["error_class"], e["detail"]["error_code"]) == (
            "invalid_number",
            "InvalidParameter.PhoneNumberError",
        )


async def test_an_opted_out_sms_receipt_adds_the_number(svc: service.Service, db: store.Store) -> None:
    """An SMS delivery report whose code means "opted out" (W-BLACK) adds the number, in the receipt's
    transaction; a plain failure report adds nothing."""
    [opted, failed] = await due_batch(svc, 1, to="6597777001") + await due_batch(svc, 1, to="6597777002")
    for mid, sms_id in ((opted, "S-OPT"), (failed, "S-FAIL")):
        await db.execute(
            "UPDATE messages SET fallback_state = 'sms_sent', sms_provider_id = $2, fired_at = now(), "
            "fire_reason = 'timeout', due_at = NULL WHERE id = $1",
            mid,
            sms_id,
        )
    receipts = [
        model.SmsReceipt(
            provider_id=sms_id,
            fallback_id=str(mid),
            status=model.SmsStatus.FAILED,
            raw_status="2",
            error_code=code,
            raw={},
        )
        for mid, sms_id, code in ((opted, "S-OPT", "W-BLACK"), (failed, "S-FAIL", "UNDELIVERED"))
    ]
    result = await svc.ingest_sms(receipts, "http")
    assert result.applied == 2
    listed = await db.fetch("SELECT number, source, message_id FROM sms_opt_outs ORDER BY number")
    assert [(r["number"], r["source"], r["message_id"]) for r in listed] == [
        ("6597777001", "provider", opted)
    ]
