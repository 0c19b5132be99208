"""The sandbox verifies with its own signature code, and accepts what Alibaba's SDKs send: the reference
vectors, STS credentials in both signature styles, RPC GETs; and its QPS record reads the clock once."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys

import pytest
from multidict import CIMultiDict

from fallback_daemon.providers import signing  # the daemon's signer plays "the SDK" in these tests
from fallback_daemon.sandbox import auth, rates, signatures, sts

# alibaba.md §1.8: the RPC V1 test vector (AK testid / secret testsecret, POST).
V1_PARAMS = {
    "AccessKeyId": "testid",
    "Action": "SendChatappMessage",
    "ChannelType": "whatsapp",
    "Content": '{"text":"hello"}',
    "CustSpaceId": "cams-123",
    "FallBackContent": "hello by sms",
    "FallBackDuration": "120",
    "FallBackId": "S00001",
    "FallBackRule": "undelivered",
    "Format": "JSON",
    "From": "8613800000000",
    "MessageType": "text",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "SignatureVersion": "1.0",
    "Timestamp": "2024-01-01T12:00:00Z",
    "To": "8613900000000",
    "Type": "message",
    "Version": "2020-06-06",
}
V1_CANONICAL = (
    "AccessKeyId=testid&Action=SendChatappMessage&ChannelType=whatsapp&Content=%7B%22text%22%3A%22hello%22%7D"
    "&CustSpaceId=cams-123&FallBackContent=hello%20by%20sms&FallBackDuration=120&FallBackId=S00001"
    "&FallBackRule=undelivered&Format=JSON&From=8613800000000&MessageType=text&SignatureMethod=HMAC-SHA1"
    "&SignatureNonce=3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf&SignatureVersion=1.0&Timestamp=2024-01-01T12%3A00%3A00Z"
    "&To=8613900000000&Type=message&Version=2020-06-06"
)
V1_SIGNATURE = "7aQxmTW+nG0OgT4AXlh46DjiHBo="


def at(stamp: str) -> float:
    return dt.datetime.strptime(stamp, auth.DATE_FORMAT).replace(tzinfo=dt.UTC).timestamp()


def test_the_sandbox_imports_nothing_of_the_daemons_providers() -> None:
    """In a fresh interpreter, importing every sandbox module loads no fallback_daemon.providers module."""
    code = (
        "import pkgutil, importlib, sys, fallback_daemon.sandbox as sb\n"
        "for m in pkgutil.iter_modules(sb.__path__):\n"
        "    importlib.import_module(f'fallback_daemon.sandbox.{m.name}')\n"
        "print(sorted(m for m in sys.modules if m.startswith('fallback_daemon.')"
        " and not m.startswith('fallback_daemon.sandbox')))\n"
        "print(len([m for m in sys.modules if m.startswith('fallback_daemon.sandbox.')]))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    foreign, loaded = result.stdout.splitlines()
    assert foreign == "[]"
    assert int(loaded) >= 15  # the walk really imported the sandbox (auth, signatures, sts, ...)


def test_rpc_v1_reference_vector() -> None:
    """§1.8 V1: the sandbox's own canonical string and HMAC-SHA1 reproduce the reference signature."""
    assert signatures.sorted_query(V1_PARAMS) == V1_CANONICAL
    sts_ = signatures.rpc_string_to_sign("POST", V1_PARAMS)
    assert sts_ == "POST&%2F&" + signatures.encode(V1_CANONICAL)
    assert signatures.rpc_signature("testsecret", sts_) == V1_SIGNATURE


def test_rpc_verifier_accepts_the_reference_vector_and_refuses_a_changed_param() -> None:
    verifier = auth.RpcVerifier(
        keys={"testid": "testsecret"}, max_skew_s=900, now=lambda: at("2024-01-01T12:00:10Z")
    )
    signed = {**V1_PARAMS, "Signature": V1_SIGNATURE}
    assert verifier.verify("POST", signed) == "testid"
    assert verifier.verify("POST", signed) == auth.Denial(status=400, code="SignatureNonceUsed")
    other = auth.RpcVerifier(
        keys={"testid": "testsecret"}, max_skew_s=900, now=lambda: at("2024-01-01T12:00:10Z")
    )
    denial = other.verify("POST", {**signed, "To": "8613900000001"})
    assert isinstance(denial, auth.Denial)
    assert denial.code == "SignatureDoesNotMatch"
    assert "POST&%2F&AccessKeyId%3Dtestid" in (denial.message or "")
    assert isinstance(other.verify("GET", signed), auth.Denial)  # the method is signed too


