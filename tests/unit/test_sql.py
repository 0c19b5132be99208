"""Every query name the code uses exists in sql_files/queries/*.sql, every query file parses, and the SQL
lives inside the package (where importlib.resources finds it in an installed wheel too)."""

from __future__ import annotations

import pathlib
import re

import pytest

from fallback_daemon.db import migrate, sql

PACKAGE = pathlib.Path(sql.__file__).parents[1]


def test_every_used_query_exists() -> None:
    """Q["name"] / sql.queries["name"] in the package all refer to loaded queries."""
    used = set()
    for path in PACKAGE.rglob("*.py"):
        used |= set(re.findall(r'(?:\bQ|queries)\["(\w+)"\]', path.read_text()))
    assert used, "no query uses found: the pattern is stale"
    assert sorted(used - set(sql.queries)) == []


def test_parse_rejects_duplicates() -> None:
    """A name defined twice in one file is an error."""
    text = "-- name: a --\nSELECT 1;\n-- name: a --\nSELECT 2;\n"
    with pytest.raises(ValueError, match="duplicate query name a"):
        sql.parse(text)


def test_migrations_are_numbered_and_unique() -> None:
    """Migration files carry unique, increasing NNNN prefixes."""
    versions = [v for v, _ in migrate.available()]
    assert versions == sorted(set(versions))


def test_the_sql_ships_inside_the_package() -> None:
    """Migrations and queries sit under fallback_daemon/sql_files (package data), not beside the package."""
    assert sql.ROOT.resolve() == (PACKAGE / "sql_files").resolve()
    assert sql.MIGRATIONS.resolve().is_relative_to(PACKAGE.resolve())
    assert migrate.available(), "no migrations found in the package"
    assert sorted(p.name for p in (sql.ROOT / "queries").glob("*.sql")), "no query files in the package"


def test_top_level_sql_is_the_package_folder() -> None:
    """The repository's top-level sql/ (named in the layout docs) is the same folder, not a stale copy."""
    top = PACKAGE.parent / "sql"
    assert top.is_symlink()
    assert top.resolve() == sql.ROOT.resolve()
