"""Accepting messages: one statement per request (rows, events, NOTIFY), idempotency keys, NOTIFY pacing."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import typing
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


class Post(typing.NamedTuple):
    """One POST /v1/messages: the request, its scoped Idempotency-Key and the digest of its body (or None)."""

    req: model.SendRequest
    key: str | None
    request_hash: str | None


class Accept(Outcomes):
    sms_template: str | None
    timer_scale: float
    _notified_at: float
    _trailing: asyncio.Task[None] | None
    _posts: GroupCommit[Post, Accepted] | None

    async def accept_post(
        self, req: model.SendRequest, key: str | None = None, request_hash: str | None = None
    ) -> Accepted:
        """One POST: inserted in one statement with the POSTs that arrive while the inserts in flight commit
        (group commit, engine/groupcommit.py); answered after that commit.

        Each insert is a commit and its WAL flush; POSTs arriving together share one. A keyed POST is
        grouped too (`key`, with the digest of its body): its key is checked on its own, so a key stored for
        another body refuses that POST alone (errors.IdempotencyMismatch) and the others in its group are
        stored and answered as if each had been written alone.
        """
        if self._posts is None:

            async def apply(parts: list[Sequence[Post]]) -> list[Accepted | Exception]:
                return await self._accept_posts([post for part in parts for post in part])  # one per part

            self._posts = GroupCommit(apply, name="accept", writers=2)
        return await self._posts.submit([Post(req, key, request_hash)])

    async def _accept_posts(self, posts: Sequence[Post]) -> list[Accepted | Exception]:
        """The POSTs of one group in one insert statement; one result (or refusal) per POST, in order.

        Nothing raises once the insert committed: GroupCommit retries the callers of a group that raised one
        by one, which would store an unkeyed POST twice. A lookup of keys stored earlier that fails fails
        only the POSTs whose key needed it. A key sent twice in one group is inserted once: the first POST
        with the stored body is the one that created it, the others are replays of it (or refused).
        """
        inserted = await self._insert(
            [p.req for p in posts], [p.key for p in posts], [p.request_hash for p in posts]
        )
        by_key = {r["idempotency_key"]: r for r in inserted if r["idempotency_key"] is not None}
        fresh = iter(r for r in inserted if r["idempotency_key"] is None)
        created: set[str] = set()  # keys whose row this group inserted and already answered as created
        missing = sorted({p.key for p in posts if p.key is not None and p.key not in by_key})
        stored: dict[str, asyncpg.Record] = {}
        lookup_error: Exception | None = None
        if missing:
            try:
                rows = await self.db.fetch(Q["messages_by_idempotency_keys"], missing)
            except errors.StoreError as exc:
                lookup_error = exc
            else:
                stored = {r["idempotency_key"]: r for r in rows}
        results: list[Accepted | Exception] = []
        for post in posts:
            if post.key is None:
                results.append(_created(next(fresh)))
            elif (
                post.key in by_key
                and post.key not in created
                and by_key[post.key]["request_hash"] == post.request_hash
            ):
                created.add(post.key)
                results.append(_created(by_key[post.key]))
            elif (row := by_key.get(post.key) or stored.get(post.key)) is not None:
                try:
                    results.append(_replay(row, post.request_hash))
                except errors.IdempotencyMismatch as exc:
                    results.append(exc)
            else:
                results.append(lookup_error or errors.StoreError(f"Idempotency-Key {post.key!r} vanished"))
        return results

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
        # A key that conflicted belongs to a row that is committed by now (ON CONFLICT waits for its
        # inserter). A keyed batch runs in a transaction: if one of its keys turns out to belong to another
        # request, the items inserted beside it are rolled back with the refusal.
        keyed = [k for k in keys if k is not None]
        if len(keyed) > 1:
            async with self.db.transaction() as conn:
                inserted = await self._insert(requests, keys, [request_hash] * len(keys), conn.fetch)
                existing = await _replayed(conn.fetch, inserted, keyed, request_hash)
        else:
            inserted = await self._insert(requests, keys, [request_hash] * len(keys))
            existing = await _replayed(self.db.fetch, inserted, keyed, request_hash)
        by_key = {r["idempotency_key"]: r for r in inserted if r["idempotency_key"] is not None}
        fresh = iter(r for r in inserted if r["idempotency_key"] is None)
        result = []
        for key in keys:
            new = next(fresh) if key is None else by_key.get(key)
            # A key this call did not insert is in `existing` (None always inserts).
            result.append(_created(new) if new is not None else _replay(existing[str(key)], None))
        return result

    async def _insert(
        self,
        requests: Sequence[model.SendRequest],
        keys: Sequence[str | None],
        hashes: Sequence[str | None],
        fetch: Callable[..., Awaitable[list[asyncpg.Record]]] | None = None,
    ) -> list[asyncpg.Record]:
        """One insert_messages statement (messages, their events, the NOTIFY): the rows it inserted. A row's
        digest is stored only with its key."""
        cols: list[list[Any]] = [[] for _ in range(12)]
        for req, key, digest in zip(requests, keys, hashes, strict=True):
            text = self.sms_text(req)
            fb = policy.initial_fallback(has_sms=text is not None)
            timer = policy.timer_seconds(req.rule, req.duration_s)
            row = [
                key,
                req.channel,
                req.to,
                req.sender,
                req.client_task_id,
                store.encode_jsonb(req.params),  # $6 is text[]: see insert_messages
                req.rule.value,
                req.duration_s,
                text,
                fb.value,
                None if timer is None else timer * self.timer_scale,
                None if key is None else digest,
            ]
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        urgent = [req.urgent for req in requests]  # $14: FallBackUrgent (quiet hours do not hold it)
        channel = store.CHANNEL_SEND if self._notify_now() else None
        inserted = await (fetch or self.db.fetch)(Q["insert_messages"], *cols, channel, urgent)
        if inserted and channel is None:
            self._notify_soon()
        return inserted

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
        _replay(rows[key], request_hash)  # raises for a key stored with another body
    return rows


def _created(row: asyncpg.Record) -> Accepted:
    return Accepted(id=row["id"], created=True, fallback_state=row["fallback_state"])


def _replay(row: asyncpg.Record, request_hash: str | None) -> Accepted:
    """The message a key already names, as it is now; refused if the key was stored with another body."""
    stored = row["request_hash"]
    if request_hash is not None and stored is not None and stored != request_hash:
        raise errors.IdempotencyMismatch(
            f"Idempotency-Key was first used with a different request body (message {row['id']});"
            " send a new request with a new key"
        )
    return Accepted(
        id=row["id"], created=False, chat_state=row["chat_state"], fallback_state=row["fallback_state"]
    )
