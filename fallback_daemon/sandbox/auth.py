"""ACS3-HMAC-SHA256 verification as Alibaba's gateway does it, and the per-AccessKey QPS limiter.

Verification rebuilds the canonical request from what was received (method, raw path, decoded query, the
headers named in SignedHeaders with their received values, x-acs-content-sha256) with the project's own
`signing` module, so a client and the sandbox agree only if both follow Alibaba's algorithm.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from fallback_daemon.providers import signing

# Headers a request must sign: without them a signed request could be replayed as another action or date.
REQUIRED_SIGNED = (
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
)
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Denial:
    """Why a request was refused: HTTP status, POP error code, and an optional message."""

    status: int
    code: str
    message: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Received:
    """The parts of a received request that the signature covers."""

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]  # case-insensitive (aiohttp CIMultiDictProxy)
    body: bytes

    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.raw_query, keep_blank_values=True))


class Verifier:
    """Checks ACS3 signatures, AccessKeys, x-acs-date skew and nonce reuse."""

    def __init__(
        self, *, keys: Mapping[str, str], max_skew_s: int, now: Callable[[], float] = time.time
    ) -> None:
        self._keys = dict(keys)
        self._max_skew_s = max_skew_s
        self._now = now
        # nonce -> wall time after which its request's date is stale anyway, so it can be forgotten.
        self._nonces: collections.OrderedDict[str, float] = collections.OrderedDict()

    def verify(self, req: Received) -> str | Denial:
        """Return the caller's AccessKeyId, or the Denial Alibaba would answer."""
        parts = signing.parse_acs3_authorization(req.headers.get("Authorization", ""))
        if not parts:
            return Denial(
                status=400,
                code="IncompleteSignature",
                message="The request signature does not conform to Aliyun standards: "
                "missing or malformed ACS3-HMAC-SHA256 Authorization header.",
            )
        secret = self._keys.get(parts["Credential"])
        if secret is None:
            return Denial(status=404, code="InvalidAccessKeyId.NotFound")
        signed = [name.strip().lower() for name in parts["SignedHeaders"].split(";") if name.strip()]
        missing = [name for name in REQUIRED_SIGNED if name not in signed or name not in req.headers]
        if missing:
            return Denial(
                status=400,
                code="IncompleteSignature",
                message=f"The request signature does not conform to Aliyun standards: "
                f"header(s) {', '.join(missing)} must be present and signed.",
            )
        now = self._now()
        denial = self._check_date(req.headers["x-acs-date"], now)
        if denial is not None:
            return denial
        nonce = req.headers["x-acs-signature-nonce"]
        self._forget_stale_nonces(now)
        if nonce in self._nonces:
            return Denial(status=400, code="SignatureNonceUsed")
        denial = self._check_signature(req, signed, secret)
        if denial is not None:
            return denial
        self._nonces[nonce] = now + 2 * self._max_skew_s
        return parts["Credential"]

    def _check_date(self, value: str, now: float) -> Denial | None:
        try:
            stamp = dt.datetime.strptime(value, DATE_FORMAT).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            return Denial(status=400, code="InvalidTimeStamp.Format")
        if abs(now - stamp) > self._max_skew_s:
            return Denial(
                status=400,
                code="InvalidTimeStamp.Expired",
                message=f"Specified time stamp or date value is expired. x-acs-date {value} differs from "
                f"the server time by more than {self._max_skew_s} s.",
            )
        return None

    def _check_signature(self, req: Received, signed: list[str], secret: str) -> Denial | None:
        declared_hash = req.headers["x-acs-content-sha256"]
        actual_hash = hashlib.sha256(req.body).hexdigest()
        if declared_hash.lower() != actual_hash:
            return Denial(
                status=400,
                code="SignatureDoesNotMatch",
                message=f"Specified signature does not match our calculation: x-acs-content-sha256 "
                f"{declared_hash} is not the SHA-256 of the body ({actual_hash}).",
            )
        headers = {name: req.headers.get(name, "") for name in signed}
        string_to_sign, _ = signing.acs3_string_to_sign(
            method=req.method,
            path=req.raw_path,
            query=req.query(),
            headers=headers,
            payload_hash=declared_hash,
        )
        expected = signing.acs3_signature(secret, string_to_sign)
        given = signing.parse_acs3_authorization(req.headers["Authorization"])["Signature"]
        if not hmac.compare_digest(expected, given.lower()):
            return Denial(
                status=400,
                code="SignatureDoesNotMatch",
                message=f"Specified signature does not match our calculation. "
                f"server string to sign is:{string_to_sign}",
            )
        return None

    def _forget_stale_nonces(self, now: float) -> None:
        while self._nonces:
            nonce, until = next(iter(self._nonces.items()))
            if until > now:
                break
            del self._nonces[nonce]


class RateLimiter:
    """At most `qps` admitted calls per AccessKey in any sliding one-second window."""

    def __init__(self, *, qps: int, clock: Callable[[], float]) -> None:
        self._qps = qps
        self._clock = clock
        self._calls: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def admit(self, key: str) -> bool:
        now = self._clock()
        calls = self._calls[key]
        while calls and calls[0] <= now - 1.0:
            calls.popleft()
        if len(calls) >= self._qps:
            return False
        calls.append(now)
        return True
