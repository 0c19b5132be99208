"""The receipt producer: turns an accepted send into timed reports for the pushers.

Owns per-message scheduling (delays, reorder, duplicates, omitted TaskIds), the early Delivered push, and the
withheld `late` receipts with their release. Every task it starts is kept and cancelled on `stop()`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from fallback_daemon.sandbox import config as config_mod
from fallback_daemon.sandbox import journal as journal_mod
from fallback_daemon.sandbox import pusher as pusher_mod
from fallback_daemon.sandbox import world as world_mod

log = structlog.get_logger("fallback_daemon.sandbox.receipts")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(kw_only=True, eq=False)
class _Planned:
    """A report waiting for its turn in a message's sequence (compared by identity)."""

    delay_s: float
    item: pusher_mod.Item


@dataclasses.dataclass(kw_only=True)
class _Withheld:
    send: world_mod.ChatSend
    log: journal_mod.ReportLog
    timer: asyncio.Task[None] | None = None


class Producer:
    """Schedules reports for chat and SMS sends onto the three pushers."""

    def __init__(
        self,
        *,
        config: config_mod.SandboxConfig,
        world: world_mod.World,
        journal: journal_mod.Journal,
        chat: pusher_mod.Pusher,
        sms: pusher_mod.Pusher,
        sms_domestic: pusher_mod.Pusher,
    ) -> None:
        self._config = config
        self._world = world
        self._journal = journal
        self._chat = chat
        self._sms = sms
        self._sms_domestic = sms_domestic
        self._tasks: set[asyncio.Task[None]] = set()
        self._withheld: dict[int, _Withheld] = {}
        self._keys = itertools.count()

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._withheld.clear()

    # ---- chat -------------------------------------------------------------------------------------------

    async def chat_accepted(
        self, send: world_mod.ChatSend, outcome: world_mod.Outcome, entry: journal_mod.ChatEntry
    ) -> None:
        """Plan the reports of one accepted send; for `early`, push Delivered before returning."""
        statuses = world_mod.STATUSES[outcome]
        base = now_ms()
        elapsed = 0.0
        planned: list[_Planned] = []
        for status in statuses:
            delay = self._world.delay_s()
            elapsed += delay
            if outcome is world_mod.Outcome.LATE and status == "Delivered":
                self._withhold(send, entry)
                continue
            if outcome is world_mod.Outcome.EARLY and status == "Delivered":
                await self._push_early(send, entry, base + int(elapsed * 1000))
                continue
            item = self._chat_item(send, status, base + int(elapsed * 1000), entry)
            planned.append(_Planned(delay_s=delay, item=item))
        self._start_sequence(self._chat, planned, label=f"chat-{send.message_id}", journal_entry=entry)

    def _chat_item(
        self,
        send: world_mod.ChatSend,
        status: str,
        timestamp_ms: int,
        entry: journal_mod.ChatEntry,
        *,
        early: bool = False,
    ) -> pusher_mod.Item:
        omit = self._world.omit_task_id()
        payload = world_mod.chat_report(send, status, timestamp_ms, with_task_id=not omit)
        report_log = journal_mod.ReportLog(
            status=status, message_id=send.message_id, task_id_omitted=omit, early=early
        )
        entry.reports.append(report_log)
        return pusher_mod.Item(payload=payload, log=report_log)

    async def _push_early(self, send: world_mod.ChatSend, entry: journal_mod.ChatEntry, ts: int) -> None:
        item = self._chat_item(send, "Delivered", ts, entry, early=True)
        await self._chat.push_now([item])

    def _withhold(self, send: world_mod.ChatSend, entry: journal_mod.ChatEntry) -> None:
        report_log = journal_mod.ReportLog(status="Delivered", message_id=send.message_id, withheld=True)
        entry.reports.append(report_log)
        key = next(self._keys)
        held = self._withheld[key] = _Withheld(send=send, log=report_log)
        self._journal.stats.late_withheld += 1
        if self._config.late_delay_s is not None:
            held.timer = self._spawn(self._release_after(key, self._config.late_delay_s), f"late-{key}")

    async def _release_after(self, key: int, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        held = self._withheld.pop(key, None)
        if held is not None:
            held.timer = None  # this task is finishing; nothing to cancel
            self._release(held)

    def release_late(self) -> int:
        """Push every withheld `late` Delivered receipt now; returns how many."""
        held_all = list(self._withheld.values())
        self._withheld.clear()
        for held in held_all:
            if held.timer is not None:
                held.timer.cancel()
            self._release(held)
        return len(held_all)

    def _release(self, held: _Withheld) -> None:
        held.log.withheld = False
        self._journal.stats.late_released += 1
        omit = self._world.omit_task_id()
        held.log.task_id_omitted = omit
        payload = world_mod.chat_report(held.send, "Delivered", now_ms(), with_task_id=not omit)
        self._chat.enqueue(pusher_mod.Item(payload=payload, log=held.log))

    @property
    def withheld_count(self) -> int:
        return len(self._withheld)

    # ---- sms --------------------------------------------------------------------------------------------

    def sms_accepted(
        self,
        *,
        domestic: bool,
        entry: journal_mod.SmsEntry,
        message_id: str,
        status: str,
        build: Callable[[dt.datetime], dict[str, Any]],
    ) -> None:
        """Plan one SMS report; `build(received_at)` makes its payload (received_at = now + its delay)."""
        delay = self._world.delay_s()
        report_log = journal_mod.ReportLog(status=status, message_id=message_id)
        entry.reports.append(report_log)
        received_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
        planned = [_Planned(delay_s=delay, item=pusher_mod.Item(payload=build(received_at), log=report_log))]
        target = self._sms_domestic if domestic else self._sms
        self._start_sequence(target, planned, label=f"sms-{message_id}", journal_entry=entry)

    # ---- shared -----------------------------------------------------------------------------------------

    def _start_sequence(
        self,
        target: pusher_mod.Pusher,
        planned: list[_Planned],
        *,
        label: str,
        journal_entry: journal_mod.ChatEntry | journal_mod.SmsEntry,
    ) -> None:
        """Apply reorder and duplicates, then feed the reports to `target` one delay after another."""
        if not planned:
            return
        order = list(planned)
        if self._config.reorder:
            self._world.rng.shuffle(order)
        for original in list(order):
            if self._world.duplicate():
                copy_log = dataclasses.replace(original.item.log, duplicate=True, attempts=0, posted=None)
                journal_entry.reports.append(copy_log)
                copy = _Planned(
                    delay_s=self._world.delay_s(),
                    item=pusher_mod.Item(payload=dict(original.item.payload), log=copy_log),
                )
                # Somewhere after the original, so it may land in another push.
                at = self._world.rng.randint(order.index(original) + 1, len(order))
                order.insert(at, copy)
        self._spawn(self._feed(target, order), label)

    async def _feed(self, target: pusher_mod.Pusher, order: list[_Planned]) -> None:
        for planned in order:
            if planned.delay_s > 0:
                await asyncio.sleep(planned.delay_s)
            target.enqueue(planned.item)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"sandbox-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sandbox_task_failed", task=task.get_name(), exc_info=task.exception())
