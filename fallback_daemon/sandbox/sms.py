"""Dysmsapi `SendMessageToGlobe` (2018-05-01, international) and `SendSms` (2017-05-25, domestic), and
their queries `QueryMessage` (by MessageId) and `QuerySendDetails` (by number and date), answered from
the sends the sandbox really accepted (its ledger).

Called by the app's dispatcher after the signature was verified. Each accepted send is journalled under its
reference (TaskId / OutId, else the provider id) and gets one delivery report per number.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from fallback_daemon.sandbox import ledger, replies, world
from fallback_daemon.sandbox import state as state_mod

GLOBE_ACTION, GLOBE_VERSION = "SendMessageToGlobe", "2018-05-01"
SMS_ACTION, SMS_VERSION = "SendSms", "2017-05-25"
QUERY_MESSAGE_ACTION = "QueryMessage"  # 2018-05-01
QUERY_SEND_DETAILS_ACTION = "QuerySendDetails"  # 2017-05-25
MAX_DETAILS_PAGE_SIZE = 50
DETAILS_DAYS = 30  # QuerySendDetails: "records from the past 30 days"
CHINA_FORMAT = "%Y-%m-%d %H:%M:%S"
DIGITS = re.compile(r"[0-9]{5,20}")
SENDER_ID = re.compile(r"[A-Za-z0-9 ]{1,11}|[0-9]{1,15}")
MAX_PHONE_NUMBERS = 1000
# Required by the API metadata (SDK models: "This parameter is required."): left out, the gateway answers
# HTTP 400 Missing<Name>. SendMessageToGlobe's From is optional (the account's default sender applies).
GLOBE_REQUIRED = ("To", "Message")
SMS_REQUIRED = ("PhoneNumbers", "SignName", "TemplateCode")


def _globe_problem(params: Mapping[str, str]) -> str | None:
    """The business error of a call that has its GLOBE_REQUIRED parameters."""
    if not DIGITS.fullmatch(params["To"]):
        return "To must be the number with its country code, digits only, without +."
    sender = params.get("From")
    if sender and not SENDER_ID.fullmatch(sender):
        return "From must be 1-11 letters/digits or 1-15 digits."
    if len(params.get("TaskId", "")) > 255:
        return "TaskId must be at most 255 characters."
    return None


async def send_message_to_globe(
    state: state_mod.SandboxState, *, access_key: str, params: Mapping[str, str], request: web.Request
) -> web.Response:
    del access_key  # SMS calls are not rate limited by the sandbox
    stats = state.journal.stats
    stats.sms_calls += 1
    task_id = params.get("TaskId") or None
    to = params.get("To", "")
    absent = replies.first_missing(params, GLOBE_REQUIRED)
    problem = None if absent else _globe_problem(params)
    if absent or problem:
        stats.sms_rejected += 1
        if task_id:
            state.journal.sms_entry(task_id, GLOBE_ACTION, to).rejected += 1
    if absent:
        return replies.missing(request, absent, product="dysmsapi")
    if problem:
        return replies.reply(
            {
                "RequestId": replies.request_id(),
                "ResponseCode": "InvalidParameter",
                "ResponseDescription": problem,
            }
        )
    text = params["Message"]
    message_id = state.ids.sms_message_id()
    failed = state.world.sms_fails(to)
    parts = world.segments(text)
    sent_at = dt.datetime.now(dt.UTC)
    state.ledger.add(  # before the journal: see send_chatapp_message in cams.py
        ledger.SmsRecord(
            api=GLOBE_ACTION,
            provider_id=message_id,
            ref=task_id or "",
            phone=to,
            sender=params.get("From", ""),
            text=text,
            template_code="",
            segments=parts,
            failed=failed,
            sent_at=sent_at,
        )
    )
    entry = state.journal.sms_entry(task_id or message_id, GLOBE_ACTION, to)
    entry.sends += 1
    entry.outcome = "failed" if failed else "delivered"
    entry.message_ids.append(message_id)
    stats.sms_sends += 1

    def build(received_at: dt.datetime) -> dict[str, Any]:
        return world.intl_sms_report(
            to=to,
            message_id=message_id,
            task_id=task_id,
            segments=parts,
            failed=failed,
            sent_at=sent_at,
            received_at=received_at,
        )

    state.producer.sms_accepted(
        domestic=False, entry=entry, message_id=message_id, status=entry.outcome, build=build
    )
    if state.ledger.take_lost_answer(GLOBE_ACTION):
        await state.hold_answer(request)
    return replies.reply(
        {
            "RequestId": replies.request_id(),
            "ResponseCode": "OK",
            "ResponseDescription": "OK",
            "MessageId": message_id,
            "Segments": str(parts),
            "From": params.get("From", ""),
            "To": to,
            "NumberDetail": world.number_detail(to),
        }
    )


def _sms_problem(params: Mapping[str, str], phones: list[str]) -> tuple[str, str] | None:
    """The business error (isv.* code, HTTP 200) of a call that has its SMS_REQUIRED parameters."""
    if not phones or len(phones) > MAX_PHONE_NUMBERS or not all(DIGITS.fullmatch(p) for p in phones):
        return "isv.MOBILE_NUMBER_ILLEGAL", "PhoneNumbers must be 1..1000 comma-separated numbers (digits)."
    if "TemplateParam" in params:
        try:
            value = json.loads(params["TemplateParam"])
        except ValueError:
            value = None
        if not isinstance(value, dict):
            return "isv.INVALID_JSON_PARAM", "TemplateParam must be a JSON object."
    return None


async def send_sms(
    state: state_mod.SandboxState, *, access_key: str, params: Mapping[str, str], request: web.Request
) -> web.Response:
    del access_key
    stats = state.journal.stats
    stats.sms_calls += 1
    out_id = params.get("OutId") or None
    phones = [p.strip() for p in params.get("PhoneNumbers", "").split(",") if p.strip()]
    absent = replies.first_missing(params, SMS_REQUIRED)
    problem = None if absent else _sms_problem(params, phones)
    if absent or problem:
        stats.sms_rejected += 1
        if out_id:
            state.journal.sms_entry(out_id, SMS_ACTION, ",".join(phones)).rejected += 1
    if absent:
        return replies.missing(request, absent, product="dysmsapi")
    if problem:
        code, message = problem
        return replies.reply({"RequestId": replies.request_id(), "Code": code, "Message": message})
    biz_id = state.ids.biz_id()
    sent_at = dt.datetime.now(dt.UTC)
    fails = {phone: state.world.sms_fails(phone) for phone in phones}
    for phone in phones:  # the ledger before the journal: see send_chatapp_message in cams.py
        state.ledger.add(
            ledger.SmsRecord(
                api=SMS_ACTION,
                provider_id=biz_id,
                ref=out_id or "",
                phone=phone,
                sender=params["SignName"],
                text=params.get("TemplateParam", ""),
                template_code=params["TemplateCode"],
                segments=1,
                failed=fails[phone],
                sent_at=sent_at,
            )
        )
    entry = state.journal.sms_entry(out_id or biz_id, SMS_ACTION, ",".join(phones))
    entry.sends += 1
    entry.message_ids.append(biz_id)
    stats.sms_sends += 1
    outcomes = set()
    for phone in phones:
        failed = fails[phone]
        outcomes.add("failed" if failed else "delivered")
        state.producer.sms_accepted(
            domestic=True,
            entry=entry,
            message_id=biz_id,
            status="failed" if failed else "delivered",
            build=_domestic_builder(
                phone=phone, biz_id=biz_id, out_id=out_id, failed=failed, sent_at=sent_at
            ),
        )
    entry.outcome = outcomes.pop() if len(outcomes) == 1 else "mixed"
    if state.ledger.take_lost_answer(SMS_ACTION):
        await state.hold_answer(request)
    return replies.reply({"RequestId": replies.request_id(), "Code": "OK", "Message": "OK", "BizId": biz_id})


def _domestic_builder(
    *, phone: str, biz_id: str, out_id: str | None, failed: bool, sent_at: dt.datetime
) -> Callable[[dt.datetime], dict[str, Any]]:
    def build(received_at: dt.datetime) -> dict[str, Any]:
        return world.domestic_sms_report(
            phone=phone,
            biz_id=biz_id,
            out_id=out_id,
            failed=failed,
            sent_at=sent_at,
            received_at=received_at,
            segments=1,
        )

    return build


# ---- queries ---------------------------------------------------------------------------------------------


def _unavailable(request: web.Request) -> web.Response:
    return replies.pop_error(
        request,
        503,
        "ServiceUnavailable",
        "The request has failed due to a temporary failure.",
        product="dysmsapi",
    )


def _positive(value: str, low: int, high: int | None) -> int | None:
    if not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if number >= low and (high is None or number <= high) else None


def _details_params(
    request: web.Request, params: Mapping[str, str]
) -> tuple[dt.date, int, int] | web.Response:
    for name in ("PhoneNumber", "SendDate", "PageSize", "CurrentPage"):
        if not params.get(name):
            return replies.missing(request, name, product="dysmsapi")
    try:
        day = dt.datetime.strptime(params["SendDate"], "%Y%m%d").date()
    except ValueError:
        return replies.invalid(request, "SendDate", "must be yyyyMMdd", product="dysmsapi")
    today = dt.datetime.now(world.CHINA).date()
    if not today - dt.timedelta(days=DETAILS_DAYS) <= day <= today:
        return replies.invalid(
            request, "SendDate", f"must be within the past {DETAILS_DAYS} days", product="dysmsapi"
        )
    size = _positive(params["PageSize"], 1, MAX_DETAILS_PAGE_SIZE)
    if size is None:
        return replies.invalid(
            request, "PageSize", f"must be an integer within 1..{MAX_DETAILS_PAGE_SIZE}", product="dysmsapi"
        )
    page = _positive(params["CurrentPage"], 1, None)
    if page is None:
        return replies.invalid(request, "CurrentPage", "must be an integer >= 1", product="dysmsapi")
    return day, size, page


def _detail_row(record: ledger.SmsRecord) -> dict[str, Any]:
    """One SmsSendDetailDTO (SDK model QuerySendDetailsResponseBodySmsSendDetailDTOsSmsSendDetailDTO)."""
    sent = record.sent_at.astimezone(world.CHINA)
    row: dict[str, Any] = {
        "PhoneNum": record.phone,
        "SendStatus": 2 if record.failed else 3,
        "ErrCode": "UNDELIV" if record.failed else "DELIVERED",
        "TemplateCode": record.template_code,
        "Content": f"【{record.sender}】{record.text}",
        "SendDate": sent.strftime(CHINA_FORMAT),
        "ReceiveDate": sent.strftime(CHINA_FORMAT),
    }
    if record.ref:
        row["OutId"] = record.ref
    return row


async def query_send_details(
    state: state_mod.SandboxState, *, access_key: str, params: Mapping[str, str], request: web.Request
) -> web.Response:
    """QuerySendDetails: SendSms records of one number on one SendDate (China time), newest first."""
    del access_key
    if state.ledger.take_query_failure():
        return _unavailable(request)
    checked = _details_params(request, params)
    if isinstance(checked, web.Response):
        return checked
    day, size, page = checked
    biz_id = params.get("BizId", "")
    chosen = [
        r
        for r in reversed(state.ledger.sms)
        if r.api == SMS_ACTION
        and r.phone == params["PhoneNumber"]
        and r.sent_at.astimezone(world.CHINA).date() == day
        and (not biz_id or r.provider_id == biz_id)
    ]
    rows = [_detail_row(r) for r in chosen[(page - 1) * size : page * size]]
    return replies.reply(
        {
            "RequestId": replies.request_id(),
            "Code": "OK",
            "Message": "OK",
            "TotalCount": str(len(chosen)),
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": rows},
        }
    )


async def query_message(
    state: state_mod.SandboxState, *, access_key: str, params: Mapping[str, str], request: web.Request
) -> web.Response:
    """QueryMessage: one SendMessageToGlobe message by its MessageId (QueryMessageResponseBody fields)."""
    del access_key
    if state.ledger.take_query_failure():
        return _unavailable(request)
    message_id = params.get("MessageId", "")
    if not message_id:
        return replies.missing(request, "MessageId", product="dysmsapi")
    found = next((r for r in state.ledger.sms if r.api == GLOBE_ACTION and r.provider_id == message_id), None)
    if found is None:
        return replies.reply(
            {
                "RequestId": replies.request_id(),
                "ResponseCode": "InvalidMessageId",
                "ResponseDescription": "The MessageId does not exist.",
            }
        )
    sent = email.utils.format_datetime(found.sent_at.astimezone(world.CHINA))
    return replies.reply(
        {
            "RequestId": replies.request_id(),
            "ResponseCode": "OK",
            "ResponseDescription": "OK",
            "MessageId": found.provider_id,
            "To": found.phone,
            "Message": found.text,
            "Status": "2" if found.failed else "1",
            "ErrorCode": "UNDELIV" if found.failed else "DELIVERED",
            "ErrorDescription": "The message could not be delivered." if found.failed else "success",
            "SendDate": sent,
            "ReceiveDate": sent,
            "NumberDetail": world.number_detail(found.phone),
        }
    )
