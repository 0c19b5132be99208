"""The Alibaba MNS (SMQ) queue adapter: signed REST/XML calls, response parsing, and `MnsQueue`, which
implements `ports.ReceiptQueue` (BatchReceiveMessage, BatchDeleteMessage, ChangeMessageVisibility).

Credentials come from a `CredentialSource`: `StaticCredentials` (own queue, AccessKey) or the temporary
STS credentials of `dybaseapi.TokenCredentials` (Alicom queues), refreshed once on a 403 and retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import quote
from xml.sax.saxutils import escape

import aiohttp
import structlog
import yarl

from fallback_daemon import config, metrics
from fallback_daemon.core import errors, model, ports
from fallback_daemon.providers import signing

log = structlog.get_logger("fallback_daemon.providers.mns")

API_VERSION = "2015-06-06"
XMLNS = "http://mns.aliyuncs.com/doc/v1/"
CONTENT_TYPE = "text/xml;charset=UTF-8"
ALICOM_ENDPOINT = "https://1943695596114318.mns.cn-hangzhou.aliyuncs.com"  # China site (reference §2.4)
MAX_BATCH = 16  # numOfMessages and handles per BatchDeleteMessage
MAX_WAIT_S = 30
MD5_PASS_AFTER = 3  # a body whose MD5 keeps mismatching is handed over (and dead-lettered) on this dequeue
HANDLE_GONE = frozenset({"MessageNotExist", "ReceiptHandleError"})
TRANSIENT_CODES = frozenset({"QpsLimitExceeded", "InternalError", "TimeExpired", "ServiceUnavailable"})
QUEUE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,255}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Credentials:
    """An AccessKey pair, plus the STS token when the pair is temporary."""

    access_key_id: str
    access_key_secret: config.Secret
    security_token: config.Secret | None = None


class CredentialSource(Protocol):
    """Where MnsQueue gets its credentials."""

    temporary: bool  # True: a 403 means "refresh and retry once"

    async def get(self) -> Credentials:
        """Credentials valid now (refreshing them first when they are about to expire)."""
        ...

    async def refresh(self, stale: Credentials) -> Credentials:
        """New credentials after `stale` was refused (a no-op if another caller already refreshed)."""
        ...


class StaticCredentials:
    """Own-queue mode: one AccessKey of the account that owns the queue."""

    temporary = False

    def __init__(self, access_key_id: str, access_key_secret: config.Secret) -> None:
        self._creds = Credentials(access_key_id=access_key_id, access_key_secret=access_key_secret)

    async def get(self) -> Credentials:
        return self._creds

    async def refresh(self, stale: Credentials) -> Credentials:
        return self._creds


@dataclasses.dataclass(frozen=True, kw_only=True)
class Message:
    """One received MNS message (times are epoch ms)."""

    message_id: str
    receipt_handle: str
    body: str
    body_md5: str
    enqueue_time: int
    first_dequeue_time: int
    next_visible_time: int
    dequeue_count: int
    priority: int

    def md5_ok(self) -> bool:
        """True when MessageBodyMD5 is absent or is the MD5 of the body text exactly as transmitted."""
        if not self.body_md5:
            return True
        actual = hashlib.md5(self.body.encode("utf-8")).hexdigest()  # noqa: S324 - protocol-mandated
        return actual.upper() == self.body_md5.upper()


@dataclasses.dataclass(frozen=True, kw_only=True)
class MnsError:
    """An `<Error>` body, or one `<Error>` of a BatchDeleteMessage `<Errors>` body."""

    code: str
    message: str = ""
    request_id: str = ""
    receipt_handle: str = ""


# ---- XML (namespace-agnostic: the doc namespace comes with and without its trailing slash) ----------------


def xml_local(tag: str) -> str:
    """The tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def xml_root(body: bytes | str) -> ET.Element:
    """Parse an MNS XML document (DTDs refused). Raises ValueError or ET.ParseError."""
    raw = body.encode() if isinstance(body, str) else body
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise ValueError("DTDs are not allowed in MNS responses")
    return ET.fromstring(raw)  # noqa: S314 - DTDs refused above; expat >= 2.4 bounds entity expansion


def xml_fields(elem: ET.Element) -> dict[str, str]:
    """Child local names -> text."""
    return {xml_local(child.tag): child.text or "" for child in elem}


