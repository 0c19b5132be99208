"""structlog set-up: JSON lines in production, console on a TTY; phone numbers masked, secrets never shown.

Two processors run on every event after exceptions are formatted (so tracebacks are covered) and before
rendering. `mask_phones` masks values of phone keys, and any standalone run of 8-15 digits (a `To` number) in
free-text keys such as `error` or `exception`, at any depth. `scrub_secrets` replaces every registered secret
value (`register_secrets(settings)`) and anything shaped like a credential (a DSN password, the token in a
`/receipts/<token>/` path, a bearer token, `secret=…`) with `***`, in every string of the event.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import urllib.parse
from collections.abc import Iterable, MutableMapping
from typing import IO, Any

import structlog

from fallback_daemon import config

PHONE_KEYS = frozenset(
    {"to", "to_number", "phone", "phone_number", "phone_numbers", "phonenumbers", "from_number", "msisdn",
     "recipient", "destination"}
)
# Free text that may quote a number (provider error messages, tracebacks, raw bodies).
TEXT_KEYS = frozenset(
    {"event", "error", "errors", "exception", "message", "msg", "detail", "details", "reason", "description",
     "error_description", "errordescription", "last_error", "body", "text", "raw", "payload", "content"}
)
_DIGITS = re.compile(r"\+?\d{6,}")  # inside a phone field: every long digit run is a number
# In free text: 8-15 digits standing alone (not part of an id, a uuid segment, a decimal or a word).
_PHONE_IN_TEXT = re.compile(r"(?<![\w.\-*])\+?\d{8,15}(?![\w.\-*])")
MASK = "***"
_SHAPES = (
    (re.compile(r"(://[^:/@\s]*):([^@/\s]+)@"), rf"\1:{MASK}@"),  # scheme://user:password@host
    (re.compile(r"(/receipts/)[^/\s\"']+"), rf"\1{MASK}"),  # the receipt token in callback URLs
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)([\w-]*(?:secret|password|passwd|token|signature))=([^&\s\"',;]+)"), rf"\1={MASK}"),
)
MIN_SECRET_LEN = 8  # shorter values would blank ordinary words in every line
MIN_PASSWORD_LEN = 12  # a DSN password on its own (the whole DSN is always scrubbed)


class _Secrets:
    """The registered secret values, longest first, matched by one compiled pattern."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        self.values |= {v for v in values if len(v) >= MIN_SECRET_LEN}
        ordered = sorted(self.values, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None


_secrets = _Secrets()


def register_secrets(settings: config.Settings) -> None:
    """Scrub every `Secret` field of these settings (and a DSN's password) from all later log events."""
    values: list[str] = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, config.Secret) and value:
            values.append(value.reveal())
    if settings.database_url:
        password = urllib.parse.urlsplit(settings.database_url.reveal()).password
        if password and len(password) >= MIN_PASSWORD_LEN:
            values.append(urllib.parse.unquote(password))
    _secrets.add(values)


def mask_phone(value: str) -> str:
    """Keep the country-code-ish prefix and the last two digits: 6591234567 → 659*****67."""
    digits = value.lstrip("+")
    if len(digits) < 6:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 5)}{digits[-2:]}"


def _mask(value: Any, pattern: re.Pattern[str] | None) -> Any:
    """Mask digit runs matching `pattern` in strings (None: leave strings); recurse into containers."""
    if isinstance(value, str):
        return value if pattern is None else pattern.sub(lambda m: mask_phone(m.group()), value)
    if isinstance(value, dict):
        return {k: _mask(v, _pattern_for(k, pattern)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask(v, pattern) for v in value)
    return value


def _pattern_for(key: object, inherited: re.Pattern[str] | None) -> re.Pattern[str] | None:
    name = str(key).lower()
    if name in PHONE_KEYS:
        return _DIGITS
    if name in TEXT_KEYS:
        return inherited if inherited is _DIGITS else _PHONE_IN_TEXT
    return inherited


def mask_phones(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor: mask phone numbers in phone keys and in free-text keys, at any depth."""
    for key in list(event.keys()):
        pattern = _pattern_for(key, None)
        value = event[key]
        if pattern is not None or isinstance(value, dict | list | tuple):
            event[key] = _mask(value, pattern)
    return event


def scrub(text: str) -> str:
    """`text` with registered secret values and credential-shaped substrings replaced by ***."""
    if _secrets.pattern is not None:
        text = _secrets.pattern.sub(MASK, text)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def scrub_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor: no registered secret and no credential-shaped text survives in any field."""
    for key, value in event.items():
        event[key] = _scrub(value)
    return event


def processors() -> list[Any]:
    """The chain before the renderer (exceptions are formatted first, so tracebacks are masked too)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_phones,
        scrub_secrets,
    ]


def configure(
    *, fmt: str = "auto", level: str = "info", file: IO[str] | None = None, cache: bool = True
) -> None:
    """Configure structlog for the process.

    Args:
        fmt: json, console, or auto (JSON unless stderr is a terminal).
        level: the lowest level written.
        file: where lines go (default: stderr).
        cache: cache loggers on first use (production); tests pass False so a later configure still applies.
    """
    out = file if file is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=cache,
    )
