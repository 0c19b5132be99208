"""Dybaseapi `QueryTokenForMnsQueue` at the sandbox's root (RPC style, signature V1 verified): issues the
temporary MNS credentials kept in `mnsauth.Tokens`.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

from aiohttp import web

from fallback_daemon.providers import signing
from fallback_daemon.sandbox import mnsauth, replies
from fallback_daemon.sandbox import state as state_mod

ACTION = "QueryTokenForMnsQueue"
VERSIONS = ("2017-05-25", "2018-05-01")
PRODUCT = "Dybaseapi"
SIGNED_PARAMS = (
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
)


def _error(request: web.Request, status: int, code: str, message: str | None = None) -> web.Response:
    return replies.pop_error(request, status, code, message, product=PRODUCT.lower())


async def rpc_entry(request: web.Request) -> web.Response:
    """POST / without x-acs-action: an RPC call with signature V1; only QueryTokenForMnsQueue is served."""
    params = dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
    body = await request.read()
    if body:
        try:
            params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return _error(request, 400, "InvalidParameter", "The form body is not UTF-8.")
    if params.get("Action") != ACTION:
        return _error(request, 404, "InvalidAction.NotFound")
    if params.get("Version") not in VERSIONS:
        return _error(request, 400, "InvalidVersion", f"Version must be one of {', '.join(VERSIONS)}.")
    state = request.app[state_mod.STATE]
    denial = _verify(request, state, params)
    if denial is not None:
        return denial
    message_type = params.get("MessageType", "")
    if not message_type:
        return _error(request, 400, "MissingMessageType", "MessageType is mandatory for this action.")
    queue = params.get("QueueName") or f"{mnsauth.ALICOM_PREFIX}{state.config.mns_uid}-{message_type}"
    if queue not in state.mns.queues or not queue.startswith(mnsauth.ALICOM_PREFIX):
        return _error(request, 400, "InvalidParameter.QueueName", f"No Alicom queue {queue} here.")
    token = state.tokens.issue(queue)
    state.journal.stats.mns_tokens_issued += 1
    return replies.reply(
        {
            "RequestId": replies.request_id(),
            "Code": "OK",
            "Message": "OK",
            "MessageTokenDTO": {
                "AccessKeyId": token.access_key_id,
                "AccessKeySecret": token.access_key_secret,
                "SecurityToken": token.security_token,
                "CreateTime": mnsauth.beijing(token.created_at),
                "ExpireTime": mnsauth.beijing(token.expires_at),
            },
        }
    )


def _verify(
    request: web.Request, state: state_mod.SandboxState, params: Mapping[str, str]
) -> web.Response | None:
    """Signature V1 as the POP gateway checks it: params present, key known, timestamp fresh, nonce new."""
    missing = [p for p in SIGNED_PARAMS if not params.get(p)]
    if missing:
        return _error(
            request,
            400,
            "IncompleteSignature",
            f"The request signature does not conform to Aliyun standards: missing {', '.join(missing)}.",
        )
    if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
        return _error(request, 400, "IncompleteSignature", "SignatureMethod must be HMAC-SHA1, version 1.0.")
    config = state.config
    if params["AccessKeyId"] != config.access_key_id:
        return _error(request, 404, "InvalidAccessKeyId.NotFound")
    try:
        stamp = dt.datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return _error(request, 400, "InvalidTimeStamp.Format")
    now = time.time()
    if abs(now - stamp.timestamp()) > config.max_skew_s:
        return _error(request, 400, "InvalidTimeStamp.Expired")
    expected = signing.rpc_v1_signature(secret=config.access_key_secret, method=request.method, params=params)
    if not hmac.compare_digest(expected, params["Signature"]):
        signed = {k: v for k, v in params.items() if k != "Signature"}
        sts = f"{request.method}&%2F&{signing.percent_encode(signing.canonical_query(signed))}"
        return _error(
            request,
            400,
            "SignatureDoesNotMatch",
            f"Specified signature does not match our calculation. server string to sign is:{sts}",
        )
    if not state.rpc_nonces.use(params["SignatureNonce"], now, config.max_skew_s):
        return _error(request, 400, "SignatureNonceUsed")
    return None
