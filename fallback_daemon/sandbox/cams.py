"""CAMS `SendChatappMessage` (2020-06-06): QPS cap, business validation, outcome, response; and
`ListChatappMessage`, answered from the sends the sandbox really accepted (its ledger).

Called by the app's dispatcher after the signature was verified, with query and form params merged.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from fallback_daemon.sandbox import ledger, replies, world
from fallback_daemon.sandbox import state as state_mod

ACTION = "SendChatappMessage"
LIST_ACTION = "ListChatappMessage"
VERSION = "2020-06-06"
# The limiter's window is one second: after that a slot is free for sure (milliseconds, as Alibaba's runtimes
# read x-acs-retry-after).
RETRY_AFTER_MS = "1000"
LIST_CHANNELS = ("whatsapp", "viber")
MAX_PAGE_SIZE = 100  # not documented [I]

# MessageType values per channel (reference §1.3).
MESSAGE_TYPES: dict[str, frozenset[str]] = {
    "whatsapp": frozenset(
        [
            "text",
            "image",
            "video",
            "audio",
            "document",
            "interactive",
            "location",
            "contacts",
            "reaction",
            "sticker",
            "typing_indicator",
            "pin",
            "carousel",
        ]
    ),
    "viber": frozenset(
        [
            "text",
            "image",
            "text_image_button",
            "text_button",
            "document",
            "video",
            "text_video",
            "text_video_button",
            "text_image",
        ]
    ),
    "messenger": frozenset(
        [
            "text",
            "image",
            "video",
            "document",
            "audio",
            "interactive",
            "couponTemplate",
            "regularTemplate",
            "quickReply",
            "buttonTemplate",
        ]
    ),
    "telegram": frozenset(["text", "image", "video", "audio", "document", "location", "gif", "sticker"]),
}
MESSAGE_TYPES["instagram"] = MESSAGE_TYPES["messenger"]
JSON_PARAMS = ("Content", "TemplateParams", "Payload")
# What the API metadata (SDK model: "This parameter is required.") marks required: the gateway answers
# HTTP 400 Missing<Name> for these. TemplateCode / MessageType are required only for one Type each, which
# the product checks itself (HTTP 200, InvalidParameter.*).
REQUIRED = ("ChannelType", "Type", "From", "To")


def validate(params: Mapping[str, str]) -> tuple[str, str] | None:
    """The business error (Code, Message) CAMS would answer for these params, or None if they are fine.

    The REQUIRED parameters are present (the gateway refused the call otherwise)."""
    channel = params.get("ChannelType", "")
    if channel not in MESSAGE_TYPES:
        return "InvalidParameter.ChannelType", f"ChannelType must be one of {sorted(MESSAGE_TYPES)}."
    kind = params.get("Type", "")
    if kind not in ("template", "message"):
        return "InvalidParameter.Type", "Type must be template or message."
    if kind == "template" and not (params.get("TemplateCode") or params.get("TemplateName")):
        return "InvalidParameter.TemplateCode", "TemplateCode is mandatory when Type is template."
    if kind == "message":
        message_type = params.get("MessageType", "")
        if not message_type:
            return "InvalidParameter.MessageType", "MessageType is mandatory when Type is message."
        if message_type not in MESSAGE_TYPES[channel]:
            return (
                "InvalidParameter.MessageType",
                f"MessageType {message_type} is not supported on {channel}.",
            )
    for name in JSON_PARAMS:
        if name in params:
            try:
                json.loads(params[name])
            except ValueError:
                return "InvalidParameter.MessageInvalid", f"{name} is not valid JSON."
    return None


def business_error(code: str, message: str) -> web.Response:
    """A CAMS business failure: HTTP 200 with Code != OK."""
    return replies.reply({"RequestId": replies.request_id(), "Code": code, "Message": message})


async def send_chatapp_message(
    state: state_mod.SandboxState, *, access_key: str, params: Mapping[str, str], request: web.Request
) -> web.Response:
    stats = state.journal.stats
    task_id = params.get("TaskId") or None
    to = params.get("To", "")
    entry = state.journal.chat_entry(task_id, to) if task_id else None
    if entry is not None:
        entry.attempts += 1
    absent = replies.first_missing(params, REQUIRED)
    if absent is not None:  # refused by the gateway before flow control or the product sees it [I]
        stats.cams_rejected += 1
        if entry is not None:
            entry.rejected += 1
            entry.outcome = world.Outcome.REJECTED.value
        return replies.missing(request, absent)
    if not state.limiter.admit(access_key):
        stats.throttled += 1
        if entry is not None:
            entry.throttled += 1
        throttled = replies.pop_error(request, 400, "Throttling.User")
        throttled.headers["x-acs-retry-after"] = RETRY_AFTER_MS
        return throttled
    problem = validate(params)
    outcome = world.Outcome.REJECTED if problem else state.world.chat_outcome(to)
    if outcome is world.Outcome.REJECTED:
        code, message = problem or ("InvalidParameter.PhoneNumberError", "The phone number is invalid.")
        stats.cams_rejected += 1
        if entry is not None:
            entry.rejected += 1
            entry.outcome = outcome.value
        return business_error(code, message)

    message_id = state.ids.chat_message_id()
    kind = params["Type"]
    send = world.ChatSend(
        message_id=message_id,
        task_id=task_id or message_id,
        sender=params["From"],
        to=to,
        frame=kind,
        type_upper="TEMPLATE" if kind == "template" else params["MessageType"].upper(),
        template_code=params.get("TemplateCode"),
        template_name=params.get("TemplateName"),
        language=params.get("Language"),
        conversation_id=state.ids.conversation_id(),
    )
    state.ledger.add(
        ledger.ChatRecord(
            message_id=message_id,
            task_id=send.task_id,
            channel=params["ChannelType"],
            cust_space_id=params.get("CustSpaceId", ""),
            sender=send.sender,
            to=to,
            kind=kind,
            message_type=params.get("MessageType", ""),
            template_code=params.get("TemplateCode", ""),
            template_name=params.get("TemplateName", ""),
            language=params.get("Language", ""),
            content=params.get("Content", ""),
            conversation_id=send.conversation_id,
            outcome=outcome,
            sent_at=dt.datetime.now(dt.UTC),
        )
    )
    # The ledger (what ListChatappMessage answers from) before the journal (the harness's ground truth):
    # a kill between the two writes then leaves a send the provider lists but the journal does not count,
    # never one the journal counts and the provider denies (a daemon told "absent" sends again).
    if entry is None:
        entry = state.journal.chat_entry(message_id, to)
        entry.attempts += 1
    entry.accepted += 1
    entry.outcome = outcome.value
    entry.message_id = message_id
    entry.message_ids.append(message_id)
    stats.cams_ok += 1
    # For `early` this awaits the Delivered push, so the receipt beats this response.
    await state.producer.chat_accepted(send, outcome, entry)
    if state.ledger.take_lost_answer(ACTION):
        await state.hold_answer(request)  # processed, receipts under way, answer never written
    return replies.reply(
        {"RequestId": replies.request_id(), "Code": "OK", "Message": "SUCCESS", "MessageId": message_id}
    )


def _page(value: str) -> tuple[int, int] | str:
    """Page = JSON {"Index": n >= 1, "Size": 1..MAX_PAGE_SIZE} (the SDK sends it JSON-shrunk)."""
    try:
        page = json.loads(value)
    except ValueError:
        return 'must be a JSON object {"Index": n, "Size": n}'
    if not isinstance(page, dict):
        return 'must be a JSON object {"Index": n, "Size": n}'
    index, size = page.get("Index"), page.get("Size")
    if type(index) is not int or index < 1:
        return "Index must be an integer >= 1"
    if type(size) is not int or not 1 <= size <= MAX_PAGE_SIZE:
        return f"Size must be an integer within 1..{MAX_PAGE_SIZE}"
    return index, size


def _millis(value: str | None) -> int | str | None:
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit():
        return "must be a UNIX timestamp in milliseconds"
    return int(value)


def _list_params(request: web.Request, params: Mapping[str, str]) -> dict[str, Any] | web.Response:
    for name in ("ChannelType", "CustSpaceId", "BusinessNumber", "Page"):
        if not params.get(name):
            return replies.missing(request, name)
    channel = params["ChannelType"].lower()
    if channel not in LIST_CHANNELS:
        return replies.invalid(request, "ChannelType", f"must be one of {', '.join(LIST_CHANNELS)}")
    page = _page(params["Page"])
    if isinstance(page, str):
        return replies.invalid(request, "Page", page)
    bounds: list[int | None] = []
    for name in ("StartTime", "EndTime"):
        value = _millis(params.get(name))
        if isinstance(value, str):
            return replies.invalid(request, name, value)
        bounds.append(value)
    action = params.get("EventAction", "")
    if action and action not in ("DOWN", "UP"):
        return replies.invalid(request, "EventAction", "must be DOWN or UP")
    return {"channel": channel, "page": page, "start": bounds[0], "end": bounds[1], "action": action}


def _selected(record: ledger.ChatRecord, params: Mapping[str, str], query: Mapping[str, Any]) -> bool:
    sent_ms = int(record.sent_at.timestamp() * 1000)
    space = params["CustSpaceId"]
    return (
        query["action"] != "UP"  # the sandbox has no inbound messages
        and record.channel == query["channel"]
        and (not record.cust_space_id or record.cust_space_id == space)
        and record.sender == params["BusinessNumber"]
        and (not params.get("UserNumber") or record.to == params["UserNumber"])
        and (not params.get("TemplateCode") or record.template_code == params["TemplateCode"])
        and (not params.get("MessageStatus") or ledger.CHAT_STATUS[record.outcome] == params["MessageStatus"])
        and (query["start"] is None or sent_ms >= query["start"])
        and (query["end"] is None or sent_ms <= query["end"])
    )


def _row(record: ledger.ChatRecord) -> dict[str, Any]:
    """One Data row, with the field names of ListChatappMessageResponseBodyData (SDK model)."""
    status = ledger.CHAT_STATUS[record.outcome]
    message_type = "TEMPLATE" if record.kind == "template" else record.message_type.upper()
    return {
        "BusinessNumber": record.sender,
        "ChannelType": record.channel.upper(),
        "ConversationId": record.conversation_id,
        "EventAction": "DOWN",
        "EventActionName": "DOWN",
        "FailBackFlag": "N",
        "FailReason": world.FAILED_DESCRIPTION if status == "failed" else "",
        "LanguageCode": record.language,
        "Message": record.content,
        "MessageId": record.message_id,
        "MessageSource": "api",
        "MessageStatus": status,
        "MessageStatusName": status.capitalize(),
        "MessageType": message_type,
        "MessageTypeName": message_type.lower(),
        "Month": record.sent_at.strftime("%Y%m"),
        "SendTime": record.sent_at.isoformat(timespec="milliseconds"),
        "TemplateCode": record.template_code,
        "TemplateName": record.template_name,
        "Type": record.kind,
        "UniqueMessageId": record.message_id,
        "UserNumber": record.to,
    }


async def list_chatapp_message(
    state: state_mod.SandboxState, *, access_key: str, params: Mapping[str, str], request: web.Request
) -> web.Response:
    """ListChatappMessage: outbound messages of one business number (and user, window...), newest first."""
    del access_key
    if state.ledger.take_query_failure():
        return replies.pop_error(
            request,
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        )
    query = _list_params(request, params)
    if isinstance(query, web.Response):
        return query
    chosen = [r for r in reversed(state.ledger.chat) if _selected(r, params, query)]
    index, size = query["page"]
    rows = [_row(r) for r in chosen[(index - 1) * size : index * size]]
    return replies.reply(
        {"RequestId": replies.request_id(), "Code": "OK", "Message": "SUCCESS", "Success": True, "Data": rows}
    )
