"""SenderLoop, TimerLoop and RecoveryLoop against the in-memory store and scripted providers (no database).

The store's clock is fake: leases expire and retries fall due when a test advances it, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from fallback_daemon.core import ports
from fallback_daemon.core.model import ChatState as C
from fallback_daemon.core.model import FallbackState as F
from fallback_daemon.core.model import ReceiptStatus as R
from fallback_daemon.engine import loops, service
from tests.fakes import ScriptedChat, ScriptedSms
from tests.unit.memstore import MemoryStore

HANG_S = 10.0  # a guard against a hang, never a speed target


async def until(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.001)


class Limiter:
    """Every slot is free now (pacing is tested in test_ratelimit against Postgres)."""

    def room(self) -> int:
        return 100

    def wait_hint(self) -> float:
        return 0.001

    async def reserve(self, count: int) -> list[float]:
        return [0.0] * count

    async def wait(self, slot: float, stop: asyncio.Event | None = None) -> float | None:
        return None if stop is not None and stop.is_set() else slot


@contextlib.asynccontextmanager
async def running(run: Callable[[asyncio.Event], Awaitable[None]]) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, HANG_S)


def timer(store: MemoryStore, sms: ScriptedSms, **kw: Any) -> loops.TimerLoop:
    args: dict[str, Any] = {
        "batch": 50,
        "lease_s": 120.0,
        "max_sleep_s": 0.001,
        "concurrency": 4,
        "sms_max_attempts": 100,
        "retry_window_s": 1800.0,
        "retry_cap_s": 60.0,
    }
    return loops.TimerLoop(store, sms, **{**args, **kw})


def sender(store: MemoryStore, chat: ScriptedChat, **kw: Any) -> loops.SenderLoop:
    args: dict[str, Any] = {"concurrency": 4, "max_attempts": 3, "lease_s": 60.0, "poll_s": 0.001}
    return loops.SenderLoop(store, chat, Limiter(), **{**args, **kw})


# ---- sender ---------------------------------------------------------------------------------------------
async def test_sender_marks_in_flight_before_the_call_and_records_the_id() -> None:
    store = MemoryStore()
    row = store.add()
    chat = ScriptedChat()
    marked_at_call: list[float | None] = []
    real = chat.send

    async def spy(**kw: Any) -> str:
        marked_at_call.append(store.rows[row.id].send_started_at)
        return await real(**kw)

    chat.send = spy  # type: ignore[method-assign]
    async with running(lambda stop: sender(store, chat).run(stop, 1.0)):
        await until(lambda: row.chat is C.SENT, "the send to be recorded")
    assert marked_at_call == [0.0], "the in-flight mark was committed before the request"
    assert (row.provider_id, chat.received) == ("cams-1", [str(row.id)])


async def test_sender_marks_the_claim_before_reserving_its_slots() -> None:
    """The in-flight marks are one write before the slots are reserved, so they never make a call late."""
    store = MemoryStore()
    rows = [store.add() for _ in range(3)]
    limiter = Limiter()
    marked_at_reserve: list[list[float | None]] = []
    real = limiter.reserve

    async def spy(count: int) -> list[float]:
        marked_at_reserve.append([r.send_started_at for r in rows])
        return await real(count)

    limiter.reserve = spy  # type: ignore[method-assign]
    loop = loops.SenderLoop(
        store, ScriptedChat(), limiter, concurrency=4, max_attempts=3, lease_s=60.0, poll_s=0.001
    )
    async with running(lambda stop: loop.run(stop, 1.0)):
        await until(lambda: all(r.chat is C.SENT for r in rows), "all three to be sent")
    assert marked_at_reserve[0] == [0.0, 0.0, 0.0]


async def test_sender_does_not_call_when_the_claim_was_lost() -> None:
    """A claim swept (lease expired) before its mark is not sent by the old claimer."""
    store = MemoryStore()
    row = store.add()
    [claimed] = await store.claim_sends(10, 60)
    store.clock.advance(61)  # the lease ran out; the sweep hands it back and another claim takes it
    await store.recover_sends(10)
    await store.claim_sends(10, 60)
    assert await store.mark_sends_started([claimed]) == set()
    assert row.send_attempts == 2


async def test_sender_backs_off_throttling_for_at_least_retry_after() -> None:
    store = MemoryStore()
    row = store.add()
    async with running(
        lambda stop: sender(store, ScriptedChat("throttled", retry_after_s=7.0)).run(stop, 1.0)
    ):
        await until(lambda: "send_retry" in store.kinds(row.id), "the retry to be recorded")
    assert row.chat is C.ACCEPTED
    assert row.next_attempt_at >= 7.0, "x-acs-retry-after is honoured"


async def test_sender_permanent_refusal_makes_the_fallback_due() -> None:
    store = MemoryStore()
    row = store.add()
    async with running(lambda stop: sender(store, ScriptedChat("rejected")).run(stop, 1.0)):
        await until(lambda: row.chat is C.SEND_FAILED, "the send to fail")
    assert (row.fire_reason, row.due_at) == ("send_failed", 0.0)


async def test_sender_shutting_down_before_the_slot_hands_the_message_back() -> None:
    store = MemoryStore()
    row = store.add()
    loop = sender(store, ScriptedChat())
    stop = asyncio.Event()
    stop.set()
    loop._stop = stop
    [claimed] = await store.claim_sends(10, 60)
    await loop._send(claimed, 0.0)
    assert (row.chat, row.send_started_at) == (C.ACCEPTED, None)


# ---- timer ----------------------------------------------------------------------------------------------
async def test_timer_retries_an_outage_through_the_store_until_sent() -> None:
    store = MemoryStore()
    row = store.add(chat=C.SENT, due_at=0.0)
    sms = ScriptedSms("refused", "refused", "refused")
    async with running(lambda stop: timer(store, sms).run(stop, 1.0)):
        for attempt in range(1, 4):
            await until(lambda a=attempt: store.kinds(row.id).count("sms_retry") == a, f"retry {attempt}")
            assert row.fallback is F.FIRING
            assert row.sms_started_at is None, "a refused attempt is not in flight"
            store.clock.advance(61)  # the next attempt falls due (backoff capped at 60 s)
        await until(lambda: row.fallback is F.SMS_SENT, "the SMS to go out")
    assert sms.received == [str(row.id)]
    assert row.sms_attempts == 4


async def test_timer_holds_the_fallback_when_the_window_is_exhausted() -> None:
    store = MemoryStore()
    row = store.add(chat=C.SENT, due_at=0.0)
    sms = ScriptedSms(*["refused"] * 50)
    async with running(lambda stop: timer(store, sms, retry_window_s=100.0).run(stop, 1.0)):
        await until(lambda: row.fallback is not F.ARMED, "the fallback to fire")
        attempts = 0
        while row.fallback is F.FIRING:
            attempts += 1
            # Attempt n is recorded as the n-th retry (or ends the window); only then does the next fall due.
            await until(
                lambda n=attempts: (
                    row.fallback is not F.FIRING or store.kinds(row.id).count("sms_retry") >= n
                ),
                f"the outcome of attempt {attempts}",
            )
            store.clock.advance(61)
    assert (row.fallback, row.hold_reason) == (F.HELD, "sms_retries_exhausted")
    assert sms.received == []
    assert sms.calls <= 4, "no attempt was made past the window"


async def test_timer_records_a_lost_sms_answer_at_once() -> None:
    store = MemoryStore()
    row = store.add(chat=C.SENT, due_at=0.0)
    async with running(lambda stop: timer(store, ScriptedSms("ambiguous")).run(stop, 1.0)):
        await until(lambda: "sms_unknown" in store.kinds(row.id), "the timeline event")
    assert row.fallback is F.FIRING
    assert row.sms_started_at is not None, "still in flight: recovery decides"


async def test_timer_marks_a_claim_in_one_write_before_any_sms() -> None:
    """Fresh firings are marked in flight as one batch, and every SMS goes out only after its mark."""
    store = MemoryStore()
    rows = [store.add(chat=C.SENT, due_at=0.0) for _ in range(3)]
    sms = ScriptedSms()
    batches: list[int] = []
    singles: list[uuid.UUID] = []
    marked_at_send: list[float | None] = []
    real_single, real_send = store.mark_sms_started, sms.send

    async def batch(claimed: Any) -> set[uuid.UUID]:
        batches.append(len(claimed))
        return {c.id for c in claimed if await real_single(c.id, c.attempt)}

    async def single(mid: uuid.UUID, attempt: int) -> bool:
        singles.append(mid)
        return await real_single(mid, attempt)

    async def send(**kw: Any) -> str:
        marked_at_send.append(store.rows[uuid.UUID(kw["fallback_id"])].sms_started_at)
        return await real_send(**kw)

    store.mark_sms_batch_started = batch  # type: ignore[method-assign]
    store.mark_sms_started = single  # type: ignore[method-assign]
    sms.send = send  # type: ignore[method-assign]
    async with running(lambda stop: timer(store, sms).run(stop, 1.0)):
        await until(lambda: all(r.fallback is F.SMS_SENT for r in rows), "the three SMS to be recorded")
    assert batches == [3]
    assert singles == [], "a freshly claimed SMS was not marked again one by one"
    assert marked_at_send == [0.0, 0.0, 0.0]


async def test_timer_looks_for_retries_while_a_claim_is_handed_off_but_claims_again_only_after() -> None:
    """The batch mark is off the next timer's path (the pass goes on to the retries while it is in flight),
    and the next claim waits for the previous claim's hand-off (no pile of claimed, unsent fallbacks)."""
    store = MemoryStore()
    row = store.add(chat=C.SENT, due_at=0.0)
    release = asyncio.Event()
    log: list[str] = []
    real_batch, real_claim, real_retries = (
        store.mark_sms_batch_started,
        store.claim_due,
        store.claim_sms_retries,
    )

    async def batch(claimed: Any) -> set[uuid.UUID]:
        log.append("mark")
        await release.wait()
        log.append("marked")
        return await real_batch(claimed)

    async def claim(limit: int, lease_s: float) -> Any:
        log.append("claim")
        return await real_claim(limit, lease_s)

    async def retries(limit: int, lease_s: float) -> Any:
        log.append("retries")
        return await real_retries(limit, lease_s)

    store.mark_sms_batch_started = batch  # type: ignore[method-assign]
    store.claim_due = claim  # type: ignore[method-assign]
    store.claim_sms_retries = retries  # type: ignore[method-assign]
    sms = ScriptedSms()
    async with running(lambda stop: timer(store, sms).run(stop, 1.0)):
        await until(lambda: "retries" in log and "mark" in log, "the pass to reach the retries")
        assert "marked" not in log, "the retries waited for the mark"
        # An absence check, not a synchronisation: a loop that did not wait for the hand-off would run dozens
        # of 1-ms passes (and claims) in this window.
        await asyncio.sleep(0.05)
        assert log.count("claim") == 1, "claimed again before the previous claim was handed off"
        release.set()
        await until(lambda: row.fallback is F.SMS_SENT, "the SMS to be recorded")
        await until(lambda: log.count("claim") > 1, "the next claim")
    assert log.index("marked") < [i for i, e in enumerate(log) if e == "claim"][1]


