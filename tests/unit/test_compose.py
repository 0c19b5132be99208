"""deploy/docker-compose.yml as an operator runs it: Compose v1 and v2 both read it, nothing is published
beyond loopback, and the live daemon does not restart forever on a configuration error (exit 2)."""

from __future__ import annotations

import re

from tests.unit.test_deploy import compose

LOOPBACK_PORT = re.compile(r"^127\.0\.0\.1:\d+:\d+$")


def test_no_compose_v2_only_top_level_name() -> None:
    """No top-level `name:` (Compose v1 refuses it); the project name is given with -p in the comments."""
    doc = compose()
    assert "name" not in doc
    assert set(doc) <= {"x-daemon-env", "x-daemon", "services", "volumes"}


def test_every_published_port_is_on_loopback() -> None:
    """/v1, /ui, /metrics (and Postgres, the sandbox) are published on 127.0.0.1 only."""
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert LOOPBACK_PORT.match(str(port)), f"{name} publishes {port} beyond loopback"


def test_live_daemon_restarts_a_bounded_number_of_times() -> None:
    """The live profile's daemon uses `on-failure:<n>`: exit 2 (bad configuration) cannot loop forever."""
    restart = compose()["services"]["daemon"]["restart"]
    match = re.fullmatch(r"on-failure:(\d+)", restart)
    assert match, restart
    assert 1 <= int(match.group(1)) <= 10
