"""Accepting messages: one statement per request (rows, events, NOTIFY), idempotency keys, NOTIFY pacing."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog

from fallback_daemon.core import errors, model, policy
from fallback_daemon.core.model import ChatState
from fallback_daemon.db import sql, store
from fallback_daemon.engine.groupcommit import GroupCommit
from fallback_daemon.engine.outcomes import Outcomes

log = structlog.get_logger("fallback_daemon.engine.service")
Q = sql.queries
NOTIFY_EVERY_S = 0.005  # accepts notify the senders at most this often (plus one trailing NOTIFY)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Accepted:
    """One accepted message: new (`created`), or the one its idempotency key named, as it is now."""

    id: uuid.UUID
    created: bool
    chat_state: str = ChatState.ACCEPTED.value
    fallback_state: str | None = None


def fill_template(template: str, params: Mapping[str, str]) -> str:
    """Replace {name} with TemplateParams[name] (missing names become empty); no format-string evaluation."""
    return _PLACEHOLDER.sub(lambda m: params.get(m.group(1), ""), template)


class Accept(Outcomes):
    sms_template: str | None
    timer_scale: float
    _notified_at: float
    _trailing: asyncio.Task[None] | None
    _posts: GroupCommit[model.SendRequest, Accepted] | None

    async def accept_post(self, req: model.SendRequest) -> Accepted:
        """One POST without an Idempotency-Key: inserted in one statement with the POSTs that arrive while
        the inserts in flight commit (group commit, engine/groupcommit.py); answered after that commit.

        Each insert is a commit and its WAL flush; POSTs arriving together share one. Keyed POSTs keep their
        own statement (their request digest is checked per key).
        """
        if self._posts is None:

            async def apply(parts: list[Sequence[model.SendRequest]]) -> list[Accepted]:
                reqs = [r for part in parts for r in part]
                return await self.accept(reqs, [None] * len(reqs))  # one request per part

            self._posts = GroupCommit(apply, name="accept", writers=2)
        return await self._posts.submit([req])

    def sms_text(self, req: model.SendRequest) -> str | None:
        if req.fallback_content:
            return req.fallback_content
        if self.sms_template:
            return fill_template(self.sms_template, req.template_params)
        return None

    async def accept(
        self,
        requests: Sequence[model.SendRequest],
        keys: Sequence[str | None],
        *,
        request_hash: str | None = None,
    ) -> list[Accepted]:
        """Store messages durably (one transaction); a repeated idempotency key returns the original.

        Args:
            request_hash: digest of the request body (`validation.request_digest`), stored with each keyed
                row. A key already stored with another digest raises errors.IdempotencyMismatch, and nothing
                of this call is stored. A replay answers with the message's current state.
        """
        cols: list[list[Any]] = [[] for _ in range(12)]
        for req, key in zip(requests, keys, strict=True):
            text = self.sms_text(req)
            fb = policy.initial_fallback(has_sms=text is not None)
            timer = policy.timer_seconds(req.rule, req.duration_s)
            row = [
                key,
                req.channel,
                req.to,
                req.sender,
                req.client_task_id,
                dict(req.params),
                req.rule.value,
                req.duration_s,
                text,
                fb.value,
                None if timer is None else timer * self.timer_scale,
                None if key is None else request_hash,
            ]
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        urgent = [req.urgent for req in requests]  # $14: FallBackUrgent (quiet hours do not hold it)
        # One statement (messages, their events and the NOTIFY) is one transaction and one round trip. A key
        # that conflicted belongs to a row that is committed by now (ON CONFLICT waits for its inserter). A
        # keyed batch runs in a transaction instead: if one of its keys turns out to belong to another
        # request, the items inserted beside it are rolled back with the refusal.
        channel = store.CHANNEL_SEND if self._notify_now() else None
        keyed = [k for k in keys if k is not None]
        if len(keyed) > 1:
            async with self.db.transaction() as conn:
                inserted = await conn.fetch(Q["insert_messages"], *cols, channel, urgent)
                existing = await _replayed(conn.fetch, inserted, keyed, request_hash)
        else:
            inserted = await self.db.fetch(Q["insert_messages"], *cols, channel, urgent)
            existing = await _replayed(self.db.fetch, inserted, keyed, request_hash)
        if inserted and channel is None:
            self._notify_soon()
        by_key = {r["idempotency_key"]: r for r in inserted if r["idempotency_key"] is not None}
        fresh = iter(r for r in inserted if r["idempotency_key"] is None)
        result = []
        for key in keys:
            new = next(fresh) if key is None else by_key.get(key)
            if new is not None:
                result.append(Accepted(id=new["id"], created=True, fallback_state=new["fallback_state"]))
            else:
                old = existing[str(key)]  # a key this call did not insert (None always inserts)
                result.append(
                    Accepted(
                        id=old["id"],
                        created=False,
                        chat_state=old["chat_state"],
                        fallback_state=old["fallback_state"],
                    )
                )
        return result

    def _notify_now(self) -> bool:
        """Whether this accept should NOTIFY the senders itself: at most once per NOTIFY_EVERY_S.

        A NOTIFY in every accept serialises their commits: Postgres takes one global lock per notifying commit
        and holds it through the WAL flush, which halved accept throughput (no group commit).
        """
        now = time.monotonic()
        if now - self._notified_at >= NOTIFY_EVERY_S:
            self._notified_at = now
            return True
        return False

    def _notify_soon(self) -> None:
        """Make sure a NOTIFY follows this (committed, not notified) accept within NOTIFY_EVERY_S."""
        if self._trailing is None:
            self._trailing = asyncio.create_task(self._trailing_notify(), name="accept-notify")

    async def _trailing_notify(self) -> None:
        await asyncio.sleep(max(0.0, self._notified_at + NOTIFY_EVERY_S - time.monotonic()))
        # Cleared before sending: an accept committing from now on schedules its own NOTIFY.
        self._trailing = None
        self._notified_at = time.monotonic()
        try:
            await self.db.execute("SELECT pg_notify($1, '')", store.CHANNEL_SEND)
        except errors.StoreError as exc:  # the senders' polling picks the messages up anyway
            log.warning("send_notify_failed", error=str(exc))


async def _replayed(
    fetch: Callable[..., Awaitable[list[asyncpg.Record]]],
    inserted: Sequence[asyncpg.Record],
    keys: Sequence[str],
    request_hash: str | None,
) -> dict[str, asyncpg.Record]:
    """The stored rows of the keys this accept did not insert; refuses a key stored for another request."""
    done = {r["idempotency_key"] for r in inserted}
    missing = [k for k in keys if k not in done]
    if not missing:
        return {}
    rows = {r["idempotency_key"]: r for r in await fetch(Q["messages_by_idempotency_keys"], missing)}
    for key in missing:
        stored = rows[key]["request_hash"]
        if request_hash is not None and stored is not None and stored != request_hash:
            raise errors.IdempotencyMismatch(
                f"Idempotency-Key was first used with a different request body (message {rows[key]['id']});"
                " send a new request with a new key"
            )
    return rows
