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
from typing import Any, TypeVar

import yarl

from fallback_daemon.core import errors

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


CORE, SMS, GUARDS, QUEUES = "core", "sms", "guards", "queues"  # the README's configuration tables, in order
SECTIONS = (CORE, SMS, GUARDS, QUEUES)


def setting(
    env: str,
    parse: Callable[[str], Any],
    *,
    default: Any = None,
    factory: Callable[[], Any] | None = None,
    section: str,
    shown: str,
    doc: str = "",
    row: str = "",
) -> Any:
    """Declare one setting: its environment variable, parser, default and README row, in one place.

    `shown` is the README's default column; `row` names the variable whose README row this one shares (the
    row then lists both, `A` / `B`); otherwise `doc` is the row's meaning. `ENV`, the unknown-variable check,
    `load` and the README tables (`readme_tables`, `python -m fallback_daemon.config --readme`) derive from
    these declarations.
    """
    meta = {"env": env, "parse": parse, "section": section, "shown": shown, "doc": doc, "row": row}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the daemon. Each is declared once,
    by `setting`: variable, parser, default and README row."""

    database_url: Secret | None = setting(
        "DATABASE_URL",
        _dsn,
        default=None,
        section=CORE,
        shown=(
            "— (required by `run` and `migrate`; `--embedded-db`, `--sandbox` and `demo` use "
            "the embedded Postgres under `FALLBACK_DATA_DIR/pg` without it)"
        ),
        doc="`postgresql://…` of the database to use",
    )
    db_connect_wait_s: float = setting(
        "FALLBACK_DB_CONNECT_WAIT_S",
        _float(0, 3600),
        default=30.0,
        section=CORE,
        shown="`30`",
        doc=(
            "how long start-up retries a database that refuses connections (down, starting, "
            "full) before it gives up"
        ),
    )
    data_dir: pathlib.Path = setting(
        "FALLBACK_DATA_DIR",
        pathlib.Path,
        default=pathlib.Path(".data"),
        section=CORE,
        shown="`.data`",
        doc="where the embedded Postgres keeps its files",
    )
    http_host: str = setting(
        "FALLBACK_HTTP_HOST",
        str,
        default="127.0.0.1",
        section=CORE,
        shown="`127.0.0.1`",
        doc="HTTP listen address (`0` = any free port)",
    )
    http_port: int = setting(
        "FALLBACK_HTTP_PORT",
        _int(0, 65535),
        default=8080,
        section=CORE,
        shown="`8080`",
        row="FALLBACK_HTTP_HOST",
    )
    access_key_id: str = setting(
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        str,
        default="",
        section=CORE,
        shown="—",
        doc=(
            "AccessKey for CAMS and SMS (required without `--sandbox`, unless an OIDC role or"
            " a credentials file gives the credentials: "
            "[docs/credentials.md](docs/credentials.md))"
        ),
    )
    access_key_secret: Secret = setting(
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        Secret,
        factory=lambda: Secret(""),
        section=CORE,
        shown="",
        row="ALIBABA_CLOUD_ACCESS_KEY_ID",
    )
    security_token: Secret = setting(
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        Secret,
        factory=lambda: Secret(""),
        section=CORE,
        shown="—",
        doc="STS security token that goes with a temporary AccessKey above",
    )
    role_arn: str = setting(
        "ALIBABA_CLOUD_ROLE_ARN",
        str,
        default="",
        section=CORE,
        shown="—",
        doc=(
            "OIDC role (ACK RRSA): all three set = credentials from STS `AssumeRoleWithOIDC`,"
            " refreshed before they expire"
        ),
    )
    oidc_provider_arn: str = setting(
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
        str,
        default="",
        section=CORE,
        shown="",
        row="ALIBABA_CLOUD_ROLE_ARN",
    )
    oidc_token_file: str = setting(
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE", str, default="", section=CORE, shown="", row="ALIBABA_CLOUD_ROLE_ARN"
    )
    role_session_name: str = setting(
        "ALIBABA_CLOUD_ROLE_SESSION_NAME",
        str,
        default="",
        section=CORE,
        shown="`fallback-daemon-<epoch>`",
        doc="RoleSessionName of the OIDC role session",
    )
    sts_endpoint: str = setting(
        "ALIBABA_CLOUD_STS_ENDPOINT",
        _endpoint,
        default="",
        section=CORE,
        shown="—",
        doc=(
            "STS endpoint for `AssumeRoleWithOIDC` (default from the region below, else `sts.aliyuncs.com`)"
        ),
    )
    sts_region: str = setting(
        "ALIBABA_CLOUD_STS_REGION",
        str,
        default="",
        section=CORE,
        shown="—",
        doc="STS endpoint `sts.<region>.aliyuncs.com` (`sts-vpc.` when enabled)",
    )
    sts_vpc_endpoint: bool = setting(
        "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED",
        _bool,
        default=False,
        section=CORE,
        shown="`false`",
        row="ALIBABA_CLOUD_STS_REGION",
    )
    credentials_file: str = setting(
        "ALIBABA_CLOUD_CREDENTIALS_FILE",
        str,
        default="",
        section=CORE,
        shown="`~/.alibabacloud/credentials.ini`",
        doc="credentials file and profile (types `access_key`, `sts`, `oidc_role_arn`)",
    )
    credentials_profile: str = setting(
        "ALIBABA_CLOUD_PROFILE",
        str,
        default="default",
        section=CORE,
        shown="`default`",
        row="ALIBABA_CLOUD_CREDENTIALS_FILE",
    )
    cams_endpoint: str = setting(
        "FALLBACK_CAMS_ENDPOINT",
        _endpoint,
        default="https://cams.ap-southeast-1.aliyuncs.com",
        section=CORE,
        shown="`https://cams.ap-southeast-1.aliyuncs.com`",
        doc="CAMS endpoint; `http://host:port` for any CAMS-compatible server",
    )
    sms_endpoint: str = setting(
        "FALLBACK_SMS_ENDPOINT",
        _endpoint,
        default="https://dysmsapi.ap-southeast-1.aliyuncs.com",
        section=CORE,
        shown="`https://dysmsapi.ap-southeast-1.aliyuncs.com`",
        doc="SMS (Dysmsapi) endpoint",
    )
    sms_from: str = setting(
        "FALLBACK_SMS_FROM",
        str,
        default="",
        section=CORE,
        shown="—",
        doc="SMS sender id for `SendMessageToGlobe` (required without `--sandbox`)",
    )
    sms_template: str | None = setting(
        "FALLBACK_SMS_TEMPLATE",
        str,
        default=None,
        section=CORE,
        shown="—",
        doc=(
            "fallback text when a message has no `FallBackContent`; `{name}` is filled from `TemplateParams`"
        ),
    )
    receipt_token: Secret = setting(
        "FALLBACK_RECEIPT_TOKEN",
        _token,
        factory=lambda: Secret(""),
        section=CORE,
        shown="—",
        doc=("secret path segment of the receipt URLs (≥ 16 chars; required without `--sandbox`)"),
    )
    api_token: Secret = setting(
        "FALLBACK_API_TOKEN",
        _token,
        factory=lambda: Secret(""),
        section=CORE,
        shown="—",
        doc=(
            "bearer token for `/v1` (≥ 16 chars; required without `--sandbox`): sends; also "
            "operator reads and actions while the two below are unset"
        ),
    )
    operator_token: Secret = setting(
        "FALLBACK_OPERATOR_TOKEN",
        _token,
        factory=lambda: Secret(""),
        section=CORE,
        shown="—",
        doc=(
            "optional: once set, operator actions (cancel, fire, re-drive, held, replay) need"
            " it instead of the API token; it also reads; a `/ui` session opened with it may "
            'act (docs/operations.md "Tokens")'
        ),
    )
    read_token: Secret = setting(
        "FALLBACK_READ_TOKEN",
        _token,
        factory=lambda: Secret(""),
        section=CORE,
        shown="—",
        doc=(
            "optional: once set, operator reads (search, stats, charts, latency, dead "
            "letters, a required `/metrics`) need it or the operator token instead of the API"
            " token; a `/ui` session opened with it only reads"
        ),
    )
    send_rate: float = setting(
        "FALLBACK_SEND_RATE",
        _float(0.1, 100000),
        default=250.0,
        section=CORE,
        shown="`250`",
        doc=(
            "global `SendChatappMessage` cap in calls/s across all replicas (no sliding "
            "second exceeds it), and the calls/s kept free below it for timing jitter: sends "
            "are paced at rate − burst on the database clock "
            "([docs/performance.md](docs/performance.md))"
        ),
    )
    send_burst: int = setting(
        "FALLBACK_SEND_BURST", _int(1, 1000), default=5, section=CORE, shown="`5`", row="FALLBACK_SEND_RATE"
    )
    send_concurrency: int = setting(
        "FALLBACK_SEND_CONCURRENCY",
        _int(1, 4096),
        default=64,
        section=CORE,
        shown="`64`",
        doc="in-flight provider calls per replica",
    )
    send_max_attempts: int = setting(
        "FALLBACK_SEND_MAX_ATTEMPTS",
        _int(1, 100),
        default=8,
        section=CORE,
        shown="`8`",
        doc="attempts on throttling/5xx/connect errors before `send_failed`",
    )
    send_timeout_s: float = setting(
        "FALLBACK_SEND_TIMEOUT_S",
        _float(0.1, 120),
        default=10.0,
        section=CORE,
        shown="`10`",
        doc="per-call timeout (a timeout after the request went out → `unknown`)",
    )
    sms_max_attempts: int = setting(
        "FALLBACK_SMS_MAX_ATTEMPTS",
        _int(1, 10000),
        default=60,
        section=CORE,
        shown="`60`",
        doc="cap on attempts for the fallback SMS on transient errors (besides the window)",
    )
    sms_retry_window_s: float = setting(
        "FALLBACK_SMS_RETRY_WINDOW_S",
        _float(0, 7 * 86400),
        default=1800.0,
        section=CORE,
        shown="`1800`",
        doc=(
            "how long the fallback SMS is retried through the database (refused connection, "
            "throttling, 5xx) from the moment it fired; then it is held as "
            "`sms_retries_exhausted` for an operator"
        ),
    )
    reconcile_delay_s: float = setting(
        "FALLBACK_RECONCILE_DELAY_S",
        _float(0, 86400),
        default=60.0,
        section=CORE,
        shown="`60`",
        doc=(
            "wait after an ambiguous send's request before asking the provider "
            "(`ListChatappMessage`, SMS query APIs) whether it arrived"
        ),
    )
    reconcile_max_attempts: int = setting(
        "FALLBACK_RECONCILE_MAX_ATTEMPTS",
        _int(0, 1000),
        default=6,
        section=CORE,
        shown="`6`",
        doc=(
            "lookups of an undecided `unknown` send (backing off from the delay, doubling, ≤ "
            "1 h) before it is left for an operator"
        ),
    )
    cams_cust_space_id: str = setting(
        "FALLBACK_CAMS_CUST_SPACE_ID",
        str,
        default="",
        section=CORE,
        shown="(empty)",
        doc=(
            "the CustSpaceId `ListChatappMessage` is asked with when a message's own params "
            "carry none; without either, an ambiguous chat send cannot be looked up and stays"
            " `unknown`"
        ),
    )
    fire_batch: int = setting(
        "FALLBACK_FIRE_BATCH",
        _int(1, 100000),
        default=500,
        section=CORE,
        shown="`500`",
        doc="due fallbacks claimed per round trip",
    )
    firing_lease_s: float = setting(
        "FALLBACK_FIRING_LEASE_S",
        _float(1, 86400),
        default=120.0,
        section=CORE,
        shown="`120`",
        doc="how long a `firing` row may wait for its SMS before recovery acts",
    )
    recovery_mode: str = setting(
        "FALLBACK_RECOVERY_MODE",
        _choice("park", "resend"),
        default="park",
        section=CORE,
        shown="`park`",
        doc="`park` (at-most-once: hold for an operator) or `resend` (at-least-once)",
    )
    timer_max_sleep_s: float = setting(
        "FALLBACK_TIMER_MAX_SLEEP_S",
        _float(0.01, 60),
        default=1.0,
        section=CORE,
        shown="`1.0`",
        doc="longest sleep of the timer loop between checks (NOTIFY wakes it earlier)",
    )
    max_body_bytes: int = setting(
        "FALLBACK_MAX_BODY_BYTES",
        _int(1024, 64 * 1024 * 1024),
        default=2 * 1024 * 1024,
        section=CORE,
        shown="`2097152`",
        doc="request body limit (413 above)",
    )
    shutdown_grace_s: float = setting(
        "FALLBACK_SHUTDOWN_GRACE_S",
        _float(0, 3600),
        default=10.0,
        section=CORE,
        shown="`10`",
        doc="on SIGTERM: stop claiming, finish in-flight calls within this time",
    )
    log_format: str = setting(
        "FALLBACK_LOG_FORMAT",
        _choice("auto", "json", "console"),
        default="auto",
        section=CORE,
        shown="`auto`",
        doc="`json`, `console` or `auto` (console on a TTY)",
    )
    log_level: str = setting(
        "FALLBACK_LOG_LEVEL",
        _choice("debug", "info", "warning", "error"),
        default="info",
        section=CORE,
        shown="`info`",
        row="FALLBACK_LOG_FORMAT",
    )
    event_loop: str = setting(
        "FALLBACK_EVENT_LOOP",
        _choice("uvloop", "asyncio"),
        default="uvloop",
        section=CORE,
        shown="`uvloop`",
        doc=(
            "the event loop every command runs on: `uvloop` (libuv; less CPU per message in the "
            "steady bench, [docs/performance.md](docs/performance.md)) or the standard library's `asyncio`"
        ),
    )
    sandbox_timer_scale: float = setting(
        "FALLBACK_SANDBOX_TIMER_SCALE",
        _float(0.001, 1.0),
        default=1.0,
        section=CORE,
        shown="`1.0`",
        doc=("**sandbox/demo only**: multiplies `FallBackDuration` (refused without `--sandbox`)"),
    )
    gate_window_s: float = setting(
        "FALLBACK_GATE_WINDOW_S",
        _float(0, 7 * 86400),
        default=600.0,
        section=CORE,
        shown="`600`",
        doc="receipt-feed health gate window (`0` disables)",
    )
    gate_channels: tuple[tuple[str, float], ...] = setting(
        "FALLBACK_GATE_CHANNELS",
        _channel_windows,
        default=(),
        section=CORE,
        shown="—",
        doc="per-channel windows, e.g. `whatsapp:300,viber:0`",
    )
    sqs_chatapp_queue_url: str = setting(
        "FALLBACK_SQS_CHATAPP_QUEUE_URL",
        _queue_url,
        default="",
        section=QUEUES,
        shown="—",
        doc="SQS queues carrying CAMS status reports / SMS reports (raw or base64 JSON)",
    )
    sqs_sms_queue_url: str = setting(
        "FALLBACK_SQS_SMS_QUEUE_URL",
        _queue_url,
        default="",
        section=QUEUES,
        shown="",
        row="FALLBACK_SQS_CHATAPP_QUEUE_URL",
    )
    sqs_pollers: int = setting(
        "FALLBACK_SQS_POLLERS",
        _int(1, 64),
        default=2,
        section=QUEUES,
        shown="`2`",
        doc="concurrent long polls per queue, long-poll seconds (≤ 20)",
    )
    # long poll; shutdown waits for a poll in progress, so stay below the grace
    sqs_wait_s: int = setting(
        "FALLBACK_SQS_WAIT_S",
        _int(1, 20),
        default=10,
        section=QUEUES,
        shown="`10`",
        row="FALLBACK_SQS_POLLERS",
    )
    aws_region: str = setting(
        "FALLBACK_AWS_REGION",
        str,
        default="",
        section=SMS,
        shown="AWS chain",
        doc=(
            "region and endpoint override (moto, localstack) for SNS and SQS; credentials "
            "come from the standard AWS chain"
        ),
    )
    # moto / localstack; used by the SQS and SNS clients
    aws_endpoint_url: str | None = setting(
        "FALLBACK_AWS_ENDPOINT_URL",
        _endpoint,
        default=None,
        section=SMS,
        shown="—",
        row="FALLBACK_AWS_REGION",
    )
    mns_mode: str = setting(
        "FALLBACK_MNS_MODE",
        _choice("alicom", "own"),
        default="alicom",
        section=QUEUES,
        shown="`alicom`",
        doc=(
            "`alicom` (Alibaba's queues, temporary credentials from `QueryTokenForMnsQueue`) "
            "or `own` (a queue of your account, static AccessKey)"
        ),
    )
    mns_endpoint: str = setting(
        "FALLBACK_MNS_ENDPOINT",
        _endpoint,
        default="",
        section=QUEUES,
        shown="—",
        doc=("MNS account endpoint, e.g. `https://1943695596114318.mns.cn-hangzhou.aliyuncs.com`"),
    )
    mns_chatapp_queue: str = setting(
        "FALLBACK_MNS_CHATAPP_QUEUE",
        _mns_queue_name,
        default="",
        section=QUEUES,
        shown="—",
        doc="e.g. `Alicom-Queue-<uid>-ChatAppStatus` / `Alicom-Queue-<uid>-SmsReport`",
    )
    mns_sms_queue: str = setting(
        "FALLBACK_MNS_SMS_QUEUE",
        _mns_queue_name,
        default="",
        section=QUEUES,
        shown="",
        row="FALLBACK_MNS_CHATAPP_QUEUE",
    )
    mns_access_key_id: str = setting(
        "FALLBACK_MNS_ACCESS_KEY_ID",
        str,
        default="",
        section=QUEUES,
        shown="the `ALIBABA_CLOUD_*` pair",
        doc="AccessKey for MNS (own mode) or for the token call (Alicom mode)",
    )
    mns_access_key_secret: Secret = setting(
        "FALLBACK_MNS_ACCESS_KEY_SECRET",
        Secret,
        factory=lambda: Secret(""),
        section=QUEUES,
        shown="",
        row="FALLBACK_MNS_ACCESS_KEY_ID",
    )
    dybaseapi_endpoint: str = setting(
        "FALLBACK_DYBASEAPI_ENDPOINT",
        _endpoint,
        default="https://dybaseapi.aliyuncs.com",
        section=QUEUES,
        shown="`https://dybaseapi.aliyuncs.com`",
        doc="where `QueryTokenForMnsQueue` is called",
    )
    dybaseapi_version: str = setting(
        "FALLBACK_DYBASEAPI_VERSION",
        _choice("2017-05-25", "2018-05-01"),
        default="2017-05-25",
        section=QUEUES,
        shown="`2017-05-25`",
        row="FALLBACK_DYBASEAPI_ENDPOINT",
    )
    mns_pollers: int = setting(
        "FALLBACK_MNS_POLLERS",
        _int(1, 64),
        default=2,
        section=QUEUES,
        shown="`2`",
        doc="concurrent long polls per queue, long-poll seconds, messages per receive (≤ 16)",
    )
    mns_wait_s: int = setting(
        "FALLBACK_MNS_WAIT_S",
        _int(0, 30),
        default=10,
        section=QUEUES,
        shown="`10`",
        row="FALLBACK_MNS_POLLERS",
    )
    mns_batch: int = setting(
        "FALLBACK_MNS_BATCH",
        _int(1, 16),
        default=16,
        section=QUEUES,
        shown="`16`",
        row="FALLBACK_MNS_POLLERS",
    )
    sms_provider: str = setting(
        "FALLBACK_SMS_PROVIDER",
        _choice(*SMS_PROVIDERS),
        default="globe",
        section=SMS,
        shown="`globe`",
        doc=(
            "default provider: `globe` (`SendMessageToGlobe`), `domestic` (`SendSms`) or "
            "`sns` (AWS SNS `Publish`)"
        ),
    )
    sms_routes: tuple[tuple[str, str], ...] = setting(
        "FALLBACK_SMS_ROUTES",
        _sms_routes,
        default=(),
        section=SMS,
        shown="—",
        doc=(
            "per `To` prefix or channel, e.g. `86=domestic,1=sns,channel:viber=globe` "
            "(longest prefix, then channel, then default)"
        ),
    )
    sms_sign_name: str = setting(
        "FALLBACK_SMS_SIGN_NAME",
        str,
        default="",
        section=SMS,
        shown="—",
        doc="`SendSms` `SignName` / `TemplateCode` (required when `domestic` is used)",
    )
    # SendSms TemplateCode
    sms_template_code: str = setting(
        "FALLBACK_SMS_TEMPLATE_CODE", str, default="", section=SMS, shown="", row="FALLBACK_SMS_SIGN_NAME"
    )
    sms_template_param: tuple[tuple[str, str], ...] | None = setting(
        "FALLBACK_SMS_TEMPLATE_PARAM",
        _template_param_map,
        default=None,
        section=SMS,
        shown="the message's `TemplateParams`",
        doc="JSON object mapping `SendSms` variables to `{name}` texts",
    )
    sms_domestic_endpoint: str = setting(
        "FALLBACK_SMS_DOMESTIC_ENDPOINT",
        _endpoint,
        default="https://dysmsapi.aliyuncs.com",
        section=SMS,
        shown="`https://dysmsapi.aliyuncs.com`",
        doc="`SendSms` endpoint",
    )
    sns_sender_id: str = setting(
        "FALLBACK_SNS_SENDER_ID",
        _sender_id,
        default="",
        section=SMS,
        shown="—",
        doc=(
            "SNS `AWS.SNS.SMS.SenderID` / `SMSType` (SNS has no per-message receipt: its leg "
            "ends at `sms_sent`)"
        ),
    )
    sns_sms_type: str = setting(
        "FALLBACK_SNS_SMS_TYPE",
        _choice("Transactional", "Promotional"),
        default="Transactional",
        section=SMS,
        shown="`Transactional`",
        row="FALLBACK_SNS_SENDER_ID",
    )
    retention_days: float = setting(
        "FALLBACK_RETENTION_DAYS",
        _float(0, 36500),
        default=30.0,
        section=SMS,
        shown="`30`",
        doc=(
            "finished messages (with their events and receipts), never-matched receipts and "
            "replayed dead letters older than this many days are purged, this many rows per "
            "statement; `0` days disables ([docs/scaling.md](docs/scaling.md))"
        ),
    )
    # rows per DELETE
    retention_batch: int = setting(
        "FALLBACK_RETENTION_BATCH",
        _int(1, 100000),
        default=1000,
        section=SMS,
        shown="`1000`",
        row="FALLBACK_RETENTION_DAYS",
    )
    ui_session_ttl_s: float = setting(
        "FALLBACK_UI_SESSION_TTL_S",
        _float(60, 30 * 86400),
        default=8 * 3600.0,
        section=CORE,
        shown="`28800` (8 h)",
        doc=(
            'a `/ui` sign-in lasts this long (60 s – 30 days), or until "Sign out" revokes it'
            " ([docs/security.md](docs/security.md#operator-page-sessions))"
        ),
    )
    public_url: str = setting(
        "FALLBACK_PUBLIC_URL",
        _public_url,
        default="",
        section=CORE,
        shown="—",
        doc=(
            "the daemon's external URL; when it is `https://…` (a TLS proxy in front) the "
            "`/ui` cookie is `Secure`"
        ),
    )
    metrics_require_token: bool = setting(
        "FALLBACK_METRICS_REQUIRE_TOKEN",
        _bool,
        default=False,
        section=CORE,
        shown="`false`",
        doc=(
            "`true`: `GET /metrics` needs a bearer token that may read "
            "(`FALLBACK_READ_TOKEN`, the operator token, or the API token while no read token"
            " is set; open by default for Prometheus scrapers on a private network)"
        ),
    )
    webhook_retry_schedule: tuple[float, ...] = setting(
        "FALLBACK_WEBHOOK_RETRY_SCHEDULE",
        _webhook_schedule,
        default=(0, 5, 300, 1800, 7200, 18000, 36000, 36000),
        section=CORE,
        shown="`0,5,300,1800,7200,18000,36000,36000`",
        doc=(
            "seconds before each webhook attempt (the first included); after the last, a "
            "delivery is `failed` until replayed ([docs/webhooks.md](docs/webhooks.md))"
        ),
    )
    webhook_timeout_s: float = setting(
        "FALLBACK_WEBHOOK_TIMEOUT_S",
        _float(0.1, 120),
        default=15.0,
        section=CORE,
        shown="`15`",
        doc="a webhook attempt succeeds on a 2xx within this time",
    )
    webhook_disable_after_s: float = setting(
        "FALLBACK_WEBHOOK_DISABLE_AFTER_S",
        _float(0, 365 * 86400),
        default=5 * 86400.0,
        section=CORE,
        shown="`432000` (5 days)",
        doc=(
            "an endpoint failing without a single success for this long is disabled (`0`: "
            "never); `webhooks enable` resumes it"
        ),
    )
    webhook_concurrency: int = setting(
        "FALLBACK_WEBHOOK_CONCURRENCY",
        _int(1, 1024),
        default=32,
        section=CORE,
        shown="`32`",
        doc="webhook attempts in flight per replica",
    )
    budget_tz: str = setting(
        "FALLBACK_BUDGET_TZ",
        _zone,
        default="UTC",
        section=GUARDS,
        shown="`UTC`",
        doc="the IANA zone whose calendar day the daily SMS budgets count",
    )
    budget_action: str = setting(
        "FALLBACK_BUDGET_ACTION",
        _choice("hold", "drop"),
        default="hold",
        section=GUARDS,
        shown="`hold`",
        doc=(
            "over budget: `hold` (held, `hold_reason budget`; a release checks the budget "
            "again) or `drop` (suppressed)"
        ),
    )
    sms_deny_prefixes: tuple[str, ...] = setting(
        "FALLBACK_SMS_DENY_PREFIXES",
        _prefixes,
        default=(),
        section=GUARDS,
        shown="—",
        doc="number prefixes that never get a fallback SMS (toll fraud), e.g. `881,882,883`",
    )
    quiet_hours: tuple[tuple[str, int, int, str], ...] = setting(
        "FALLBACK_QUIET_HOURS",
        _quiet_hours,
        default=(),
        section=GUARDS,
        shown="—",
        doc=(
            "per prefix, e.g. `86=22:00-08:00@Asia/Shanghai,44=21:00-08:00@Europe/London`: a "
            "fallback due inside waits until the window ends (`FallBackUrgent: true` goes "
            "through)"
        ),
    )

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


# environment variable -> (Settings field, parser), derived from the declarations
ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    f.metadata["env"]: (f.name, f.metadata["parse"]) for f in dataclasses.fields(Settings)
}


def readme_tables() -> dict[str, str]:
    """The README's configuration tables (section -> markdown rows), generated from the declarations."""
    members: dict[str, list[dataclasses.Field[Any]]] = {}
    for f in dataclasses.fields(Settings):
        members.setdefault(f.metadata["row"] or f.metadata["env"], []).append(f)
    tables: dict[str, list[str]] = {
        s: ["| variable | default | meaning |", "|---|---|---|"] for s in SECTIONS
    }
    for group in members.values():
        lead = group[0].metadata
        names = " / ".join(f"`{f.metadata['env']}`" for f in group)
        shown = [f.metadata["shown"] for f in group]
        default = " / ".join(shown) if all(shown) else lead["shown"] or "—"
        tables[lead["section"]].append(f"| {names} | {default} | {lead['doc']} |")
    return {s: "\n".join(rows) for s, rows in tables.items()}


def readme_with_tables(text: str) -> str:
    """The README `text` with each `<!-- settings:NAME -->` … `<!-- /settings:NAME -->` block regenerated."""
    for section, table in readme_tables().items():
        start, end = f"<!-- settings:{section} -->", f"<!-- /settings:{section} -->"
        head, sep, rest = text.partition(start)
        _, sep2, after = rest.partition(end)
        if not (sep and sep2):
            raise ValueError(f"README has no {start} … {end} block")
        text = f"{head}{start}\n{table}\n{end}{after}"
    return text


def _main(argv: list[str]) -> int:
    """`python -m fallback_daemon.config --write-readme [README.md]`: regenerate the README's tables."""
    if argv[:1] != ["--write-readme"]:
        print("usage: python -m fallback_daemon.config --write-readme [README.md]")
        return 2
    path = pathlib.Path(argv[1] if len(argv) > 1 else "README.md")
    path.write_text(readme_with_tables(path.read_text()))
    return 0


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


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
