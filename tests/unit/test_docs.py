"""The README stays true: every environment variable the daemon reads is documented in it."""

from __future__ import annotations

import pathlib

from fallback_daemon import config

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    """Each variable of config.ENV appears in the README's configuration table."""
    text = README.read_text()
    assert sorted(v for v in config.ENV if f"`{v}`" not in text) == []


def test_readme_commands_match_the_makefile() -> None:
    """The two set-up commands the README gives exist as Makefile targets, and .ci/run calls the test one."""
    root = README.parent
    makefile = (root / "Makefile").read_text()
    assert "\ndemo:" in makefile
    assert "\ntest:" in makefile
    assert "make test" in (root / ".ci" / "run").read_text()
    assert "make demo" in README.read_text()
    assert "make test" in README.read_text()


def test_readme_configuration_tables_are_generated_from_the_declarations() -> None:
    """The README's configuration tables are exactly what `config.readme_tables` makes of the declarations
    (regenerate: `.venv/bin/python -m fallback_daemon.config --write-readme`)."""
    text = README.read_text()
    assert config.readme_with_tables(text) == text


def test_each_shown_default_names_the_declared_default() -> None:
    """A README default column that names a plain value names the one the code uses (no drift)."""
    import dataclasses

    wrong = []
    for f in dataclasses.fields(config.Settings):
        if isinstance(f.default, bool | int | float | str) and f.default not in ("", None):
            value = f.default
            forms = {f"`{value}`", f"`{value:g}`" if isinstance(value, float) else f"`{value}`"}
            if isinstance(value, bool):
                forms = {f"`{str(value).lower()}`"}
            if not any(form in f.metadata["shown"] for form in forms):
                wrong.append((f.metadata["env"], f.metadata["shown"], value))
    assert wrong == []
