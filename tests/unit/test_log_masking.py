"""Masking by value pattern as well as by key name (issue 10): a phone number under any key is masked."""

from __future__ import annotations

from typing import Any

import pytest

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
