"""structlog set-up: JSON lines in production, console on a TTY; phone numbers masked, secrets never shown."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

PHONE_KEYS = frozenset({"to", "to_number", "phone", "phone_number", "from_number"})
_DIGITS = re.compile(r"\+?\d{6,}")


def mask_phone(value: str) -> str:
    """Keep the country-code-ish prefix and the last two digits: 6591234567 → 659*****67."""
    digits = value.lstrip("+")
    if len(digits) < 6:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 5)}{digits[-2:]}"


def mask_phones(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor: mask values of phone-like keys."""
    for key in PHONE_KEYS & event.keys():
        if isinstance(event[key], str):
            event[key] = _DIGITS.sub(lambda m: mask_phone(m.group()), event[key])
    return event


def configure(*, fmt: str = "auto", level: str = "info") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_phones,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
