"""The fallback decision core: `decide(state, event) -> Decision`. Pure: no I/O, no clock, no logging.

The rules (SPEC §3): the chat leg climbs a monotonic lattice; the fallback leg fires at most once, on a
send failure, a Failed receipt, or an expired timer whose success condition (Delivered for `undelivered`,
Read for `unread`) was not met; a success after firing is recorded as a double delivery.
"""

from __future__ import annotations

import dataclasses
from typing import assert_never

from fallback_daemon.core import model
from fallback_daemon.core.model import ChatState as C
from fallback_daemon.core.model import FallbackState as F
from fallback_daemon.core.model import ReceiptStatus as R

# Chat lattice: a state only ever moves to a higher rank. Failure ranks below success so that a late
# Delivered/Read after a Failed still records the truth, and a Failed never overwrites a success.
CHAT_RANK: dict[C, int] = {
    C.ACCEPTED: 0,
    C.SENDING: 1,
    C.UNKNOWN: 1,
    C.SENT: 2,
    C.SEND_FAILED: 3,
    C.FAILED: 3,
    C.DELIVERED: 4,
    C.READ: 5,
}
RECEIPT_TO_CHAT: dict[R, C] = {R.SENT: C.SENT, R.DELIVERED: C.DELIVERED, R.READ: C.READ, R.FAILED: C.FAILED}
PENDING = frozenset({F.ARMED, F.HELD})  # not fired yet: a success can still cancel it
SMS_RANK: dict[F, int] = {F.FIRING: 0, F.SMS_SENT: 1, F.SMS_FAILED: 2, F.SMS_DELIVERED: 3}


@dataclasses.dataclass(frozen=True, kw_only=True)
class State:
    chat: C
    fallback: F
    rule: model.Rule
    double_delivered: bool = False


# ---- events -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SendOk:
    """SendChatappMessage answered Code=OK."""


@dataclasses.dataclass(frozen=True)
class SendFailed:
    """SendChatappMessage refused the message for good (or retries ran out)."""


@dataclasses.dataclass(frozen=True)
class SendUnknown:
    """The send request may have reached CAMS; its outcome is unknown."""


@dataclasses.dataclass(frozen=True)
class ChatReceipt:
    status: R


@dataclasses.dataclass(frozen=True)
class TimerExpired:
    """The FallBackDuration elapsed while the fallback was armed."""


@dataclasses.dataclass(frozen=True)
class SmsSent:
    """The SMS provider accepted the fallback SMS."""


@dataclasses.dataclass(frozen=True)
class SmsRejected:
    """The SMS provider refused the fallback SMS for good."""


@dataclasses.dataclass(frozen=True)
class SmsReceipt:
    status: model.SmsStatus


@dataclasses.dataclass(frozen=True)
class OperatorCancel:
    """An operator cancelled a pending fallback."""


@dataclasses.dataclass(frozen=True)
class OperatorFire:
    """An operator asked for the fallback now (also releases a held one)."""


@dataclasses.dataclass(frozen=True)
class OperatorDrop:
    """An operator dropped a pending (or held) fallback: it will never fire."""


@dataclasses.dataclass(frozen=True)
class OperatorResend:
    """An operator re-drives a message stuck in `sending` or `unknown`: it is sent again (explicitly)."""


@dataclasses.dataclass(frozen=True)
class SendRequeued:
    """A send lease expired before the request was written (no in-flight mark): send it again."""


@dataclasses.dataclass(frozen=True)
class SendAbsent:
    """Reconciliation: the provider's message list proves an ambiguous send never arrived; send it again."""


@dataclasses.dataclass(frozen=True)
class SmsUnknown:
    """The SMS request was written but its answer was lost: recorded now, reconciled after the lease."""


@dataclasses.dataclass(frozen=True)
class SmsRetryExhausted:
    """Every SMS attempt in the retry window failed without reaching the provider: parked for an operator."""


@dataclasses.dataclass(frozen=True)
class SmsNotNeeded:
    """The chat message succeeded after the fallback fired but before its SMS went out (e.g. during a provider
    outage the SMS was being retried): the SMS is not sent."""