def test_acs3_reference_vectors_with_the_sandbox_code() -> None:
    """§1.8 V3 form-body vector and the SDK-captured Dysmsapi SendSms request (Appendix A)."""
    body = (
        "ChannelType=whatsapp&Content=%7B%22text%22%3A%22hello%22%7D&From=8613800000000"
        "&MessageType=text&To=8613900000000&Type=message"
    )
    payload_hash = hashlib.sha256(body.encode()).hexdigest()
    assert payload_hash == "3ceb8f6eb6c10a8bdf16b66d581b2444edbc800c670867aa34c29f2237c853b7"
    headers = {
        "host": "cams.ap-southeast-1.aliyuncs.com",
        "x-acs-action": "SendChatappMessage",
        "x-acs-content-sha256": payload_hash,
        "x-acs-date": "2024-01-01T12:00:00Z",
        "x-acs-signature-nonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "x-acs-version": "2020-06-06",
    }
    sts_ = signatures.acs3_string_to_sign(
        method="POST", path="/", params={}, headers=headers, payload_hash=payload_hash
    )
    assert sts_ == "ACS3-HMAC-SHA256\n4537f59c30c60501de07a9e004e966f698137f81db1e044eaa4cd3556b05cee6"
    assert signatures.acs3_signature("testsecret", sts_) == (
        "db05d32834b0bab1bfcf91120584feda3b188f009e859530c77aead784497f4b"
    )
    sms_headers = {
        "accept": "application/json",
        "host": "127.0.0.1:44097",
        "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
        "x-acs-action": "SendSms",
        "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
        "x-acs-credentials-provider": "static_ak",
        "x-acs-date": "2026-11-29T17:34:41Z",
        "x-acs-signature-nonce": "d0d6affd2b444c3b9b769ae1214217f3",
        "x-acs-version": "2017-05-25",
    }
    params = {
        "OutId": "order-42",
        "PhoneNumbers": "8613900000000",
        "SignName": "Demo",
        "TemplateCode": "SMS_123456789",
        "TemplateParam": '{"code":"1234"}',
    }
    sts_ = signatures.acs3_string_to_sign(
        method="POST",
        path="/",
        params=params,
        headers=sms_headers,
        payload_hash=sms_headers["x-acs-content-sha256"],
    )
    assert signatures.acs3_signature("DummySecretDummySecretDummy01", sts_) == (
        "51835ca0cac0ff0756345c5dd2dd09993247680e33047527da1611d3de2b6e76"
    )


def test_encoding_matches_the_documented_rules() -> None:
    assert signatures.encode("a b*c~d/é") == "a%20b%2Ac~d%2F%C3%A9"


# ---- STS credentials ------------------------------------------------------------------------------------

NOW = "2026-01-01T00:00:00Z"


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _issued(clock: Clock) -> tuple[sts.StsCredentials, sts.StsCredential]:
    store = sts.StsCredentials(clock=clock, max_duration_s=3600)
    return store, store.issue(role_arn="acs:ram::1:role/r", session_name="s1", duration_s=900)


def _acs3(
    cred_id: str, secret: str, token: str | None, *, sign_token: bool = True, nonce: str = "n1"
) -> auth.Received:
    """An ACS3 request as the SDK signs it with STS credentials: x-acs-security-token among the signed."""
    headers = {
        "host": "127.0.0.1:1",
        "x-acs-action": "SendChatappMessage",
        "x-acs-version": "2020-06-06",
        "x-acs-date": NOW,
        "x-acs-signature-nonce": nonce,
        "x-acs-content-sha256": signing.EMPTY_SHA256,
    }
    to_sign = dict(headers)
    if token is not None:
        headers["x-acs-security-token"] = token
        if sign_token:
            to_sign["x-acs-security-token"] = token
    authorization = signing.acs3_authorization(
        access_key_id=cred_id,
        secret=secret,
        method="POST",
        path="/",
        query={"To": "1"},
        headers=to_sign,
        payload_hash=signing.EMPTY_SHA256,
    )
    wire = CIMultiDict({**headers, "Authorization": authorization})
    return auth.Received(method="POST", raw_path="/", raw_query="To=1", headers=wire, body=b"")


