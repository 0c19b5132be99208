"""The sandbox over real HTTP, faithful where Alibaba's own SDKs found it was not (issue 13), each with the
request shape the SDK sends, written here by hand from the SDK's documented behaviour (no SDK imported):

- a required parameter left out is the gateway's HTTP 400 `Missing<Param>` ("<Param> is mandatory for this
  action."), while business failures stay HTTP 200 with a business code; the daemon's clients take the 400
  as permanent;
- MNS GetQueueAttributes (`GET /queues/{q}`) answers the `<Queue>` document the SDK's GetQueueAttrDecoder
  reads, signed like every MNS call, 404 QueueNotExist for an unknown queue;
- MNS PeekMessage / BatchPeekMessage (`?peekonly=true[&numOfMessages=n]`) consume nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from xml.etree import ElementTree

import aiohttp
import pytest
import yarl

from fallback_daemon import sandbox
from fallback_daemon.core import errors
from fallback_daemon.providers import acs, signing

AK, SK = "sandbox-ak", "sandbox-secret"
QUEUE = "own-receipts"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NS = "{http://mns.aliyuncs.com/doc/v1/}"
CHAT = {
    "ChannelType": "whatsapp",
    "Type": "template",
    "TemplateCode": "744c4b5c79c9432497a075bdfca3",
    "Language": "en",
    "From": "6580000000",
    "To": "6591230",
    "TaskId": "fid-1",
}
SMS = {"PhoneNumbers": "13800000001", "SignName": "Demo", "TemplateCode": "SMS_1", "OutId": "fid-2"}
GLOBE = {"To": "6591234567", "Message": "hi", "From": "Demo", "TaskId": "fid-3"}
VERSIONS = {"SendChatappMessage": "2020-06-06", "SendSms": "2017-05-25", "SendMessageToGlobe": "2018-05-01"}


@pytest.fixture
async def sb() -> AsyncIterator[sandbox.Sandbox]:
    box = await sandbox.serve(sandbox.SandboxConfig(mns_extra_queues=(QUEUE,), mns_visibility_timeout_s=60))
    yield box
    await box.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# ---- Missing<Param> ----------------------------------------------------------------------------------------


async def rpc(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, action: str, params: dict[str, str]
) -> Any:
    """POST / with an RPC V1-signed form, as tea-openapi sends it with signature_algorithm='v2' (the
    x-acs-action header included)."""
    signed = {
        "Action": action,
        "Version": VERSIONS[action],
        "Format": "JSON",
        "AccessKeyId": AK,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **params,
    }
    signed["Signature"] = signing.rpc_v1_signature(secret=SK, method="POST", params=signed)
    headers = {**FORM, "x-acs-action": action, "x-acs-version": VERSIONS[action]}
    async with session.post(sb.url, data=signing.canonical_query(signed), headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def without(params: dict[str, str], name: str, blank: bool) -> dict[str, str]:
    """The params with `name` left out (the SDK omits a None field) or sent empty."""
    out = {k: v for k, v in params.items() if k != name}
    if blank:
        out[name] = ""
    return out


@pytest.mark.parametrize("blank", [False, True], ids=["absent", "empty"])
@pytest.mark.parametrize(
    ("action", "params", "name"),
    [
        ("SendChatappMessage", CHAT, "ChannelType"),
        ("SendChatappMessage", CHAT, "Type"),
        ("SendChatappMessage", CHAT, "From"),
        ("SendChatappMessage", CHAT, "To"),
        ("SendSms", SMS, "PhoneNumbers"),
        ("SendSms", SMS, "SignName"),
        ("SendSms", SMS, "TemplateCode"),
        ("SendMessageToGlobe", GLOBE, "To"),
        ("SendMessageToGlobe", GLOBE, "Message"),
    ],
)
async def test_a_required_parameter_left_out_is_http_400_missing(
    sb: sandbox.Sandbox,
    session: aiohttp.ClientSession,
    action: str,
    params: dict[str, str],
    name: str,
    blank: bool,
) -> None:
    """HTTP 400, Code Missing<Param>, Message "<Param> is mandatory for this action." in the POP envelope;
    nothing sent, no id handed out (it was HTTP 200 with a business code)."""
    status, body = await rpc(session, sb, action, without(params, name, blank))
    assert status == 400
    assert (body["Code"], body["Message"]) == (f"Missing{name}", f"{name} is mandatory for this action.")
    assert body.keys() == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    stats = sb.stats()
    assert (stats["cams_ok"], stats["sms_sends"]) == (0, 0)


async def test_business_failures_stay_http_200_and_optional_from_is_optional(
    sb: sandbox.Sandbox, session: aiohttp.ClientSession
) -> None:
    """With every required parameter present, a wrong value is the product's answer: HTTP 200 with an
    isv.* / InvalidParameter.* code. SendMessageToGlobe's From is not required (SDK model)."""
    status, body = await rpc(session, sb, "SendSms", {**SMS, "PhoneNumbers": "12ab"})
    assert (status, body["Code"]) == (200, "isv.MOBILE_NUMBER_ILLEGAL")
    status, body = await rpc(session, sb, "SendChatappMessage", without(CHAT, "TemplateCode", blank=False))
    assert (status, body["Code"]) == (200, "InvalidParameter.TemplateCode")
    status, body = await rpc(session, sb, "SendMessageToGlobe", {**GLOBE, "To": "+6591234567"})
    assert (status, body["ResponseCode"]) == (200, "InvalidParameter")
    status, body = await rpc(session, sb, "SendMessageToGlobe", without(GLOBE, "From", blank=False))
    assert (status, body["ResponseCode"]) == (200, "OK")
    assert sb.journal()["chat"]["fid-1"]["rejected"] == 1


