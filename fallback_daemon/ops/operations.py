"""Operator use cases: keyset-paginated search and the actions (cancel, fire, re-drive, held, dead letters).

Every action goes through `policy.decide` and `Service._write`, so it is one conditional transition in one
transaction (the rows locked first) with a timeline event that carries who asked and why. A refused action
changes nothing but that: its timeline event is recorded (outcome `…_refused`), the row itself is not
written (its `updated_at`, which retention reads, stays), and it is raised as `errors.Conflict`.

`fire` makes the fallback due now (`armed`, `fire_reason = operator`, NOTIFY): the timer loop's claim is the
one at-most-once `armed → firing` transition and sends the SMS, and the answer says so. From then on the
fallback counts as fired: a `cancel` is refused (409) instead of silently winning the race with that claim.
Input parsing lives in `opinput`, stats in `opstats`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import structlog

from fallback_daemon.core import errors, model, policy, receipts
from fallback_daemon.core.model import ChatState, FallbackState
from fallback_daemon.db import sql, store
from fallback_daemon.engine import service, views
from fallback_daemon.ops import opinput

log = structlog.get_logger("fallback_daemon.ops.operations")
Q = sql.queries


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def summary(row: service.Row) -> dict[str, Any]:
    """One search result (`views.MessageSummary`, the message view's head) as JSON-ready data."""
    view: dict[str, Any] = msgspec.to_builtins(views.message_summary(row))
    return view


# ---- use cases --------------------------------------------------------------------------------------------
# Held fallbacks whose SMS may already have reached the provider: releasing one sends another SMS.
MAY_HAVE_GONE_OUT = {
    "sms_unknown": "its SMS may already have gone out (hold_reason sms_unknown: the provider's answer was "
    "lost and no query could tell): firing it sends another SMS; check the SMS provider's console, then "
    "repeat with force=true",
}
REFUSALS = {
    "operator_cancel_refused": "only an armed or held fallback can be cancelled",
    "operator_fire_refused": "only an armed or held fallback can be fired",
    "operator_drop_refused": "only an armed or held fallback can be dropped",
    "operator_resend_refused": "only a message stuck in sending or unknown can be re-driven",
}
SINGLE_EVENTS: Mapping[str, type[policy.OperatorCancel | policy.OperatorFire]] = {
    "cancel": policy.OperatorCancel,
    "fire": policy.OperatorFire,
}
FIRED_PENDING = "the fallback was fired ({reason}) and the timer loop is sending its SMS"
WHAT_NEXT = {
    "operator_fire": "the SMS is sent by the timer loop now (at most once); a cancel from now on is refused",
    "operator_fire_already_due": "the fallback was already due: the timer loop is sending its SMS",
    "operator_cancelled": "the fallback will never fire",
    "operator_dropped": "the fallback will never fire",
}


def _kind(event: policy.Event) -> str:
    """The timeline kind of an event, as Service._write names it (OperatorCancel → operator_cancel)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


def _state(row: Mapping[str, Any]) -> policy.State:
    return policy.State(
        chat=ChatState(row["chat_state"]),
        fallback=FallbackState(row["fallback_state"]),
        rule=model.Rule(row["fallback_rule"]),
        double_delivered=row["double_delivered"],
    )


def _fired_pending(row: Mapping[str, Any]) -> bool:
    """Armed with a fire_reason: due now, the timer loop's claim is moments away (a send failure, a Failed
    receipt or an operator's fire put it there)."""
    return row["fallback_state"] == FallbackState.ARMED and row["fire_reason"] is not None


def _preview(row: Mapping[str, Any], events: Sequence[policy.Event]) -> policy.Decision:
    """What the policy decides for these events in order (pure), with the operator's own rules on top:
    a cancel of a fired fallback is refused; a fire of one is answered, not written again."""
    state = _state(row)
    decision = policy.Decision(chat=state.chat, fallback=state.fallback, outcome="none")
    for event in events:
        if _fired_pending(row) and isinstance(event, policy.OperatorCancel):
            return policy.Decision(
                chat=state.chat, fallback=state.fallback, outcome="operator_cancel_refused"
            )
        if _fired_pending(row) and isinstance(event, policy.OperatorFire) and len(events) == 1:
            return policy.Decision(
                chat=state.chat, fallback=state.fallback, outcome="operator_fire_already_due"
            )
        decision = policy.decide(state, event)
        state = dataclasses.replace(state, chat=decision.chat, fallback=decision.fallback)
    return decision


def _refused(decision: policy.Decision) -> bool:
    return decision.outcome.endswith("_refused")


class Operations:
    """The operator's use cases over the service (writes) and the store (reads)."""

    def __init__(self, svc: service.Service) -> None:
        self.svc = svc
        self.db: store.Store = svc.db

    async def search(self, s: opinput.Search) -> dict[str, Any]:
        """One page of messages, newest first, with the cursor of the next page (None on the last)."""
        async with self.db.transaction() as conn:
            await conn.execute(Q["force_custom_plan"])
            rows = await conn.fetch(
                Q["search_messages"],
                s.id,
                s.provider_message_id,
                s.task_id,
                s.to,
                list(s.chat_state) if s.chat_state else None,
                list(s.fallback_state) if s.fallback_state else None,
                list(s.channel) if s.channel else None,
                s.since,
                s.until,
                s.after[0] if s.after else None,
                s.after[1] if s.after else None,
                s.limit + 1,
            )
        more = len(rows) > s.limit
        rows = rows[: s.limit]
        cursor = opinput.encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return {"messages": [summary(r) for r in rows], "next_cursor": cursor}

    async def act(
        self,
        message_id: uuid.UUID,
        verb: Literal["cancel", "fire"],
        action: opinput.Action,
        *,
        force: bool = False,
    ) -> dict[str, Any]:
        """Cancel a pending fallback, or fire it now (also releases a held one).

        Raises:
            errors.Conflict: firing a fallback held as `sms_unknown` (its SMS may be out) without force.
        """
        if verb == "fire" and not force:
            hold = await self.db.fetchval(Q["held_reason_of"], message_id)
            if hold in MAY_HAVE_GONE_OUT:
                raise errors.Conflict(MAY_HAVE_GONE_OUT[hold])
        return await self._apply_one(message_id, [(SINGLE_EVENTS[verb](), None)], action, verb)

    async def redrive(
        self, message_id: uuid.UUID, action: opinput.Action, *, force: bool = False
    ) -> dict[str, Any]:
        """Re-drive a message stuck in `sending`/`unknown` (send again) and/or a fallback stuck in `firing`.

        A stuck firing is parked and fired again in the same transaction (FiringInterrupted(park) then
        OperatorFire): the row goes back to `armed`, due now, so the timer loop of any replica re-claims it
        through the ordinary at-most-once claim and sends the SMS again (at-least-once, as the operator
        asked), whatever FALLBACK_RECOVERY_MODE says. A provider call still inside its lease is refused
        unless `force` (it may yet succeed: re-driving it risks a duplicate).
        """
        row = await self.db.fetchrow(Q["message_for_action"], message_id)
        if row is None:
            raise errors.NotFound(f"no message {message_id}")
        events: list[tuple[policy.Event, str | None]] = []
        if row["chat_state"] in (ChatState.SENDING, ChatState.UNKNOWN):
            if row["send_in_flight"] and not force:
                raise errors.Conflict(
                    f"redrive refused: a send is in flight until {row['send_lease_until'].isoformat()}; "
                    "retry after the lease or pass force=true (risks a duplicate chat message)"
                )
            events.append((policy.OperatorResend(), None))
        if row["fallback_state"] == FallbackState.FIRING:
            if row["fire_in_flight"] and not force:
                raise errors.Conflict(
                    f"redrive refused: the SMS is in flight until {row['fire_lease_until'].isoformat()}; "
                    "retry after the lease or pass force=true (risks a duplicate SMS)"
                )
            events += [
                (policy.FiringInterrupted(resend=False), "operator_redrive"),
                (policy.OperatorFire(), None),
            ]
        if not events:
            raise errors.Conflict(
                f"redrive refused: chat is {row['chat_state']} and fallback is {row['fallback_state']}; "
                "re-drive takes a message stuck in sending/unknown or a fallback stuck in firing"
            )
        result = await self._apply_one(message_id, events, action, "redrive")
        if any(isinstance(e, policy.OperatorResend) for e, _ in events):
            await self.db.execute(Q["notify_channel"], store.CHANNEL_SEND)
        return result

    async def _apply_one(
        self,
        message_id: uuid.UUID,
        events: Sequence[tuple[policy.Event, str | None]],
        action: opinput.Action,
        verb: str,
    ) -> dict[str, Any]:
        """Apply (event, hold_reason) pairs in one transaction; the last decision says if it was refused."""
        detail = {**action.detail(), "action": verb}
        outcomes = [
            service.Outcome(message_id=message_id, event=event, hold_reason=hold, detail=detail)
            for event, hold in events
        ]
        async with self.db.transaction() as conn:
            decisions, rows = await self._transition(conn, outcomes)
        if message_id not in decisions:
            raise errors.NotFound(f"no message {message_id}")
        last = decisions[message_id]
        log.info(
            "operator_action",
            message_id=str(message_id),
            action=verb,
            actor=action.actor,
            outcome=last.outcome,
        )
        if _refused(last):
            why = REFUSALS.get(last.outcome, "the state does not allow it")
            if _fired_pending(rows[message_id]):
                why = (
                    f"{FIRED_PENDING.format(reason=rows[message_id]['fire_reason'])}; it cannot be cancelled"
                )
            raise errors.Conflict(
                f"{verb} refused: chat is {last.chat.value} and fallback is {last.fallback.value}; {why}"
            )
        answer = {
            "id": str(message_id),
            "action": verb,
            "outcome": last.outcome,
            "chat_state": last.chat.value,
            "fallback_state": last.fallback.value,
            "links": {"self": f"/v1/messages/{message_id}"},
        }
        if last.outcome in WHAT_NEXT:
            answer["next"] = WHAT_NEXT[last.outcome]
        return answer

    async def _transition(
        self, conn: Any, outcomes: Sequence[service.Outcome]
    ) -> tuple[dict[uuid.UUID, policy.Decision], dict[uuid.UUID, Mapping[str, Any]]]:
        """Lock the rows, decide, write the accepted outcomes (`Service._write`); for a refused message only
        its timeline event is written, so the row (its `updated_at`) stays as it was.

        Returns the last decision per message found, and the locked rows.
        """
        ids = sorted({o.message_id for o in outcomes})
        rows = {r["id"]: r for r in await conn.fetch(Q["lock_messages_for_action"], ids)}
        by_id: dict[uuid.UUID, list[service.Outcome]] = {}
        for o in outcomes:
            if o.message_id in rows:
                by_id.setdefault(o.message_id, []).append(o)
        decisions = {m: _preview(rows[m], [o.event for o in os]) for m, os in by_id.items()}
        answered = [
            m for m, d in decisions.items() if _refused(d) or d.outcome == "operator_fire_already_due"
        ]
        accepted = [o for m, os in by_id.items() if m not in answered for o in os]
        if accepted:
            await self.svc._write(
                conn, {o.message_id: _state(rows[o.message_id]) for o in accepted}, accepted
            )
        if answered:
            await conn.execute(
                Q["insert_events"],
                answered,
                [_kind(by_id[m][-1].event) for m in answered],
                [
                    {
                        **by_id[m][-1].detail,
                        "outcome": decisions[m].outcome,
                        "chat": decisions[m].chat.value,
                        "fallback": decisions[m].fallback.value,
                    }
                    for m in answered
                ],
            )
        return decisions, rows

    async def held(
        self,
        verb: Literal["release", "drop"],
        action: opinput.Action,
        *,
        channel: str | None = None,
        hold_reason: str | None = None,
        ids: Sequence[uuid.UUID] | None = None,
        limit: int = opinput.HELD_LIMIT_DEFAULT,
        force: bool = False,
    ) -> dict[str, Any]:
        """Release (fire now) or drop (never fire) held fallbacks matching the filter, oldest first.

        A release leaves out fallbacks whose SMS may already have gone out (`sms_unknown`) unless `force`:
        they are listed under `needs_force` instead (releasing one sends another SMS).
        """
        rows = await self.db.fetch(
            Q["held_ids"], channel, hold_reason, list(ids) if ids is not None else None, limit
        )
        unsafe = [
            r["id"] for r in rows if verb == "release" and not force and r["hold_reason"] in MAY_HAVE_GONE_OUT
        ]
        found = [r["id"] for r in rows if r["id"] not in set(unsafe)]
        event: policy.Event = policy.OperatorFire() if verb == "release" else policy.OperatorDrop()
        detail = {**action.detail(), "action": f"held_{verb}"}
        async with self.db.transaction() as conn:
            decisions, _ = await self._transition(
                conn, [service.Outcome(message_id=m, event=event, detail=detail) for m in found]
            )
        done = [m for m in found if m in decisions and not _refused(decisions[m])]
        log.info("operator_held_action", action=verb, actor=action.actor, matched=len(found), done=len(done))
        result: dict[str, Any] = {
            "action": verb,
            "matched": len(found),
            "done": len(done),
            "refused": len(found) - len(done),
            "ids": [str(m) for m in done],
            "more": len(rows) == limit,
        }
        if unsafe:
            result["needs_force"] = [str(m) for m in unsafe]
        if ids is not None:
            result["not_held"] = sorted(str(m) for m in set(ids) - set(found))
        return result

    # ---- dead letters -------------------------------------------------------------------------------------
    async def dead_letters(self, *, pending: bool, limit: int, before: int | None) -> dict[str, Any]:
        rows = await self.db.fetch(Q["list_dead_letters"], pending, before, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "dead_letters": [{k: _iso(v) for k, v in dict(r).items()} for r in rows],
            "next_cursor": str(rows[-1]["id"]) if more else None,
        }

    async def replay(self, dead_letter_id: int, action: opinput.Action) -> dict[str, Any]:
        """Re-parse a dead letter's stored body and ingest it; marks it replayed only if it was ingested.

        Raises:
            errors.NotFound: no such dead letter.
            errors.Conflict: it was replayed already.
            errors.ValidationError: its body still does not parse (nothing is changed).
        """
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(Q["lock_dead_letter"], dead_letter_id)
            if row is None:
                raise errors.NotFound(f"no dead letter {dead_letter_id}")
            if row["replayed_at"] is not None:
                raise errors.Conflict(
                    f"dead letter {dead_letter_id} was replayed at {row['replayed_at'].isoformat()}"
                )
            kind = model.ReceiptKind(row["kind"])
            try:
                payload = receipts.decode_mns_body(row["body"])
                if kind is model.ReceiptKind.CHATAPP:
                    result = await self.svc.ingest_chat_in(
                        conn, receipts.parse_chatapp_reports(payload), row["source"]
                    )
                else:
                    result = await self.svc.ingest_sms_in(
                        conn, receipts.parse_sms_reports(payload), row["source"]
                    )
            except errors.ValidationError as exc:
                raise errors.ValidationError("body", f"still does not parse ({exc})") from None
            replayed_at = await conn.fetchval(
                Q["mark_dead_letter_replayed"], dead_letter_id, action.actor, action.reason
            )
        log.info(
            "dead_letter_replayed", dead_letter_id=dead_letter_id, actor=action.actor, applied=result.applied
        )
        return {
            "id": dead_letter_id,
            "replayed_at": replayed_at.isoformat(),
            "received": result.received,
            "duplicates": result.duplicates,
            "applied": result.applied,
            "parked": result.parked,
        }
