"""structlog set-up: JSON lines in production, console on a TTY; phone numbers masked, secrets never shown.

Two processors run on every event after exceptions are formatted (so tracebacks are covered) and before
rendering. `mask_phones` masks phone numbers by key and by value: under a phone key (`to`, `msisdn`, …)
every run of 6+ digits, and in every other string of the event, at any depth, any standalone run of 8-15
digits (a number quoted in an error text, an operator `actor`, a receipt `Status` or `ErrorCode` that holds
one). `scrub_secrets` replaces every registered secret value (`register_secrets(settings)`) and anything
shaped like a credential (a DSN password, the token in a `/receipts/<token>/` path, a bearer token,
`secret=…`) with `***`, in every string of the event. `mask_text` applies both to one text (error answers).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import re
import sys
import threading
import typing
import urllib.parse
from collections.abc import Iterable, MutableMapping
from typing import IO, Any

import msgspec
import structlog

from fallback_daemon import config

PHONE_KEYS = frozenset(
    {
        "to",
        "to_number",
        "phone",
        "phone_number",
        "phone_numbers",
        "phonenumbers",
        "from_number",
        "msisdn",
        "recipient",
        "destination",
    }
)
# Free text that may quote a number (provider error messages, tracebacks, raw bodies).
TEXT_KEYS = frozenset(
    {
        "event",
        "error",
        "errors",
        "exception",
        "message",
        "msg",
        "detail",
        "details",
        "reason",
        "description",
        "error_description",
        "errordescription",
        "last_error",
        "body",
        "text",
        "raw",
        "payload",
        "content",
    }
)
_DIGITS = re.compile(r"\+?\d{6,}")  # inside a phone field: every long digit run is a number
# In free text: 8-15 digits standing alone (not part of an id, a uuid segment, a decimal or a word).
_PHONE_IN_TEXT = re.compile(r"(?<![\w.\-*])\+?\d{8,15}(?![\w.\-*])")
_MIN_TEXT_PHONE = 8  # the shortest string _PHONE_IN_TEXT can match
# A cheap necessary condition for _PHONE_IN_TEXT on ASCII text (a regex scan costs ~15 ns a character): map
# digits to "0", the boundary class [\w.\-*] to "w" and every other byte to " "; a match needs eight digits
# after a non-boundary character, so the mapped text, behind a leading space, then holds " 00000000".
_PHONE_SHAPE = bytes(
    0x30 if re.fullmatch(r"\d", chr(b)) else 0x77 if re.fullmatch(r"[\w.\-*]", chr(b)) else 0x20
    for b in range(256)
)


def _may_hold_phone(text: str) -> bool:
    """False only if `_PHONE_IN_TEXT` cannot match `text`; non-ASCII text (Unicode digits) is searched."""
    if not text.isascii():
        return _PHONE_IN_TEXT.search(text) is not None
    return b" 00000000" in (" " + text).encode("ascii").translate(_PHONE_SHAPE)


MASK = "***"
# Credential shapes, each with a cheap substring test first: these run on every string of every event, and a
# plain `in` is far cheaper than a regex scan of text that cannot match.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):([^@/\s]+)@")  # scheme://user:password@host
_RECEIPT_PATH = re.compile(r"(/receipts/)[^/\s\"']+")  # the receipt token in callback URLs
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
# key=value pairs: one token per match (the lookbehind pins the start), the key judged in _key_value().
_KEY_VALUE = re.compile(r"(?<![\w-])([\w-]+)=([^&\s\"',;]+)")
_SECRET_KEY_WORDS = ("secret", "password", "passwd", "token", "signature")
MIN_SECRET_LEN = 8  # shorter values would blank ordinary words in every line
MIN_PASSWORD_LEN = 12  # a DSN password on its own (the whole DSN is always scrubbed)


class _Secrets:
    """The registered secret values, longest first (a value containing another is replaced whole)."""

    def __init__(self) -> None:
        self.values: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> None:
        merged = set(self.values) | {v for v in values if len(v) >= MIN_SECRET_LEN}
        self.values = tuple(sorted(merged, key=len, reverse=True))


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


def _mask_match(match: re.Match[str]) -> str:
    return mask_phone(match.group())


def _mask(value: Any, pattern: re.Pattern[str]) -> Any:
    """Mask digit runs matching `pattern` in strings (and phone-sized ints); recurse into containers."""
    if isinstance(value, str):
        if len(value) < 6:  # both patterns need six digits at least
            return value
        if pattern is _PHONE_IN_TEXT and not _may_hold_phone(value):
            return value
        return pattern.sub(_mask_match, value)
    if isinstance(value, dict):
        return {k: _mask(v, _pattern_for(k, pattern)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask(v, pattern) for v in value)
    if pattern is _DIGITS and isinstance(value, int) and not isinstance(value, bool):
        return _mask(str(value), pattern)
    return value


def _pattern_for(key: object, inherited: re.Pattern[str]) -> re.Pattern[str]:
    """A phone key masks every long digit run below it; any other key keeps what its parent used."""
    return _DIGITS if str(key).lower() in PHONE_KEYS else inherited


_CONTAINERS = (dict, list, tuple)


def mask_phones(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor: mask phone numbers by key (phone keys) and by value (every other string), at any depth.

    Runs on every event, so the common case (no phone-shaped run in any free string) costs one cheap test
    (`_may_hold_phone`) of the event's strings joined by newlines, not a regex scan of each: a newline is
    neither a digit nor in the pattern's boundary class, so the joined text can match only when one of the
    strings can. Only then is each string substituted. Strings shorter than 8 characters cannot hold 8
    digits and are passed over; a phone key's string is always substituted (every 6+ digit run). Nested
    mappings (provider payloads: "To", "PhoneNumbers") match case-insensitively.
    """
    texts: list[str] = []
    for key, value in event.items():
        if isinstance(value, str):
            if key in PHONE_KEYS:
                if len(value) >= 6:
                    event[key] = _DIGITS.sub(_mask_match, value)
            elif len(value) >= _MIN_TEXT_PHONE:
                texts.append(value)
        elif isinstance(value, _CONTAINERS) or (key in PHONE_KEYS and isinstance(value, int)):
            event[key] = _mask(value, _pattern_for(key, _PHONE_IN_TEXT))
    if texts and _may_hold_phone("\n".join(texts)):
        for key, value in event.items():
            if isinstance(value, str) and key not in PHONE_KEYS and len(value) >= _MIN_TEXT_PHONE:
                event[key] = _PHONE_IN_TEXT.sub(_mask_match, value)
    return event


