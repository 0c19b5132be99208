"""Every migration applied in order to an empty database produces exactly the committed schema snapshot
(fallback_daemon/sql_files/schema.sql); the catalog dump behind it sees each kind of change a migration
can make."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests import schema_snapshot
from tests.conftest import with_database


async def test_migrations_produce_the_snapshot(admin_dsn: str) -> None:
    """The snapshot is what the migrations build; on a difference the message is the diff and the fix."""
    actual = await schema_snapshot.migrated_schema(admin_dsn)
    expected = schema_snapshot.SNAPSHOT.read_text()
    assert actual == expected, (
        f"the schema snapshot is stale; regenerate it with `{schema_snapshot.REGENERATE}` and review:\n"
        + schema_snapshot.diff(expected, actual)
    )


@pytest.fixture
async def scratch(admin_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database (dropped afterwards)."""
    name = f"fd_scratch_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    conn = await asyncpg.connect(with_database(admin_dsn, name))
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.mark.parametrize(
    ("change", "appears"),
    [
        ("ALTER TABLE t ADD COLUMN note text", "    note text"),
        ("ALTER TABLE t ALTER COLUMN v SET DEFAULT 7", "    v integer DEFAULT 7 NOT NULL"),
        ("ALTER TABLE t ALTER COLUMN v DROP NOT NULL", "    v integer,"),
        ("ALTER TABLE t ALTER COLUMN v TYPE bigint", "    v bigint NOT NULL"),
        ("ALTER TABLE t ADD CONSTRAINT v_positive CHECK (v > 0)", "    CONSTRAINT v_positive CHECK (v > 0)"),
        (
            "CREATE INDEX t_v ON t (v) WHERE v > 1",
            "CREATE INDEX t_v ON public.t USING btree (v) WHERE (v > 1);",
        ),
        ("CREATE VIEW tv AS SELECT id FROM t", "CREATE VIEW tv AS\n SELECT id\n   FROM t;"),
        ("CREATE TYPE mood AS ENUM ('ok', 'not ok')", "CREATE TYPE mood AS ENUM ('ok', 'not ok');"),
    ],
)
async def test_the_dump_sees_each_kind_of_schema_change(
    scratch: asyncpg.Connection, change: str, appears: str
) -> None:
    """A column, default, nullability, type, constraint, index, view or type change shows in the dump."""
    await scratch.execute(
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int NOT NULL)"
    )
    before = await schema_snapshot.dump(scratch)
    assert "    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,\n" in before
    assert "    CONSTRAINT t_pkey PRIMARY KEY (id)\n" in before
    await scratch.execute(change)
    after = await schema_snapshot.dump(scratch)
    assert appears not in before
    assert appears in after
    assert schema_snapshot.diff(before, after)
