"""Response bodies and ids in Alibaba's shapes: the POP error envelope, RequestIds, MessageIds, BizIds."""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

# Alibaba's gateway texts for the errors the sandbox produces (POP envelope, HTTP 4xx).
MESSAGES = {
    "IncompleteSignature": "The request signature does not conform to Aliyun standards.",
    "InvalidAccessKeyId.NotFound": "Specified access key is not found.",
    "SignatureDoesNotMatch": "Specified signature does not match our calculation.",
    "SignatureNonceUsed": "Specified signature nonce was used already.",
    "InvalidTimeStamp.Expired": "Specified time stamp or date value is expired.",
    "InvalidTimeStamp.Format": "Specified time stamp or date value is not well formatted.",
    "Throttling.User": "Request was denied due to user flow control.",
    "InvalidAction.NotFound": "Specified api is not found, please check your url and method.",
    "InvalidVersion": "Specified parameter Version is not valid.",
}


def request_id() -> str:
    return str(uuid.uuid4()).upper()


def pop_error(
    request: web.Request, status: int, code: str, message: str | None = None, *, product: str = "cams"
) -> web.Response:
    """The standard Alibaba POP gateway error: HTTP 4xx with {RequestId, HostId, Code, Message, Recommend}."""
    rid = request_id()
    body = {
        "RequestId": rid,
        "HostId": request.host,
        "Code": code,
        "Message": message or MESSAGES.get(code, code),
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product={product}&requestId={rid}",
    }
    return reply(body, status=status)


def missing(request: web.Request, name: str, product: str = "cams") -> web.Response:
    """The gateway's answer to a required parameter left out (POP `Missing<Name>`, HTTP 400) [I]."""
    return pop_error(request, 400, f"Missing{name}", f"{name} is mandatory for this action.", product=product)


def first_missing(params: Mapping[str, str], required: tuple[str, ...]) -> str | None:
    """The first of an action's required parameters that is absent or blank, else None.

    Alibaba's gateway checks the parameters its API metadata marks required before the product sees the
    call, and answers `missing()` for the first one left out; a value of only spaces counts as left out [I].
    """
    return next((name for name in required if not params.get(name, "").strip()), None)


def invalid(request: web.Request, name: str, problem: str, product: str = "cams") -> web.Response:
    """The gateway's answer to a parameter of the wrong form (POP `InvalidParameter`, HTTP 400) [I]."""
    return pop_error(
        request,
        400,
        "InvalidParameter",
        f"The specified parameter {name} is not valid: {problem}",
        product=product,
    )


def reply(body: dict[str, Any], status: int = 200) -> web.Response:
    rid = body.get("RequestId") or request_id()
    return web.json_response(body, status=status, headers={"x-acs-request-id": str(rid)})


class Ids:
    """Unique provider ids in Alibaba's digit formats, unique per sandbox instance and across restarts."""

    def __init__(self) -> None:
        # Not from the seeded generator: ids must differ between runs even with the same seed.
        self._instance = f"{secrets.randbelow(10**6):06d}"
        self._counter = itertools.count(1)

    def chat_message_id(self) -> str:
        """22 digits like 2023078469463703000001: date, instance, counter."""
        return f"{dt.datetime.now(dt.UTC):%Y%m%d}{self._instance}{next(self._counter):08d}"

    def sms_message_id(self) -> str:
        """Like 1234500001234567: instance then counter."""
        return f"{self._instance}{next(self._counter):010d}"

    def biz_id(self) -> str:
        """Like 900619746936498440^0."""
        return f"{self._instance}{next(self._counter):012d}^0"

    def conversation_id(self) -> str:
        return f"7{self._instance}{next(self._counter):08d}"
