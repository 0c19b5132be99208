"""The CLI contract as an operator meets it: refusals name the variable and exit non-zero; migrate works."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e import procs


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "fallback_daemon", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=procs.ROOT,
        check=False,
    )


def test_run_without_credentials_refuses(db_dsn: str) -> None:
    """`run` without provider credentials exits 2 with a message naming the missing variable."""
    result = run_cli("run", env=procs.clean_env({"DATABASE_URL": db_dsn}))
    assert result.returncode == 2
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in result.stderr


def test_bad_setting_names_the_variable(db_dsn: str) -> None:
    """A malformed setting fails start-up naming the variable."""
    result = run_cli(
        "run", "--sandbox", env=procs.clean_env({"DATABASE_URL": db_dsn, "FALLBACK_HTTP_PORT": "x"})
    )
    assert result.returncode == 2
    assert "FALLBACK_HTTP_PORT" in result.stderr


def test_timer_scale_refused_outside_the_sandbox(db_dsn: str) -> None:
    """The sandbox-only timer scale is refused for a real run."""
    env = procs.clean_env(
        {
            "DATABASE_URL": db_dsn,
            "FALLBACK_SANDBOX_TIMER_SCALE": "0.1",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "a",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "b",
            "FALLBACK_RECEIPT_TOKEN": "r" * 20,
            "FALLBACK_API_TOKEN": "a" * 20,
            "FALLBACK_SMS_FROM": "X",
        }
    )
    result = run_cli("run", env=env)
    assert result.returncode == 2
    assert "FALLBACK_SANDBOX_TIMER_SCALE" in result.stderr


def test_migrate_is_idempotent(db_dsn: str) -> None:
    """`migrate` on an up-to-date database applies nothing and exits 0."""
    result = run_cli("migrate", env=procs.clean_env({"DATABASE_URL": db_dsn}))
    assert result.returncode == 0, result.stderr
    assert "applied 0 migration(s)" in result.stdout