def mask_text(text: str) -> str:
    """`text` as it may be shown or logged: phone-shaped digit runs masked, secrets scrubbed."""
    return scrub(_mask(text, _PHONE_IN_TEXT))


def _key_value(match: re.Match[str]) -> str:
    key = match.group(1)
    return f"{key}={MASK}" if any(word in key.lower() for word in _SECRET_KEY_WORDS) else match.group(0)


def scrub(text: str) -> str:
    """`text` with registered secret values and credential-shaped substrings replaced by ***."""
    if len(text) < MIN_SECRET_LEN:  # most values ("Sent", "armed", "info"): nothing can hide in them
        return text
    for value in _secrets.values:
        if value in text:
            text = text.replace(value, MASK)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    if "/receipts/" in text:
        text = _RECEIPT_PATH.sub(rf"\1{MASK}", text)
    if "=" in text:
        text = _KEY_VALUE.sub(_key_value, text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(rf"\1{MASK}", text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def _may_hold_secret(text: str) -> bool:
    """False only if `scrub(text)` would return `text` unchanged: none of its substring tests hits."""
    return (
        "://" in text
        or "/receipts/" in text
        or "=" in text
        or "earer" in text
        or "EARER" in text
        or any(value in text for value in _secrets.values)
    )


def scrub_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor: no registered secret and no credential-shaped text survives in any field.

    The substring tests `scrub` starts with run once on the event's strings joined by newlines (a string
    holding a secret or a credential marker makes the joined text hold it too); only if one hits is each
    string scrubbed.
    """
    texts: list[str] = []
    for key, value in event.items():
        if isinstance(value, str):
            if len(value) >= MIN_SECRET_LEN:
                texts.append(value)
        elif isinstance(value, _CONTAINERS):
            event[key] = _scrub(value)
    if texts and _may_hold_secret("\n".join(texts)):
        for key, value in event.items():
            if isinstance(value, str) and len(value) >= MIN_SECRET_LEN:
                event[key] = scrub(value)
    return event


def _enc_hook(obj: Any) -> Any:
    """msgspec's fallback for objects it cannot encode: structlog's `__structlog__` protocol, else str()."""
    structlog_repr = getattr(obj, "__structlog__", None)
    return structlog_repr() if callable(structlog_repr) else str(obj)


_encode = msgspec.json.Encoder(enc_hook=_enc_hook).encode
_stdlib_json = structlog.processors.JSONRenderer(default=_enc_hook)


def render_json(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """The renderer for JSON lines: msgspec (several times faster than `json.dumps`), one object per line.

    Anything msgspec refuses (non-string keys such as None or a tuple, an int beyond 64 bits, a lone
    surrogate) falls back to structlog's stdlib renderer, so a line is never lost to its encoding.
    """
    try:
        return _encode(event).decode()
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return typing.cast(str, _stdlib_json(None, "", event))


class LineBuffer:
    """A structlog logger that writes the lines of one event-loop iteration with one write, not one each.

    structlog's PrintLogger flushes every line: one write syscall per line, 5-10 % of the daemon's samples
    when a receipt push logs a decision per receipt (docs/performance.md, session 5). Here a line logged
    inside a running event loop is kept until the end of the loop's current pass (`call_soon`), then the
    pass's lines go out together and are flushed; outside a loop, or from another thread with no loop,
    a line is written at once. What can be lost is at most one pass's lines if the process is SIGKILLed
    (the database, not the log, is the record of every decision); a normal exit flushes (atexit).
    """

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._scheduled = False
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._lines.append(message)
            if self._scheduled:
                return
            self._scheduled = loop is not None
        if loop is None:
            self.flush()
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            lines, self._lines, self._scheduled = self._lines, [], False
        if lines:
            try:
                self._file.write("\n".join(lines) + "\n")
                self._file.flush()
            except (OSError, ValueError):  # stderr closed or gone: nothing to write to
                pass

    log = debug = info = warn = warning = fatal = failure = err = error = critical = exception = msg


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


def _constant(logger: LineBuffer) -> Any:
    """A logger factory returning the one buffer (every bound logger writes through the same one)."""
    return lambda *_: logger


class _StdlibHandler(logging.StreamHandler[IO[str]]):
    """Routes the standard library's records (aiohttp, asyncpg, botocore) through the same processors."""


def configure(
    *,
    fmt: str = "auto",
    level: str = "info",
    file: IO[str] | None = None,
    cache: bool = True,
    buffered: bool = False,
) -> None:
    """Configure structlog, and the standard library's root logger, for the process.

    Library warnings (aiohttp, asyncpg, botocore log through `logging`) become the same JSON lines, masked and
    scrubbed like ours; `logging` stays at WARNING so libraries' chatter at lower levels does not flood.

    Args:
        fmt: json, console, or auto (JSON unless the output is a terminal).
        level: the lowest level written.
        file: where lines go (default: stderr).
        cache: cache loggers on first use (production); tests pass False so a later configure still applies.
        buffered: write a loop pass's lines together (`LineBuffer`; the CLI), else each line at once.
    """
    out = file if file is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = render_json if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=(
            _constant(LineBuffer(out))
            if buffered
            else structlog.PrintLoggerFactory(file=typing.cast(typing.TextIO, out))
        ),
        cache_logger_on_first_use=cache,
    )
    handler = _StdlibHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, getattr(logging, level.upper())))