@pytest.mark.parametrize(
    ("action", "version", "params", "ok_field", "code"),
    [
        ("SendSms", "2017-05-25", without(SMS, "SignName", blank=False), "Code", "MissingSignName"),
        ("SendMessageToGlobe", "2018-05-01", without(GLOBE, "To", blank=False), "ResponseCode", "MissingTo"),
        ("SendChatappMessage", "2020-06-06", without(CHAT, "From", blank=False), "Code", "MissingFrom"),
    ],
)
async def test_the_daemon_client_takes_missing_as_permanent(
    sb: sandbox.Sandbox,
    session: aiohttp.ClientSession,
    action: str,
    version: str,
    params: dict[str, str],
    ok_field: str,
    code: str,
) -> None:
    """The daemon's ACS3 client maps the gateway's 400 Missing<Param> to a PermanentError (never retried)."""
    client = acs.AcsClient(
        session, endpoint=sb.url, version=version, access_key_id=AK, access_key_secret=SK, timeout_s=5
    )
    with pytest.raises(errors.PermanentError) as info:
        await client.call(action, params, ok_field=ok_field)
    assert (info.value.code, info.value.status) == (code, 400)
    assert not isinstance(info.value, errors.TransientError)


# ---- MNS, signed by hand as the SDK signs ------------------------------------------------------------------


def mns_headers(method: str, resource: str, body: bytes = b"", secret: str = SK) -> dict[str, str]:
    """The headers aliyun-mns-sdk's build_header sends: Date, x-mns-version, Content-Type and Content-MD5
    (base64 of the hex MD5) with a body, and `Authorization: MNS <ak>:<base64 HMAC-SHA1>` over
    VERB, Content-MD5, Content-Type, Date, the x-mns-* headers and the resource."""
    date = email.utils.formatdate(time.time(), usegmt=True)
    headers = {"Date": date, "x-mns-version": "2015-06-06"}
    md5 = content_type = ""
    if body:
        md5 = base64.b64encode(hashlib.md5(body).hexdigest().encode()).decode()  # noqa: S324 - protocol
        content_type = "text/xml;charset=UTF-8"
        headers.update({"Content-MD5": md5, "Content-Type": content_type})
    to_sign = f"{method}\n{md5}\n{content_type}\n{date}\nx-mns-version:2015-06-06\n{resource}"
    digest = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest()
    headers["Authorization"] = f"MNS {AK}:{base64.b64encode(digest).decode()}"
    return headers