async def test_timer_does_not_send_when_the_chat_succeeded_before_the_batch_mark() -> None:
    """A Read receipt between the claim and the batch mark: no SMS, the fallback is cancelled."""
    store = MemoryStore()
    row = store.add(chat=C.SENT, due_at=0.0)
    sms = ScriptedSms()
    real_batch = store.mark_sms_batch_started

    async def read_first(claimed: Any) -> set[uuid.UUID]:
        await store.apply([service.Outcome(message_id=row.id, event=loops.policy.ChatReceipt(R.READ))])
        return await real_batch(claimed)

    store.mark_sms_batch_started = read_first  # type: ignore[method-assign]
    async with running(lambda stop: timer(store, sms).run(stop, 1.0)):
        await until(lambda: row.fallback is F.CANCELLED, "the fallback to stand down")
    assert sms.calls == 0
    assert "sms_not_needed" in store.kinds(row.id)


async def test_timer_sends_when_the_batch_mark_fails() -> None:
    """The batch mark hits a database error: each SMS takes its own mark before it is sent."""
    store = MemoryStore()
    row = store.add(chat=C.SENT, due_at=0.0)
    sms = ScriptedSms()
    marked_at_send: list[float | None] = []
    real_send = sms.send

    async def broken(claimed: Any) -> set[uuid.UUID]:
        raise loops.errors.StoreError("connection lost")

    async def send(**kw: Any) -> str:
        marked_at_send.append(store.rows[uuid.UUID(kw["fallback_id"])].sms_started_at)
        return await real_send(**kw)

    store.mark_sms_batch_started = broken  # type: ignore[method-assign]
    sms.send = send  # type: ignore[method-assign]
    async with running(lambda stop: timer(store, sms).run(stop, 1.0)):
        await until(lambda: row.fallback is F.SMS_SENT, "the SMS to be recorded")
    assert sms.received == [str(row.id)]
    assert marked_at_send == [0.0], "marked in flight by its own write before the request"


