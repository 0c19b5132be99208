"""HTTP pushes of reports to one callback URL: batching (up to `batch_size`, flushed every `flush_ms`),
retries of pushes that did not get HTTP 200, and the outcome of every report recorded in its ReportLog.
Depending on the receipt delivery mode a report goes to an MNS queue instead of (or as well as) HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from fallback_daemon.sandbox import config as config_mod
from fallback_daemon.sandbox import journal as journal_mod

log = structlog.get_logger("fallback_daemon.sandbox.pusher")

MAX_CONCURRENT_PUSHES = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class Item:
    """A report ready to push, and where its fate is recorded."""

    payload: dict[str, Any]
    log: journal_mod.ReportLog


class Pusher:
    """One report stream (chatapp, sms, sms_domestic) to the callback URL `url()` returns at push time."""

    def __init__(
        self,
        *,
        name: str,
        url: Callable[[], str | None],
        config: config_mod.SandboxConfig,
        journal: journal_mod.Journal,
        mns: Callable[[Item], None] | None = None,
        delivery: Callable[[], str] = lambda: "http",
    ) -> None:
        self.name = name
        self._url = url
        self._mns = mns  # puts one report into this stream's MNS queue
        self._delivery = delivery  # "http" | "mns" | "both", read for every report
        self._config = config
        self._journal = journal
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[bool]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PUSHES)

    def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._loop_task = asyncio.create_task(self._run(), name=f"sandbox-pusher-{self.name}")

    async def stop(self) -> None:
        """Cancel the batching loop and in-flight pushes; queued reports are dropped."""
        tasks: list[asyncio.Task[Any]] = [*self._inflight]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None

    def enqueue(self, item: Item) -> None:
        if self._to_mns(items=[item]):
            return
        self._queue.put_nowait(item)

    async def push_now(self, items: list[Item]) -> bool:
        """Push these reports now, outside batching, and wait for the outcome (used for early receipts)."""
        if self._to_mns(items=items):
            return True
        return await self._deliver(items)

    def _to_mns(self, *, items: list[Item]) -> bool:
        """Put the reports into MNS when the delivery mode says so; True when HTTP is not wanted too."""
        mode = self._delivery()
        if mode == "http" or self._mns is None:
            return False
        for item in items:
            self._mns(item)
        return mode == "mns"

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if self._config.flush_ms:
                # Let reports produced in the same few ms join this push.
                await asyncio.sleep(self._config.flush_ms / 1000)
            batch = [first]
            while len(batch) < self._config.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver_in_slot(batch), name=f"sandbox-push-{self.name}")
            self._inflight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[bool]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sandbox_push_crashed", stream=self.name, exc_info=task.exception())

    async def _deliver_in_slot(self, batch: list[Item]) -> bool:
        try:
            return await self._deliver(batch)
        finally:
            self._slots.release()

    async def _deliver(self, batch: list[Item]) -> bool:
        body = json.dumps([item.payload for item in batch], ensure_ascii=False).encode()
        delay = self._config.push_backoff_s
        error = ""
        for attempt in range(self._config.push_retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            for item in batch:
                item.log.attempts += 1
            error = await self._post_once(body)
            if not error:
                self._settle(batch, posted=True, error=None)
                return True
        self._settle(batch, posted=False, error=error)
        log.warning("sandbox_push_failed", stream=self.name, reports=len(batch), error=error)
        return False

    async def _post_once(self, body: bytes) -> str:
        """One try; returns "" on HTTP 200, else what went wrong."""
        url = self._url()
        stats = self._journal.stats
        if url is None:
            return "no callback URL configured"
        if self._session is None:
            return "sandbox not started"
        stats.pushes += 1
        timeout = aiohttp.ClientTimeout(total=self._config.push_timeout_s)
        try:
            async with self._session.post(
                url, data=body, headers={"Content-Type": "application/json"}, timeout=timeout
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    return ""
                error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._journal.stats.push_failures += 1
        return error

    def _settle(self, batch: list[Item], *, posted: bool, error: str | None) -> None:
        stats = self._journal.stats
        for item in batch:
            item.log.posted = posted
            item.log.error = error
        if posted:
            stats.receipts_posted += len(batch)
        else:
            stats.receipts_failed += len(batch)
