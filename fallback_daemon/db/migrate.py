"""Forward-only numbered migrations (sql/migrations/NNNN_*.sql), each applied once under an advisory lock."""

from __future__ import annotations

import pathlib

import asyncpg
import structlog

from fallback_daemon.db import sql

log = structlog.get_logger("fallback_daemon.db.migrate")
LOCK_KEY = 0x46414C4C  # "FALL": one advisory lock for every replica that migrates at start-up


def available(folder: pathlib.Path = sql.MIGRATIONS) -> list[tuple[str, pathlib.Path]]:
    """(version, path) for each migration file, in order; version is the NNNN prefix."""
    files = sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [(f.name.split("_", 1)[0], f) for f in files]


async def migrate(conn: asyncpg.Connection, folder: pathlib.Path = sql.MIGRATIONS) -> list[str]:
    """Apply the pending migrations; returns the names applied (empty if up to date)."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, path in available(folder):
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, path.name
                )
            # A fresh table needs statistics before load, or the planner guesses (SPEC §5).
            await conn.execute("ANALYZE")
            log.info("migration_applied", migration=path.name)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return applied_now
