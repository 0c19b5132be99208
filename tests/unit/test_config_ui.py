"""The /ui session and /metrics access settings: defaults, parsing, and refusals naming the variable."""

from __future__ import annotations

import pytest

from fallback_daemon import config
from fallback_daemon.core import errors


def test_defaults_are_an_8_hour_session_no_public_url_and_open_metrics() -> None:
    settings = config.load({})
    assert settings.ui_session_ttl_s == 8 * 3600
    assert settings.public_url == ""
    assert settings.metrics_require_token is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("off", False),
    ],
)
def test_metrics_require_token_reads_booleans(raw: str, expected: bool) -> None:
    assert config.load({"FALLBACK_METRICS_REQUIRE_TOKEN": raw}).metrics_require_token is expected


def test_session_ttl_and_public_url_are_read() -> None:
    settings = config.load(
        {"FALLBACK_UI_SESSION_TTL_S": "3600", "FALLBACK_PUBLIC_URL": "https://fallback.example.com/ops"}
    )
    assert settings.ui_session_ttl_s == 3600.0
    assert settings.public_url == "https://fallback.example.com/ops"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FALLBACK_METRICS_REQUIRE_TOKEN", "maybe"),
        ("FALLBACK_UI_SESSION_TTL_S", "0"),
        ("FALLBACK_UI_SESSION_TTL_S", "59"),
        ("FALLBACK_UI_SESSION_TTL_S", str(31 * 86400)),
        ("FALLBACK_UI_SESSION_TTL_S", "eight hours"),
        ("FALLBACK_PUBLIC_URL", "fallback.example.com"),
        ("FALLBACK_PUBLIC_URL", "ftp://fallback.example.com"),
        ("FALLBACK_PUBLIC_URL", "https://"),
    ],
)
def test_bad_value_names_the_variable(var: str, value: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        config.load({var: value})
    assert var in str(info.value)