def test_acs3_accepts_a_live_sts_credential_with_its_signed_token() -> None:
    clock = Clock(at(NOW))
    store, cred = _issued(clock)
    verifier = auth.Verifier(keys={"ak": "sk"}, max_skew_s=900, now=clock, sts=store)
    assert verifier.verify(_acs3(cred.access_key_id, cred.access_key_secret, cred.security_token)) == (
        cred.access_key_id
    )


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("unsigned token", "IncompleteSignature"),
        ("no token", "InvalidSecurityToken.MismatchWithAccessKey"),
        ("wrong token", "InvalidSecurityToken.MismatchWithAccessKey"),
        ("expired", "InvalidSecurityToken.Expired"),
        ("token with a static key", "InvalidSecurityToken.MismatchWithAccessKey"),
    ],
)
def test_acs3_refuses_sts_misuse(case: str, code: str) -> None:
    clock = Clock(at(NOW))
    store, cred = _issued(clock)
    verifier = auth.Verifier(keys={"ak": "sk"}, max_skew_s=3600, now=clock, sts=store)
    ak, sk, token = cred.access_key_id, cred.access_key_secret, cred.security_token
    request = {
        "unsigned token": lambda: _acs3(ak, sk, token, sign_token=False),
        "no token": lambda: _acs3(ak, sk, None),
        "wrong token": lambda: _acs3(ak, sk, token + "x"),
        "expired": lambda: _acs3(ak, sk, token),
        "token with a static key": lambda: _acs3("ak", "sk", token),
    }[case]()
    if case == "expired":
        clock.now += 900  # Expiration reached (the date is still within the allowed skew)
    denial = verifier.verify(request)
    assert isinstance(denial, auth.Denial)
    assert (denial.status, denial.code) == (400, code)


def test_rpc_accepts_sts_with_security_token_param_on_get_and_refuses_it_expired() -> None:
    """An RPC GET (every parameter in the query) signed with STS credentials and SecurityToken."""
    clock = Clock(at(NOW))
    store, cred = _issued(clock)
    verifier = auth.RpcVerifier(keys={"ak": "sk"}, max_skew_s=3600, now=clock, sts=store)

    def signed(nonce: str) -> dict[str, str]:
        params = {
            **{k: v for k, v in V1_PARAMS.items() if k != "Timestamp"},
            "AccessKeyId": cred.access_key_id,
            "SecurityToken": cred.security_token,
            "SignatureNonce": nonce,
            "Timestamp": NOW,
        }
        params["Signature"] = signing.rpc_v1_signature(
            secret=cred.access_key_secret, method="GET", params=params
        )
        return params

    assert verifier.verify("GET", signed("a")) == cred.access_key_id
    no_token = {k: v for k, v in signed("b").items() if k != "SecurityToken"}
    assert isinstance(verifier.verify("GET", no_token), auth.Denial)  # unsigned change and no token
    clock.now += 901
    denial = verifier.verify("GET", signed("c"))
    assert isinstance(denial, auth.Denial)
    assert denial.code == "InvalidSecurityToken.Expired"


# ---- the QPS record reads the clock once per call ----------------------------------------------------------


def test_rate_record_and_limiter_share_one_clock_read() -> None:
    """The clock moves between any two reads (by 50 ms, 450 ms, 0, 500 ms, 1 ms, ...): the recorded fullest
    window never exceeds the cap. Reading the clock twice per call (limiter, then record) let the record
    stamp a call later than the limiter did, so its window held qps + 1 calls."""
    steps = iter([0.05, 0.45, 0.0, 0.5, 0.001] * 40)
    now = [0.0]

    def clock() -> float:
        value = now[0]
        now[0] += next(steps)
        return value

    limiter = rates.CountingLimiter(auth.RateLimiter(qps=2, clock=clock), clock)
    decisions = [limiter.admit("k") for _ in range(60)]
    assert limiter.rates.max_window <= 2
    assert sum(decisions) == sum(limiter.rates.admitted.values())
    assert limiter.rates.max_window == 2  # the cap was reached, so the check above was not vacuous
