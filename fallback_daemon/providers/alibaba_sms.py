"""Alibaba international SMS, SendMessageToGlobe (Dysmsapi 2018-05-01); TaskId is our fallback id."""

from __future__ import annotations

from collections.abc import Mapping

from fallback_daemon import errors
from fallback_daemon.providers import acs

VERSION = "2018-05-01"


class GlobeSms:
    name = "alibaba_globe"

    def __init__(self, client: acs.AcsClient, *, sender: str) -> None:
        self._client = client
        self._sender = sender

    async def send(self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]) -> str:
        params = {"To": to, "Message": text, "TaskId": fallback_id}
        if self._sender:
            params["From"] = self._sender
        body = await self._client.call("SendMessageToGlobe", params, ok_field="ResponseCode")
        message_id = body.get("MessageId")
        if not message_id:
            raise errors.AmbiguousError("ResponseCode OK without MessageId", code="NoMessageId")
        return str(message_id)
