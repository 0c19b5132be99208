"""Alibaba Cloud credentials for the daemon's signed calls (CAMS, Dysmsapi, Dybaseapi).

`from_settings` picks the source the way Alibaba's default credential provider chain does
(aliyun/credentials-python `DefaultCredentialsProvider`), from the same `ALIBABA_CLOUD_*` variables (read
into `config.Settings`; no module but config reads the environment):

1. environment: `ALIBABA_CLOUD_ACCESS_KEY_ID` + `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, with
   `ALIBABA_CLOUD_SECURITY_TOKEN` when the pair is an STS one;
2. OIDC role (ACK RRSA): `ALIBABA_CLOUD_ROLE_ARN` + `ALIBABA_CLOUD_OIDC_PROVIDER_ARN` +
   `ALIBABA_CLOUD_OIDC_TOKEN_FILE` -> STS `AssumeRoleWithOIDC`, cached and refreshed before Expiration;
3. credentials file: `ALIBABA_CLOUD_CREDENTIALS_FILE` or `~/.alibabacloud/credentials.ini`, section
   `ALIBABA_CLOUD_PROFILE` (default `default`), of type `access_key`, `sts` or `oidc_role_arn`.

Unlike the SDK, the source is chosen once at start-up (a half-configured source is a ConfigError naming
the variable, not silently skipped), and the SDK's CLI-profile, ECS-metadata and credentials-URI sources
are not implemented. docs/credentials.md has the why.

Refreshing sources go through `Refreshing`: one refresh in flight at a time (concurrent callers share
it), started ahead of expiry (15 minutes early, or after three quarters of a short lifetime); while the
current credentials are still valid a failed refresh keeps them and retries shortly. Secrets live in
`config.Secret` and are never logged.
"""

from __future__ import annotations

import asyncio
import configparser
import dataclasses
import datetime as dt
import math
import pathlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import structlog
import yarl

from fallback_daemon import config
from fallback_daemon.core import errors

log = structlog.get_logger("fallback_daemon.providers.credentials")

STS_VERSION = "2015-04-01"
STS_ACTION = "AssumeRoleWithOIDC"
DEFAULT_STS_HOST = "sts.aliyuncs.com"
DEFAULT_DURATION_S = 3600
EARLY_S = 15 * 60.0  # refresh this long before Expiration (the SDK's stale time) ...
EARLY_SHARE = 0.25  # ... or with a quarter of the lifetime left, when that comes first (short sessions)
RETRY_S = 10.0  # after a failed refresh while the current credentials are still valid
USABLE_MARGIN_S = 10.0  # credentials this close to Expiration are not handed out for a new call
EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DEFAULT_FILE = "~/.alibabacloud/credentials.ini"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Credentials:
    """One set of credentials; `security_token` for STS ones, `expiration` in epoch seconds (None: never)."""

    access_key_id: str
    access_key_secret: config.Secret
    security_token: config.Secret | None = None
    expiration: float | None = None
    provider: str = ""


class CredentialsProvider(Protocol):
    """Gives the credentials to sign the next call with."""

    @property
    def name(self) -> str: ...

    async def get(self) -> Credentials: ...

    def invalidate(self, stale: Credentials) -> None:
        """The provider refused `stale` (expired or revoked token): fetch new ones on the next `get`."""


