"""`fallback-daemon demo` twice on one database: each run's view and summary count only its own messages."""

from __future__ import annotations

import re

import pytest

from fallback_daemon import config, demo


def last_chat_leg(out: str) -> dict[str, int]:
    """The chat-leg counts of the final ("done") view."""
    done = out.rsplit("] done:", 1)[1]
    line = next(x for x in done.splitlines() if x.strip().startswith("chat leg:"))
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", line.split(":", 1)[1])}


async def test_second_demo_summarises_only_its_own_run(
    db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run 2 (8 messages) after run 1 (12) on the same database reports 8 messages, not 20."""
    settings = config.load(
        {"DATABASE_URL": db_dsn, "FALLBACK_HTTP_PORT": "0", "FALLBACK_LOG_LEVEL": "warning"}
    )
    for count in (12, 8):
        assert await demo.run(settings, count=count, rate=200, timer_scale=0.005, stay_up=False) == 0
        out = capsys.readouterr().out
        assert f"summary of this run: {count} messages;" in out
        assert sum(last_chat_leg(out).values()) == count
