"""The SNS SMS gateway against moto over real HTTP (aiobotocore): what is published, and the daemon's fallback
leg ending at `sms_sent` (SNS has no per-message delivery receipt)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from moto.moto_api import recorder

from fallback_daemon import app, config
from fallback_daemon.core import errors
from fallback_daemon.providers import aws, sns

AWS_REGION = "us-east-1"
TOKEN = "test-api-token-0123456789"


@contextlib.asynccontextmanager
async def sns_client(url: str) -> AsyncIterator[Any]:
    async with contextlib.AsyncExitStack() as stack:
        yield await aws.open_client(
            stack,
            aws.new_session(),
            "sns",
            region=AWS_REGION,
            endpoint_url=url,
            config=aws.client_config(connect_timeout_s=5, read_timeout_s=10, attempts=1, pool=4),
        )


@pytest.fixture
async def recording(
    aws: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[aiohttp.ClientSession]:
    """moto's request recorder, writing into this test's temp dir, switched on for the test."""
    # moto reads MOTO_RECORDER_FILEPATH only when it is imported; point its one recorder at tmp_path instead.
    monkeypatch.setattr(recorder, "_location", str(tmp_path / "moto-recording.jsonl"))
    async with aiohttp.ClientSession(base_url=aws) as http:
        for step in ("reset-recording", "start-recording"):
            async with http.post(f"/moto-api/recorder/{step}") as resp:
                assert resp.status == 200
        yield http
        async with http.post("/moto-api/recorder/stop-recording") as resp:
            assert resp.status == 200


async def published(http: aiohttp.ClientSession) -> list[dict[str, str]]:
    """The SNS Publish requests moto received, as flat form parameters (what went over the wire)."""
    async with http.get("/moto-api/recorder/download-recording") as resp:
        lines = (await resp.text()).splitlines()
    out = []
    for line in lines:
        entry = json.loads(line)
        body = (
            base64.b64decode(entry["body"]).decode() if entry.get("body_encoded") else entry.get("body") or ""
        )
        params = dict(parse_qsl(body))
        if params.get("Action") == "Publish":
            out.append(params)
    return out


def attributes(params: dict[str, str]) -> dict[str, str]:
    """MessageAttributes.entry.N.Name / .Value.StringValue → {name: value}."""
    names = {
        k.split(".")[2]: v
        for k, v in params.items()
        if k.startswith("MessageAttributes.entry.") and k.endswith(".Name")
    }
    return {name: params[f"MessageAttributes.entry.{n}.Value.StringValue"] for n, name in names.items()}


async def moto_sms(http: aiohttp.ClientSession) -> list[dict[str, str]]:
    """The SMS moto's SNS backend recorded (phone_number, message, message_id)."""
    async with http.get("/moto-api/data.json") as resp:
        return list((await resp.json(content_type=None))["sns"]["SMS"])


async def test_publish_carries_number_text_and_fallback_id(
    recording: aiohttp.ClientSession, aws: str
) -> None:
    """Publish goes to the E.164 number with the text, Transactional type, sender id and our fallback id."""
    async with sns_client(aws) as client:
        gateway = sns.SnsSms(client, sender_id="Fallback")
        sms_id = await gateway.send(
            fallback_id="fb-1", to="6591234567", text="hello by sms", template_params={}
        )

    assert await moto_sms(recording) == [
        {"message": "hello by sms", "message_id": sms_id, "phone_number": "+6591234567"}
    ]
    [params] = await published(recording)
    assert attributes(params) == {
        "AWS.SNS.SMS.SMSType": "Transactional",
        "fallback_id": "fb-1",
        "AWS.SNS.SMS.SenderID": "Fallback",
    }


@pytest.mark.usefixtures("aws_credentials")
async def test_bad_number_and_empty_text_are_refused_before_sending() -> None:
    """A To that is not a phone number, or an empty text, is a PermanentError without any request."""
    gateway = sns.SnsSms(client=None)  # never reached
    with pytest.raises(errors.PermanentError):
        await gateway.send(fallback_id="fb", to="12ab", text="x", template_params={})
    with pytest.raises(errors.PermanentError):
        await gateway.send(fallback_id="fb", to="6591234567", text="", template_params={})


async def test_sns_refusal_is_permanent(aws: str) -> None:
    """SNS' InvalidParameter answer (a text over the 1600-byte SMS limit) is a PermanentError (no retry)."""
    async with sns_client(aws) as client:
        with pytest.raises(errors.PermanentError) as info:
            await sns.SnsSms(client).send(
                fallback_id="fb", to="6591234567", text="x" * 2000, template_params={}
            )
    assert (info.value.code, info.value.status) == ("InvalidParameter", 400)


@pytest.fixture
async def daemon(db_dsn: str, aws: str) -> AsyncIterator[app.Running]:
    """The daemon with the sandbox as Alibaba and SNS (on moto) as its only SMS provider."""
    settings = config.load(
        {
            "DATABASE_URL": db_dsn,
            "FALLBACK_HTTP_PORT": "0",
            "FALLBACK_API_TOKEN": TOKEN,
            "FALLBACK_RECEIPT_TOKEN": "receipt-token-0123456789",
            "FALLBACK_LOG_LEVEL": "warning",
            "FALLBACK_SMS_PROVIDER": "sns",
            "FALLBACK_SNS_SENDER_ID": "Fallback",
            "FALLBACK_AWS_REGION": AWS_REGION,
            "FALLBACK_AWS_ENDPOINT_URL": aws,
        }
    )
    stop = asyncio.Event()
    started: asyncio.Future[app.Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(app.serve(settings, use_sandbox=True, started=started, stop=stop))
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    yield started.result()
    stop.set()
    await task


async def test_daemon_fallback_goes_out_through_sns_and_ends_at_sms_sent(
    daemon: app.Running, recording: aiohttp.ClientSession
) -> None:
    """A rejected chat send fires the fallback through SNS: published with our id, recorded as sent by SNS."""
    body = {
        "ChannelType": "whatsapp",
        "Type": "message",
        "MessageType": "text",
        "From": "6580000000",
        "To": "6591234568",
        "Content": {"text": "hi"},
        "FallBackContent": "hi by sms",
        "FallBackDuration": 60,
    }
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.post(f"{daemon.url}/v1/messages", json=body) as resp:
            mid = (await resp.json())["id"]
        for _ in range(200):
            view = await daemon.svc.get_message(uuid.UUID(mid))
            if view is not None and view["fallback_state"] == "sms_sent":
                break
            await asyncio.sleep(0.05)

    assert view is not None
    assert (view["chat_state"], view["fallback_state"]) == ("send_failed", "sms_sent")
    [sms] = await moto_sms(recording)
    assert (sms["phone_number"], sms["message"], sms["message_id"]) == (
        "+6591234568",
        "hi by sms",
        view["sms_id"],
    )
    [params] = await published(recording)
    assert attributes(params)["fallback_id"] == mid
    [sent] = [e for e in view["events"] if e.get("sms_id")]
    assert sent["provider"] == "aws_sns"
    # SNS never reports delivery per message: no SMS receipt exists and the leg stays at sms_sent.
    assert await daemon.svc.db.fetchval("SELECT count(*) FROM receipts WHERE kind = 'sms'") == 0
