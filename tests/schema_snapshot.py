"""The schema snapshot: `fallback_daemon/sql_files/schema.sql` is what applying every migration, in order, to
an empty database produces (tests/integration/test_schema.py checks it).

It is read from the catalog (no pg_dump needed): tables with their columns (type, default, nullability,
identity and generated columns), constraints and indexes with Postgres' own definitions, plus views,
sequences, functions, triggers and enum types, each sorted by name, so the text changes only when the schema
does. After adding or changing a migration, regenerate it (uses DATABASE_URL, or the embedded Postgres as the
tests do) and commit the result with the migration:

    .venv/bin/python -m tests.schema_snapshot --write

Without `--write` it only compares, prints the diff and exits 1 on a difference.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import logging
import os
import pathlib
import sys
import urllib.parse
import uuid
import warnings

import asyncpg
import structlog

from fallback_daemon.db import embedded, migrate

ROOT = pathlib.Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "fallback_daemon" / "sql_files" / "schema.sql"
REGENERATE = ".venv/bin/python -m tests.schema_snapshot --write"
HEADER = f"""\
-- The schema that applying every migration (sql_files/migrations/*.sql, in order) to an empty database
-- produces, read from the Postgres catalog. Generated: do not edit. Regenerate after changing a migration:
--     {REGENERATE}
-- tests/integration/test_schema.py fails when this file and the migrations disagree.
"""

_COLUMNS = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS expr, a.attidentity::text AS identity,
       a.attgenerated::text AS generated
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_TABLES = """
SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname
"""
_CONSTRAINTS = """
SELECT conname, pg_get_constraintdef(oid, true) AS def FROM pg_constraint
WHERE conrelid = $1 ORDER BY conname
"""
_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid) AS def FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY c.relname
"""
_TRIGGERS = """
SELECT pg_get_triggerdef(t.oid, true) AS def FROM pg_trigger t
WHERE t.tgrelid = $1 AND NOT t.tgisinternal ORDER BY t.tgname
"""
_VIEWS = """
SELECT c.relname, c.relkind::text AS relkind, pg_get_viewdef(c.oid, true) AS def FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm') ORDER BY c.relname
"""
_SEQUENCES = """
SELECT c.relname, format_type(s.seqtypid, NULL) AS type, s.seqstart, s.seqincrement,
       (SELECT t.relname || '.' || a.attname FROM pg_depend d
          JOIN pg_class t ON t.oid = d.refobjid
          JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype = 'a') AS owned_by
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE n.nspname = 'public' AND c.relkind = 'S'
  -- an identity column's sequence is part of the column (GENERATED ... AS IDENTITY above)
  AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.objid = c.oid AND i.classid = 'pg_class'::regclass
                  AND i.deptype = 'i')
ORDER BY c.relname
"""
_FUNCTIONS = """
SELECT pg_get_functiondef(p.oid) AS def FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)
"""
_ENUMS = """
SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
WHERE n.nspname = 'public' GROUP BY t.typname ORDER BY t.typname
"""
_EXTENSIONS = "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY extname"


def _column(row: asyncpg.Record) -> str:
    parts = [row["name"], row["type"]]
    if row["generated"] == "s":
        parts.append(f"GENERATED ALWAYS AS ({row['expr']}) STORED")
    elif row["identity"] in ("a", "d"):  # "" when not an identity column
        parts.append("GENERATED " + ("ALWAYS" if row["identity"] == "a" else "BY DEFAULT") + " AS IDENTITY")
    elif row["expr"] is not None:
        parts.append(f"DEFAULT {row['expr']}")
    if row["not_null"]:
        parts.append("NOT NULL")
    return " ".join(parts)


async def dump(conn: asyncpg.Connection) -> str:
    """The normalized schema of the `public` schema of the connected database."""
    out = [HEADER]
    for row in await conn.fetch(_EXTENSIONS):
        out.append(f"CREATE EXTENSION {row['extname']};\n")
    for row in await conn.fetch(_ENUMS):
        labels = ", ".join("'" + label.replace("'", "''") + "'" for label in row["labels"])
        out.append(f"CREATE TYPE {row['typname']} AS ENUM ({labels});\n")
    for row in await conn.fetch(_SEQUENCES):
        owned = f"  -- owned by {row['owned_by']}" if row["owned_by"] else ""
        out.append(
            f"CREATE SEQUENCE {row['relname']} AS {row['type']} START {row['seqstart']}"
            f" INCREMENT {row['seqincrement']};{owned}\n"
        )
    for func in await conn.fetch(_FUNCTIONS):
        out.append(func["def"].strip() + ";\n")
    for table in await conn.fetch(_TABLES):
        oid, name = table["oid"], table["relname"]
        columns = [_column(c) for c in await conn.fetch(_COLUMNS, oid)]
        constraints = [f"CONSTRAINT {c['conname']} {c['def']}" for c in await conn.fetch(_CONSTRAINTS, oid)]
        body = ",\n".join(f"    {line}" for line in [*columns, *constraints])
        lines = [f"CREATE TABLE {name} (\n{body}\n);"]
        lines += [i["def"] + ";" for i in await conn.fetch(_INDEXES, oid)]
        lines += [t["def"] + ";" for t in await conn.fetch(_TRIGGERS, oid)]
        out.append("\n".join(lines) + "\n")
    for view in await conn.fetch(_VIEWS):
        kind = "MATERIALIZED VIEW" if view["relkind"] == "m" else "VIEW"
        out.append(f"CREATE {kind} {view['relname']} AS\n{view['def'].rstrip().rstrip(';')};\n")
    return "\n".join(out)


def _with_database(dsn: str, name: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def migrated_schema(admin_dsn: str) -> str:
    """Create an empty database, apply every migration, dump its schema, drop it."""
    name = f"fd_schema_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            conn = await asyncpg.connect(_with_database(admin_dsn, name))
            try:
                await migrate.migrate(conn)
                return await dump(conn)
            finally:
                await conn.close()
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


def diff(expected: str, actual: str) -> str:
    """A unified diff from the committed snapshot to what the migrations produce ("" when equal)."""
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{SNAPSHOT.relative_to(ROOT)} (committed)",
            tofile="all migrations applied to an empty database",
        )
    )


async def _main(write: bool) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    # pgserver falls back to /tmp when XDG_RUNTIME_DIR is unset (as pyproject's pytest filter says): harmless.
    warnings.filterwarnings("ignore", module="platformdirs")
    dsn = os.environ.get("DATABASE_URL") or await embedded.start(ROOT / ".data" / "test")
    actual = await migrated_schema(dsn)
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    if write:
        if actual != expected:
            SNAPSHOT.write_text(actual)
        print(f"{SNAPSHOT.relative_to(ROOT)}: {'updated' if actual != expected else 'already up to date'}")
        return 0
    changes = diff(expected, actual)
    if changes:
        print(changes, end="")
        print(f"\nthe snapshot is stale: {REGENERATE}", file=sys.stderr)
        return 1
    print(f"{SNAPSHOT.relative_to(ROOT)}: up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.schema_snapshot", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--write", action="store_true", help="rewrite the snapshot instead of comparing")
    return asyncio.run(_main(parser.parse_args().write))


if __name__ == "__main__":
    sys.exit(main())