def _int(fields: dict[str, str], name: str) -> int:
    value = fields.get(name, "").strip()
    return int(value) if value else 0


def parse_messages(body: bytes | str) -> list[Message]:
    """Parse a BatchReceiveMessage `<Messages>` body, or a ReceiveMessage `<Message>` root.

    Raises:
        ValueError: not XML, or a message without MessageId / ReceiptHandle.
    """
    root = xml_root(body)
    elems = [root] if xml_local(root.tag) == "Message" else [e for e in root if xml_local(e.tag) == "Message"]
    if xml_local(root.tag) not in ("Messages", "Message"):
        raise ValueError(f"unexpected root element <{xml_local(root.tag)}>")
    out = []
    for elem in elems:
        f = xml_fields(elem)
        if not f.get("MessageId") or not f.get("ReceiptHandle"):
            raise ValueError("a message lacks MessageId or ReceiptHandle")
        out.append(
            Message(
                message_id=f["MessageId"],
                receipt_handle=f["ReceiptHandle"],
                body=f.get("MessageBody", ""),
                body_md5=f.get("MessageBodyMD5", ""),
                enqueue_time=_int(f, "EnqueueTime"),
                first_dequeue_time=_int(f, "FirstDequeueTime"),
                next_visible_time=_int(f, "NextVisibleTime"),
                dequeue_count=_int(f, "DequeueCount") or 1,
                priority=_int(f, "Priority"),
            )
        )
    return out


def parse_error(body: bytes | str) -> MnsError | None:
    """Parse an `<Error>` body; None when the body is not one."""
    try:
        root = xml_root(body)
    except (ValueError, ET.ParseError):
        return None
    if xml_local(root.tag) != "Error":
        return None
    f = xml_fields(root)
    return MnsError(code=f.get("Code", ""), message=f.get("Message", ""), request_id=f.get("RequestId", ""))


def parse_delete_errors(body: bytes | str) -> list[MnsError]:
    """Parse a BatchDeleteMessage `<Errors><Error><ErrorCode/><ErrorMessage/><ReceiptHandle/>` body."""
    root = xml_root(body)
    if xml_local(root.tag) != "Errors":
        raise ValueError(f"unexpected root element <{xml_local(root.tag)}>")
    out = []
    for elem in root:
        f = xml_fields(elem)
        out.append(
            MnsError(
                code=f.get("ErrorCode", ""),
                message=f.get("ErrorMessage", ""),
                receipt_handle=f.get("ReceiptHandle", ""),
            )
        )
    return out


def parse_visibility(body: bytes | str) -> tuple[str, int]:
    """ChangeMessageVisibility answer: (new ReceiptHandle, NextVisibleTime ms).

    The root is `<ChangeVisibility>` (an old doc example shows `<Message>`; both are read).
    """
    f = xml_fields(xml_root(body))
    if not f.get("ReceiptHandle"):
        raise ValueError("no ReceiptHandle in the ChangeMessageVisibility answer")
    return f["ReceiptHandle"], _int(f, "NextVisibleTime")


def receipt_handles_xml(handles: Sequence[str]) -> bytes:
    """The BatchDeleteMessage body, as the SDKs write it."""
    items = "".join(f"<ReceiptHandle>{escape(h)}</ReceiptHandle>" for h in handles)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ReceiptHandles xmlns="{XMLNS}">{items}</ReceiptHandles>'
    ).encode()


# ---- signing -----------------------------------------------------------------------------------------------


def http_date(now: float) -> str:
    """RFC 1123 date in GMT, as the Date header wants it."""
    return email.utils.formatdate(now, usegmt=True)


def signed_headers(
    creds: Credentials, *, method: str, resource: str, date: str, body: bytes = b""
) -> dict[str, str]:
    """Headers of one MNS request. `security-token` is added after signing (it is not an x-mns-* header)."""
    headers = {"Date": date, "x-mns-version": API_VERSION}
    md5 = ctype = ""
    if body:
        md5, ctype = signing.mns_content_md5(body), CONTENT_TYPE
        headers["Content-MD5"], headers["Content-Type"] = md5, ctype
    string_to_sign = signing.mns_string_to_sign(
        method=method, resource=resource, headers=headers, content_md5=md5, content_type=ctype
    )
    headers["Authorization"] = signing.mns_authorization(
        access_key_id=creds.access_key_id,
        secret=creds.access_key_secret.reveal(),
        string_to_sign=string_to_sign,
    )
    if creds.security_token:
        headers["security-token"] = creds.security_token.reveal()
    return headers


