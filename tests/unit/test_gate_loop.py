"""The receipt-feed gate loop against the in-memory gate store and a fake clock (no database).

The feed clock is the one object the ingest side writes receipt times to; here the tests write to it as
ingest would. Postgres itself is covered by tests/integration/test_gate.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fallback_daemon import metrics
from fallback_daemon.core import ports
from fallback_daemon.engine import health
from tests.unit.memstore import MemoryGate

HANG_S = 10.0  # a guard against a hang, never a speed target


def gauge(metric: Any, channel: str) -> float:
    value: float = metric.labels(channel)._value.get()
    return value


def gate_loop(store: MemoryGate, feed: ports.FeedClock | None = None, **kw: Any) -> health.GateLoop:
    args: dict[str, Any] = {"window_s": 60.0, "interval_s": 0.001}
    return health.GateLoop(store, feed=feed or ports.FeedClock(), **{**args, **kw})


def test_the_feed_clock_keeps_the_latest_time_per_channel() -> None:
    feed = ports.FeedClock()
    assert feed.last("whatsapp") is None
    feed.seen({"whatsapp", "viber"}, 10.0)
    feed.seen(["whatsapp"], 5.0)  # a late batch does not make the feed look older
    assert (feed.last("whatsapp"), feed.last("viber")) == (10.0, 10.0)
    snapshot = feed.snapshot()
    feed.seen(["whatsapp"], 20.0)
    assert snapshot == {"whatsapp": 10.0, "viber": 10.0}, "a snapshot is a copy"


async def test_the_gate_closes_after_a_silent_window_and_reopens_on_a_receipt() -> None:
    """A send with no receipt for more than the window closes its channel only; a receipt reopens it."""
    store, feed = MemoryGate(), ports.FeedClock()
    gate = gate_loop(store, feed)
    store.sent("whatsapp")
    assert (await gate.check_once())["whatsapp"] is False
    store.clock.advance(60)
    assert (await gate.check_once())["whatsapp"] is False, "closed only once the window has passed"
    store.clock.advance(1)
    states = await gate.check_once()
    assert (states["whatsapp"], states["viber"]) == (True, False)
    assert store.closed["whatsapp"] is True
    assert gauge(metrics.feed_gate, "whatsapp") == 1
    assert gauge(metrics.feed_unanswered, "whatsapp") == 61
    feed.seen(["whatsapp"], store.clock.now)  # what ingest does for an applied receipt
    assert (await gate.check_once())["whatsapp"] is False
    assert store.last_receipt["whatsapp"] == 61, "the feed's times were flushed to the store"
    assert store.gate_writes == [("whatsapp", True), ("whatsapp", False)]
    assert (gauge(metrics.feed_gate, "whatsapp"), gauge(metrics.feed_unanswered, "whatsapp")) == (0, 0)


async def test_the_gate_state_is_written_only_when_it_changes() -> None:
    store = MemoryGate()
    gate = gate_loop(store)
    store.sent("viber")
    store.clock.advance(100)
    for _ in range(3):
        assert (await gate.check_once())["viber"] is True
    assert store.gate_writes == [("viber", True)]


async def test_a_per_channel_window_overrides_the_default_and_zero_disables_it() -> None:
    """`per_channel` sets a channel's own window (0: never closed) and adds a channel the list lacks."""
    store = MemoryGate()
    gate = gate_loop(store, per_channel={"whatsapp": 0.0, "viber": 300.0, "line": 30.0})
    for channel in ("whatsapp", "viber", "telegram", "line"):
        store.sent(channel)
    store.clock.advance(200)
    states = await gate.check_once()
    assert states == {
        "whatsapp": False,  # disabled
        "viber": False,  # 300 s window: not yet
        "telegram": True,  # the default 60 s window
        "line": True,  # watched although the built-in list does not name it
        "messenger": False,
        "instagram": False,
    }
    store.clock.advance(101)
    assert (await gate.check_once())["viber"] is True
    assert (await gate.check_once())["whatsapp"] is False


async def test_a_send_after_the_last_receipt_starts_the_window_again() -> None:
    store, feed = MemoryGate(), ports.FeedClock()
    gate = gate_loop(store, feed)
    store.sent("whatsapp", at=0.0)
    feed.seen(["whatsapp"], 10.0)
    store.sent("whatsapp", at=20.0)
    store.clock.advance(70)
    assert (await gate.check_once())["whatsapp"] is False, "the unanswered send is 50 s old"
    store.clock.advance(11)
    assert (await gate.check_once())["whatsapp"] is True


async def test_the_silence_gauge_counts_from_the_first_check_before_any_receipt() -> None:
    store, feed = MemoryGate(), ports.FeedClock()
    gate = gate_loop(store, feed)
    store.clock.advance(1000)
    await gate.check_once()
    store.clock.advance(30)
    await gate.check_once()
    assert gauge(metrics.feed_silent, "instagram") == 30
    feed.seen(["instagram"], store.clock.now)
    store.clock.advance(5)
    await gate.check_once()
    assert gauge(metrics.feed_silent, "instagram") == 5


async def test_the_loop_survives_the_store_going_away_and_closes_once_it_is_back() -> None:
    store = MemoryGate()
    store.sent("whatsapp")
    store.clock.advance(100)
    store.down = True
    checks = 0
    real = store.feed_status

    async def counted(channels: Sequence[str]) -> list[ports.FeedStatus]:
        nonlocal checks
        checks += 1
        if checks == 3:
            store.down = False
        return await real(channels)

    store.feed_status = counted  # type: ignore[method-assign]
    gate = gate_loop(store)
    stop = asyncio.Event()
    task = asyncio.create_task(gate.run(stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_S
        while not store.gate_writes:
            assert not task.done(), f"the loop ended: {task}"
            assert loop.time() < deadline, "the gate never closed"
            await asyncio.sleep(0.001)
    finally:
        stop.set()
        await asyncio.wait_for(task, HANG_S)
    assert checks >= 3, "two checks met StoreError and the loop kept checking"
    assert store.gate_writes[0] == ("whatsapp", True)
