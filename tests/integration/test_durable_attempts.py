"""The loops against a real Postgres with scripted provider ports: every outbound call is a durable attempt.

Provider outages, lost answers and lookups are scripted by the fakes below; time is never slept through: the
retry backoff is capped at a few milliseconds and the tests wait for conditions in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from fallback_daemon.core import errors, ports
from fallback_daemon.db import store
from fallback_daemon.engine import loops, ratelimit, service
from tests.fakes import ScriptedChat, ScriptedSms
from tests.integration.test_service import accept_and_send, make_due, req

WAIT_S = 20.0  # how long a condition may take before the test fails (a hang guard, not a speed target)


async def until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll `check` until it returns something truthy (each poll yields to the loops under test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(*coros: Callable[[asyncio.Event], Awaitable[None]]) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c(stop)) for c in coros]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=WAIT_S)


def timer_loop(svc: service.Service, sms: ScriptedSms, **kw: Any) -> loops.TimerLoop:
    args: dict[str, Any] = {
        "batch": 100,
        "lease_s": 60.0,
        "max_sleep_s": 0.02,
        "concurrency": 4,
        "sms_max_attempts": 100,
        "retry_window_s": 600.0,
        "retry_cap_s": 0.005,
    }
    args.update(kw)
    return loops.TimerLoop(svc, sms, **args)


async def fallback(svc: service.Service, mid: uuid.UUID) -> dict[str, Any]:
    view = await svc.get_message(mid)
    assert view is not None
    return view


async def test_sms_provider_outage_is_ridden_out_through_the_database(
    svc: service.Service, db: store.Store
) -> None:
    """Refused connections and throttling retry through the database until the SMS goes out, exactly once."""
    mid = await accept_and_send(svc, "P1")
    await make_due(db, mid)
    sms = ScriptedSms(*["refused"] * 6, "throttled", "ok")
    timer = timer_loop(svc, sms)
    async with running(lambda stop: timer.run(stop, 1.0)):
        view = await until(
            lambda: _if_state(svc, mid, "sms_sent"), "the SMS to go out after the provider came back"
        )
    assert sms.received == [str(mid)]
    kinds = [e["kind"] for e in view["events"]]
    assert kinds.count("sms_retry") == 7
    assert await db.fetchval("SELECT sms_attempts FROM messages WHERE id = $1", mid) == 8


async def test_exhausted_retry_window_is_held_for_an_operator(svc: service.Service, db: store.Store) -> None:
    """When the window runs out the fallback is held as sms_retries_exhausted, not silently sms_failed."""
    mid = await accept_and_send(svc, "P2")
    await make_due(db, mid)
    sms = ScriptedSms(*["refused"] * 1000)
    timer = timer_loop(svc, sms, sms_max_attempts=3)
    async with running(lambda stop: timer.run(stop, 1.0)):
        view = await until(lambda: _if_state(svc, mid, "held"), "the fallback to be held")
    assert view["hold_reason"] == "sms_retries_exhausted"
    assert sms.received == []
    assert sms.calls == 3


async def test_permanent_refusal_is_final(svc: service.Service, db: store.Store) -> None:
    """A permanent answer ends the fallback as sms_failed at once (no retries)."""
    mid = await accept_and_send(svc, "P3")
    await make_due(db, mid)
    sms = ScriptedSms("rejected")
    timer = timer_loop(svc, sms)
    async with running(lambda stop: timer.run(stop, 1.0)):
        await until(lambda: _if_state(svc, mid, "sms_failed"), "the fallback to fail")
    assert sms.calls == 1


async def test_lost_sms_answer_is_recorded_then_reconciled_as_found(
    svc: service.Service, db: store.Store
) -> None:
    """An SMS whose answer was lost gets a timeline event at once; the lookup then records it as sent."""
    mid = await accept_and_send(svc, "P4")
    await make_due(db, mid)
    found = ports.Lookup(result=ports.LookupResult.FOUND, provider_id="biz-77", detail="OutId matches")
    sms = ScriptedSms("ambiguous", lookups=[found])
    timer = timer_loop(svc, sms)
    recovery = loops.RecoveryLoop(svc, timer, resend=False, interval_s=0.02)
    async with running(lambda stop: timer.run(stop, 1.0)):
        await until(lambda: _has_event(svc, mid, "sms_unknown"), "the lost answer to be recorded")
    await db.execute("UPDATE messages SET fire_lease_until = now() - interval '1 second' WHERE id = $1", mid)
    await recovery.sweep()
    view = await fallback(svc, mid)
    assert (view["fallback_state"], view["sms_id"]) == ("sms_sent", "biz-77")
    assert sms.received == [str(mid)], "found: never sent a second time"


async def test_lost_sms_answer_reconciled_as_absent_is_sent_again(
    svc: service.Service, db: store.Store
) -> None:
    """The provider proves the SMS never arrived: it is sent again (one SMS in all)."""
    mid = await accept_and_send(svc, "P5")
    await make_due(db, mid)
    absent = ports.Lookup(result=ports.LookupResult.ABSENT, detail="no row with OutId")
    sms = ScriptedSms("lost", lookups=[absent])
    timer = timer_loop(svc, sms)
    recovery = loops.RecoveryLoop(svc, timer, resend=False, interval_s=0.02)
    async with running(lambda stop: timer.run(stop, 1.0)):
        await until(lambda: _has_event(svc, mid, "sms_unknown"), "the lost answer to be recorded")
        await db.execute(
            "UPDATE messages SET fire_lease_until = now() - interval '1 second' WHERE id = $1", mid
        )
        await recovery.sweep()
        await until(lambda: _if_state(svc, mid, "sms_sent"), "the SMS to be sent again")
    assert sms.received == [str(mid)]
    assert sms.lookup_calls == 1


async def test_undecidable_sms_is_parked_as_sms_unknown(svc: service.Service, db: store.Store) -> None:
    """No query can tell (e.g. SNS): park mode holds it as sms_unknown (at-most-once)."""
    mid = await accept_and_send(svc, "P6")
    await make_due(db, mid)
    sms = ScriptedSms("ambiguous")
    timer = timer_loop(svc, sms)
    recovery = loops.RecoveryLoop(svc, timer, resend=False, interval_s=0.02)
    async with running(lambda stop: timer.run(stop, 1.0)):
        await until(lambda: _has_event(svc, mid, "sms_unknown"), "the lost answer to be recorded")
    await db.execute("UPDATE messages SET fire_lease_until = now() - interval '1 second' WHERE id = $1", mid)
    await recovery.sweep()
    view = await fallback(svc, mid)
    assert (view["fallback_state"], view["hold_reason"]) == ("held", "sms_unknown")


async def _sender(svc: service.Service, db: store.Store, chat: ScriptedChat) -> loops.SenderLoop:
    limiter = ratelimit.RateLimiter(db, name="cams", rate=1000.0, headroom=1)
    return loops.SenderLoop(svc, chat, limiter, concurrency=4, max_attempts=5, lease_s=60.0, poll_s=0.02)


async def test_ambiguous_chat_send_reconciled_found_is_sent(svc: service.Service, db: store.Store) -> None:
    """ListChatappMessage finds the ambiguous send: it is recorded as sent with the MessageId, not resent."""
    svc.reconcile_delay_s = 0.0
    [a] = await svc.accept([req()], [None])
    chat = ScriptedChat(
        "ambiguous",
        lookups=[ports.Lookup(result=ports.LookupResult.FOUND, provider_id="cams-found", status="Sent")],
    )
    sender = await _sender(svc, db, chat)
    async with running(lambda stop: sender.run(stop, 1.0)):
        await until(lambda: _if_chat(svc, a.id, "unknown"), "the send to be unknown")
    recovery = loops.RecoveryLoop(svc, timer_loop(svc, ScriptedSms()), resend=False, chat=chat)
    await recovery.sweep()
    view = await fallback(svc, a.id)
    assert (view["chat_state"], view["provider_message_id"]) == ("sent", "cams-found")
    assert chat.received == [str(a.id)]


async def test_ambiguous_chat_send_reconciled_absent_is_sent_again(
    svc: service.Service, db: store.Store
) -> None:
    """The provider proves the send never arrived: back to accepted and out again (no unknown left)."""
    svc.reconcile_delay_s = 0.0
    [a] = await svc.accept([req()], [None])
    chat = ScriptedChat("ambiguous", lookups=[ports.Lookup(result=ports.LookupResult.ABSENT)])
    sender = await _sender(svc, db, chat)
    recovery = loops.RecoveryLoop(svc, timer_loop(svc, ScriptedSms()), resend=False, chat=chat)
    async with running(lambda stop: sender.run(stop, 1.0)):
        await until(lambda: _if_chat(svc, a.id, "unknown"), "the send to be unknown")
        await recovery.sweep()
        await until(lambda: _if_chat(svc, a.id, "sent"), "the send to go out again")
    kinds = [e["kind"] for e in (await fallback(svc, a.id))["events"]]
    assert "send_absent" in kinds


async def test_undecided_chat_lookups_back_off_then_give_up(svc: service.Service, db: store.Store) -> None:
    """Undecided lookups are retried later (in the database), then it stays unknown for an operator."""
    svc.reconcile_delay_s = 0.0
    [a] = await svc.accept([req()], [None])
    [row] = await svc.claim_sends(10, 60)
    assert await svc.mark_send_started(a.id, row.attempt)
    await db.execute("UPDATE messages SET send_lease_until = now() - interval '1 second'")
    chat = ScriptedChat()
    recovery = loops.RecoveryLoop(
        svc, timer_loop(svc, ScriptedSms()), resend=False, chat=chat, reconcile_max_attempts=2
    )
    for _ in range(3):
        await recovery.sweep()
        await db.execute("UPDATE messages SET reconcile_at = now() WHERE reconcile_at IS NOT NULL")
    kinds = [e["kind"] for e in (await fallback(svc, a.id))["events"]]
    assert kinds.count("reconcile_undecided") == 1
    assert kinds.count("reconcile_gave_up") == 1
    assert await db.fetchval("SELECT reconcile_at FROM messages WHERE id = $1", a.id) is None
    assert (await fallback(svc, a.id))["chat_state"] == "unknown"


async def test_other_ambiguous_send_to_the_same_number_makes_the_lookup_undecidable(
    svc: service.Service, db: store.Store
) -> None:
    """Two unknown sends to one number: a list row could be either, so neither is decided by it."""
    svc.reconcile_delay_s = 0.0
    accepted = await svc.accept([req(), req()], [None, None])
    for row in await svc.claim_sends(10, 60):
        assert await svc.mark_send_started(row.id, row.attempt)
    await db.execute("UPDATE messages SET send_lease_until = now() - interval '1 second'")
    chat = ScriptedChat(lookups=[ports.Lookup(result=ports.LookupResult.FOUND, provider_id="x")] * 2)
    recovery = loops.RecoveryLoop(svc, timer_loop(svc, ScriptedSms()), resend=False, chat=chat)
    await recovery.sweep()
    for a in accepted:
        assert (await fallback(svc, a.id))["chat_state"] == "unknown"
    assert chat.excluded == [], "the provider was not even asked"


async def test_supervisor_restarts_a_crashed_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error nobody mapped (here asyncpg's state error after a server restart) restarts the loop."""
    monkeypatch.setattr(loops, "backoff", lambda attempt, **kw: 0.0)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise asyncpg.exceptions._base.InternalClientError("cannot switch to state 15")

    await asyncio.wait_for(loops.supervise("flaky", asyncio.Event(), flaky), timeout=WAIT_S)
    assert runs == 3


