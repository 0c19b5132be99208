"""Operator input, validated (pure, no I/O): search filters and their cursor, and who/why of an action.

`SEARCH_PARAMS` is the one list of GET /v1/messages query parameters: the parser accepts exactly these and
the OpenAPI document lists them. Every error is an errors.ValidationError naming the parameter or field.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from fallback_daemon.core import errors
from fallback_daemon.core.model import ChatState, FallbackState

LIMIT_DEFAULT, LIMIT_MAX = 50, 500
HELD_LIMIT_DEFAULT, HELD_LIMIT_MAX = 1000, 10000
TEXT_MAX = 255
INT_CHARS_MAX = 20  # every integer parameter fits in 19 digits (2**63 - 1); a longer one is refused unread
REASON_MAX = 500
_TO = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHANNEL = re.compile(r"[a-z]{1,32}")
_ACTOR = re.compile(r"[\w .@:+-]{1,64}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Param:
    """One query parameter of GET /v1/messages: the handler accepts exactly these, and OpenAPI lists them."""

    name: str
    description: str
    schema: Mapping[str, Any]


def _list_of(values: Iterable[str]) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "enum": sorted(values)}}


SEARCH_PARAMS: tuple[Param, ...] = (
    Param(name="id", description="Our message id.", schema={"type": "string", "format": "uuid"}),
    Param(name="provider_message_id", description="The CAMS MessageId.", schema={"type": "string"}),
    Param(name="task_id", description="The client's own TaskId.", schema={"type": "string"}),
    Param(
        name="to",
        description="Recipient: phone digits (a leading + is ignored) or a user id.",
        schema={"type": "string"},
    ),
    Param(name="chat_state", description="Comma-separated chat states.", schema=_list_of(ChatState)),
    Param(
        name="fallback_state", description="Comma-separated fallback states.", schema=_list_of(FallbackState)
    ),
    Param(
        name="channel",
        description="Comma-separated channels (ChannelType).",
        schema={"type": "array", "items": {"type": "string"}},
    ),
    Param(
        name="since",
        description="Created at or after: RFC 3339 time with offset, or Unix seconds.",
        schema={"type": "string"},
    ),
    Param(
        name="until",
        description="Created before: RFC 3339 time with offset, or Unix seconds.",
        schema={"type": "string"},
    ),
    Param(
        name="limit",
        description=f"Page size, 1..{LIMIT_MAX}.",
        schema={"type": "integer", "minimum": 1, "maximum": LIMIT_MAX, "default": LIMIT_DEFAULT},
    ),
    Param(
        name="cursor", description="Opaque: `next_cursor` of the previous page.", schema={"type": "string"}
    ),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Search:
    """A validated search; None means "no filter"."""

    id: uuid.UUID | None = None
    provider_message_id: str | None = None
    task_id: str | None = None
    to: str | None = None
    chat_state: tuple[str, ...] | None = None
    fallback_state: tuple[str, ...] | None = None
    channel: tuple[str, ...] | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = LIMIT_DEFAULT
    after: tuple[dt.datetime, uuid.UUID] | None = None  # keyset position (created_at, id), from the cursor


@dataclasses.dataclass(frozen=True, kw_only=True)
class Action:
    """Who asked for an action and why (lands in the timeline event's detail)."""

    actor: str = "operator"
    reason: str | None = None

    def detail(self) -> dict[str, Any]:
        return {"actor": self.actor, "reason": self.reason}


def parse_search(items: Iterable[tuple[str, str]]) -> Search:
    """Validate GET /v1/messages query parameters; unknown or repeated ones are refused.

    Raises:
        errors.ValidationError: naming the parameter.
    """
    known = {p.name for p in SEARCH_PARAMS}
    raw: dict[str, str] = {}
    for name, value in items:
        if name not in known:
            raise errors.ValidationError(name, f"unknown parameter (accepted: {', '.join(sorted(known))})")
        if name in raw:
            raise errors.ValidationError(name, "given more than once")
        raw[name] = value
    since = parse_time("since", raw["since"]) if "since" in raw else None
    until = parse_time("until", raw["until"]) if "until" in raw else None
    if since and until and until <= since:
        raise errors.ValidationError("until", "must be later than since")
    return Search(
        id=_uuid("id", raw["id"]) if "id" in raw else None,
        provider_message_id=_text("provider_message_id", raw.get("provider_message_id")),
        task_id=_text("task_id", raw.get("task_id")),
        to=parse_to(raw["to"]) if "to" in raw else None,
        chat_state=_states("chat_state", raw.get("chat_state"), {s.value for s in ChatState}),
        fallback_state=_states("fallback_state", raw.get("fallback_state"), {s.value for s in FallbackState}),
        channel=_channels(raw.get("channel")),
        since=since,
        until=until,
        limit=parse_int("limit", raw.get("limit"), 1, LIMIT_MAX, LIMIT_DEFAULT),
        after=decode_cursor(raw["cursor"]) if "cursor" in raw else None,
    )


def parse_to(value: str) -> str:
    """A recipient as stored: phone digits without '+' and spaces, or a channel user id."""
    compact = "".join(value.split()).removeprefix("+")
    if not _TO.fullmatch(compact):
        raise errors.ValidationError("to", "must be phone digits (optionally after '+') or a user id")
    return compact


def parse_time(name: str, value: str) -> dt.datetime:
    """RFC 3339 with an offset (or Z), or Unix seconds, as an aware UTC datetime within years 1..9999.

    A time near year 1 or 9999 whose offset carries it past the range is refused (`astimezone` would
    overflow), as is anything Postgres' `timestamptz` could not take.
    """
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise errors.ValidationError(name, "must be an RFC 3339 time or Unix seconds") from None
        if parsed.tzinfo is None:
            raise errors.ValidationError(name, "needs a UTC offset (e.g. 2025-01-31T09:00:00Z)") from None
        return _utc(name, parsed)
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:
        raise errors.ValidationError(name, "is out of range")
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (ValueError, OverflowError, OSError):  # rounds up into year 10000
        raise errors.ValidationError(name, "is out of range") from None


def _utc(name: str, parsed: dt.datetime) -> dt.datetime:
    try:
        return parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        raise errors.ValidationError(name, "is out of range (years 1 to 9999 in UTC)") from None


def parse_int(name: str, value: str | None, lo: int, hi: int, default: int) -> int:
    """A decimal integer in lo..hi; the length is checked before `int()` (Python refuses > 4,300 digits)."""
    if value is None:
        return default
    problem = f"must be an integer from {lo} to {hi}"
    if not value.isascii() or not value.isdigit() or len(value) > INT_CHARS_MAX:
        raise errors.ValidationError(name, problem)
    number = int(value)
    if not lo <= number <= hi:
        raise errors.ValidationError(name, problem)
    return number


def parse_action(body: object) -> Action:
    """The body of an action: {"actor": "...", "reason": "..."}, both optional."""
    if body is None:
        return Action()
    if not isinstance(body, dict):
        raise errors.ValidationError("body", "must be a JSON object")
    actor, reason = body.get("actor", "operator"), body.get("reason")
    if not isinstance(actor, str) or not _ACTOR.fullmatch(actor):
        raise errors.ValidationError("actor", "must be 1..64 letters, digits, spaces or . @ : + - _")
    if reason is not None and (
        not isinstance(reason, str) or len(reason) > REASON_MAX or not reason.isprintable()
    ):
        raise errors.ValidationError("reason", f"must be printable text of at most {REASON_MAX} characters")
    return Action(actor=actor, reason=reason or None)


def encode_cursor(created_at: dt.datetime, message_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(message_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSOR_MAX = 200  # an encoded cursor is ~90 characters; anything longer was not made here


def decode_cursor(value: str) -> tuple[dt.datetime, uuid.UUID]:
    """The (created_at, id) keyset position of a cursor from `encode_cursor`; anything else is a 400.

    Tampered cursors are refused before they reach the database: too long (no deep nesting), not a JSON
    pair of strings, a naive or out-of-range time, an id that is not a UUID.
    """
    problem = "is not a cursor this API returned"
    if not value or len(value) > CURSOR_MAX:
        raise errors.ValidationError("cursor", problem)
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        pair = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise errors.ValidationError("cursor", problem) from None
    if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(v, str) for v in pair):
        raise errors.ValidationError("cursor", problem)
    at, mid = pair
    try:
        parsed = dt.datetime.fromisoformat(at)
        position = uuid.UUID(mid)
    except ValueError:
        raise errors.ValidationError("cursor", problem) from None
    if parsed.tzinfo is None:
        raise errors.ValidationError("cursor", problem)
    return _utc("cursor", parsed), position


def _uuid(name: str, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.ValidationError(name, "must be a message id (UUID)") from None


def _text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > TEXT_MAX or not value.isprintable():
        raise errors.ValidationError(name, f"must be 1..{TEXT_MAX} printable characters")
    return value


def _states(name: str, value: str | None, allowed: set[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(","))
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise errors.ValidationError(name, f"unknown state {bad[0]!r}; one of {', '.join(sorted(allowed))}")
    return items


def _channels(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(","))
    if not all(_CHANNEL.fullmatch(v) for v in items):
        raise errors.ValidationError("channel", "must be comma-separated channel names (a-z)")
    return items
