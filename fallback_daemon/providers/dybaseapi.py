"""Dybaseapi `QueryTokenForMnsQueue` (RPC, signature V1): temporary STS credentials for Alibaba-owned
Alicom MNS queues, and `TokenCredentials`, the `mns.CredentialSource` that keeps them fresh.

Tokens are refreshed before they expire (2 minutes early, or at 80 % of the lifetime for short-lived
tokens) and whenever MNS refuses them. Secrets stay inside `config.Secret` and are never logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import structlog
import yarl

from fallback_daemon import config, metrics
from fallback_daemon.core import errors, model
from fallback_daemon.providers import credentials as credentials_mod
from fallback_daemon.providers import mns, signing

log = structlog.get_logger("fallback_daemon.providers.dybaseapi")

ACTION = "QueryTokenForMnsQueue"
VERSION = "2017-05-25"  # China site; the international SMS demo uses 2018-05-01
ENDPOINT = "https://dybaseapi.aliyuncs.com"
BEIJING = dt.timezone(dt.timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
EARLY_S = 120.0  # refresh this long before expiry ...
EARLY_SHARE = 0.2  # ... or at 80 % of the lifetime when that comes first
MIN_REUSE_S = 1.0  # never ask for a new token more often than this (clock skew guard)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MnsToken:
    """A MessageTokenDTO: temporary credentials and their validity (aware UTC datetimes)."""

    credentials: mns.Credentials
    created: dt.datetime
    expires: dt.datetime


def parse_time(value: str) -> dt.datetime:
    """`yyyy-MM-dd HH:mm:ss` in Beijing time (UTC+8) -> aware UTC datetime. Raises ValueError."""
    return dt.datetime.strptime(value.strip(), TIME_FORMAT).replace(tzinfo=BEIJING).astimezone(dt.UTC)


def parse_token(payload: Mapping[str, Any]) -> MnsToken:
    """The MnsToken of a successful QueryTokenForMnsQueue answer.

    Raises:
        errors.TransientError: the answer lacks a field or has an unreadable time.
    """
    dto = payload.get("MessageTokenDTO")
    try:
        if not isinstance(dto, Mapping):
            raise ValueError("no MessageTokenDTO")
        fields = {k: dto.get(k) for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken", "ExpireTime")}
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            raise ValueError(f"MessageTokenDTO lacks {', '.join(missing)}")
        expires = parse_time(str(dto["ExpireTime"]))
        created_raw = dto.get("CreateTime")
        created = parse_time(str(created_raw)) if created_raw else expires - dt.timedelta(hours=1)
    except ValueError as exc:
        raise errors.TransientError(f"{ACTION}: unreadable answer: {exc}", code="MalformedResponse") from None
    creds = mns.Credentials(
        access_key_id=str(dto["AccessKeyId"]),
        access_key_secret=config.Secret(str(dto["AccessKeySecret"])),
        security_token=config.Secret(str(dto["SecurityToken"])),
    )
    return MnsToken(credentials=creds, created=created, expires=expires)


def refresh_delay(token: MnsToken, now: dt.datetime) -> float:
    """Seconds from `now` until the token should be replaced: 2 minutes before expiry, or at 80 % of its
    lifetime when that is earlier (short-lived tokens); at least MIN_REUSE_S."""
    lifetime = max(0.0, (token.expires - token.created).total_seconds())
    remaining = min(lifetime, (token.expires - now).total_seconds())
    return max(MIN_REUSE_S, remaining - min(EARLY_S, EARLY_SHARE * lifetime))


class DybaseapiClient:
    """Signed QueryTokenForMnsQueue calls (POST, form body, HMAC-SHA1 signature V1).

    Signs with `credentials` when given (STS ones add the `SecurityToken` parameter), else with the static
    `access_key_id` / `access_key_secret`.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        endpoint: str = ENDPOINT,
        version: str = VERSION,
        access_key_id: str = "",
        access_key_secret: config.Secret | None = None,
        credentials: credentials_mod.CredentialsProvider | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._session = session
        self._url = yarl.URL(endpoint).with_path("/")
        self._version = version
        self._credentials = credentials or credentials_mod.static(
            access_key_id, access_key_secret or config.Secret("")
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(5.0, timeout_s))

    def signed_params(
        self,
        *,
        message_type: str,
        queue_name: str,
        nonce: str,
        timestamp: dt.datetime,
        credentials: credentials_mod.Credentials | None = None,
    ) -> dict[str, str]:
        """Every parameter of one call, Signature included (exposed for tests; `credentials` default to
        the static pair the client was made with)."""
        creds = credentials
        if creds is None:
            if not isinstance(self._credentials, credentials_mod.StaticCredentials):
                raise TypeError("signed_params needs credentials when the client has a refreshing source")
            creds = self._credentials.credentials
        params = {
            "Format": "JSON",
            "Version": self._version,
            "AccessKeyId": creds.access_key_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": nonce,
            "Timestamp": timestamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Action": ACTION,
            "MessageType": message_type,
            "QueueName": queue_name,
        }
        if creds.security_token:
            params["SecurityToken"] = creds.security_token.reveal()
        secret = creds.access_key_secret.reveal()
        params["Signature"] = signing.rpc_v1_signature(secret=secret, method="POST", params=params)
        return params

    async def query_token(self, *, message_type: str, queue_name: str) -> MnsToken:
        """Ask for temporary credentials to `queue_name`.

        Raises:
            errors.TransientError: network, 5xx, throttling, or an unreadable answer.
            errors.PermanentError: the call was refused (bad AccessKey, signature, no permission, ...).
        """
        creds = await self._credentials.get()
        params = self.signed_params(
            message_type=message_type,
            queue_name=queue_name,
            nonce=uuid.uuid4().hex,
            timestamp=dt.datetime.now(dt.UTC),
            credentials=creds,
        )
        body = signing.canonical_query(params).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout
            ) as resp:
                status = resp.status
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = f"{ACTION} failed: {type(exc).__name__}: {exc}"
            raise errors.TransientError(text, code="NetworkError") from exc
        if not isinstance(payload, dict):
            raise errors.TransientError(f"{ACTION}: HTTP {status} without a JSON object", status=status)
        code = str(payload.get("Code") or "")
        if status == 200 and code == "OK":
            return parse_token(payload)
        message = f"{ACTION}: {code or status}: {payload.get('Message', '')}"
        if status >= 500 or status == 429 or code.startswith("Throttling") or code == "ServiceUnavailable":
            raise errors.TransientError(message, code=code, status=status)
        if code.startswith("InvalidSecurityToken") and creds.security_token:
            self._credentials.invalidate(creds)  # refused before acting: retry with fresh credentials
            raise errors.TransientError(message, code=code, status=status)
        raise errors.PermanentError(message, code=code or f"HTTP{status}", status=status)