# ---- recovery -------------------------------------------------------------------------------------------
async def _in_flight_sms(store: MemoryStore) -> Any:
    row = store.add(chat=C.SENT, due_at=0.0)
    [claimed] = await store.claim_due(10, 120)
    assert await store.mark_sms_started(row.id, claimed.attempt)
    store.clock.advance(121)
    return row


@pytest.mark.parametrize(
    ("result", "resend", "fallback", "sent_again"),
    [
        (ports.LookupResult.FOUND, False, F.SMS_SENT, False),
        (ports.LookupResult.ABSENT, False, F.SMS_SENT, True),
        (ports.LookupResult.UNKNOWN, False, F.HELD, False),
        (ports.LookupResult.UNKNOWN, True, F.SMS_SENT, True),
    ],
)
async def test_recovery_reconciles_an_in_flight_sms(
    result: ports.LookupResult, resend: bool, fallback: F, sent_again: bool
) -> None:
    store = MemoryStore()
    row = await _in_flight_sms(store)
    sms = ScriptedSms(lookup=result)
    t = timer(store, sms)
    recovery = loops.RecoveryLoop(store, t, resend=resend)
    async with running(lambda stop: t.run(stop, 1.0)):
        await recovery.sweep()
        await until(lambda: row.fallback is fallback, f"the fallback to end {fallback}")
    assert (len(sms.received) == 1) is sent_again
    if fallback is F.HELD:
        assert row.hold_reason == "sms_unknown"