def endpoint_for(mode: str, endpoint: str) -> str:
    """The MNS endpoint to use: the configured one, else (Alicom mode only) Alibaba's China endpoint.

    Raises:
        errors.ConfigError: own-queue mode without FALLBACK_MNS_ENDPOINT.
    """
    if endpoint:
        return endpoint
    if mode == "alicom":
        return ALICOM_ENDPOINT
    raise errors.ConfigError("FALLBACK_MNS_ENDPOINT", "required when FALLBACK_MNS_MODE=own")


def classify(status: int, body: bytes, *, temporary: bool) -> errors.ProviderError:
    """The domain error for a failed MNS answer."""
    err = parse_error(body)
    code = err.code if err else f"HTTP{status}"
    text = f"MNS {status} {code}: {err.message if err else body[:200]!r}"
    if status >= 500 or status == 408 or code in TRANSIENT_CODES:
        return errors.TransientError(text, code=code, status=status)
    if status == 403 and temporary:
        # Temporary credentials still refused after one refresh: the token service is asked again later.
        return errors.TransientError(text, code=code, status=status)
    return errors.PermanentError(text, code=code, status=status)


def _unreadable(exc: Exception) -> errors.TransientError:
    return errors.TransientError(f"MNS answered an unreadable body: {exc}", code="MalformedXML")


# ---- the adapter ------------------------------------------------------------------------------------------


