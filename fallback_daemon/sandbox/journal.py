"""What the sandbox did, for tests and the demo: the journal (per CAMS TaskId, per SMS TaskId/OutId) and
counters.

Served as JSON by `GET /sandbox/journal` and `GET /sandbox/stats`. Bounded by `journal_limit` entries per
section (oldest dropped first). With a `path`, every change to a send record is also appended to that file
(one JSON line per change, written before the handler's response goes out) and replayed on start, so the
record of what the provider received survives a restart or kill -9 of the sandbox: the fault harness's
ground truth. Reports and counters are not persisted.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterable
from typing import IO, Any, SupportsIndex

Sink = Callable[["ChatEntry | SmsEntry"], None]


class _Tracked(list[str]):
    """A list of ids that reports appends to its entry's sink (MessageIds are recorded by append)."""

    def __init__(self, items: Iterable[str] = (), on_change: Callable[[], None] | None = None) -> None:
        super().__init__(items)
        self._on_change = on_change

    def append(self, item: str) -> None:
        super().append(item)
        if self._on_change is not None:
            self._on_change()

    def insert(self, index: SupportsIndex, item: str) -> None:
        super().insert(index, item)
        if self._on_change is not None:
            self._on_change()


class _Persisted:
    """Mixin: once `_attach(sink)` is called, every field assignment hands the entry to the sink."""

    _sink: Sink | None = None
    _persisted_fields: tuple[str, ...] = ()

    def _attach(self, sink: Sink) -> None:
        object.__setattr__(self, "_sink", sink)
        ids = _Tracked(self.message_ids, self._changed)  # type: ignore[attr-defined]
        object.__setattr__(self, "message_ids", ids)

    def _changed(self) -> None:
        if self._sink is not None:
            self._sink(self)  # type: ignore[arg-type]

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name in self._persisted_fields:
            self._changed()

    def record(self) -> dict[str, Any]:
        """The persisted fields (everything but the reports)."""
        out = {name: getattr(self, name) for name in self._persisted_fields}
        out["message_ids"] = list(out["message_ids"])
        return out


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
class ChatEntry(_Persisted):
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
        return {**self.record(), "reports": [r.to_json() for r in self.reports]}


@dataclasses.dataclass(kw_only=True)
class SmsEntry(_Persisted):
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
        return {**self.record(), "reports": [r.to_json() for r in self.reports]}


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


def _fields(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "reports")


ChatEntry._persisted_fields = _fields(ChatEntry)
SmsEntry._persisted_fields = _fields(SmsEntry)


class Journal:
    """Per-reference records of sends and the reports they produced.

    Args:
        limit: most entries kept per section (oldest dropped first).
        path: a file the send records are appended to and replayed from (None: in memory only).
    """

    def __init__(self, *, limit: int, path: str | pathlib.Path | None = None) -> None:
        self._limit = limit
        self.chat: collections.OrderedDict[str, ChatEntry] = collections.OrderedDict()
        self.sms: collections.OrderedDict[str, SmsEntry] = collections.OrderedDict()
        self.stats = Stats()
        self._file: IO[str] | None = None
        self._persist = path is not None
        if path is not None:
            self._path = pathlib.Path(path)
            self._replay()
            # Line-buffered: each record reaches the OS before the response does (a kill -9 keeps it).
            self._file = self._path.open("a", encoding="utf-8", buffering=1)

    def _replay(self) -> None:
        if not self._path.exists():
            return
        with self._path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    section, fields = record["section"], record["entry"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill: the earlier record of that entry stands
                if section == "chat":
                    self._put(self.chat, fields["task_id"], ChatEntry(**fields))
                elif section == "sms":
                    self._put(self.sms, fields["ref"], SmsEntry(**fields))

    def _write(self, entry: ChatEntry | SmsEntry) -> None:
        if self._file is not None:
            section = "chat" if isinstance(entry, ChatEntry) else "sms"
            self._file.write(json.dumps({"section": section, "entry": entry.record()}) + "\n")

    def _put(self, table: collections.OrderedDict[str, Any], key: str, entry: ChatEntry | SmsEntry) -> None:
        table[key] = entry
        table.move_to_end(key)
        while len(table) > self._limit:
            table.popitem(last=False)
        if self._persist:
            entry._attach(self._write)

    def chat_entry(self, task_id: str, to: str) -> ChatEntry:
        entry = self.chat.get(task_id)
        if entry is None:
            entry = ChatEntry(task_id=task_id, to=to)
            self._put(self.chat, task_id, entry)
            self._write(entry)
        return entry

    def sms_entry(self, ref: str, api: str, to: str) -> SmsEntry:
        entry = self.sms.get(ref)
        if entry is None:
            entry = SmsEntry(ref=ref, api=api, to=to)
            self._put(self.sms, ref, entry)
            self._write(entry)
        return entry

    def reset(self) -> None:
        self.chat.clear()
        self.sms.clear()
        self.stats = Stats()
        if self._file is not None:
            self._file.truncate(0)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def to_json(self) -> dict[str, Any]:
        return {
            "chat": {k: v.to_json() for k, v in self.chat.items()},
            "sms": {k: v.to_json() for k, v in self.sms.items()},
        }
