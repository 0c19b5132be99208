"""Alibaba SMS gateways: international SendMessageToGlobe (Dysmsapi 2018-05-01, TaskId = our fallback id) and
domestic SendSms (Dysmsapi 2017-05-25, OutId = our fallback id), with their send queries
(QueryMessage, QuerySendDetails; docs/reconciliation.md)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from fallback_daemon.core import errors, ports
from fallback_daemon.providers import acs

VERSION = "2018-05-01"
DOMESTIC_VERSION = "2017-05-25"
DOMESTIC_ENDPOINT = "https://dysmsapi.aliyuncs.com"
# SendSms codes that mean "try again later" although the gateway answered (its system error).
DOMESTIC_TRANSIENT = frozenset({"isp.SYSTEM_ERROR"})
_PLACEHOLDER = re.compile(r"\{(\w+)\}")  # the same {name} syntax as FALLBACK_SMS_TEMPLATE
QUERY_SEND_DETAILS = "QuerySendDetails"
QUERY_MESSAGE = "QueryMessage"
PAGE_SIZE = 50  # QuerySendDetails: PageSize 1..50
MAX_PAGES = 20
RETENTION = dt.timedelta(days=29)  # QuerySendDetails keeps 30 days; stay a day inside
CLOCK_MARGIN = dt.timedelta(seconds=60)
CHINA = dt.timezone(dt.timedelta(hours=8))
# QuerySendDetails SendStatus; QueryMessage Status.
DOMESTIC_STATUS = {"1": "pending", "2": "failed", "3": "delivered"}
GLOBE_STATUS = {"1": "sent", "2": "failed", "3": "sending"}
FOUND, ABSENT, UNKNOWN = ports.LookupResult.FOUND, ports.LookupResult.ABSENT, ports.LookupResult.UNKNOWN


def send_dates(since: dt.datetime, until: dt.datetime) -> list[str]:
    """The yyyyMMdd SendDate values covering [since, until] read in China time *and* in UTC (which one
    Alibaba means is not documented: asking both can only add rows, never hide one)."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("naive datetime: since/until must be timezone-aware")
    dates: set[dt.date] = set()
    for zone in (CHINA, dt.UTC):
        day, last = since.astimezone(zone).date(), until.astimezone(zone).date()
        while day <= last:
            dates.add(day)
            day += dt.timedelta(days=1)
    return [d.strftime("%Y%m%d") for d in sorted(dates)]


