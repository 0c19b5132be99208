"""Request authentication as Alibaba's POP gateway does it, and the per-AccessKey QPS limiter.

Two signature styles reach the sandbox, and the official SDKs send both:

* ACS3-HMAC-SHA256 (`Authorization: ACS3-HMAC-SHA256 ...`): `Verifier` rebuilds the canonical request from
  what was received (method, raw path, decoded query, the headers named in SignedHeaders with their
  received values, x-acs-content-sha256);
* RPC signature V1 (`Signature`, `SignatureMethod=HMAC-SHA1`, ... as parameters, in the query string of a
  GET or in the query and form body of a POST): `RpcVerifier`.

Both use the sandbox's own `signatures` module, never the daemon's `providers/signing.py`, so a client and
the sandbox agree only if both follow Alibaba's algorithm. Both accept the static AccessKey and the STS
credentials the sandbox issued (sts.py): an STS AccessKeyId needs its security token
(`x-acs-security-token`, which must then be signed; `SecurityToken` in RPC) and is refused once expired.

Each verification reads the clock once: the date check and the nonce window use the same instant.
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

from fallback_daemon.sandbox import signatures
from fallback_daemon.sandbox import sts as sts_mod

# Headers a request must sign: without them a signed request could be replayed as another action or date.
REQUIRED_SIGNED = (
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
)
TOKEN_HEADER = "x-acs-security-token"  # noqa: S105 - a header name
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# The RPC V1 common parameters a signed call must carry (SecurityToken only with STS credentials).
RPC_SIGNED = (
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
)
RPC_COMMON = frozenset({*RPC_SIGNED, "Action", "Version", "Format", "SecurityToken", "SignatureType"})


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


class Nonces:
    """Signature nonces seen within the date window; each may be used once."""

    def __init__(self) -> None:
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    def seen(self, nonce: str, now: float) -> bool:
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        return nonce in self._seen

    def remember(self, nonce: str, until: float) -> None:
        self._seen[nonce] = until


class Keys:
    """The AccessKeys the sandbox knows: static pairs, and the STS credentials it issued."""

    def __init__(self, static: Mapping[str, str], sts: sts_mod.StsCredentials | None = None) -> None:
        self._static = dict(static)
        self._sts = sts

    def secret(self, access_key_id: str) -> tuple[str, sts_mod.StsCredential | None] | None:
        if access_key_id in self._static:
            return self._static[access_key_id], None
        cred = self._sts.lookup(access_key_id) if self._sts is not None else None
        return (cred.access_key_secret, cred) if cred is not None else None


def check_token(cred: sts_mod.StsCredential | None, token: str | None, now: float) -> Denial | None:
    """An STS key needs its own token and must not be expired; a static key takes no token."""
    if cred is None:
        if token:
            return Denial(
                status=400,
                code="InvalidSecurityToken.MismatchWithAccessKey",
                message="A security token was sent with a permanent AccessKey.",
            )
        return None
    if not token or not hmac.compare_digest(token.encode(), cred.security_token.encode()):
        return Denial(
            status=400,
            code="InvalidSecurityToken.MismatchWithAccessKey",
            message="The security token is missing or does not belong to this AccessKeyId.",
        )
    if now >= cred.expires_at:
        return Denial(
            status=400,
            code="InvalidSecurityToken.Expired",
            message="Specified SecurityToken is expired.",
        )
    return None


def _check_date(value: str, now: float, max_skew_s: int, fmt_name: str) -> Denial | None:
    try:
        stamp = dt.datetime.strptime(value, DATE_FORMAT).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return Denial(status=400, code="InvalidTimeStamp.Format")
    if abs(now - stamp) > max_skew_s:
        return Denial(
            status=400,
            code="InvalidTimeStamp.Expired",
            message=f"Specified time stamp or date value is expired. {fmt_name} {value} differs from "
            f"the server time by more than {max_skew_s} s.",
        )
    return None


class Verifier:
    """Checks ACS3 signatures, AccessKeys (static and STS), x-acs-date skew and nonce reuse."""

    def __init__(
        self,
        *,
        keys: Mapping[str, str],
        max_skew_s: int,
        now: Callable[[], float] = time.time,
        sts: sts_mod.StsCredentials | None = None,
    ) -> None:
        self._keys = Keys(keys, sts)
        self._max_skew_s = max_skew_s
        self._now = now
        self._nonces = Nonces()

    def verify(self, req: Received) -> str | Denial:
        """Return the caller's AccessKeyId, or the Denial Alibaba would answer."""
        parts = signatures.parse_acs3(req.headers.get("Authorization", ""))
        if parts is None:
            return Denial(
                status=400,
                code="IncompleteSignature",
                message="The request signature does not conform to Aliyun standards: "
                "missing or malformed ACS3-HMAC-SHA256 Authorization header.",
            )
        known = self._keys.secret(parts["Credential"])
        if known is None:
            return Denial(status=404, code="InvalidAccessKeyId.NotFound")
        secret, cred = known
        signed = [name.strip().lower() for name in parts["SignedHeaders"].split(";") if name.strip()]
        required = [*REQUIRED_SIGNED, *([TOKEN_HEADER] if TOKEN_HEADER in req.headers else [])]
        missing = [name for name in required if name not in signed or name not in req.headers]
        if missing:
            return Denial(
                status=400,
                code="IncompleteSignature",
                message=f"The request signature does not conform to Aliyun standards: "
                f"header(s) {', '.join(missing)} must be present and signed.",
            )
        now = self._now()  # the one clock read of this request
        denial = _check_date(req.headers["x-acs-date"], now, self._max_skew_s, "x-acs-date")
        if denial is not None:
            return denial
        nonce = req.headers["x-acs-signature-nonce"]
        if self._nonces.seen(nonce, now):
            return Denial(status=400, code="SignatureNonceUsed")
        denial = self._check_signature(req, signed, secret, parts["Signature"])
        if denial is None:
            denial = check_token(cred, req.headers.get(TOKEN_HEADER), now)
        if denial is not None:
            return denial
        self._nonces.remember(nonce, now + 2 * self._max_skew_s)
        return parts["Credential"]

    def _check_signature(self, req: Received, signed: list[str], secret: str, given: str) -> Denial | None:
        declared_hash = req.headers["x-acs-content-sha256"]
        actual_hash = hashlib.sha256(req.body).hexdigest()
        if declared_hash.lower() != actual_hash:
            return Denial(
                status=400,
                code="SignatureDoesNotMatch",
                message=f"Specified signature does not match our calculation: x-acs-content-sha256 "
                f"{declared_hash} is not the SHA-256 of the body ({actual_hash}).",
            )
        string_to_sign = signatures.acs3_string_to_sign(
            method=req.method,
            path=req.raw_path,
            params=req.query(),
            headers={name: req.headers.get(name, "") for name in signed},
            payload_hash=declared_hash,
        )
        expected = signatures.acs3_signature(secret, string_to_sign)
        if not hmac.compare_digest(expected, given.lower()):
            return Denial(
                status=400,
                code="SignatureDoesNotMatch",
                message=f"Specified signature does not match our calculation. "
                f"server string to sign is:{string_to_sign}",
            )
        return None


