"""Supervised loops: the sender, the timer (fallback firing), and the recovery sweep.

Each loop stops claiming when `stop` is set, lets in-flight provider calls finish within the grace period,
and always re-raises CancelledError. Every outbound call is a durable attempt: claimed with a lease, marked in
flight (its own commit) just before the request is written, and retried through the database, never in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import random
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog

from fallback_daemon import metrics
from fallback_daemon.core import errorclasses, errors, model, policy, ports
from fallback_daemon.engine import service

log = structlog.get_logger("fallback_daemon.engine.loops")


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Capped exponential backoff with full jitter in [½, 1] of the step."""
    step = min(cap, base * 2.0 ** max(0, attempt - 1))
    return step * (0.5 + random.random() / 2)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, returning early when `stop` is set (the one stoppable sleep of the loops)."""
    if seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def supervise(name: str, stop: asyncio.Event, run: Callable[[], Awaitable[None]]) -> None:
    """Run a loop until `stop`; an unexpected exception is logged and the loop restarted after a backoff.

    Database faults are weather, not death: a loop that meets an error nobody mapped (a driver state error
    after a server restart, say) must not end the TaskGroup and with it the process.
    """
    failures = 0
    while not stop.is_set():
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the supervisor's whole job: keep the loop alive
            failures += 1
            metrics.loop_restarts.labels(name).inc()
            log.error(
                "loop_crashed",
                loop=name,
                failures=failures,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            await sleep_or_stop(stop, backoff(failures, cap=10.0))


async def record(
    write: Callable[[], Awaitable[None]], stop: asyncio.Event, *, budget_s: float = 60.0
) -> bool:
    """Retry a small write that records a fact only this process knows, through a database outage.

    Bounded by `budget_s` and, once `stop` is set, by a few more tries; False when it never got through.
    """
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        attempt += 1
        try:
            await write()
            return True
        except errors.StoreError as exc:
            log.warning("record_failed", error=str(exc), attempt=attempt)
        if time.monotonic() >= deadline or (stop.is_set() and attempt >= 3):
            return False
        await asyncio.sleep(backoff(attempt, base=0.2, cap=2.0))


async def wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Sleep until `wake` or `stop` is set, or `seconds` pass; clears `wake`."""
    if seconds > 0 and not stop.is_set() and not wake.is_set():
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
    wake.clear()


