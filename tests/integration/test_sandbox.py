"""The sandbox over real HTTP: signed CAMS and SMS calls, Alibaba's refusals, and the receipts it pushes."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web

from fallback_daemon.providers import signing
from fallback_daemon.sandbox import Sandbox, SandboxConfig, serve

AK, SECRET = "sandbox-ak", "sandbox-secret"
VERSIONS = {"SendChatappMessage": "2020-06-06", "SendMessageToGlobe": "2018-05-01", "SendSms": "2017-05-25"}
FORM = "application/x-www-form-urlencoded"
CHAT_KEYS = {"Status", "MessageId", "TaskId", "From", "To", "Timestamp", "MsgFrameType", "Type"}
WAIT_S = 5.0


class Receiver:
    """A stand-in for the daemon's receipt endpoints: every push body lands in a queue per path."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[list[dict[str, Any]]]] = {
            "chatapp": asyncio.Queue(),
            "sms": asyncio.Queue(),
            "sms-domestic": asyncio.Queue(),
            "other": asyncio.Queue(),
        }
        self.fail_next = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"code": 1, "msg": "try later"}, status=500)
        self.queues[request.match_info["kind"]].put_nowait(await request.json())
        return web.json_response({"code": 0, "msg": "success"})

    async def reports(self, kind: str, count: int) -> list[dict[str, Any]]:
        """Wait until `count` reports arrived on `kind` (over one or more pushes) and return them."""
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT_S):
            while len(out) < count:
                push = await self.queues[kind].get()
                assert isinstance(push, list)
                assert 1 <= len(push) <= 100
                out.extend(push)
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{kind}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


MakeSandbox = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def make_sandbox(receiver: Receiver) -> AsyncIterator[MakeSandbox]:
    started: list[Sandbox] = []

    async def make(**overrides: Any) -> Sandbox:
        settings: dict[str, Any] = {
            "chatapp_callback_url": f"{receiver.url}/chatapp",
            "sms_callback_url": f"{receiver.url}/sms",
            "sms_domestic_callback_url": f"{receiver.url}/sms-domestic",
            "receipt_delay_ms": (0, 5),
            "push_backoff_s": 0.01,
        }
        settings.update(overrides)
        sandbox = await serve(SandboxConfig(**settings), "127.0.0.1", 0)
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        await sandbox.close()


@dataclasses.dataclass
class Answer:
    status: int
    body: dict[str, Any]


