"""Pure parts of the outcome events: Standard Webhooks signing, secrets, the retry schedule, input checks."""

from __future__ import annotations

import base64

import pytest

from fallback_daemon import config
from fallback_daemon.core import errors
from fallback_daemon.engine import webhooks

# The test vector of the Standard Webhooks specification (its reference libraries and Svix's use it too).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


class TestSigning:
    def test_the_specification_vector(self) -> None:
        assert webhooks.sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE

    def test_verify_accepts_the_vector_among_several_signatures(self) -> None:
        headers = {
            "webhook-id": SPEC_ID,
            "webhook-timestamp": str(SPEC_TS),
            "webhook-signature": f"v1,bm9wZQ== {SPEC_SIGNATURE}",
        }
        assert webhooks.verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TS + 10)

    @pytest.mark.parametrize(
        ("change", "now"),
        [
            ({"webhook-id": "msg_other"}, SPEC_TS),
            ({"webhook-timestamp": str(SPEC_TS + 1)}, SPEC_TS),
            ({"webhook-signature": "v1,AAAA"}, SPEC_TS),
            ({}, SPEC_TS + 301),  # too old: a replayed capture
            ({}, SPEC_TS - 301),  # from the future
        ],
    )
    def test_verify_refuses(self, change: dict[str, str], now: int) -> None:
        headers = {
            "webhook-id": SPEC_ID,
            "webhook-timestamp": str(SPEC_TS),
            "webhook-signature": SPEC_SIGNATURE,
            **change,
        }
        assert not webhooks.verify(SPEC_SECRET, headers, SPEC_BODY, now=now)

    def test_a_changed_body_fails(self) -> None:
        sig = webhooks.sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY + b" ")
        assert sig != SPEC_SIGNATURE

    def test_new_secrets_are_standard_and_distinct(self) -> None:
        a, b = webhooks.new_secret(), webhooks.new_secret()
        assert a != b and a.startswith("whsec_")
        assert webhooks.secret_key(a) == base64.b64decode(a.removeprefix("whsec_"))
        assert len(webhooks.secret_key(a)) == 24

    @pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!", "whsec_AAAA", "whsec_"])
    def test_bad_secrets(self, bad: str) -> None:
        with pytest.raises(ValueError, match=r"whsec_|bytes"):
            webhooks.secret_key(bad)

    def test_ids_are_stable(self) -> None:
        assert webhooks.webhook_id(42) == webhooks.webhook_id(42) == "msg_42"


class TestSchedule:
    def test_the_default_is_svix_like(self) -> None:
        """Immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; failed after the eighth attempt."""
        s = webhooks.DEFAULT_SCHEDULE
        assert s[0] == 0
        delays = [webhooks.retry_delay(n, s) for n in range(1, 9)]
        assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000, None]
        assert config.Settings().webhook_retry_schedule == s

    def test_a_short_schedule_from_the_environment(self) -> None:
        settings = config.load({"FALLBACK_WEBHOOK_RETRY_SCHEDULE": "0, 0.5,2"})
        assert settings.webhook_retry_schedule == (0.0, 0.5, 2.0)
        assert webhooks.retry_delay(1, settings.webhook_retry_schedule) == 0.5
        assert webhooks.retry_delay(3, settings.webhook_retry_schedule) is None

    @pytest.mark.parametrize("raw", ["soon", "0,-1", "0,,5", "0,999999999"])
    def test_bad_schedules_name_the_variable(self, raw: str) -> None:
        with pytest.raises(errors.ConfigError, match="FALLBACK_WEBHOOK_RETRY_SCHEDULE"):
            config.load({"FALLBACK_WEBHOOK_RETRY_SCHEDULE": raw})

    def test_attempts_count_from_one(self) -> None:
        with pytest.raises(ValueError, match="from 1"):
            webhooks.retry_delay(0, webhooks.DEFAULT_SCHEDULE)


class TestEndpointInput:
    def test_a_secret_is_generated_when_absent(self) -> None:
        checked = webhooks.check_endpoint(webhooks.NewEndpoint(url="https://app.example/hooks"))
        assert checked.secret is not None and checked.secret.startswith("whsec_")
        assert checked.event_types == [] and checked.channels == []

    def test_duplicates_collapse(self) -> None:
        body = webhooks.NewEndpoint(url="http://h/x", event_types=["message.sent", "message.sent"])
        assert webhooks.check_endpoint(body).event_types == ["message.sent"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"url": "javascript:alert(1)"}, "url"),
            ({"url": "http://h/x#frag"}, "url"),
            ({"url": "http:///nohost"}, "url"),
            ({"url": "http://h/ x"}, "url"),
            ({"url": "http://h/x", "secret": SPEC_SECRET[6:]}, "secret"),
            ({"url": "http://h/x", "event_types": ["fallback.exploded"]}, "event_types"),
            ({"url": "http://h/x", "channels": ["WhatsApp"]}, "channels"),
            ({"url": "http://h/x", "cust_space_ids": [""]}, "cust_space_ids"),
            ({"url": "http://h/x", "description": "x" * 256}, "description"),
        ],
    )
    def test_refused_naming_the_field(self, body: dict[str, object], field: str) -> None:
        with pytest.raises(errors.ValidationError) as info:
            webhooks.check_endpoint(webhooks.convert(body, webhooks.NewEndpoint))
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"url": 1}, "url"),
            ({"url": "http://h", "channels": "whatsapp"}, "channels"),
            ({"url": "http://h", "cust_space_ids": [1]}, "cust_space_ids"),
            ({"url": "http://h", "extra": True}, "extra"),
            ([], "body"),
        ],
    )
    def test_types_are_checked_before_anything_else(self, body: object, field: str) -> None:
        with pytest.raises(errors.ValidationError) as info:
            webhooks.convert(body, webhooks.NewEndpoint)
        assert info.value.field == field

    def test_every_event_type_is_known_to_the_outbox_trigger(self) -> None:
        """The trigger (migration 0008) emits exactly the names the API accepts in event_types."""
        from fallback_daemon.db import sql

        text = (sql.MIGRATIONS / "0008_webhooks.sql").read_text()
        for name in webhooks.EVENT_TYPES:
            assert f"'{name}'" in text, name