async def test_recovery_sends_again_a_claim_that_never_started() -> None:
    store = MemoryStore()
    row = store.add()
    await store.claim_sends(10, 60)
    store.clock.advance(61)
    recovery = loops.RecoveryLoop(store, timer(store, ScriptedSms()), resend=False)
    await recovery.sweep()
    assert row.chat is C.ACCEPTED
    assert "send_requeued" in store.kinds(row.id)


@pytest.mark.parametrize(
    ("result", "chat"),
    [
        (ports.LookupResult.FOUND, C.SENT),
        (ports.LookupResult.ABSENT, C.ACCEPTED),
        (ports.LookupResult.UNKNOWN, C.UNKNOWN),
    ],
)
async def test_recovery_reconciles_an_unknown_send(result: ports.LookupResult, chat: C) -> None:
    store = MemoryStore(reconcile_delay_s=60.0)
    row = store.add()
    [claimed] = await store.claim_sends(10, 60)
    assert await store.mark_send_started(row.id, claimed.attempt)
    store.clock.advance(61)
    recovery = loops.RecoveryLoop(
        store, timer(store, ScriptedSms()), resend=False, chat=ScriptedChat(lookup=result)
    )
    await recovery.sweep()  # lease expired: unknown, first lookup at mark + 60 s = now
    assert row.chat is chat
    if chat is C.SENT:
        assert row.provider_id == "cams-found"
    if chat is C.UNKNOWN:
        assert row.reconcile_at == store.clock.now + 60.0, "looked up again later"


