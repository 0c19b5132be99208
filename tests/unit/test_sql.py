"""Every query name the code uses exists in sql/queries/*.sql, and every query file parses."""

from __future__ import annotations

import pathlib
import re

from fallback_daemon import sql

PACKAGE = pathlib.Path(sql.__file__).parent


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
    try:
        sql.parse(text)
    except ValueError as exc:
        assert "duplicate" in str(exc)
    else:
        raise AssertionError("duplicate accepted")


def test_migrations_are_numbered_and_unique() -> None:
    """Migration files carry unique, increasing NNNN prefixes."""
    from fallback_daemon import migrate

    versions = [v for v, _ in migrate.available()]
    assert versions == sorted(set(versions))
