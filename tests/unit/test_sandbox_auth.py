"""The sandbox's ACS3 verifier accepts Alibaba's requests and refuses what Alibaba refuses; QPS limiter."""

from __future__ import annotations

import datetime as dt
import hashlib

from multidict import CIMultiDict

from fallback_daemon.providers import signing
from fallback_daemon.sandbox import auth

SDK_AK = "LTAI5tDUMMYDUMMYDUMMY01"
SDK_SECRET = "DummySecretDummySecretDummy01"
# The raw query of reference/cams_request_sample.txt as sent by the SDK ('*', ':' and ',' unescaped).
SDK_RAW_QUERY = (
    "ChannelType=whatsapp&CustSpaceId=cams-8c8*********&FallBackDuration=120&FallBackId=SMS_99****"
    "&From=8613800000000&Language=en&MessageType=template&Tag=fallback-demo"
    "&TemplateCode=744c4b5c79c9432497a075bdfca3****&TemplateParams=%7B%221%22:%22Alice%22,%22code%22:%221234%22%7D"
    "&To=8613900000000&TrackingData=order-42&Type=template"
)
SDK_HEADERS = {
    "host": "127.0.0.1:43407",
    "x-acs-version": "2020-06-06",
    "x-acs-action": "SendChatappMessage",
    "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
    "x-acs-date": "2026-11-29T17:34:32Z",
    "x-acs-signature-nonce": "e4b727b453c462bd3085403a1d1d8a9f",
    "accept": "application/json",
    "x-acs-content-sha256": signing.EMPTY_SHA256,
    "x-acs-credentials-provider": "static_ak",
    "Authorization": "ACS3-HMAC-SHA256 Credential=LTAI5tDUMMYDUMMYDUMMY01,"
    "SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;"
    "x-acs-version,Signature=b78e5c548862cba1146c70bc2b160519c01e1ec4815caee6c04119f3c9af752b",
    "Accept-Encoding": "gzip, deflate",
    "Content-Type": "application/octet-stream",
}


def at(stamp: str) -> float:
    return dt.datetime.strptime(stamp, auth.DATE_FORMAT).replace(tzinfo=dt.UTC).timestamp()


def sdk_request(**header_changes: str) -> auth.Received:
    headers = CIMultiDict(SDK_HEADERS)
    for key, value in header_changes.items():
        headers[key.replace("_", "-")] = value
    return auth.Received(method="POST", raw_path="/", raw_query=SDK_RAW_QUERY, headers=headers, body=b"")


def sdk_verifier(now: str = "2026-11-29T17:35:00Z") -> auth.Verifier:
    return auth.Verifier(keys={SDK_AK: SDK_SECRET}, max_skew_s=900, now=lambda: at(now))


def test_the_captured_sdk_request_verifies() -> None:
    """The byte-exact request Alibaba's Python SDK sent (sample file) passes verification."""
    assert sdk_verifier().verify(sdk_request()) == SDK_AK


def test_the_reference_form_body_vector_verifies() -> None:
    """The §1.8 V3 vector (params in a form body, no query) passes verification."""
    body = (
        b"ChannelType=whatsapp&Content=%7B%22text%22%3A%22hello%22%7D&From=8613800000000"
        b"&MessageType=text&To=8613900000000&Type=message"
    )
    headers = CIMultiDict(
        {
            "host": "cams.ap-southeast-1.aliyuncs.com",
            "x-acs-action": "SendChatappMessage",
            "x-acs-version": "2020-06-06",
            "x-acs-date": "2024-01-01T12:00:00Z",
            "x-acs-signature-nonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
            "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
            "Authorization": "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host;x-acs-action;"
            "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
            "Signature=db05d32834b0bab1bfcf91120584feda3b188f009e859530c77aead784497f4b",
        }
    )
    verifier = auth.Verifier(
        keys={"testid": "testsecret"}, max_skew_s=900, now=lambda: at("2024-01-01T12:00:00Z")
    )
    received = auth.Received(method="POST", raw_path="/", raw_query="", headers=headers, body=body)
    assert verifier.verify(received) == "testid"


def test_a_changed_signed_header_gives_signature_does_not_match_with_string_to_sign() -> None:
    """Changing a signed header breaks the signature, and the error shows the server's string to sign."""
    denial = sdk_verifier().verify(sdk_request(user_agent="curl/8"))
    assert isinstance(denial, auth.Denial)
    assert (denial.status, denial.code) == (400, "SignatureDoesNotMatch")
    assert "server string to sign is:ACS3-HMAC-SHA256\n" in (denial.message or "")


def test_a_body_not_matching_its_hash_is_refused() -> None:
    """A body whose SHA-256 differs from x-acs-content-sha256 is refused."""
    received = sdk_request()
    tampered = auth.Received(
        method="POST", raw_path="/", raw_query=SDK_RAW_QUERY, headers=received.headers, body=b"To=1"
    )
    denial = sdk_verifier().verify(tampered)
    assert isinstance(denial, auth.Denial)
    assert denial.code == "SignatureDoesNotMatch"


def test_refusals_in_alibaba_codes() -> None:
    """Unknown AccessKey, missing Authorization, stale date and a reused nonce each get Alibaba's code."""
    unknown = sdk_request(Authorization=SDK_HEADERS["Authorization"].replace(SDK_AK, "LTAIother"))
    assert sdk_verifier().verify(unknown) == auth.Denial(status=404, code="InvalidAccessKeyId.NotFound")
    missing = sdk_verifier().verify(sdk_request(Authorization=""))
    assert isinstance(missing, auth.Denial)
    assert (missing.status, missing.code) == (400, "IncompleteSignature")
    stale = sdk_verifier(now="2026-11-29T17:50:00Z").verify(sdk_request())
    assert isinstance(stale, auth.Denial)
    assert (stale.status, stale.code) == (400, "InvalidTimeStamp.Expired")
    verifier = sdk_verifier()
    assert verifier.verify(sdk_request()) == SDK_AK
    assert verifier.verify(sdk_request()) == auth.Denial(status=400, code="SignatureNonceUsed")


def test_signed_headers_must_cover_the_acs_headers() -> None:
    """A signature that leaves out x-acs-action is incomplete, whatever its value."""
    headers = {k: v for k, v in SDK_HEADERS.items() if k != "Authorization"}
    signed = {k: v for k, v in headers.items() if k.startswith("x-acs-") and k != "x-acs-action"}
    signed["host"] = headers["host"]
    authorization = signing.acs3_authorization(
        access_key_id=SDK_AK,
        secret=SDK_SECRET,
        method="POST",
        path="/",
        query=dict(
            auth.Received(method="POST", raw_path="/", raw_query=SDK_RAW_QUERY, headers={}, body=b"").query()
        ),
        headers=signed,
        payload_hash=signing.EMPTY_SHA256,
    )
    denial = sdk_verifier().verify(sdk_request(Authorization=authorization))
    assert isinstance(denial, auth.Denial)
    assert denial.code == "IncompleteSignature"
    assert "x-acs-action" in (denial.message or "")


def test_rate_limiter_admits_qps_per_sliding_second_per_key() -> None:
    """At most qps calls per key in any one-second window; the window slides."""
    now = [10.0]
    limiter = auth.RateLimiter(qps=3, clock=lambda: now[0])
    assert [limiter.admit("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.admit("b")
    now[0] = 10.5
    assert not limiter.admit("a")
    now[0] = 11.01
    assert [limiter.admit("a") for _ in range(4)] == [True, True, True, False]
