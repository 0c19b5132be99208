"""The pure decision core: every (state, event) pair that matters, table-driven."""

from __future__ import annotations

import pytest

from fallback_daemon.core import model, policy
from fallback_daemon.core.model import ChatState as C
from fallback_daemon.core.model import FallbackState as F
from fallback_daemon.core.model import ReceiptStatus as R
from fallback_daemon.core.model import Rule

U, SF, UR = Rule.UNDELIVERED, Rule.SENT_FAILED, Rule.UNREAD


def st(chat: C, fb: F, rule: Rule = U, double: bool = False) -> policy.State:
    return policy.State(chat=chat, fallback=fb, rule=rule, double_delivered=double)


CASES = [
    # (state, event, expected chat, expected fallback, fire_reason, double_delivered)
    # --- send results
    (st(C.SENDING, F.ARMED), policy.SendOk(), C.SENT, F.ARMED, None, False),
    (st(C.SENDING, F.ARMED), policy.SendFailed(), C.SEND_FAILED, F.ARMED, "send_failed", False),
    (st(C.SENDING, F.ARMED, SF), policy.SendFailed(), C.SEND_FAILED, F.ARMED, "send_failed", False),
    (st(C.SENDING, F.ARMED, UR), policy.SendFailed(), C.SEND_FAILED, F.ARMED, "send_failed", False),
    (st(C.SENDING, F.NONE), policy.SendFailed(), C.SEND_FAILED, F.NONE, None, False),
    (st(C.SENDING, F.ARMED), policy.SendUnknown(), C.UNKNOWN, F.ARMED, None, False),
    # an early Delivered receipt beat the send response: the response does not move it back
    (st(C.DELIVERED, F.CANCELLED), policy.SendOk(), C.DELIVERED, F.CANCELLED, None, False),
    # --- undelivered rule
    (st(C.SENT, F.ARMED), policy.ChatReceipt(R.DELIVERED), C.DELIVERED, F.CANCELLED, None, False),
    (st(C.SENT, F.ARMED), policy.ChatReceipt(R.READ), C.READ, F.CANCELLED, None, False),
    (st(C.SENT, F.ARMED), policy.ChatReceipt(R.FAILED), C.FAILED, F.ARMED, "failed_receipt", False),
    (st(C.SENDING, F.ARMED), policy.ChatReceipt(R.SENT), C.SENT, F.ARMED, None, False),
    # --- sentFailed rule: Delivered ends the watch; Failed fires
    (st(C.SENT, F.ARMED, SF), policy.ChatReceipt(R.DELIVERED), C.DELIVERED, F.CANCELLED, None, False),
    (st(C.SENT, F.ARMED, SF), policy.ChatReceipt(R.FAILED), C.FAILED, F.ARMED, "failed_receipt", False),
    # --- unread rule: only Read counts
    (st(C.SENT, F.ARMED, UR), policy.ChatReceipt(R.DELIVERED), C.DELIVERED, F.ARMED, None, False),
    (st(C.DELIVERED, F.ARMED, UR), policy.ChatReceipt(R.READ), C.READ, F.CANCELLED, None, False),
    (st(C.SENT, F.ARMED, UR), policy.ChatReceipt(R.FAILED), C.FAILED, F.ARMED, "failed_receipt", False),
    # --- lattice: never backwards
    (st(C.READ, F.CANCELLED), policy.ChatReceipt(R.DELIVERED), C.READ, F.CANCELLED, None, False),
    (st(C.DELIVERED, F.CANCELLED), policy.ChatReceipt(R.SENT), C.DELIVERED, F.CANCELLED, None, False),
    (st(C.DELIVERED, F.CANCELLED), policy.ChatReceipt(R.FAILED), C.DELIVERED, F.CANCELLED, None, False),
    (st(C.FAILED, F.ARMED), policy.ChatReceipt(R.FAILED), C.FAILED, F.ARMED, None, False),
    (st(C.SENT, F.ARMED), policy.ChatReceipt(R.OTHER), C.SENT, F.ARMED, None, False),
    # --- success after the fallback fired: double delivery, recorded once
    (st(C.SENT, F.SMS_SENT), policy.ChatReceipt(R.DELIVERED), C.DELIVERED, F.SMS_SENT, None, True),
    (st(C.FAILED, F.SMS_DELIVERED), policy.ChatReceipt(R.READ), C.READ, F.SMS_DELIVERED, None, True),
    (st(C.SENT, F.FIRING), policy.ChatReceipt(R.READ), C.READ, F.FIRING, None, True),
    (st(C.DELIVERED, F.SMS_SENT, double=True), policy.ChatReceipt(R.READ), C.READ, F.SMS_SENT, None, False),
    (st(C.SENT, F.SMS_SENT, UR), policy.ChatReceipt(R.DELIVERED), C.DELIVERED, F.SMS_SENT, None, False),
    (st(C.DELIVERED, F.SMS_SENT, UR), policy.ChatReceipt(R.READ), C.READ, F.SMS_SENT, None, True),
    # a Failed after firing fires nothing more (at most once)
    (st(C.SENT, F.SMS_SENT), policy.ChatReceipt(R.FAILED), C.FAILED, F.SMS_SENT, None, False),
    # --- held fallbacks: a success still cancels; a failure waits for the operator
    (st(C.SENT, F.HELD), policy.ChatReceipt(R.DELIVERED), C.DELIVERED, F.CANCELLED, None, False),
    (st(C.SENT, F.HELD), policy.ChatReceipt(R.FAILED), C.FAILED, F.HELD, None, False),
    # --- timer
    (st(C.SENT, F.ARMED), policy.TimerExpired(), C.SENT, F.FIRING, "timeout", False),
    (st(C.DELIVERED, F.ARMED, UR), policy.TimerExpired(), C.DELIVERED, F.FIRING, "timeout", False),
    (st(C.DELIVERED, F.CANCELLED), policy.TimerExpired(), C.DELIVERED, F.CANCELLED, None, False),
    (st(C.SENT, F.FIRING), policy.TimerExpired(), C.SENT, F.FIRING, None, False),
    # --- SMS leg
    (st(C.SENT, F.FIRING), policy.SmsSent(), C.SENT, F.SMS_SENT, None, False),
    (st(C.SENT, F.FIRING), policy.SmsRejected(), C.SENT, F.SMS_FAILED, None, False),
    (
        st(C.SENT, F.SMS_SENT),
        policy.SmsReceipt(model.SmsStatus.DELIVERED),
        C.SENT,
        F.SMS_DELIVERED,
        None,
        False,
    ),
    (st(C.SENT, F.SMS_SENT), policy.SmsReceipt(model.SmsStatus.FAILED), C.SENT, F.SMS_FAILED, None, False),
    # the SMS receipt beat the SMS send response
    (
        st(C.SENT, F.FIRING),
        policy.SmsReceipt(model.SmsStatus.DELIVERED),
        C.SENT,
        F.SMS_DELIVERED,
        None,
        False,
    ),
    (st(C.SENT, F.SMS_DELIVERED), policy.SmsSent(), C.SENT, F.SMS_DELIVERED, None, False),
    (
        st(C.SENT, F.SMS_DELIVERED),
        policy.SmsReceipt(model.SmsStatus.FAILED),
        C.SENT,
        F.SMS_DELIVERED,
        None,
        False,
    ),
    (st(C.SENT, F.SMS_SENT), policy.SmsReceipt(model.SmsStatus.PENDING), C.SENT, F.SMS_SENT, None, False),
    # an SMS event can never touch a fallback that did not fire
    (st(C.SENT, F.CANCELLED), policy.SmsReceipt(model.SmsStatus.DELIVERED), C.SENT, F.CANCELLED, None, False),
    # --- operators
    (st(C.SENT, F.ARMED), policy.OperatorCancel(), C.SENT, F.CANCELLED, None, False),
    (st(C.SENT, F.HELD), policy.OperatorCancel(), C.SENT, F.CANCELLED, None, False),
    (st(C.SENT, F.SMS_SENT), policy.OperatorCancel(), C.SENT, F.SMS_SENT, None, False),
    (st(C.SENT, F.ARMED), policy.OperatorFire(), C.SENT, F.ARMED, "operator", False),
    (st(C.SENT, F.HELD), policy.OperatorFire(), C.SENT, F.ARMED, "operator", False),
    (st(C.SENT, F.CANCELLED), policy.OperatorFire(), C.SENT, F.CANCELLED, None, False),
    (st(C.SENT, F.HELD), policy.OperatorDrop(), C.SENT, F.SUPPRESSED, None, False),
    (st(C.SENT, F.ARMED), policy.OperatorDrop(), C.SENT, F.SUPPRESSED, None, False),
    (st(C.SENT, F.SMS_SENT), policy.OperatorDrop(), C.SENT, F.SMS_SENT, None, False),
    (st(C.UNKNOWN, F.ARMED), policy.OperatorResend(), C.ACCEPTED, F.ARMED, None, False),
    (st(C.SENDING, F.ARMED), policy.OperatorResend(), C.ACCEPTED, F.ARMED, None, False),
    (st(C.DELIVERED, F.CANCELLED), policy.OperatorResend(), C.DELIVERED, F.CANCELLED, None, False),
    # --- interrupted firing
    (st(C.SENT, F.FIRING), policy.FiringInterrupted(resend=False), C.SENT, F.HELD, None, False),
    (st(C.SENT, F.FIRING), policy.FiringInterrupted(resend=True), C.SENT, F.FIRING, None, False),
    (st(C.SENT, F.SMS_SENT), policy.FiringInterrupted(resend=True), C.SENT, F.SMS_SENT, None, False),
    # --- durable attempts: a claim that never wrote its request goes back; so does a provably absent send
    (st(C.SENDING, F.ARMED), policy.SendRequeued(), C.ACCEPTED, F.ARMED, None, False),
    (st(C.SENT, F.ARMED), policy.SendRequeued(), C.SENT, F.ARMED, None, False),
    (st(C.UNKNOWN, F.ARMED), policy.SendRequeued(), C.UNKNOWN, F.ARMED, None, False),
    (st(C.UNKNOWN, F.ARMED), policy.SendAbsent(), C.ACCEPTED, F.ARMED, None, False),
    (st(C.DELIVERED, F.CANCELLED), policy.SendAbsent(), C.DELIVERED, F.CANCELLED, None, False),
    (st(C.SENDING, F.ARMED), policy.SendAbsent(), C.SENDING, F.ARMED, None, False),
    # a reconciled-found send climbs unknown -> sent like any SendOk
    (st(C.UNKNOWN, F.ARMED), policy.SendOk(), C.SENT, F.ARMED, None, False),
    # the SMS answer was lost: recorded, no state change; an exhausted retry window parks the fallback
    (st(C.SENT, F.FIRING), policy.SmsUnknown(), C.SENT, F.FIRING, None, False),
    (st(C.SENT, F.FIRING), policy.SmsRetryExhausted(), C.SENT, F.HELD, None, False),
    (st(C.SENT, F.SMS_SENT), policy.SmsRetryExhausted(), C.SENT, F.SMS_SENT, None, False),
    # the chat succeeded while the SMS was still being retried: it is not sent
    (st(C.READ, F.FIRING), policy.SmsNotNeeded(), C.READ, F.CANCELLED, None, False),
    (st(C.DELIVERED, F.FIRING, UR), policy.SmsNotNeeded(), C.DELIVERED, F.FIRING, None, False),
    (st(C.SENT, F.FIRING), policy.SmsNotNeeded(), C.SENT, F.FIRING, None, False),
]


