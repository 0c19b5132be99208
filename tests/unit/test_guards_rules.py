"""The pure parts of the guards: quiet windows, prefix matching, the verdict order and the budget arithmetic,
error classes, the guard settings and the opt-out list parser."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from fallback_daemon import config
from fallback_daemon.core import errorclasses, errors, validation
from fallback_daemon.engine import guards

UTC = dt.UTC
SHANGHAI = "Asia/Shanghai"


def cand(to: str = "6591234567", **kw: object) -> guards.Candidate:
    return guards.Candidate(id=uuid.uuid4(), to=to, **kw)  # type: ignore[arg-type]


def quiet(prefix: str, start: str, end: str, tz: str) -> guards.QuietHours:
    h1, m1 = map(int, start.split(":"))
    h2, m2 = map(int, end.split(":"))
    return guards.QuietHours(prefix=prefix, start=h1 * 60 + m1, end=h2 * 60 + m2, tz=tz)


class TestQuietUntil:
    NIGHT = (quiet("86", "22:00", "08:00", SHANGHAI),)

    @pytest.mark.parametrize(
        ("utc", "opens"),
        [
            # 23:30 in Shanghai (15:30 UTC): inside, opens 08:00 the next local day = 00:00 UTC next day
            (dt.datetime(2026, 3, 1, 15, 30, tzinfo=UTC), dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),
            # 03:00 in Shanghai (19:00 UTC the day before): inside, opens 08:00 the same local day
            (dt.datetime(2026, 3, 1, 19, 0, tzinfo=UTC), dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),
            # exactly 22:00 local: inside (start is inclusive)
            (dt.datetime(2026, 3, 1, 14, 0, tzinfo=UTC), dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),
            # exactly 08:00 local: outside (end is exclusive)
            (dt.datetime(2026, 3, 2, 0, 0, tzinfo=UTC), None),
            # noon local: outside
            (dt.datetime(2026, 3, 2, 4, 0, tzinfo=UTC), None),
        ],
    )
    def test_a_window_across_midnight(self, utc: dt.datetime, opens: dt.datetime | None) -> None:
        """22:00-08:00 Shanghai holds from 22:00 to 07:59 local and opens at 08:00 local."""
        got = guards.quiet_until("8613800000000", utc, self.NIGHT)
        assert (got[1] if got else None) == opens

    def test_a_window_inside_one_day(self) -> None:
        """12:00-14:00 London holds a 13:00 fallback until 14:00 the same day, summer time included."""
        lunch = (quiet("44", "12:00", "14:00", "Europe/London"),)
        at = dt.datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # 13:00 BST
        got = guards.quiet_until("447700900000", at, lunch)
        assert got is not None and got[1] == dt.datetime(2026, 7, 1, 13, 0, tzinfo=UTC)
        assert guards.quiet_until("447700900000", dt.datetime(2026, 7, 1, 14, 0, tzinfo=UTC), lunch) is None

    def test_other_prefixes_and_the_longest_match(self) -> None:
        """Only numbers under the prefix are held; the longest matching prefix picks the window."""
        windows = (quiet("1", "00:00", "23:59", "UTC"), quiet("1876", "01:00", "02:00", "UTC"))
        at = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        assert guards.quiet_until("6591234567", at, windows) is None
        assert guards.quiet_until("18765550100", at, windows) is None  # 1876's window, not 1's
        got = guards.quiet_until("12125550100", at, windows)
        assert got is not None and got[0].prefix == "1"

    def test_naive_now_is_refused(self) -> None:
        with pytest.raises(ValueError, match="naive"):
            guards.quiet_until("86138", dt.datetime(2026, 1, 1), self.NIGHT)


class TestDecide:
    NOW = dt.datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # noon in Shanghai

    def test_order_opt_out_then_deny_then_gate(self) -> None:
        """An opted-out number is dropped before the deny-list, the gate, quiet hours or a budget look."""
        cfg = guards.GuardConfig(deny_prefixes=("882",), quiet_hours=(quiet("882", "00:00", "23:59", "UTC"),))
        both = cand("88212345678", opted_out=True, gated=True)
        denied = cand("88212345679", gated=True)
        gated = cand("6591234567", gated=True)
        [v1, v2, v3], spent = guards.decide([both, denied, gated], [], cfg, self.NOW)
        assert (v1.action, v1.guard, v1.kind) == ("drop", "opt_out", "fallback_blocked")
        assert (v2.action, v2.guard, v2.detail["prefix"]) == ("drop", "deny_prefix", "882")
        assert (v3.action, v3.hold_reason, v3.kind) == ("hold", "feed_down", "fallback_held")
        assert spent == {}

    def test_the_gate_holds_only_timer_fallbacks(self) -> None:
        """A failure-triggered fallback goes through a closed gate (as before the guards existed)."""
        [v], _ = guards.decide(
            [cand(gated=True, fire_reason="send_failed")], [], guards.GuardConfig(), self.NOW
        )
        assert (v.action, v.detail["reason"]) == ("fire", "send_failed")

    def test_quiet_hours_defer_and_urgent_goes_through(self) -> None:
        """Inside the window: deferred to its end (no budget spent); FallBackUrgent fires and spends."""
        cfg = guards.GuardConfig(quiet_hours=(quiet("65", "11:00", "13:00", "UTC"),))
        budget = [guards.Budget(scope="global", key="", limit=5, used=0)]
        at = dt.datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
        [later, now], spent = guards.decide([cand(), cand(urgent=True)], budget, cfg, at)
        assert (later.action, later.kind, later.guard) == ("defer", "fallback_deferred", "quiet_hours")
        assert later.until == dt.datetime(2026, 3, 2, 13, 0, tzinfo=UTC).timestamp()
        assert later.detail["until"] == "2026-03-02T13:00:00+00:00"
        assert now.action == "fire"
        assert spent == {("global", ""): 1}

    def test_budget_edge_earliest_first(self) -> None:
        """A budget with 2 left fires the first two of a batch and blocks the rest, naming the limit."""
        budget = [guards.Budget(scope="global", key="", limit=10, used=8)]
        verdicts, spent = guards.decide([cand() for _ in range(4)], budget, guards.GuardConfig(), self.NOW)
        assert [v.action for v in verdicts] == ["fire", "fire", "hold", "hold"]
        blocked = verdicts[2]
        assert (blocked.kind, blocked.guard, blocked.hold_reason) == ("fallback_blocked", "budget", "budget")
        assert (blocked.detail["limit"], blocked.detail["used"], blocked.detail["action"]) == (10, 10, "hold")
        assert spent == {("global", ""): 2}

    def test_budget_action_drop(self) -> None:
        """FALLBACK_BUDGET_ACTION=drop suppresses instead of holding."""
        cfg = guards.GuardConfig(budget_action="drop")
        budget = [guards.Budget(scope="global", key="", limit=0, used=0)]
        [v], _ = guards.decide([cand()], budget, cfg, self.NOW)
        assert (v.action, v.hold_reason, v.detail["action"]) == ("drop", None, "drop")

    def test_a_blocked_fallback_spends_no_other_budget(self) -> None:
        """Over its prefix budget, a fallback spends nothing of the global one, so the next number fires."""
        budgets = [
            guards.Budget(scope="global", key="", limit=2, used=0),
            guards.Budget(scope="prefix", key="1876", limit=0, used=0),
            guards.Budget(scope="space", key="shop-a", limit=1, used=0),
        ]
        batch = [cand("18765550100"), cand("6591234567", space="shop-a"), cand("6591234568", space="shop-a")]
        verdicts, spent = guards.decide(batch, budgets, guards.GuardConfig(), self.NOW)
        assert [(v.action, v.detail.get("scope")) for v in verdicts] == [
            ("hold", "prefix"),
            ("fire", None),
            ("hold", "space"),
        ]
        assert spent == {("global", ""): 1, ("space", "shop-a"): 1}

    def test_every_matching_prefix_budget_counts(self) -> None:
        """Budgets on 1 and on 1876 both count a Jamaican number; a US number only the first."""
        budgets = [
            guards.Budget(scope="prefix", key="1", limit=10, used=0),
            guards.Budget(scope="prefix", key="1876", limit=10, used=0),
        ]
        _, spent = guards.decide(
            [cand("18765550100"), cand("12125550100")], budgets, guards.GuardConfig(), self.NOW
        )
        assert spent == {("prefix", "1"): 2, ("prefix", "1876"): 1}

    def test_error_class_is_named_on_failure_fallbacks(self) -> None:
        """A Failed receipt's 131047 fires at once, named outside_window (never deliverable)."""
        failed = cand(fire_reason="failed_receipt", error_code="131047")
        timer = cand()
        [v1, v2], _ = guards.decide([failed, timer], [], guards.GuardConfig(), self.NOW)
        assert (v1.action, v1.error_class) == ("fire", "outside_window")
        assert (v1.detail["error_class"], v1.detail["never_deliverable"]) == ("outside_window", True)
        assert v2.error_class is None and "error_class" not in v2.detail


