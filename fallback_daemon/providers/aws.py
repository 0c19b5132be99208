"""AWS plumbing shared by the SQS and SNS adapters: opening aiobotocore clients and mapping botocore errors.

Credentials come from the standard AWS chain (environment, shared config/credentials files, container or
instance role); this module never reads or logs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore import exceptions as boto_errors

from fallback_daemon.core import errors

# Error codes that mean "refused for now, nothing happened": safe to retry with backoff.
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def is_transient(code: str, status: int) -> bool:
    """Throttling (any code containing "Throttl"), the named transient codes, 429 and 5xx."""
    return "throttl" in code.lower() or code in TRANSIENT_CODES or status in RETRYABLE_STATUS


def new_session() -> AioSession:
    """One aiobotocore session per daemon; its credential chain is the standard AWS one."""
    return get_session()


def client_config(*, connect_timeout_s: float, read_timeout_s: float, attempts: int, pool: int) -> AioConfig:
    """Explicit timeouts, botocore's standard retry mode with `attempts` tries in total, a bounded pool."""
    return AioConfig(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": attempts},
        max_pool_connections=pool,
    )


async def open_client(
    stack: contextlib.AsyncExitStack,
    session: AioSession,
    service: str,
    *,
    region: str,
    endpoint_url: str | None,
    config: AioConfig,
) -> Any:
    """Open one aiobotocore client on `stack` (closed with it).

    Raises:
        errors.ConfigError: no AWS region could be resolved (names FALLBACK_AWS_REGION).
    """
    try:
        return await stack.enter_async_context(
            session.create_client(
                service, region_name=region or None, endpoint_url=endpoint_url or None, config=config
            )
        )
    except boto_errors.NoRegionError as exc:
        problem = "no AWS region set (nor AWS_REGION / AWS_DEFAULT_REGION)"
        raise errors.ConfigError("FALLBACK_AWS_REGION", problem) from exc


def _client_error(exc: boto_errors.ClientError) -> errors.ProviderError:
    response: Mapping[str, Any] = exc.response
    error = response.get("Error") or {}
    code = str(error.get("Code") or "")
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    message = f"{code or f'HTTP {status}'}: {error.get('Message') or ''}"
    if is_transient(code, status):
        return errors.TransientError(message, code=code, status=status)
    return errors.PermanentError(message, code=code or f"HTTP{status}", status=status)


@contextlib.asynccontextmanager
async def map_errors(*, sent_is_ambiguous: bool) -> AsyncIterator[None]:
    """Translate botocore errors to the domain tree (`raise … from exc`).

    An answer from AWS → Transient (throttling, 5xx) or Permanent (anything else). Failing to connect →
    Transient. Losing the connection after the request went out → Ambiguous when `sent_is_ambiguous` (a
    non-idempotent send), else Transient (receive/delete: repeating them is harmless).
    """
    try:
        yield
    except boto_errors.ClientError as exc:
        raise _client_error(exc) from exc
    except boto_errors.ConnectionError as exc:  # EndpointConnectionError, ConnectTimeoutError, proxy, TLS
        raise errors.TransientError(f"connect failed: {type(exc).__name__}", code="ConnectError") from exc
    except boto_errors.HTTPClientError as exc:  # ReadTimeoutError, ConnectionClosedError, ...
        if sent_is_ambiguous:
            problem = f"no answer after sending: {type(exc).__name__}"
            raise errors.AmbiguousError(problem, code="Timeout") from exc
        raise errors.TransientError(f"no answer: {type(exc).__name__}", code="Timeout") from exc
    except boto_errors.ParamValidationError as exc:  # its text quotes parameter values (phone numbers)
        raise errors.PermanentError("parameters rejected by botocore", code="ParamValidation") from exc
    except (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError) as exc:
        raise errors.PermanentError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__) from exc
    except boto_errors.BotoCoreError as exc:  # e.g. credential refresh failures: nothing was sent
        raise errors.TransientError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__) from exc
