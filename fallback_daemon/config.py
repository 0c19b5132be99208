"""One frozen `Settings`, built once from an injected environ mapping; `Secret` hides its value.

No other module reads os.environ. A bad value raises ConfigError naming the variable.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import pathlib
import zoneinfo
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
    db_connect_wait_s: float = 30.0  # how long start-up retries a database that refuses connections
    data_dir: pathlib.Path = pathlib.Path(".data")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    access_key_id: str = ""
    access_key_secret: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    # --- Alibaba credential chain (docs/credentials.md): Alibaba's own variable names ---
    security_token: Secret = dataclasses.field(default_factory=lambda: Secret(""))  # STS, with the AccessKey
    role_arn: str = ""  # OIDC / ACK RRSA: the three set = AssumeRoleWithOIDC
    oidc_provider_arn: str = ""
    oidc_token_file: str = ""
    role_session_name: str = ""  # empty: fallback-daemon-<epoch>
    sts_endpoint: str = ""  # empty: sts[-vpc].<ALIBABA_CLOUD_STS_REGION>.aliyuncs.com, else sts.aliyuncs.com
    sts_region: str = ""
    sts_vpc_endpoint: bool = False
    credentials_file: str = ""  # empty: ~/.alibabacloud/credentials.ini
    credentials_profile: str = "default"
    cams_endpoint: str = "https://cams.ap-southeast-1.aliyuncs.com"
    sms_endpoint: str = "https://dysmsapi.ap-southeast-1.aliyuncs.com"
    sms_from: str = ""
    sms_template: str | None = None
    receipt_token: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    api_token: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    # Optional split of the API token (web/tokens.py has the matrix): once set, operator actions need the
    # operator token, operator reads and a required /metrics the read (or operator) token.
    operator_token: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    read_token: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    send_rate: float = 250.0
    send_burst: int = 5
    send_concurrency: int = 64
    send_max_attempts: int = 8
    send_timeout_s: float = 10.0
    sms_max_attempts: int = 60  # a cap besides the window (60 capped 60 s steps ≈ the 30 min window)
    sms_retry_window_s: float = 1800.0  # durable SMS retries ride out a provider outage this long
    reconcile_delay_s: float = 60.0  # first provider lookup of an ambiguous send, after its request
    reconcile_max_attempts: int = 6
    cams_cust_space_id: str = ""  # for ListChatappMessage when a message's params carry no CustSpaceId
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
    # SQS (AWS credentials: the standard AWS chain, never settings); both URLs empty = no SQS consumer.
    sqs_chatapp_queue_url: str = ""
    sqs_sms_queue_url: str = ""
    sqs_pollers: int = 2
    sqs_wait_s: int = 10  # long poll; shutdown waits for a poll in progress, so stay below the grace
    aws_region: str = ""  # empty: the AWS chain decides (AWS_REGION, AWS_DEFAULT_REGION, ~/.aws/config)
    aws_endpoint_url: str | None = None  # moto / localstack; used by the SQS and SNS clients
    # MNS (docs/receipts-mns.md): no queue name = no MNS consumer. alicom: temporary credentials from
    # Dybaseapi QueryTokenForMnsQueue; own: a static AccessKey on a queue of the user's account.
    mns_mode: str = "alicom"
    mns_endpoint: str = ""  # empty: Alibaba's China Alicom endpoint (alicom mode only)
    mns_chatapp_queue: str = ""
    mns_sms_queue: str = ""
    mns_access_key_id: str = ""  # empty: ALIBABA_CLOUD_ACCESS_KEY_ID (also signs QueryTokenForMnsQueue)
    mns_access_key_secret: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    dybaseapi_endpoint: str = "https://dybaseapi.aliyuncs.com"
    dybaseapi_version: str = "2017-05-25"
    mns_pollers: int = 2
    mns_wait_s: int = 10
    mns_batch: int = 16
    # --- SMS providers and routing: section owned by the SMS provider work ---
    sms_provider: str = "globe"  # default provider: globe | domestic | sns
    sms_routes: tuple[tuple[str, str], ...] = ()  # ("86", "domestic"), ("channel:viber", "globe"), ...
    sms_sign_name: str = ""  # SendSms SignName
    sms_template_code: str = ""  # SendSms TemplateCode
    sms_template_param: tuple[tuple[str, str], ...] | None = None  # SendSms variable -> "{key}" text
    sms_domestic_endpoint: str = "https://dysmsapi.aliyuncs.com"
    sns_sender_id: str = ""
    sns_sms_type: str = "Transactional"
    # --- retention (purge of finished rows) ---
    retention_days: float = 30.0  # 0 disables
    retention_batch: int = 1000  # rows per DELETE
    # --- operator page (/ui) sessions and /metrics access ---
    ui_session_ttl_s: float = 8 * 3600.0  # a /ui session ends this long after login (or at logout)
    public_url: str = ""  # the daemon's external URL; https: the /ui cookie is Secure (behind a TLS proxy)
    metrics_require_token: bool = False  # open by default: Prometheus scrapes over a private network
    # --- outcome events (webhooks, docs/webhooks.md) ---
    webhook_retry_schedule: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)  # s before each
    webhook_timeout_s: float = 15.0  # a 2xx within this is a delivery; anything else is retried
    webhook_disable_after_s: float = 5 * 86400.0  # disable an endpoint failing this long without a break
    webhook_concurrency: int = 32  # deliveries in flight per replica
    # --- guards at the moment of fallback (docs/guards.md); budgets themselves are set through the API ---
    budget_tz: str = "UTC"  # the zone whose calendar day the SMS budgets count
    budget_action: str = "hold"  # over budget: hold (an operator may release) | drop (suppressed)
    sms_deny_prefixes: tuple[str, ...] = ()  # numbers under these prefixes never get a fallback SMS
    quiet_hours: tuple[tuple[str, int, int, str], ...] = ()  # (prefix, start min, end min, zone)

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
        globe_used = "globe" in {self.sms_provider, *(p for _, p in self.sms_routes)}
        if globe_used and not self.sms_from:
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
    """ "whatsapp:300,viber:0" -> (("whatsapp", 300.0), ("viber", 0.0))."""
    out = []
    for item in raw.split(","):
        name, sep, value = item.strip().partition(":")
        if not sep or not name:
            raise ValueError("must look like whatsapp:300,viber:0")
        out.append((name, float(value)))
    return tuple(out)


# --- parsers of the SQS and SMS-provider settings ---
SMS_PROVIDERS = ("globe", "domestic", "sns")


def _queue_url(raw: str) -> str:
    url = yarl.URL(raw)
    if url.scheme not in ("http", "https") or not url.host or url.path in ("", "/"):
        raise ValueError("must be a queue URL like https://sqs.<region>.amazonaws.com/<account>/<queue>")
    return raw


def _sms_routes(raw: str) -> tuple[tuple[str, str], ...]:
    """ "86=domestic,+1=sns,channel:viber=globe" -> (("86", "domestic"), ("1", "sns"), …)."""
    out: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, provider = (x.strip() for x in item.partition("="))
        if not sep or not key:
            raise ValueError(f"{item!r} must look like 86=domestic or channel:viber=globe")
        if provider not in SMS_PROVIDERS:
            expected = ", ".join(SMS_PROVIDERS)
            raise ValueError(f"{item!r}: unknown provider {provider!r} (expected one of {expected})")
        if key.startswith("channel:"):
            channel = key.removeprefix("channel:").strip().lower()
            if not channel.isalpha():
                raise ValueError(f"{item!r}: channel:<name> needs a channel name such as viber")
            key = f"channel:{channel}"
        else:
            key = key.removeprefix("+")
            if not (key.isascii() and key.isdigit()):
                raise ValueError(f"{item!r}: a route is a dialing-code prefix (digits) or channel:<name>")
        if key in dict(out):
            raise ValueError(f"{key!r} is routed twice")
        out.append((key, provider))
    return tuple(out)


def _template_param_map(raw: str) -> tuple[tuple[str, str], ...]:
    """'{"code":"{1}"}' -> (("code", "{1}"),): SendSms variable -> {key} text."""
    value = json.loads(raw)  # a JSONDecodeError is a ValueError
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError('must be a JSON object of strings, e.g. {"code":"{1}"}')
    return tuple(value.items())


def _sender_id(raw: str) -> str:
    ok = 1 <= len(raw) <= 11 and raw.isascii() and all(c.isalnum() or c == "-" for c in raw)
    if not ok or not any(c.isalpha() for c in raw) or raw.startswith("-") or raw.endswith("-"):
        raise ValueError("must be 1-11 letters, digits or inner hyphens, with at least one letter")
    return raw


# --- parsers of the MNS settings ---
def _mns_queue_name(raw: str) -> str:
    """MNS queue names: a letter, then letters, digits and hyphens (at most 256 characters)."""
    if not (
        raw[:1].isascii()
        and raw[:1].isalpha()
        and len(raw) <= 256
        and all(c.isascii() and (c.isalnum() or c == "-") for c in raw)
    ):
        raise ValueError(
            "must be an MNS queue name: a letter, then letters, digits or '-' (e.g. "
            "Alicom-Queue-1234567890-ChatAppStatus)"
        )
    return raw


# --- parsers of the /ui and /metrics settings ---
def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _public_url(raw: str) -> str:
    url = yarl.URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be the daemon's external http(s):// URL, e.g. https://fallback.example.com")
    return raw


# --- parsers of the guard settings ---
def _zone(raw: str) -> str:
    try:
        zoneinfo.ZoneInfo(raw)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError(f"{raw!r} is not an IANA time zone (e.g. UTC, Asia/Shanghai)") from None
    return raw


def _prefix(raw: str, item: str) -> str:
    key = raw.strip().removeprefix("+")
    if not (key.isascii() and key.isdigit() and 1 <= len(key) <= 15):
        raise ValueError(f"{item!r}: a prefix is 1 to 15 digits of the number, country code first")
    return key


def _prefixes(raw: str) -> tuple[str, ...]:
    """ "882,883,+1876" -> ("882", "883", "1876")."""
    return tuple(dict.fromkeys(_prefix(p, p) for p in raw.split(",") if p.strip()))


def _clock(value: str, item: str) -> int:
    hours, sep, minutes = value.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
        raise ValueError(f"{item!r}: times are HH:MM (00:00 to 23:59)")
    return int(hours) * 60 + int(minutes)


def _quiet_hours(raw: str) -> tuple[tuple[str, int, int, str], ...]:
    """ "86=22:00-08:00@Asia/Shanghai,44=21:00-08:00@Europe/London" -> (("86", 1320, 480, "Asia/Shanghai"),
    …): (prefix, start and end in minutes after local midnight, IANA zone)."""
    out: list[tuple[str, int, int, str]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, rest = item.partition("=")
        span, at, zone = rest.partition("@")
        start, dash, end = span.partition("-")
        if not (sep and at and dash):
            raise ValueError(f"{item!r} must look like 86=22:00-08:00@Asia/Shanghai")
        prefix = _prefix(key, item)
        if prefix in {p for p, *_ in out}:
            raise ValueError(f"prefix {prefix!r} has two quiet windows")
        first, last = _clock(start, item), _clock(end, item)
        if first == last:
            raise ValueError(f"{item!r}: the window is empty (start = end)")
        out.append((prefix, first, last, _zone(zone.strip())))
    return tuple(out)


# --- parser of the webhook settings ---
def _webhook_schedule(raw: str) -> tuple[float, ...]:
    """ "0,5,300" -> (0.0, 5.0, 300.0): the delay before each attempt (the first one included)."""
    try:
        steps = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ValueError("must be comma-separated seconds, e.g. 0,5,300,1800") from None
    if any(not 0 <= s <= 7 * 86400 for s in steps):
        raise ValueError("each delay must be between 0 and 604800 seconds")
    return steps


# environment variable -> (Settings field, parser)
ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    "DATABASE_URL": ("database_url", _dsn),
    "FALLBACK_DB_CONNECT_WAIT_S": ("db_connect_wait_s", _float(0, 3600)),
    "FALLBACK_DATA_DIR": ("data_dir", pathlib.Path),
    "FALLBACK_HTTP_HOST": ("http_host", str),
    "FALLBACK_HTTP_PORT": ("http_port", _int(0, 65535)),
    "ALIBABA_CLOUD_ACCESS_KEY_ID": ("access_key_id", str),
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ("access_key_secret", Secret),
    "ALIBABA_CLOUD_SECURITY_TOKEN": ("security_token", Secret),
    "ALIBABA_CLOUD_ROLE_ARN": ("role_arn", str),
    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": ("oidc_provider_arn", str),
    "ALIBABA_CLOUD_OIDC_TOKEN_FILE": ("oidc_token_file", str),
    "ALIBABA_CLOUD_ROLE_SESSION_NAME": ("role_session_name", str),
    "ALIBABA_CLOUD_STS_ENDPOINT": ("sts_endpoint", _endpoint),
    "ALIBABA_CLOUD_STS_REGION": ("sts_region", str),
    "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED": ("sts_vpc_endpoint", _bool),
    "ALIBABA_CLOUD_CREDENTIALS_FILE": ("credentials_file", str),
    "ALIBABA_CLOUD_PROFILE": ("credentials_profile", str),
    "FALLBACK_CAMS_ENDPOINT": ("cams_endpoint", _endpoint),
    "FALLBACK_SMS_ENDPOINT": ("sms_endpoint", _endpoint),
    "FALLBACK_SMS_FROM": ("sms_from", str),
    "FALLBACK_SMS_TEMPLATE": ("sms_template", str),
    "FALLBACK_RECEIPT_TOKEN": ("receipt_token", _token),
    "FALLBACK_API_TOKEN": ("api_token", _token),
    "FALLBACK_OPERATOR_TOKEN": ("operator_token", _token),
    "FALLBACK_READ_TOKEN": ("read_token", _token),
    "FALLBACK_SEND_RATE": ("send_rate", _float(0.1, 100000)),
    "FALLBACK_SEND_BURST": ("send_burst", _int(1, 1000)),
    "FALLBACK_SEND_CONCURRENCY": ("send_concurrency", _int(1, 4096)),
    "FALLBACK_SEND_MAX_ATTEMPTS": ("send_max_attempts", _int(1, 100)),
    "FALLBACK_SEND_TIMEOUT_S": ("send_timeout_s", _float(0.1, 120)),
    "FALLBACK_SMS_MAX_ATTEMPTS": ("sms_max_attempts", _int(1, 10000)),
    "FALLBACK_SMS_RETRY_WINDOW_S": ("sms_retry_window_s", _float(0, 7 * 86400)),
    "FALLBACK_RECONCILE_DELAY_S": ("reconcile_delay_s", _float(0, 86400)),
    "FALLBACK_RECONCILE_MAX_ATTEMPTS": ("reconcile_max_attempts", _int(0, 1000)),
    "FALLBACK_CAMS_CUST_SPACE_ID": ("cams_cust_space_id", str),
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
    "FALLBACK_SQS_CHATAPP_QUEUE_URL": ("sqs_chatapp_queue_url", _queue_url),
    "FALLBACK_SQS_SMS_QUEUE_URL": ("sqs_sms_queue_url", _queue_url),
    "FALLBACK_SQS_POLLERS": ("sqs_pollers", _int(1, 64)),
    "FALLBACK_SQS_WAIT_S": ("sqs_wait_s", _int(1, 20)),
    "FALLBACK_AWS_REGION": ("aws_region", str),
    "FALLBACK_AWS_ENDPOINT_URL": ("aws_endpoint_url", _endpoint),
    "FALLBACK_MNS_MODE": ("mns_mode", _choice("alicom", "own")),
    "FALLBACK_MNS_ENDPOINT": ("mns_endpoint", _endpoint),
    "FALLBACK_MNS_CHATAPP_QUEUE": ("mns_chatapp_queue", _mns_queue_name),
    "FALLBACK_MNS_SMS_QUEUE": ("mns_sms_queue", _mns_queue_name),
    "FALLBACK_MNS_ACCESS_KEY_ID": ("mns_access_key_id", str),
    "FALLBACK_MNS_ACCESS_KEY_SECRET": ("mns_access_key_secret", Secret),
    "FALLBACK_DYBASEAPI_ENDPOINT": ("dybaseapi_endpoint", _endpoint),
    "FALLBACK_DYBASEAPI_VERSION": ("dybaseapi_version", _choice("2017-05-25", "2018-05-01")),
    "FALLBACK_MNS_POLLERS": ("mns_pollers", _int(1, 64)),
    "FALLBACK_MNS_WAIT_S": ("mns_wait_s", _int(0, 30)),
    "FALLBACK_MNS_BATCH": ("mns_batch", _int(1, 16)),
    # --- SMS providers and routing ---
    "FALLBACK_SMS_PROVIDER": ("sms_provider", _choice(*SMS_PROVIDERS)),
    "FALLBACK_SMS_ROUTES": ("sms_routes", _sms_routes),
    "FALLBACK_SMS_SIGN_NAME": ("sms_sign_name", str),
    "FALLBACK_SMS_TEMPLATE_CODE": ("sms_template_code", str),
    "FALLBACK_SMS_TEMPLATE_PARAM": ("sms_template_param", _template_param_map),
    "FALLBACK_SMS_DOMESTIC_ENDPOINT": ("sms_domestic_endpoint", _endpoint),
    "FALLBACK_SNS_SENDER_ID": ("sns_sender_id", _sender_id),
    "FALLBACK_SNS_SMS_TYPE": ("sns_sms_type", _choice("Transactional", "Promotional")),
    # --- retention ---
    "FALLBACK_RETENTION_DAYS": ("retention_days", _float(0, 36500)),
    "FALLBACK_RETENTION_BATCH": ("retention_batch", _int(1, 100000)),
    # --- operator page sessions, /metrics access ---
    "FALLBACK_UI_SESSION_TTL_S": ("ui_session_ttl_s", _float(60, 30 * 86400)),
    "FALLBACK_PUBLIC_URL": ("public_url", _public_url),
    "FALLBACK_METRICS_REQUIRE_TOKEN": ("metrics_require_token", _bool),
    # --- outcome events (webhooks) ---
    "FALLBACK_WEBHOOK_RETRY_SCHEDULE": ("webhook_retry_schedule", _webhook_schedule),
    "FALLBACK_WEBHOOK_TIMEOUT_S": ("webhook_timeout_s", _float(0.1, 120)),
    "FALLBACK_WEBHOOK_DISABLE_AFTER_S": ("webhook_disable_after_s", _float(0, 365 * 86400)),
    "FALLBACK_WEBHOOK_CONCURRENCY": ("webhook_concurrency", _int(1, 1024)),
    # --- guards at the moment of fallback ---
    "FALLBACK_BUDGET_TZ": ("budget_tz", _zone),
    "FALLBACK_BUDGET_ACTION": ("budget_action", _choice("hold", "drop")),
    "FALLBACK_SMS_DENY_PREFIXES": ("sms_deny_prefixes", _prefixes),
    "FALLBACK_QUIET_HOURS": ("quiet_hours", _quiet_hours),
}


PREFIX = "FALLBACK_"


def check_known(environ: Mapping[str, str]) -> None:
    """Refuse a `FALLBACK_*` variable the daemon does not read: a typo would otherwise be silently ignored.

    Raises:
        errors.ConfigError: naming the first unknown variable (sorted) and the closest known name.
    """
    for var in sorted(v for v in environ if v.startswith(PREFIX) and v not in ENV):
        close = difflib.get_close_matches(var, [k for k in ENV if k.startswith(PREFIX)], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else " (see the README's configuration table)"
        raise errors.ConfigError(var, f"unknown setting{hint}")


def load(environ: Mapping[str, str], **overrides: object) -> Settings:
    """Build Settings from the environment; `overrides` (already typed) win over it.

    Raises:
        errors.ConfigError: naming the first variable whose value is invalid, or an unknown `FALLBACK_*` one.
    """
    check_known(environ)
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
    settings = Settings(**values)  # type: ignore[arg-type]
    check_tokens_distinct(settings)
    return settings


def check_tokens_distinct(settings: Settings) -> None:
    """The API, operator and read tokens must differ: a bearer token names exactly one role.

    Raises:
        errors.ConfigError: naming the later of two equal tokens.
    """
    seen: dict[str, str] = {}
    for var, token in (
        ("FALLBACK_API_TOKEN", settings.api_token),
        ("FALLBACK_OPERATOR_TOKEN", settings.operator_token),
        ("FALLBACK_READ_TOKEN", settings.read_token),
    ):
        if token and token.reveal() in seen:
            raise errors.ConfigError(var, f"must differ from {seen[token.reveal()]}")
        if token:
            seen[token.reveal()] = var
