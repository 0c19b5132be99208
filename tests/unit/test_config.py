"""Settings come from an injected environment, fail naming the variable, and never show secrets."""

from __future__ import annotations

import pytest

from fallback_daemon import config, errors


def test_defaults_and_endpoints() -> None:
    """Empty environment gives the documented defaults; endpoints accept http://host:port."""
    s = config.load({})
    assert s.cams_endpoint == "https://cams.ap-southeast-1.aliyuncs.com"
    assert s.sms_endpoint == "https://dysmsapi.ap-southeast-1.aliyuncs.com"
    s = config.load({"FALLBACK_CAMS_ENDPOINT": "http://127.0.0.1:9000", "FALLBACK_HTTP_PORT": "0"})
    assert s.cams_endpoint == "http://127.0.0.1:9000"
    assert s.http_port == 0


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FALLBACK_HTTP_PORT", "eighty"),
        ("FALLBACK_HTTP_PORT", "70000"),
        ("FALLBACK_CAMS_ENDPOINT", "ftp://x"),
        ("DATABASE_URL", "mysql://x"),
        ("FALLBACK_RECEIPT_TOKEN", "short"),
        ("FALLBACK_RECOVERY_MODE", "maybe"),
        ("FALLBACK_SEND_RATE", "-1"),
    ],
)
def test_bad_value_names_the_variable(var: str, value: str) -> None:
    """A bad value raises ConfigError whose message starts with the variable name."""
    with pytest.raises(errors.ConfigError) as info:
        config.load({var: value})
    assert info.value.variable == var
    assert str(info.value).startswith(var)


def test_secrets_never_in_repr() -> None:
    """repr/str of Settings and Secret hide the secret values."""
    s = config.load(
        {
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "topsecretvalue123",
            "FALLBACK_API_TOKEN": "apitoken-0123456789",
            "DATABASE_URL": "postgresql://u:pw-hidden@h/db",
        }
    )
    text = repr(s) + str(s.access_key_secret)
    for secret in ("topsecretvalue123", "apitoken-0123456789", "pw-hidden"):
        assert secret not in text
    assert s.api_token.reveal() == "apitoken-0123456789"


def test_missing_credentials_are_listed() -> None:
    """Without provider credentials the daemon knows exactly which variables are missing."""
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in config.load({}).provider_credentials_missing
