"""AWS SNS `Publish` to a phone number as an SMS gateway; our fallback id travels as a message attribute.

SNS has no per-message delivery receipt (delivery status goes to CloudWatch Logs only), so a fallback sent
through SNS ends at `sms_sent`; for the same reason an ambiguous Publish cannot be looked up (UNKNOWN).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from fallback_daemon.core import errors, ports
from fallback_daemon.providers import aws

FALLBACK_ID_ATTRIBUTE = "fallback_id"
SMS_TYPES = ("Transactional", "Promotional")


def e164(to: str) -> str:
    """ "6591234567" or "+6591234567" → "+6591234567".

    Raises:
        errors.PermanentError: not a phone number with its country code.
    """
    digits = to.strip().removeprefix("+")
    if not (digits.isascii() and digits.isdigit() and 6 <= len(digits) <= 15) or digits.startswith("0"):
        raise errors.PermanentError("To is not a phone number with a country code", code="InvalidPhoneNumber")
    return "+" + digits


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


class SnsSms:
    """SMS through SNS Publish(PhoneNumber=…).

    :param client: an open aiobotocore SNS client (owned by the caller), configured without automatic
        retries: a publish that timed out is ambiguous and must not be repeated silently.
    :param sender_id: optional `AWS.SNS.SMS.SenderID` (1-11 letters/digits, where the country allows it).
    :param sms_type: `AWS.SNS.SMS.SMSType`, Transactional (default) or Promotional.
    """

    name = "aws_sns"

    def __init__(self, client: Any, *, sender_id: str = "", sms_type: str = "Transactional") -> None:
        if sms_type not in SMS_TYPES:
            raise ValueError(f"sms_type must be one of {SMS_TYPES}")
        self._client = client
        self._sender_id = sender_id
        self._sms_type = sms_type

    def route(self, *, to: str, channel: str) -> SnsSms:
        del to, channel
        return self

    async def lookup(
        self, *, fallback_id: str, to: str, since: dt.datetime, until: dt.datetime
    ) -> ports.Lookup:
        """Always UNKNOWN: SNS has no API that lists or finds published SMS (only optional CloudWatch
        delivery-status logs, keyed by the MessageId the lost answer carried)."""
        del fallback_id, to, since, until
        return ports.Lookup(result=ports.LookupResult.UNKNOWN, detail="SNS has no query for a published SMS")

    def attributes(self, fallback_id: str) -> dict[str, dict[str, str]]:
        attrs = {"AWS.SNS.SMS.SMSType": _string(self._sms_type), FALLBACK_ID_ATTRIBUTE: _string(fallback_id)}
        if self._sender_id:
            attrs["AWS.SNS.SMS.SenderID"] = _string(self._sender_id)
        return attrs

    async def send(self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]) -> str:
        """Publish the fallback text; return the SNS MessageId.

        Raises:
            errors.TransientError: throttled, 5xx, or SNS not reachable (nothing was sent).
            errors.PermanentError: refused (invalid number, opted out, no permission), or no text.
            errors.AmbiguousError: the request went out and no answer came back.
        """
        del template_params  # SNS sends plain text
        if not text:
            raise errors.PermanentError("no fallback text to send through SNS", code="EmptyMessage")
        phone = e164(to)
        async with aws.map_errors(sent_is_ambiguous=True):
            response = await self._client.publish(
                PhoneNumber=phone, Message=text, MessageAttributes=self.attributes(fallback_id)
            )
        message_id = response.get("MessageId")
        if not message_id:
            raise errors.AmbiguousError("Publish answered without a MessageId", code="NoMessageId")
        return str(message_id)
