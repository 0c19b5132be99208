"""Settings come from an injected environment, fail naming the variable, and never show secrets."""

from __future__ import annotations

import pytest

from fallback_daemon import config
from fallback_daemon.core import errors


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


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FALLBACK_MNS_MODE", "sts"),
        ("FALLBACK_MNS_ENDPOINT", "ftp://mns"),
        ("FALLBACK_MNS_CHATAPP_QUEUE", "1-starts-with-a-digit"),
        ("FALLBACK_MNS_SMS_QUEUE", "has/slash"),
        ("FALLBACK_DYBASEAPI_ENDPOINT", "ftp://dybaseapi"),
        ("FALLBACK_DYBASEAPI_VERSION", "2020-01-01"),
        ("FALLBACK_MNS_POLLERS", "0"),
        ("FALLBACK_MNS_WAIT_S", "31"),
        ("FALLBACK_MNS_BATCH", "17"),
    ],
)
def test_bad_mns_value_names_the_variable(var: str, value: str) -> None:
    """A bad MNS setting fails start-up with a ConfigError naming its variable."""
    with pytest.raises(errors.ConfigError) as info:
        config.load({var: value})
    assert info.value.variable == var


def test_mns_settings_defaults_and_secret() -> None:
    """MNS is off without a queue name, defaults to Alicom mode, and its AccessKey secret stays hidden."""
    s = config.load({})
    assert (s.mns_chatapp_queue, s.mns_sms_queue, s.mns_mode) == ("", "", "alicom")
    assert (s.mns_pollers, s.mns_wait_s, s.mns_batch) == (2, 10, 16)
    assert s.dybaseapi_endpoint == "https://dybaseapi.aliyuncs.com"
    s = config.load(
        {
            "FALLBACK_MNS_CHATAPP_QUEUE": "Alicom-Queue-1234567890-ChatAppStatus",
            "FALLBACK_MNS_MODE": "own",
            "FALLBACK_MNS_ENDPOINT": "http://127.0.0.1:9100/ignored-path",
            "FALLBACK_MNS_ACCESS_KEY_SECRET": "mns-secret-value-42",
        }
    )
    assert s.mns_endpoint == "http://127.0.0.1:9100"
    assert "mns-secret-value-42" not in repr(s)
    assert s.mns_access_key_secret.reveal() == "mns-secret-value-42"