def _china_time(value: object) -> dt.datetime | None:
    """A "2019-01-08 16:44:10" SendDate (China time [I]); None when unreadable."""
    try:
        return dt.datetime.strptime(str(value or ""), "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA)
    except ValueError:
        return None


class GlobeSms:
    name = "alibaba_globe"

    def __init__(self, client: acs.AcsClient, *, sender: str) -> None:
        self._client = client
        self._sender = sender

    def route(self, *, to: str, channel: str) -> GlobeSms:
        del to, channel
        return self

    async def lookup(
        self, *, fallback_id: str, to: str, since: dt.datetime, until: dt.datetime
    ) -> ports.Lookup:
        """Always UNKNOWN: the only international query, QueryMessage, needs the MessageId that the lost
        answer carried; nothing queries by TaskId, number or date (Dysmsapi 2018-05-01)."""
        del fallback_id, to, since, until
        return ports.Lookup(
            result=UNKNOWN,
            detail=f"{QUERY_MESSAGE} needs the MessageId; SendMessageToGlobe has no other query",
        )

    async def query_message(self, message_id: str) -> ports.Lookup:
        """QueryMessage for a MessageId we do have: FOUND with its Status, or UNKNOWN (never raises)."""
        try:
            body = await self._client.call(QUERY_MESSAGE, {"MessageId": message_id}, ok_field="ResponseCode")
        except errors.ProviderError as exc:
            return ports.Lookup(result=UNKNOWN, detail=f"{QUERY_MESSAGE} failed: {exc}")
        if str(body.get("MessageId") or "") != message_id:
            return ports.Lookup(result=UNKNOWN, detail=f"{QUERY_MESSAGE} answered for another MessageId")
        status = str(body.get("Status") or "")
        return ports.Lookup(
            result=FOUND,
            provider_id=message_id,
            status=GLOBE_STATUS.get(status, status) or None,
            detail=f"{QUERY_MESSAGE}: Status {status} {body.get('ErrorCode') or ''}".rstrip(),
            candidates=1,
        )

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
    :param page_size: rows per QuerySendDetails page (1..50).
    """

    name = "alibaba_domestic"

    def __init__(
        self,
        client: acs.AcsClient,
        *,
        sign_name: str,
        template_code: str,
        param_map: Mapping[str, str] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if not sign_name or not template_code:
            raise ValueError("sign_name and template_code are required")
        self._client = client
        self._sign_name = sign_name
        self._template_code = template_code
        self._param_map = dict(param_map) if param_map is not None else None
        self.page_size = page_size

    def route(self, *, to: str, channel: str) -> DomesticSms:
        del to, channel
        return self

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

    async def lookup(
        self, *, fallback_id: str, to: str, since: dt.datetime, until: dt.datetime
    ) -> ports.Lookup:
        """QuerySendDetails for `to` on every SendDate the window touches; rows carry our OutId.

        FOUND: exactly one row with OutId = our fallback id (QuerySendDetails returns no BizId, so
        `provider_id` is None). ABSENT: every page of every date answered, no row has our OutId and no row
        without an OutId could be ours (same template, inside the window). Otherwise UNKNOWN.
        """
        lo, hi = since - CLOCK_MARGIN, until + CLOCK_MARGIN
        if dt.datetime.now(dt.UTC) - lo > RETENTION:
            return ports.Lookup(result=UNKNOWN, detail=f"{QUERY_SEND_DETAILS} keeps 30 days only")
        rows: list[Mapping[str, Any]] = []
        for date in send_dates(lo, hi):
            got = await self._rows(to, date)
            if isinstance(got, str):
                return ports.Lookup(result=UNKNOWN, detail=got)
            rows.extend(got)
        ours = [r for r in rows if str(r.get("OutId") or "") == fallback_id]
        unlabelled = [r for r in rows if not r.get("OutId") and self._could_be_ours(r, lo, hi)]
        counted = f"{len(ours)} of {len(rows)} rows to {to} carry OutId {fallback_id}"
        if len(ours) == 1:
            row = ours[0]
            code = str(row.get("SendStatus") or "")
            return ports.Lookup(
                result=FOUND,
                status=DOMESTIC_STATUS.get(code, code) or None,
                detail=f"{QUERY_SEND_DETAILS}: {counted}; ErrCode {row.get('ErrCode') or '-'}",
                candidates=1,
            )
        if ours:
            return ports.Lookup(
                result=UNKNOWN, detail=f"{QUERY_SEND_DETAILS}: {counted}", candidates=len(ours)
            )
        if unlabelled:
            return ports.Lookup(
                result=UNKNOWN,
                detail=f"{QUERY_SEND_DETAILS}: {counted}; {len(unlabelled)} without an OutId could be it",
                candidates=len(unlabelled),
            )
        return ports.Lookup(result=ABSENT, detail=f"{QUERY_SEND_DETAILS}: {counted}")

    def _could_be_ours(self, row: Mapping[str, Any], lo: dt.datetime, hi: dt.datetime) -> bool:
        code = str(row.get("TemplateCode") or "")
        if code and code != self._template_code:
            return False
        sent = _china_time(row.get("SendDate"))
        return sent is None or lo <= sent <= hi

    async def _rows(self, phone: str, date: str) -> list[Mapping[str, Any]] | str:
        """Every row for one phone and SendDate, or why not."""
        rows: list[Mapping[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            params = {
                "PhoneNumber": phone,
                "SendDate": date,
                "PageSize": str(self.page_size),
                "CurrentPage": str(page),
            }
            try:
                body = await self._client.call(QUERY_SEND_DETAILS, params)
            except errors.ProviderError as exc:
                return f"{QUERY_SEND_DETAILS} {date} page {page} failed: {exc}"
            dtos = body.get("SmsSendDetailDTOs")
            batch = dtos.get("SmsSendDetailDTO") if isinstance(dtos, Mapping) else None
            try:
                total = int(str(body.get("TotalCount")))
            except ValueError:
                total = -1
            if not isinstance(batch, list) or total < 0 or not all(isinstance(r, Mapping) for r in batch):
                return f"{QUERY_SEND_DETAILS} {date} page {page}: an answer without rows or TotalCount"
            rows.extend(batch)
            if len(rows) >= total or len(batch) < self.page_size:
                if len(rows) < total:
                    return f"{QUERY_SEND_DETAILS} {date}: {len(rows)} rows of TotalCount {total}"
                return rows
        return f"{QUERY_SEND_DETAILS} {date}: more than {MAX_PAGES} pages; not covered"
