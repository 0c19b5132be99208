"""The sandbox's query APIs over real HTTP with signed calls: ListChatappMessage, QuerySendDetails and
QueryMessage answer from what was really accepted, with the documented parameters, paging, field names and
errors; the fault knobs; and the records surviving a sandbox restart."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from fallback_daemon import sandbox
from fallback_daemon.core import errors
from fallback_daemon.providers import acs, alibaba_sms, cams

# Field names of the SDK models (alibabacloud-python-sdk: ListChatappMessageResponseBodyData,
# QuerySendDetailsResponseBodySmsSendDetailDTOsSmsSendDetailDTO, QueryMessageResponseBody).
CHAT_ROW_FIELDS = {
    "BusinessNumber", "ChannelType", "ClientAcceptStatusName", "ClientReadStatus", "ClientReadStatusName",
    "ConversationId", "EventAction", "EventActionName", "FailBackContent", "FailBackFlag", "FailReason",
    "LanguageCode", "Message", "MessageId", "MessageSource", "MessageStatus", "MessageStatusName",
    "MessageType", "MessageTypeName", "Month", "SendTime", "TemplateCode", "TemplateName", "Type",
    "UniqueMessageId", "UserNumber",
}  # fmt: skip
DETAIL_FIELDS = {
    "Content",
    "ErrCode",
    "OutId",
    "PhoneNum",
    "ReceiveDate",
    "SendDate",
    "SendStatus",
    "TemplateCode",
}
QUERY_MESSAGE_FIELDS = {
    "ErrorCode", "ErrorDescription", "Message", "MessageId", "NumberDetail", "ReceiveDate", "RequestId",
    "ResponseCode", "ResponseDescription", "SendDate", "Status", "To",
}  # fmt: skip
SEND = {
    "ChannelType": "whatsapp",
    "Type": "template",
    "TemplateCode": "tpl-1",
    "Language": "en",
    "From": "6580000001",
    "To": "6591000100",
    "CustSpaceId": "cams-sandbox",
}
LIST = {
    "ChannelType": "whatsapp",
    "CustSpaceId": "cams-sandbox",
    "BusinessNumber": "6580000001",
    "Page": '{"Index":1,"Size":10}',
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sb() -> AsyncIterator[sandbox.Sandbox]:
    box = await sandbox.serve(sandbox.SandboxConfig())
    yield box
    await box.close()


def client(session: aiohttp.ClientSession, url: str, version: str = cams.VERSION) -> acs.AcsClient:
    return acs.AcsClient(
        session,
        endpoint=url,
        version=version,
        access_key_id="sandbox-ak",
        access_key_secret="sandbox-secret",
        timeout_s=5.0,
    )


async def test_list_returns_sent_messages_newest_first_with_sdk_fields(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox
) -> None:
    """Two accepted sends come back newest first, paged by Page.Index/Size, with the SDK's field names."""
    c = client(session, sb.url)
    first = (await c.call("SendChatappMessage", {**SEND, "TaskId": "a"}))["MessageId"]
    second = (await c.call("SendChatappMessage", {**SEND, "TaskId": "b"}))["MessageId"]
    body = await c.call("ListChatappMessage", {**LIST, "UserNumber": SEND["To"]})
    assert (body["Success"], [r["MessageId"] for r in body["Data"]]) == (True, [second, first])
    row = body["Data"][0]
    assert set(row) <= CHAT_ROW_FIELDS
    assert (row["UserNumber"], row["TemplateCode"], row["EventAction"], row["Type"]) == (
        SEND["To"], "tpl-1", "DOWN", "template",
    )  # fmt: skip
    assert dt.datetime.fromisoformat(row["SendTime"]).tzinfo is not None
    page2 = await c.call("ListChatappMessage", {**LIST, "Page": '{"Index":2,"Size":1}'})
    assert [r["MessageId"] for r in page2["Data"]] == [first]
    later = int((dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).timestamp() * 1000)
    assert (await c.call("ListChatappMessage", {**LIST, "StartTime": str(later)}))["Data"] == []
    assert (await c.call("ListChatappMessage", {**LIST, "EventAction": "UP"}))["Data"] == []


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"BusinessNumber": ""}, "MissingBusinessNumber", "BusinessNumber"),
        ({"CustSpaceId": ""}, "MissingCustSpaceId", "CustSpaceId"),
        ({"Page": ""}, "MissingPage", "Page"),
        ({"Page": "1"}, "InvalidParameter", "Page"),
        ({"Page": '{"Index":0,"Size":10}'}, "InvalidParameter", "Page"),
        ({"Page": '{"Index":1,"Size":1000}'}, "InvalidParameter", "Page"),
        ({"ChannelType": "messenger"}, "InvalidParameter", "ChannelType"),
        ({"StartTime": "yesterday"}, "InvalidParameter", "StartTime"),
        ({"EventAction": "SIDEWAYS"}, "InvalidParameter", "EventAction"),
    ],
)
async def test_list_bad_parameters_are_400_naming_the_field(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, change: dict[str, str], code: str, field: str
) -> None:
    """A missing or malformed ListChatappMessage parameter is a 4xx POP error that names it."""
    params = {k: v for k, v in {**LIST, **change}.items() if v}
    with pytest.raises(errors.PermanentError) as info:
        await client(session, sb.url).call("ListChatappMessage", params)
    assert (info.value.code, info.value.status) == (code, 400)
    assert field in str(info.value)


