"""The signed provider clients against real HTTP: the sandbox (signatures verified like Alibaba), a server
that never answers, and a closed port — each failure mapped to the error class that drives retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from fallback_daemon import sandbox
from fallback_daemon.core import errors
from fallback_daemon.providers import acs, alibaba_sms, cams
from tests.e2e.procs import free_port

PARAMS = {
    "ChannelType": "whatsapp",
    "Type": "message",
    "MessageType": "text",
    "From": "6580000000",
    "Content": '{"text":"hi"}',
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sb() -> AsyncIterator[sandbox.Sandbox]:
    box = await sandbox.serve(sandbox.SandboxConfig(qps=3))
    yield box
    await box.close()


def client(
    session: aiohttp.ClientSession,
    url: str,
    *,
    secret: str = "sandbox-secret",
    version: str = cams.VERSION,
    timeout: float = 5.0,
) -> acs.AcsClient:
    return acs.AcsClient(
        session,
        endpoint=url,
        version=version,
        access_key_id="sandbox-ak",
        access_key_secret=secret,
        timeout_s=timeout,
    )


async def test_send_ok_returns_the_message_id(session: aiohttp.ClientSession, sb: sandbox.Sandbox) -> None:
    """A signed SendChatappMessage is accepted by the sandbox and yields its MessageId; TaskId is ours."""
    mid = await cams.CamsClient(client(session, sb.url)).send(
        task_id="task-1", params={**PARAMS, "To": "6591230"}
    )
    assert mid
    assert "task-1" in sb.journal()["chat"]


async def test_wrong_secret_is_a_permanent_signature_error(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox
) -> None:
    """A wrong AccessKey secret gets SignatureDoesNotMatch, which is never retried."""
    with pytest.raises(errors.PermanentError) as info:
        await cams.CamsClient(client(session, sb.url, secret="wrong")).send(
            task_id="t", params={**PARAMS, "To": "6591230"}
        )
    assert info.value.code == "SignatureDoesNotMatch"


async def test_business_rejection_is_permanent(session: aiohttp.ClientSession, sb: sandbox.Sandbox) -> None:
    """CAMS' InvalidParameter.* answer (HTTP 200, Code != OK) is a permanent error."""
    with pytest.raises(errors.PermanentError) as info:
        await cams.CamsClient(client(session, sb.url)).send(task_id="t2", params={**PARAMS, "To": "6591238"})
    assert info.value.code.startswith("InvalidParameter")


async def test_throttling_is_transient(session: aiohttp.ClientSession, sb: sandbox.Sandbox) -> None:
    """Beyond the sandbox's QPS cap the answer is Throttling.User, a transient (retryable) error."""
    c = cams.CamsClient(client(session, sb.url))
    results = await asyncio.gather(
        *(c.send(task_id=f"q{i}", params={**PARAMS, "To": f"659123{i}0"}) for i in range(8)),
        return_exceptions=True,
    )
    throttled = [r for r in results if isinstance(r, errors.TransientError)]
    assert throttled
    assert all(r.code == "Throttling.User" for r in throttled)
    assert acs.is_throttling(throttled[0].code)


async def test_closed_port_is_transient(session: aiohttp.ClientSession) -> None:
    """A refused connection means the request never arrived: transient, safe to retry."""
    with pytest.raises(errors.TransientError):
        await cams.CamsClient(client(session, f"http://127.0.0.1:{free_port()}")).send(
            task_id="t", params=PARAMS
        )


async def test_no_answer_after_sending_is_ambiguous(session: aiohttp.ClientSession) -> None:
    """A server that reads the request and never answers yields AmbiguousError (outcome unknown, not
    resent)."""
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.Response:
        await request.read()
        arrived.set()
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/", stall)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with pytest.raises(errors.AmbiguousError):
            await cams.CamsClient(client(session, f"http://127.0.0.1:{port}", timeout=0.5)).send(
                task_id="t", params=PARAMS
            )
        assert arrived.is_set()
    finally:
        release.set()
        await runner.cleanup()


async def test_globe_sms_carries_our_fallback_id(session: aiohttp.ClientSession, sb: sandbox.Sandbox) -> None:
    """SendMessageToGlobe is signed, accepted, and the sandbox records one send under our fallback id."""
    gw = alibaba_sms.GlobeSms(client(session, sb.url, version=alibaba_sms.VERSION), sender="Fallback")
    sms_id = await gw.send(fallback_id="fb-1", to="6591234567", text="hello", template_params={})
    assert sms_id
    assert sb.journal()["sms"]["fb-1"]["sends"] == 1
