"""Group commit: callers that arrive while a transaction is being written share the next one.

Each HTTP receipt push used to be its own transaction: BEGIN, three or four statements, COMMIT, every one a
round trip, and a statement sent is the unit of the daemon's cost (docs/performance.md, session 4). Pushes
that arrive together now wait for the transaction in progress and are then written together in one; each
caller is answered only after the commit that holds its items, so "acknowledge after commit" still holds per
request.

No timer: the first caller starts a write at once (an idle daemon adds no latency), and whatever queued up
during that write is the next group. If a group's transaction fails, each caller's items are retried in a
transaction of their own, so one push the database refuses fails only that push.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("fallback_daemon.engine.groupcommit")
T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Up to `writers` transactions at a time; `submit` returns the result of the one that held the items.

    Args:
        apply: writes the items of one or more callers (a list per caller) in one transaction and returns
            one result per caller, in their order. A result that is an exception is raised to that caller
            alone (its items were refused; the others' committed): a group that raises is retried caller by
            caller, so `apply` must not raise once it has committed anything.
        writers: transactions in progress at once. More than one lets one writer's Python work overlap
            another's statements in Postgres; callers are grouped only when every writer is busy.
        max_items: a group takes callers until their items exceed this (a caller is never split).
        solo_from: a caller with at least this many items is written in a transaction of its own at once,
            beside the writers: its statements already carry enough rows that the per-transaction round trips
            are a few percent of it, and grouping it would only take transactions out of flight (100-receipt
            pushes from 8 callers: 9,500 receipts/s grouped against 14,500/s alone, docs/performance.md).
    """

    def __init__(
        self,
        apply: Callable[[list[Sequence[T]]], Awaitable[Sequence[R | Exception]]],
        *,
        name: str,
        writers: int = 4,
        max_items: int = 5000,
        solo_from: int = 50,
    ) -> None:
        self._apply = apply
        self._name = name
        self._writers_max = writers
        self._max = max_items
        self._solo = solo_from
        self._waiting: list[tuple[Sequence[T], asyncio.Future[R]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def submit(self, items: Sequence[T]) -> R:
        """Wait for the commit that holds `items`; raise what that write raised (for these items alone)."""
        if len(items) >= self._solo:
            # Shielded like a grouped write: a caller that goes away does not roll its commit back.
            [result] = await asyncio.shield(self._apply([items]))
            if isinstance(result, Exception):
                raise result
            return result
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, fut))
        if len(self._writers) < self._writers_max:
            self._writers.add(asyncio.create_task(self._drain(), name=f"group-commit-{self._name}"))
        # A caller that goes away (client disconnect) leaves its items in the group: the others still commit.
        return await asyncio.shield(fut)

    async def _drain(self) -> None:
        group: list[tuple[Sequence[T], asyncio.Future[R]]] = []
        try:
            while self._waiting:
                n, size = 0, 0
                while n < len(self._waiting) and (n == 0 or size + len(self._waiting[n][0]) <= self._max):
                    size += len(self._waiting[n][0])
                    n += 1
                group, self._waiting = self._waiting[:n], self._waiting[n:]
                await self._write(group)
                group = []
        except BaseException:  # cancelled (shutdown): nobody is left waiting forever
            me = asyncio.current_task()
            last = not any(w is not me and not w.done() for w in self._writers)
            for _, fut in [*group, *(self._waiting if last else [])]:
                if not fut.done():
                    fut.cancel()
            if last:
                self._waiting = []
            raise
        finally:
            # In the same step as the empty-queue check above (no await between): a caller arriving later
            # sees this writer gone and starts one. A done-callback would leave a window where it does not.
            self._writers.discard(typing.cast("asyncio.Task[None]", asyncio.current_task()))

    async def _write(self, group: list[tuple[Sequence[T], asyncio.Future[R]]]) -> None:
        if len(group) > 1:
            try:
                results = await self._apply([items for items, _ in group])
            except Exception as exc:  # which caller's items failed is unknown: each is retried alone below
                log.warning("group_commit_split", group=self._name, callers=len(group), error=str(exc))
            else:
                for (_, fut), result in zip(group, results, strict=True):
                    _settle(fut, result)
                return
        for items, fut in group:
            try:
                [result] = await self._apply([items])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _settle(fut, exc)
            else:
                _settle(fut, result)


def _settle(fut: asyncio.Future[R], outcome: R | Exception) -> None:
    if fut.done():
        return
    if isinstance(outcome, Exception):
        fut.set_exception(outcome)
        # Retrieved here so that a caller which went away does not leave "exception never retrieved".
        fut.exception()
    else:
        fut.set_result(outcome)
