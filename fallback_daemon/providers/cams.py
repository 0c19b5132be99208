"""CAMS SendChatappMessage (API 2020-06-06): our message id goes as TaskId, never any FallBack* parameter;
ListChatappMessage answers whether an ambiguous send went out (docs/reconciliation.md)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Mapping
from typing import Any

from fallback_daemon.core import errors, ports
from fallback_daemon.providers import acs

VERSION = "2020-06-06"
FORBIDDEN = ("FallBackId", "FallBackRule", "FallBackDuration", "FallBackContent")
LIST_ACTION = "ListChatappMessage"
# ListChatappMessage covers these channels only (its API reference).
LIST_CHANNELS = frozenset({"whatsapp", "viber"})
PAGE_SIZE = 50
MAX_PAGES = 20
# Widen the asked window on both sides: the provider stamps SendTime with its own clock.
CLOCK_MARGIN = dt.timedelta(seconds=60)

FOUND, ABSENT, UNKNOWN = ports.LookupResult.FOUND, ports.LookupResult.ABSENT, ports.LookupResult.UNKNOWN


def _digits(value: object) -> str:
    return str(value or "").strip().removeprefix("+")


def _ms(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: since/until must be timezone-aware")
    return int(moment.timestamp() * 1000)


def _send_time(row: Mapping[str, Any]) -> dt.datetime | None:
    """SendTime as documented ("2025-07-11T01:16:49.761+00:00"); None when absent or unreadable."""
    try:
        value = dt.datetime.fromisoformat(str(row.get("SendTime") or ""))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def could_be_ours(row: object, params: Mapping[str, str], lo: dt.datetime, hi: dt.datetime) -> bool:
    """False only on proof the row is another message: inbound, another user or business number, or a
    SendTime outside the window. Anything unreadable stays a candidate (it could be ours)."""
    if not isinstance(row, Mapping):
        return True
    if str(row.get("EventAction") or "").upper() == "UP":
        return False
    for field, ours in (("UserNumber", params.get("To")), ("BusinessNumber", params.get("From"))):
        theirs = _digits(row.get(field))
        if theirs and theirs != _digits(ours):
            return False
    sent = _send_time(row)
    return sent is None or lo <= sent <= hi


def matches(row: Mapping[str, Any], params: Mapping[str, str]) -> str | None:
    """Why the one remaining candidate is not positively this send; None if every field it has agrees."""
    if not row.get("MessageId"):
        return "the candidate has no MessageId"
    kind = params.get("Type", "").lower()
    theirs = str(row.get("Type") or "").lower()
    if theirs and kind and theirs != kind:
        return f"the candidate is Type {theirs}, we sent {kind}"
    if kind == "template":
        code = str(row.get("TemplateCode") or "")
        if code and params.get("TemplateCode") and code != params["TemplateCode"]:
            return f"the candidate has TemplateCode {code}, we sent {params['TemplateCode']}"
    elif kind == "message":
        mtype = str(row.get("MessageType") or "").lower()
        if mtype and params.get("MessageType") and mtype != params["MessageType"].lower():
            return f"the candidate is MessageType {mtype}, we sent {params['MessageType']}"
    return None


class CamsClient:
    """`ports.ChatApi` over CAMS.

    :param client: an AcsClient for CAMS 2020-06-06.
    :param cust_space_id: the CustSpaceId ListChatappMessage needs when a message's params carry none.
    :param page_size: rows per ListChatappMessage page.
    """

    def __init__(self, client: acs.AcsClient, *, cust_space_id: str = "", page_size: int = PAGE_SIZE) -> None:
        self._client = client
        self._cust_space_id = cust_space_id
        self._page_size = page_size

    async def send(self, *, task_id: str, params: Mapping[str, str]) -> str:
        wire = {k: v for k, v in params.items() if k not in FORBIDDEN and k != "TaskId"}
        wire["TaskId"] = task_id
        body = await self._client.call("SendChatappMessage", wire)
        message_id = body.get("MessageId")
        if not message_id:
            raise errors.AmbiguousError("Code OK without MessageId", code="NoMessageId")
        return str(message_id)

    async def lookup(
        self,
        *,
        task_id: str,
        params: Mapping[str, str],
        since: dt.datetime,
        until: dt.datetime,
        exclude_ids: Collection[str] = (),
    ) -> ports.Lookup:
        """ListChatappMessage for the business number, user number and window of this send.

        It does not return the TaskId, so a row "could be ours" unless it provably is another message
        (`could_be_ours`); rows in `exclude_ids` belong to other messages. ABSENT: every page answered and no
        candidate; FOUND: exactly one candidate and it agrees with what we sent (`matches`); else UNKNOWN.
        """
        del task_id  # not returned by ListChatappMessage
        channel = params.get("ChannelType", "").lower()
        if channel not in LIST_CHANNELS:
            return ports.Lookup(result=UNKNOWN, detail=f"{LIST_ACTION} does not cover channel {channel!r}")
        space = params.get("CustSpaceId") or self._cust_space_id
        if not space or not params.get("From") or not params.get("To"):
            return ports.Lookup(result=UNKNOWN, detail=f"{LIST_ACTION} needs CustSpaceId, From and To")
        lo, hi = since - CLOCK_MARGIN, until + CLOCK_MARGIN
        query = {
            "ChannelType": channel,
            "CustSpaceId": space,
            "BusinessNumber": params["From"],
            "UserNumber": params["To"],
            "EventAction": "DOWN",
            "StartTime": str(_ms(lo)),
            "EndTime": str(_ms(hi)),
        }
        rows = await self._all_rows(query)
        if isinstance(rows, str):
            return ports.Lookup(result=UNKNOWN, detail=rows)
        excluded = set(exclude_ids)
        candidates = [
            r
            for r in rows
            if could_be_ours(r, params, lo, hi)
            and not (isinstance(r, Mapping) and str(r.get("MessageId") or "") in excluded)
        ]
        counted = f"{len(candidates)} of {len(rows)} rows to {params['To']} could be this send"
        if not candidates:
            return ports.Lookup(result=ABSENT, detail=f"{LIST_ACTION}: {counted}")
        only = candidates[0]
        if len(candidates) > 1 or not isinstance(only, Mapping):
            return ports.Lookup(
                result=UNKNOWN, detail=f"{LIST_ACTION}: {counted}", candidates=len(candidates)
            )
        problem = matches(only, params)
        if problem:
            return ports.Lookup(
                result=UNKNOWN, detail=f"{LIST_ACTION}: {counted}, but {problem}", candidates=1
            )
        status = str(only.get("MessageStatus") or "") or None
        return ports.Lookup(
            result=FOUND,
            provider_id=str(only["MessageId"]),
            status=status,
            detail=f"{LIST_ACTION}: {counted}",
            candidates=1,
        )

    async def _all_rows(self, query: Mapping[str, str]) -> list[object] | str:
        """Every row of every page, or why not (a provider error, a bad answer, too many pages)."""
        rows: list[object] = []
        for index in range(1, MAX_PAGES + 1):
            page = json.dumps({"Index": index, "Size": self._page_size}, separators=(",", ":"))
            try:
                # In the query string, as the SDK sends them (every field is @Query in its request model).
                body = await self._client.call(LIST_ACTION, {}, query={**query, "Page": page})
            except errors.ProviderError as exc:
                return f"{LIST_ACTION} page {index} failed: {exc}"
            data = body.get("Data")
            if body.get("Success") is False or not isinstance(data, list):
                return f"{LIST_ACTION} page {index}: an answer without a Data list"
            rows.extend(data)
            if len(data) < self._page_size:
                return rows
        return f"{LIST_ACTION}: more than {MAX_PAGES} pages of {self._page_size}; window not covered"
