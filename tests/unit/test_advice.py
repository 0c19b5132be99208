"""Duration advice (fallback_daemon/ops/advice.py) on samples whose right answers are worked out below."""

from __future__ import annotations

import pytest

from fallback_daemon.ops import advice
from fallback_daemon.ops.advice import Sample

# Ten WhatsApp messages to Singapore (+65), each sent 1 s after it was accepted. Times are seconds after
# acceptance. #9 was never delivered. #0-4 had FallBackDuration 600, #5-9 had 60, so #7 (61 s) and #8 (121 s)
# were delivered after their SMS: two double deliveries in the 60 s bucket.
DELIVERED = [2, 3, 4, 5, 6, 11, 31, 61, 121, None]
READ = [4, 6, 10, 200, None, None, None, None, None, None]


def samples(to: str = "6591234567", channel: str = "whatsapp") -> list[Sample]:
    return [
        Sample(
            channel=channel,
            to=to,
            sent_s=1.0,
            delivered_s=None if d is None else float(d),
            read_s=None if r is None else float(r),
            timer_duration_s=600 if i < 5 else 60,
            double_delivered=i in (7, 8),
        )
        for i, (d, r) in enumerate(zip(DELIVERED, READ, strict=True))
    ]


def test_distributions_are_nearest_rank_from_the_send() -> None:
    """sent → delivered = [1, 2, 3, 4, 5, 10, 30, 60, 120] (9 values): p50 is the 5th (5), p90 and p99 the
    9th (120); sent → read = [3, 5, 9, 199]: p50 the 2nd (5), p90 the 4th (199). Histogram by upper edge."""
    [group] = advice.analyse(samples(), target=0.1)
    d = group["sent_to_delivered"]
    assert (d["count"], d["p50_s"], d["p90_s"], d["p99_s"], d["max_s"]) == (9, 5.0, 120.0, 120.0, 120.0)
    hist = {h["le_s"]: h["count"] for h in d["histogram"]}
    assert hist == {1: 1, 5: 4, 10: 1, 30: 1, 60: 1, 120: 1, 300: 0, 600: 0, 1800: 0, 3600: 0, 21600: 0,
                    86400: 0, None: 0}  # fmt: skip
    r = group["sent_to_read"]
    assert (r["count"], r["p50_s"], r["p90_s"], r["p99_s"]) == (4, 5.0, 199.0, 199.0)
    assert (group["channel"], group["prefix"], group["messages"]) == ("whatsapp", "65", 10)


def test_observed_double_deliveries_by_duration_bucket() -> None:
    """60 s bucket: 5 messages, 2 doubles (0.4); 600 s bucket: 5 messages, none."""
    [group] = advice.analyse(samples(), target=0.1)
    assert group["double_delivery_by_duration"] == [
        {"from_s": 60, "to_s": 120, "messages": 5, "double_delivered": 2, "rate": 0.4},
        {"from_s": 600, "to_s": 1800, "messages": 5, "double_delivered": 0, "rate": 0.0},
    ]


def test_advice_for_a_target_rate() -> None:
    """Target 0.1 of 10 samples allows 1 late success. Deliveries sorted: 2 3 4 5 6 11 31 61 121: at most one
    later than D means D = 61 (only 121 is later) → FallBackDuration 61, predicted 1/10. Reads 4 6 10 200:
    D = 10, below the minimum → 60 (only 200 is later: 1/10). Target 0.01 allows none: D = 121."""
    [group] = advice.analyse(samples(), target=0.1)
    assert group["advice"] == {
        "target": 0.1,
        "undelivered": {
            "needed_s": 61.0,
            "suggested_duration_s": 61,
            "reachable": True,
            "predicted_rate": 0.1,
        },
        "unread": {"needed_s": 10.0, "suggested_duration_s": 60, "reachable": True, "predicted_rate": 0.1},
    }
    [strict] = advice.analyse(samples(), target=0.01)
    assert strict["advice"]["undelivered"]["suggested_duration_s"] == 121
    assert strict["advice"]["undelivered"]["predicted_rate"] == 0.0
    assert strict["advice"]["unread"]["suggested_duration_s"] == 200