@dataclasses.dataclass(frozen=True)
class FiringInterrupted:
    """A firing lease expired (crash between 'firing' and 'SMS sent'); `resend` picks at-least-once."""

    resend: bool


Event = (
    SendOk
    | SendFailed
    | SendUnknown
    | ChatReceipt
    | TimerExpired
    | SmsSent
    | SmsRejected
    | SmsReceipt
    | OperatorCancel
    | OperatorFire
    | OperatorDrop
    | OperatorResend
    | FiringInterrupted
    | SendRequeued
    | SendAbsent
    | SmsUnknown
    | SmsRetryExhausted
    | SmsNotNeeded
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """What to write. `fire_reason` set means: make the fallback due now (the timer loop fires it)."""

    chat: C
    fallback: F
    outcome: str
    fire_reason: str | None = None
    double_delivered: bool = False  # newly detected by this event


# ---- arming ---------------------------------------------------------------------------------------------
def initial_fallback(*, has_sms: bool) -> F:
    """A message with SMS content starts armed (with or without a timer); otherwise it has no fallback."""
    return F.ARMED if has_sms else F.NONE


def timer_seconds(rule: model.Rule, duration_s: int | None) -> int | None:
    """`sentFailed` never uses a timer; the others use FallBackDuration when it is given."""
    return None if rule is model.Rule.SENT_FAILED else duration_s


def is_success(rule: model.Rule, chat: C) -> bool:
    """Whether the chat state satisfies the rule (no fallback needed)."""
    if rule is model.Rule.UNREAD:
        return chat is C.READ
    return chat in (C.DELIVERED, C.READ)


# ---- receipt-feed health gate ---------------------------------------------------------------------------
def feed_gate_closed(*, now: float, earliest_unanswered_send: float | None, window_s: float) -> bool:
    """Hold timer fallbacks on a channel whose receipt feed looks dead.

    Closed when something was sent on the channel after its last receipt, and `window_s` has passed since
    that send with still no receipt at all (so a wave of timeouts is the feed's fault, not the users').
    A window of 0 disables the gate. Times are Unix seconds from the database clock.
    """
    if window_s <= 0 or earliest_unanswered_send is None:
        return False
    return now - earliest_unanswered_send > window_s


# ---- decide -----------------------------------------------------------------------------------------------
def decide(state: State, event: Event) -> Decision:  # noqa: C901 - one flat dispatch over the event types
    """Apply one event to one message's state."""
    match event:
        case SendOk():
            return _chat(state, C.SENT, "send_ok")
        case SendUnknown():
            return _chat(state, C.UNKNOWN, "send_unknown")
        case SendFailed():
            return _chat(state, C.SEND_FAILED, "send_failed", fire="send_failed")
        case ChatReceipt(status=status):
            target = RECEIPT_TO_CHAT.get(status)
            if target is None:
                return Decision(chat=state.chat, fallback=state.fallback, outcome="receipt_ignored")
            return _chat(state, target, "receipt", fire="failed_receipt" if target is C.FAILED else None)
        case TimerExpired():
            if state.fallback is F.ARMED and not is_success(state.rule, state.chat):
                return Decision(
                    chat=state.chat, fallback=F.FIRING, outcome="fallback_fired", fire_reason="timeout"
                )
            return Decision(chat=state.chat, fallback=state.fallback, outcome="timer_ignored")
        case SmsSent():
            return _sms(state, F.SMS_SENT, "sms_sent")
        case SmsRejected():
            return _sms(state, F.SMS_FAILED, "sms_rejected")
        case SmsReceipt(status=status):
            if status is model.SmsStatus.DELIVERED:
                return _sms(state, F.SMS_DELIVERED, "sms_delivered")
            if status is model.SmsStatus.FAILED:
                return _sms(state, F.SMS_FAILED, "sms_failed")
            return Decision(chat=state.chat, fallback=state.fallback, outcome="sms_receipt_ignored")
        case OperatorCancel():
            if state.fallback in PENDING:
                return Decision(chat=state.chat, fallback=F.CANCELLED, outcome="operator_cancelled")
            return Decision(chat=state.chat, fallback=state.fallback, outcome="operator_cancel_refused")
        case OperatorFire():
            if state.fallback in PENDING:
                return Decision(
                    chat=state.chat, fallback=F.ARMED, outcome="operator_fire", fire_reason="operator"
                )
            return Decision(chat=state.chat, fallback=state.fallback, outcome="operator_fire_refused")
        case OperatorDrop():
            if state.fallback in PENDING:
                return Decision(chat=state.chat, fallback=F.SUPPRESSED, outcome="operator_dropped")
            return Decision(chat=state.chat, fallback=state.fallback, outcome="operator_drop_refused")
        case OperatorResend():
            if state.chat in (C.SENDING, C.UNKNOWN):
                return Decision(chat=C.ACCEPTED, fallback=state.fallback, outcome="operator_resend")
            return Decision(chat=state.chat, fallback=state.fallback, outcome="operator_resend_refused")
        case SendRequeued():
            if state.chat is C.SENDING:
                return Decision(chat=C.ACCEPTED, fallback=state.fallback, outcome="send_requeued")
            return Decision(chat=state.chat, fallback=state.fallback, outcome="send_requeue_ignored")
        case SendAbsent():
            if state.chat is C.UNKNOWN:
                return Decision(chat=C.ACCEPTED, fallback=state.fallback, outcome="reconciled_absent")
            return Decision(chat=state.chat, fallback=state.fallback, outcome="reconcile_ignored")
        case SmsUnknown():
            return Decision(chat=state.chat, fallback=state.fallback, outcome="sms_outcome_unknown")
        case SmsRetryExhausted():
            if state.fallback is F.FIRING:
                return Decision(chat=state.chat, fallback=F.HELD, outcome="sms_retries_exhausted")
            return Decision(chat=state.chat, fallback=state.fallback, outcome="sms_retries_exhausted_ignored")
        case SmsNotNeeded():
            if state.fallback is F.FIRING and is_success(state.rule, state.chat):
                return Decision(chat=state.chat, fallback=F.CANCELLED, outcome="sms_not_needed")
            return Decision(chat=state.chat, fallback=state.fallback, outcome="sms_not_needed_ignored")
        case FiringInterrupted(resend=resend):
            if state.fallback is not F.FIRING:
                return Decision(chat=state.chat, fallback=state.fallback, outcome="recovery_ignored")
            if resend:
                return Decision(chat=state.chat, fallback=F.FIRING, outcome="firing_resend")
            return Decision(chat=state.chat, fallback=F.HELD, outcome="firing_parked")
        case _:
            assert_never(event)


def _chat(state: State, target: C, outcome: str, *, fire: str | None = None) -> Decision:
    """Move the chat leg up the lattice, then apply the rule to the fallback leg."""
    if CHAT_RANK[target] <= CHAT_RANK[state.chat] and not (target is C.UNKNOWN and state.chat is C.SENDING):
        return Decision(chat=state.chat, fallback=state.fallback, outcome=f"{outcome}_stale")
    chat = target
    fallback = state.fallback
    double = False
    fire_reason = None
    if fallback in PENDING:
        if is_success(state.rule, chat):
            fallback = F.CANCELLED
            outcome = f"{outcome}_fallback_cancelled"
        elif fire is not None and fallback is F.ARMED:
            fire_reason = fire
            outcome = f"{outcome}_fallback_due"
        elif fire is not None:  # held: an operator decides, but record why it would fire
            outcome = f"{outcome}_fallback_held"
    elif fallback in model.FIRED_STATES and is_success(state.rule, chat) and not state.double_delivered:
        double = True
        outcome = f"{outcome}_double_delivered"
    return Decision(
        chat=chat, fallback=fallback, outcome=outcome, fire_reason=fire_reason, double_delivered=double
    )


def _sms(state: State, target: F, outcome: str) -> Decision:
    """Move the SMS leg up its own lattice; never touches a fallback that did not fire."""
    if state.fallback not in SMS_RANK or SMS_RANK[target] <= SMS_RANK[state.fallback]:
        return Decision(chat=state.chat, fallback=state.fallback, outcome=f"{outcome}_stale")
    return Decision(chat=state.chat, fallback=target, outcome=outcome)