class Writer:
    """Collects outcomes from concurrent provider calls and applies them in batched transactions."""

    def __init__(self, svc: ports.EngineStore, *, max_batch: int = 500, grace_s: float = 10.0) -> None:
        self._svc = svc
        self._queue: asyncio.Queue[service.Outcome] = asyncio.Queue()
        self._max = max_batch
        self._grace_s = grace_s
        self._done: asyncio.Event | None = None
        self._deadline: float | None = None  # monotonic; set when shutdown begins

    def put(self, outcome: service.Outcome) -> None:
        self._queue.put_nowait(outcome)

    async def run(self, done: asyncio.Event) -> None:
        """Apply batches until `done` is set and the queue is drained (or the grace after `done` ran out)."""
        self._done = done
        while not (done.is_set() and self._queue.empty()):
            get = asyncio.ensure_future(self._queue.get())
            finished = asyncio.ensure_future(done.wait())
            await asyncio.wait([get, finished], return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            if not get.done():
                get.cancel()
                continue
            batch = [get.result()]
            while len(batch) < self._max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._apply(batch)

    async def _apply(self, batch: list[service.Outcome]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._svc.apply(batch)
                return
            except errors.StoreError as exc:
                # Nothing is lost while we retry: the rows keep their leases and in-flight marks, so the
                # recovery sweep (any replica) reconciles them with the provider if we never get to write.
                log.warning("outcome_write_failed", error=str(exc), attempt=attempt, batch=len(batch))
            if self._done is not None and self._done.is_set():
                now = time.monotonic()
                self._deadline = self._deadline or now + self._grace_s
                if now >= self._deadline:
                    log.error("outcomes_left_to_recovery", batch=len(batch), pending=self._queue.qsize())
                    while not self._queue.empty():  # the same holds for every outcome still queued
                        self._queue.get_nowait()
                    return
            await asyncio.sleep(backoff(attempt, cap=5.0))


class Pool:
    """A bounded set of named in-flight tasks (provider calls), awaited on shutdown."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self._sem = asyncio.Semaphore(size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = 0  # moves with the semaphore (a task's done-callback runs later than its release)
        self._name = name

    async def submit(self, coro_fn: Callable[[], Awaitable[None]]) -> None:
        await self._sem.acquire()
        self._running += 1

        async def run() -> None:
            try:
                await coro_fn()
            finally:
                self._running -= 1
                self._sem.release()

        task = asyncio.create_task(run(), name=f"{self._name}-call")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call_crashed", pool=self._name, exc_info=task.exception())

    async def drain(self, grace_s: float) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for t in pending:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)

    @property
    def busy(self) -> int:
        # Not len(self._tasks): a finished task leaves that set only in a later loop iteration, so a claim
        # loop that saw "full" and awaited wait_free() (which then did not block) would spin without yielding.
        return self._running

    async def wait_free(self) -> None:
        async with self._sem:
            pass


class SenderLoop:
    """Claims accepted messages, reserves a paced send slot for each, and calls SendChatappMessage in it."""

    def __init__(
        self,
        svc: ports.EngineStore,
        chat: ports.ChatApi,
        limiter: ports.RateLimit,
        *,
        concurrency: int,
        max_attempts: int,
        lease_s: float,
        poll_s: float = 1.0,
    ) -> None:
        self.svc, self.chat, self.limiter = svc, chat, limiter
        self.pool = Pool(concurrency, "send")
        self.writer = Writer(svc)  # its grace is set from run()'s
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.wake = asyncio.Event()
        self._stop = asyncio.Event()  # replaced by run()'s: sends still waiting for their slot give up on it

    async def run(self, stop: asyncio.Event, grace_s: float) -> None:
        writer_done = asyncio.Event()
        self._stop = stop
        self.writer._grace_s = grace_s
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.writer.run(writer_done), name="send-writer")
            try:
                await self._claim_loop(stop)
            finally:
                await self.pool.drain(grace_s)
                writer_done.set()

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                claimed = await self._claim_once()
            except errors.StoreError as exc:
                log.warning("send_claim_failed", error=str(exc))
                claimed = 0
            if claimed == 0:
                await wait_any(stop, self.wake, self.poll_s)

    async def _claim_once(self) -> int:
        free = self.pool.size - self.pool.busy
        if free <= 0:
            await self.pool.wait_free()
            return 1
        room = min(free, self.limiter.room())
        if room <= 0:  # slots booked up to the horizon: claim more when they draw near (or stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.limiter.wait_hint())
            return 1
        # Claim first, then reserve exactly one slot per claimed row: no slot is ever reserved and wasted.
        claimed = await self.svc.claim_sends(room, self.lease_s)
        if not claimed:
            return 0
        # Claimed is not in flight: only a committed mark lets a request out. The whole claim is marked in one
        # round trip before its slots are reserved, so the write never makes a call miss its slot (a per-send
        # mark after the slot wait cost 35 % of the steady rate); a crash before the calls leaves marks that
        # reconciliation resolves (CAMS says absent, the message is sent again).
        try:
            marked = await self.svc.mark_sends_started(claimed)
        except errors.StoreError:
            marked = set()  # not marked: the leases run out and the messages are simply sent again
        rows = [row for row in claimed if row.id in marked]
        for row in claimed:
            if row.id not in marked:
                log.warning("send_claim_lost", message_id=str(row.id), attempt=row.attempt)
        if not rows:
            return len(claimed)
        try:
            slots = await self.limiter.reserve(len(rows))
        except errors.StoreError:
            # Claimed but never sent: hand them back rather than let the lease call their outcome unknown.
            for row in rows:
                with contextlib.suppress(errors.StoreError):
                    await self.svc.retry_send(row.id, 0.0, "rate limiter unavailable", row.attempt)
            raise
        for row, slot in zip(rows, slots, strict=True):
            await self.pool.submit(functools.partial(self._send, row, slot))
        return len(rows)

    async def _send(self, row: model.ClaimedSend, slot: float) -> None:
        mid, attempt = row.id, row.attempt
        try:
            kept = await self.limiter.wait(slot, self._stop)
        except errors.StoreError as exc:  # a missed slot could not be replaced
            kept, reason = None, f"rate limiter unavailable: {exc}"
        else:
            reason = "shutting down before its send slot"
        if kept is None:  # never sent: hand the message back now (clears the mark) instead of leaving it
            with contextlib.suppress(errors.StoreError):
                await self.svc.retry_send(mid, 0.0, reason, attempt)
            return
        started = time.perf_counter()
        try:
            pid = await self.chat.send(task_id=str(mid), params=row.params)
        except errors.TransientError as exc:
            metrics.provider_latency.labels("cams").observe(time.perf_counter() - started)
            await self._retry_later(mid, attempt, exc)
        except errors.PermanentError as exc:
            metrics.provider_latency.labels("cams").observe(time.perf_counter() - started)
            metrics.sends.labels("failed").inc()
            self.writer.put(service.Outcome(message_id=mid, event=policy.SendFailed(), error=str(exc)))
        except errors.AmbiguousError as exc:
            metrics.sends.labels("unknown").inc()
            self.writer.put(service.Outcome(message_id=mid, event=policy.SendUnknown(), error=str(exc)))
        else:
            metrics.provider_latency.labels("cams").observe(time.perf_counter() - started)
            metrics.sends.labels("ok").inc()
            self.writer.put(
                service.Outcome(
                    message_id=mid,
                    event=policy.SendOk(),
                    provider_message_id=pid,
                    detail={"provider_message_id": pid},
                )
            )

    async def _retry_later(self, mid: uuid.UUID, attempt: int, exc: errors.TransientError) -> None:
        """Nothing arrived (refused, throttled, 5xx): back to `accepted` after a backoff, or failed."""
        throttled = isinstance(exc, errors.Throttled)
        if throttled:
            metrics.throttled.labels("cams").inc()
        if attempt >= self.max_attempts:
            metrics.sends.labels("failed").inc()
            self.writer.put(
                service.Outcome(message_id=mid, event=policy.SendFailed(), error=f"retries exhausted: {exc}")
            )
            return
        metrics.sends.labels("retry").inc()
        delay = backoff(attempt)
        if isinstance(exc, errors.Throttled) and exc.retry_after_s:
            delay = max(delay, exc.retry_after_s)
        # We know nothing went out: keep trying to say so (a mark left behind means reconciliation).
        if not await record(lambda: self.svc.retry_send(mid, delay, str(exc), attempt), self._stop):
            log.warning("send_retry_not_recorded", message_id=str(mid))


class TimerLoop:
    """Fires due fallbacks: claim (armed → firing, committed), mark in flight, send the SMS, record it.

    A provider that refuses the connection, throttles or answers 5xx proved nothing went out: the attempt goes
    back to the database (`retry_sms`, capped jittered backoff) and is claimed again when due, for as long as
    the retry window lasts; only a permanent answer or an exhausted window is final.
    """

    def __init__(
        self,
        svc: ports.EngineStore,
        sms: ports.SmsGateway,
        *,
        batch: int,
        lease_s: float,
        max_sleep_s: float,
        concurrency: int,
        sms_max_attempts: int,
        retry_window_s: float = 1800.0,
        retry_cap_s: float = 60.0,
    ) -> None:
        self.svc, self.sms = svc, sms
        self.batch, self.lease_s, self.max_sleep_s = batch, lease_s, max_sleep_s
        self.pool = Pool(concurrency, "sms")
        self.writer = Writer(svc)
        self.sms_max_attempts = sms_max_attempts
        self.retry_window_s, self.retry_cap_s = retry_window_s, retry_cap_s
        self.wake = asyncio.Event()
        self._stop = asyncio.Event()  # replaced by run()'s

    async def run(self, stop: asyncio.Event, grace_s: float) -> None:
        writer_done = asyncio.Event()
        self.writer._grace_s = grace_s
        self._stop = stop
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.writer.run(writer_done), name="sms-writer")
            try:
                await self._loop(stop)
            finally:
                await self.pool.drain(grace_s)
                writer_done.set()

    async def _loop(self, stop: asyncio.Event) -> None:
        # A claim's hand-off (its in-flight marks, then a free SMS slot per row) runs while this pass goes on
        # to the retries and the next due time: only the claim itself is on the path of the next timer. It is
        # awaited before the next claim, so no more than one claim waits for SMS slots (a fallback claimed
        # early could no longer be cancelled by a success receipt).
        dispatch: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                try:
                    if dispatch is not None:
                        await dispatch
                        dispatch = None
                    rows = await self.svc.claim_due(self.batch, self.lease_s)
                    if rows:
                        dispatch = asyncio.create_task(self._submit_claimed(rows), name="timer-dispatch")
                    retries = await self.svc.claim_sms_retries(self.batch, self.lease_s)
                    for row in retries:
                        metrics.recovered.labels("sms_retry").inc()
                        await self.pool.submit(functools.partial(self._send_sms, row))
                    if len(rows) == self.batch or len(retries) == self.batch:
                        continue  # more are due right now
                    delay = await self.svc.next_due_in()
                except errors.StoreError as exc:
                    log.warning("timer_claim_failed", error=str(exc))
                    delay = None
                # Timers are >= 60 s out, so sleeping until the next due time (capped) keeps lateness low.
                sleep = self.max_sleep_s if delay is None else min(self.max_sleep_s, max(0.0, delay))
                await wait_any(stop, self.wake, sleep)
        finally:
            if dispatch is not None:  # a claim is never left unsubmitted (pool.drain then waits for its SMS)
                await dispatch

    async def _submit_claimed(self, rows: list[model.FallbackSms]) -> None:
        """Submit one claim's fresh firings, their in-flight marks written first in one round trip.

        As with sends, the mark comes before the wait for a free SMS slot: a crash in between leaves a mark
        that the recovery sweep resolves by asking the provider (absent: sent again). A row the batch did not
        mark (the chat succeeded since the claim, or the claim was lost) takes the per-row path, which finds
        out which and records it.
        """
        fresh = [row for row in rows if not row.held]
        try:
            marked = await self.svc.mark_sms_batch_started(fresh)
        except errors.StoreError as exc:  # each row tries its own mark (and handles its failure) instead
            log.warning("sms_mark_failed", error=str(exc), count=len(fresh))
            marked = set()
        for row in rows:
            await self.submit(row, marked=row.id in marked)

    async def submit(self, row: model.FallbackSms, *, resend: bool = False, marked: bool = False) -> None:
        """Send a claimed fallback's SMS (`marked`: its in-flight mark is already committed)."""
        if resend:
            metrics.recovered.labels("resend").inc()
            await self.pool.submit(lambda: self._send_sms(row))
            return
        if row.held:
            metrics.fallbacks_held.labels(row.hold_reason or "unknown").inc()
            log.warning("fallback_held", message_id=str(row.id), reason=row.hold_reason, channel=row.channel)
            return
        metrics.fallbacks_fired.labels(row.fire_reason or "unknown").inc()
        # The operator's "what happened to the message for +65…?" line; logs.mask_phones masks `to`.
        log.info(
            "fallback_firing",
            message_id=str(row.id),
            reason=row.fire_reason,
            channel=row.channel,
            to=row.to,
        )
        if row.lateness_s is not None and row.fire_reason == "timeout":
            metrics.timer_lateness.observe(max(0.0, row.lateness_s))
        await self.pool.submit(lambda: self._send_sms(row, marked=marked))

    async def _send_sms(self, row: model.FallbackSms, *, marked: bool = False) -> None:
        mid, attempt = row.id, row.attempt
        # A router picks the provider per To prefix / channel; the event then names the provider that sent it.
        gateway = self.sms.route(to=row.to, channel=row.channel)
        try:
            if not marked and not await self.svc.mark_sms_started(mid, attempt):
                # Either the chat succeeded since the firing (the SMS is not needed any more) or the claim was
                # lost to the recovery sweep / another replica.
                if await self.svc.sms_not_needed(mid, attempt):
                    metrics.fallback_sms.labels("not_needed").inc()
                else:
                    log.warning("sms_claim_lost", message_id=str(mid), attempt=attempt)
                return
        except errors.StoreError as exc:  # not in flight: the lease runs out and claim_sms_retries resends
            log.warning("sms_mark_failed", message_id=str(mid), error=str(exc))
            return
        started = time.perf_counter()
        try:
            sms_id = await gateway.send(
                fallback_id=str(mid),
                to=row.to,
                text=row.text,
                template_params=row.template_params,
            )
        except errors.TransientError as exc:
            metrics.provider_latency.labels("sms").observe(time.perf_counter() - started)
            await self._retry_sms(row, gateway.name, exc)
        except errors.PermanentError as exc:
            metrics.provider_latency.labels("sms").observe(time.perf_counter() - started)
            metrics.fallback_sms.labels("rejected").inc()
            detail = {"provider": gateway.name, "error_code": exc.code}
            if errorclasses.sms_opted_out(exc.code, str(exc)):
                # Recorded as such: the event's error_class makes the database add the number to the
                # opt-out list in the same transaction (migration 0009's trigger; docs/guards.md).
                detail["error_class"] = errorclasses.OPTED_OUT
            self.writer.put(
                service.Outcome(message_id=mid, event=policy.SmsRejected(), error=str(exc), detail=detail)
            )
        except errors.AmbiguousError as exc:
            metrics.fallback_sms.labels("unknown").inc()
            # The SMS may have gone out: recorded now, still `firing` and marked in flight; after the lease
            # the recovery sweep asks the provider (found / absent) before applying the configured policy.
            log.warning("sms_outcome_unknown", message_id=str(mid), error=str(exc))
            self.writer.put(
                service.Outcome(
                    message_id=mid,
                    event=policy.SmsUnknown(),
                    error=str(exc),
                    detail={"provider": gateway.name},
                )
            )
        else:
            metrics.provider_latency.labels("sms").observe(time.perf_counter() - started)
            metrics.fallback_sms.labels("sent").inc()
            self.writer.put(
                service.Outcome(
                    message_id=mid,
                    event=policy.SmsSent(),
                    sms_provider_id=sms_id,
                    detail={"sms_id": sms_id, "provider": gateway.name},
                )
            )

    async def _retry_sms(self, row: model.FallbackSms, provider: str, exc: errors.TransientError) -> None:
        mid, attempt = row.id, row.attempt
        if isinstance(exc, errors.Throttled):
            metrics.throttled.labels("sms").inc()
        delay = backoff(attempt, base=1.0, cap=self.retry_cap_s)
        if isinstance(exc, errors.Throttled) and exc.retry_after_s:
            delay = max(delay, exc.retry_after_s)
        age = row.firing_age_s
        if age + delay > self.retry_window_s or attempt >= self.sms_max_attempts:
            metrics.fallback_sms.labels("retries_exhausted").inc()
            self.writer.put(
                service.Outcome(
                    message_id=mid,
                    event=policy.SmsRetryExhausted(),
                    hold_reason="sms_retries_exhausted",
                    error=f"SMS retries exhausted after {attempt} attempt(s) over {age:.0f} s: {exc}",
                    detail={"provider": provider, "attempts": attempt},
                )
            )
            return
        metrics.fallback_sms.labels("retry").inc()
        # We know this SMS did not go out: keep trying to record that while the database is away, because a
        # mark left behind means reconciliation, and a provider without a query API (SendMessageToGlobe, SNS)
        # cannot tell, so the fallback would be parked as sms_unknown instead of simply retried.
        if not await record(lambda: self.svc.retry_sms(mid, attempt, delay, str(exc), provider), self._stop):
            log.warning("sms_retry_not_recorded", message_id=str(mid))


class RecoveryLoop:
    """Sweeps expired leases and closes the unknown window where the provider can tell.

    - a send lease that expired before its request was written → sent again; after → `unknown`;
    - an `unknown` send → `ListChatappMessage` lookup: found → recorded as sent, absent → sent again,
      undecided → looked up again later, then left `unknown` for an operator;
    - an in-flight SMS whose outcome was never recorded → SMS lookup: found → `sms_sent`, absent → retried,
      undecided → the configured policy (park = at-most-once, resend = at-least-once).
    """

    def __init__(
        self,
        svc: ports.EngineStore,
        timer: TimerLoop,
        *,
        resend: bool,
        chat: ports.ChatApi | None = None,
        interval_s: float = 5.0,
        reconcile_max_attempts: int = 6,
        reconcile_delay_s: float = 60.0,
        lookup_concurrency: int = 8,
    ) -> None:
        self.svc, self.timer, self.resend, self.interval_s = svc, timer, resend, interval_s
        self.chat = chat
        self.reconcile_max_attempts = reconcile_max_attempts
        self.reconcile_delay_s = reconcile_delay_s
        self._lookups = asyncio.Semaphore(lookup_concurrency)
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except errors.StoreError as exc:
                log.warning("recovery_failed", error=str(exc))
            await wait_any(stop, self.wake, self.interval_s)

    async def sweep(self) -> None:
        """One pass: stale sends, in-flight SMS without an outcome, ambiguous chat sends due for a lookup."""
        requeued, unknown = await self.svc.recover_sends(500)
        if requeued:
            metrics.recovered.labels("send_requeued").inc(requeued)
        if unknown:
            metrics.recovered.labels("send_unknown").inc(unknown)
        lease = self.timer.lease_s
        firings = await self.svc.claim_stale_firings(100, lease)
        chats = await self.svc.claim_reconcile(100, lease) if self.chat is not None else []
        await asyncio.gather(
            *(self._reconcile_sms(r) for r in firings), *(self._reconcile_chat(r) for r in chats)
        )

    async def _lookup(self, call: Awaitable[ports.Lookup]) -> ports.Lookup:
        async with self._lookups:
            try:
                return await call
            except Exception as exc:  # a lookup must never decide by crashing: undecided
                return ports.Lookup(result=ports.LookupResult.UNKNOWN, detail=f"lookup failed: {exc}")

    async def _reconcile_sms(self, row: model.InFlightSms) -> None:
        mid = row.id
        gateway = self.timer.sms.route(to=row.to, channel=row.channel)
        since = row.started_at - datetime.timedelta(minutes=5)
        found = await self._lookup(
            gateway.lookup(
                fallback_id=str(mid),
                to=row.to,
                since=since,
                until=datetime.datetime.now(datetime.UTC),
            )
        )
        metrics.reconciled.labels("sms", found.result.value).inc()
        log.info("sms_reconciled", message_id=str(mid), result=found.result.value, detail=found.detail)
        try:
            if found.result is ports.LookupResult.FOUND:
                await self.svc.apply(
                    [
                        service.Outcome(
                            message_id=mid,
                            event=policy.SmsSent(),
                            sms_provider_id=found.provider_id,
                            detail={
                                "sms_id": found.provider_id,
                                "provider": gateway.name,
                                "reconciled": found.detail,
                            },
                        )
                    ]
                )
            elif found.result is ports.LookupResult.ABSENT:
                await self.svc.sms_absent(mid, row.attempt, found.detail)
                self.timer.wake.set()
            else:
                again = await self.svc.interrupt_firing(
                    mid, resend=self.resend, lease_s=self.timer.lease_s, detail=found.detail
                )
                if again is not None:
                    await self.timer.submit(again, resend=True)
        except errors.StoreError as exc:  # the lease runs out again; the next sweep asks again
            log.warning("sms_reconcile_not_recorded", message_id=str(mid), error=str(exc))

    async def _reconcile_chat(self, row: model.AmbiguousSend) -> None:
        assert self.chat is not None
        mid = row.id
        since = row.started_at - datetime.timedelta(minutes=5)
        try:
            known, peers = await self.svc.reconcile_context(mid, since)
        except errors.StoreError as exc:
            log.warning("send_reconcile_failed", message_id=str(mid), error=str(exc))
            return
        if peers:  # another ambiguous send to the same number: a list row could be either one
            found = ports.Lookup(
                result=ports.LookupResult.UNKNOWN,
                detail=f"{peers} other ambiguous send(s) to the same number in the window",
            )
        else:
            found = await self._lookup(
                self.chat.lookup(
                    task_id=str(mid),
                    params=row.params,
                    since=since,
                    until=datetime.datetime.now(datetime.UTC),
                    exclude_ids=known,
                )
            )
        log.info("send_reconciled", message_id=str(mid), result=found.result.value, detail=found.detail)
        try:
            if found.result is ports.LookupResult.FOUND:
                metrics.reconciled.labels("chat", "found").inc()
                await self.svc.apply(
                    [
                        service.Outcome(
                            message_id=mid,
                            event=policy.SendOk(),
                            provider_message_id=found.provider_id,
                            detail={
                                "provider_message_id": found.provider_id,
                                "reconciled": found.detail,
                                "provider_status": found.status,
                            },
                        )
                    ]
                )
            elif found.result is ports.LookupResult.ABSENT:
                metrics.reconciled.labels("chat", "absent").inc()
                await self.svc.apply(
                    [
                        service.Outcome(
                            message_id=mid,
                            event=policy.SendAbsent(),
                            detail={"reconciled": found.detail},
                        )
                    ]
                )
            elif row.lookups >= self.reconcile_max_attempts:
                metrics.reconciled.labels("chat", "gave_up").inc()
                await self.svc.reconcile_later(mid, None, found.detail)
            else:
                metrics.reconciled.labels("chat", "unknown").inc()
                delay = min(3600.0, self.reconcile_delay_s * 2.0 ** (row.lookups - 1))
                await self.svc.reconcile_later(mid, delay, found.detail)
        except errors.StoreError as exc:
            log.warning("send_reconcile_not_recorded", message_id=str(mid), error=str(exc))
