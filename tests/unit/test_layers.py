"""The layering the package layout promises (docs/architecture.md "Layers") holds in the imports."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "fallback_daemon"


def runtime_imports(path: pathlib.Path) -> set[str]:
    """Modules of fallback_daemon a file imports when it runs (imports under `if TYPE_CHECKING:` excluded)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fallback_daemon"):
            found |= (
                {f"{node.module}.{a.name}" for a in node.names}
                if node.module == "fallback_daemon"
                else {node.module}
            )
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fallback_daemon")}
    return found


def test_core_imports_only_core() -> None:
    """core/ (states, rules, validation, ports) depends on nothing else of the daemon at run time."""
    outside = {
        (path.name, name)
        for path in (PACKAGE / "core").glob("*.py")
        for name in runtime_imports(path)
        if not name.startswith("fallback_daemon.core")
    }
    assert outside == set()


def test_db_does_not_import_the_engine_or_drivers() -> None:
    """db/ is an adapter: it knows core's errors and models, never the engine, web or ops."""
    outside = {
        (path.name, name)
        for path in (PACKAGE / "db").glob("*.py")
        for name in runtime_imports(path)
        if name.startswith(("fallback_daemon.engine", "fallback_daemon.web", "fallback_daemon.ops"))
    }
    assert outside == set()


def test_the_checker_sees_a_violation(tmp_path: pathlib.Path) -> None:
    """The import reader finds a run-time import and ignores a TYPE_CHECKING one."""
    f = tmp_path / "m.py"
    f.write_text(
        "from typing import TYPE_CHECKING\nfrom fallback_daemon.engine import loops\n"
        "if TYPE_CHECKING:\n    from fallback_daemon.web import api\n"
    )
    assert runtime_imports(f) == {"fallback_daemon.engine"}
