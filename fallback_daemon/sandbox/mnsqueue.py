"""The sandbox's in-memory MNS queues: visibility timeouts, redelivery with a growing DequeueCount,
receipt handles that die at NextVisibleTime, long polling, and the feed that turns reports into messages.

No HTTP here (that is `sandbox/mns.py`); times are epoch milliseconds from an injectable wall clock.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import hashlib
import heapq
import itertools
import json
import secrets
import time
from collections.abc import Callable

from fallback_daemon.sandbox import journal as journal_mod
from fallback_daemon.sandbox import pusher as pusher_mod

DEFAULT_PRIORITY = 8


def body_md5(body: str) -> str:
    """MessageBodyMD5: uppercase hex MD5 of the body text exactly as transmitted."""
    return hashlib.md5(body.encode("utf-8")).hexdigest().upper()  # noqa: S324 - protocol-mandated


@dataclasses.dataclass(kw_only=True, eq=False)
class StoredMessage:
    """One message in a queue."""

    message_id: str
    body: str
    body_md5: str
    priority: int
    enqueue_ms: int
    next_visible_ms: int
    first_dequeue_ms: int = 0
    dequeue_count: int = 0
    handle: str | None = None  # valid only until next_visible_ms


@dataclasses.dataclass(frozen=True, kw_only=True)
class Attributes:
    """What GetQueueAttributes reports: the queue's settings and its message counts now."""

    name: str
    created_s: int  # CreateTime / LastModifyTime: epoch seconds (the sandbox never modifies a queue)
    visibility_timeout_s: int
    active: int  # visible now: a receive would get them
    inactive: int  # received, within their visibility timeout
    delayed: int  # sent with DelaySeconds, not yet visible


@dataclasses.dataclass(frozen=True, kw_only=True)
class Peeked:
    """What PeekMessage shows of a visible message: no receipt handle, nothing changed by looking."""

    message_id: str
    body: str
    body_md5: str
    enqueue_ms: int
    first_dequeue_ms: int  # 0 when never received [I]
    dequeue_count: int
    priority: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Delivery:
    """What one receive hands out: the message as it is now and the handle of this delivery."""

    message_id: str
    handle: str
    body: str
    body_md5: str
    enqueue_ms: int
    first_dequeue_ms: int
    next_visible_ms: int
    dequeue_count: int
    priority: int


