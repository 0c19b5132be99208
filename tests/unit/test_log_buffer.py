"""logs.LineBuffer: the lines of one event-loop pass go out in one write; outside a loop, at once."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
import structlog

from fallback_daemon import logs


class CountingFile(io.StringIO):
    """A text file that counts the writes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


async def test_lines_of_one_loop_pass_are_written_together_after_the_pass() -> None:
    out = CountingFile()
    buf = logs.LineBuffer(out)
    for i in range(50):
        buf.msg(f"line {i}")
    assert out.getvalue() == ""  # still inside the pass that logged them
    await asyncio.sleep(0)  # the pass ends; the flush scheduled with call_soon runs
    assert out.getvalue() == "".join(f"line {i}\n" for i in range(50))
    assert out.writes == 1
    buf.msg("next pass")
    await asyncio.sleep(0)
    assert out.getvalue().endswith("line 49\nnext pass\n")
    assert out.writes == 2


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    out = CountingFile()
    buf = logs.LineBuffer(out)
    buf.msg("now")
    assert out.getvalue() == "now\n"
    buf.info("and now")
    assert out.getvalue() == "now\nand now\n"


@pytest.mark.usefixtures("restore")
async def test_configured_buffered_the_chain_still_masks_and_renders_json_lines() -> None:
    out = io.StringIO()
    logs.configure(fmt="json", level="info", file=out, cache=False, buffered=True)
    structlog.get_logger("t").info("decision", to="6591234567", outcome="x")
    structlog.get_logger("t").warning("second")
    assert out.getvalue() == ""
    await asyncio.sleep(0)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["event"], first["to"], second["event"]) == ("decision", "659*****67", "second")
