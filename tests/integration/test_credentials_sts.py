"""The credential chain end to end against the sandbox: an OIDC role's token exchanged with STS
AssumeRoleWithOIDC, then CAMS, SMS and Dybaseapi calls signed with the STS credentials (security token
sent); the credentials are refreshed before they expire without a failed call, an expired STS token is
refused, and a refused token is replaced on the next call.

One clock is shared by the sandbox (request dates, STS Expiration) and the daemon's credential cache, so
"later" is a clock move, not a wait.
"""

from __future__ import annotations

import base64
import json
import pathlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from fallback_daemon import sandbox
from fallback_daemon.core import errors
from fallback_daemon.providers import acs, alibaba_sms, cams, dybaseapi
from fallback_daemon.providers import credentials as creds

ROLE = "acs:ram::1234567890:role/fallback-daemon"
PROVIDER = "acs:ram::1234567890:oidc-provider/ack-rrsa-c1"
CHAT = {
    "ChannelType": "whatsapp",
    "Type": "message",
    "MessageType": "text",
    "From": "6580000000",
    "Content": '{"text":"hi"}',
}


class Clock:
    """Real time moved forward by the test (both sides read it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def jwt(claims: dict[str, object]) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sb(clock: Clock) -> AsyncIterator[sandbox.Sandbox]:
    # The request dates come from the real clock while the sandbox runs ahead: allow that skew.
    box = await sandbox.serve(sandbox.SandboxConfig(wall_clock=clock, max_skew_s=7200))
    yield box
    await box.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def token_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "token"
    path.write_text(jwt({"sub": "system:serviceaccount:fallback:daemon", "aud": "sts.aliyuncs.com"}) + "\n")
    return path


def oidc(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, token_file: pathlib.Path, clock: Clock
) -> creds.Refreshing:
    return creds.oidc_provider(
        session,
        role_arn=ROLE,
        oidc_provider_arn=PROVIDER,
        oidc_token_file=str(token_file),
        role_session_name="pod-1",
        sts_endpoint=sb.url,
        duration_s=900,  # refresh point: 675 s after the exchange
        clock=clock,
    )


def chat(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, provider: creds.CredentialsProvider
) -> cams.CamsClient:
    return cams.CamsClient(
        acs.AcsClient(session, endpoint=sb.url, version=cams.VERSION, credentials=provider, timeout_s=5.0)
    )


async def test_cams_sms_and_dybaseapi_calls_with_oidc_role_credentials(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, token_file: pathlib.Path, clock: Clock
) -> None:
    """One AssumeRoleWithOIDC exchange; every client signs with its STS credentials and security token."""
    provider = oidc(session, sb, token_file, clock)
    assert await chat(session, sb, provider).send(task_id="oidc-1", params={**CHAT, "To": "6591230"})
    globe = alibaba_sms.GlobeSms(
        acs.AcsClient(
            session, endpoint=sb.url, version=alibaba_sms.VERSION, credentials=provider, timeout_s=5.0
        ),
        sender="Fallback",
    )
    assert await globe.send(fallback_id="fb-1", to="6591230", text="hi", template_params={})
    tokens = dybaseapi.DybaseapiClient(session, endpoint=sb.url, credentials=provider)
    mns_token = await tokens.query_token(
        message_type="ChatAppStatus", queue_name=sb.state.config.chatapp_queue
    )
    assert mns_token.credentials.access_key_id.startswith("STS.")
    current = await provider.get()
    assert current.security_token is not None
    assert sb.state.sts.lookup(current.access_key_id) is not None  # the sandbox issued what was used
    assert (sb.state.sts.issued, provider.refreshes) == (1, 1)
    assert sb.stats()["auth_failures"] == 0


async def test_credentials_are_refreshed_before_they_expire_without_a_failed_call(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, token_file: pathlib.Path, clock: Clock
) -> None:
    provider = oidc(session, sb, token_file, clock)
    client = chat(session, sb, provider)
    assert await client.send(task_id="r-1", params={**CHAT, "To": "6591230"})
    first = await provider.get()
    clock.offset += 700  # past the refresh point, 200 s before Expiration
    assert await client.send(task_id="r-2", params={**CHAT, "To": "6591230"})
    second = await provider.get()
    assert second.access_key_id != first.access_key_id
    assert (sb.state.sts.issued, provider.refreshes) == (2, 2)
    clock.offset += 300  # the first credentials have expired now; the second are valid for 600 s more
    stale = acs.AcsClient(
        session,
        endpoint=sb.url,
        version=cams.VERSION,
        credentials=creds.StaticCredentials(first),
        timeout_s=5.0,
    )
    with pytest.raises(errors.TransientError) as info:
        await cams.CamsClient(stale).send(task_id="r-stale", params={**CHAT, "To": "6591230"})
    assert (info.value.status, info.value.code) == (400, "InvalidSecurityToken.Expired")
    assert await client.send(task_id="r-3", params={**CHAT, "To": "6591230"})
    assert sb.stats()["auth_failures"] == 1  # only the deliberate stale call
    journal = sb.journal()["chat"]
    assert {"r-1", "r-2", "r-3"} <= set(journal)
    assert "r-stale" not in journal  # nothing from a refused request is stored


async def test_a_refused_token_is_retryable_and_replaced_on_the_next_call(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, token_file: pathlib.Path, clock: Clock
) -> None:
    """STS credentials revoked early (the sandbox expires them): the call is refused as a transient error,
    the cache drops them, and the retry exchanges the token again and succeeds."""
    provider = oidc(session, sb, token_file, clock)
    client = chat(session, sb, provider)
    assert await client.send(task_id="x-1", params={**CHAT, "To": "6591230"})
    assert sb.expire_sts() == 1
    with pytest.raises(errors.TransientError) as info:
        await client.send(task_id="x-2", params={**CHAT, "To": "6591230"})
    assert info.value.code == "InvalidSecurityToken.Expired"
    assert await client.send(task_id="x-2", params={**CHAT, "To": "6591230"})
    assert (sb.state.sts.issued, provider.refreshes) == (2, 2)


async def test_a_refused_oidc_exchange_leaves_no_credentials(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, tmp_path: pathlib.Path, clock: Clock
) -> None:
    """An expired OIDC token: STS refuses, no call is signed, the error says where the credentials failed."""
    path = tmp_path / "token"
    path.write_text(jwt({"sub": "s", "exp": int(clock()) - 60}))
    provider = oidc(session, sb, path, clock)
    with pytest.raises(errors.TransientError) as info:
        await chat(session, sb, provider).send(task_id="no-1", params={**CHAT, "To": "6591230"})
    assert info.value.code == "CredentialsUnavailable"
    assert isinstance(info.value.__cause__, errors.PermanentError)
    assert info.value.__cause__.code == "AuthenticationFail.OIDCToken.Expired"
    assert sb.stats()["cams_calls"] == 0
    path.write_text(jwt({"sub": "s", "exp": int(clock()) + 3600}))  # kubelet rotated the token file
    assert await chat(session, sb, provider).send(task_id="no-1", params={**CHAT, "To": "6591230"})
