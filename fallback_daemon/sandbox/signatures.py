"""Alibaba's POP request signatures, written for the sandbox from the documented algorithms.

This module is the sandbox's own implementation and imports nothing from the daemon (not
`fallback_daemon.providers.signing`): a signing bug on the daemon's side must fail against the sandbox
instead of being mirrored by it. tests/unit/test_sandbox_auth.py checks it against the reference vectors
(the SDK-captured request of cams_request_sample.txt and the alibaba.md §1.8 vectors), and
tests/unit/test_sandbox_sdk_auth.py checks that the sandbox's module graph never imports the providers.

ACS3-HMAC-SHA256 (V3), from Alibaba's "V3 request structure and signature" page:

    CanonicalRequest = HTTPMethod \\n CanonicalURI \\n CanonicalQueryString \\n CanonicalHeaders \\n
                       SignedHeaders \\n HashedRequestPayload
    CanonicalQueryString: parameters sorted by name, name and value percent-encoded, `name=value` joined by &
    CanonicalHeaders: for each signed header, lowercase name ":" trimmed value "\\n", sorted by name
    SignedHeaders: the lowercase names, sorted, joined by ";"
    StringToSign = "ACS3-HMAC-SHA256" \\n hex(SHA256(CanonicalRequest))
    Signature = hex(HMAC-SHA256(AccessKeySecret, StringToSign))

RPC signature V1 (HMAC-SHA1), from the RPC "signature method" page:

    CanonicalizedQueryString: every parameter but Signature, sorted, percent-encoded, `k=v` joined by &
    StringToSign = HTTPMethod "&" percentEncode("/") "&" percentEncode(CanonicalizedQueryString)
    Signature = base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))

Percent-encoding (both): UTF-8, every byte except A-Z a-z 0-9 - _ . ~ becomes %XX (upper-case hex), so a
space is %20, `*` is %2A and `~` stays.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

ACS3 = "ACS3-HMAC-SHA256"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def encode(value: str) -> str:
    """Alibaba's percent-encoding (see the module docstring)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode("utf-8"))


def sorted_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(params.items()))


def acs3_string_to_sign(
    *, method: str, path: str, params: Mapping[str, str], headers: Mapping[str, str], payload_hash: str
) -> str:
    """The StringToSign of an ACS3 request; `headers` are exactly the signed ones (name -> received value)."""
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    names = sorted(lowered)
    canonical = "\n".join(
        [
            method.upper(),
            path or "/",
            sorted_query(params),
            "".join(f"{name}:{lowered[name]}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    return f"{ACS3}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def acs3_signature(secret: str, string_to_sign: str) -> str:
    return hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def parse_acs3(value: str) -> dict[str, str] | None:
    """`ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..` as a dict; None when malformed."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ACS3:
        return None
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if not sep:
            return None
        parts[name] = val
    if not {"Credential", "SignedHeaders", "Signature"} <= parts.keys():
        return None
    return parts


def rpc_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    signed = {k: v for k, v in params.items() if k != "Signature"}
    return f"{method.upper()}&{encode('/')}&{encode(sorted_query(signed))}"


def rpc_signature(secret: str, string_to_sign: str) -> str:
    mac = hmac.new(f"{secret}&".encode(), string_to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")
