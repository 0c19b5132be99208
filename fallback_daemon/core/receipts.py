"""Pure parsers of provider receipt payloads: CAMS ChatAppStatus reports and SMS delivery reports.

Each parser takes the raw HTTP body (bytes or str) or an already decoded JSON value, accepts a JSON array
of report objects or a single object (MNS carries one object per message), and either returns every
report or raises errors.ValidationError naming the element and field ("[2].MessageId"): never a partial
batch.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from fallback_daemon.core import errors, model, validation

MAX_REPORTS = 1000
ID_MAX = 255
STATUS_MAX = 64
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

CHAT_STATUSES: Mapping[str, model.ReceiptStatus] = {
    "sent": model.ReceiptStatus.SENT,
    "delivered": model.ReceiptStatus.DELIVERED,
    "read": model.ReceiptStatus.READ,
    "failed": model.ReceiptStatus.FAILED,
}
SMS_INTL_STATUSES: Mapping[str, model.SmsStatus] = {
    "1": model.SmsStatus.DELIVERED,
    "2": model.SmsStatus.FAILED,
    "6": model.SmsStatus.FAILED,  # expired
}

_T = TypeVar("_T")


def parse_chatapp_reports(body: object) -> list[model.ChatReceipt]:
    """Parse a ChatAppStatus push (JSON array, or one object as carried by MNS) into receipts."""
    return _parse_all(body, _chat_receipt)


def parse_sms_intl_reports(body: object) -> list[model.SmsReceipt]:
    """Parse international SMS reports (SendMessageToGlobe: Status "1"/"2"/"6", MessageId, TaskId)."""
    return _parse_all(body, _sms_intl_receipt)


def parse_sms_domestic_reports(body: object) -> list[model.SmsReceipt]:
    """Parse domestic SmsReport records (SendSms: success, biz_id, out_id, err_code)."""
    return _parse_all(body, _sms_domestic_receipt)


def parse_sms_reports(body: object) -> list[model.SmsReceipt]:
    """Parse SMS reports of either shape, detected per element, so one endpoint takes both."""
    return _parse_all(body, _sms_any_receipt)


def decode_mns_body(text: str | bytes) -> object:
    """Decode an MNS MessageBody: base64 of JSON (Alicom queues), falling back to raw JSON."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.ValidationError("MessageBody", "is not UTF-8 text") from None
    compact = "".join(text.split())
    if compact:
        try:
            decoded = base64.b64decode(compact, validate=True).decode("utf-8")
            return validation.loads("MessageBody", decoded)
        except (binascii.Error, ValueError, errors.ValidationError):
            pass
    try:
        return validation.loads("MessageBody", text)
    except errors.ValidationError:
        raise errors.ValidationError("MessageBody", "is neither base64-encoded JSON nor JSON") from None


def _parse_all(body: object, parse_one: Callable[[str, dict[str, Any]], _T]) -> list[_T]:
    items = _elements(body)
    out = []
    for index, item in enumerate(items):
        where = f"[{index}]"
        if not isinstance(item, dict):
            raise errors.ValidationError(where, "must be a JSON object")
        validation.check_json_text(where, item)
        out.append(parse_one(where, item))
    return out


def _elements(body: object) -> list[Any]:
    if isinstance(body, bytes | bytearray | str):
        body = validation.loads("body", bytes(body) if isinstance(body, bytearray) else body)
    if isinstance(body, dict):
        return [body]
    if not isinstance(body, list):
        raise errors.ValidationError("body", "must be a JSON array of report objects (or one object)")
    if len(body) > MAX_REPORTS:
        raise errors.ValidationError("body", f"must hold at most {MAX_REPORTS} reports")
    return body


def _chat_receipt(where: str, item: dict[str, Any]) -> model.ChatReceipt:
    raw_status = _text(where, item, "Status", STATUS_MAX, required=True) or ""
    return model.ChatReceipt(
        message_id=_required(where, item, "MessageId"),
        task_id=_text(where, item, "TaskId", ID_MAX),
        status=CHAT_STATUSES.get(raw_status.lower(), model.ReceiptStatus.OTHER),
        raw_status=raw_status,
        timestamp=_timestamp_ms(where, item.get("Timestamp")),
        error_code=_text(where, item, "ErrorCode", ID_MAX),
        raw=item,
    )


def _sms_intl_receipt(where: str, item: dict[str, Any]) -> model.SmsReceipt:
    raw_status = _text(where, item, "Status", STATUS_MAX, required=True) or ""
    return model.SmsReceipt(
        provider_id=_required(where, item, "MessageId"),
        fallback_id=_text(where, item, "TaskId", ID_MAX),
        status=SMS_INTL_STATUSES.get(raw_status.strip(), model.SmsStatus.PENDING),
        raw_status=raw_status,
        error_code=_text(where, item, "ErrorCode", ID_MAX),
        raw=item,
    )


def _sms_domestic_receipt(where: str, item: dict[str, Any]) -> model.SmsReceipt:
    success = item.get("success")
    if not isinstance(success, bool):
        raise errors.ValidationError(f"{where}.success", "is required and must be true or false")
    return model.SmsReceipt(
        provider_id=_required(where, item, "biz_id"),
        fallback_id=_text(where, item, "out_id", ID_MAX),
        status=model.SmsStatus.DELIVERED if success else model.SmsStatus.FAILED,
        raw_status="true" if success else "false",
        error_code=_text(where, item, "err_code", ID_MAX),
        raw=item,
    )


def _sms_any_receipt(where: str, item: dict[str, Any]) -> model.SmsReceipt:
    if "biz_id" in item or "success" in item:
        return _sms_domestic_receipt(where, item)
    if "Status" in item and "MessageId" in item:
        return _sms_intl_receipt(where, item)
    raise errors.ValidationError(
        where, "is neither a domestic (biz_id, success) nor an international (MessageId, Status) SMS report"
    )


def _required(where: str, item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise errors.ValidationError(f"{where}.{name}", "is required and must be a non-empty string")
    if len(value) > ID_MAX:
        raise errors.ValidationError(f"{where}.{name}", f"must be at most {ID_MAX} characters")
    return value


def _text(where: str, item: dict[str, Any], name: str, limit: int, *, required: bool = False) -> str | None:
    """An optional string field; integers are accepted and stringified; null or "" count as absent."""
    value = item.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or value == "":
        if required:
            raise errors.ValidationError(f"{where}.{name}", "is required")
        return None
    if not isinstance(value, str):
        raise errors.ValidationError(f"{where}.{name}", "must be a string")
    if len(value) > limit:
        raise errors.ValidationError(f"{where}.{name}", f"must be at most {limit} characters")
    return value


def _timestamp_ms(where: str, value: object) -> dt.datetime | None:
    """Unix milliseconds (number or digit string) as an aware UTC datetime; absent → None."""
    if value is None or value == "":
        return None
    field = f"{where}.Timestamp"
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise errors.ValidationError(field, "must be a Unix time in milliseconds")
    try:
        return _EPOCH + dt.timedelta(milliseconds=value)
    except OverflowError:
        raise errors.ValidationError(field, "is out of range") from None
