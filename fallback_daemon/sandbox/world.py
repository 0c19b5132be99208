"""The simulated world: which outcome a message gets, the chaos dice, and the exact report shapes.

Decisions come from one seeded `random.Random`; report builders are pure functions of their inputs
(reference §2.3 ChatAppStatus, §4.4 international SMS report, §4.3 domestic SmsReport).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import enum
import random
from typing import Any

from fallback_daemon.sandbox import config as config_mod


class Outcome(enum.StrEnum):
    READ = "read"  # Sent, Delivered, Read
    DELIVERED = "delivered"  # Sent, Delivered
    FAILED = "failed"  # Sent, Failed (131026)
    SILENT = "silent"  # Sent only
    LATE = "late"  # Sent; Delivered withheld until released
    REJECTED = "rejected"  # the send answers InvalidParameter.PhoneNumberError; no receipts
    EARLY = "early"  # like read, but Delivered is pushed before the send response


# `suffix` mode: outcome by the last digit of To.
SUFFIX = {
    "0": Outcome.READ,
    "1": Outcome.READ,
    "2": Outcome.READ,
    "3": Outcome.DELIVERED,
    "4": Outcome.DELIVERED,
    "5": Outcome.FAILED,
    "6": Outcome.SILENT,
    "7": Outcome.LATE,
    "8": Outcome.REJECTED,
    "9": Outcome.EARLY,
}
SMS_FAIL_SUFFIX = "55"

STATUSES: dict[Outcome, tuple[str, ...]] = {
    Outcome.READ: ("Sent", "Delivered", "Read"),
    Outcome.DELIVERED: ("Sent", "Delivered"),
    Outcome.FAILED: ("Sent", "Failed"),
    Outcome.SILENT: ("Sent",),
    Outcome.LATE: ("Sent", "Delivered"),
    Outcome.REJECTED: (),
    Outcome.EARLY: ("Sent", "Delivered", "Read"),
}
FAILED_CODE = "131026"
FAILED_DESCRIPTION = "131026:Receiver is incapable of receiving this message(Message Undeliverable.)"
CHINA = dt.timezone(dt.timedelta(hours=8))

# A few dialing codes for NumberDetail; longest prefix wins.
COUNTRIES = {
    "1": "United States",
    "44": "United Kingdom",
    "49": "Germany",
    "55": "Brazil",
    "60": "Malaysia",
    "62": "Indonesia",
    "63": "Philippines",
    "65": "Singapore",
    "66": "Thailand",
    "81": "Japan",
    "84": "Vietnam",
    "86": "China",
    "852": "Hong Kong",
    "91": "India",
}


class World:
    """The dice: outcome per message and the chaos knobs, all from one seeded generator."""

    def __init__(self, config: config_mod.SandboxConfig) -> None:
        self._config = config
        self.rng = random.Random(config.seed)
        self._outcomes = [Outcome(name) for name in config.weights]
        self._weights = list(config.weights.values())

    def chat_outcome(self, to: str) -> Outcome:
        if self._config.mode == "suffix":
            return SUFFIX.get(to[-1:], Outcome.READ)
        return self.rng.choices(self._outcomes, self._weights)[0]

    def sms_fails(self, to: str) -> bool:
        if to.endswith(SMS_FAIL_SUFFIX):
            return True
        return self._config.mode == "mix" and self.rng.random() < self._config.sms_fail_rate

    def delay_s(self) -> float:
        low, high = self._config.receipt_delay_ms
        return self.rng.uniform(low, high) / 1000.0

    def duplicate(self) -> bool:
        return self.rng.random() < self._config.duplicate_rate

    def omit_task_id(self) -> bool:
        return self.rng.random() < self._config.omit_task_id_rate


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatSend:
    """An accepted SendChatappMessage: what its reports are made of."""

    message_id: str
    task_id: str  # echoed in reports: the TaskId sent, or the MessageId if none was
    sender: str
    to: str
    frame: str  # MsgFrameType: "template" or "message"
    type_upper: str  # Type in reports: "TEMPLATE", or the MessageType upper-cased ("TEXT", ...)
    template_code: str | None
    template_name: str | None
    language: str | None
    conversation_id: str


def chat_report(
    send: ChatSend, status: str, timestamp_ms: int, *, with_task_id: bool = True
) -> dict[str, Any]:
    """One ChatAppStatus report in the §2.3 HTTP-push shape."""
    report: dict[str, Any] = {"Status": status, "MessageId": send.message_id}
    if with_task_id:
        report["TaskId"] = send.task_id
    report.update(
        {
            "From": send.sender,
            "To": send.to,
            "Timestamp": timestamp_ms,
            "MsgFrameType": send.frame,
            "Type": send.type_upper,
            "OriginPhoneNumber": send.sender,
        }
    )
    if send.frame == "template":
        for key, value in (
            ("TemplateCode", send.template_code),
            ("TemplateName", send.template_name),
            ("Language", send.language),
        ):
            if value:
                report[key] = value
    if status == "Failed":
        report["ErrorCode"] = FAILED_CODE
        report["ErrorDescription"] = FAILED_DESCRIPTION
    else:
        report["ConversationId"] = send.conversation_id
        report["ConversationType"] = "utility" if send.frame == "template" else "service"
    return report


def intl_sms_report(
    *,
    to: str,
    message_id: str,
    task_id: str | None,
    segments: int,
    failed: bool,
    sent_at: dt.datetime,
    received_at: dt.datetime,
) -> dict[str, Any]:
    """One international SMS report (SendMessageToGlobe) in the §4.4 shape."""
    report: dict[str, Any] = {
        "To": to,
        "SendDate": email.utils.format_datetime(sent_at.astimezone(CHINA)),
        "ReceiveDate": email.utils.format_datetime(received_at.astimezone(CHINA)),
        "Status": "2" if failed else "1",
        "ErrorCode": "UNDELIV" if failed else "success",
        "ErrorDescription": "The message could not be delivered to the handset." if failed else "success",
    }
    if task_id is not None:
        report["TaskId"] = task_id
    report["SmsSize"] = str(segments)
    report["MessageId"] = message_id
    return report


def domestic_sms_report(
    *,
    phone: str,
    biz_id: str,
    out_id: str | None,
    failed: bool,
    sent_at: dt.datetime,
    received_at: dt.datetime,
    segments: int,
) -> dict[str, Any]:
    """One domestic SmsReport record (SendSms) in the §4.3 shape."""
    fmt = "%Y-%m-%d %H:%M:%S"
    report: dict[str, Any] = {
        "phone_number": phone,
        "send_time": sent_at.astimezone(CHINA).strftime(fmt),
        "report_time": received_at.astimezone(CHINA).strftime(fmt),
        "success": not failed,
        "err_code": "UNDELIV" if failed else "DELIVERED",
        "err_msg": "用户接收失败" if failed else "用户接收成功",
        "sms_size": str(segments),
        "biz_id": biz_id,
    }
    if out_id is not None:
        report["out_id"] = out_id
    return report


def segments(text: str) -> int:
    """SMS parts: GSM-7-ish ASCII 160 (153 per part when split), else UCS-2 70 (67)."""
    single, multi = (160, 153) if text.isascii() else (70, 67)
    if len(text) <= single:
        return 1
    return -(-len(text) // multi)


def number_detail(to: str) -> dict[str, str]:
    for length in (3, 2, 1):
        country = COUNTRIES.get(to[:length])
        if country:
            return {"Country": country, "Region": "", "Carrier": "Sandbox Mobile"}
    return {"Country": "Unknown", "Region": "", "Carrier": "Sandbox Mobile"}
