"""engine/groupcommit.py: callers that arrive during a write share the next one; a failure is isolated."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from fallback_daemon.engine.groupcommit import GroupCommit


class Recorder:
    """An `apply` that records each transaction's parts and can be held open until released."""

    def __init__(self) -> None:
        self.calls: list[list[list[str]]] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def apply(self, parts: list[Sequence[str]]) -> list[str]:
        self.calls.append([list(p) for p in parts])
        self.entered.set()
        await self.release.wait()
        if any("bad" in p for p in parts):
            raise ValueError("refused: bad")
        return [f"tx{len(self.calls)}"] * len(parts)


async def test_an_idle_submit_is_written_alone_and_answered_with_its_result() -> None:
    rec = Recorder()
    group: GroupCommit[str, str] = GroupCommit(rec.apply, name="t", writers=1)
    assert await group.submit(["a"]) == "tx1"
    assert rec.calls == [[["a"]]]


async def test_callers_arriving_during_a_write_share_the_next_transaction() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[str, str] = GroupCommit(rec.apply, name="t", writers=1)
    first = asyncio.create_task(group.submit(["a"]))
    await rec.entered.wait()  # the first write is open
    later = [asyncio.create_task(group.submit([x])) for x in ("b", "c", "d")]
    await asyncio.sleep(0)  # the three are queued behind it
    rec.release.set()
    assert await first == "tx1"
    assert [await t for t in later] == ["tx2", "tx2", "tx2"]
    assert rec.calls == [[["a"]], [["b"], ["c"], ["d"]]]


async def test_a_failed_group_is_retried_caller_by_caller_so_only_the_bad_one_fails() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[str, str] = GroupCommit(rec.apply, name="t", writers=1)
    first = asyncio.create_task(group.submit(["a"]))
    await rec.entered.wait()
    good1 = asyncio.create_task(group.submit(["g1"]))
    bad = asyncio.create_task(group.submit(["bad"]))
    good2 = asyncio.create_task(group.submit(["g2"]))
    await asyncio.sleep(0)
    rec.release.set()
    await first
    assert await good1 == "tx3"
    with pytest.raises(ValueError, match="refused"):
        await bad
    assert await good2 == "tx5"
    assert rec.calls[1:] == [[["g1"], ["bad"], ["g2"]], [["g1"]], [["bad"]], [["g2"]]]


async def test_a_group_stops_taking_callers_at_max_items_but_never_splits_one() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[str, str] = GroupCommit(rec.apply, name="t", writers=1, max_items=3)
    first = asyncio.create_task(group.submit(["a"]))
    await rec.entered.wait()
    rest = [asyncio.create_task(group.submit(items)) for items in (["b", "c"], ["d"], ["e", "f", "g", "h"])]
    await asyncio.sleep(0)
    rec.release.set()
    await first
    await asyncio.gather(*rest)
    assert rec.calls[1:] == [[["b", "c"], ["d"]], [["e", "f", "g", "h"]]]


async def test_a_caller_that_goes_away_still_has_its_items_written() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[str, str] = GroupCommit(rec.apply, name="t", writers=1)
    first = asyncio.create_task(group.submit(["a"]))
    await rec.entered.wait()
    gone = asyncio.create_task(group.submit(["b"]))
    stays = asyncio.create_task(group.submit(["c"]))
    await asyncio.sleep(0)
    gone.cancel()
    rec.release.set()
    await first
    assert await stays == "tx2"
    assert gone.cancelled()
    assert rec.calls[1] == [["b"], ["c"]]


async def test_cancelling_the_writer_cancels_everyone_still_waiting() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[str, str] = GroupCommit(rec.apply, name="t", writers=1)
    first = asyncio.create_task(group.submit(["a"]))
    await rec.entered.wait()
    queued = asyncio.create_task(group.submit(["b"]))
    await asyncio.sleep(0)
    writers = [t for t in asyncio.all_tasks() if t.get_name() == "group-commit-t"]
    assert len(writers) == 1
    writers[0].cancel()
    for caller in (first, queued):
        with pytest.raises(asyncio.CancelledError):
            await caller
    # The next submit starts a new writer.
    rec.release.set()
    assert await group.submit(["c"]) == "tx2"


