"""Provider receipt payloads (ChatAppStatus, SMS intl/domestic, MNS bodies) parse exactly or not at all."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from fallback_daemon.core import errors, model, receipts

# reference/alibaba.md §2.3, verbatim (re-wrapped between JSON tokens).
DOC_CHAT_PUSH = """[
  {"Status":"Failed",
   "ErrorDescription":"131026:Receiver is incapable of receiving this message(Message Undeliverable.)",
   "MsgFrameType":"template","TaskId":"202307030171*******9","From":"86131*******8",
   "Timestamp":1691043638000,"OriginPhoneNumber":"86130*******8","TemplateCode":"820561547132813184",
   "Type":"TEMPLATE","Language":"id","TemplateName":"wa_otp_v_0_0_3","To":"86138*******8",
   "ErrorCode":"131026","MessageId":"2023078469463703*******3"},
  {"Status":"Read","MsgFrameType":"message","Type":"INTERACTIVE","TaskId":"2023068473353098*******8",
   "From":"86131*******8","To":"86138*******8","Timestamp":1691132091000,"OriginPhoneNumber":"86131*******8",
   "MessageId":"2023038470553398*******8","ConversationId":"72222201111****","ConversationType":"service"}
]"""

# §2.4: the MNS message body and its base64 form.
MNS_JSON = (
    '{"MessageId":"2023078469463703000001","From":"8613100000008","To":"8613800000008",'
    '"Timestamp":1691043638000,"Status":"Delivered","StatusDescription":"Delivered",'
    '"MsgFrameType":"template",'
    '"Type":"TEMPLATE","TaskId":"task-0001","OriginPhoneNumber":"8613100000008",'
    '"TemplateCode":"820561547132813184","ConversationType":"utility","ConversationId":"722222011110000"}'
)
MNS_BASE64 = (
    "eyJNZXNzYWdlSWQiOiIyMDIzMDc4NDY5NDYzNzAzMDAwMDAxIiwiRnJvbSI6Ijg2MTMxMDAwMDAwMDgiLCJUbyI6Ijg2"
    "MTM4MDAwMDAwMDgiLCJUaW1lc3RhbXAiOjE2OTEwNDM2MzgwMDAsIlN0YXR1cyI6IkRlbGl2ZXJlZCIsIlN0YXR1c0Rl"
    "c2NyaXB0aW9uIjoiRGVsaXZlcmVkIiwiTXNnRnJhbWVUeXBlIjoidGVtcGxhdGUiLCJUeXBlIjoiVEVNUExBVEUiLCJU"
    "YXNrSWQiOiJ0YXNrLTAwMDEiLCJPcmlnaW5QaG9uZU51bWJlciI6Ijg2MTMxMDAwMDAwMDgiLCJUZW1wbGF0ZUNvZGUi"
    "OiI4MjA1NjE1NDcxMzI4MTMxODQiLCJDb252ZXJzYXRpb25UeXBlIjoidXRpbGl0eSIsIkNvbnZlcnNhdGlvbklkIjoi"
    "NzIyMjIyMDExMTEwMDAwIn0="
)

# §4.3 (domestic SendSms) and §4.4 (international SendMessageToGlobe), verbatim (re-wrapped).
DOC_SMS_DOMESTIC = """[{"phone_number":"1381111****","send_time":"2017-01-01 00:00:00",
  "report_time":"2017-01-01 00:00:00","success":true,
  "err_code":"DELIVERED","err_msg":"用户接收成功","sms_size":"1","biz_id":"12345********","out_id":"67890**"}]"""
DOC_SMS_INTL = """[{"To":"8521111****","SendDate":"Thu, 25 Nov 2021 10:25:00 +0800",
  "ReceiveDate":"Thu, 25 Nov 2021 10:25:33 +0800","Status":"1","ErrorCode":"success",
  "ErrorDescription":"success","TaskId":"67890","SmsSize":"2","MessageId":"123450000****"}]"""


def chat(**fields: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"MessageId": "m1", "Status": "Delivered", "Timestamp": 1691043638000}
    report.update({"TaskId": "t1", **fields})
    return {k: v for k, v in report.items() if v is not None}


def test_doc_example_parses_into_two_receipts() -> None:
    """The exact §2.3 doc push parses into two receipts with statuses, ms timestamps and TaskIds."""
    failed, read = receipts.parse_chatapp_reports(DOC_CHAT_PUSH.encode())
    assert failed.status is model.ReceiptStatus.FAILED
    assert failed.raw_status == "Failed"
    assert failed.message_id == "2023078469463703*******3"
    assert failed.task_id == "202307030171*******9"
    assert failed.error_code == "131026"
    assert failed.timestamp == dt.datetime(2023, 8, 3, 6, 20, 38, tzinfo=dt.UTC)
    assert failed.raw["Type"] == "TEMPLATE"
    assert read.status is model.ReceiptStatus.READ
    assert read.task_id == "2023068473353098*******8"
    assert read.error_code is None
    assert read.timestamp == dt.datetime.fromtimestamp(1691132091, dt.UTC)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("Sent", model.ReceiptStatus.SENT),
        ("sent", model.ReceiptStatus.SENT),
        ("DELIVERED", model.ReceiptStatus.DELIVERED),
        ("read", model.ReceiptStatus.READ),
        ("FAILED", model.ReceiptStatus.FAILED),
        ("Deleted", model.ReceiptStatus.OTHER),
        ("unsubscribe", model.ReceiptStatus.OTHER),
        ("subscribe", model.ReceiptStatus.OTHER),
    ],
)
def test_status_mapping_is_case_insensitive(raw: str, status: model.ReceiptStatus) -> None:
    """Known statuses map case-insensitively; others (Viber unsubscribe, Deleted) are OTHER with raw kept."""
    (receipt,) = receipts.parse_chatapp_reports(json.dumps([chat(Status=raw)]))
    assert receipt.status is status
    assert receipt.raw_status == raw


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1691043638000, dt.datetime(2023, 8, 3, 6, 20, 38, tzinfo=dt.UTC)),
        ("1691043638123", dt.datetime(2023, 8, 3, 6, 20, 38, 123000, tzinfo=dt.UTC)),
        (None, None),
    ],
)
def test_timestamp_is_unix_ms_or_absent(timestamp: object, expected: dt.datetime | None) -> None:
    """Timestamp is Unix milliseconds (number or digit string) as aware UTC; a missing one is None."""
    (receipt,) = receipts.parse_chatapp_reports([chat(Timestamp=timestamp)])
    assert receipt.timestamp == expected


def test_single_object_is_one_receipt() -> None:
    """A single JSON object (as MNS carries) is accepted as one report."""
    (receipt,) = receipts.parse_chatapp_reports(json.dumps(chat()))
    assert (receipt.message_id, receipt.task_id) == ("m1", "t1")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"\xff\xfe", "body"),
        ("42", "body"),
        ('"text"', "body"),
        ("[1, 2]", "[0]"),
        (json.dumps([chat(), chat(MessageId=None)]), "[1].MessageId"),
        (json.dumps([chat(), chat(MessageId="")]), "[1].MessageId"),
        (json.dumps([chat(MessageId=12)]), "[0].MessageId"),
        (json.dumps([chat(), chat(), chat(Status=None)]), "[2].Status"),
        (json.dumps([chat(Status=["Read"])]), "[0].Status"),
        (json.dumps([chat(Timestamp="yesterday")]), "[0].Timestamp"),
        (json.dumps([chat(Timestamp=True)]), "[0].Timestamp"),
        (json.dumps([chat(Timestamp=-5)]), "[0].Timestamp"),
        (json.dumps([chat(Timestamp=10**30)]), "[0].Timestamp"),
        (json.dumps([chat(TaskId={"a": 1})]), "[0].TaskId"),
        (json.dumps([chat(), "x"]), "[1]"),
        (json.dumps([chat(Extra="a\x00b")]), "[0]"),
        ("[" * 100000 + "]" * 100000, "body"),
        ('[{"MessageId":"m","Status":"Read","Timestamp":NaN}]', "body"),
    ],
)
def test_malformed_element_rejects_whole_batch(body: object, field: str) -> None:
    """Any malformed report rejects the whole push with a ValidationError naming index and field."""
    with pytest.raises(errors.ValidationError) as info:
        receipts.parse_chatapp_reports(body)
    assert info.value.field == field


def test_report_count_cap() -> None:
    """More than 1000 reports in one body is rejected."""
    receipts.parse_chatapp_reports([chat()] * 1000)
    with pytest.raises(errors.ValidationError) as info:
        receipts.parse_chatapp_reports([chat()] * 1001)
    assert info.value.field == "body"


def test_domestic_doc_example() -> None:
    """The §4.3 domestic SmsReport example parses: biz_id, out_id, success → delivered, err_code."""
    (receipt,) = receipts.parse_sms_domestic_reports(DOC_SMS_DOMESTIC)
    assert receipt.provider_id == "12345********"
    assert receipt.fallback_id == "67890**"
    assert receipt.status is model.SmsStatus.DELIVERED
    assert receipt.error_code == "DELIVERED"
    assert receipt.raw["err_msg"] == "用户接收成功"


def test_intl_doc_example() -> None:
    """The §4.4 international SMS example parses: MessageId, TaskId, Status "1" → delivered."""
    (receipt,) = receipts.parse_sms_intl_reports(DOC_SMS_INTL.encode())
    assert receipt.provider_id == "123450000****"
    assert receipt.fallback_id == "67890"
    assert receipt.status is model.SmsStatus.DELIVERED
    assert receipt.raw_status == "1"
    assert receipt.error_code == "success"


@pytest.mark.parametrize(
    ("status", "expected"),
    [("1", model.SmsStatus.DELIVERED), ("2", model.SmsStatus.FAILED), ("6", model.SmsStatus.FAILED),
     ("3", model.SmsStatus.PENDING), (1, model.SmsStatus.DELIVERED)],
)  # fmt: skip
def test_intl_status_mapping(status: object, expected: model.SmsStatus) -> None:
    """International Status "1" is delivered, "2"/"6" failed, anything else pending."""
    (receipt,) = receipts.parse_sms_intl_reports([{"MessageId": "p1", "Status": status}])
    assert receipt.status is expected
    assert receipt.fallback_id is None


@pytest.mark.parametrize(
    ("success", "expected"), [(True, model.SmsStatus.DELIVERED), (False, model.SmsStatus.FAILED)]
)
def test_domestic_success_flag(success: bool, expected: model.SmsStatus) -> None:
    """Domestic success true is delivered and false is failed."""
    (receipt,) = receipts.parse_sms_domestic_reports([{"biz_id": "b1", "success": success, "err_code": "E1"}])
    assert receipt.status is expected
    assert receipt.error_code == "E1"


@pytest.mark.parametrize(
    ("parse", "body", "field"),
    [
        (receipts.parse_sms_domestic_reports, [{"biz_id": "b", "success": "true"}], "[0].success"),
        (receipts.parse_sms_domestic_reports, [{"success": True}], "[0].biz_id"),
        (receipts.parse_sms_intl_reports, [{"Status": "1"}], "[0].MessageId"),
        (receipts.parse_sms_intl_reports, [{"MessageId": "m"}], "[0].Status"),
        (receipts.parse_sms_reports, [{"biz_id": "b", "success": True}, {"To": "1"}], "[1]"),
    ],
)
def test_sms_malformed_rejected(parse: Any, body: object, field: str) -> None:
    """A malformed SMS report is a ValidationError naming index and field."""
    with pytest.raises(errors.ValidationError) as info:
        parse(body)
    assert info.value.field == field


def test_sms_reports_detects_shape_per_element() -> None:
    """One body mixing domestic and international reports parses each by its own shape."""
    mixed = json.loads(DOC_SMS_DOMESTIC) + json.loads(DOC_SMS_INTL)
    domestic, intl = receipts.parse_sms_reports(json.dumps(mixed))
    assert (domestic.provider_id, domestic.fallback_id) == ("12345********", "67890**")
    assert (intl.provider_id, intl.fallback_id) == ("123450000****", "67890")


def test_mns_base64_example_decodes() -> None:
    """The §2.4 base64 MNS body decodes to the documented JSON and parses as a Delivered receipt."""
    decoded = receipts.decode_mns_body(MNS_BASE64)
    assert decoded == json.loads(MNS_JSON)
    (receipt,) = receipts.parse_chatapp_reports(decoded)
    assert receipt.status is model.ReceiptStatus.DELIVERED
    assert receipt.task_id == "task-0001"


@pytest.mark.parametrize(
    "text",
    [MNS_JSON, "  " + MNS_JSON + "\n", MNS_JSON.encode(), "\n".join([MNS_BASE64[:76], MNS_BASE64[76:]])],
)
def test_mns_raw_json_fallback(text: str | bytes) -> None:
    """Raw JSON (and line-wrapped base64) bodies decode too."""
    assert receipts.decode_mns_body(text) == json.loads(MNS_JSON)


@pytest.mark.parametrize("text", ["", "not json at all", base64.b64encode(b"not json").decode(), b"\xff"])
def test_mns_undecodable_body(text: str | bytes) -> None:
    """A MessageBody that is neither base64 JSON nor JSON is a ValidationError naming MessageBody."""
    with pytest.raises(errors.ValidationError) as info:
        receipts.decode_mns_body(text)
    assert info.value.field == "MessageBody"
