"""The sandbox world: outcome choice, report shapes and config validation."""

from __future__ import annotations

import collections
import datetime as dt

import pytest

from fallback_daemon.sandbox import SandboxConfig, world

SEND = world.ChatSend(
    message_id="2023078469463703000001",
    task_id="task-1",
    sender="8613100000008",
    to="8613800000008",
    frame="template",
    type_upper="TEMPLATE",
    template_code="820561547132813184",
    template_name=None,
    language="en",
    conversation_id="722222011110000",
)


@pytest.mark.parametrize(
    ("to", "outcome"),
    [
        ("8613800000000", "read"),
        ("8613800000001", "read"),
        ("8613800000002", "read"),
        ("8613800000003", "delivered"),
        ("8613800000004", "delivered"),
        ("8613800000005", "failed"),
        ("8613800000006", "silent"),
        ("8613800000007", "late"),
        ("8613800000008", "rejected"),
        ("8613800000009", "early"),
        ("psid-abc", "read"),
    ],
)
def test_suffix_mode_picks_the_outcome_from_the_last_digit(to: str, outcome: str) -> None:
    """In suffix mode the last digit of To decides the outcome (non-digits read)."""
    assert world.World(SandboxConfig()).chat_outcome(to) == outcome


def test_mix_mode_is_seeded_and_follows_the_weights() -> None:
    """Mix mode draws from the weights, and the same seed gives the same sequence."""
    config = SandboxConfig(mode="mix", seed=7, weights={"read": 3, "failed": 1})
    one, two = world.World(config), world.World(config)
    draws = [one.chat_outcome("1") for _ in range(400)]
    assert draws == [two.chat_outcome("1") for _ in range(400)]
    counts = collections.Counter(draws)
    assert set(counts) == {"read", "failed"}
    assert 250 < counts[world.Outcome.READ] < 350


def test_sms_fails_for_numbers_ending_in_55() -> None:
    """An SMS to a number ending in 55 fails; others are delivered in suffix mode."""
    w = world.World(SandboxConfig())
    assert w.sms_fails("6591234555")
    assert not w.sms_fails("6591234565")


def test_chat_report_has_the_http_push_shape() -> None:
    """A Failed template report carries the §2.3 fields, the error code and no conversation."""
    report = world.chat_report(SEND, "Failed", 1691043638000)
    assert report == {
        "Status": "Failed",
        "MessageId": "2023078469463703000001",
        "TaskId": "task-1",
        "From": "8613100000008",
        "To": "8613800000008",
        "Timestamp": 1691043638000,
        "MsgFrameType": "template",
        "Type": "TEMPLATE",
        "OriginPhoneNumber": "8613100000008",
        "TemplateCode": "820561547132813184",
        "Language": "en",
        "ErrorCode": "131026",
        "ErrorDescription": "131026:Receiver is incapable of receiving this message(Message Undeliverable.)",
    }
    read = world.chat_report(SEND, "Read", 1, with_task_id=False)
    assert "TaskId" not in read
    assert (read["ConversationId"], read["ConversationType"]) == ("722222011110000", "utility")


def test_international_sms_report_uses_alibabas_date_format() -> None:
    """SendDate/ReceiveDate are RFC 2822 in +0800, Status "1"/"2", TaskId echoed."""
    sent = dt.datetime(2021, 11, 25, 2, 25, 0, tzinfo=dt.UTC)
    report = world.intl_sms_report(
        to="8521111",
        message_id="123",
        task_id="67890",
        segments=2,
        failed=False,
        sent_at=sent,
        received_at=sent + dt.timedelta(seconds=33),
    )
    assert report == {
        "To": "8521111",
        "SendDate": "Thu, 25 Nov 2021 10:25:00 +0800",
        "ReceiveDate": "Thu, 25 Nov 2021 10:25:33 +0800",
        "Status": "1",
        "ErrorCode": "success",
        "ErrorDescription": "success",
        "TaskId": "67890",
        "SmsSize": "2",
        "MessageId": "123",
    }


def test_domestic_sms_report_shape() -> None:
    """The SmsReport record has China-time timestamps, a boolean success and echoes out_id."""
    sent = dt.datetime(2017, 1, 1, 0, 0, 0, tzinfo=world.CHINA)
    report = world.domestic_sms_report(
        phone="13811110000",
        biz_id="1^0",
        out_id="o-1",
        failed=True,
        sent_at=sent,
        received_at=sent,
        segments=1,
    )
    assert report["send_time"] == "2017-01-01 00:00:00"
    assert report["success"] is False
    assert (report["biz_id"], report["out_id"], report["sms_size"]) == ("1^0", "o-1", "1")


@pytest.mark.parametrize(("text", "parts"), [("a" * 160, 1), ("a" * 161, 2), ("你" * 70, 1), ("你" * 71, 2)])
def test_segments(text: str, parts: int) -> None:
    """Segment counts follow the GSM 160/153 and UCS-2 70/67 limits."""
    assert world.segments(text) == parts


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "chaos"},
        {"qps": 0},
        {"weights": {"bogus": 1}},
        {"duplicate_rate": 1.5},
        {"receipt_delay_ms": (10, 5)},
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, object]) -> None:
    """An invalid SandboxConfig raises ValueError at construction."""
    with pytest.raises(ValueError, match="invalid SandboxConfig"):
        SandboxConfig(**kwargs)  # type: ignore[arg-type]
