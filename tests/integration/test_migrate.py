"""Migrations: applied in order, each once, under an advisory lock, recorded in schema_migrations."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from fallback_daemon.db import migrate
from tests.conftest import with_database


async def test_concurrent_migrate_applies_each_once(admin_dsn: str) -> None:
    """Two replicas migrating a fresh database at once apply every migration exactly once."""
    name = f"fd_mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        a = await asyncpg.connect(with_database(admin_dsn, name))
        b = await asyncpg.connect(with_database(admin_dsn, name))
        try:
            first, second = await asyncio.gather(migrate.migrate(a), migrate.migrate(b))
            expected = [p.name for _, p in migrate.available()]
            assert sorted(first + second) == expected
            assert await migrate.migrate(a) == []
            rows = await a.fetch("SELECT name FROM schema_migrations ORDER BY version")
            assert [r["name"] for r in rows] == expected
        finally:
            await a.close()
            await b.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
