"""Validation of SendChatappMessage-shaped request bodies (POST /v1/messages); pure, no I/O.

Field names are the exact SendChatappMessage wire names; every error names the field it is about.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from fallback_daemon.core import errors, model

CHANNELS = ("whatsapp", "messenger", "instagram", "telegram", "viber")
_MESSENGER_TYPES = frozenset(
    {"text", "image", "video", "document", "audio", "interactive", "couponTemplate", "regularTemplate",
     "quickReply", "buttonTemplate"}
)  # fmt: skip
MESSAGE_TYPES: Mapping[str, frozenset[str]] = {
    "whatsapp": frozenset(
        {
            "text",
            "image",
            "video",
            "audio",
            "document",
            "interactive",
            "location",
            "contacts",
            "reaction",
            "sticker",
            "typing_indicator",
            "pin",
            "carousel",
        }
    ),
    "viber": frozenset(
        {
            "text",
            "image",
            "text_image_button",
            "text_button",
            "document",
            "video",
            "text_video",
            "text_video_button",
            "text_image",
        }
    ),
    "messenger": _MESSENGER_TYPES,
    "instagram": _MESSENGER_TYPES,
    "telegram": frozenset({"text", "image", "video", "audio", "document", "location", "gif", "sticker"}),
}
# Content keys each (channel, MessageType) needs, compared case-insensitively ("Link" == "link").
_MEDIA = {"image": ("link",), "video": ("link",), "audio": ("link",), "document": ("link",)}
CONTENT_KEYS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "whatsapp": {
        "text": ("text",), "image": ("link",), "video": ("link",), "audio": ("link",),
        "document": ("link", "filename"), "interactive": ("type", "action"), "contacts": ("name",),
        "location": ("longitude", "latitude"), "sticker": ("link",), "reaction": ("messageid", "emoji"),
    },
    "viber": {
        "text": ("text",), "image": ("link",), "video": ("link", "thumbnail", "filesize", "duration"),
        "document": ("link", "filename", "filetype"), "text_button": ("text", "caption", "action"),
    },
    "messenger": {"text": ("text",), **_MEDIA},
    "instagram": {"text": ("text",), **_MEDIA},
    "telegram": {"text": ("text",), **_MEDIA},
}  # fmt: skip
RULES: Mapping[str, model.Rule] = {
    "undelivered": model.Rule.UNDELIVERED,
    "sentFailed": model.Rule.SENT_FAILED,
    "sentfailed": model.Rule.SENT_FAILED,
    "unread": model.Rule.UNREAD,
}
LABELS = ("promotion", "transaction")
VIBER_ONLY = ("Label", "Ttl")
PHONE_CHANNELS = frozenset({"whatsapp", "viber"})
DURATION_RANGE = (60, 43200)
TTL_RANGE = (30, 1209600)
FALLBACK_CONTENT_MAX = 1600
TASK_ID_MAX = 255
STRING_MAX = 512
JSON_DEPTH_MAX = 32
TEMPLATE_PARAMS_MAX = 100
PAYLOAD_MAX = 100
ITEM_MAX = 4096

_PHONE = re.compile(r"\+?([0-9]{8,15})")
_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,10}")

# Optional plain strings forwarded as they are: wire name -> max length.
PLAIN_STRINGS: Mapping[str, int] = {
    "CustSpaceId": STRING_MAX,
    "Language": 64,
    "TemplateCode": STRING_MAX,
    "TemplateName": STRING_MAX,
    "Tag": STRING_MAX,
    "TrackingData": STRING_MAX,
    "ContextMessageId": STRING_MAX,
    "Category": STRING_MAX,
}
KNOWN_FIELDS = frozenset(
    {"ChannelType", "Type", "MessageType", "From", "To", "Content", "TemplateParams", "Payload", "Label",
     "Ttl", "TaskId", "FallBackRule", "FallBackDuration", "FallBackContent", "FallBackUrgent", *PLAIN_STRINGS}
)  # fmt: skip
_BY_LOWER = {name.lower(): name for name in KNOWN_FIELDS}
_fast_decode = msgspec.json.Decoder().decode
_fast_encode = msgspec.json.Encoder().encode
# json.dumps with any argument builds a JSONEncoder per call (a third of a 500-message validate_batch); these
# are the same encoders, built once.
_JSON_TEXT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def validate_send(body: object, *, max_content_bytes: int = 65536) -> model.SendRequest:
    """Validate one SendChatappMessage-shaped body; raise errors.ValidationError naming the field."""
    if not isinstance(body, dict):
        raise errors.ValidationError("body", "must be a JSON object")
    _check_keys(body)
    get = _Getter(body)
    channel = get.choice("ChannelType", CHANNELS, required=True)
    kind = get.choice("Type", ("template", "message"), required=True)
    sender = get.string("From", 128, required=True) or ""
    to = _recipient(channel, get.string("To", 128, required=True))
    params: dict[str, str] = {"ChannelType": channel, "Type": kind, "From": sender, "To": to}
    _plain_strings(get, channel, params)
    content = _content(body.get("Content"), max_content_bytes)
    _check_kind(kind, channel, params, content)
    if content is not None:
        params["Content"] = _dumps("Content", content)
    template_params = _template_params(body.get("TemplateParams"))
    if template_params:
        params["TemplateParams"] = dumps_strings(template_params)
    payload = _payload(body.get("Payload"))
    if payload is not None:
        params["Payload"] = dumps_strings(payload)
    _viber_fields(get, channel, params)
    return model.SendRequest(
        channel=channel,
        to=to,
        sender=sender,
        params=params,
        rule=RULES[get.choice("FallBackRule", tuple(RULES)) or "undelivered"],
        duration_s=get.integer("FallBackDuration", DURATION_RANGE, "seconds"),
        fallback_content=_fallback_content(get.string("FallBackContent", FALLBACK_CONTENT_MAX)),
        template_params=template_params,
        client_task_id=get.string("TaskId", TASK_ID_MAX),
        urgent=get.flag("FallBackUrgent"),
    )


def validate_batch(
    body: object, *, max_items: int = 1000, max_content_bytes: int = 65536
) -> list[model.SendRequest]:
    """Validate a batch body {"messages": [...]}; errors name the item, e.g. field "messages[3].To"."""
    if not isinstance(body, dict):
        raise errors.ValidationError("body", "must be a JSON object")
    for key in body:
        if key != "messages":
            raise errors.ValidationError(str(key)[:64], "unknown field (a batch body has only 'messages')")
    items = body.get("messages")
    if not isinstance(items, list):
        raise errors.ValidationError("messages", "is required and must be a JSON array")
    if not 1 <= len(items) <= max_items:
        raise errors.ValidationError("messages", f"must hold between 1 and {max_items} messages")
    out = []
    for index, item in enumerate(items):
        try:
            out.append(validate_send(item, max_content_bytes=max_content_bytes))
        except errors.ValidationError as exc:
            where = f"messages[{index}]"
            field = where if exc.field == "body" else f"{where}.{exc.field}"
            raise errors.ValidationError(field, exc.problem) from None
    return out


def check_text(field: str, value: str) -> str:
    """Reject text Postgres cannot store (NUL) or UTF-8 cannot encode (lone surrogates)."""
    if "\x00" in value:
        raise errors.ValidationError(field, "must not contain NUL characters")
    if not value.isascii():  # ASCII text cannot hold a surrogate: no encode (an allocation) per string
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise errors.ValidationError(field, "is not valid Unicode text") from None
    return value


def check_json_text(field: str, value: object, depth: int = 0) -> None:
    """Walk a decoded JSON value and check every key and string in it with check_text."""
    if depth > JSON_DEPTH_MAX:
        raise errors.ValidationError(field, f"is nested more than {JSON_DEPTH_MAX} levels deep")
    if isinstance(value, str):
        check_text(field, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise errors.ValidationError(field, "object keys must be strings")
            check_text(field, key)
            check_json_text(field, item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json_text(field, item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise errors.ValidationError(field, "must not contain NaN or Infinity")


def bad_text(value: str) -> str | None:
    """Why Postgres could not store `value` (NUL, or a lone surrogate UTF-8 cannot encode); None if it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode text (lone surrogate)"
    return None


