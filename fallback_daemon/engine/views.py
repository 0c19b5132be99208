"""Read models: the message view, defined once, and state counts.

`MessageSummary` is a search result and the head of the full view; `Message` adds the rest of the row and
the timeline. GET /v1/messages/{id}, GET /v1/messages (through `operations.summary`), the CLI and the /ui
page get their message from the two builders below, and the OpenAPI document describes it from the same
structs (`web/schemas.py` takes them into the contract). They live here, in the service layer, rather than
in `web/`, so the service does not import the HTTP package.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Annotated, Any

import asyncpg
import msgspec
from msgspec import UNSET, Meta, UnsetType

from fallback_daemon.core.model import ChatState, FallbackState, Rule
from fallback_daemon.db import sql
from fallback_daemon.engine.outcomes import Outcomes, Row

Q = sql.queries
# An aware time (the database's timestamptz), RFC 3339 on the wire.
Time = Annotated[dt.datetime, Meta(tz=True)]


class MessageLinks(msgspec.Struct, forbid_unknown_fields=True):
    self_: str = msgspec.field(name="self")


class TimelineEvent(msgspec.Struct):
    """One timeline event: when, what, and the event's detail flattened in. The keys below are the common
    ones; others depend on the kind (`status`, `provider`, `sms_id`, `attempt`, `receipt_id`, …)."""

    at: Time
    kind: str
    outcome: str | UnsetType = UNSET
    chat: ChatState | UnsetType = UNSET
    fallback: FallbackState | UnsetType = UNSET
    actor: str | UnsetType = UNSET
    reason: str | UnsetType | None = UNSET
    action: str | UnsetType = UNSET
    error: str | UnsetType | None = UNSET


class MessageSummary(msgspec.Struct, forbid_unknown_fields=True):
    """A message's state: a search result, and the head of the full view."""

    id: uuid.UUID
    channel: str
    to: str
    task_id: str | None
    chat_state: ChatState
    fallback_state: FallbackState
    fallback_rule: Rule
    provider_message_id: str | None
    due_at: Time | None
    fire_reason: str | None
    hold_reason: str | None
    double_delivered: bool
    last_error: str | None
    created_at: Time
    updated_at: Time
    fired_at: Time | None
    links: MessageLinks


class Message(MessageSummary):
    """The message, its state and its full event timeline."""

    from_: str = msgspec.field(name="from")
    fallback_duration_s: int | None
    sms_id: str | None
    send_attempts: int
    sent_at: Time | None
    # The stored events, each {"at", "kind", **detail}: their keys vary by kind, so they stay mappings; the
    # document describes them as TimelineEvent (web/openapi.py adds it to the components).
    events: list[
        Annotated[dict[str, Any], Meta(extra_json_schema={"$ref": "#/components/schemas/TimelineEvent"})]
    ]


class Views(Outcomes):
    async def get_message(self, message_id: uuid.UUID) -> dict[str, Any] | None:
        """The message view (`Message`) as JSON-ready data, or None if there is no such message."""
        row = await self.db.fetchrow(Q["get_message"], message_id)
        if row is None:
            return None
        events = await self.db.fetch(Q["get_events"], message_id)
        view: dict[str, Any] = msgspec.to_builtins(message_view(row, events))
        return view

    async def counts(self) -> list[asyncpg.Record]:
        return await self.db.fetch(Q["count_by_state"])


def _summary_fields(row: Row) -> dict[str, Any]:
    mid = row["id"]
    return {
        "id": mid,
        "channel": row["channel"],
        "to": row["to_number"],
        "task_id": row["client_task_id"],
        "chat_state": ChatState(row["chat_state"]),
        "fallback_state": FallbackState(row["fallback_state"]),
        "fallback_rule": Rule(row["fallback_rule"]),
        "provider_message_id": row["provider_message_id"],
        "due_at": row["due_at"],
        "fire_reason": row["fire_reason"],
        "hold_reason": row["hold_reason"],
        "double_delivered": row["double_delivered"],
        "last_error": row["last_error"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "fired_at": row["fired_at"],
        "links": MessageLinks(self_=f"/v1/messages/{mid}"),
    }


def message_summary(row: Row) -> MessageSummary:
    """One search result: the message's state, linked to its full view."""
    return MessageSummary(**_summary_fields(row))


def message_view(row: Row, events: Iterable[Row]) -> Message:
    """GET /v1/messages/{id}: the summary, the rest of the row, and the timeline."""
    return Message(
        **_summary_fields(row),
        from_=row["from_number"],
        fallback_duration_s=row["fallback_duration_s"],
        sms_id=row["sms_provider_id"],
        send_attempts=row["send_attempts"],
        sent_at=row["sent_at"],
        events=[{"at": e["at"], "kind": e["kind"], **e["detail"]} for e in events],
    )