class StaticCredentials:
    """A fixed AccessKey pair, with its security token when it is an STS pair."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    @property
    def name(self) -> str:
        return self.credentials.provider or "static"

    async def get(self) -> Credentials:
        return self.credentials

    def invalidate(self, stale: Credentials) -> None:
        del stale  # nothing to refresh: a static token that expired needs a new deployment


def static(
    access_key_id: str,
    access_key_secret: str | config.Secret,
    security_token: str = "",
    provider: str = "static",
) -> StaticCredentials:
    """A StaticCredentials from plain values (tests, the sandbox)."""
    secret = (
        access_key_secret
        if isinstance(access_key_secret, config.Secret)
        else config.Secret(access_key_secret)
    )
    token = config.Secret(security_token) if security_token else None
    return StaticCredentials(
        Credentials(
            access_key_id=access_key_id, access_key_secret=secret, security_token=token, provider=provider
        )
    )


def refresh_at(credentials: Credentials, fetched_at: float) -> float:
    """When to replace credentials fetched at `fetched_at`: EARLY_S before Expiration, or with EARLY_SHARE of
    the lifetime left when that is earlier; never (inf) for credentials that do not expire."""
    if credentials.expiration is None:
        return math.inf
    lifetime = max(0.0, credentials.expiration - fetched_at)
    return credentials.expiration - min(EARLY_S, EARLY_SHARE * lifetime)


class Refreshing:
    """Caches what `fetch` returns and replaces it ahead of its expiry, one refresh at a time.

    :param fetch: gets fresh credentials (raises errors.ProviderError or OSError when it cannot).
    :param name: the source, for logs and errors (never a secret).
    :param clock: epoch seconds (tests pass a fake one).
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Credentials]],
        *,
        name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._name = name
        self._clock = clock
        self._current: Credentials | None = None
        self._refresh_at = 0.0
        self._inflight: asyncio.Future[Credentials] | None = None
        self.refreshes = 0  # successful fetches so far
        self.failures = 0  # failed fetches so far

    @property
    def name(self) -> str:
        return self._name

    @property
    def next_refresh_at(self) -> float:
        return self._refresh_at

    async def get(self) -> Credentials:
        current = self._current
        if current is not None and self._clock() < self._refresh_at:
            return current
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._refresh())
            # Retrieved here too, so a refresh whose callers were all cancelled does not warn at exit.
            self._inflight.add_done_callback(lambda f: f.cancelled() or f.exception())
        # shield: a caller that is cancelled (its send timed out) must not cancel the refresh others await.
        return await asyncio.shield(self._inflight)

    def invalidate(self, stale: Credentials) -> None:
        if self._current is not None and self._current == stale:
            self._refresh_at = 0.0

    def _usable(self, credentials: Credentials | None, now: float) -> bool:
        if credentials is None:
            return False
        return credentials.expiration is None or now < credentials.expiration - USABLE_MARGIN_S

    async def _refresh(self) -> Credentials:
        try:
            fresh = await self._fetch()
        except (errors.ProviderError, OSError, ValueError) as exc:
            self.failures += 1
            now = self._clock()
            current = self._current
            if current is not None and current.expiration is not None and self._usable(current, now):
                remaining = current.expiration - now
                self._refresh_at = now + min(RETRY_S, remaining / 2)
                log.warning(
                    "credentials_refresh_failed",
                    provider=self._name,
                    error=str(exc),
                    remaining_s=round(remaining),
                )
                return current
            raise errors.TransientError(
                f"credentials from {self._name} unavailable: {exc}", code="CredentialsUnavailable"
            ) from exc
        finally:
            self._inflight = None
        now = self._clock()
        self._current = fresh
        self._refresh_at = refresh_at(fresh, now)
        self.refreshes += 1
        expires = (
            dt.datetime.fromtimestamp(fresh.expiration, dt.UTC).isoformat() if fresh.expiration else None
        )
        log.info(
            "credentials_refreshed",
            provider=self._name,
            expires=expires,
            refresh_in_s=None if math.isinf(self._refresh_at) else round(self._refresh_at - now, 1),
        )
        return fresh


def sts_endpoint_for(*, endpoint: str = "", region: str = "", vpc: bool = False) -> str:
    """The STS URL: the endpoint given, else sts[-vpc].<region>.aliyuncs.com, else sts.aliyuncs.com."""
    if endpoint:
        return endpoint if "://" in endpoint else f"https://{endpoint}"
    if region:
        return f"https://{'sts-vpc' if vpc else 'sts'}.{region}.aliyuncs.com"
    return f"https://{DEFAULT_STS_HOST}"


def parse_expiration(value: str) -> float:
    """STS `Expiration` (UTC `yyyy-MM-ddTHH:mm:ssZ`) in epoch seconds. Raises ValueError."""
    return dt.datetime.strptime(value.strip(), EXPIRATION_FORMAT).replace(tzinfo=dt.UTC).timestamp()