class MnsQueue:
    """One MNS queue as a `ports.ReceiptQueue`.

    :param endpoint: `http(s)://{AccountId}.mns.{region}.aliyuncs.com` (or the sandbox).
    :param request_timeout_s: allowance on top of `waitseconds` for one request.
    :param delete_attempts: tries of one BatchDeleteMessage on transient errors (a failed delete only costs a
        redelivery, which the receipt dedupe absorbs).
    """

    source = "mns"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        endpoint: str,
        queue_name: str,
        kind: model.ReceiptKind,
        credentials: CredentialSource,
        request_timeout_s: float = 10.0,
        delete_attempts: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not QUEUE_NAME.fullmatch(queue_name):
            raise ValueError(f"invalid MNS queue name {queue_name!r}")
        self._session = session
        self._origin = str(yarl.URL(endpoint).origin())
        self.name = queue_name
        self.kind = kind
        self._creds = credentials
        self._timeout_s = request_timeout_s
        self._delete_attempts = max(1, delete_attempts)
        self._clock = clock
        self._path = f"/queues/{queue_name}/messages"

    async def receive(self, *, max_messages: int, wait_s: int) -> list[ports.QueueMessage]:
        """BatchReceiveMessage; [] on `MessageNotExist` (an empty queue after the long poll)."""
        n = max(1, min(MAX_BATCH, max_messages))
        w = max(0, min(MAX_WAIT_S, wait_s))
        status, body = await self._call(
            "GET",
            f"{self._path}?numOfMessages={n}&waitseconds={w}",
            timeout_s=w + self._timeout_s,
            op="receive",
        )
        if status == 404:
            err = parse_error(body)
            if err is not None and err.code == "MessageNotExist":
                return []
        if status != 200:
            raise classify(status, body, temporary=self._creds.temporary)
        try:
            messages = parse_messages(body)
        except (ValueError, ET.ParseError) as exc:
            raise _unreadable(exc) from exc
        return await self._checked(messages)

    async def _checked(self, messages: list[Message]) -> list[ports.QueueMessage]:
        out = []
        for m in messages:
            if not m.md5_ok() and m.dequeue_count < MD5_PASS_AFTER:
                # Corrupted in transit: let MNS deliver it again soon instead of dead-lettering good data.
                log.warning(
                    "mns_body_md5_mismatch",
                    queue=self.name,
                    message_id=m.message_id,
                    dequeue_count=m.dequeue_count,
                )
                await self._release(m.receipt_handle)
                continue
            out.append(
                ports.QueueMessage(
                    handle=m.receipt_handle,
                    body=m.body,
                    message_id=m.message_id,
                    dequeue_count=m.dequeue_count,
                )
            )
        return out

    async def _release(self, handle: str) -> None:
        try:
            await self.change_visibility(handle, 1)
        except errors.ProviderError as exc:
            log.warning("mns_release_failed", queue=self.name, error=str(exc))

    async def delete(self, handles: Sequence[str]) -> None:
        """BatchDeleteMessage in chunks of 16. Handles that expired meanwhile are logged, not raised: their
        messages come back and are deduplicated.

        Raises:
            errors.TransientError: MNS unreachable or failing after `delete_attempts` tries.
            errors.PermanentError: the request was refused (AccessDenied, QueueNotExist, ...).
        """
        for start in range(0, len(handles), MAX_BATCH):
            await self._delete_chunk(list(handles[start : start + MAX_BATCH]))

    async def _delete_chunk(self, handles: list[str]) -> None:
        body = receipt_handles_xml(handles)
        for attempt in range(1, self._delete_attempts + 1):
            try:
                status, answer = await self._call(
                    "DELETE", self._path, body=body, timeout_s=self._timeout_s, op="delete"
                )
            except errors.TransientError:
                if attempt == self._delete_attempts:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
                continue
            if 200 <= status < 300:
                return
            gone = self._handles_gone(status, answer)
            if gone is not None:
                log.warning(
                    "mns_delete_handles_expired",
                    queue=self.name,
                    handles=len(gone),
                    codes=sorted({e.code for e in gone}),
                )
                return
            err = classify(status, answer, temporary=self._creds.temporary)
            if isinstance(err, errors.PermanentError) or attempt == self._delete_attempts:
                raise err
            await asyncio.sleep(0.1 * 2**attempt)

    @staticmethod
    def _handles_gone(status: int, answer: bytes) -> list[MnsError] | None:
        """The failed handles when every failure only says "this handle is no longer valid", else None."""
        if status not in (400, 404):
            return None
        single = parse_error(answer)
        if single is not None:
            return [single] if single.code in HANDLE_GONE else None
        try:
            failed = parse_delete_errors(answer)
        except (ValueError, ET.ParseError):
            return None
        return failed if failed and all(e.code in HANDLE_GONE for e in failed) else None

    async def change_visibility(self, handle: str, timeout_s: int) -> str:
        """ChangeMessageVisibility; returns the new ReceiptHandle (the old one stops working)."""
        resource = f"{self._path}?ReceiptHandle={quote(handle, safe='')}&VisibilityTimeout={int(timeout_s)}"
        status, body = await self._call("PUT", resource, timeout_s=self._timeout_s, op="visibility")
        if status != 200:
            raise classify(status, body, temporary=self._creds.temporary)
        try:
            return parse_visibility(body)[0]
        except (ValueError, ET.ParseError) as exc:
            raise _unreadable(exc) from exc

    async def _call(
        self, method: str, resource: str, *, timeout_s: float, op: str, body: bytes = b""
    ) -> tuple[int, bytes]:
        """One signed request; with temporary credentials a 403 refreshes them and retries once."""
        creds = await self._creds.get()
        status, answer = await self._send(creds, method, resource, body, timeout_s, op)
        if status == 403 and self._creds.temporary:
            err = parse_error(answer)
            log.info("mns_credentials_refused", queue=self.name, code=err.code if err else "")
            creds = await self._creds.refresh(creds)
            status, answer = await self._send(creds, method, resource, body, timeout_s, op)
        metrics.mns_requests.labels(op, str(status)).inc()
        return status, answer

    async def _send(
        self, creds: Credentials, method: str, resource: str, body: bytes, timeout_s: float, op: str
    ) -> tuple[int, bytes]:
        date = http_date(self._clock())
        headers = signed_headers(creds, method=method, resource=resource, date=date, body=body)
        url = yarl.URL(self._origin + resource, encoded=True)
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(5.0, timeout_s))
        try:
            # Without a body aiohttp would add its own Content-Type (PUT), which is then not what was signed.
            skip = () if body else ("Content-Type",)
            async with self._session.request(
                method, url, data=body or None, headers=headers, timeout=timeout, skip_auto_headers=skip
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            metrics.mns_requests.labels(op, "error").inc()
            raise errors.TransientError(
                f"MNS {method} failed: {type(exc).__name__}: {exc}", code="NetworkError"
            ) from exc
