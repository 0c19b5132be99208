"""A signed Alibaba Cloud RPC client (ACS3-HMAC-SHA256 over a form body) and its error mapping.

Each call signs with the credentials its `CredentialsProvider` gives now (providers/credentials.py); STS
credentials add the `x-acs-security-token` header, which is signed like every x-acs-* header.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import yarl

from fallback_daemon.core import errors
from fallback_daemon.providers import credentials as credentials_mod
from fallback_daemon.providers import signing

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Alibaba's OpenAPI runtimes (darabonba-openapi) read this header as a positive integer of milliseconds.
RETRY_AFTER_HEADER = "x-acs-retry-after"
TOKEN_HEADER = "x-acs-security-token"  # noqa: S105 - a header name
# A refused security token (expired, revoked): the gateway refused the call before acting on it, so it is
# safe to retry, with credentials fetched anew.
TOKEN_REFUSED_PREFIX = "InvalidSecurityToken"  # noqa: S105 - an error code


def is_throttling(code: str) -> bool:
    return code.startswith("Throttling") or code in {"ServiceUnavailable", "System.LimitControl"}


def retry_after_s(value: str | None) -> float | None:
    """`x-acs-retry-after` (milliseconds) in seconds; None when absent, not a number, or not positive."""
    try:
        ms = int((value or "").strip())
    except ValueError:
        return None
    return ms / 1000.0 if ms > 0 else None


@contextlib.asynccontextmanager
async def map_errors() -> AsyncIterator[None]:
    """Translate aiohttp errors: not sent → TransientError; maybe sent → AmbiguousError."""
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise errors.TransientError(f"connect failed: {type(exc).__name__}", code="ConnectError") from exc
    except (TimeoutError, aiohttp.ServerTimeoutError, aiohttp.ServerDisconnectedError) as exc:
        raise errors.AmbiguousError(f"no answer after sending: {type(exc).__name__}", code="Timeout") from exc
    except aiohttp.ClientError as exc:
        raise errors.AmbiguousError(
            f"request failed: {type(exc).__name__}: {exc}", code="ClientError"
        ) from exc


class AcsClient:
    """One upstream (endpoint + API version), one ClientSession, explicit timeouts.

    Signs with `credentials` when given, else with the static `access_key_id` / `access_key_secret`.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        endpoint: str,
        version: str,
        timeout_s: float,
        access_key_id: str = "",
        access_key_secret: str = "",
        credentials: credentials_mod.CredentialsProvider | None = None,
    ) -> None:
        self._session = session
        self._url = yarl.URL(endpoint).with_path("/")
        host = self._url.host or ""
        self._host = host if self._url.is_default_port() else f"{host}:{self._url.port}"
        self._version = version
        self._credentials = credentials or credentials_mod.static(access_key_id, access_key_secret)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(3.0, timeout_s))

    def signed_request(
        self,
        action: str,
        params: Mapping[str, str],
        *,
        credentials: credentials_mod.Credentials,
        query: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body for one call; `query` goes in the query string, signed too (exposed for tests)."""
        body = signing.canonical_query(params).encode()
        payload_hash = hashlib.sha256(body).hexdigest()
        headers = {
            "host": self._host,
            "x-acs-action": action,
            "x-acs-version": self._version,
            "x-acs-date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "x-acs-signature-nonce": uuid.uuid4().hex,
            "x-acs-content-sha256": payload_hash,
        }
        if credentials.security_token:
            headers[TOKEN_HEADER] = credentials.security_token.reveal()
        headers["Authorization"] = signing.acs3_authorization(
            access_key_id=credentials.access_key_id,
            secret=credentials.access_key_secret.reveal(),
            method="POST",
            path="/",
            query=query or {},
            headers=headers,
            payload_hash=payload_hash,
        )
        headers["content-type"] = "application/x-www-form-urlencoded"
        headers["accept"] = "application/json"
        return headers, body

    async def call(
        self,
        action: str,
        params: Mapping[str, str],
        *,
        ok_field: str = "Code",
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST one RPC call; return the JSON body when `ok_field` is "OK".

        `params` go in the form body; `query` (for actions whose SDK puts them there) in the query string.

        Raises:
            errors.Throttled: a throttling code or HTTP 429 (with `x-acs-retry-after` when sent).
            errors.TransientError: 5xx, connect failures, no credentials now, a refused security token.
            errors.PermanentError: any other error code.
            errors.AmbiguousError: the request went out but no answer came back.
        """
        creds = await self._credentials.get()
        headers, body = self.signed_request(action, params, credentials=creds, query=query)
        url = self._url
        if query:  # exactly the encoding that was signed
            url = yarl.URL(f"{self._url}?{signing.canonical_query(query)}", encoded=True)
        async with (
            map_errors(),
            self._session.post(url, data=body, headers=headers, timeout=self._timeout) as resp,
        ):
            status = resp.status
            wait_s = retry_after_s(resp.headers.get(RETRY_AFTER_HEADER))
            try:
                payload = await resp.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                payload = None
        if not isinstance(payload, dict):
            if status == 429:
                raise errors.Throttled("HTTP 429", status=status, code="HTTP429", retry_after_s=wait_s)
            if status in RETRYABLE_STATUS:
                raise errors.TransientError(f"HTTP {status}", status=status, code=f"HTTP{status}")
            raise errors.AmbiguousError(f"HTTP {status} with a body that is not JSON", status=status)
        code = str(payload.get(ok_field) or payload.get("Code") or "")
        if status == 200 and code == "OK":
            return payload
        message = str(payload.get("Message") or payload.get("ResponseDescription") or "")
        if is_throttling(code) or status == 429:
            raise errors.Throttled(
                f"{code}: {message}", code=code or f"HTTP{status}", status=status, retry_after_s=wait_s
            )
        if status in RETRYABLE_STATUS:
            raise errors.TransientError(f"{code}: {message}", code=code, status=status)
        if code.startswith(TOKEN_REFUSED_PREFIX) and creds.security_token:
            self._credentials.invalidate(creds)
            raise errors.TransientError(f"{code}: {message}", code=code, status=status)
        raise errors.PermanentError(f"{code}: {message}", code=code or f"HTTP{status}", status=status)


async def close_quietly(session: aiohttp.ClientSession) -> None:
    await session.close()
    await asyncio.sleep(0)  # let aiohttp's transports finish closing (documented graceful-close idiom)
