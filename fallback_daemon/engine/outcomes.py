"""The write path every state change takes: `policy.decide`, then one batched UPDATE + events INSERT.

`Outcome` is what a loop, an ingester or an operator wants recorded; `Outcomes.apply` decides each against the
locked row's state and writes them in one transaction (docs/architecture.md, "One state machine").
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog

from fallback_daemon.core import model, policy
from fallback_daemon.db import sql, store

log = structlog.get_logger("fallback_daemon.engine.service")
Q = sql.queries
Row = Mapping[str, Any] | asyncpg.Record  # a driver row or a plain mapping (tests, views)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """One event for one message, with what it teaches us about provider ids."""

    message_id: uuid.UUID
    event: policy.Event
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    provider_message_id: str | None = None
    sms_provider_id: str | None = None
    error: str | None = None
    hold_reason: str | None = None


def _state(row: Row) -> policy.State:
    return policy.State(
        chat=model.CHAT_STATES[row["chat_state"]],
        fallback=model.FALLBACK_STATES[row["fallback_state"]],
        rule=model.RULES[row["fallback_rule"]],
        double_delivered=row["double_delivered"],
    )


_KINDS: dict[str, str] = {}  # event class name -> timeline kind (a regex per outcome was measurable)


def _event_name(event: policy.Event) -> str:
    """The event's timeline kind: its class name in snake case (`ChatReceipt` -> `chat_receipt`)."""
    name = type(event).__name__
    kind = _KINDS.get(name)
    if kind is None:
        kind = _KINDS[name] = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    return kind


class Outcomes:
    """The shared base of the service's parts: the database and the one write path."""

    db: store.Store
    reconcile_delay_s: float

    async def apply(self, outcomes: Sequence[Outcome]) -> list[policy.Decision]:
        """Apply outcomes (send results, SMS results, operator actions) in one transaction."""
        if not outcomes:
            return []
        async with self.db.transaction() as conn:
            pids = sorted({o.provider_message_id for o in outcomes if o.provider_message_id})
            ids = sorted({o.message_id for o in outcomes})
            # The provider-id advisory locks (docs/architecture.md) first, then the rows: one statement.
            rows = await conn.fetch(Q["lock_messages"], ids, [], pids)
            states = {r["id"]: _state(r) for r in rows}
            known = {r["id"]: r["provider_message_id"] for r in rows}
            # Receipts that beat the send response and could not be matched by TaskId wait here.
            new_pids = {
                o.provider_message_id: o.message_id
                for o in outcomes
                if o.provider_message_id and known.get(o.message_id) is None
            }
            extra, parked_ids, parked_mids = await _unpark(conn, new_pids, set())
            decisions = await self._write(conn, states, [*outcomes, *extra], (parked_ids, parked_mids))
        return decisions

    async def _write(
        self,
        conn: asyncpg.Connection,
        states: dict[uuid.UUID, policy.State],
        outcomes: Iterable[Outcome],
        applied: tuple[Sequence[int], Sequence[uuid.UUID]] = ((), ()),
    ) -> list[policy.Decision]:
        """Decide each outcome in order against the evolving state, then write it all in one statement.

        Args:
            applied: (receipt ids, their message ids) to mark applied in the same statement.
        """
        final: dict[uuid.UUID, dict[str, Any]] = {}
        ev_ids: list[uuid.UUID] = []
        ev_kinds: list[str] = []
        ev_details: list[dict[str, Any]] = []
        decisions = []
        notify = False
        for o in outcomes:
            state = states.get(o.message_id)
            if state is None:
                continue
            d = policy.decide(state, o.event)
            decisions.append(d)
            acc = final.setdefault(
                o.message_id,
                {"fire": None, "dbl": False, "pid": None, "spid": None, "err": None, "hold": None},
            )
            acc["pid"] = acc["pid"] or o.provider_message_id
            acc["spid"] = acc["spid"] or o.sms_provider_id
            acc["err"] = o.error or acc["err"]
            acc["hold"] = o.hold_reason or acc["hold"]
            if d.fire_reason:
                acc["fire"] = d.fire_reason
                notify = True
            acc["dbl"] = acc["dbl"] or d.double_delivered
            states[o.message_id] = dataclasses.replace(
                state,
                chat=d.chat,
                fallback=d.fallback,
                double_delivered=state.double_delivered or d.double_delivered,
            )
            detail = {**o.detail, "outcome": d.outcome, "chat": d.chat.value, "fallback": d.fallback.value}
            if o.error:
                detail["error"] = o.error
            ev_ids.append(o.message_id)
            ev_kinds.append(_event_name(o.event))
            ev_details.append(detail)
            log.info("decision", message_id=str(o.message_id), kind=ev_kinds[-1], **detail)
        if final or applied[0] or notify:
            # One round trip for the messages, their events, the receipts applied and the NOTIFY: statements
            # per lifecycle are what the daemon's CPU goes to (docs/performance.md, "Session 4").
            mids = list(final)
            await conn.execute(
                Q["write_outcomes"],
                mids,
                [states[m].chat.value for m in mids],
                [states[m].fallback.value for m in mids],
                [final[m]["fire"] for m in mids],
                [final[m]["dbl"] for m in mids],
                [final[m]["pid"] for m in mids],
                [final[m]["err"] for m in mids],
                [final[m]["hold"] for m in mids],
                [final[m]["spid"] for m in mids],
                self.reconcile_delay_s,
                ev_ids,
                ev_kinds,
                ev_details,
                list(applied[0]),
                list(applied[1]),
                store.CHANNEL_DUE if notify else None,
            )
        return decisions


async def _unpark(
    conn: asyncpg.Connection, pid_to_mid: Mapping[str, uuid.UUID], exclude: set[int]
) -> tuple[list[Outcome], list[int], list[uuid.UUID]]:
    """Outcomes for receipts parked under provider ids that just became known (caller holds their locks)."""
    outcomes: list[Outcome] = []
    ids: list[int] = []
    mids: list[uuid.UUID] = []
    if not pid_to_mid:
        return outcomes, ids, mids
    for r in await conn.fetch(Q["lock_parked_receipts"], list(pid_to_mid)):
        if r["id"] in exclude:
            continue
        mid = pid_to_mid[r["provider_id"]]
        ids.append(r["id"])
        mids.append(mid)
        outcomes.append(
            Outcome(
                message_id=mid,
                event=policy.ChatReceipt(_receipt_status(r["status"])),
                detail={"status": r["status"], "receipt_id": r["id"], "parked": True},
            )
        )
    return outcomes, ids, mids


def _receipt_status(key: str) -> model.ReceiptStatus:
    try:
        return model.ReceiptStatus(key)
    except ValueError:
        return model.ReceiptStatus.OTHER
