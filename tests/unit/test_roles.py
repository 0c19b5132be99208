"""`run --role`: which loops a process runs (app.loops_for) and how the flag is read (cli.roles_arg)."""

from __future__ import annotations

import argparse

import pytest

from fallback_daemon import app, cli

NAMES = ["sender", "timer", "recovery", "feed-gate", "listen", "retention", "webhooks", "consumer-q1"]


@pytest.mark.parametrize(
    ("roles", "loops"),
    [
        ({"all"}, NAMES),
        ({"senders"}, ["sender", "listen"]),
        ({"timers"}, ["timer", "recovery", "listen"]),
        ({"api"}, ["feed-gate", "listen"]),
        ({"workers"}, ["feed-gate", "listen", "retention", "webhooks", "consumer-q1"]),
        ({"senders", "timers"}, ["sender", "timer", "recovery", "listen"]),
    ],
)
def test_each_role_runs_its_loops(roles: set[str], loops: list[str]) -> None:
    """Each loop runs in exactly the roles it belongs to; the union of the four roles is everything."""
    assert app.loops_for(frozenset(roles), NAMES) == loops


def test_the_four_roles_together_run_every_loop_once_per_kind() -> None:
    union = {
        n for role in ("api", "senders", "timers", "workers") for n in app.loops_for(frozenset({role}), NAMES)
    }
    assert union == set(NAMES)


def test_role_flag_parses_lists_and_refuses_unknown_roles() -> None:
    assert cli.roles_arg("api, workers") == frozenset({"api", "workers"})
    with pytest.raises(argparse.ArgumentTypeError, match="unknown role timer"):
        cli.roles_arg("timer")
    with pytest.raises(argparse.ArgumentTypeError, match="none"):
        cli.roles_arg(",")
