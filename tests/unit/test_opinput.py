"""Operator input parsing (pure): search parameters, times, cursors, action bodies."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from fallback_daemon.core import errors
from fallback_daemon.ops import opinput


def test_cursor_round_trips_and_rejects_forgeries() -> None:
    """A cursor decodes to the (created_at, id) it encodes; anything else is a 400 naming `cursor`."""
    at, mid = dt.datetime(2025, 1, 31, 9, 0, 0, 123456, tzinfo=dt.UTC), uuid.uuid4()
    assert opinput.decode_cursor(opinput.encode_cursor(at, mid)) == (at, mid)
    for bad in ("", "abc", "W10", opinput.encode_cursor(at, mid)[:-3]):
        with pytest.raises(errors.ValidationError) as exc:
            opinput.decode_cursor(bad)
        assert exc.value.field == "cursor"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-31T09:00:00Z", dt.datetime(2025, 1, 31, 9, tzinfo=dt.UTC)),
        ("2025-01-31T17:00:00+08:00", dt.datetime(2025, 1, 31, 9, tzinfo=dt.UTC)),
        ("1738314000", dt.datetime(2025, 1, 31, 9, tzinfo=dt.UTC)),
    ],
)
def test_times_are_rfc3339_with_offset_or_unix_seconds(value: str, expected: dt.datetime) -> None:
    """since/until accept RFC 3339 with an offset, or Unix seconds, and become aware UTC datetimes."""
    assert opinput.parse_time("since", value) == expected


@pytest.mark.parametrize("value", ["2025-01-31T09:00:00", "yesterday", "nan", "-1", "1e30"])
def test_naive_or_odd_times_are_refused(value: str) -> None:
    """A time without an offset, a word, NaN or an out-of-range number is refused naming the parameter."""
    with pytest.raises(errors.ValidationError) as exc:
        opinput.parse_time("until", value)
    assert exc.value.field == "until"


def test_search_normalises_and_splits() -> None:
    """A phone loses '+' and spaces; states and channels are comma lists; the default limit applies."""
    s = opinput.parse_search(
        [("to", " +65 9123 4560"), ("chat_state", "sending,unknown"), ("channel", "viber")]
    )
    assert (s.to, s.chat_state, s.channel, s.limit) == ("6591234560", ("sending", "unknown"), ("viber",), 50)


def test_every_documented_parameter_is_accepted() -> None:
    """Each SEARCH_PARAMS name parses with a valid value (the list is the parser's contract)."""
    valid = {
        "id": str(uuid.uuid4()), "provider_message_id": "m1", "task_id": "t1", "to": "6591234560",
        "chat_state": "read", "fallback_state": "armed", "channel": "whatsapp", "since": "0", "until": "1",
        "limit": "5", "cursor": opinput.encode_cursor(dt.datetime.now(dt.UTC), uuid.uuid4()),
    }  # fmt: skip
    assert set(valid) == {p.name for p in opinput.SEARCH_PARAMS}
    opinput.parse_search(valid.items())


def test_action_body_defaults_and_limits() -> None:
    """An empty body means actor "operator"; an over-long reason or a bad actor is refused naming it."""
    assert opinput.parse_action({}) == opinput.Action(actor="operator", reason=None)
    assert opinput.parse_action({"actor": "alice@ops", "reason": "why"}).detail() == {
        "actor": "alice@ops", "reason": "why"}  # fmt: skip
    for body, field in (({"reason": "x" * 501}, "reason"), ({"actor": "a\nb"}, "actor"), ([], "body")):
        with pytest.raises(errors.ValidationError) as exc:
            opinput.parse_action(body)
        assert exc.value.field == field
