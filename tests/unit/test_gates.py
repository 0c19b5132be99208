"""The README test command enforces the gates: CI runs `make test`, which runs `make lint` (ruff check, ruff
format --check, mypy --strict) before pytest, and fails when any one of the gates fails.

The recipe itself is run with stand-in tools (BIN pointed at scripts that record their arguments and exit
as told), so this checks the Makefile's logic without linting the tree twice.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GATES = {
    "ruff check": "ruff check .",
    "ruff format": "ruff format --check .",
    "mypy": "mypy --strict fallback_daemon",
}
MAKE = shutil.which("make")


def make(*args: str, cwd: pathlib.Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert MAKE, "make is required (the README test command is `make test`)"
    return subprocess.run(  # noqa: S603 - make, with our own Makefile
        [MAKE, "--no-print-directory", "-C", str(ROOT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ci_runs_make_test() -> None:
    """.ci/run's only command is `make test`."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands[-1] == "make test"
    assert "make" not in " ".join(commands[:-1])


def fresh_stamp(tmp_path: pathlib.Path) -> pathlib.Path:
    """A bootstrap stamp newer than pyproject.toml and requirements.lock: make skips the bootstrap."""
    stamp = tmp_path / "stamp"
    stamp.touch()
    os.utime(stamp, (2**31, 2**31))
    return stamp


def test_make_test_runs_every_gate_before_pytest(tmp_path: pathlib.Path) -> None:
    """`make -n test` (print, do not run): the three gates come before pytest."""
    result = make("-n", "test", f"STAMP={fresh_stamp(tmp_path)}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    positions = [out.find(f"/{command}") for command in GATES.values()]
    assert all(p >= 0 for p in positions), out
    assert max(positions) < out.index("-m pytest")


@pytest.mark.parametrize("failing", [None, *GATES])
def test_lint_runs_all_gates_and_fails_if_any_fails(tmp_path: pathlib.Path, failing: str | None) -> None:
    """Each gate runs even when an earlier one failed; the target fails exactly when one of them did."""
    calls = tmp_path / "calls"
    for tool in ("ruff", "mypy"):
        script = tmp_path / tool
        fail_on = [
            cmd.split(" ", 1)[1] for name, cmd in GATES.items() if name == failing and cmd.startswith(tool)
        ]
        condition = f'[ "$*" = "{fail_on[0]}" ] && exit 1' if fail_on else "true"
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n{condition}\nexit 0\n')
        script.chmod(0o755)
    result = make("lint", f"BIN={tmp_path}", f"STAMP={fresh_stamp(tmp_path)}")
    assert calls.read_text().splitlines() == list(GATES.values())
    if failing is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert "a gate failed" in result.stderr
