"""Masking by value pattern as well as by key name (issue 10): a phone number under any key is masked."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fallback_daemon import logs


def run_chain(**event: Any) -> dict[str, Any]:
    """The event as the daemon's processor chain leaves it for the renderer."""
    out: Any = dict(event)
    for processor in logs.processors():
        out = processor(None, "info", out)
    return dict(out)


@pytest.mark.parametrize(
    ("key", "value", "masked"),
    [
        ("actor", "6591234567", "659*****67"),  # an operator actor that is a phone number
        ("status", "6591234567", "659*****67"),  # a receipt Status holding one
        ("error_code", "+6591234567", "659*****67"),
        ("outcome", "refused for 6591234567 today", "refused for 659*****67 today"),
        ("to", 6591234567, "659*****67"),  # a phone key: even as a number
    ],
)
def test_phone_numbers_are_masked_under_any_key(key: str, value: Any, masked: str) -> None:
    """A standalone 8-15 digit run is masked whatever the key is called."""
    assert run_chain(event="operator_action", **{key: value})[key] == masked


def test_nested_receipt_fields_are_masked_by_value() -> None:
    """Receipt fields nested in a detail mapping (Status, ErrorCode) are masked by value too."""
    out = run_chain(event="decision", detail={"Status": "6591234567", "ErrorCode": ["x", "6591234567"]})
    assert out["detail"] == {"Status": "659*****67", "ErrorCode": ["x", "659*****67"]}


@pytest.mark.parametrize(
    "value",
    [
        "12345678-1234-4234-8234-123456789012",  # a UUID whose first group is 8 digits
        "2026-12-02T01:02:03.123456+00:00",
        "900619746936498440^0",  # an 18-digit SMS BizId
        "lateness 1234567 ms",  # 7 digits
        "v1.12345678",
    ],
)
def test_ids_times_and_short_numbers_are_left_alone(value: str) -> None:
    """Ids, timestamps and numbers that are not phone-shaped keep their value."""
    assert run_chain(event="x", detail_text=value)["detail_text"] == value


def test_mask_text_masks_phones_and_scrubs_secrets() -> None:
    """mask_text (used for every error answer) masks numbers and credential shapes in one text."""
    assert logs.mask_text("To 6591234567 refused, token=abcdef123456") == "To 659*****67 refused, token=***"


# Issue 11: mask_phones and scrub_secrets test the event's strings joined before scanning any one of them;
# the fast path must never skip a string the plain per-string scan would change.
PHONE_ALPHABET = "0123456789+-.*_ aZ:/=\n\u0663\u00e9"  # with an Arabic-Indic digit and a non-ASCII letter


def reference_mask(event: dict[str, Any]) -> dict[str, Any]:
    """What mask_phones did before its fast path: every string of 6+ characters substituted."""
    out = dict(event)
    for key, value in out.items():
        if isinstance(value, str) and len(value) >= 6:
            pattern = logs._DIGITS if key in logs.PHONE_KEYS else logs._PHONE_IN_TEXT
            out[key] = pattern.sub(logs._mask_match, value)
    return out


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["event", "to", "a", "b", "c"]), st.text(PHONE_ALPHABET, max_size=30)))
def test_mask_phones_fast_path_matches_the_plain_scan(event: dict[str, Any]) -> None:
    """Any mix of fields: the same result as substituting each string on its own."""
    assert logs.mask_phones(None, "info", dict(event)) == reference_mask(event)


@given(st.text(PHONE_ALPHABET, max_size=40))
@settings(max_examples=400, deadline=None)
def test_may_hold_phone_never_misses_a_match(text: str) -> None:
    """The cheap pre-test is a necessary condition of the regex."""
    if logs._PHONE_IN_TEXT.search(text):
        assert logs._may_hold_phone(text)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("6591234567", "659*****67"),  # the whole string
        ("x\n6591234567", "x\n659*****67"),  # after a newline (the join separator)
        ("6591234567\nx", "659*****67\nx"),
        ("(6591234567)", "(659*****67)"),
        ("\u0663" * 10, "\u0663\u0663\u0663*****\u0663\u0663"),  # Unicode digits take the regex path
        ("caf\u00e9 6591234567", "caf\u00e9 659*****67"),
    ],
)
def test_a_number_among_clean_fields_is_masked(value: str, masked: str) -> None:
    """One phone-shaped string among many clean ones (the fast path's miss case) is still masked."""
    out = run_chain(event="decision", kind="receipt_delivered", id="0a1b2c3d4e5f00000007", detail_text=value)
    assert out["detail_text"] == masked
    assert out["id"] == "0a1b2c3d4e5f00000007"


def test_scrub_secrets_fast_path_still_scrubs_one_field() -> None:
    """A credential in one string of many is scrubbed; the others are left as they were."""
    out = run_chain(event="decision", kind="receipt_delivered", url="https://h/receipts/abcdefgh1234/x")
    assert out["url"] == "https://h/receipts/***/x"
    assert out["kind"] == "receipt_delivered"
