"""What the sandbox really accepted, with send times: the source its query APIs answer from
(ListChatappMessage, QuerySendDetails, QueryMessage), plus the fault knobs those tests need.

Bounded like the journal (oldest dropped first). Records are written when a send is accepted, before its
answer is written, so a send whose answer is lost (`lose_answers`) is still found. With a `path` (the
journal file's name + `.ledger`), each record is also appended there as one JSON line and replayed on start:
what the provider can be asked about survives a sandbox restart, like the journal does.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import pathlib
from typing import IO, Any

from fallback_daemon.sandbox import world

# What ListChatappMessage reports as MessageStatus for each outcome: the furthest status reached [I].
CHAT_STATUS: dict[world.Outcome, str] = {
    outcome: (statuses[-1].lower() if statuses else "rejected")
    for outcome, statuses in world.STATUSES.items()
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatRecord:
    """One accepted SendChatappMessage."""

    message_id: str
    task_id: str
    channel: str
    cust_space_id: str
    sender: str
    to: str
    kind: str  # "template" | "message"
    message_type: str
    template_code: str
    template_name: str
    language: str
    content: str
    conversation_id: str
    outcome: world.Outcome
    sent_at: dt.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmsRecord:
    """One accepted SMS for one number (SendSms with several PhoneNumbers gives one record per number)."""

    api: str  # "SendMessageToGlobe" | "SendSms"
    provider_id: str  # MessageId (Globe) or BizId (SendSms)
    ref: str  # TaskId / OutId as sent ("" if none)
    phone: str
    sender: str  # From (Globe) or SignName (SendSms)
    text: str  # Message (Globe), or the TemplateParam JSON (SendSms)
    template_code: str
    segments: int
    failed: bool
    sent_at: dt.datetime


def _encode(record: ChatRecord | SmsRecord) -> str:
    fields = dataclasses.asdict(record)
    fields["sent_at"] = record.sent_at.isoformat()
    return json.dumps({"section": "chat" if isinstance(record, ChatRecord) else "sms", "record": fields})


def _decode(line: str) -> ChatRecord | SmsRecord | None:
    """One replayed line, or None for a line cut short by a kill (or otherwise unreadable)."""
    try:
        entry = json.loads(line)
        fields: dict[str, Any] = dict(entry["record"])
        fields["sent_at"] = dt.datetime.fromisoformat(fields["sent_at"])
        if entry["section"] == "chat":
            fields["outcome"] = world.Outcome(fields["outcome"])
            return ChatRecord(**fields)
        return SmsRecord(**fields)
    except (ValueError, KeyError, TypeError):
        return None


class Ledger:
    """Accepted sends in order, and the knobs that fake provider trouble around them."""

    def __init__(self, *, limit: int, path: str | pathlib.Path | None = None) -> None:
        self.chat: collections.deque[ChatRecord] = collections.deque(maxlen=limit)
        self.sms: collections.deque[SmsRecord] = collections.deque(maxlen=limit)
        self._file: IO[str] | None = None
        if path is not None:
            path = pathlib.Path(path)
            if path.exists():
                with path.open(encoding="utf-8") as f:
                    for line in f:
                        self._keep(_decode(line))
            # Line-buffered: a record reaches the OS before the send's answer does (a kill -9 keeps it).
            self._file = path.open("a", encoding="utf-8", buffering=1)
        # action name -> how many of its next accepted sends get no answer (the request was processed).
        self.lose_answers: collections.Counter[str] = collections.Counter()
        self.answers_lost = 0
        # how many of the next query calls answer 503 ServiceUnavailable.
        self.fail_queries = 0
        self.queries = 0  # query calls that reached a handler (failed ones included)

    def _keep(self, record: ChatRecord | SmsRecord | None) -> None:
        if isinstance(record, ChatRecord):
            self.chat.append(record)
        elif isinstance(record, SmsRecord):
            self.sms.append(record)

    def add(self, record: ChatRecord | SmsRecord) -> None:
        """Record one accepted send (and append it to the file, if any)."""
        self._keep(record)
        if self._file is not None:
            self._file.write(_encode(record) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def take_lost_answer(self, action: str) -> bool:
        """True (and one fewer left) if this accepted send's answer is to be lost."""
        if self.lose_answers[action] <= 0:
            return False
        self.lose_answers[action] -= 1
        self.answers_lost += 1
        return True

    def take_query_failure(self) -> bool:
        self.queries += 1
        if self.fail_queries <= 0:
            return False
        self.fail_queries -= 1
        return True

    def reset(self) -> None:
        if self._file is not None:
            self._file.truncate(0)  # append mode: later records start at the (new) end
        self.chat.clear()
        self.sms.clear()
        self.lose_answers.clear()
        self.answers_lost = self.fail_queries = self.queries = 0

    def to_json(self) -> dict[str, object]:
        return {
            "chat_records": len(self.chat),
            "sms_records": len(self.sms),
            "lose_answers": dict(self.lose_answers),
            "answers_lost": self.answers_lost,
            "fail_queries": self.fail_queries,
            "queries": self.queries,
        }
