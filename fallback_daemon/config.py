"""One frozen `Settings`, built once from an injected environ mapping; `Secret` hides its value.

No other module reads os.environ. A bad value raises ConfigError naming the variable.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Mapping
from typing import TypeVar

import yarl

from fallback_daemon import errors

T = TypeVar("T")


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the daemon. See the README's configuration table for the environment names."""

    database_url: Secret | None = None
    data_dir: pathlib.Path = pathlib.Path(".data")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    access_key_id: str = ""
    access_key_secret: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    cams_endpoint: str = "https://cams.ap-southeast-1.aliyuncs.com"
    sms_endpoint: str = "https://dysmsapi.ap-southeast-1.aliyuncs.com"
    sms_from: str = ""
    sms_template: str | None = None
    receipt_token: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    api_token: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    send_rate: float = 250.0
    send_burst: int = 5
    send_concurrency: int = 64
    send_max_attempts: int = 8
    send_timeout_s: float = 10.0
    sms_max_attempts: int = 5
    fire_batch: int = 500
    firing_lease_s: float = 120.0
    recovery_mode: str = "park"  # park (at-most-once) | resend (at-least-once)
    timer_max_sleep_s: float = 1.0
    max_body_bytes: int = 2 * 1024 * 1024
    shutdown_grace_s: float = 10.0
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    sandbox_timer_scale: float = 1.0  # sandbox/demo only: multiplies FallBackDuration
    # --- receipt-feed health gate ---
    gate_window_s: float = 600.0  # 0 disables; FALLBACK_GATE_CHANNELS overrides per channel
    gate_channels: tuple[tuple[str, float], ...] = ()
    # --- queues (MNS / SQS): section owned by the queue work ---
    # --- SMS providers and routing: section owned by the SMS provider work ---

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"Settings({fields})"

    @property
    def provider_credentials_missing(self) -> list[str]:
        """Names of the variables a real (non-sandbox) run still needs."""
        missing = []
        if not self.access_key_id:
            missing.append("ALIBABA_CLOUD_ACCESS_KEY_ID")
        if not self.access_key_secret:
            missing.append("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        if not self.receipt_token:
            missing.append("FALLBACK_RECEIPT_TOKEN")
        if not self.api_token:
            missing.append("FALLBACK_API_TOKEN")
        if not self.sms_from:
            missing.append("FALLBACK_SMS_FROM")
        return missing


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw

    return parse


def _endpoint(raw: str) -> str:
    url = yarl.URL(raw if "://" in raw else f"https://{raw}")
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http(s)://host[:port] URL")
    return str(url.origin())


def _token(raw: str) -> Secret:
    if len(raw) < 16 or any(c.isspace() or c == "/" for c in raw):
        raise ValueError("must be at least 16 characters, without spaces or '/'")
    return Secret(raw)


def _dsn(raw: str) -> Secret:
    if not raw.startswith(("postgres://", "postgresql://")):
        raise ValueError("must be a postgres:// or postgresql:// URL")
    return Secret(raw)


def _channel_windows(raw: str) -> tuple[tuple[str, float], ...]:
    """"whatsapp:300,viber:0" -> (("whatsapp", 300.0), ("viber", 0.0))."""
    out = []
    for item in raw.split(","):
        name, sep, value = item.strip().partition(":")
        if not sep or not name:
            raise ValueError("must look like whatsapp:300,viber:0")
        out.append((name, float(value)))
    return tuple(out)


# environment variable -> (Settings field, parser)
ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    "DATABASE_URL": ("database_url", _dsn),
    "FALLBACK_DATA_DIR": ("data_dir", pathlib.Path),
    "FALLBACK_HTTP_HOST": ("http_host", str),
    "FALLBACK_HTTP_PORT": ("http_port", _int(0, 65535)),
    "ALIBABA_CLOUD_ACCESS_KEY_ID": ("access_key_id", str),
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ("access_key_secret", Secret),
    "FALLBACK_CAMS_ENDPOINT": ("cams_endpoint", _endpoint),
    "FALLBACK_SMS_ENDPOINT": ("sms_endpoint", _endpoint),
    "FALLBACK_SMS_FROM": ("sms_from", str),
    "FALLBACK_SMS_TEMPLATE": ("sms_template", str),
    "FALLBACK_RECEIPT_TOKEN": ("receipt_token", _token),
    "FALLBACK_API_TOKEN": ("api_token", _token),
    "FALLBACK_SEND_RATE": ("send_rate", _float(0.1, 100000)),
    "FALLBACK_SEND_BURST": ("send_burst", _int(1, 1000)),
    "FALLBACK_SEND_CONCURRENCY": ("send_concurrency", _int(1, 4096)),
    "FALLBACK_SEND_MAX_ATTEMPTS": ("send_max_attempts", _int(1, 100)),
    "FALLBACK_SEND_TIMEOUT_S": ("send_timeout_s", _float(0.1, 120)),
    "FALLBACK_SMS_MAX_ATTEMPTS": ("sms_max_attempts", _int(1, 100)),
    "FALLBACK_FIRE_BATCH": ("fire_batch", _int(1, 100000)),
    "FALLBACK_FIRING_LEASE_S": ("firing_lease_s", _float(1, 86400)),
    "FALLBACK_RECOVERY_MODE": ("recovery_mode", _choice("park", "resend")),
    "FALLBACK_TIMER_MAX_SLEEP_S": ("timer_max_sleep_s", _float(0.01, 60)),
    "FALLBACK_MAX_BODY_BYTES": ("max_body_bytes", _int(1024, 64 * 1024 * 1024)),
    "FALLBACK_SHUTDOWN_GRACE_S": ("shutdown_grace_s", _float(0, 3600)),
    "FALLBACK_LOG_FORMAT": ("log_format", _choice("auto", "json", "console")),
    "FALLBACK_LOG_LEVEL": ("log_level", _choice("debug", "info", "warning", "error")),
    "FALLBACK_SANDBOX_TIMER_SCALE": ("sandbox_timer_scale", _float(0.001, 1.0)),
    "FALLBACK_GATE_WINDOW_S": ("gate_window_s", _float(0, 7 * 86400)),
    "FALLBACK_GATE_CHANNELS": ("gate_channels", _channel_windows),
    # --- queues (MNS / SQS) ---
    # --- SMS providers and routing ---
}


def load(environ: Mapping[str, str], **overrides: object) -> Settings:
    """Build Settings from the environment; `overrides` (already typed) win over it.

    Raises:
        errors.ConfigError: naming the first variable whose value is invalid.
    """
    values: dict[str, object] = {}
    for var, (field, parse) in ENV.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise errors.ConfigError(var, str(exc) or "invalid value") from exc
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
