"""Start-up failures as an operator meets them: one line naming the variable, the right exit code, no
traceback.

The CLI runs as a subprocess (as systemd or Kubernetes would start it); the database-retry test runs the
connect in-process against a loopback port that only starts forwarding to Postgres after the first refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import socket
import urllib.parse
from collections.abc import AsyncIterator

import structlog

from fallback_daemon import app, config
from fallback_daemon.core import errors
from tests.e2e import procs
from tests.e2e.test_cli import run_cli


def one_line_error(stderr: str) -> str:
    """The refusal is exactly one line and carries no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_busy_port_names_the_variable_and_exits_2(db_dsn: str) -> None:
    """A port already in use: one line naming FALLBACK_HTTP_PORT, exit 2 (a supervisor should not loop)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = procs.clean_env(
            {"DATABASE_URL": db_dsn, "FALLBACK_HTTP_PORT": str(port), "FALLBACK_LOG_LEVEL": "error"}
        )
        result = run_cli("run", "--sandbox", env=env)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result.stderr)
    assert "FALLBACK_HTTP_PORT" in line
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line


def test_refused_database_names_database_url_after_retrying(tmp_path: pathlib.Path) -> None:
    """Postgres refusing connections: retried for FALLBACK_DB_CONNECT_WAIT_S, then one line naming
    DATABASE_URL (never its password), exit 3."""
    dead_port = procs.free_port()
    env = procs.clean_env(
        {
            "DATABASE_URL": f"postgresql://fd:hunter2-db-password@127.0.0.1:{dead_port}/fd",
            "FALLBACK_DB_CONNECT_WAIT_S": "1.5",
            "FALLBACK_LOG_LEVEL": "error",
        }
    )
    result = run_cli("migrate", env=env)
    assert result.returncode == 3, result.stderr
    line = one_line_error(result.stderr)
    assert f"DATABASE_URL (127.0.0.1:{dead_port}/fd): cannot connect (tried " in line
    assert "hunter2" not in result.stderr + result.stdout


def test_mistyped_setting_is_refused_with_a_suggestion() -> None:
    """FALLBACK_HTTP_PROT (a typo) is refused at once, naming it and the closest known variable."""
    result = run_cli("run", "--sandbox", env=procs.clean_env({"FALLBACK_HTTP_PROT": "8080"}))
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert "FALLBACK_HTTP_PROT: unknown setting; did you mean FALLBACK_HTTP_PORT?" in line


def test_run_without_database_url_refuses_instead_of_embedding(tmp_path: pathlib.Path) -> None:
    """`run` without DATABASE_URL (nor --sandbox) refuses naming it, and starts no embedded database."""
    data = tmp_path / "data"
    result = run_cli("run", env=procs.clean_env({"FALLBACK_DATA_DIR": str(data)}))
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert line.startswith("fallback-daemon: configuration error: DATABASE_URL: required for `run`")
    assert "--embedded-db" in line
    assert not data.exists()


def test_missing_credentials_are_listed_once() -> None:
    """The refusal names the first missing variable, and the "also missing" list does not repeat it."""
    settings = config.load({"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s", "FALLBACK_SMS_FROM": "X"})
    try:
        app.check_can_run(settings, use_sandbox=False)
    except errors.ConfigError as exc:
        message = str(exc)
    else:
        raise AssertionError("check_can_run accepted missing credentials")
    assert message == (
        "ALIBABA_CLOUD_ACCESS_KEY_ID: required without --sandbox "
        "(also missing: FALLBACK_RECEIPT_TOKEN, FALLBACK_API_TOKEN)"
    )
    assert message.count("ALIBABA_CLOUD_ACCESS_KEY_ID") == 1


@contextlib.asynccontextmanager
async def late_proxy(target_dsn: str, port: int, opened: asyncio.Event) -> AsyncIterator[None]:
    """Once `opened` is set, listen on 127.0.0.1:port and forward each connection to the test Postgres."""
    parts = urllib.parse.urlsplit(target_dsn)
    socket_dir = urllib.parse.parse_qs(parts.query).get("host", [None])[0]

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if socket_dir:
            up_r, up_w = await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{parts.port or 5432}")
        else:
            up_r, up_w = await asyncio.open_connection(parts.hostname, parts.port or 5432)
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def serve() -> None:
        await opened.wait()
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(serve(), name="late-proxy")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_database_that_comes_up_late_is_waited_for(db_dsn: str) -> None:
    """A connection refused at first is retried; once Postgres answers, start-up carries on."""
    port = procs.free_port()
    parts = urllib.parse.urlsplit(db_dsn)
    user = parts.username or "postgres"
    dsn = f"postgresql://{user}@127.0.0.1:{port}{parts.path}"
    settings = config.load({"DATABASE_URL": dsn, "FALLBACK_DB_CONNECT_WAIT_S": "60"})
    refused = asyncio.Event()

    def spy(logger: object, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        if event.get("event") == "database_unavailable":
            refused.set()
        return event

    old = structlog.get_config()["processors"]
    structlog.configure(processors=[spy, *old])
    try:
        async with late_proxy(db_dsn, port, refused):
            db = await app.connect_database(settings, dsn, min_size=1, max_size=1)
            try:
                assert await db.fetchval("SELECT 1") == 1
            finally:
                await db.close()
    finally:
        structlog.configure(processors=old)
    assert refused.is_set()
