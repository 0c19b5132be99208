"""What the sandbox did, for tests and the demo: the journal (per CAMS TaskId, per SMS TaskId/OutId) and
counters.

Served as JSON by `GET /sandbox/journal` and `GET /sandbox/stats`. In memory only, bounded by
`journal_limit` entries per section (oldest dropped first).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any


@dataclasses.dataclass(kw_only=True)
class ReportLog:
    """One report the sandbox pushes (a duplicate push is its own ReportLog)."""

    status: str
    message_id: str
    duplicate: bool = False
    task_id_omitted: bool = False
    withheld: bool = False  # a `late` receipt not released yet
    early: bool = False  # pushed before the send response
    posted: bool | None = None  # None: not pushed yet; True: got HTTP 200; False: gave up
    attempts: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(kw_only=True)
class ChatEntry:
    """All SendChatappMessage calls carrying one TaskId (or, without TaskId, one MessageId)."""

    task_id: str
    to: str
    outcome: str | None = None  # outcome of the latest accepted or rejected send
    message_id: str | None = None  # MessageId of the latest accepted send
    message_ids: list[str] = dataclasses.field(default_factory=list)
    attempts: int = 0  # authenticated calls, throttled and rejected ones included
    accepted: int = 0  # calls answered Code=OK
    throttled: int = 0
    rejected: int = 0  # business errors (Code != OK)
    reports: list[ReportLog] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["reports"] = [r.to_json() for r in self.reports]
        return out


@dataclasses.dataclass(kw_only=True)
class SmsEntry:
    """All SMS sends carrying one reference: TaskId (SendMessageToGlobe) or OutId (SendSms)."""

    ref: str
    api: str
    to: str
    sends: int = 0  # accepted sends: "a fallback fires at most once" means this stays 1
    rejected: int = 0
    outcome: str | None = None  # "delivered" or "failed" (of the latest send)
    message_ids: list[str] = dataclasses.field(default_factory=list)
    reports: list[ReportLog] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["reports"] = [r.to_json() for r in self.reports]
        return out


@dataclasses.dataclass(kw_only=True)
class Stats:
    """Counters over the sandbox's life (or since the last reset)."""

    cams_calls: int = 0  # every SendChatappMessage request, refused ones included
    cams_ok: int = 0
    cams_rejected: int = 0  # business errors
    throttled: int = 0
    auth_failures: int = 0  # any signature/AccessKey/date/nonce refusal, CAMS and SMS
    signature_failures: int = 0  # SignatureDoesNotMatch only
    sms_calls: int = 0
    sms_sends: int = 0
    sms_rejected: int = 0
    receipts_posted: int = 0  # reports delivered with HTTP 200
    receipts_failed: int = 0  # reports given up on
    pushes: int = 0  # HTTP pushes attempted (each try counts)
    push_failures: int = 0  # tries that did not get HTTP 200
    late_withheld: int = 0
    late_released: int = 0
    # MNS (sandbox/mns.py, sandbox/mnsqueue.py, sandbox/dybaseapi.py)
    mns_enqueued: int = 0  # messages put into a queue (reports and SendMessage)
    mns_received: int = 0  # deliveries handed out by receives (redeliveries included)
    mns_redelivered: int = 0  # deliveries with DequeueCount > 1
    mns_deleted: int = 0
    mns_delete_errors: int = 0  # handles that were no longer valid
    mns_deletes_stalled: int = 0  # delete requests held unanswered by the stall knob (total)
    mns_deletes_pending: int = 0  # ... of which still held now
    mns_auth_failures: int = 0  # MNS requests refused by signature, key, date or token checks
    mns_token_denials: int = 0  # ... of which: an expired or revoked security token
    mns_tokens_issued: int = 0  # QueryTokenForMnsQueue answers

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Journal:
    """Per-reference records of sends and the reports they produced."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self.chat: collections.OrderedDict[str, ChatEntry] = collections.OrderedDict()
        self.sms: collections.OrderedDict[str, SmsEntry] = collections.OrderedDict()
        self.stats = Stats()

    def chat_entry(self, task_id: str, to: str) -> ChatEntry:
        entry = self.chat.get(task_id)
        if entry is None:
            entry = self.chat[task_id] = ChatEntry(task_id=task_id, to=to)
            while len(self.chat) > self._limit:
                self.chat.popitem(last=False)
        return entry

    def sms_entry(self, ref: str, api: str, to: str) -> SmsEntry:
        entry = self.sms.get(ref)
        if entry is None:
            entry = self.sms[ref] = SmsEntry(ref=ref, api=api, to=to)
            while len(self.sms) > self._limit:
                self.sms.popitem(last=False)
        return entry

    def reset(self) -> None:
        self.chat.clear()
        self.sms.clear()
        self.stats = Stats()

    def to_json(self) -> dict[str, Any]:
        return {
            "chat": {k: v.to_json() for k, v in self.chat.items()},
            "sms": {k: v.to_json() for k, v in self.sms.items()},
        }
