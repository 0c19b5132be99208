"""Alibaba domestic SendSms against the in-process sandbox (signatures verified like Alibaba), alone and
end to end through the daemon: OutId = our id, and the sandbox's domestic SmsReport closes the fallback."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from fallback_daemon import app, config, sandbox
from fallback_daemon.core import errors
from fallback_daemon.providers import acs, alibaba_sms

TOKEN = "test-api-token-0123456789"
DOMESTIC = {"FALLBACK_SMS_SIGN_NAME": "Demo", "FALLBACK_SMS_TEMPLATE_CODE": "SMS_123456789"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sb() -> AsyncIterator[sandbox.Sandbox]:
    box = await sandbox.serve(sandbox.SandboxConfig())
    yield box
    await box.close()


def domestic(
    session: aiohttp.ClientSession,
    url: str,
    *,
    secret: str = "sandbox-secret",
    param_map: Mapping[str, str] | None = None,
) -> alibaba_sms.DomesticSms:
    client = acs.AcsClient(
        session,
        endpoint=url,
        version=alibaba_sms.DOMESTIC_VERSION,
        access_key_id="sandbox-ak",
        access_key_secret=secret,
        timeout_s=5.0,
    )
    return alibaba_sms.DomesticSms(
        client, sign_name="Demo", template_code="SMS_123456789", param_map=param_map
    )


async def test_send_sms_returns_biz_id_with_our_out_id(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox
) -> None:
    """A signed SendSms is accepted by the sandbox; it returns the BizId and journals the send under OutId."""
    biz_id = await domestic(session, sb.url).send(
        fallback_id="fb-1", to="8613900000000", text="ignored", template_params={"code": "1234"}
    )
    entry = sb.journal()["sms"]["fb-1"]
    assert (entry["api"], entry["to"], entry["sends"], entry["message_ids"]) == (
        "SendSms",
        "8613900000000",
        1,
        [biz_id],
    )


async def test_wrong_secret_is_refused(session: aiohttp.ClientSession, sb: sandbox.Sandbox) -> None:
    """A wrong AccessKey secret gets SignatureDoesNotMatch from the sandbox: a permanent error."""
    with pytest.raises(errors.PermanentError) as info:
        await domestic(session, sb.url, secret="wrong").send(
            fallback_id="fb-2", to="8613900000000", text="", template_params={}
        )
    assert info.value.code == "SignatureDoesNotMatch"


def test_params_carry_template_param_as_json() -> None:
    """SendSms parameters: PhoneNumbers, SignName, TemplateCode, OutId = our id, TemplateParam = JSON."""
    gateway = alibaba_sms.DomesticSms(None, sign_name="Demo", template_code="SMS_1")  # type: ignore[arg-type]
    assert gateway.params(
        fallback_id="fb", to="8613900000000", template_params={"code": "12", "name": "李"}
    ) == {
        "PhoneNumbers": "8613900000000",
        "SignName": "Demo",
        "TemplateCode": "SMS_1",
        "OutId": "fb",
        "TemplateParam": '{"code":"12","name":"李"}',
    }
    assert "TemplateParam" not in gateway.params(fallback_id="fb", to="86139", template_params={})


def test_configured_mapping_fills_template_param() -> None:
    """FALLBACK_SMS_TEMPLATE_PARAM maps SendSms variables to {name} texts filled from TemplateParams."""
    gateway = alibaba_sms.DomesticSms(
        None,
        sign_name="D",
        template_code="SMS_1",  # type: ignore[arg-type]
        param_map={"code": "{1}", "who": "Dear {name}", "none": "{missing}"},
    )
    assert gateway.template_param({"1": "9876", "name": "Ann"}) == {
        "code": "9876",
        "who": "Dear Ann",
        "none": "",
    }


# ---- through the daemon ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_daemon(db_dsn: str, extra: Mapping[str, str]) -> AsyncIterator[app.Running]:
    settings = config.load(
        {
            "DATABASE_URL": db_dsn,
            "FALLBACK_HTTP_PORT": "0",
            "FALLBACK_API_TOKEN": TOKEN,
            "FALLBACK_RECEIPT_TOKEN": "receipt-token-0123456789",
            "FALLBACK_LOG_LEVEL": "warning",
            **extra,
        }
    )
    stop = asyncio.Event()
    started: asyncio.Future[app.Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(app.serve(settings, use_sandbox=True, started=started, stop=stop))
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield started.result()
    finally:
        stop.set()
        await task


async def send_and_wait(running: app.Running, to: str, done: set[str]) -> dict[str, Any]:
    """POST one message that will fall back; poll its view until the fallback is a state in `done`."""
    body = {
        "ChannelType": "whatsapp",
        "Type": "template",
        "TemplateCode": "tpl_1",
        "Language": "en",
        "From": "8613800000000",
        "To": to,
        "TemplateParams": {"code": "1234"},
        "FallBackContent": "your code is 1234",
        "FallBackDuration": 60,
    }
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.post(f"{running.url}/v1/messages", json=body) as resp:
            assert resp.status == 202
            mid = (await resp.json())["id"]
        for _ in range(300):
            view = await running.svc.get_message(uuid.UUID(mid))
            if view is not None and view["fallback_state"] in done:
                return view
            await asyncio.sleep(0.05)
    raise AssertionError(f"fallback of {mid} never reached {done}: {view}")


async def journal(running: app.Running) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{running.sandbox_url}/sandbox/journal") as resp:
        return dict(await resp.json())


@pytest.mark.parametrize(
    ("to", "final", "sms_status"),
    [
        ("8613900000008", "sms_delivered", "true"),  # chat send rejected (suffix 8); the SMS is delivered
        ("8613900000055", "sms_failed", "false"),
    ],  # chat Failed receipt (suffix 5); the SMS fails (suffix 55)
)
async def test_daemon_falls_back_through_send_sms(db_dsn: str, to: str, final: str, sms_status: str) -> None:
    """The fallback goes out via SendSms with OutId = our id; the domestic SmsReport sent back decides it."""
    async with running_daemon(db_dsn, {"FALLBACK_SMS_PROVIDER": "domestic", **DOMESTIC}) as running:
        view = await send_and_wait(running, to, {final, "sms_failed", "sms_delivered"})
        entry = (await journal(running))["sms"][view["id"]]
        receipt = await running.svc.db.fetchrow("SELECT source, status, raw FROM receipts WHERE kind = 'sms'")

    assert view["fallback_state"] == final
    assert (entry["api"], entry["to"], entry["sends"], entry["message_ids"]) == (
        "SendSms",
        to,
        1,
        [view["sms_id"]],
    )
    [sent] = [e for e in view["events"] if e["kind"] == "sms_sent"]
    assert sent["provider"] == "alibaba_domestic"
    assert receipt is not None
    assert (receipt["source"], receipt["status"]) == ("http", sms_status)
    assert (receipt["raw"]["out_id"], receipt["raw"]["biz_id"]) == (view["id"], view["sms_id"])


async def test_daemon_routes_by_prefix_and_names_the_provider(db_dsn: str) -> None:
    """With FALLBACK_SMS_ROUTES=86=domestic and default globe, each fallback uses its route and records it."""
    extra = {"FALLBACK_SMS_PROVIDER": "globe", "FALLBACK_SMS_ROUTES": "86=domestic", **DOMESTIC}
    async with running_daemon(db_dsn, extra) as running:
        china = await send_and_wait(running, "8613900000008", {"sms_delivered", "sms_failed"})
        singapore = await send_and_wait(running, "6591234568", {"sms_delivered", "sms_failed"})
        sms = (await journal(running))["sms"]

    assert (china["fallback_state"], singapore["fallback_state"]) == ("sms_delivered", "sms_delivered")
    assert (sms[china["id"]]["api"], sms[singapore["id"]]["api"]) == ("SendSms", "SendMessageToGlobe")
    providers = [[e["provider"] for e in v["events"] if e["kind"] == "sms_sent"] for v in (china, singapore)]
    assert providers == [["alibaba_domestic"], ["alibaba_globe"]]


async def test_domestic_without_sign_name_fails_start_up(db_dsn: str) -> None:
    """The domestic provider without FALLBACK_SMS_SIGN_NAME stops start-up with a ConfigError naming it."""
    with pytest.raises(errors.ConfigError) as info:
        async with running_daemon(db_dsn, {"FALLBACK_SMS_PROVIDER": "domestic"}):
            pass
    assert info.value.variable == "FALLBACK_SMS_SIGN_NAME"