def message_type_for(queue_name: str, kind: model.ReceiptKind) -> str:
    """`Alicom-Queue-<uid>-<MessageType>` names carry their MessageType; else ChatAppStatus / SmsReport."""
    if queue_name.startswith("Alicom-Queue-"):
        return queue_name.rsplit("-", 1)[-1]
    return "ChatAppStatus" if kind is model.ReceiptKind.CHATAPP else "SmsReport"


class TokenCredentials:
    """Alicom mode: one queue's temporary credentials, fetched lazily and shared by all its pollers."""

    temporary = True

    def __init__(
        self,
        client: DybaseapiClient,
        *,
        queue_name: str,
        message_type: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._queue = queue_name
        self._message_type = message_type
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: MnsToken | None = None
        self._refresh_at = 0.0
        self.fetched = 0  # tokens fetched so far (for tests and the bench)

    async def get(self) -> mns.Credentials:
        token = self._token
        if token is not None and self._clock() < self._refresh_at:
            return token.credentials
        async with self._lock:
            token = self._token
            if token is not None and self._clock() < self._refresh_at:
                return token.credentials
            return await self._fetch("initial" if token is None else "expiring", keep_on_error=token)

    async def refresh(self, stale: mns.Credentials) -> mns.Credentials:
        async with self._lock:
            if self._token is not None and self._token.credentials != stale:
                return self._token.credentials  # another poller refreshed meanwhile
            return await self._fetch("refused", keep_on_error=None)

    async def _fetch(self, reason: str, *, keep_on_error: MnsToken | None) -> mns.Credentials:
        try:
            token = await self._client.query_token(message_type=self._message_type, queue_name=self._queue)
        except errors.TransientError as exc:
            now = self._clock()
            remaining = keep_on_error.expires.timestamp() - now if keep_on_error else 0.0
            if keep_on_error is None or remaining <= 0:
                raise
            # The current token still works: keep it, and ask again in a little while.
            log.warning(
                "mns_token_refresh_failed", queue=self._queue, error=str(exc), remaining_s=round(remaining)
            )
            self._refresh_at = now + min(5.0, remaining / 2)
            return keep_on_error.credentials
        self._token = token
        self.fetched += 1
        now = self._clock()
        delay = refresh_delay(token, dt.datetime.fromtimestamp(now, dt.UTC))
        self._refresh_at = now + delay
        metrics.mns_token_refreshes.labels(self._queue, reason).inc()
        log.info(
            "mns_token_refreshed",
            queue=self._queue,
            reason=reason,
            expires=token.expires.isoformat(),
            refresh_in_s=round(delay, 1),
        )
        return token.credentials
