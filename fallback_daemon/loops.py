"""Supervised loops: the sender, the timer (fallback firing), and the recovery sweep.

Each loop stops claiming when `stop` is set, lets in-flight provider calls finish within the grace period,
and always re-raises CancelledError.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from fallback_daemon import errors, metrics, policy, ports, ratelimit, service
from fallback_daemon.providers import acs, sms_routing

log = structlog.get_logger("fallback_daemon.loops")


def template_params(row: asyncpg.Record) -> dict[str, str]:
    """The message's TemplateParams (stored as the JSON string sent to CAMS), for template SMS providers."""
    raw = row["template_params"]
    if not raw:
        return {}
    value = json.loads(raw)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Capped exponential backoff with full jitter in [½, 1] of the step."""
    step = min(cap, base * 2 ** max(0, attempt - 1))
    return step * (0.5 + random.random() / 2)


async def wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    """Sleep until `wake` or `stop` is set, or `timeout` passes; clears `wake`."""
    if timeout > 0 and not stop.is_set() and not wake.is_set():
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
    wake.clear()


class Writer:
    """Collects outcomes from concurrent provider calls and applies them in batched transactions."""

    def __init__(self, svc: service.Service, *, max_batch: int = 500) -> None:
        self._svc = svc
        self._queue: asyncio.Queue[service.Outcome] = asyncio.Queue()
        self._max = max_batch

    def put(self, outcome: service.Outcome) -> None:
        self._queue.put_nowait(outcome)

    async def run(self, done: asyncio.Event) -> None:
        """Apply batches until `done` is set and the queue is drained."""
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
        for attempt in range(1, 1000):
            try:
                await self._svc.apply(batch)
                return
            except errors.StoreError as exc:
                # Nothing is lost while we retry: the rows keep their leases until the recovery sweep.
                log.warning("outcome_write_failed", error=str(exc), attempt=attempt, batch=len(batch))
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
        svc: service.Service,
        chat: ports.ChatApi,
        limiter: ratelimit.RateLimiter,
        *,
        concurrency: int,
        max_attempts: int,
        lease_s: float,
        poll_s: float = 1.0,
    ) -> None:
        self.svc, self.chat, self.limiter = svc, chat, limiter
        self.pool = Pool(concurrency, "send")
        self.writer = Writer(svc)
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.wake = asyncio.Event()
        self._stop = asyncio.Event()  # replaced by run()'s: sends still waiting for their slot give up on it

    async def run(self, stop: asyncio.Event, grace_s: float) -> None:
        writer_done = asyncio.Event()
        self._stop = stop
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
        rows = await self.svc.claim_sends(room, self.lease_s)
        if not rows:
            return 0
        try:
            slots = await self.limiter.reserve(len(rows))
        except errors.StoreError:
            # Claimed but never sent: hand them back rather than let the lease call their outcome unknown.
            for row in rows:
                with contextlib.suppress(errors.StoreError):
                    await self.svc.retry_send(row["id"], 0.0, "rate limiter unavailable")
            raise
        for row, slot in zip(rows, slots, strict=True):
            await self.pool.submit(lambda row=row, slot=slot: self._send(row, slot))
        return len(rows)

    async def _send(self, row: asyncpg.Record, slot: float) -> None:
        mid: uuid.UUID = row["id"]
        try:
            kept = await self.limiter.wait(slot, self._stop)
        except errors.StoreError as exc:  # a missed slot could not be replaced
            kept, reason = None, f"rate limiter unavailable: {exc}"
        else:
            reason = "shutting down before its send slot"
        if kept is None:  # never sent: hand the message back now instead of leaving it to the lease
            with contextlib.suppress(errors.StoreError):
                await self.svc.retry_send(mid, 0.0, reason)
            return
        started = time.perf_counter()
        try:
            pid = await self.chat.send(task_id=str(mid), params=row["params"])
        except errors.TransientError as exc:
            metrics.provider_latency.labels("cams").observe(time.perf_counter() - started)
            if acs.is_throttling(exc.code):
                metrics.throttled.labels("cams").inc()
            if row["send_attempts"] >= self.max_attempts:
                metrics.sends.labels("failed").inc()
                self.writer.put(
                    service.Outcome(
                        message_id=mid, event=policy.SendFailed(), error=f"retries exhausted: {exc}"
                    )
                )
            else:
                metrics.sends.labels("retry").inc()
                await self.svc.retry_send(mid, backoff(row["send_attempts"]), str(exc))
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


class TimerLoop:
    """Fires due fallbacks: claim (armed → firing, committed), then send the SMS, then record it."""

    def __init__(
        self,
        svc: service.Service,
        sms: ports.SmsGateway,
        *,
        batch: int,
        lease_s: float,
        max_sleep_s: float,
        concurrency: int,
        sms_max_attempts: int,
    ) -> None:
        self.svc, self.sms = svc, sms
        self.batch, self.lease_s, self.max_sleep_s = batch, lease_s, max_sleep_s
        self.pool = Pool(concurrency, "sms")
        self.writer = Writer(svc)
        self.sms_max_attempts = sms_max_attempts
        self.wake = asyncio.Event()
        self.on_fired: Callable[[asyncpg.Record], None] | None = None

    async def run(self, stop: asyncio.Event, grace_s: float) -> None:
        writer_done = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.writer.run(writer_done), name="sms-writer")
            try:
                await self._loop(stop)
            finally:
                await self.pool.drain(grace_s)
                writer_done.set()

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                rows = await self.svc.claim_due(self.batch, self.lease_s)
                for row in rows:
                    await self.submit(row)
                if len(rows) == self.batch:
                    continue  # more are due right now
                delay = await self.svc.next_due_in()
            except errors.StoreError as exc:
                log.warning("timer_claim_failed", error=str(exc))
                delay = None
            # Timers are >= 60 s out, so sleeping until the next due time (capped) keeps lateness low.
            sleep = self.max_sleep_s if delay is None else min(self.max_sleep_s, max(0.0, delay))
            await wait_any(stop, self.wake, sleep)

    async def submit(self, row: asyncpg.Record, *, resend: bool = False) -> None:
        if resend:
            metrics.recovered.labels("resend").inc()
            await self.pool.submit(lambda: self._send_sms(row))
            return
        if row["fallback_state"] == "held":
            metrics.fallbacks_held.labels(row["hold_reason"] or "unknown").inc()
            log.warning(
                "fallback_held", message_id=str(row["id"]), reason=row["hold_reason"], channel=row["channel"]
            )
            return
        metrics.fallbacks_fired.labels(row["fire_reason"] or "unknown").inc()
        # The operator's "what happened to the message for +65…?" line; logs.mask_phones masks `to`.
        log.info(
            "fallback_firing",
            message_id=str(row["id"]),
            reason=row["fire_reason"],
            channel=row["channel"],
            to=row["to_number"],
        )
        if row["lateness_s"] is not None and row["fire_reason"] == "timeout":
            metrics.timer_lateness.observe(max(0.0, row["lateness_s"]))
        if self.on_fired is not None:
            self.on_fired(row)
        await self.pool.submit(lambda: self._send_sms(row))

    async def _send_sms(self, row: asyncpg.Record) -> None:
        mid: uuid.UUID = row["id"]
        text = row["sms_text"] or ""
        # A router picks the provider per To prefix / channel; the event then names the provider that sent it.
        gateway = (
            self.sms.pick(to=row["to_number"], channel=row["channel"] or "")
            if isinstance(self.sms, sms_routing.SmsRouter)
            else self.sms
        )
        for attempt in range(1, self.sms_max_attempts + 1):
            started = time.perf_counter()
            try:
                sms_id = await gateway.send(
                    fallback_id=str(mid), to=row["to_number"], text=text, template_params=template_params(row)
                )
            except errors.TransientError as exc:
                metrics.provider_latency.labels("sms").observe(time.perf_counter() - started)
                if acs.is_throttling(exc.code):
                    metrics.throttled.labels("sms").inc()
                if attempt == self.sms_max_attempts:
                    metrics.fallback_sms.labels("rejected").inc()
                    self.writer.put(
                        service.Outcome(
                            message_id=mid, event=policy.SmsRejected(), error=f"retries exhausted: {exc}"
                        )
                    )
                    return
                await asyncio.sleep(backoff(attempt, cap=10.0))
            except errors.PermanentError as exc:
                metrics.provider_latency.labels("sms").observe(time.perf_counter() - started)
                metrics.fallback_sms.labels("rejected").inc()
                self.writer.put(service.Outcome(message_id=mid, event=policy.SmsRejected(), error=str(exc)))
                return
            except errors.AmbiguousError as exc:
                metrics.fallback_sms.labels("unknown").inc()
                # The SMS may have gone out: leave the row `firing`; the recovery sweep applies the
                # configured policy (park = at-most-once, resend = at-least-once) after the lease.
                log.warning("sms_outcome_unknown", message_id=str(mid), error=str(exc))
                return
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
                return


class RecoveryLoop:
    """Finds rows whose lease expired (a replica died mid-send or mid-firing) and applies the policy."""

    def __init__(
        self, svc: service.Service, timer: TimerLoop, *, resend: bool, interval_s: float = 5.0
    ) -> None:
        self.svc, self.timer, self.resend, self.interval_s = svc, timer, resend, interval_s
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                for row in await self.svc.recover(limit=500, resend=self.resend, lease_s=self.timer.lease_s):
                    await self.timer.submit(row, resend=True)
            except errors.StoreError as exc:
                log.warning("recovery_failed", error=str(exc))
            await wait_any(stop, self.wake, self.interval_s)
