"""Settling and the invariants, checked in SQL against the sandbox's journal (the provider's ground truth).

Per message, with the final chat state the daemon recorded and the FallBackRule, the rules say whether the
fallback must fire (`must_fire`). Then:

- lost: a 202 named the id, and no row has it;
- missed fallback: the fallback must fire, the message is neither `unknown` nor held, and the journal has no
  SMS for it (an exhausted retry window that ended `sms_failed` with nothing sent counts here);
- doubled SMS: the journal has more than one accepted SMS for the message;
- doubled chat: more than one accepted CAMS call for the TaskId (our id), without an operator re-drive;
- fired after success: an SMS went out although a success receipt for the rule was stored before it fired;
- stuck: a non-final state after settling (`accepted`, `sending`, `firing`, armed with an overdue timer);
- unknown / unknown never sent: `chat_state = 'unknown'`, and of those the ones with no CAMS call at all;
- held: `fallback_state = 'held'` (listed with their last events, like every unknown message); held never
  sent: held, and the journal has no SMS for it (the parked SMS provably never reached the provider).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import asyncpg

from chaos import load, world

PENDING = """
SELECT count(*) FILTER (WHERE chat_state IN ('accepted', 'sending')) AS chat,
       count(*) FILTER (WHERE fallback_state = 'firing') AS firing,
       count(*) FILTER (WHERE fallback_state = 'armed' AND due_at IS NOT NULL) AS timers,
       -- an ambiguous send with a provider lookup still to come (to_jsonb: the column is newer than 0001)
       count(*) FILTER (WHERE chat_state = 'unknown' AND to_jsonb(m) ->> 'reconcile_at' IS NOT NULL)
           AS lookups,
       (SELECT count(*) FROM receipts) AS receipts
FROM messages m
"""
ROWS = """
SELECT id::text, chat_state, fallback_state, fallback_rule, fire_reason, hold_reason, fired_at, due_at,
       send_attempts, sms_attempts, last_error
FROM messages
"""
# When each chat status was first *applied* to a message, as a position in its timeline (event ids follow the
# commit order of one message's row-locked writes). Not `receipts.received_at`: that is the ingest
# transaction's start, and a receipt racing the timer claim starts before the firing yet commits after it
# (the claim won the row lock): the daemon could not have known. Only a success applied before the firing
# is a fallback fired after success.
RECEIPTS = """
SELECT message_id::text, lower(detail->>'status') AS status, min(id) AS first_at
FROM message_events WHERE kind = 'chat_receipt' GROUP BY 1, 2
"""
FIRED_EVENTS = """
SELECT message_id::text, min(id) AS fired_event FROM message_events WHERE kind = 'fallback_fired' GROUP BY 1
"""
LAST_EVENTS = """
SELECT message_id::text,
       array_agg(kind || coalesce(' ' || nullif(detail::text, '{}'), '') ORDER BY id) AS kinds
FROM (SELECT *, row_number() OVER (PARTITION BY message_id ORDER BY id DESC) AS n
      FROM message_events WHERE message_id = ANY($1::uuid[])) e
WHERE n <= 6 GROUP BY 1
"""
REDRIVEN = (
    "SELECT DISTINCT message_id::text FROM message_events WHERE kind LIKE '%redrive%' OR kind LIKE '%resend%'"
)
# A success receipt for each rule: the fallback must not fire once one is stored.
SUCCESS = {
    "undelivered": ("delivered", "read"),
    "unread": ("read",),
    "sentFailed": ("sent", "delivered", "read"),
}


def must_fire(chat_state: str, rule: str) -> bool:
    """Whether the rules require the fallback, given the final chat state the daemon recorded."""
    if chat_state in ("send_failed", "failed"):
        return True
    if chat_state == "sent":
        return rule in ("undelivered", "unread")
    if chat_state == "delivered":
        return rule == "unread"
    return False


@dataclasses.dataclass(kw_only=True)
class Report:
    """One scenario's row of the table, and the messages behind its non-zero columns."""

    scenario: str
    messages: int = 0
    faults: dict[str, int] = dataclasses.field(default_factory=dict)
    lost: int = 0
    missed_fallbacks: int = 0
    doubled_sms: int = 0
    doubled_chat: int = 0
    fired_after_success: int = 0
    daemon_deaths: int = 0
    stuck: int = 0
    unknown: int = 0
    unknown_never_sent: int = 0
    held: int = 0
    held_never_sent: int = 0
    sms_sent: int = 0
    extra_fallbacks: int = 0  # fired though the final state did not require it (a success receipt came later)
    settle_s: float = 0.0
    seconds: float = 0.0
    settled: bool = True
    examples: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.missed_fallbacks
            or self.doubled_sms
            or self.doubled_chat
            or self.fired_after_success
            or self.daemon_deaths
            or self.stuck
            or self.unknown_never_sent
        )

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


async def _pending(conn: asyncpg.Connection) -> asyncpg.Record:
    row = await conn.fetchrow(PENDING)
    assert row is not None
    return row


