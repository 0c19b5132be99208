"""The load generator: batches of messages with a mix of outcomes (the sandbox's suffix table picks each
outcome from the last digit of `To`), posted to live replicas like a client behind a load balancer would.

Every batch carries an Idempotency-Key, and a batch whose answer was lost (the replica died mid-request,
the database was restarting) is posted again with the same key to another replica until it is answered:
what a careful client does. A message counts as *accepted* only once a 202 named its id.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import time
from typing import Any

import aiohttp

from chaos import procs, world

RULES = ("undelivered", "sentFailed", "unread")
# last digit of To -> the sandbox's outcome (README, "The sandbox")
OUTCOME = {
    0: "read",
    1: "read",
    2: "read",
    3: "delivered",
    4: "delivered",
    5: "failed",
    6: "silent",
    7: "late",
    8: "rejected",
    9: "early",
}


def body(i: int, *, digit: int | None = None) -> dict[str, Any]:
    """Message i: To ends in i's last digit (or `digit`), rule by i // 10."""
    number = i if digit is None else i * 10 + digit
    return {
        "ChannelType": "whatsapp",
        "Type": "template",
        "TemplateCode": "order_shipped",
        "Language": "en",
        "From": "6580000000",
        "To": f"65{number:09d}",
        "TemplateParams": {"order": str(i)},
        "FallBackContent": f"order {i} shipped",
        "FallBackDuration": 60,
        "FallBackRule": RULES[(i // 10) % 3],
    }


@dataclasses.dataclass
class Accepted:
    """What the load generator was told: id -> (index, accepted at, monotonic)."""

    ids: dict[str, int] = dataclasses.field(default_factory=dict)
    at: dict[str, float] = dataclasses.field(default_factory=dict)
    retries: int = 0  # posts repeated after an error or a lost answer
    unanswered: int = 0  # batches given up on (never acknowledged: not counted as accepted)
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


class Loader:
    """Posts `rate` messages/s in batches of `batch` until stopped."""

    def __init__(self, w: world.World, *, rate: float, batch: int = 10, digits: tuple[int, ...] = ()) -> None:
        self.w = w
        self.rate, self.batch = rate, batch
        self.digits = digits  # when set, only these outcomes (cycled)
        self.accepted = Accepted()
        self._counter = itertools.count()
        self._batches = itertools.count()
        self._rr = itertools.count()
        self.sent = 0

    def _make(self) -> list[tuple[int, dict[str, Any]]]:
        out = []
        for _ in range(self.batch):
            i = next(self._counter)
            digit = self.digits[i % len(self.digits)] if self.digits else None
            out.append((i, body(i, digit=digit)))
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Post until `stop` is set; the in-flight batches are finished before returning."""
        interval = self.batch / self.rate
        pending: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {procs.API_TOKEN}"}, timeout=aiohttp.ClientTimeout(total=15)
        ) as http:
            next_at = time.monotonic()
            while not stop.is_set():
                task = asyncio.create_task(self._post(http, self._make(), f"b{next(self._batches)}"))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                else:
                    next_at = time.monotonic()  # fell behind (everything down): do not burst afterwards
                    await asyncio.sleep(0)
            if pending:
                await asyncio.gather(*pending)

    async def post_some(self, count: int) -> None:
        """Post `count` messages now (in batches), waiting for every answer."""
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {procs.API_TOKEN}"}) as http:
            for _ in range(0, count, self.batch):
                await self._post(http, self._make(), f"b{next(self._batches)}")

    async def _post(
        self, http: aiohttp.ClientSession, items: list[tuple[int, dict[str, Any]]], key: str
    ) -> None:
        payload = {"messages": [b for _, b in items]}
        deadline = time.monotonic() + 180
        first = True
        while time.monotonic() < deadline:
            live = self.w.live() or self.w.daemons
            daemon = live[next(self._rr) % len(live)]
            if not first:
                self.accepted.retries += 1
            first = False
            try:
                async with http.post(
                    f"{daemon.url}/v1/messages/batch", json=payload, headers={"Idempotency-Key": key}
                ) as r:
                    if r.status == 202:
                        answer = await r.json()
                        now = time.monotonic()
                        for (i, _), m in zip(items, answer["messages"], strict=True):
                            self.accepted.ids[m["id"]] = i
                            self.accepted.at[m["id"]] = now
                        self.sent += len(items)
                        return
                    text = (await r.text())[:200]
                    self.accepted.errors[f"{r.status} {text}"] += 1
                    if 400 <= r.status < 500:
                        raise RuntimeError(f"the daemon refused a valid batch: {r.status} {text}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.accepted.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.2)
        self.accepted.unanswered += 1
