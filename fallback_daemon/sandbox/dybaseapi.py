"""Dybaseapi `QueryTokenForMnsQueue`: issues the temporary MNS credentials kept in `mnsauth.Tokens`.

Served in both signature styles the SDKs use (ACS3, and RPC signature V1 with GET or POST); app.py
dispatches and verifies, this module only answers.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from fallback_daemon.sandbox import mnsauth, replies
from fallback_daemon.sandbox import state as state_mod

ACTION = "QueryTokenForMnsQueue"
VERSIONS = ("2017-05-25", "2018-05-01")
PRODUCT = "dybaseapi"


async def query_token_for_mns_queue(
    state: state_mod.SandboxState, *, access_key: str, params: Mapping[str, str], request: web.Request
) -> web.Response:
    """MessageTokenDTO for the Alicom queue of `MessageType` (or the `QueueName` given)."""
    del access_key
    message_type = params.get("MessageType", "")
    if not message_type:
        return replies.missing(request, "MessageType", product=PRODUCT)
    queue = params.get("QueueName") or f"{mnsauth.ALICOM_PREFIX}{state.config.mns_uid}-{message_type}"
    if queue not in state.mns.queues or not queue.startswith(mnsauth.ALICOM_PREFIX):
        return replies.pop_error(
            request, 400, "InvalidParameter.QueueName", f"No Alicom queue {queue} here.", product=PRODUCT
        )
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