async def test_query_send_details_pages_and_filters(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox
) -> None:
    """QuerySendDetails: TotalCount (a string), newest first, PageSize/CurrentPage, OutId, BizId filter."""
    c = client(session, sb.url, alibaba_sms.DOMESTIC_VERSION)
    base = {"PhoneNumbers": "8613900000100", "SignName": "Demo", "TemplateCode": "SMS_1"}
    biz = [(await c.call("SendSms", {**base, "OutId": f"o{i}"}))["BizId"] for i in range(3)]
    today = dt.datetime.now(alibaba_sms.CHINA).strftime("%Y%m%d")
    ask = {"PhoneNumber": "8613900000100", "SendDate": today, "PageSize": "2", "CurrentPage": "1"}
    one = await c.call("QuerySendDetails", ask)
    rows = one["SmsSendDetailDTOs"]["SmsSendDetailDTO"]
    assert (one["TotalCount"], [r["OutId"] for r in rows]) == ("3", ["o2", "o1"])
    assert set(rows[0]) <= DETAIL_FIELDS
    assert (rows[0]["SendStatus"], rows[0]["ErrCode"], rows[0]["TemplateCode"]) == (3, "DELIVERED", "SMS_1")
    two = await c.call("QuerySendDetails", {**ask, "CurrentPage": "2"})
    assert [r["OutId"] for r in two["SmsSendDetailDTOs"]["SmsSendDetailDTO"]] == ["o0"]
    only = await c.call("QuerySendDetails", {**ask, "BizId": biz[1]})
    assert (only["TotalCount"], only["SmsSendDetailDTOs"]["SmsSendDetailDTO"][0]["OutId"]) == ("1", "o1")


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"PhoneNumber": ""}, "MissingPhoneNumber", "PhoneNumber"),
        ({"SendDate": ""}, "MissingSendDate", "SendDate"),
        ({"SendDate": "2026-01-01"}, "InvalidParameter", "SendDate"),
        ({"SendDate": "20000101"}, "InvalidParameter", "SendDate"),
        ({"PageSize": "51"}, "InvalidParameter", "PageSize"),
        ({"CurrentPage": "0"}, "InvalidParameter", "CurrentPage"),
    ],
)
async def test_query_send_details_bad_parameters_are_400_naming_the_field(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox, change: dict[str, str], code: str, field: str
) -> None:
    """A missing or malformed QuerySendDetails parameter is a 4xx POP error that names it."""
    today = dt.datetime.now(alibaba_sms.CHINA).strftime("%Y%m%d")
    ask = {"PhoneNumber": "8613900000100", "SendDate": today, "PageSize": "10", "CurrentPage": "1", **change}
    with pytest.raises(errors.PermanentError) as info:
        await client(session, sb.url, alibaba_sms.DOMESTIC_VERSION).call(
            "QuerySendDetails", {k: v for k, v in ask.items() if v}
        )
    assert (info.value.code, info.value.status) == (code, 400)
    assert field in str(info.value)


async def test_query_message_answers_a_globe_send(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox
) -> None:
    """QueryMessage returns a SendMessageToGlobe message by MessageId; an unknown id and none are errors."""
    c = client(session, sb.url, alibaba_sms.VERSION)
    sent = await c.call("SendMessageToGlobe", {"To": "6591234500", "Message": "hi"}, ok_field="ResponseCode")
    got = await c.call("QueryMessage", {"MessageId": sent["MessageId"]}, ok_field="ResponseCode")
    assert set(got) <= QUERY_MESSAGE_FIELDS
    assert (got["To"], got["Message"], got["Status"]) == ("6591234500", "hi", "1")
    with pytest.raises(errors.PermanentError) as unknown:
        await c.call("QueryMessage", {"MessageId": "42"}, ok_field="ResponseCode")
    assert unknown.value.code == "InvalidMessageId"
    with pytest.raises(errors.PermanentError) as missing:
        await c.call("QueryMessage", {}, ok_field="ResponseCode")
    assert (missing.value.code, missing.value.status) == ("MissingMessageId", 400)


