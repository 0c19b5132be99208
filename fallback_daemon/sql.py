"""Queries loaded by name from sql/queries/*.sql, and the migrations folder; no SQL lives in Python strings."""

from __future__ import annotations

import pathlib
import re
from typing import LiteralString, cast

ROOT = pathlib.Path(__file__).resolve().parent.parent / "sql"
MIGRATIONS = ROOT / "migrations"
_HEADER = re.compile(r"^-- name: (\w+) --$", re.MULTILINE)


def parse(text: str) -> dict[str, LiteralString]:
    """Split a queries file into {name: sql} on `-- name: x --` headers."""
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name}")
        queries[name] = cast(LiteralString, body.strip().rstrip(";"))
    return queries


def load(folder: pathlib.Path = ROOT / "queries") -> dict[str, LiteralString]:
    """Every query of every file in the folder; a name defined twice is an error."""
    merged: dict[str, LiteralString] = {}
    for path in sorted(folder.glob("*.sql")):
        for name, text in parse(path.read_text()).items():
            if name in merged:
                raise ValueError(f"query {name} defined twice ({path.name})")
            merged[name] = text
    return merged


queries = load()