class Queue:
    """One queue. `receive` long-polls; everything else is synchronous (one event loop, no locks needed)."""

    def __init__(
        self,
        name: str,
        *,
        visibility_timeout_s: int,
        stats: Callable[[], journal_mod.Stats],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.visibility_timeout_s = visibility_timeout_s
        self._stats = stats
        self._clock = clock
        self._messages: dict[str, StoredMessage] = {}
        self._ready: collections.deque[str] = collections.deque()
        # (next_visible_ms, seq, message id) of invisible messages; stale entries are skipped when popped
        self._hidden: list[tuple[int, int, str]] = []
        self._handles: dict[str, str] = {}
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self.closed = False  # set on shutdown: long polls return at once
        self.waiting = 0  # long polls waiting now
        self.created_s = int(clock())

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def signal(self) -> None:
        """Wake every long poll so it looks again (a fresh Event per generation: no lost wake-ups)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def send(self, body: str, *, delay_s: int = 0, priority: int = DEFAULT_PRIORITY) -> StoredMessage:
        now = self._now_ms()
        msg = StoredMessage(
            message_id=secrets.token_hex(16).upper(),
            body=body,
            body_md5=body_md5(body),
            priority=priority,
            enqueue_ms=now,
            next_visible_ms=now + delay_s * 1000,
        )
        self._messages[msg.message_id] = msg
        if delay_s:
            heapq.heappush(self._hidden, (msg.next_visible_ms, next(self._seq), msg.message_id))
        else:
            self._ready.append(msg.message_id)
        self._stats().mns_enqueued += 1
        self.signal()
        return msg

    async def receive(self, n: int, wait_s: float) -> list[Delivery]:
        """Up to n visible messages, waiting up to wait_s for the first one."""
        deadline = self._clock() + wait_s
        while True:
            changed = self._changed
            got = self._take(n)
            now = self._clock()
            if got or now >= deadline or self.closed:
                return got
            wake_at = deadline
            if self._hidden:
                wake_at = min(wake_at, self._hidden[0][0] / 1000)
            self.waiting += 1
            try:
                async with asyncio.timeout(max(0.001, wake_at - now)):
                    await changed.wait()
            except TimeoutError:
                pass
            finally:
                self.waiting -= 1

    def _promote(self, now: int) -> None:
        """Make the messages whose NextVisibleTime has come visible again (their handles die)."""
        while self._hidden and self._hidden[0][0] <= now:
            due, _, mid = heapq.heappop(self._hidden)
            msg = self._messages.get(mid)
            if msg is None or msg.next_visible_ms != due:
                continue  # deleted, or rescheduled by ChangeMessageVisibility
            if msg.handle is not None:
                self._handles.pop(msg.handle, None)
                msg.handle = None
            self._ready.append(mid)

    def _take(self, n: int) -> list[Delivery]:
        now = self._now_ms()
        self._promote(now)
        out: list[Delivery] = []
        stats = self._stats()
        while self._ready and len(out) < n:
            msg = self._messages.get(self._ready.popleft())
            if msg is None or msg.next_visible_ms > now:
                continue
            msg.dequeue_count += 1
            msg.first_dequeue_ms = msg.first_dequeue_ms or now
            self._hide(msg, now + self.visibility_timeout_s * 1000)
            stats.mns_received += 1
            if msg.dequeue_count > 1:
                stats.mns_redelivered += 1
            assert msg.handle is not None
            out.append(
                Delivery(
                    message_id=msg.message_id,
                    handle=msg.handle,
                    body=msg.body,
                    body_md5=msg.body_md5,
                    enqueue_ms=msg.enqueue_ms,
                    first_dequeue_ms=msg.first_dequeue_ms,
                    next_visible_ms=msg.next_visible_ms,
                    dequeue_count=msg.dequeue_count,
                    priority=msg.priority,
                )
            )
        return out

    def peek(self, n: int) -> list[Peeked]:
        """Up to n visible messages, in the order a receive would take them, left exactly as they are:
        still visible, no handle issued, DequeueCount unchanged (PeekMessage / BatchPeekMessage)."""
        now = self._now_ms()
        self._promote(now)
        out: list[Peeked] = []
        for mid in self._ready:
            msg = self._messages.get(mid)
            if msg is None or msg.next_visible_ms > now:
                continue
            out.append(
                Peeked(
                    message_id=msg.message_id,
                    body=msg.body,
                    body_md5=msg.body_md5,
                    enqueue_ms=msg.enqueue_ms,
                    first_dequeue_ms=msg.first_dequeue_ms,
                    dequeue_count=msg.dequeue_count,
                    priority=msg.priority,
                )
            )
            if len(out) == n:
                break
        return out

    def attributes(self) -> Attributes:
        now = self._now_ms()
        inactive = delayed = 0
        for msg in self._messages.values():
            if msg.next_visible_ms > now:
                if msg.handle is not None:
                    inactive += 1
                else:
                    delayed += 1
        return Attributes(
            name=self.name,
            created_s=self.created_s,
            visibility_timeout_s=self.visibility_timeout_s,
            active=len(self._messages) - inactive - delayed,
            inactive=inactive,
            delayed=delayed,
        )

    def _hide(self, msg: StoredMessage, until_ms: int) -> None:
        if msg.handle is not None:
            self._handles.pop(msg.handle, None)
        msg.next_visible_ms = until_ms
        msg.handle = f"{next(self._seq)}-{secrets.token_urlsafe(18)}"
        self._handles[msg.handle] = msg.message_id
        heapq.heappush(self._hidden, (until_ms, next(self._seq), msg.message_id))

    def _live(self, handle: str) -> StoredMessage | str:
        """The message a handle holds now, or the error code for a dead handle."""
        mid = self._handles.get(handle)
        if mid is None:
            return "ReceiptHandleError" if "-" not in handle else "MessageNotExist"
        msg = self._messages.get(mid)
        if msg is None or msg.handle != handle or self._now_ms() >= msg.next_visible_ms:
            return "MessageNotExist"
        return msg

    def delete(self, handle: str) -> str | None:
        """Delete by receipt handle; None on success, else the MNS error code."""
        msg = self._live(handle)
        if isinstance(msg, str):
            self._stats().mns_delete_errors += 1
            return msg
        del self._messages[msg.message_id]
        self._handles.pop(handle, None)
        self._stats().mns_deleted += 1
        return None

    def change_visibility(self, handle: str, timeout_s: int) -> StoredMessage | str:
        """A new handle, visible again timeout_s from now; or the MNS error code."""
        msg = self._live(handle)
        if isinstance(msg, str):
            return msg
        self._hide(msg, self._now_ms() + timeout_s * 1000)
        self.signal()  # long polls recompute when to look again
        return msg

    def counts(self) -> dict[str, int]:
        now = self._now_ms()
        inflight = sum(1 for m in self._messages.values() if m.handle is not None and m.next_visible_ms > now)
        total = len(self._messages)
        return {"messages": total, "inflight": inflight, "visible": total - inflight, "waiting": self.waiting}


class Broker:
    """Every sandbox queue by name, and the feed of reports into them."""

    def __init__(
        self,
        names: list[str],
        *,
        visibility_timeout_s: int,
        stats: Callable[[], journal_mod.Stats],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stats = stats
        self._closed = asyncio.Event()
        self.queues = {
            name: Queue(name, visibility_timeout_s=visibility_timeout_s, stats=stats, clock=clock)
            for name in dict.fromkeys(names)
        }

    def feed(self, queue_name: str) -> Callable[[pusher_mod.Item], None]:
        """A function that puts one report into `queue_name` as one base64-JSON message (Alicom style)."""
        queue = self.queues[queue_name]

        def put(item: pusher_mod.Item) -> None:
            text = json.dumps(item.payload, ensure_ascii=False, separators=(",", ":"))
            queue.send(base64.b64encode(text.encode()).decode())
            item.log.attempts += 1
            if item.log.posted is None:
                item.log.posted = True

        return put

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: q.counts() for name, q in self.queues.items()}

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Shutting down: wake every long poll and held request."""
        self._closed.set()
        for queue in self.queues.values():
            queue.closed = True
            queue.signal()

    async def wait_closed(self, timeout_s: float) -> None:
        """Return when closed or after timeout_s, whichever comes first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._closed.wait()
        except TimeoutError:
            pass
