"""MNS request authentication as the sandbox enforces it: the `MNS ak:signature` HMAC-SHA1 scheme, Date
skew, Content-MD5, and the temporary credentials (`security-token`) QueryTokenForMnsQueue issues.

Alicom queues (`Alicom-Queue-*`) accept only a live token issued for that queue; any other queue is an
"own" queue that the static AccessKey may use. Verification rebuilds the string to sign from what was
received, with the sandbox's own implementation of the documented scheme (`string_to_sign`, `signature`,
`content_md5` below), never the daemon's `providers/signing.py`: a signing bug there must fail against the
sandbox instead of being mirrored by it.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import email.utils
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping

ALICOM_PREFIX = "Alicom-Queue-"
BEIJING = dt.timezone(dt.timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def beijing(epoch_s: int) -> str:
    """`yyyy-MM-dd HH:mm:ss` in Beijing time, as MessageTokenDTO prints times."""
    return dt.datetime.fromtimestamp(epoch_s, BEIJING).strftime(TIME_FORMAT)


@dataclasses.dataclass(kw_only=True)
class Token:
    """Temporary credentials for one queue; times are whole epoch seconds."""

    access_key_id: str
    access_key_secret: str = dataclasses.field(repr=False)
    security_token: str = dataclasses.field(repr=False)
    queue: str
    created_at: int
    expires_at: int


class Tokens:
    """Issued tokens by their temporary AccessKeyId; long-expired ones are forgotten."""

    def __init__(self, *, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._by_key: collections.OrderedDict[str, Token] = collections.OrderedDict()

    def issue(self, queue: str) -> Token:
        # Whole seconds: ExpireTime has second precision, and the sandbox enforces exactly what it printed.
        created = int(self._clock())
        token = Token(
            access_key_id=f"STS.{secrets.token_hex(12)}",
            access_key_secret=secrets.token_urlsafe(24),
            security_token=secrets.token_urlsafe(48),
            queue=queue,
            created_at=created,
            expires_at=created + self.ttl_s,
        )
        self._by_key[token.access_key_id] = token
        while len(self._by_key) > 10_000 or next(iter(self._by_key.values())).expires_at + 3600 < created:
            self._by_key.popitem(last=False)
        return token

    def lookup(self, access_key_id: str) -> Token | None:
        return self._by_key.get(access_key_id)

    def expired(self, token: Token) -> bool:
        return self._clock() >= token.expires_at

    def expire_all(self) -> int:
        """Make every issued token expire now (a test knob); returns how many were still valid."""
        now = int(self._clock())
        live = [t for t in self._by_key.values() if t.expires_at > now]
        for token in live:
            token.expires_at = now
        return len(live)


# ---- the MNS signature, from the MNS signing documentation -------------------------------------------------
#   StringToSign = VERB "\n" Content-MD5 "\n" Content-Type "\n" Date "\n"
#                  CanonicalizedMNSHeaders   (each x-mns-* header: lowercase-name ":" value "\n", sorted)
#                  CanonicalizedResource     (the request path and query string exactly as sent)
#   Authorization = "MNS " AccessKeyId ":" base64(HMAC-SHA1(AccessKeySecret, StringToSign))
# The `security-token` header of temporary credentials does not start with x-mns-, so it is not signed.


def content_md5(body: bytes) -> str:
    """Content-MD5 as the MNS SDKs send it: base64 of the *hexadecimal* MD5 string of the body."""
    hex_digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
    return base64.b64encode(hex_digest.encode("ascii")).decode("ascii")


def build_string_to_sign(method: str, resource: str, headers: Mapping[str, str]) -> str:
    """The string a client must have signed for this request, from the headers as received."""
    received: dict[str, str] = {}
    for name, value in headers.items():
        received.setdefault(name.lower(), value)  # a repeated header: the first value, as a server reads it
    canonical = "".join(f"{k}:{received[k]}\n" for k in sorted(received) if k.startswith("x-mns-"))
    fields = [method.upper(), *(received.get(k, "") for k in ("content-md5", "content-type", "date"))]
    return "\n".join(fields) + "\n" + canonical + resource


def signature(secret: str, string_to_sign: str) -> str:
    """base64(HMAC-SHA1(secret, string_to_sign))."""
    mac = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Denial:
    """An MNS refusal: HTTP status, error code and message."""

    status: int
    code: str
    message: str
    token: bool = False  # refused because of the security token (expired or wrong)


class Verifier:
    """Checks one MNS request against the static key and the issued tokens."""

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        tokens: Tokens,
        max_skew_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._static = (access_key_id, access_key_secret)
        self._tokens = tokens
        self._max_skew_s = max_skew_s
        self._clock = clock

    def verify(
        self, *, method: str, resource: str, headers: Mapping[str, str], body: bytes, queue: str
    ) -> Denial | None:
        """None when the request may proceed on `queue`, else the Denial MNS would answer.

        Args:
            resource: the path and query exactly as received (what the client signed).
            headers: case-insensitive received headers.
        """
        auth = headers.get("Authorization", "")
        if not auth:
            return Denial(status=400, code="MissingAuthorizationHeader", message="No Authorization header.")
        scheme, _, credential = auth.partition(" ")
        ak, sep, given = credential.partition(":")
        if scheme != "MNS" or not sep or not ak or not given:
            return Denial(
                status=400,
                code="InvalidAuthorizationHeader",
                message="Authorization must be 'MNS AccessKeyId:Signature'.",
            )
        if not headers.get("x-mns-version"):
            return Denial(status=400, code="MissingVersionHeader", message="x-mns-version header is missing.")
        denial = self._check_date(headers.get("Date", ""))
        if denial is not None:
            return denial
        md5 = headers.get("Content-MD5", "")
        if body and md5 and md5 != content_md5(body):
            return Denial(status=400, code="InvalidDigest", message="Content-MD5 does not match the body.")
        secret, token = self._secret_for(ak)
        if secret is None:
            return Denial(status=403, code="InvalidAccessKeyId", message="The access key id does not exist.")
        string_to_sign = build_string_to_sign(method, resource, headers)
        expected = f"MNS {ak}:{signature(secret, string_to_sign)}"
        if not hmac.compare_digest(expected.encode(), auth.encode()):
            return Denial(
                status=403,
                code="SignatureDoesNotMatch",
                message=f"The request signature does not match. StringToSign: {string_to_sign!r}",
            )
        return self._check_scope(token, headers.get("security-token", ""), queue)

    def _check_date(self, value: str) -> Denial | None:
        if not value:
            return Denial(status=400, code="MissingDateHeader", message="Date header is missing.")
        try:
            stamp = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            stamp = None
        if stamp is None or stamp.tzinfo is None:
            return Denial(status=400, code="InvalidDateHeader", message="Date must be an RFC 1123 GMT date.")
        if abs(self._clock() - stamp.timestamp()) > self._max_skew_s:
            return Denial(
                status=408,
                code="TimeExpired",
                message=f"The http request you sent is expired "
                f"(Date differs from the server time by more than {self._max_skew_s} s).",
            )
        return None

    def _secret_for(self, ak: str) -> tuple[str | None, Token | None]:
        if ak == self._static[0]:
            return self._static[1], None
        token = self._tokens.lookup(ak)
        return (token.access_key_secret, token) if token else (None, None)

    def _check_scope(self, token: Token | None, security_token: str, queue: str) -> Denial | None:
        if token is None:
            if queue.startswith(ALICOM_PREFIX):
                return Denial(
                    status=403,
                    code="AccessDenied",
                    message="Alicom queues are read with QueryTokenForMnsQueue credentials.",
                )
            return None
        if not hmac.compare_digest(security_token, token.security_token):
            return Denial(
                status=403,
                code="AccessDenied",
                token=True,
                message="The security token is missing or invalid.",
            )
        if self._tokens.expired(token):
            return Denial(
                status=403,
                code="SecurityTokenExpired",
                message="The security token you provided has expired.",
                token=True,
            )
        if token.queue != queue:
            return Denial(status=403, code="AccessDenied", message=f"The token is for queue {token.queue}.")
        return None
