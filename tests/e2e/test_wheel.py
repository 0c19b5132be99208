"""The package as a user installs it: build the wheel, install it into a fresh virtual environment, then
`fallback-daemon migrate` on an empty database and `fallback-daemon run --sandbox` up to `/readyz` 200.

Nothing is fetched: the wheel is built with the setuptools already in .venv (pinned in requirements.lock,
`--no-build-isolation`), installed with `--no-index --no-deps`, and the fresh environment reaches the runtime
dependencies through a `.pth` file naming .venv's site-packages (which holds no copy of the project: only
the editable finder, and a `.pth` line does not run the `.pth` files of the folder it adds). Every command
runs from a folder outside the repository, so an import can only come from the installed wheel.
"""

from __future__ import annotations

import asyncio
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from collections.abc import AsyncIterator, Mapping

import asyncpg
import pytest

from tests.conftest import with_database
from tests.e2e import procs

PACKAGE = procs.ROOT / "fallback_daemon"
# The files a working install needs that are not Python modules: SQL (sql.py) and the operator page (/ui).
DATA_GLOBS = ("sql_files/migrations/*.sql", "sql_files/queries/*.sql", "web/static/*")


def run(args: list[str | pathlib.Path], *, cwd: pathlib.Path, env: Mapping[str, str] | None = None) -> str:
    """Run a command to completion; its output is in the assertion message if it fails."""
    result = subprocess.run(  # noqa: S603 - our own interpreter, pip and CLI
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = procs.clean_env({"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra})
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A wheel built from a copy of the sources (the repository stays untouched: no build/, no egg-info)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(procs.ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "fallback_daemon", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            dist,
            src,
        ],
        cwd=src,
        env=clean_env({}),
    )
    [built] = dist.glob("fallback_daemon-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A fresh virtual environment with the wheel installed; returns its bin/ folder."""
    root = tmp_path_factory.mktemp("venv")
    outside = tmp_path_factory.mktemp("cwd")
    run([sys.executable, "-m", "venv", "--without-pip", root], cwd=outside)
    python = root / "bin" / "python"
    site = pathlib.Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=outside).strip()
    )
    # The runtime dependencies, from the environment running this test (no network).
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python]
    run([*pip, "install", "--no-index", "--no-deps", wheel], cwd=outside, env=clean_env({}))
    where = run([python, "-c", "import fallback_daemon; print(fallback_daemon.__file__)"], cwd=outside)
    assert pathlib.Path(where.strip()).is_relative_to(site), f"fallback_daemon imported from {where}"
    return root / "bin"


@pytest.fixture
async def empty_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """A new, empty database (not the migrated template): `migrate` has everything to do."""
    name = f"fd_wheel_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    yield with_database(admin_dsn, name)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def test_the_wheel_carries_the_sql_and_the_static_page(wheel: pathlib.Path) -> None:
    """Every migration, query file and static file of the source tree is in the wheel, at the same path."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(procs.ROOT).as_posix() for pattern in DATA_GLOBS for path in PACKAGE.glob(pattern)
    }
    assert {p for p in expected if p.startswith("fallback_daemon/sql_files/migrations/")}, "no migrations?"
    assert {p for p in expected if p.startswith("fallback_daemon/web/static/")}, "no static files?"
    assert sorted(expected - names) == []
    assert "fallback_daemon/sql_files/schema.sql" in names


async def test_installed_wheel_migrates_and_runs(
    venv: pathlib.Path, empty_dsn: str, tmp_path: pathlib.Path
) -> None:
    """From outside the repository: `migrate` applies every migration, `run --sandbox` reaches /readyz 200
    and exits 0 on SIGTERM."""
    migrations = sorted(
        p.name for p in (PACKAGE / "sql_files" / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")
    )
    out = run([venv / "fallback-daemon", "migrate"], cwd=tmp_path, env=clean_env({"DATABASE_URL": empty_dsn}))
    assert re.search(rf"^applied {len(migrations)} migration\(s\): ", out, re.MULTILINE), out
    assert out.strip().split(": ", 1)[1].split(", ") == migrations

    port = procs.free_port()
    env = clean_env(
        {"DATABASE_URL": empty_dsn, "FALLBACK_HTTP_PORT": str(port), "FALLBACK_LOG_LEVEL": "warning"}
    )
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            venv / "fallback-daemon", "run", "--sandbox", cwd=tmp_path, env=env, stdout=log, stderr=log
        )
        try:
            await procs.wait_http(f"http://127.0.0.1:{port}/readyz", proc)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0, log_path.read_text()