class OidcRoleArn:
    """STS AssumeRoleWithOIDC with the token file's current content (kubelet rotates the file).

    The call is anonymous (no AccessKey, no signature: the OIDC token is the proof), RPC style, every
    parameter in the query string, as credentials-python sends it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        role_arn: str,
        oidc_provider_arn: str,
        oidc_token_file: str,
        role_session_name: str = "",
        duration_s: int = DEFAULT_DURATION_S,
        policy: str = "",
        sts_endpoint: str = f"https://{DEFAULT_STS_HOST}",
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if duration_s < 900:
            raise ValueError("duration_s must be at least 900 (STS minimum)")
        self._session = session
        self._role_arn = role_arn
        self._provider_arn = oidc_provider_arn
        self._token_file = pathlib.Path(oidc_token_file)
        self._session_name = role_session_name or f"fallback-daemon-{int(clock())}"
        self._duration_s = duration_s
        self._policy = policy
        self._url = yarl.URL(sts_endpoint).with_path("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(5.0, timeout_s))
        self._clock = clock
        self.calls = 0

    def query(self, token: str) -> dict[str, str]:
        """The AssumeRoleWithOIDC parameters (exposed for tests)."""
        params = {
            "Action": STS_ACTION,
            "Format": "JSON",
            "Version": STS_VERSION,
            "DurationSeconds": str(self._duration_s),
            "RoleArn": self._role_arn,
            "OIDCProviderArn": self._provider_arn,
            "OIDCToken": token,
            "RoleSessionName": self._session_name,
            "Timestamp": dt.datetime.fromtimestamp(self._clock(), dt.UTC).strftime(EXPIRATION_FORMAT),
        }
        if self._policy:
            params["Policy"] = self._policy
        return params

    async def fetch(self) -> Credentials:
        """New credentials from STS.

        Raises:
            OSError: the token file cannot be read.
            errors.TransientError: network, 5xx, throttling or an unreadable answer.
            errors.PermanentError: STS refused the exchange (bad token, role, provider, ...).
        """
        token = (await asyncio.to_thread(self._token_file.read_text, encoding="utf-8")).strip()
        if not token:
            raise errors.PermanentError(
                f"{self._token_file}: the OIDC token file is empty", code="NoOIDCToken"
            )
        self.calls += 1
        try:
            async with self._session.get(
                self._url,
                params=self.query(token),
                headers={"Accept": "application/json"},
                timeout=self._timeout,
            ) as resp:
                status = resp.status
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.TransientError(
                f"{STS_ACTION}: {type(exc).__name__}: {exc}", code="NetworkError"
            ) from exc
        if not isinstance(payload, dict):
            raise errors.TransientError(f"{STS_ACTION}: HTTP {status} without a JSON object", status=status)
        if status == 200 and isinstance(payload.get("Credentials"), Mapping):
            return _parse_sts(payload["Credentials"], provider="oidc_role_arn")
        code = str(payload.get("Code") or f"HTTP{status}")
        message = f"{STS_ACTION}: {code}: {payload.get('Message', '')}"
        if status >= 500 or status == 429 or code.startswith("Throttling"):
            raise errors.TransientError(message, code=code, status=status)
        raise errors.PermanentError(message, code=code, status=status)


def _parse_sts(cred: Mapping[str, Any], *, provider: str) -> Credentials:
    try:
        fields = {k: cred.get(k) for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration")}
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            raise ValueError(f"Credentials lack {', '.join(missing)}")
        expiration = parse_expiration(str(fields["Expiration"]))
    except ValueError as exc:
        raise errors.TransientError(
            f"{STS_ACTION}: unreadable answer: {exc}", code="MalformedResponse"
        ) from None
    return Credentials(
        access_key_id=str(fields["AccessKeyId"]),
        access_key_secret=config.Secret(str(fields["AccessKeySecret"])),
        security_token=config.Secret(str(fields["SecurityToken"])),
        expiration=expiration,
        provider=provider,
    )


def oidc_provider(
    session: aiohttp.ClientSession,
    *,
    role_arn: str,
    oidc_provider_arn: str,
    oidc_token_file: str,
    role_session_name: str = "",
    sts_endpoint: str = f"https://{DEFAULT_STS_HOST}",
    duration_s: int = DEFAULT_DURATION_S,
    timeout_s: float = 10.0,
    clock: Callable[[], float] = time.time,
) -> Refreshing:
    """An OIDC role source: AssumeRoleWithOIDC behind a Refreshing cache."""
    exchange = OidcRoleArn(
        session,
        role_arn=role_arn,
        oidc_provider_arn=oidc_provider_arn,
        oidc_token_file=oidc_token_file,
        role_session_name=role_session_name,
        duration_s=duration_s,
        sts_endpoint=sts_endpoint,
        timeout_s=timeout_s,
        clock=clock,
    )
    return Refreshing(exchange.fetch, name="oidc_role_arn", clock=clock)


OIDC_VARS = ("ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "ALIBABA_CLOUD_OIDC_TOKEN_FILE")


def _oidc_values(settings: config.Settings) -> tuple[str, str, str]:
    return settings.role_arn, settings.oidc_provider_arn, settings.oidc_token_file


def credentials_file(settings: config.Settings) -> pathlib.Path:
    return pathlib.Path(settings.credentials_file or DEFAULT_FILE).expanduser()


def source(settings: config.Settings) -> str | None:
    """Which source `from_settings` would use: "env", "oidc_role_arn", "profile", or None (none set up).

    Raises:
        errors.ConfigError: a source is half set up (names the missing variable).
    """
    if settings.access_key_id or settings.access_key_secret:
        if not settings.access_key_id:
            raise errors.ConfigError(
                "ALIBABA_CLOUD_ACCESS_KEY_ID", "required with ALIBABA_CLOUD_ACCESS_KEY_SECRET"
            )
        if not settings.access_key_secret:
            raise errors.ConfigError(
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "required with ALIBABA_CLOUD_ACCESS_KEY_ID"
            )
        return "env"
    oidc = _oidc_values(settings)
    if any(oidc):
        for var, value in zip(OIDC_VARS, oidc, strict=True):
            if not value:
                others = ", ".join(v for v in OIDC_VARS if v != var)
                raise errors.ConfigError(var, f"required with {others} (OIDC role credentials)")
        return "oidc_role_arn"
    path = credentials_file(settings)
    if settings.credentials_file and not path.is_file():
        raise errors.ConfigError("ALIBABA_CLOUD_CREDENTIALS_FILE", f"{path}: no such file")
    return "profile" if path.is_file() else None


def _profile(settings: config.Settings) -> Mapping[str, str]:
    path = credentials_file(settings)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, configparser.Error) as exc:
        raise errors.ConfigError("ALIBABA_CLOUD_CREDENTIALS_FILE", f"{path}: {exc}") from None
    name = settings.credentials_profile
    if not parser.has_section(name):
        raise errors.ConfigError("ALIBABA_CLOUD_PROFILE", f"{path} has no [{name}] section")
    # The SDK drops a trailing `# comment` from values.
    return {k: v.split("#", 1)[0].strip() for k, v in parser.items(name)}


def from_settings(
    settings: config.Settings,
    *,
    session: aiohttp.ClientSession,
    sts_endpoint: str | None = None,
    clock: Callable[[], float] = time.time,
) -> CredentialsProvider | None:
    """The credentials source the settings describe (module docstring), or None when none is set up.

    Args:
        sts_endpoint: overrides the STS endpoint of the settings (the in-process sandbox).

    Raises:
        errors.ConfigError: a half-configured source, an unreadable credentials file or profile.
    """
    kind = source(settings)
    endpoint = sts_endpoint or sts_endpoint_for(
        endpoint=settings.sts_endpoint, region=settings.sts_region, vpc=settings.sts_vpc_endpoint
    )
    timeout_s = settings.send_timeout_s
    if kind == "env":
        return static(
            settings.access_key_id,
            settings.access_key_secret,
            settings.security_token.reveal(),
            provider="env",
        )
    if kind == "oidc_role_arn":
        return oidc_provider(
            session,
            role_arn=settings.role_arn,
            oidc_provider_arn=settings.oidc_provider_arn,
            oidc_token_file=settings.oidc_token_file,
            role_session_name=settings.role_session_name,
            sts_endpoint=endpoint,
            timeout_s=timeout_s,
            clock=clock,
        )
    if kind is None:
        return None
    return _from_profile(_profile(settings), settings, session=session, endpoint=endpoint, clock=clock)


def _from_profile(
    section: Mapping[str, str],
    settings: config.Settings,
    *,
    session: aiohttp.ClientSession,
    endpoint: str,
    clock: Callable[[], float],
) -> CredentialsProvider:
    where = f"{credentials_file(settings)} [{settings.credentials_profile}]"
    kind = section.get("type", "")

    def need(*keys: str) -> list[str]:
        missing = [k for k in keys if not section.get(k)]
        if missing:
            raise errors.ConfigError(
                "ALIBABA_CLOUD_PROFILE", f"{where}: type {kind} needs {', '.join(missing)}"
            )
        return [section[k] for k in keys]

    if kind == "access_key":
        ak, sk = need("access_key_id", "access_key_secret")
        return static(ak, sk, provider="profile/access_key")
    if kind == "sts":
        ak, sk, token = need("access_key_id", "access_key_secret", "security_token")
        return static(ak, sk, token, provider="profile/sts")
    if kind == "oidc_role_arn":
        role, provider_arn, token_file = need("role_arn", "oidc_provider_arn", "oidc_token_file_path")
        return oidc_provider(
            session,
            role_arn=role,
            oidc_provider_arn=provider_arn,
            oidc_token_file=token_file,
            role_session_name=section.get("role_session_name", ""),
            sts_endpoint=endpoint,
            timeout_s=settings.send_timeout_s,
            clock=clock,
        )
    raise errors.ConfigError(
        "ALIBABA_CLOUD_PROFILE",
        f"{where}: type {kind or '(none)'} is not supported (access_key, sts, oidc_role_arn)",
    )