def test_driver_state_errors_are_store_errors() -> None:
    """InternalClientError (a connection the server terminated mid-query) maps to StoreError."""
    with pytest.raises(errors.StoreError), store.wrap_errors():
        raise asyncpg.exceptions._base.InternalClientError("cannot switch to state 15; another operation")


async def test_writer_gives_up_within_the_grace_when_the_database_stays_down() -> None:
    """At shutdown with the database down, the writer stops retrying after the grace (leases do the rest)."""

    class DownService:
        async def apply(self, outcomes: object) -> None:
            raise errors.StoreError("database error: ConnectionRefusedError")

    writer = loops.Writer(DownService(), grace_s=0.05)  # type: ignore[arg-type]
    done = asyncio.Event()
    writer.put(service.Outcome(message_id=uuid.uuid4(), event=loops.policy.SendOk()))
    done.set()
    await asyncio.wait_for(writer.run(done), timeout=WAIT_S)  # returns: it did not retry ~1,000 times


async def test_listen_reconnects_after_its_connection_is_killed(db: store.Store) -> None:
    """LISTEN is supervised: a terminated connection is re-established and NOTIFY wakes the loop again."""
    wake = asyncio.Event()
    health: dict[str, Any] = {}
    stop = asyncio.Event()
    task = asyncio.create_task(db.listen({"fd_test_wake": wake}, stop, health=health, retry_cap_s=0.05))
    try:
        await until(_truthy(lambda: health.get("listen") is True), "LISTEN to connect")
        wake.clear()
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
        )
        assert killed == 1
        await until(_truthy(lambda: health.get("listen") is False or wake.is_set()), "the loss to be seen")
        await until(_truthy(lambda: health.get("listen") is True), "LISTEN to reconnect")
        wake.clear()
        await db.execute("SELECT pg_notify('fd_test_wake', '')")
        await until(_truthy(wake.is_set), "NOTIFY to arrive over the new connection")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=WAIT_S)
    assert health["listen"] is False