async def settle(w: world.World, timeout_s: float) -> tuple[bool, float]:
    """After the faults: everything up, sends and receipts quiet, then every armed timer made due and fired
    (and every pending provider lookup of an ambiguous send done).

    Returns (settled, seconds taken).
    """
    started = time.monotonic()
    deadline = started + timeout_s
    await w.all_up(timeout_s)
    last_receipts, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:  # sends done, and no new receipt for 2 s (pushes retried after faults)
        try:
            row = await _pending(await w.db())
        except world.DB_ERRORS:
            await asyncio.sleep(0.2)
            continue
        if row["receipts"] != last_receipts:
            last_receipts, quiet_since = row["receipts"], time.monotonic()
        if row["chat"] == 0 and time.monotonic() - quiet_since > 2.0:
            break
        await asyncio.sleep(0.2)
    w.timer_s = 0.0  # the compressor now makes every armed timer due
    while time.monotonic() < deadline:
        try:
            row = await _pending(await w.db())
        except world.DB_ERRORS:
            await asyncio.sleep(0.2)
            continue
        if row["chat"] == 0 and row["firing"] == 0 and row["timers"] == 0 and row["lookups"] == 0:
            return True, time.monotonic() - started
        await asyncio.sleep(0.2)
    return False, time.monotonic() - started


class _Checker:
    """Classifies each message into the Report's columns, remembering which ids went where."""

    def __init__(self, rep: Report, journal: dict[str, Any], receipts: dict[str, dict[str, Any]]) -> None:
        self.rep, self.receipts = rep, receipts
        self.chat, self.sms = journal["chat"], journal["sms"]
        self.flagged: dict[str, list[str]] = {}
        self.redriven: set[str] = set()
        self.fired: dict[str, int] = {}

    def flag(self, column: str, message_id: str) -> None:
        setattr(self.rep, column, getattr(self.rep, column) + 1)
        self.flagged.setdefault(column, []).append(message_id)

    def message(self, message_id: str, r: asyncpg.Record) -> None:
        sends = self.sms.get(message_id, {}).get("sends", 0)
        cams = self.chat.get(message_id, {})
        self.rep.sms_sent += 1 if sends else 0
        if sends > 1:
            self.flag("doubled_sms", message_id)
        if cams.get("accepted", 0) > 1 and message_id not in self.redriven:
            self.flag("doubled_chat", message_id)
        held, unknown = r["fallback_state"] == "held", r["chat_state"] == "unknown"
        if unknown:
            self.flag("unknown", message_id)
            if not cams.get("accepted", 0) and not cams.get("rejected", 0):
                self.flag("unknown_never_sent", message_id)
        if held:
            self.flag("held", message_id)
            if not sends:
                self.flag("held_never_sent", message_id)
        if (
            r["chat_state"] in ("accepted", "sending")
            or r["fallback_state"] == "firing"
            or (r["fallback_state"] == "armed" and r["due_at"] is not None)
        ):
            self.flag("stuck", message_id)
        required = must_fire(r["chat_state"], r["fallback_rule"])
        if required and not sends and not held and not unknown:
            self.flag("missed_fallbacks", message_id)
        if sends and not required:
            statuses = self.receipts.get(message_id, {})
            success = [at for status, at in statuses.items() if status in SUCCESS[r["fallback_rule"]]]
            fired = self.fired.get(message_id)
            if success and fired is not None and min(success) < fired:
                self.flag("fired_after_success", message_id)
            else:
                self.flag("extra_fallbacks", message_id)

    def example(
        self, m: str, rows: dict[str, asyncpg.Record], events: dict[str, list[str]]
    ) -> dict[str, Any]:
        r = rows.get(m)
        fields = ("chat_state", "fallback_state", "fallback_rule", "hold_reason", "last_error")
        return {
            "id": m,
            **{f: (r[f] if r is not None else None) for f in fields},
            "cams_calls": self.chat.get(m, {}).get("accepted", 0),
            "sms_sends": self.sms.get(m, {}).get("sends", 0),
            "last_events": events.get(m, []),
        }


async def check(w: world.World, accepted: load.Accepted, scenario: str) -> Report:
    """The invariants of the module docstring, over every message of the scenario."""
    conn = await w.db()
    journal = await w.sandbox.journal()
    rows = {r["id"]: r for r in await conn.fetch(ROWS)}
    receipts: dict[str, dict[str, Any]] = {}
    for r in await conn.fetch(RECEIPTS):
        receipts.setdefault(r["message_id"], {})[r["status"]] = r["first_at"]
    rep = Report(scenario=scenario, messages=len(rows), faults=dict(w.faults), daemon_deaths=len(w.deaths))
    checker = _Checker(rep, journal, receipts)
    checker.fired = {r["message_id"]: r["fired_event"] for r in await conn.fetch(FIRED_EVENTS)}
    checker.redriven = {r["message_id"] for r in await conn.fetch(REDRIVEN)}
    for message_id in accepted.ids:
        if message_id not in rows:
            checker.flag("lost", message_id)
    for message_id, r in rows.items():
        checker.message(message_id, r)
    listed = sorted({m for ids in checker.flagged.values() for m in ids[:25]})
    events = {r["message_id"]: list(reversed(r["kinds"])) for r in await conn.fetch(LAST_EVENTS, listed)}
    rep.examples = {
        column: [checker.example(m, rows, events) for m in ids[:25]]
        for column, ids in checker.flagged.items()
    }
    rep.details = {
        **w.summary(),
        "post_retries": accepted.retries,
        "batches_unanswered": accepted.unanswered,
        "post_errors": accepted.errors.most_common(8),
    }
    return rep
