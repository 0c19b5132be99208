"""CAMS SendChatappMessage (API 2020-06-06): our message id goes as TaskId, never any FallBack* parameter."""

from __future__ import annotations

from collections.abc import Mapping

from fallback_daemon import errors
from fallback_daemon.providers import acs

VERSION = "2020-06-06"
FORBIDDEN = ("FallBackId", "FallBackRule", "FallBackDuration", "FallBackContent")


class CamsClient:
    def __init__(self, client: acs.AcsClient) -> None:
        self._client = client

    async def send(self, *, task_id: str, params: Mapping[str, str]) -> str:
        wire = {k: v for k, v in params.items() if k not in FORBIDDEN and k != "TaskId"}
        wire["TaskId"] = task_id
        body = await self._client.call("SendChatappMessage", wire)
        message_id = body.get("MessageId")
        if not message_id:
            raise errors.AmbiguousError("Code OK without MessageId", code="NoMessageId")
        return str(message_id)