@pytest.mark.parametrize(("state", "event", "chat", "fallback", "fire", "double"), CASES)
def test_decide(state, event, chat, fallback, fire, double) -> None:
    """Each (state, event) pair yields the rule's chat state, fallback state, firing and double delivery."""
    d = policy.decide(state, event)
    assert (d.chat, d.fallback, d.fire_reason, d.double_delivered) == (chat, fallback, fire, double)


@pytest.mark.parametrize("first", list(C))
@pytest.mark.parametrize("status", [R.SENT, R.DELIVERED, R.READ, R.FAILED])
def test_lattice_never_moves_backwards(first: C, status: R) -> None:
    """A receipt never lowers the chat state's rank, whatever state the message is in."""
    d = policy.decide(st(first, F.ARMED), policy.ChatReceipt(status))
    assert policy.CHAT_RANK[d.chat] >= policy.CHAT_RANK[first]


@pytest.mark.parametrize("rule", list(Rule))
def test_fallback_fires_at_most_once_over_any_event_sequence(rule: Rule) -> None:
    """Replaying every failure event after the fallback fired never asks for a second firing."""
    s = st(C.SENDING, F.ARMED, rule)
    fires = 0
    events = [
        policy.SendFailed(),
        policy.ChatReceipt(R.FAILED),
        policy.TimerExpired(),
        policy.ChatReceipt(R.FAILED),
    ]
    for ev in events:
        d = policy.decide(s, ev)
        if d.fire_reason is not None:
            fires += 1
            d = policy.decide(policy.State(chat=d.chat, fallback=F.ARMED, rule=rule), policy.TimerExpired())
        s = policy.State(chat=d.chat, fallback=d.fallback, rule=rule, double_delivered=s.double_delivered)
    assert fires == 1
    assert s.fallback is F.FIRING


