"""Operator use cases: keyset-paginated search and the actions (cancel, fire, re-drive, held, dead letters).

Every action goes through `policy.decide` via `Service.apply`, so it is one conditional transition in one
transaction with a timeline event that carries who asked and why; a refusal by the policy is recorded in
the timeline too and raised as `errors.Conflict`. Input parsing lives in `opinput`, stats in `opstats`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import structlog

from fallback_daemon import errors, model, opinput, policy, receipts, service, sql, store
from fallback_daemon.model import ChatState, FallbackState

log = structlog.get_logger("fallback_daemon.operations")
Q = sql.queries


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """One search result: the message's state, linked to its full timeline."""
    mid = str(row["id"])
    return {
        "id": mid,
        "channel": row["channel"],
        "to": row["to_number"],
        "task_id": row["client_task_id"],
        "chat_state": row["chat_state"],
        "fallback_state": row["fallback_state"],
        "fallback_rule": row["fallback_rule"],
        "provider_message_id": row["provider_message_id"],
        "due_at": _iso(row["due_at"]),
        "fire_reason": row["fire_reason"],
        "hold_reason": row["hold_reason"],
        "double_delivered": row["double_delivered"],
        "last_error": row["last_error"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "fired_at": _iso(row["fired_at"]),
        "links": {"self": f"/v1/messages/{mid}"},
    }


# ---- use cases --------------------------------------------------------------------------------------------
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
        self, message_id: uuid.UUID, verb: Literal["cancel", "fire"], action: opinput.Action
    ) -> dict[str, Any]:
        """Cancel a pending fallback, or fire it now (also releases a held one)."""
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
        outcomes = [
            service.Outcome(
                message_id=message_id,
                event=event,
                hold_reason=hold,
                detail={**action.detail(), "action": verb},
            )
            for event, hold in events
        ]
        decisions = await self.svc.apply(outcomes)
        if not decisions:
            raise errors.NotFound(f"no message {message_id}")
        last = decisions[-1]
        log.info(
            "operator_action",
            message_id=str(message_id),
            action=verb,
            actor=action.actor,
            outcome=last.outcome,
        )
        if last.outcome.endswith("_refused"):
            raise errors.Conflict(
                f"{verb} refused: chat is {last.chat.value} and fallback is {last.fallback.value}; "
                f"{REFUSALS.get(last.outcome, 'the state does not allow it')}"
            )
        return {
            "id": str(message_id),
            "action": verb,
            "outcome": last.outcome,
            "chat_state": last.chat.value,
            "fallback_state": last.fallback.value,
            "links": {"self": f"/v1/messages/{message_id}"},
        }

    async def held(
        self,
        verb: Literal["release", "drop"],
        action: opinput.Action,
        *,
        channel: str | None = None,
        hold_reason: str | None = None,
        ids: Sequence[uuid.UUID] | None = None,
        limit: int = opinput.HELD_LIMIT_DEFAULT,
    ) -> dict[str, Any]:
        """Release (fire now) or drop (never fire) held fallbacks matching the filter, oldest first."""
        found = [
            r["id"]
            for r in await self.db.fetch(
                Q["held_ids"], channel, hold_reason, list(ids) if ids is not None else None, limit
            )
        ]
        event: policy.Event = policy.OperatorFire() if verb == "release" else policy.OperatorDrop()
        detail = {**action.detail(), "action": f"held_{verb}"}
        decisions = await self.svc.apply(
            [service.Outcome(message_id=m, event=event, detail=detail) for m in found]
        )
        done = [m for m, d in zip(found, decisions, strict=True) if not d.outcome.endswith("_refused")]
        log.info("operator_held_action", action=verb, actor=action.actor, matched=len(found), done=len(done))
        result: dict[str, Any] = {
            "action": verb,
            "matched": len(found),
            "done": len(done),
            "refused": len(found) - len(done),
            "ids": [str(m) for m in done],
            "more": len(found) == limit,
        }
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
