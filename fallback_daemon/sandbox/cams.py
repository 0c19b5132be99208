"""CAMS `SendChatappMessage` (2020-06-06): QPS cap, business validation, outcome, response.

Called by the app's dispatcher after the signature was verified, with query and form params merged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from fallback_daemon.sandbox import replies, world
from fallback_daemon.sandbox import state as state_mod

ACTION = "SendChatappMessage"
VERSION = "2020-06-06"

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


def validate(params: Mapping[str, str]) -> tuple[str, str] | None:
    """The business error (Code, Message) CAMS would answer for these params, or None if they are fine."""
    channel = params.get("ChannelType", "")
    if channel not in MESSAGE_TYPES:
        return "InvalidParameter.ChannelType", f"ChannelType must be one of {sorted(MESSAGE_TYPES)}."
    kind = params.get("Type", "")
    if kind not in ("template", "message"):
        return "InvalidParameter.Type", "Type must be template or message."
    for name in ("From", "To"):
        if not params.get(name, "").strip():
            return f"InvalidParameter.{name}", f"{name} is mandatory for this action."
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
    if not state.limiter.admit(access_key):
        stats.throttled += 1
        if entry is not None:
            entry.throttled += 1
        return replies.pop_error(request, 400, "Throttling.User")
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
    if entry is None:
        entry = state.journal.chat_entry(message_id, to)
        entry.attempts += 1
    entry.accepted += 1
    entry.outcome = outcome.value
    entry.message_id = message_id
    entry.message_ids.append(message_id)
    stats.cams_ok += 1
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
    # For `early` this awaits the Delivered push, so the receipt beats this response.
    await state.producer.chat_accepted(send, outcome, entry)
    return replies.reply(
        {"RequestId": replies.request_id(), "Code": "OK", "Message": "SUCCESS", "MessageId": message_id}
    )