def test_predicted_rate_for_each_candidate_duration() -> None:
    """At 60 s: 61 and 121 are later (0.2), reads: 200 (0.1); at 120 s: 121 (0.1) and 200 (0.1); at 300 s
    nothing is later."""
    [group] = advice.analyse(samples(), target=0.1)
    by = {
        row["duration_s"]: (row["undelivered"], row["unread"]) for row in group["predicted_rate_by_duration"]
    }
    assert (by[60], by[120], by[300], by[43200]) == ((0.2, 0.1), (0.1, 0.1), (0.0, 0.0), (0.0, 0.0))


def test_timer_scale_is_divided_out() -> None:
    """With the sandbox's timer scale 0.5 a FallBackDuration D runs D/2 s: 61 s real needs D = 122."""
    [group] = advice.analyse(samples(), target=0.1, timer_scale=0.5)
    assert group["advice"]["undelivered"]["needed_s"] == 122.0
    assert group["advice"]["undelivered"]["suggested_duration_s"] == 122
    assert group["advice"]["undelivered"]["predicted_rate"] == 0.1


def test_unreachable_target_and_no_data() -> None:
    """A success 50,000 s after acceptance with nothing allowed late: even 43200 s misses the target."""
    late = Sample(channel="viber", to="4420", sent_s=0, delivered_s=50000, read_s=None, timer_duration_s=None)
    [group] = advice.analyse([late], target=0.01)
    assert group["advice"]["undelivered"] == {
        "needed_s": 50000.0,
        "suggested_duration_s": 43200,
        "reachable": False,
        "predicted_rate": 1.0,
    }
    assert group["advice"]["unread"]["suggested_duration_s"] == 60  # no reads: nothing can be late
    assert group["sent_to_read"]["p50_s"] is None and group["double_delivery_by_duration"] == []
    assert advice.analyse([], target=0.01) == []


def test_groups_by_channel_and_country_code_largest_first_or_by_one_prefix() -> None:
    mixed = samples() + samples(to="447700900123")[:3] + samples(to="6591234567", channel="viber")[:2]
    assert [(g["channel"], g["prefix"], g["messages"]) for g in advice.analyse(mixed, target=0.1)] == [
        ("whatsapp", "65", 10),
        ("whatsapp", "44", 3),
        ("viber", "65", 2),
    ]
    one = advice.analyse(mixed, target=0.1, prefix="6")
    assert [(g["channel"], g["prefix"], g["messages"]) for g in one] == [
        ("whatsapp", "6", 13),
        ("viber", "6", 2),
    ]


@pytest.mark.parametrize(
    ("number", "code"),
    [("6591234567", "65"), ("14155550100", "1"), ("+971501234567", "971"), ("79001234567", "7"),
     ("447700900123", "44"), ("8613800000000", "86"), ("85212345678", "852"), ("2348012345678", "234")],
)  # fmt: skip
def test_country_code(number: str, code: str) -> None:
    assert advice.country_code(number) == code


def test_needed_time_and_nearest_rank_edges() -> None:
    assert advice.needed_time([], 100, 0.01) == 0.0
    assert advice.needed_time([5.0, 1.0, 3.0], 300, 0.01) == 0.0  # 3 may be late: all of them
    assert advice.needed_time([5.0, 1.0, 3.0, 7.0], 300, 0.01) == 1.0  # 3 of 4 later than 1
    assert advice.nearest_rank([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert advice.nearest_rank([], 0.5) is None


def test_render_names_the_advice() -> None:
    body = {
        "window_s": 7 * 86400,
        "target": 0.1,
        "sampled": 10,
        "groups": advice.analyse(samples(), target=0.1),
    }
    text = advice.render(body)
    assert "whatsapp +65   10 message(s)" in text
    assert "advice, rule undelivered: FallBackDuration 61 s  (needed 61 s, predicted 10.0 %)" in text
    assert "FallBackDuration 60-120 s: 2 of 5 double delivered (40.0 %)" in text