def test_timer_only_for_rules_that_wait() -> None:
    """sentFailed has no timer; undelivered and unread use FallBackDuration; no duration means no timer."""
    assert policy.timer_seconds(Rule.SENT_FAILED, 120) is None
    assert policy.timer_seconds(Rule.UNDELIVERED, 120) == 120
    assert policy.timer_seconds(Rule.UNREAD, 60) == 60
    assert policy.timer_seconds(Rule.UNDELIVERED, None) is None


def test_no_sms_means_no_fallback() -> None:
    """A message without SMS content starts with no fallback; with content it starts armed."""
    assert policy.initial_fallback(has_sms=False) is F.NONE
    assert policy.initial_fallback(has_sms=True) is F.ARMED


@pytest.mark.parametrize(
    ("now", "earliest", "window", "closed"),
    [
        (1000.0, None, 600, False),  # nothing sent since the last receipt
        (1000.0, 500.0, 600, False),  # a send 500 s ago, window 600 s: still waiting
        (1000.0, 300.0, 600, True),  # 700 s after a send with no receipt at all: the feed looks down
        (1000.0, 300.0, 0, False),  # window 0 disables the gate
    ],
)
def test_feed_gate(now: float, earliest: float | None, window: float, closed: bool) -> None:
    """The gate closes only after a full window of silence following a send, and never when disabled."""
    assert policy.feed_gate_closed(now=now, earliest_unanswered_send=earliest, window_s=window) is closed