class TestErrorClasses:
    @pytest.mark.parametrize(
        ("code", "name", "never"),
        [
            ("131047", "outside_window", True),
            ("131026", "not_on_channel", True),
            ("132015", "template_unusable", True),
            ("132016", "template_unusable", True),
            ("DetailError.TemplateNotExist", "template_unusable", True),
            ("131050", "marketing_opt_out", True),
            ("InvalidParameter.PhoneNumberError", "invalid_number", True),
            ("131049", "ecosystem_limit", False),
            ("131000", "unclassified", False),
            (None, "unclassified", False),
        ],
    )
    def test_classify_chat(self, code: str | None, name: str, never: bool) -> None:
        cls = errorclasses.classify_chat(code)
        assert (cls.name, cls.never_deliverable) == (name, never)

    def test_chat_code_from_a_stored_error(self) -> None:
        """The code heads a PermanentError's text; a sentence is not a code."""
        assert errorclasses.chat_code("InvalidParameter.PhoneNumberError: bad number") == (
            "InvalidParameter.PhoneNumberError"
        )
        assert errorclasses.chat_code("retries exhausted: HTTP503: x") is None
        assert errorclasses.chat_code(None) is None

    def test_sms_opted_out(self) -> None:
        """Opt-out codes and SNS's text count; the keyword blacklist (content) does not."""
        assert errorclasses.sms_opted_out("W-BLACK")
        assert errorclasses.sms_opted_out("DESTINATION_PHONE_NUMBER_OPTED_OUT")
        assert errorclasses.sms_opted_out("InvalidParameter", "Phone number is opted out")
        assert not errorclasses.sms_opted_out("isv.BLACK_KEY_CONTROL_LIMIT", "isv.BLACK_KEY_CONTROL_LIMIT: x")
        assert not errorclasses.sms_opted_out(None)

    def test_class_names_are_a_closed_set(self) -> None:
        assert "unclassified" in errorclasses.CLASS_NAMES
        assert set(errorclasses.CLASS_NAMES) == {c.name for c in errorclasses.CHAT.values()} | {
            "unclassified"
        }


