"""Read models: the message view of GET /v1/messages/{id} (defined once) and state counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg

from fallback_daemon import sql
from fallback_daemon.outcomes import Outcomes, Row

Q = sql.queries


class Views(Outcomes):
    async def get_message(self, message_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.db.fetchrow(Q["get_message"], message_id)
        if row is None:
            return None
        events = await self.db.fetch(Q["get_events"], message_id)
        return message_view(row, events)

    async def counts(self) -> list[asyncpg.Record]:
        return await self.db.fetch(Q["count_by_state"])


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def message_view(row: Row, events: Iterable[Row]) -> dict[str, Any]:
    """The JSON shape of GET /v1/messages/{id}."""
    return {
        "id": str(row["id"]),
        "channel": row["channel"],
        "to": row["to_number"],
        "from": row["from_number"],
        "task_id": row["client_task_id"],
        "chat_state": row["chat_state"],
        "fallback_state": row["fallback_state"],
        "fallback_rule": row["fallback_rule"],
        "fallback_duration_s": row["fallback_duration_s"],
        "provider_message_id": row["provider_message_id"],
        "sms_id": row["sms_provider_id"],
        "due_at": _iso(row["due_at"]),
        "fire_reason": row["fire_reason"],
        "hold_reason": row["hold_reason"],
        "double_delivered": row["double_delivered"],
        "send_attempts": row["send_attempts"],
        "last_error": row["last_error"],
        "created_at": _iso(row["created_at"]),
        "sent_at": _iso(row["sent_at"]),
        "fired_at": _iso(row["fired_at"]),
        "updated_at": _iso(row["updated_at"]),
        "events": [{"at": _iso(e["at"]), "kind": e["kind"], **e["detail"]} for e in events],
    }