async def test_queries_check_signatures(session: aiohttp.ClientSession, sb: sandbox.Sandbox) -> None:
    """A query signed with a wrong secret is refused like any other action."""
    wrong = acs.AcsClient(
        session, endpoint=sb.url, version=cams.VERSION, access_key_id="sandbox-ak", access_key_secret="nope",
        timeout_s=5.0,
    )  # fmt: skip
    with pytest.raises(errors.PermanentError) as info:
        await wrong.call("ListChatappMessage", LIST)
    assert info.value.code == "SignatureDoesNotMatch"
    assert sb.state.ledger.queries == 0


async def test_faults_control_validates_and_applies(
    session: aiohttp.ClientSession, sb: sandbox.Sandbox
) -> None:
    """POST /sandbox/faults refuses bad input naming the field (changing nothing) and applies good input."""
    url = f"{sb.url}/sandbox/faults"
    for bad, field in (
        ({"lose_answers": {"Nope": 1}}, "lose_answers"),
        ({"lose_answers": {"SendSms": -1}}, "lose_answers"),
        ({"fail_queries": "2"}, "fail_queries"),
    ):
        async with session.post(url, json=bad) as resp:
            assert resp.status == 400
            assert field in (await resp.json())["error"]
    async with session.get(url) as resp:
        assert (await resp.json())["fail_queries"] == 0
    async with session.post(url, json={"lose_answers": {"SendSms": 2}, "fail_queries": 1}) as resp:
        state = await resp.json()
    assert (state["lose_answers"], state["fail_queries"]) == ({"SendSms": 2}, 1)
    with pytest.raises(errors.Throttled) as info:  # 503 ServiceUnavailable is a throttling-class code
        await client(session, sb.url).call("ListChatappMessage", LIST)
    assert info.value.code == "ServiceUnavailable"


async def test_records_survive_a_sandbox_restart(
    session: aiohttp.ClientSession, tmp_path: pathlib.Path
) -> None:
    """With a journal file, what was sent is still listed after the sandbox restarts (the lookup's truth)."""
    config = sandbox.SandboxConfig(journal_path=str(tmp_path / "journal.jsonl"))
    first = await sandbox.serve(config)
    try:
        sent = await client(session, first.url).call("SendChatappMessage", {**SEND, "TaskId": "kept"})
    finally:
        await first.close()
    lines = (tmp_path / "journal.jsonl.ledger").read_text().splitlines()
    assert [json.loads(line)["record"]["message_id"] for line in lines] == [sent["MessageId"]]
    second = await sandbox.serve(config)
    try:
        body = await client(session, second.url).call("ListChatappMessage", LIST)
    finally:
        await second.close()
    assert [r["MessageId"] for r in body["Data"]] == [sent["MessageId"]]


async def test_a_send_is_in_the_ledger_before_the_journal_counts_it(
    session: aiohttp.ClientSession, tmp_path: pathlib.Path
) -> None:
    """The queryable record is written before the journal counts the send (chaos, session 5: a kill
    between the two once left a send the journal counted but ListChatappMessage denied: it was sent twice)."""
    box = await sandbox.serve(sandbox.SandboxConfig(journal_path=str(tmp_path / "journal.jsonl")))
    order: list[str] = []
    state = box.state
    ledger_add, journal_write = state.ledger.add, state.journal._write

    def add(record: Any) -> None:
        order.append(f"ledger {type(record).__name__}")
        ledger_add(record)

    def write(entry: Any) -> None:
        counted = getattr(entry, "accepted", None) or getattr(entry, "sends", None)
        order.append(f"journal {type(entry).__name__} {'counted' if counted else 'opened'}")
        journal_write(entry)

    state.ledger.add = add  # type: ignore[method-assign]
    state.journal._write = write  # type: ignore[method-assign]
    try:
        await client(session, box.url).call("SendChatappMessage", {**SEND, "TaskId": "order"})
        await client(session, box.url, alibaba_sms.VERSION).call(
            "SendMessageToGlobe",
            {"To": "6591234500", "Message": "hi", "TaskId": "sms"},
            ok_field="ResponseCode",
        )
    finally:
        await box.close()
    first_counted = {kind: order.index(f"journal {kind} counted") for kind in ("ChatEntry", "SmsEntry")}
    assert order.index("ledger ChatRecord") < first_counted["ChatEntry"]
    assert order.index("ledger SmsRecord") < first_counted["SmsEntry"]