def check_tree(field: str, value: object) -> None:
    """Refuse a decoded JSON value holding text Postgres cannot store, naming the path ("channel", "ids[2]").

    Iterative, so a value nested as deep as json.loads allows cannot exhaust the stack.

    Raises:
        errors.ValidationError: naming the path of the first bad key or string.
    """
    stack: list[tuple[str, object]] = [(field, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = bad_text(item)
            if problem:
                raise errors.ValidationError(path, problem)
        elif isinstance(item, dict):
            for key, child in item.items():
                name = str(key)
                problem = bad_text(name)
                if problem:
                    raise errors.ValidationError(path, f"has a key that {problem.removeprefix('is ')}")
                stack.append((name if path == "body" else f"{path}.{name[:64]}", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))


def loads_body(raw: bytes) -> Any:
    """A decoded JSON request body; text Postgres cannot store (NUL, lone surrogates) is a 400 naming where.

    A NUL or a lone surrogate can reach a decoded string only through a `\\u` escape, or through the bytes
    of a surrogate encoded as UTF-8 (json.loads decodes bytes with "surrogatepass"; their lead byte is 0xED);
    a raw NUL byte is not valid JSON. So a body with none of `\\u`, 0xED and NUL bytes skips the walk of
    check_tree, which was 17 % of the daemon's CPU in the batch accept bench. Bodies in UTF-16 or UTF-32
    (json.loads reads those too) always hold NUL bytes, so they are walked.
    """
    value = loads("body", raw)
    if b"\\u" in raw or b"\xed" in raw or b"\x00" in raw:
        check_tree("body", value)
    return value


def request_digest(value: object) -> str:
    """A digest of a decoded JSON request body, blind to key order and whitespace (idempotency checks)."""
    canonical = _CANONICAL.encode(value)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def loads(field: str, text: str | bytes) -> Any:
    """json.loads that rejects NaN/Infinity and maps every failure to errors.ValidationError.

    msgspec decodes first (2-3x faster: a batch body's decode was 11 % of the daemon's CPU in the batch
    accept bench). It accepts a strict subset of what json.loads does and gives the same value for it
    (tests/unit/test_validation.py checks that property); everything it refuses (NaN and Infinity, lone
    surrogates, a byte-order mark, UTF-16 and UTF-32, numbers out of float range, nesting it will not
    follow) goes to json.loads, whose verdict stands, as it did before msgspec was tried.
    """
    try:
        return _fast_decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        pass
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise errors.ValidationError(field, "not valid JSON") from None


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def _dumps(field: str, value: object) -> str:
    try:
        return _JSON_TEXT.encode(value)
    except (ValueError, TypeError, RecursionError):
        raise errors.ValidationError(field, "cannot be encoded as JSON") from None


def dumps_strings(value: dict[str, str] | list[str]) -> str:
    """_dumps of checked text only (no lone surrogates): msgspec writes the bytes json.dumps with
    separators=(",", ":") and ensure_ascii=False writes for strings (tests/unit/test_validation.py compares
    them for every character), 3-4x faster. Not for numbers: msgspec writes 1e16 where json.dumps wrote 1e+16.
    """
    return _fast_encode(value).decode()


def _check_keys(body: dict[Any, Any]) -> None:
    if "FallBackId" in body:
        raise errors.ValidationError(
            "FallBackId",
            "is not accepted: this daemon runs the SMS fallback itself, and passing a FallBackId would make"
            " Alibaba send a second SMS",
        )
    for key in body:
        if key not in KNOWN_FIELDS:
            name = str(key)[:64]
            hint = _BY_LOWER.get(name.lower())
            if hint:
                raise errors.ValidationError(name, f"unknown field (did you mean {hint}?)")
            if name == "CustWabaId":
                raise errors.ValidationError(name, "is deprecated; use CustSpaceId")
            raise errors.ValidationError(name, "unknown field")


class _Getter:
    """Typed reads of optional/required top-level fields; JSON null counts as absent."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def string(self, name: str, limit: int, *, required: bool = False) -> str | None:
        value = self.body.get(name)
        if value is None:
            if required:
                raise errors.ValidationError(name, "is required")
            return None
        if not isinstance(value, str):
            raise errors.ValidationError(name, "must be a string")
        if not value:
            raise errors.ValidationError(name, "must not be empty")
        if len(value) > limit:
            raise errors.ValidationError(name, f"must be at most {limit} characters")
        return check_text(name, value)

    def flag(self, name: str) -> bool:
        """A JSON boolean (absent or null: false); a string or number is refused, not guessed."""
        value = self.body.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise errors.ValidationError(name, "must be true or false (a JSON boolean)")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], *, required: bool = False) -> str:
        value = self.string(name, 64, required=required)
        if value is not None and value not in allowed:
            raise errors.ValidationError(name, f"must be one of {', '.join(allowed)}")
        return value or ""

    def integer(self, name: str, bounds: tuple[int, int], unit: str) -> int | None:
        value = self.body.get(name)
        if value is None:
            return None
        low, high = bounds
        problem = f"must be an integer between {low} and {high} {unit}"
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise errors.ValidationError(name, problem)
        return value


def _plain_strings(get: _Getter, channel: str, params: dict[str, str]) -> None:
    message_type = get.string("MessageType", 64)
    if message_type is not None:
        if message_type not in MESSAGE_TYPES[channel]:
            raise errors.ValidationError(
                "MessageType", f"must be one of {', '.join(sorted(MESSAGE_TYPES[channel]))} for {channel}"
            )
        params["MessageType"] = message_type
    body = get.body
    for name, limit in PLAIN_STRINGS.items():
        # Most of these are absent from a body: tested here, not in a call per name (validate_batch runs
        # this for every item of a 1,000-message batch).
        if body.get(name) is not None:
            params[name] = get.string(name, limit) or ""


def _check_kind(kind: str, channel: str, params: dict[str, str], content: dict[str, Any] | None) -> None:
    if kind == "template":
        if "TemplateCode" not in params and "TemplateName" not in params:
            raise errors.ValidationError("TemplateCode", "is required when Type is template")
        if "Language" not in params:
            raise errors.ValidationError("Language", "is required when Type is template")
        return
    message_type = params.get("MessageType")
    if message_type is None:
        raise errors.ValidationError("MessageType", "is required when Type is message")
    if content is None:
        raise errors.ValidationError("Content", "is required when Type is message")
    _check_content_keys(channel, message_type, content)


def _recipient(channel: str, raw: str | None) -> str:
    raw = raw or ""  # required: None already raised
    phone = _PHONE.fullmatch(raw)
    if channel in PHONE_CHANNELS:
        if not phone:
            raise errors.ValidationError(
                "To", "must be a phone number with country code: 8 to 15 digits, optionally after '+'"
            )
        return phone.group(1)
    if channel == "telegram" and phone:
        return phone.group(1)
    if not _USER_ID.fullmatch(raw):
        raise errors.ValidationError("To", f"must be a {channel} user id: 1 to 64 of A-Z a-z 0-9 _ -")
    return raw


def _json_value(field: str, value: object, max_bytes: int) -> object:
    """Accept a decoded JSON value or a string holding JSON; check size and text."""
    if isinstance(value, str):
        if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
            raise errors.ValidationError(field, f"must be at most {max_bytes} bytes")
        value = loads(field, value)
    check_json_text(field, value)
    return value


def _content(value: object, max_bytes: int) -> dict[str, Any] | None:
    if value is None:
        return None
    content = _json_value("Content", value, max_bytes)
    if not isinstance(content, dict):
        raise errors.ValidationError("Content", "must be a JSON object (or a string holding one)")
    if len(_dumps("Content", content).encode("utf-8")) > max_bytes:
        raise errors.ValidationError("Content", f"must be at most {max_bytes} bytes")
    return content


def _check_content_keys(channel: str, message_type: str, content: dict[str, Any]) -> None:
    present = {key.lower() for key, item in content.items() if item not in (None, "", [], {})}
    for key in CONTENT_KEYS[channel].get(message_type, ()):
        if key not in present:
            raise errors.ValidationError(
                "Content", f"needs a non-empty '{key}' for {channel} {message_type} messages"
            )


def _template_params(value: object) -> dict[str, str]:
    if value is None:
        return {}
    params = _json_value("TemplateParams", value, 65536)
    if not isinstance(params, dict):
        raise errors.ValidationError("TemplateParams", "must be a JSON object of names to strings")
    if len(params) > TEMPLATE_PARAMS_MAX:
        raise errors.ValidationError("TemplateParams", f"must have at most {TEMPLATE_PARAMS_MAX} entries")
    out = {}
    for key, item in params.items():
        where = f"TemplateParams.{key}"
        if not key or len(key) > 128:
            raise errors.ValidationError("TemplateParams", "names must be 1 to 128 characters")
        out[key] = _scalar_text(where, item)
    return out


def _scalar_text(field: str, item: object) -> str:
    if isinstance(item, str):
        text = item
    elif isinstance(item, int | float) and not isinstance(item, bool):
        text = str(item)
    else:
        raise errors.ValidationError(field, "must be a string or a number")
    if len(text) > ITEM_MAX:
        raise errors.ValidationError(field, f"must be at most {ITEM_MAX} characters")
    return text


def _payload(value: object) -> list[str] | None:
    if value is None:
        return None
    payload = _json_value("Payload", value, 65536)
    if not isinstance(payload, list) or not all(isinstance(item, str) for item in payload):
        raise errors.ValidationError("Payload", "must be a JSON array of strings")
    if len(payload) > PAYLOAD_MAX or any(len(item) > ITEM_MAX for item in payload):
        raise errors.ValidationError(
            "Payload", f"must hold at most {PAYLOAD_MAX} strings of at most {ITEM_MAX} characters"
        )
    return payload


def _viber_fields(get: _Getter, channel: str, params: dict[str, str]) -> None:
    if channel != "viber":
        for name in VIBER_ONLY:
            if get.body.get(name) is not None:
                raise errors.ValidationError(name, "is only valid when ChannelType is viber")
        return
    label = get.choice("Label", LABELS)
    if label:
        params["Label"] = label
    ttl = get.integer("Ttl", TTL_RANGE, "seconds")
    if ttl is not None:
        params["Ttl"] = str(ttl)


def _fallback_content(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise errors.ValidationError("FallBackContent", "must not be blank")
    return value
