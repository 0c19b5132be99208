"""The one error tree of fallback_daemon; imports nothing from the package.

FallbackDaemonError
├── ConfigError                 bad or missing setting (start-up fails, names the variable)
├── ValidationError             bad input from a client or provider (4xx, names the field)
├── StoreError                  Postgres unavailable or failing
├── ProviderError               an upstream call failed
│   ├── TransientError          retry with backoff (throttling, 5xx, connect errors)
│   │   └── Throttled           the provider asked us to slow down (optionally: for how long)
│   ├── PermanentError          never retry (InvalidParameter.*, Authentication.*, template errors)
│   └── AmbiguousError          the request may have reached the provider: never resent silently
├── NotFound                    an id that does not exist
├── Conflict                    the object's state does not allow the request (409)
└── IdempotencyMismatch         an Idempotency-Key reused with a different request body (422)
"""

from __future__ import annotations


class FallbackDaemonError(Exception):
    """fallback-daemon failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(FallbackDaemonError):
    """A setting is missing or invalid."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}")


class ValidationError(FallbackDaemonError):
    """The input is invalid."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class StoreError(FallbackDaemonError):
    """The database is unavailable or failed."""


class NotFound(FallbackDaemonError):
    """No such object."""


class Conflict(FallbackDaemonError):
    """The object's current state does not allow this request."""


class IdempotencyMismatch(FallbackDaemonError):
    """This Idempotency-Key was first used with a different request body; the key cannot be reused for it."""


class ProviderError(FallbackDaemonError):
    """A provider call failed."""

    def __init__(self, message: str | None = None, *, code: str = "", status: int = 0) -> None:
        self.code = code
        self.status = status
        super().__init__(message)


class TransientError(ProviderError):
    """A provider call failed in a way that is safe to retry."""


class PermanentError(ProviderError):
    """A provider call was refused for good; retrying cannot help."""


class AmbiguousError(ProviderError):
    """The request may have reached the provider; its outcome is unknown."""


class Throttled(TransientError):
    """The provider throttled the call; retry later (after `retry_after_s` when the provider said)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str = "",
        status: int = 0,
        retry_after_s: float | None = None,
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, code=code, status=status)
