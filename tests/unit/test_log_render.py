"""The JSON renderer (msgspec, issue 11): valid JSON with the keys and values the stdlib renderer gave."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import hypothesis
import pytest
import structlog

from fallback_daemon import logs
from fallback_daemon.db import store

EVENT: dict[str, Any] = {
    "event": "decision",
    "message_id": "9b2f7a0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
    "attempt": 3,
    "lateness_s": 1.5,
    "held": False,
    "note": None,
    "detail": {"Status": "Delivered", "codes": [1, "x"], "nested": {"caf\u00e9": "\u00fc"}},
}


def test_render_json_equals_the_stdlib_renderer_parsed() -> None:
    """Same keys and values as json.dumps for the types log lines carry."""
    line = logs.render_json(None, "info", dict(EVENT))
    assert isinstance(line, str)
    assert json.loads(line) == json.loads(structlog.processors.JSONRenderer()(None, "info", dict(EVENT)))


def test_unknown_objects_render_as_str() -> None:
    """An object msgspec cannot encode is rendered by str(); a line it refuses goes through the stdlib."""

    class Thing:
        def __str__(self) -> str:
            return "thing-7"

    assert json.loads(logs.render_json(None, "info", {"event": "x", "obj": Thing()})) == {
        "event": "x",
        "obj": "thing-7",
    }
    # A lone surrogate: msgspec refuses the string, the stdlib renderer escapes it.
    assert json.loads(logs.render_json(None, "info", {"event": "x", "s": "a\ud800"})) == {
        "event": "x",
        "s": "a\ud800",
    }


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_configured_lines_are_masked_in_both_formats(fmt: str, restore: None) -> None:
    """configure() writes masked lines with either renderer; the JSON one is one object per line."""
    buf = io.StringIO()
    logs.configure(fmt=fmt, level="info", file=buf, cache=False)
    structlog.get_logger().info("decision", to="6591234567", error="refused for 6591234567")
    logging.getLogger("lib").warning("boom for 6591234567")
    text = buf.getvalue()
    assert "6591234567" not in text
    assert text.count("659*****67") == 3
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[0]["to"] == "659*****67" and lines[0]["level"] == "info"
        assert lines[1]["event"] == "boom for 659*****67" and lines[1]["logger"] == "lib"


@hypothesis.given(
    hypothesis.strategies.recursive(
        hypothesis.strategies.none()
        | hypothesis.strategies.booleans()
        | hypothesis.strategies.integers()
        | hypothesis.strategies.floats(allow_nan=False, allow_infinity=False)
        | hypothesis.strategies.text(alphabet=hypothesis.strategies.characters(blacklist_categories=("Cs",))),
        lambda children: (
            hypothesis.strategies.lists(children, max_size=4)
            | hypothesis.strategies.dictionaries(hypothesis.strategies.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_jsonb_parameters_encode_to_the_value_json_dumps_gave(value: object) -> None:
    """store.encode_jsonb (msgspec) and json.dumps describe the same JSON value for what the daemon stores."""
    assert json.loads(store.encode_jsonb(value)) == json.loads(json.dumps(value))


def test_jsonb_parameters_msgspec_refuses_fall_back_to_json_dumps() -> None:
    """A lone surrogate (msgspec refuses it) is encoded by json.dumps, as before the change."""
    assert store.encode_jsonb({"a": "\ud800"}) == json.dumps({"a": "\ud800"})
