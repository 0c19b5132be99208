"""Alibaba SMS gateways: international SendMessageToGlobe (Dysmsapi 2018-05-01, TaskId = our fallback id) and
domestic SendSms (Dysmsapi 2017-05-25, OutId = our fallback id)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from fallback_daemon import errors
from fallback_daemon.providers import acs

VERSION = "2018-05-01"
DOMESTIC_VERSION = "2017-05-25"
DOMESTIC_ENDPOINT = "https://dysmsapi.aliyuncs.com"
# SendSms codes that mean "try again later" although the gateway answered (its system error).
DOMESTIC_TRANSIENT = frozenset({"isp.SYSTEM_ERROR"})
_PLACEHOLDER = re.compile(r"\{(\w+)\}")  # the same {name} syntax as FALLBACK_SMS_TEMPLATE


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


class DomesticSms:
    """SendSms with a fixed SignName and TemplateCode, filled from the message's TemplateParams.

    :param client: an AcsClient for Dysmsapi 2017-05-25 (dysmsapi.aliyuncs.com).
    :param sign_name: the approved signature (SignName).
    :param template_code: the approved template (TemplateCode, e.g. SMS_123456789).
    :param param_map: SendSms template variable → "{name}" text filled from the message's TemplateParams;
        None sends the message's TemplateParams unchanged.
    """

    name = "alibaba_domestic"

    def __init__(
        self,
        client: acs.AcsClient,
        *,
        sign_name: str,
        template_code: str,
        param_map: Mapping[str, str] | None = None,
    ) -> None:
        if not sign_name or not template_code:
            raise ValueError("sign_name and template_code are required")
        self._client = client
        self._sign_name = sign_name
        self._template_code = template_code
        self._param_map = dict(param_map) if param_map is not None else None

    def template_param(self, template_params: Mapping[str, str]) -> dict[str, str]:
        """The TemplateParam object: the message's TemplateParams, or the configured mapping filled in."""
        if self._param_map is None:
            return dict(template_params)
        return {
            key: _PLACEHOLDER.sub(lambda m: template_params.get(m.group(1), ""), value)
            for key, value in self._param_map.items()
        }

    def params(self, *, fallback_id: str, to: str, template_params: Mapping[str, str]) -> dict[str, str]:
        """The SendSms parameters for one fallback (exposed for tests)."""
        params = {
            "PhoneNumbers": to,
            "SignName": self._sign_name,
            "TemplateCode": self._template_code,
            "OutId": fallback_id,
        }
        values = self.template_param(template_params)
        if values:
            params["TemplateParam"] = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
        return params

    async def send(self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]) -> str:
        """Send the template SMS; return its BizId (the SmsReport's biz_id; out_id is our fallback id).

        `text` is not used: SendSms only sends approved templates.

        Raises:
            errors.TransientError, errors.PermanentError, errors.AmbiguousError
        """
        del text
        try:
            body = await self._client.call(
                "SendSms", self.params(fallback_id=fallback_id, to=to, template_params=template_params)
            )
        except errors.PermanentError as exc:
            if exc.code in DOMESTIC_TRANSIENT:
                raise errors.TransientError(str(exc), code=exc.code, status=exc.status) from exc
            raise
        biz_id = body.get("BizId")
        if not biz_id:
            raise errors.AmbiguousError("Code OK without BizId", code="NoBizId")
        return str(biz_id)
