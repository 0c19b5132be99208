"""Request signatures for Alibaba Cloud: ACS3-HMAC-SHA256 (CAMS, SMS), RPC V1 HMAC-SHA1, and MNS HMAC-SHA1.

Pure functions (no I/O, no clock): callers pass the date and nonce, so tests can reproduce Alibaba's own
requests byte for byte (tests/unit/test_signing.py). The sandbox does not use this module: it verifies with
its own implementation (sandbox/signatures.py), so a bug here fails against it instead of being mirrored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

ACS3 = "ACS3-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Alibaba's SDKs do it: everything but A-Za-z0-9-_.~ is escaped."""
    return quote(value, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    """Sorted `k=v` pairs, both percent-encoded; the form used for signing and, by us, on the wire."""
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))


def acs3_string_to_sign(
    *, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], payload_hash: str
) -> tuple[str, str]:
    """Return (StringToSign, SignedHeaders) for an ACS3 request; every header given is signed."""
    lowered = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    names = sorted(lowered)
    canonical_headers = "".join(f"{n}:{lowered[n]}\n" for n in names)
    signed_headers = ";".join(names)
    canonical_request = "\n".join(
        [method.upper(), path or "/", canonical_query(query), canonical_headers, signed_headers, payload_hash]
    )
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return f"{ACS3}\n{digest}", signed_headers


def acs3_signature(secret: str, string_to_sign: str) -> str:
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def acs3_authorization(
    *,
    access_key_id: str,
    secret: str,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_hash: str,
) -> str:
    """The Authorization header value for an ACS3-HMAC-SHA256 request.

    Args:
        headers: the headers to sign (host and the x-acs-* set at least), as they go on the wire.
        payload_hash: hex SHA-256 of the body, equal to the x-acs-content-sha256 header.
    """
    sts, signed = acs3_string_to_sign(
        method=method, path=path, query=query, headers=headers, payload_hash=payload_hash
    )
    return f"{ACS3} Credential={access_key_id},SignedHeaders={signed},Signature={acs3_signature(secret, sts)}"


def parse_acs3_authorization(value: str) -> dict[str, str]:
    """Split `ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..` into its parts
    ({} if malformed)."""
    algo, _, rest = value.partition(" ")
    if algo != ACS3:
        return {}
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return {}
        parts[key] = val
    return parts if {"Credential", "SignedHeaders", "Signature"} <= parts.keys() else {}


def rpc_v1_signature(*, secret: str, method: str, params: Mapping[str, str]) -> str:
    """RPC signature V1 (HMAC-SHA1) over all params except Signature, as in get_rpcsignature."""
    signed = {k: v for k, v in params.items() if k != "Signature"}
    string_to_sign = f"{method.upper()}&%2F&{percent_encode(canonical_query(signed))}"
    mac = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def mns_content_md5(body: bytes) -> str:
    """MNS SDK quirk: Content-MD5 is base64 of the *hex* MD5 string."""
    return base64.b64encode(hashlib.md5(body).hexdigest().encode()).decode()  # noqa: S324 - protocol-mandated


def mns_string_to_sign(
    *, method: str, resource: str, headers: Mapping[str, str], content_md5: str = "", content_type: str = ""
) -> str:
    """VERB\\nContent-MD5\\nContent-Type\\nDate\\n + sorted x-mns-* headers + resource
    (path?query as sent)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    mns_headers = "".join(f"{k}:{lowered[k]}\n" for k in sorted(lowered) if k.startswith("x-mns-"))
    return (
        f"{method.upper()}\n{content_md5}\n{content_type}\n{lowered.get('date', '')}\n{mns_headers}{resource}"
    )


def mns_authorization(*, access_key_id: str, secret: str, string_to_sign: str) -> str:
    mac = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1)
    return f"MNS {access_key_id}:{base64.b64encode(mac.digest()).decode()}"
