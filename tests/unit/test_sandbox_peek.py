"""The sandbox queue's PeekMessage and GetQueueAttributes semantics under a fake clock (no HTTP), and the
required-parameter check the gateway answers with Missing<Param>."""

from __future__ import annotations

import pytest

from fallback_daemon.sandbox import journal, mnsqueue, replies

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stats() -> journal.Stats:
    return journal.Stats()


@pytest.fixture
def queue(clock: Clock, stats: journal.Stats) -> mnsqueue.Queue:
    return mnsqueue.Queue("q", visibility_timeout_s=30, stats=lambda: stats, clock=clock)


def counts(queue: mnsqueue.Queue) -> tuple[int, int, int]:
    a = queue.attributes()
    return a.active, a.inactive, a.delayed


async def test_peek_changes_nothing(queue: mnsqueue.Queue, stats: journal.Stats) -> None:
    """Peeking twice shows the same messages with DequeueCount 0; the next receive still gets the first
    one as its first delivery."""
    first, second = queue.send("a"), queue.send("b")
    for _ in range(2):
        assert [(p.message_id, p.dequeue_count, p.first_dequeue_ms) for p in queue.peek(16)] == [
            (first.message_id, 0, 0),
            (second.message_id, 0, 0),
        ]
    assert [p.message_id for p in queue.peek(1)] == [first.message_id]
    assert counts(queue) == (2, 0, 0)
    assert stats.mns_received == 0
    [got] = await queue.receive(1, 0)
    assert (got.message_id, got.dequeue_count) == (first.message_id, 1)


async def test_peek_skips_in_flight_and_sees_a_message_back_after_its_timeout(
    queue: mnsqueue.Queue, clock: Clock
) -> None:
    """An in-flight message is not peekable; once its visibility timeout ends, a peek shows it (DequeueCount
    1) and the old receipt handle is dead, as after a redelivery."""
    sent = queue.send("a")
    [got] = await queue.receive(1, 0)
    assert queue.peek(16) == []
    assert counts(queue) == (0, 1, 0)
    clock.now += 30
    [seen] = queue.peek(16)
    assert (seen.message_id, seen.dequeue_count, seen.first_dequeue_ms) == (
        sent.message_id,
        1,
        got.first_dequeue_ms,
    )
    assert counts(queue) == (1, 0, 0)
    assert queue.delete(got.handle) == "MessageNotExist"
    [again] = await queue.receive(1, 0)
    assert again.dequeue_count == 2


def test_attributes_count_delayed_until_due(queue: mnsqueue.Queue, clock: Clock) -> None:
    """A message sent with DelaySeconds is a DelayMessage until due, then Active; CreateTime is in seconds."""
    queue.send("later", delay_s=10)
    queue.send("now")
    assert counts(queue) == (1, 0, 1)
    assert [p.body for p in queue.peek(16)] == ["now"]
    clock.now += 10
    assert counts(queue) == (2, 0, 0)
    assert [p.body for p in queue.peek(16)] == ["now", "later"]
    assert queue.attributes().created_s == int(NOW)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"A": "1", "B": "2"}, None),
        ({"B": "2"}, "A"),
        ({"A": " ", "B": "2"}, "A"),
        ({"A": "1"}, "B"),
        ({}, "A"),
    ],
)
def test_first_missing_names_the_first_required_one_left_out(
    params: dict[str, str], expected: str | None
) -> None:
    assert replies.first_missing(params, ("A", "B")) == expected
