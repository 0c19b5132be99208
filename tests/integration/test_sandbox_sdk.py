"""The sandbox over real HTTP answers the request shapes Alibaba's SDKs send (written from the SDKs'
documented behaviour, signed with the daemon's signer, no SDK imported): RPC signature V1 as a GET with
every parameter in the query (and x-acs-action sent too, as tea-openapi does with
signature_algorithm='v2'), RPC as a POST form, Dybaseapi in ACS3 style, and anonymous STS."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl

from fallback_daemon import sandbox
from fallback_daemon.providers import signing

AK, SK = "sandbox-ak", "sandbox-secret"
CHAT = {
    "ChannelType": "whatsapp",
    "Type": "message",
    "MessageType": "text",
    "From": "6580000000",
    "To": "6591230",
    "Content": '{"text":"hi"}',
    "TaskId": "sdk-1",
}


@pytest.fixture
async def sb() -> AsyncIterator[sandbox.Sandbox]:
    box = await sandbox.serve(sandbox.SandboxConfig())
    yield box
    await box.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rpc_params(action: str, version: str, params: dict[str, str], method: str) -> dict[str, str]:
    """What the RPC SDK path sends: the common parameters plus the action's, signed with V1."""
    signed = {
        "Action": action,
        "Version": version,
        "Format": "JSON",
        "AccessKeyId": AK,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": now(),
        **params,
    }
    signed["Signature"] = signing.rpc_v1_signature(secret=SK, method=method, params=signed)
    return signed


async def answer(resp: aiohttp.ClientResponse) -> tuple[int, dict[str, Any]]:
    return resp.status, await resp.json(content_type=None)


async def test_rpc_get_with_the_signature_in_the_query_is_served(
    sb: sandbox.Sandbox, session: aiohttp.ClientSession
) -> None:
    """GET /?Action=SendChatappMessage&...&Signature=..., with x-acs-action also sent: accepted (it was 405,
    and with x-acs-action an ACS3 IncompleteSignature)."""
    params = rpc_params("SendChatappMessage", "2020-06-06", CHAT, "GET")
    url = yarl.URL(f"{sb.url}/?{signing.canonical_query(params)}", encoded=True)
    headers = {"x-acs-action": "SendChatappMessage", "x-acs-version": "2020-06-06"}
    async with session.get(url, headers=headers) as resp:
        status, body = await answer(resp)
    assert (status, body["Code"]) == (200, "OK")
    assert body["MessageId"]
    assert "sdk-1" in sb.journal()["chat"]


async def test_rpc_post_form_is_served_and_a_tampered_one_refused(
    sb: sandbox.Sandbox, session: aiohttp.ClientSession
) -> None:
    params = rpc_params("SendMessageToGlobe", "2018-05-01", {"To": "6591230", "Message": "hi"}, "POST")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with session.post(sb.url, data=signing.canonical_query(params), headers=form) as resp:
        status, body = await answer(resp)
    assert (status, body["ResponseCode"]) == (200, "OK")
    tampered = rpc_params("SendMessageToGlobe", "2018-05-01", {"To": "6591230", "Message": "hi"}, "POST")
    tampered["Message"] = "changed"
    async with session.post(sb.url, data=signing.canonical_query(tampered), headers=form) as resp:
        status, body = await answer(resp)
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    assert "server string to sign is:POST&%2F&" in body["Message"]


async def test_rpc_get_without_a_signature_is_incomplete(
    sb: sandbox.Sandbox, session: aiohttp.ClientSession
) -> None:
    query = signing.canonical_query({"Action": "SendChatappMessage", "Version": "2020-06-06", **CHAT})
    async with session.get(yarl.URL(f"{sb.url}/?{query}", encoded=True)) as resp:
        status, body = await answer(resp)
    assert (status, body["Code"]) == (400, "IncompleteSignature")
    assert sb.journal()["chat"] == {}


async def test_dybaseapi_in_acs3_style_as_its_sdk_sends_it(
    sb: sandbox.Sandbox, session: aiohttp.ClientSession
) -> None:
    """The Dybaseapi SDK's default (ACS3, parameters in the query): QueryTokenForMnsQueue is served (it was
    InvalidAction.NotFound); the RPC V1 GET form too."""
    query = {"MessageType": "ChatAppStatus", "QueueName": sb.state.config.chatapp_queue}
    host = yarl.URL(sb.url).raw_authority
    headers = {
        "host": host,
        "x-acs-action": "QueryTokenForMnsQueue",
        "x-acs-version": "2017-05-25",
        "x-acs-date": now(),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
        "accept": "application/json",
    }
    headers["Authorization"] = signing.acs3_authorization(
        access_key_id=AK,
        secret=SK,
        method="POST",
        path="/",
        query=query,
        headers=headers,
        payload_hash=signing.EMPTY_SHA256,
    )
    url = yarl.URL(f"{sb.url}/?{signing.canonical_query(query)}", encoded=True)
    async with session.post(url, headers=headers) as resp:
        status, body = await answer(resp)
    assert (status, body["Code"]) == (200, "OK")
    assert body["MessageTokenDTO"]["AccessKeyId"].startswith("STS.")
    params = rpc_params("QueryTokenForMnsQueue", "2018-05-01", query, "GET")
    async with session.get(yarl.URL(f"{sb.url}/?{signing.canonical_query(params)}", encoded=True)) as resp:
        status, body = await answer(resp)
    assert (status, body["Code"]) == (200, "OK")
    assert sb.stats()["mns_tokens_issued"] == 2


async def test_assume_role_with_oidc_is_anonymous_and_validates_its_parameters(
    session: aiohttp.ClientSession,
) -> None:
    """No AccessKey or signature needed; a missing parameter is Missing<Name>, a non-JWT token refused;
    Expiration is DurationSeconds (default 3600) after the sandbox's clock."""
    fixed = 1_800_000_000.0
    sb = await sandbox.serve(sandbox.SandboxConfig(wall_clock=lambda: fixed))
    base = {
        "Action": "AssumeRoleWithOIDC",
        "Version": "2015-04-01",
        "Format": "JSON",
        "RoleArn": "acs:ram::1234567890:role/fallback",
        "OIDCProviderArn": "acs:ram::1234567890:oidc-provider/ack-rrsa-c1",
        "RoleSessionName": "s-1",
        "Timestamp": now(),
    }

    async def call(**params: str) -> tuple[int, dict[str, Any]]:
        async with session.get(f"{sb.url}/", params={**base, **params}) as resp:
            return await answer(resp)

    try:
        await _assume_role_checks(sb, call, fixed)
    finally:
        await sb.close()


async def _assume_role_checks(sb: sandbox.Sandbox, call: Any, fixed: float) -> None:
    status, body = await call()
    assert (status, body["Code"]) == (400, "MissingOIDCToken")
    status, body = await call(OIDCToken="not-a-jwt")
    assert (status, body["Code"]) == (400, "InvalidParameter.OIDCToken")
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.c2ln"  # {"sub": "system:..."}
    status, body = await call(OIDCToken=jwt, DurationSeconds="60")
    assert (status, body["Code"]) == (400, "InvalidParameter")
    status, body = await call(OIDCToken=jwt)
    assert status == 200
    cred = body["Credentials"]
    assert set(cred) == {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}
    expires = dt.datetime.strptime(cred["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert expires.timestamp() == fixed + 3600
    assert body["AssumedRoleUser"]["Arn"] == "acs:ram::1234567890:role/fallback/s-1"
    assert sb.state.sts.issued == 1