async def call(
    session: aiohttp.ClientSession,
    base_url: str,
    action: str,
    params: dict[str, str],
    *,
    in_query: bool = False,
    access_key: str = AK,
    secret: str = SECRET,
    nonce: str | None = None,
    date: str | None = None,
    sent_body: bytes | None = None,
) -> Answer:
    """One ACS3-signed RPC call, params in a form body (or in the query, as the SDK does)."""
    query = params if in_query else {}
    body = b"" if in_query else signing.canonical_query(params).encode()
    headers = {
        "host": base_url.split("//", 1)[1],
        "x-acs-action": action,
        "x-acs-version": VERSIONS[action],
        "x-acs-date": date or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    authorization = signing.acs3_authorization(
        access_key_id=access_key,
        secret=secret,
        method="POST",
        path="/",
        query=query,
        headers=headers,
        payload_hash=headers["x-acs-content-sha256"],
    )
    url = yarl.URL(f"{base_url}/?{signing.canonical_query(query)}" if query else f"{base_url}/", encoded=True)
    async with session.post(
        url,
        data=body if sent_body is None else sent_body,
        headers={**headers, "Authorization": authorization, "Content-Type": FORM},
    ) as resp:
        return Answer(resp.status, await resp.json())


def template(to: str, task_id: str | None = "task-1", **extra: str) -> dict[str, str]:
    params = {
        "ChannelType": "whatsapp",
        "Type": "template",
        "From": "8613100000001",
        "To": to,
        "TemplateCode": "744c4b5c79c9432497a075bdfca3",
        "Language": "en",
        "TemplateParams": '{"1":"Alice"}',
    }
    if task_id:
        params["TaskId"] = task_id
    params.update(extra)
    return params


async def control(session: aiohttp.ClientSession, sandbox: Sandbox, method: str, path: str, **kw: Any) -> Any:
    async with session.request(method, f"{sandbox.url}{path}", **kw) as resp:
        assert resp.status == 200
        return await resp.json()


def statuses(reports: list[dict[str, Any]]) -> list[str]:
    return sorted(r["Status"] for r in reports)


async def test_valid_send_answers_ok_and_pushes_receipts_echoing_task_id(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """A signed template send answers Code OK with a digit MessageId; its receipts follow in §2.3 shape."""
    sandbox = await make_sandbox()
    answer = await call(session, sandbox.url, "SendChatappMessage", template("8613900000000", "task-1"))
    assert answer.status == 200
    assert answer.body.keys() == {"RequestId", "Code", "Message", "MessageId"}
    assert (answer.body["Code"], answer.body["Message"]) == ("OK", "SUCCESS")
    assert re.fullmatch(r"\d{22}", answer.body["MessageId"])
    reports = await receiver.reports("chatapp", 3)
    assert statuses(reports) == ["Delivered", "Read", "Sent"]
    now_ms = dt.datetime.now(dt.UTC).timestamp() * 1000
    for report in reports:
        assert report.keys() >= CHAT_KEYS
        assert report["TaskId"] == "task-1"
        assert report["MessageId"] == answer.body["MessageId"]
        assert (report["MsgFrameType"], report["Type"]) == ("template", "TEMPLATE")
        assert (report["From"], report["To"]) == ("8613100000001", "8613900000000")
        assert isinstance(report["Timestamp"], int)
        assert abs(report["Timestamp"] - now_ms) < 60_000
        assert report["ConversationType"] == "utility"


async def test_params_in_the_query_string_as_the_sdk_sends_them(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """Params in the query, empty body (the SDK's way) verify; without TaskId receipts echo MessageId."""
    sandbox = await make_sandbox()
    params = {
        "ChannelType": "whatsapp",
        "Type": "message",
        "MessageType": "text",
        "From": "8613100000001",
        "To": "8613900000004",
        "Content": '{"text":"hello, world: *ok*"}',
    }
    answer = await call(session, sandbox.url, "SendChatappMessage", params, in_query=True)
    assert answer.body["Code"] == "OK"
    reports = await receiver.reports("chatapp", 2)
    assert statuses(reports) == ["Delivered", "Sent"]
    for report in reports:
        assert report["TaskId"] == answer.body["MessageId"]
        assert (report["MsgFrameType"], report["Type"], report["ConversationType"]) == (
            "message",
            "TEXT",
            "service",
        )


async def test_bad_signature_is_refused_with_the_servers_string_to_sign(
    make_sandbox: MakeSandbox, session: aiohttp.ClientSession
) -> None:
    """A request signed with the wrong secret gets 400 SignatureDoesNotMatch in the POP envelope."""
    sandbox = await make_sandbox()
    answer = await call(session, sandbox.url, "SendChatappMessage", template("8613900000000"), secret="wrong")
    assert answer.status == 400
    assert answer.body.keys() == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert answer.body["Code"] == "SignatureDoesNotMatch"
    assert "server string to sign is:ACS3-HMAC-SHA256\n" in answer.body["Message"]
    tampered = await call(
        session, sandbox.url, "SendChatappMessage", template("8613900000000"), sent_body=b"To=8613900000001"
    )
    assert (tampered.status, tampered.body["Code"]) == (400, "SignatureDoesNotMatch")
    stats = sandbox.stats()
    assert (stats["signature_failures"], stats["cams_ok"]) == (2, 0)


async def test_unknown_access_key_missing_authorization_and_stale_date(
    make_sandbox: MakeSandbox, session: aiohttp.ClientSession
) -> None:
    """Unknown AK: 404 InvalidAccessKeyId.NotFound; no Authorization: 400 IncompleteSignature; stale date."""
    sandbox = await make_sandbox()
    unknown = await call(session, sandbox.url, "SendChatappMessage", template("1"), access_key="LTAInobody")
    assert (unknown.status, unknown.body["Code"]) == (404, "InvalidAccessKeyId.NotFound")
    async with session.post(
        f"{sandbox.url}/", headers={"x-acs-action": "SendChatappMessage", "x-acs-version": "2020-06-06"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["Code"] == "IncompleteSignature"
    stale = await call(session, sandbox.url, "SendChatappMessage", template("1"), date="2020-01-01T00:00:00Z")
    assert (stale.status, stale.body["Code"]) == (400, "InvalidTimeStamp.Expired")


async def test_reused_nonce_is_refused(make_sandbox: MakeSandbox, session: aiohttp.ClientSession) -> None:
    """The same x-acs-signature-nonce works once; the replay gets 400 SignatureNonceUsed."""
    sandbox = await make_sandbox()
    first = await call(session, sandbox.url, "SendChatappMessage", template("8613900000006"), nonce="n-1")
    again = await call(session, sandbox.url, "SendChatappMessage", template("8613900000006"), nonce="n-1")
    assert first.body["Code"] == "OK"
    assert (again.status, again.body["Code"]) == (400, "SignatureNonceUsed")


async def test_unknown_action_and_wrong_version(
    make_sandbox: MakeSandbox, session: aiohttp.ClientSession
) -> None:
    """An unknown x-acs-action is 404 InvalidAction.NotFound; a wrong x-acs-version is 400 InvalidVersion."""
    sandbox = await make_sandbox()
    async with session.post(f"{sandbox.url}/", headers={"x-acs-action": "DeleteEverything"}) as resp:
        assert (resp.status, (await resp.json())["Code"]) == (404, "InvalidAction.NotFound")
    headers = {"x-acs-action": "SendSms", "x-acs-version": "2020-06-06"}
    async with session.post(f"{sandbox.url}/", headers=headers) as resp:
        assert (resp.status, (await resp.json())["Code"]) == (400, "InvalidVersion")


async def test_calls_beyond_qps_are_throttled(
    make_sandbox: MakeSandbox, session: aiohttp.ClientSession
) -> None:
    """With qps=5 and a frozen clock 5 of 8 calls pass, 3 get 400 Throttling.User; a second later, OK."""
    now = [100.0]
    sandbox = await make_sandbox(qps=5, clock=lambda: now[0])
    answers = await asyncio.gather(
        *(
            call(session, sandbox.url, "SendChatappMessage", template("8613900000006", "t-q"))
            for _ in range(8)
        )
    )
    throttled = [a for a in answers if a.status == 400]
    assert sum(a.body.get("Code") == "OK" for a in answers) == 5
    assert len(throttled) == 3
    assert throttled[0].body["Code"] == "Throttling.User"
    assert throttled[0].body["Message"] == "Request was denied due to user flow control."
    now[0] += 1.001
    later = await call(session, sandbox.url, "SendChatappMessage", template("8613900000006", "t-q"))
    assert later.body["Code"] == "OK"
    entry = sandbox.journal()["chat"]["t-q"]
    assert (entry["attempts"], entry["accepted"], entry["throttled"]) == (9, 6, 3)
    assert sandbox.stats()["throttled"] == 3


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"ChannelType": "sms"}, "InvalidParameter.ChannelType"),
        ({"Type": "broadcast"}, "InvalidParameter.Type"),
        ({"TemplateCode": ""}, "InvalidParameter.TemplateCode"),
        ({"Type": "message"}, "InvalidParameter.MessageType"),
        ({"TemplateParams": "{not json"}, "InvalidParameter.MessageInvalid"),
    ],
)
async def test_business_errors_are_http_200_with_a_code(
    make_sandbox: MakeSandbox, session: aiohttp.ClientSession, change: dict[str, str], code: str
) -> None:
    """Invalid business params answer HTTP 200 with Code != OK and no MessageId (a required one left out is
    the gateway's HTTP 400 Missing<Param>: test_sandbox_fidelity.py)."""
    sandbox = await make_sandbox()
    params = {k: v for k, v in {**template("8613900000000"), **change}.items() if v}
    answer = await call(session, sandbox.url, "SendChatappMessage", params)
    assert answer.status == 200
    assert answer.body["Code"] == code
    assert "MessageId" not in answer.body


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("8613900000001", ["Delivered", "Read", "Sent"]),
        ("8613900000003", ["Delivered", "Sent"]),
        ("8613900000005", ["Failed", "Sent"]),
        ("8613900000006", ["Sent"]),
    ],
)
async def test_suffix_outcomes_produce_their_receipts(
    make_sandbox: MakeSandbox,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    to: str,
    expected: list[str],
) -> None:
    """The last digit of To decides which receipts are pushed (read, delivered, failed, silent)."""
    sandbox = await make_sandbox()
    answer = await call(session, sandbox.url, "SendChatappMessage", template(to, "t-s"))
    assert answer.body["Code"] == "OK"
    reports = await receiver.reports("chatapp", len(expected))
    assert statuses(reports) == expected
    entry = sandbox.journal()["chat"]["t-s"]
    assert sorted(r["status"] for r in entry["reports"]) == expected
    failed = [r for r in reports if r["Status"] == "Failed"]
    for report in failed:
        assert report["ErrorCode"] == "131026"
        assert report["ErrorDescription"].startswith("131026:")