async def test_with_two_writers_a_second_caller_is_written_at_once_and_the_rest_wait() -> None:
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[str, str] = GroupCommit(rec.apply, name="t", writers=2)
    first = asyncio.create_task(group.submit(["a"]))
    await asyncio.sleep(0)
    second = asyncio.create_task(group.submit(["b"]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert rec.calls == [[["a"]], [["b"]]]  # two transactions open at once
    queued = [asyncio.create_task(group.submit([x])) for x in ("c", "d")]
    await asyncio.sleep(0)
    rec.release.set()
    await asyncio.gather(first, second, *queued)
    assert rec.calls[2:] == [[["c"], ["d"]]]  # the first writer free takes both


async def test_a_caller_right_after_the_writer_finished_gets_a_writer_of_its_own() -> None:
    """A writer that finished leaves the pool, so the next caller starts one (else writers=1 would hang)."""
    rec = Recorder()
    group: GroupCommit[str, str] = GroupCommit(rec.apply, name="t", writers=1)
    assert await group.submit(["a"]) == "tx1"
    assert await asyncio.wait_for(group.submit(["b"]), timeout=10) == "tx2"


async def test_each_caller_gets_the_result_for_its_own_part() -> None:
    """apply answers per caller: the group hands each one its own entry."""
    release = asyncio.Event()

    async def apply(parts: list[Sequence[str]]) -> list[str]:
        await release.wait()
        return ["+".join(p) for p in parts]

    group: GroupCommit[str, str] = GroupCommit(apply, name="t", writers=1)
    first = asyncio.create_task(group.submit(["a"]))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(group.submit(items)) for items in (["b", "c"], ["d"])]
    await asyncio.sleep(0)
    release.set()
    assert [await first, *[await t for t in rest]] == ["a", "b+c", "d"]


async def test_a_big_caller_is_written_alone_at_once_beside_a_busy_writer() -> None:
    """solo_from: a push that already fills its statements gets its own transaction, without waiting."""
    rec = Recorder()
    rec.release.clear()
    group: GroupCommit[str, str] = GroupCommit(rec.apply, name="t", writers=1, solo_from=3)
    small = asyncio.create_task(group.submit(["a"]))
    await rec.entered.wait()  # the only writer is busy (held open)
    rec.entered.clear()
    big = asyncio.create_task(group.submit(["b", "c", "d"]))
    await asyncio.wait_for(rec.entered.wait(), 10)  # a second transaction opened while the first is held
    assert rec.calls == [[["a"]], [["b", "c", "d"]]]
    queued = asyncio.create_task(group.submit(["e"]))
    await asyncio.sleep(0)
    rec.release.set()
    await asyncio.gather(small, big, queued)
    assert rec.calls[2] == [["e"]], "a small caller still waits for the writer"


async def test_a_big_caller_that_goes_away_still_has_its_items_written() -> None:
    rec = Recorder()
    rec.release.clear()
    finished: list[list[list[str]]] = []
    real = rec.apply

    async def apply(parts: list[Sequence[str]]) -> list[str]:
        result = await real(parts)
        finished.append([list(p) for p in parts])
        return result

    group: GroupCommit[str, str] = GroupCommit(apply, name="t", writers=1, solo_from=2)
    gone = asyncio.create_task(group.submit(["a", "b"]))
    await rec.entered.wait()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    rec.release.set()
    assert await group.submit(["c", "d"]) == "tx2"
    assert finished[0] == [["a", "b"]], "the abandoned caller's write ran to its end"


async def test_an_exception_returned_for_one_caller_is_raised_to_it_alone_without_a_retry() -> None:
    """apply may refuse one caller's items by returning an exception in its place: that caller gets it, the
    others their results, and the group is not rewritten caller by caller (its rows are committed)."""
    calls: list[list[list[str]]] = []

    async def apply(parts: list[Sequence[str]]) -> list[str | Exception]:
        calls.append([list(p) for p in parts])
        return [ValueError(p[0]) if p[0].startswith("no") else f"ok-{p[0]}" for p in parts]

    group: GroupCommit[str, str] = GroupCommit(apply, name="t", writers=1, solo_from=3)
    a, refused, b = await asyncio.gather(
        group.submit(["a"]), group.submit(["no-1"]), group.submit(["b"]), return_exceptions=True
    )
    assert (a, b) == ("ok-a", "ok-b")
    assert isinstance(refused, ValueError) and str(refused) == "no-1"
    assert calls == [[["a"], ["no-1"], ["b"]]]
    with pytest.raises(ValueError, match="no-big"):  # a caller written alone at once (solo_from)
        await group.submit(["no-big", "x", "y"])
