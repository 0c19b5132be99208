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
