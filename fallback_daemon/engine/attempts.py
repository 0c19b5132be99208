"""The loops' database work (`ports.EngineStore`): claims, in-flight marks, retries and recovery.

Each outbound call is a durable attempt: claimed (leased, fenced by its attempt count), then marked in flight
in its own commit just before the request is written (docs/architecture.md: the transitions).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from fallback_daemon.core import model, policy
from fallback_daemon.core.model import FallbackState
from fallback_daemon.db import sql
from fallback_daemon.engine import guards
from fallback_daemon.engine.outcomes import Outcome, Outcomes, Row, _state

Q = sql.queries


class Attempts(Outcomes):
    guard_config: guards.GuardConfig = guards.GuardConfig()  # app.py sets it from the settings

    async def claim_sends(self, limit: int, lease_s: float) -> list[model.ClaimedSend]:
        rows = await self.db.fetch(Q["claim_sends"], limit, lease_s)
        return [model.ClaimedSend(id=r["id"], params=r["params"], attempt=r["send_attempts"]) for r in rows]

    async def mark_send_started(self, message_id: uuid.UUID, attempt: int) -> bool:
        """Record that the request is about to be written; False: the claim was lost, do not send."""
        return await self.db.fetchval(Q["mark_send_started"], message_id, attempt) is not None

    async def mark_sends_started(self, sends: Sequence[model.ClaimedSend]) -> set[uuid.UUID]:
        """mark_send_started for a whole claim (one round trip); returns the ids marked."""
        if not sends:
            return set()
        rows = await self.db.fetch(Q["mark_sends_started"], [s.id for s in sends], [s.attempt for s in sends])
        return {r["id"] for r in rows}

    async def retry_send(
        self, message_id: uuid.UUID, delay_s: float, error: str, attempt: int | None = None
    ) -> None:
        await self.db.execute(Q["retry_send"], message_id, delay_s, error, attempt)

    async def claim_due(self, limit: int, lease_s: float) -> list[model.FallbackSms]:
        """The at-most-once transition armed → firing for due fallbacks, committed before any SMS call, with
        the guards (opt-outs, deny-list, quiet hours, budgets) checked in the same transaction (guards.py)."""
        claimed = await guards.GuardStore(self.db, self.guard_config).claim_due(limit, lease_s)
        return [_fallback_sms(r) for r in claimed]

    async def claim_sms_retries(self, limit: int, lease_s: float) -> list[model.FallbackSms]:
        """Firing fallbacks whose SMS is due again: a scheduled retry, or a claim that died before writing."""
        return [_fallback_sms(r) for r in await self.db.fetch(Q["claim_sms_retries"], limit, lease_s)]

    async def mark_sms_started(self, message_id: uuid.UUID, attempt: int) -> bool:
        return await self.db.fetchval(Q["mark_sms_started"], message_id, attempt) is not None

    async def mark_sms_batch_started(self, sms: Sequence[model.FallbackSms]) -> set[uuid.UUID]:
        """mark_sms_started for a whole timer claim (one round trip); returns the ids marked."""
        if not sms:
            return set()
        rows = await self.db.fetch(Q["mark_sms_batch_started"], [s.id for s in sms], [s.attempt for s in sms])
        return {r["id"] for r in rows}

    async def sms_not_needed(self, message_id: uuid.UUID, attempt: int) -> bool:
        """This attempt's SMS was not written and the chat succeeded meanwhile: cancel it (SmsNotNeeded)."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(Q["lock_unstarted_firing"], message_id, attempt)
            if not rows:
                return False
            decisions = await self._write(
                conn,
                {r["id"]: _state(r) for r in rows},
                [Outcome(message_id=message_id, event=policy.SmsNotNeeded())],
            )
        return bool(decisions) and decisions[0].fallback is FallbackState.CANCELLED

    async def retry_sms(
        self, message_id: uuid.UUID, attempt: int, delay_s: float, error: str, provider: str
    ) -> None:
        await self.db.execute(Q["retry_sms"], message_id, attempt, delay_s, error, provider)

    async def next_due_in(self) -> float | None:
        seconds = await self.db.fetchval(Q["next_due_in"])
        return None if seconds is None else float(seconds)

    async def recover_sends(self, limit: int) -> tuple[int, int]:
        """Expired send leases: never written → sent again; written → `unknown` (then reconciled).

        Returns (requeued, unknown).
        """
        async with self.db.transaction() as conn:
            stale = await conn.fetch(Q["stale_sends"], limit)
            if not stale:
                return 0, 0
            rows = await conn.fetch(Q["lock_messages"], sorted(r["id"] for r in stale), [], None)
            states = {r["id"]: _state(r) for r in rows}
            outcomes = [
                Outcome(
                    message_id=r["id"],
                    event=policy.SendUnknown(),
                    error="send lease expired after the request was written",
                )
                if r["started"]
                else Outcome(
                    message_id=r["id"],
                    event=policy.SendRequeued(),
                    detail={"why": "send lease expired before the request was written"},
                )
                for r in stale
            ]
            await self._write(conn, states, outcomes)
        unknown = sum(1 for r in stale if r["started"])
        return len(stale) - unknown, unknown

    async def claim_stale_firings(self, limit: int, lease_s: float) -> list[model.InFlightSms]:
        """In-flight SMS whose outcome was never recorded (lease expired): re-leased for reconciliation."""
        rows = await self.db.fetch(Q["claim_stale_firings"], limit, lease_s)
        return [
            model.InFlightSms(
                id=r["id"],
                to=r["to_number"],
                channel=r["channel"] or "",
                started_at=r["sms_started_at"],
                attempt=r["sms_attempts"],
            )
            for r in rows
        ]

    async def sms_absent(self, message_id: uuid.UUID, attempt: int, detail: str) -> None:
        await self.db.execute(Q["sms_absent"], message_id, attempt, detail)

    async def interrupt_firing(
        self, message_id: uuid.UUID, *, resend: bool, lease_s: float, detail: str
    ) -> model.FallbackSms | None:
        """Undecidable in-flight SMS: park it (at most once) or re-lease it for one more (at least once)."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(Q["lock_messages"], [message_id], [], None)
            states = {r["id"]: _state(r) for r in rows}
            outcome = Outcome(
                message_id=message_id,
                event=policy.FiringInterrupted(resend=resend),
                hold_reason=None if resend else "sms_unknown",
                detail={"mode": "resend" if resend else "park", "lookup": detail},
            )
            decisions = await self._write(conn, states, [outcome])
            if resend and decisions and decisions[0].fallback is FallbackState.FIRING:
                row = await conn.fetchrow(Q["renew_firing"], message_id, lease_s)
                return None if row is None else _fallback_sms(row)
        return None

    async def claim_reconcile(self, limit: int, lease_s: float) -> list[model.AmbiguousSend]:
        """Ambiguous chat sends whose next provider lookup is due (leased to this replica)."""
        rows = await self.db.fetch(Q["claim_reconcile"], limit, lease_s)
        return [
            model.AmbiguousSend(
                id=r["id"],
                params=r["params"],
                started_at=r["send_started_at"] or r["created_at"],
                lookups=r["reconcile_attempts"],
            )
            for r in rows
        ]

    async def reconcile_context(self, message_id: uuid.UUID, since: Any) -> tuple[list[str], int]:
        """(MessageIds of our other messages to the number since `since`, other ambiguous sends to it)."""
        row = await self.db.fetchrow(Q["reconcile_context"], message_id, since)
        if row is None:
            return [], 0
        return list(row["known"]), int(row["ambiguous_peers"])

    async def reconcile_later(self, message_id: uuid.UUID, delay_s: float | None, detail: str) -> None:
        await self.db.execute(Q["reconcile_later"], message_id, delay_s, detail)


def _template_params(raw: str | None) -> dict[str, str]:
    """The message's TemplateParams (stored as the JSON string sent to CAMS), for template SMS providers."""
    if not raw:
        return {}
    value = json.loads(raw)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _fallback_sms(r: Row) -> model.FallbackSms:
    return model.FallbackSms(
        id=r["id"],
        to=r["to_number"],
        channel=r["channel"] or "",
        text=r["sms_text"] or "",
        template_params=_template_params(r["template_params"]),
        fire_reason=r["fire_reason"],
        attempt=r["sms_attempts"],
        firing_age_s=float(r["firing_age_s"] or 0.0),
        held=r["fallback_state"] == "held",
        hold_reason=r["hold_reason"],
        lateness_s=r["lateness_s"],
    )
