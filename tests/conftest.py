"""Shared fixtures: a real Postgres (embedded via pgserver, or DATABASE_URL), one migrated template database
per session and a fresh database per test created from it."""

from __future__ import annotations

import os
import pathlib
import urllib.parse
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from fallback_daemon.db import embedded, migrate, store
from fallback_daemon.engine import service

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = f"fd_test_template_{os.getpid()}"  # one per pytest process: parallel runs never collide


def with_database(dsn: str, name: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
async def admin_dsn() -> str:
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        return dsn
    return await embedded.start(ROOT / ".data" / "test")


@pytest.fixture(scope="session")
async def template_db(admin_dsn: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await conn.close()
    tconn = await asyncpg.connect(with_database(admin_dsn, TEMPLATE))
    try:
        await migrate.migrate(tconn)
    finally:
        await tconn.close()
    yield TEMPLATE
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def db_dsn(admin_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (CREATE DATABASE … TEMPLATE)."""
    name = f"fd_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await conn.close()
    yield with_database(admin_dsn, name)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def db(db_dsn: str) -> AsyncIterator[store.Store]:
    s = await store.Store.connect(db_dsn, min_size=1, max_size=8)
    yield s
    await s.close()


@pytest.fixture
def svc(db: store.Store) -> service.Service:
    return service.Service(db)