def _truthy(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return fn()

    return check


async def _if_state(svc: service.Service, mid: uuid.UUID, fallback_state: str) -> dict[str, Any] | None:
    view = await svc.get_message(mid)
    return view if view is not None and view["fallback_state"] == fallback_state else None


async def _if_chat(svc: service.Service, mid: uuid.UUID, chat_state: str) -> dict[str, Any] | None:
    view = await svc.get_message(mid)
    return view if view is not None and view["chat_state"] == chat_state else None


async def _has_event(svc: service.Service, mid: uuid.UUID, kind: str) -> bool:
    view = await svc.get_message(mid)
    return view is not None and any(e["kind"] == kind for e in view["events"])


async def test_releasing_a_fallback_whose_sms_may_be_out_needs_force(
    svc: service.Service, db: store.Store
) -> None:
    """A held sms_unknown fallback is left out of a release (listed as needs_force) and refused by fire."""
    from fallback_daemon.ops import operations, opinput

    mid = await accept_and_send(svc, "F1")
    await make_due(db, mid)
    [row] = await svc.claim_due(10, 60)
    assert await svc.mark_sms_started(mid, row.attempt)
    await svc.interrupt_firing(mid, resend=False, lease_s=60, detail="no query API")
    ops = operations.Operations(svc)
    who = opinput.Action(actor="oncall", reason="test")
    result = await ops.held("release", who, ids=[mid])
    assert (result["done"], result["needs_force"]) == (0, [str(mid)])
    with pytest.raises(errors.Conflict, match="force"):
        await ops.act(mid, "fire", who)
    assert (await fallback(svc, mid))["fallback_state"] == "held"
    forced = await ops.held("release", who, ids=[mid], force=True)
    assert forced["done"] == 1
    assert (await fallback(svc, mid))["fallback_state"] == "armed"
