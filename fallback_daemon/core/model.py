"""Domain values: states (StrEnums equal to their database values) and frozen records."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Mapping
from typing import Any


class ChatState(enum.StrEnum):
    ACCEPTED = "accepted"
    SENDING = "sending"
    UNKNOWN = "unknown"  # the send request may have reached CAMS; outcome not known
    SENT = "sent"
    SEND_FAILED = "send_failed"
    FAILED = "failed"
    DELIVERED = "delivered"
    READ = "read"


class FallbackState(enum.StrEnum):
    NONE = "none"  # no fallback configured for this message
    ARMED = "armed"  # waiting: timer (due_at) and/or a failure event
    HELD = "held"  # would fire, but held for an operator (interrupted firing, feed health gate)
    FIRING = "firing"  # won the at-most-once transition; SMS being sent
    SMS_SENT = "sms_sent"
    SMS_DELIVERED = "sms_delivered"
    SMS_FAILED = "sms_failed"
    CANCELLED = "cancelled"  # the chat message succeeded in time
    SUPPRESSED = "suppressed"  # policy or operator said no


class Rule(enum.StrEnum):
    UNDELIVERED = "undelivered"
    SENT_FAILED = "sentFailed"
    UNREAD = "unread"


# Value -> member, for stored values read on hot paths (every locked row, every accept answer): a dict is
# ~20x cheaper than the Enum call (EnumType.__call__). An unknown value still raises (KeyError, as the call's
# ValueError would: the database's CHECK constraints make it impossible).
CHAT_STATES: dict[str, ChatState] = {s.value: s for s in ChatState}
FALLBACK_STATES: dict[str, FallbackState] = {s.value: s for s in FallbackState}
RULES: dict[str, Rule] = {s.value: s for s in Rule}


class ReceiptStatus(enum.StrEnum):
    """Chat receipt statuses we act on (CAMS spellings); others are stored and ignored."""

    SENT = "Sent"
    DELIVERED = "Delivered"
    READ = "Read"
    FAILED = "Failed"
    OTHER = "Other"


class SmsStatus(enum.StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    PENDING = "pending"


class ReceiptKind(enum.StrEnum):
    CHATAPP = "chatapp"
    SMS = "sms"


# Fallback states from which the SMS has been (or is being) sent.
FIRED_STATES = frozenset(
    {FallbackState.FIRING, FallbackState.SMS_SENT, FallbackState.SMS_DELIVERED, FallbackState.SMS_FAILED}
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SendRequest:
    """A validated POST /v1/messages body.

    `params` holds the SendChatappMessage wire parameters to send (strings, JSON-encoded where the API wants
    JSON), without any FallBack* parameter and without TaskId (our id is sent as TaskId).
    """

    channel: str
    to: str
    sender: str
    params: Mapping[str, str]
    rule: Rule
    duration_s: int | None
    fallback_content: str | None
    template_params: Mapping[str, str]
    client_task_id: str | None
    urgent: bool = False  # FallBackUrgent: the fallback SMS may go out inside quiet hours (guards.py)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatReceipt:
    """One CAMS ChatAppStatus report."""

    message_id: str
    task_id: str | None
    status: ReceiptStatus
    raw_status: str
    timestamp: dt.datetime | None
    error_code: str | None
    raw: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmsReceipt:
    """One SMS delivery report (international SendMessageToGlobe or domestic SendSms)."""

    provider_id: str  # the SMS provider's MessageId / BizId
    fallback_id: str | None  # our fallback id (TaskId / out_id)
    status: SmsStatus
    raw_status: str
    error_code: str | None
    raw: Mapping[str, Any]


# ---- what the loops get from the store (never driver rows) ----------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class ClaimedSend:
    """A message claimed for one SendChatappMessage attempt; `attempt` is the claim's fencing token."""

    id: uuid.UUID
    params: Mapping[str, str]
    attempt: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class FallbackSms:
    """A firing fallback claimed for one SMS attempt (first, retry, or resend after recovery)."""

    id: uuid.UUID
    to: str
    channel: str
    text: str
    template_params: Mapping[str, str]
    fire_reason: str | None
    attempt: int  # fencing token
    firing_age_s: float  # since the fallback fired, on the database clock (for the retry window)
    held: bool = False  # the claim held it instead (receipt-feed gate): nothing to send
    hold_reason: str | None = None
    lateness_s: float | None = None  # how late a timer fired (first claim only)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InFlightSms:
    """A fallback SMS whose request was written but whose outcome was never recorded (lease expired)."""

    id: uuid.UUID
    to: str
    channel: str
    started_at: dt.datetime
    attempt: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class AmbiguousSend:
    """An `unknown` chat send whose next provider lookup is due."""

    id: uuid.UUID
    params: Mapping[str, str]
    started_at: dt.datetime
    lookups: int  # lookups made so far, this one included
