"""The embedded Postgres (pgserver) used when no DATABASE_URL is set: a real server under the data folder."""

from __future__ import annotations

import asyncio
import pathlib

import structlog

log = structlog.get_logger("fallback_daemon.db.embedded")


def _start(data_dir: pathlib.Path) -> str:
    from pgserver import postgres_server  # imported lazily: only needed without DATABASE_URL

    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode="stop": the server stops when the last process using it exits.
    server = postgres_server.get_server(pgdata, cleanup_mode="stop")
    _servers.append(server)  # keep the handle alive for the life of the process
    return str(server.get_uri())


_servers: list[object] = []


async def start(data_dir: pathlib.Path) -> str:
    """Start (or join) the embedded server; returns its DSN (a unix-socket URI)."""
    dsn = await asyncio.to_thread(_start, data_dir)
    log.info("embedded_postgres", data_dir=str(data_dir / "pg"))
    return dsn