def test_the_hand_signer_reproduces_the_documented_vector() -> None:
    """Alibaba's signing doc: GET /MyQueue at Thu, 09 Jul 2015 03:01:34 GMT → uwx3yeWoILzgmvesW0BQSgfM…"""
    to_sign = "GET\n\n\nThu, 09 Jul 2015 03:01:34 GMT\nx-mns-version:2015-06-06\n/MyQueue"
    digest = hmac.new(b"TestAccessSecret", to_sign.encode(), hashlib.sha1).digest()
    assert base64.b64encode(digest).decode().startswith("uwx3yeWoILzgmvesW0BQSgfM")


async def mns(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, method: str, resource: str, body: bytes = b""
) -> tuple[int, ElementTree.Element | None]:
    url = yarl.URL(f"{sb.url}{resource}", encoded=True)
    async with session.request(
        method, url, data=body or None, headers=mns_headers(method, resource, body)
    ) as r:
        text = await r.read()
        return r.status, parse(text) if text else None


def parse(text: bytes) -> ElementTree.Element:
    """The answer's XML (from the sandbox on loopback, which this test trusts)."""
    return ElementTree.fromstring(text)  # noqa: S314 - our own sandbox's answer, not untrusted input


def fields(element: ElementTree.Element) -> dict[str, str]:
    return {child.tag.removeprefix(NS): child.text or "" for child in element}


async def send(session: aiohttp.ClientSession, sb: sandbox.Sandbox, text: str, delay_s: int = 0) -> str:
    """SendMessage as the SDK's MessageEncoder writes it."""
    delay = f"<DelaySeconds>{delay_s}</DelaySeconds>" if delay_s else ""
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Message xmlns="http://mns.aliyuncs.com/doc/v1/">'
        f"<MessageBody>{text}</MessageBody>{delay}</Message>"
    ).encode()
    status, doc = await mns(session, sb, "POST", f"/queues/{QUEUE}/messages", body)
    assert status == 201 and doc is not None
    return fields(doc)["MessageId"]


QUEUE_FIELDS = {
    "QueueName",
    "CreateTime",
    "LastModifyTime",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "PollingWaitSeconds",
    "ActiveMessages",
    "InactiveMessages",
    "DelayMessages",
    "LoggingEnabled",
}


async def attributes(session: aiohttp.ClientSession, sb: sandbox.Sandbox) -> dict[str, str]:
    status, doc = await mns(session, sb, "GET", f"/queues/{QUEUE}")
    assert status == 200 and doc is not None
    assert doc.tag == f"{NS}Queue"
    return fields(doc)


async def test_get_queue_attributes_reports_the_queue_and_its_counts(
    sb: sandbox.Sandbox, session: aiohttp.ClientSession
) -> None:
    """GET /queues/{q}: every field GetQueueAttrDecoder requires, integers where the SDK int()s them, and
    the Active / Inactive / Delayed counts moving with sends and receives (it was a 404/405)."""
    before = int(time.time())
    empty = await attributes(session, sb)
    assert empty.keys() == QUEUE_FIELDS
    assert empty["QueueName"] == QUEUE
    assert empty["VisibilityTimeout"] == "60"
    assert (empty["MaximumMessageSize"], empty["MessageRetentionPeriod"]) == ("65536", "345600")
    assert (empty["DelaySeconds"], empty["PollingWaitSeconds"], empty["LoggingEnabled"]) == (
        "0",
        "0",
        "False",
    )
    assert int(empty["CreateTime"]) <= before + 1 and len(empty["CreateTime"]) == 10  # epoch seconds
    assert empty["LastModifyTime"] == empty["CreateTime"]
    assert [empty[k] for k in ("ActiveMessages", "InactiveMessages", "DelayMessages")] == ["0", "0", "0"]

    for text in ("a", "b"):
        await send(session, sb, text)
    await send(session, sb, "later", delay_s=600)
    status, _ = await mns(session, sb, "GET", f"/queues/{QUEUE}/messages")
    assert status == 200
    now = await attributes(session, sb)
    assert [now[k] for k in ("ActiveMessages", "InactiveMessages", "DelayMessages")] == ["1", "1", "1"]