async def test_recovery_survives_the_database_going_away() -> None:
    store = MemoryStore()
    store.down = True
    recovery = loops.RecoveryLoop(store, timer(store, ScriptedSms()), resend=False, interval_s=0.001)
    sweeps = 0
    real = store.recover_sends

    async def counted(limit: int) -> tuple[int, int]:
        nonlocal sweeps
        sweeps += 1
        return await real(limit)

    store.recover_sends = counted  # type: ignore[method-assign]
    async with running(recovery.run) as stop:
        await until(lambda: sweeps >= 3, "three sweeps, each meeting StoreError")
        assert not stop.is_set()
    assert sweeps >= 3, "the loop kept sweeping: none of the errors ended it"


async def test_writer_applies_batches_in_order() -> None:
    store = MemoryStore()
    row = store.add(chat=C.SENDING)
    writer = loops.Writer(store)
    done = asyncio.Event()
    writer.put(service.Outcome(message_id=row.id, event=loops.policy.SendOk(), provider_message_id="p"))
    writer.put(service.Outcome(message_id=uuid.uuid4(), event=loops.policy.SendOk()))
    done.set()
    await asyncio.wait_for(writer.run(done), HANG_S)
    assert (row.chat, row.provider_id) == (C.SENT, "p")


async def test_a_refused_sms_is_recorded_as_a_retry_through_a_database_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database drops between the refused SMS and its retry write: the write is retried until it lands,
    so the fallback is retried (not left in flight for reconciliation, which SendMessageToGlobe cannot do)."""
    monkeypatch.setattr(loops, "backoff", lambda attempt, **kw: 0.001)
    store = MemoryStore()
    row = store.add(chat=C.SENT, due_at=0.0)
    sms = ScriptedSms("refused")
    real = sms.send

    async def refuse_then_drop_the_database(**kw: Any) -> str:
        try:
            return await real(**kw)
        finally:
            store.down = True
            asyncio.get_running_loop().call_later(0.02, setattr, store, "down", False)

    sms.send = refuse_then_drop_the_database  # type: ignore[method-assign]
    async with running(lambda stop: timer(store, sms).run(stop, 1.0)):
        await until(lambda: "sms_retry" in store.kinds(row.id), "the retry to be recorded after the outage")
    assert row.sms_started_at is None, "not left in flight"


async def test_a_success_during_the_sms_retries_stops_them() -> None:
    """A Read receipt lands while the SMS is being retried: the next attempt is not sent (cancelled)."""
    store = MemoryStore()
    row = store.add(chat=C.SENT, due_at=0.0)
    sms = ScriptedSms("refused")
    async with running(lambda stop: timer(store, sms).run(stop, 1.0)):
        await until(lambda: "sms_retry" in store.kinds(row.id), "the first attempt to be refused")
        await store.apply([service.Outcome(message_id=row.id, event=loops.policy.ChatReceipt(R.READ))])
        store.clock.advance(61)
        await until(lambda: row.fallback is F.CANCELLED, "the retry to stand down")
    assert sms.received == []
    assert sms.calls == 1
