"""FALLBACK_EVENT_LOOP picks the loop every command runs on (uvloop by default, the stdlib's on request)."""

from __future__ import annotations

import argparse
import asyncio

import pytest
import uvloop

from fallback_daemon import cli, config
from fallback_daemon.core import errors


def test_uvloop_is_the_default_and_asyncio_can_be_asked_for() -> None:
    assert config.load({}).event_loop == "uvloop"
    assert config.load({"FALLBACK_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(errors.ConfigError) as info:
        config.load({"FALLBACK_EVENT_LOOP": "trio"})
    assert info.value.variable == "FALLBACK_EVENT_LOOP"


@pytest.mark.parametrize(("name", "uv"), [("uvloop", True), ("asyncio", False), (None, True)])
def test_a_command_runs_on_the_configured_loop(
    name: str | None, uv: bool, monkeypatch: pytest.MonkeyPatch, restore: None
) -> None:
    """cli.main runs the command's coroutine on the loop the setting names."""
    seen: list[asyncio.AbstractEventLoop] = []

    async def dispatch(args: argparse.Namespace, settings: config.Settings) -> int:
        seen.append(asyncio.get_running_loop())
        return 0

    monkeypatch.setattr(cli, "_dispatch", dispatch)
    monkeypatch.delenv("FALLBACK_EVENT_LOOP", raising=False)
    if name is not None:
        monkeypatch.setenv("FALLBACK_EVENT_LOOP", name)
    assert cli.main(["sandbox"]) == 0
    [loop] = seen
    assert isinstance(loop, uvloop.Loop) is uv
    assert loop.is_closed(), "the runner closed its loop"