class TestSettings:
    def test_quiet_hours_and_deny_prefixes_parse(self) -> None:
        s = config.load(
            {
                "FALLBACK_QUIET_HOURS": "86=22:00-08:00@Asia/Shanghai, +44=21:30-07:00@Europe/London",
                "FALLBACK_SMS_DENY_PREFIXES": "882,+883, 881",
                "FALLBACK_BUDGET_TZ": "Asia/Singapore",
                "FALLBACK_BUDGET_ACTION": "drop",
            }
        )
        assert s.quiet_hours == (("86", 1320, 480, "Asia/Shanghai"), ("44", 1290, 420, "Europe/London"))
        assert s.sms_deny_prefixes == ("882", "883", "881")
        cfg = guards.GuardConfig.from_settings(s)
        assert (cfg.budget_tz, cfg.budget_action, cfg.quiet_hours[0].describe()) == (
            "Asia/Singapore",
            "drop",
            "22:00-08:00@Asia/Shanghai",
        )

    @pytest.mark.parametrize(
        ("var", "value", "problem"),
        [
            ("FALLBACK_QUIET_HOURS", "86=22:00-08:00", "must look like"),
            ("FALLBACK_QUIET_HOURS", "86=25:00-08:00@UTC", "HH:MM"),
            ("FALLBACK_QUIET_HOURS", "86=08:00-08:00@UTC", "empty"),
            ("FALLBACK_QUIET_HOURS", "86=22:00-08:00@Mars/Base", "IANA"),
            ("FALLBACK_QUIET_HOURS", "86=22:00-08:00@UTC,86=01:00-02:00@UTC", "two quiet windows"),
            ("FALLBACK_SMS_DENY_PREFIXES", "88a", "digits"),
            ("FALLBACK_BUDGET_TZ", "Nowhere/Town", "IANA"),
            ("FALLBACK_BUDGET_ACTION", "maybe", "hold, drop"),
        ],
    )
    def test_bad_values_name_the_variable(self, var: str, value: str, problem: str) -> None:
        with pytest.raises(errors.ConfigError, match=var) as exc:
            config.load({var: value})
        assert problem in str(exc.value)


class TestInput:
    def test_fallback_urgent_is_a_boolean(self) -> None:
        """FallBackUrgent: true/false accepted (absent = false), anything else a 400 naming the field; never
        sent to CAMS."""
        body = {
            "ChannelType": "whatsapp",
            "Type": "message",
            "MessageType": "text",
            "From": "6580000000",
            "To": "6591234567",
            "Content": {"text": "hi"},
        }
        assert validation.validate_send(body).urgent is False
        req = validation.validate_send({**body, "FallBackUrgent": True})
        assert req.urgent is True and "FallBackUrgent" not in req.params
        for bad in ("true", 1, {}):
            with pytest.raises(errors.ValidationError) as exc:
                validation.validate_send({**body, "FallBackUrgent": bad})
            assert exc.value.field == "FallBackUrgent"

    def test_number_lists(self) -> None:
        """Newline or CSV (first column), header and comments skipped, duplicates once; bad lines named."""
        text = "number,reason\n+65 9123 4567,asked\n6591234567\n# a comment\n\n447700900123,x\n"
        assert guards.parse_number_list(text) == (["6591234567", "447700900123"], [])
        numbers, problems = guards.parse_number_list("6591234567\nhello\n12\n")
        assert numbers == ["6591234567"] and [p[0] for p in problems] == [2, 3]
        assert guards.normalize_number("+1-212-555-0100") == "12125550100"
        assert guards.normalize_number("12345") is None