class RpcVerifier:
    """Checks RPC signature V1 calls: common parameters, AccessKey (static or STS), Timestamp, nonce."""

    def __init__(
        self,
        *,
        keys: Mapping[str, str],
        max_skew_s: int,
        now: Callable[[], float] = time.time,
        sts: sts_mod.StsCredentials | None = None,
    ) -> None:
        self._keys = Keys(keys, sts)
        self._max_skew_s = max_skew_s
        self._now = now
        self._nonces = Nonces()

    def verify(self, method: str, params: Mapping[str, str]) -> str | Denial:
        """Return the caller's AccessKeyId, or the Denial Alibaba would answer.

        Args:
            params: every parameter received (query string and form body), Signature included.
        """
        missing = [p for p in RPC_SIGNED if not params.get(p)]
        if missing:
            return Denial(
                status=400,
                code="IncompleteSignature",
                message=f"The request signature does not conform to Aliyun standards: "
                f"missing {', '.join(missing)}.",
            )
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            return Denial(
                status=400,
                code="IncompleteSignature",
                message="SignatureMethod must be HMAC-SHA1, version 1.0.",
            )
        known = self._keys.secret(params["AccessKeyId"])
        if known is None:
            return Denial(status=404, code="InvalidAccessKeyId.NotFound")
        secret, cred = known
        now = self._now()  # the one clock read of this request
        denial = _check_date(params["Timestamp"], now, self._max_skew_s, "Timestamp")
        if denial is not None:
            return denial
        if self._nonces.seen(params["SignatureNonce"], now):
            return Denial(status=400, code="SignatureNonceUsed")
        string_to_sign = signatures.rpc_string_to_sign(method, params)
        expected = signatures.rpc_signature(secret, string_to_sign)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            return Denial(
                status=400,
                code="SignatureDoesNotMatch",
                message=f"Specified signature does not match our calculation. "
                f"server string to sign is:{string_to_sign}",
            )
        denial = check_token(cred, params.get("SecurityToken"), now)
        if denial is not None:
            return denial
        self._nonces.remember(params["SignatureNonce"], now + 2 * self._max_skew_s)
        return params["AccessKeyId"]


class RateLimiter:
    """At most `qps` admitted calls per AccessKey in any sliding one-second window."""

    def __init__(self, *, qps: int, clock: Callable[[], float]) -> None:
        self._qps = qps
        self._clock = clock
        self._calls: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def admit(self, key: str, now: float | None = None) -> bool:
        """Admit one call at `now` (default: read the clock); pass `now` when the same instant is recorded
        elsewhere too, so both agree on which calls are inside the window."""
        now = self._clock() if now is None else now
        calls = self._calls[key]
        while calls and calls[0] <= now - 1.0:
            calls.popleft()
        if len(calls) >= self._qps:
            return False
        calls.append(now)
        return True
