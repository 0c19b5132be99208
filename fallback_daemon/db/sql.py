"""Queries by name from the package's sql_files/queries/*.sql, and its migrations; no SQL in Python strings.

The SQL ships inside the package (package data, found with importlib.resources), so a plain `pip install .`
carries it; the top-level `sql/` in the repository is a symlink to the same folder, for readers.
"""

from __future__ import annotations

import importlib.resources
import pathlib
import re
from typing import LiteralString, cast

ROOT = pathlib.Path(str(importlib.resources.files("fallback_daemon").joinpath("sql_files")))
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