async def test_get_queue_attributes_is_authenticated_and_knows_unknown_queues(
    sb: sandbox.Sandbox, session: aiohttp.ClientSession
) -> None:
    """An unknown queue is 404 QueueNotExist (the MNS <Error> body); a wrong signature is 403."""
    status, doc = await mns(session, sb, "GET", "/queues/nope")
    assert status == 404 and doc is not None
    error = fields(doc)
    assert error.keys() == {"Code", "Message", "RequestId", "HostId"}
    assert (error["Code"], error["Message"]) == ("QueueNotExist", "The queue name you provided is not exist.")
    resource = f"/queues/{QUEUE}"
    headers = mns_headers("GET", resource, secret="wrong")
    async with session.get(f"{sb.url}{resource}", headers=headers) as resp:
        assert resp.status == 403
        assert fields(parse(await resp.read()))["Code"] == "SignatureDoesNotMatch"


async def test_peek_consumes_nothing(sb: sandbox.Sandbox, session: aiohttp.ClientSession) -> None:
    """PeekMessage (`?peekonly=true`): the message without ReceiptHandle / NextVisibleTime, DequeueCount
    unchanged, still visible to the next peek and to a receive (it used to consume the message)."""
    mid = await send(session, sb, "cGVlaw==")
    for _ in range(2):
        status, doc = await mns(session, sb, "GET", f"/queues/{QUEUE}/messages?peekonly=true")
        assert status == 200 and doc is not None
        assert doc.tag == f"{NS}Message"
        seen = fields(doc)
        assert seen.keys() == {
            "MessageId",
            "MessageBodyMD5",
            "MessageBody",
            "EnqueueTime",
            "FirstDequeueTime",
            "DequeueCount",
            "Priority",
        }  # what PeekMessageDecoder requires; no receipt handle
        assert (seen["MessageId"], seen["MessageBody"], seen["DequeueCount"]) == (mid, "cGVlaw==", "0")
        assert seen["MessageBodyMD5"] == hashlib.md5(b"cGVlaw==").hexdigest().upper()  # noqa: S324
    assert (await attributes(session, sb))["ActiveMessages"] == "1"
    assert sb.stats()["mns_received"] == 0
    status, doc = await mns(session, sb, "GET", f"/queues/{QUEUE}/messages")
    assert status == 200 and doc is not None
    got = fields(doc)
    assert (got["MessageId"], got["DequeueCount"]) == (mid, "1")
    assert got["ReceiptHandle"]
    status, doc = await mns(session, sb, "GET", f"/queues/{QUEUE}/messages?peekonly=true")
    assert status == 404 and doc is not None  # the only message is in flight now
    assert fields(doc)["Code"] == "MessageNotExist"


async def test_batch_peek_honours_num_of_messages(
    sb: sandbox.Sandbox, session: aiohttp.ClientSession
) -> None:
    """BatchPeekMessage (`?peekonly=true&numOfMessages=n`, the SDK's order): up to n visible messages in
    <Messages>, in send order, none consumed; an in-flight message is not shown."""
    ids = [await send(session, sb, text) for text in ("1", "2", "3")]
    status, doc = await mns(session, sb, "GET", f"/queues/{QUEUE}/messages?peekonly=true&numOfMessages=2")
    assert status == 200 and doc is not None and doc.tag == f"{NS}Messages"
    assert [fields(m)["MessageId"] for m in doc] == ids[:2]
    status, doc = await mns(session, sb, "GET", f"/queues/{QUEUE}/messages?peekonly=true&numOfMessages=16")
    assert status == 200 and doc is not None
    assert [fields(m)["MessageId"] for m in doc] == ids
    assert all("ReceiptHandle" not in fields(m) for m in doc)
    status, doc = await mns(session, sb, "GET", f"/queues/{QUEUE}/messages?numOfMessages=1")
    assert status == 200 and doc is not None
    [received] = [fields(m)["MessageId"] for m in doc]
    assert received == ids[0]
    status, doc = await mns(session, sb, "GET", f"/queues/{QUEUE}/messages?peekonly=true&numOfMessages=16")
    assert status == 200 and doc is not None
    assert [fields(m)["MessageId"] for m in doc] == ids[1:]
    status, doc = await mns(session, sb, "GET", f"/queues/{QUEUE}/messages?peekonly=true&numOfMessages=17")
    assert status == 400 and doc is not None
    assert fields(doc)["Code"] == "InvalidArgument"
    counts = await attributes(session, sb)
    assert (counts["ActiveMessages"], counts["InactiveMessages"]) == ("2", "1")