async def test_rejected_suffix_answers_phone_number_error_without_receipts(
    make_sandbox: MakeSandbox, session: aiohttp.ClientSession
) -> None:
    """A To ending in 8 answers InvalidParameter.PhoneNumberError (HTTP 200) and plans no receipts."""
    sandbox = await make_sandbox()
    answer = await call(session, sandbox.url, "SendChatappMessage", template("8613900000008", "t-r"))
    assert (answer.status, answer.body["Code"]) == (200, "InvalidParameter.PhoneNumberError")
    entry = sandbox.journal()["chat"]["t-r"]
    assert (entry["outcome"], entry["rejected"], entry["reports"]) == ("rejected", 1, [])


async def test_late_delivered_is_withheld_until_released(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """A To ending in 7 gets Sent now; Delivered arrives only after POST /sandbox/release-late."""
    sandbox = await make_sandbox()
    await call(session, sandbox.url, "SendChatappMessage", template("8613900000007", "t-late"))
    assert statuses(await receiver.reports("chatapp", 1)) == ["Sent"]
    journal = await control(session, sandbox, "GET", "/sandbox/journal")
    assert journal["withheld_late"] == 1
    assert [r["withheld"] for r in journal["chat"]["t-late"]["reports"]] == [False, True]
    assert receiver.queues["chatapp"].empty()
    assert await control(session, sandbox, "POST", "/sandbox/release-late") == {"released": 1}
    delivered = await receiver.reports("chatapp", 1)
    assert [(r["Status"], r["TaskId"]) for r in delivered] == [("Delivered", "t-late")]
    assert await control(session, sandbox, "POST", "/sandbox/release-late") == {"released": 0}


async def test_late_delivered_is_released_after_the_configured_delay(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """With late_delay_s set, the withheld Delivered goes out by itself."""
    sandbox = await make_sandbox(late_delay_s=0.05)
    await call(session, sandbox.url, "SendChatappMessage", template("8613900000007", "t-late2"))
    assert statuses(await receiver.reports("chatapp", 2)) == ["Delivered", "Sent"]
    assert sandbox.stats()["late_released"] == 1


async def test_early_delivered_arrives_before_the_send_response(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """A To ending in 9 has its Delivered receipt pushed before the send response is returned."""
    sandbox = await make_sandbox()
    answer = await call(session, sandbox.url, "SendChatappMessage", template("8613900000009", "t-early"))
    first_push = receiver.queues["chatapp"].get_nowait()  # already there when the response came back
    assert [(r["Status"], r["MessageId"]) for r in first_push] == [("Delivered", answer.body["MessageId"])]
    assert statuses(await receiver.reports("chatapp", 2)) == ["Read", "Sent"]


async def test_duplicates_push_every_report_twice(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """With duplicate_rate=1 each report is pushed twice and the journal marks the copies."""
    sandbox = await make_sandbox(duplicate_rate=1.0)
    await call(session, sandbox.url, "SendChatappMessage", template("8613900000003", "t-dup"))
    reports = await receiver.reports("chatapp", 4)
    assert statuses(reports) == ["Delivered", "Delivered", "Sent", "Sent"]
    logs = sandbox.journal()["chat"]["t-dup"]["reports"]
    assert sorted(r["duplicate"] for r in logs) == [False, False, True, True]


async def test_omitted_task_id_leaves_only_the_message_id(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """With omit_task_id_rate=1 the reports carry MessageId but no TaskId field."""
    sandbox = await make_sandbox(omit_task_id_rate=1.0)
    answer = await call(session, sandbox.url, "SendChatappMessage", template("8613900000003", "t-omit"))
    for report in await receiver.reports("chatapp", 2):
        assert "TaskId" not in report
        assert report["MessageId"] == answer.body["MessageId"]


async def test_failed_pushes_are_retried(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """A push answered with HTTP 500 is retried, and the report still arrives."""
    sandbox = await make_sandbox()
    receiver.fail_next = 1
    await call(session, sandbox.url, "SendChatappMessage", template("8613900000006", "t-retry"))
    assert statuses(await receiver.reports("chatapp", 1)) == ["Sent"]
    assert sandbox.stats()["push_failures"] == 1


async def test_callbacks_can_be_changed_at_run_time(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """Without a callback URL reports are recorded as failed; POST /sandbox/callbacks redirects pushes."""
    sandbox = await make_sandbox(chatapp_callback_url=None, push_retries=0)
    # The early Delivered is pushed before the response, so its fate is known when the call returns.
    await call(session, sandbox.url, "SendChatappMessage", template("8613900000009", "t-nourl"))
    [early] = [r for r in sandbox.journal()["chat"]["t-nourl"]["reports"] if r["early"]]
    assert (early["posted"], early["error"]) == (False, "no callback URL configured")
    changed = await control(
        session, sandbox, "POST", "/sandbox/callbacks", json={"chatapp": f"{receiver.url}/other"}
    )
    assert changed["chatapp"] == f"{receiver.url}/other"
    await call(session, sandbox.url, "SendChatappMessage", template("8613900000006", "t-url"))
    seen: list[str] = []
    async with asyncio.timeout(WAIT_S):
        while "t-url" not in seen:
            seen.extend(r["TaskId"] for r in await receiver.queues["other"].get())
    sandbox.set_callbacks(f"{receiver.url}/chatapp", None)
    assert (await control(session, sandbox, "GET", "/sandbox/callbacks"))["sms"] is None


async def test_send_message_to_globe_answers_and_pushes_the_international_report(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """SendMessageToGlobe answers ResponseCode OK with NumberDetail; its §4.4 report echoes TaskId."""
    sandbox = await make_sandbox()
    params = {"To": "6591234567", "Message": "Your code is 1234", "From": "Alibaba", "TaskId": "fb-1"}
    answer = await call(session, sandbox.url, "SendMessageToGlobe", params)
    assert answer.status == 200
    body = answer.body
    assert (body["ResponseCode"], body["ResponseDescription"], body["Segments"]) == ("OK", "OK", "1")
    assert (body["To"], body["From"], body["NumberDetail"]["Country"]) == (
        "6591234567",
        "Alibaba",
        "Singapore",
    )
    [report] = await receiver.reports("sms", 1)
    assert report.keys() == {
        "To",
        "SendDate",
        "ReceiveDate",
        "Status",
        "ErrorCode",
        "ErrorDescription",
        "TaskId",
        "SmsSize",
        "MessageId",
    }
    assert (report["Status"], report["TaskId"], report["MessageId"]) == ("1", "fb-1", body["MessageId"])
    date = r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0800"
    assert re.fullmatch(date, report["SendDate"])
    assert re.fullmatch(date, report["ReceiveDate"])


async def test_sms_to_a_number_ending_in_55_fails(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """An SMS to a number ending in 55 is accepted but its report has Status "2"."""
    sandbox = await make_sandbox()
    await call(
        session, sandbox.url, "SendMessageToGlobe", {"To": "6591234555", "Message": "hi", "TaskId": "fb-2"}
    )
    [report] = await receiver.reports("sms", 1)
    assert report["Status"] == "2"
    assert sandbox.journal()["sms"]["fb-2"]["outcome"] == "failed"


async def test_send_message_to_globe_validates_its_params(
    make_sandbox: MakeSandbox, session: aiohttp.ClientSession
) -> None:
    """Missing To or Message is the gateway's HTTP 400 Missing<Param>; a '+' in To answers HTTP 200 with
    ResponseCode InvalidParameter."""
    sandbox = await make_sandbox()
    for params, code in (({"Message": "hi"}, "MissingTo"), ({"To": "6591234567"}, "MissingMessage")):
        answer = await call(session, sandbox.url, "SendMessageToGlobe", params)
        assert (answer.status, answer.body["Code"]) == (400, code)
    answer = await call(session, sandbox.url, "SendMessageToGlobe", {"To": "+6591234567", "Message": "hi"})
    assert (answer.status, answer.body["ResponseCode"]) == (200, "InvalidParameter")
    assert sandbox.stats()["sms_sends"] == 0


async def test_send_sms_answers_biz_id_and_pushes_the_domestic_report(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """SendSms answers Code OK with a BizId; the domestic SmsReport echoes out_id and biz_id."""
    sandbox = await make_sandbox()
    params = {
        "PhoneNumbers": "13800000001",
        "SignName": "Demo",
        "TemplateCode": "SMS_1",
        "TemplateParam": '{"code":"1"}',
        "OutId": "fb-3",
    }
    answer = await call(session, sandbox.url, "SendSms", params)
    assert (answer.body["Code"], answer.body["Message"]) == ("OK", "OK")
    assert re.fullmatch(r"\d+\^0", answer.body["BizId"])
    [report] = await receiver.reports("sms-domestic", 1)
    assert report.keys() == {
        "phone_number",
        "send_time",
        "report_time",
        "success",
        "err_code",
        "err_msg",
        "sms_size",
        "biz_id",
        "out_id",
    }
    assert (report["success"], report["out_id"], report["biz_id"]) == (True, "fb-3", answer.body["BizId"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", report["send_time"])
    missing = await call(session, sandbox.url, "SendSms", {"PhoneNumbers": "13800000001"})
    assert (missing.status, missing.body["Code"]) == (400, "MissingSignName")


async def test_journal_counts_sends_per_reference_and_reset_clears_it(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """The journal counts chat sends per TaskId and SMS sends per TaskId, marks posted reports, and resets."""
    sandbox = await make_sandbox()
    for _ in range(2):
        assert (
            await call(session, sandbox.url, "SendChatappMessage", template("8613900000006", "m-1"))
        ).body["Code"] == "OK"
    await call(
        session, sandbox.url, "SendMessageToGlobe", {"To": "6591234567", "Message": "x", "TaskId": "fb-9"}
    )
    await receiver.reports("chatapp", 2)
    await receiver.reports("sms", 1)
    journal = await control(session, sandbox, "GET", "/sandbox/journal")
    chat = journal["chat"]["m-1"]
    assert (chat["attempts"], chat["accepted"], chat["outcome"]) == (2, 2, "silent")
    assert len(set(chat["message_ids"])) == 2
    assert journal["sms"]["fb-9"]["sends"] == 1
    stats = await control(session, sandbox, "GET", "/sandbox/stats")
    assert (stats["cams_calls"], stats["cams_ok"], stats["sms_sends"]) == (2, 2, 1)
    await control(session, sandbox, "POST", "/sandbox/reset")
    assert (await control(session, sandbox, "GET", "/sandbox/journal"))["chat"] == {}
    assert (await control(session, sandbox, "GET", "/sandbox/stats"))["cams_calls"] == 0


async def test_mix_mode_with_chaos_delivers_every_planned_report(
    make_sandbox: MakeSandbox, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """In mix mode with reordering and duplicates every planned report (late ones released) arrives."""
    sandbox = await make_sandbox(mode="mix", seed=3, reorder=True, duplicate_rate=0.3, omit_task_id_rate=0.2)
    answers = await asyncio.gather(
        *(
            call(session, sandbox.url, "SendChatappMessage", template(f"86139000{i:05d}", f"mx-{i}"))
            for i in range(40)
        )
    )
    assert all(a.status == 200 for a in answers)
    released = sandbox.release_late()
    journal = sandbox.journal()
    planned = sum(len(e["reports"]) for e in journal["chat"].values())
    assert released == sum(1 for e in journal["chat"].values() if e["outcome"] == "late")
    assert len({e["outcome"] for e in journal["chat"].values()}) >= 4
    reports = await receiver.reports("chatapp", planned)
    assert len(reports) == planned
