"""Outcome events pushed to the application: subscriptions, Standard Webhooks signing, the delivery loop.

The outbox rows are written by a trigger on `message_events` (migration 0008) in the transaction of the
state change they describe; this module only reads them. Delivery is `WebhookLoop`, a supervised loop of its
own that claims due rows with FOR UPDATE SKIP LOCKED and a lease (so replicas share the work and a crashed
attempt is made again), POSTs them signed, and writes the results in batches. docs/webhooks.md has the why.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import aiohttp
import asyncpg
import msgspec
import structlog
import yarl

from fallback_daemon import metrics
from fallback_daemon.core import errors
from fallback_daemon.db import sql, store
from fallback_daemon.engine.loops import backoff, sleep_or_stop

log = structlog.get_logger("fallback_daemon.engine.webhooks")
Q = sql.queries
Row = Mapping[str, Any] | asyncpg.Record
CHANNEL = "fallback_webhooks"  # NOTIFY'd by the outbox trigger when it wrote rows

EVENT_TYPES = (
    "message.sent",
    "message.delivered",
    "message.read",
    "message.failed",
    "message.double_delivered",
    "fallback.fired",
    "fallback.sms_sent",
    "fallback.sms_delivered",
    "fallback.sms_failed",
    "fallback.cancelled",
    "fallback.held",
    "fallback.released",
    "fallback.dropped",
    "fallback.blocked",
)
# Svix's schedule: the first attempt at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (8 attempts,
# ~28 h); FALLBACK_WEBHOOK_RETRY_SCHEDULE (config.py) replaces it.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
SECRET_BYTES = 24
URL_MAX, TEXT_MAX, LIST_MAX = 2048, 255, 100
ERROR_MAX = 300
DELIVERY_STATES = ("pending", "delivered", "failed")
_SPACE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_CHANNEL = re.compile(r"[a-z]{1,32}")


# ---- pure: schedule, secrets, signatures -------------------------------------------------------------------
def retry_delay(attempts_made: int, schedule: Sequence[float]) -> float | None:
    """Seconds to wait after the `attempts_made`-th attempt failed; None when the schedule is exhausted.

    `schedule[0]` is the delay of the first attempt (0: at once), `schedule[k]` the one after attempt k.
    """
    if attempts_made < 1:
        raise ValueError("attempts_made counts from 1")
    return float(schedule[attempts_made]) if attempts_made < len(schedule) else None


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: `whsec_` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret: its base64 part, decoded.

    Raises:
        ValueError: not `whsec_` + base64 of 24 to 64 bytes.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SECRET_PREFIX} followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("must encode 24 to 64 bytes")
    return key


def webhook_id(delivery_id: int) -> str:
    """The `webhook-id` of a delivery: the same on every attempt (receivers deduplicate on it)."""
    return f"msg_{delivery_id}"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` keyed by the decoded secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, tolerance_s: float = 300
) -> bool:
    """What a receiver checks: one of the space-separated v1 signatures matches, the timestamp is recent."""
    msg_id, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not ts.isdigit() or abs(now - int(ts)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(ts), body)
    given = headers.get("webhook-signature", "").split(" ")
    return any(hmac.compare_digest(expected, sig) for sig in given)


# ---- API bodies (msgspec) ----------------------------------------------------------------------------------
# The `extra_json_schema` limits document what check_endpoint enforces (they do not change decoding: its
# own 400s name the field in the API's words).
class NewEndpoint(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/webhooks body. Empty lists mean every event type / channel / CustSpaceId."""

    url: Annotated[
        str,
        msgspec.Meta(
            description="An absolute http:// or https:// URL without #fragment.",
            extra_json_schema={"minLength": 1, "maxLength": URL_MAX},
        ),
    ]
    secret: (
        Annotated[
            str,
            msgspec.Meta(
                description=f"{SECRET_PREFIX} + base64 of 24 to 64 bytes; generated when absent.",
                extra_json_schema={"pattern": f"^{SECRET_PREFIX}"},
            ),
        ]
        | None
    ) = None
    event_types: Annotated[
        list[Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(EVENT_TYPES)})]],
        msgspec.Meta(description=f"At most {LIST_MAX} distinct event types; empty: all of them."),
    ] = msgspec.field(default_factory=list)
    channels: Annotated[
        list[Annotated[str, msgspec.Meta(extra_json_schema={"pattern": f"^{_CHANNEL.pattern}$"})]],
        msgspec.Meta(description=f"At most {LIST_MAX} distinct channels; empty: all of them."),
    ] = msgspec.field(default_factory=list)
    cust_space_ids: Annotated[
        list[Annotated[str, msgspec.Meta(extra_json_schema={"pattern": f"^{_SPACE.pattern}$"})]],
        msgspec.Meta(description=f"At most {LIST_MAX} distinct CustSpaceIds; empty: all of them."),
    ] = msgspec.field(default_factory=list)
    description: Annotated[str, msgspec.Meta(extra_json_schema={"maxLength": TEXT_MAX})] = ""


class EndpointStats(msgspec.Struct, forbid_unknown_fields=True):
    """The endpoint's deliveries now."""

    pending: int  # deliveries not yet delivered (retrying ones included)
    retrying: int  # pending ones that failed at least once
    failed: int  # gave up after the whole schedule (replay sends them again)
    delivered: int
    attempts: int  # attempts made, over every kept delivery
    lag_s: float  # age of the oldest pending delivery (0: none)


class Endpoint(msgspec.Struct, forbid_unknown_fields=True):
    """A subscription (never its secret); `disabled_at` is set after continuous failures (enable resumes)."""

    id: int
    url: str
    event_types: list[str]
    channels: list[str]
    cust_space_ids: list[str]
    description: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None
    disabled_reason: str | None
    failing_since: dt.datetime | None
    last_attempt_at: dt.datetime | None
    last_success_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    stats: EndpointStats | None = None


class CreatedEndpoint(msgspec.Struct, forbid_unknown_fields=True):
    """The POST answer: the only one that shows the secret."""

    endpoint: Endpoint
    secret: str


class EndpointList(msgspec.Struct, forbid_unknown_fields=True):
    webhooks: list[Endpoint]


class Deleted(msgspec.Struct, forbid_unknown_fields=True):
    """The subscription and its pending deliveries are gone."""

    id: int
    deleted: bool = True


class Delivery(msgspec.Struct, forbid_unknown_fields=True):
    """One event for one endpoint; `webhook_id` is the same on every attempt (receivers deduplicate)."""

    id: int
    webhook_id: str
    message_id: str
    event_type: str
    sequence: int
    state: str
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: dt.datetime | None
    payload: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="The event body as it is sent (docs/webhooks.md).",
            extra_json_schema={"additionalProperties": True},
        ),
    ]


class DeliveryPage(msgspec.Struct, forbid_unknown_fields=True):
    """One page, newest first; `next_cursor` is the `cursor` of the next page."""

    deliveries: list[Delivery]
    next_cursor: str | None


class Replay(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/webhooks/{id}/replay body: failed deliveries (and delivered ones with include_delivered) are
    sent again from the start of the schedule, with their webhook-id."""

    include_delivered: bool = False
    since: Annotated[
        str | float | None,
        msgspec.Meta(description="RFC 3339 with offset, or Unix seconds: only deliveries created since."),
    ] = None
    ids: Annotated[list[int] | None, msgspec.Meta(description="Only these deliveries (their ids).")] = None
    limit: Annotated[int, msgspec.Meta(description="At most this many (web/webhooks.py bounds it).")] = 10000


class Replayed(msgspec.Struct, forbid_unknown_fields=True):
    replayed: int


def convert(value: object, kind: type[Any]) -> Any:
    """A decoded JSON value as a msgspec Struct; a wrong type is a ValidationError naming the field."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = "body"
        if m := re.search(r"unknown field `([^`]*)`", text):
            field = m.group(1)
        elif m := re.search(r"at `\$\.?([^`]*)`", text):
            field = re.sub(r"\[\d+\]$", "", m.group(1)) or "body"
        raise errors.ValidationError(field, text.split(" - at ")[0]) from None


def check_endpoint(body: NewEndpoint) -> NewEndpoint:
    """Validate a new subscription; the secret is generated when absent."""
    url = _url(body.url)
    secret = body.secret if body.secret is not None else new_secret()
    try:
        secret_key(secret)
    except ValueError as exc:
        raise errors.ValidationError("secret", str(exc)) from None
    types = _unique("event_types", body.event_types)
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise errors.ValidationError(
            "event_types", f"unknown {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})"
        )
    channels = _unique("channels", body.channels)
    if any(not _CHANNEL.fullmatch(c) for c in channels):
        raise errors.ValidationError("channels", "each must be a channel name such as whatsapp")
    spaces = _unique("cust_space_ids", body.cust_space_ids)
    if any(not _SPACE.fullmatch(s) for s in spaces):
        raise errors.ValidationError("cust_space_ids", "each must be 1..64 letters, digits or _.:-")
    if len(body.description) > TEXT_MAX or "\x00" in body.description:
        raise errors.ValidationError("description", f"must be at most {TEXT_MAX} characters")
    return NewEndpoint(
        url=url,
        secret=secret,
        event_types=types,
        channels=channels,
        cust_space_ids=spaces,
        description=body.description,
    )


def _url(raw: str) -> str:
    if not raw or len(raw) > URL_MAX or any(c.isspace() or ord(c) < 32 for c in raw):
        raise errors.ValidationError("url", f"must be an http(s) URL of at most {URL_MAX} characters")
    try:
        url = yarl.URL(raw)
    except (ValueError, TypeError):
        raise errors.ValidationError("url", "is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host or url.fragment:
        raise errors.ValidationError("url", "must be an absolute http:// or https:// URL without #fragment")
    return raw


def _unique(field: str, values: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(values))
    if len(out) > LIST_MAX:
        raise errors.ValidationError(field, f"at most {LIST_MAX} entries")
    return out


# ---- the database side -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Claimed:
    """A delivery claimed for one attempt; `attempt` is the claim's fencing token."""

    id: int
    endpoint_id: int
    attempt: int
    body: str
    url: str
    secret: str
    age_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Result:
    id: int
    attempt: int
    ok: bool
    status: int | None
    error: str | None
    delay_s: float | None  # None: failed, schedule exhausted (or delivered)


def _endpoint(row: Row, *, with_stats: bool = True) -> Endpoint:
    stats = None
    if with_stats and "pending" in row:
        stats = EndpointStats(
            pending=row["pending"],
            retrying=row["retrying"],
            failed=row["failed"],
            delivered=row["delivered"],
            attempts=int(row["attempts"]),
            lag_s=round(float(row["lag_s"]), 3),
        )
    return Endpoint(
        id=row["id"],
        url=row["url"],
        event_types=list(row["event_types"]),
        channels=list(row["channels"]),
        cust_space_ids=list(row["cust_space_ids"]),
        description=row["description"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
        failing_since=row["failing_since"],
        last_attempt_at=row["last_attempt_at"],
        last_success_at=row["last_success_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        stats=stats,
    )


class WebhookStore:
    """Subscriptions and deliveries over Postgres (queries in sql_files/queries/webhooks.sql)."""

    def __init__(self, db: store.Store) -> None:
        self.db = db

    async def create(self, new: NewEndpoint, *, created_by: str | None = None) -> CreatedEndpoint:
        checked = check_endpoint(new)
        assert checked.secret is not None
        row = await self.db.fetchrow(
            Q["insert_webhook_endpoint"],
            checked.url,
            checked.secret,
            checked.event_types,
            checked.channels,
            checked.cust_space_ids,
            checked.description,
            created_by,
        )
        assert row is not None
        return CreatedEndpoint(endpoint=_endpoint(row, with_stats=False), secret=checked.secret)

    async def list_all(self) -> EndpointList:
        rows = await self.db.fetch(Q["webhook_endpoints_with_stats"], None)
        return EndpointList(webhooks=[_endpoint(r) for r in rows])

    async def get(self, endpoint_id: int) -> Endpoint:
        rows = await self.db.fetch(Q["webhook_endpoints_with_stats"], endpoint_id)
        if not rows:
            raise errors.NotFound(f"no webhook endpoint {endpoint_id}")
        return _endpoint(rows[0])

    async def delete(self, endpoint_id: int) -> Deleted:
        if await self.db.fetchval(Q["delete_webhook_endpoint"], endpoint_id) is None:
            raise errors.NotFound(f"no webhook endpoint {endpoint_id}")
        return Deleted(id=endpoint_id)

    async def enable(self, endpoint_id: int) -> Endpoint:
        if await self.db.fetchval(Q["enable_webhook_endpoint"], endpoint_id) is None:
            raise errors.NotFound(f"no webhook endpoint {endpoint_id}")
        await self.db.execute("SELECT pg_notify($1, '')", CHANNEL)
        return await self.get(endpoint_id)

    async def deliveries(
        self, endpoint_id: int, *, state: str | None, before: int | None, limit: int
    ) -> DeliveryPage:
        await self.get(endpoint_id)  # 404 for an unknown endpoint
        rows = await self.db.fetch(Q["list_webhook_deliveries"], endpoint_id, state, before, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        items = [
            Delivery(
                id=r["id"],
                webhook_id=webhook_id(r["id"]),
                message_id=str(r["message_id"]),
                event_type=r["event_type"],
                sequence=r["sequence"],
                state=r["state"],
                attempts=r["attempts"],
                created_at=r["created_at"],
                next_attempt_at=r["next_attempt_at"] if r["state"] == "pending" else None,
                last_attempt_at=r["last_attempt_at"],
                last_status=r["last_status"],
                last_error=r["last_error"],
                delivered_at=r["delivered_at"],
                payload=r["payload"],
            )
            for r in rows
        ]
        return DeliveryPage(deliveries=items, next_cursor=str(rows[-1]["id"]) if more else None)

    async def replay(self, endpoint_id: int, replay: Replay, since: dt.datetime | None) -> Replayed:
        await self.get(endpoint_id)
        row = await self.db.fetchrow(
            Q["replay_webhook_deliveries"],
            endpoint_id,
            replay.include_delivered,
            since,
            replay.ids,
            replay.limit,
        )
        assert row is not None
        return Replayed(replayed=row["replayed"])

    async def claim(self, limit: int, lease_s: float) -> list[Claimed]:
        rows = await self.db.fetch(Q["claim_webhook_deliveries"], limit, lease_s)
        return [
            Claimed(
                id=r["id"],
                endpoint_id=r["endpoint_id"],
                attempt=r["attempts"],
                body=r["body"],
                url=r["url"],
                secret=r["secret"],
                age_s=r["age_s"],
            )
            for r in rows
        ]

    async def record(self, results: Sequence[Result], disable_after_s: float) -> list[asyncpg.Record]:
        return await self.db.fetch(
            Q["record_webhook_results"],
            [r.id for r in results],
            [r.attempt for r in results],
            [r.ok for r in results],
            [r.status for r in results],
            [r.error for r in results],
            [r.delay_s for r in results],
            disable_after_s,
        )

    async def next_due_in(self) -> float | None:
        value = await self.db.fetchval(Q["next_webhook_due_in"])
        return None if value is None else float(value)

    async def refresh_gauges(self) -> None:
        rows = await self.db.fetch(Q["webhook_gauges"])
        metrics.webhook_pending.clear()
        metrics.webhook_lag.clear()
        for r in rows:
            metrics.webhook_pending.labels(str(r["id"])).set(r["pending"])
            metrics.webhook_lag.labels(str(r["id"])).set(r["lag_s"])

    async def purge(self, window_s: float, batch: int) -> int:
        return len(await self.db.fetch(Q["purge_webhook_deliveries"], window_s, batch))


# ---- the delivery loop -------------------------------------------------------------------------------------
class WebhookLoop:
    """Claims due deliveries up to `concurrency` in flight, POSTs each once, writes results in batches.

    Never on the send path: its own task and HTTP session; it shares only the database pool (short claims and
    batched result writes). A result that cannot be written (database down, process killed) leaves the lease
    to run out: the delivery is made again (at least once; receivers deduplicate on `webhook-id`).
    """

    def __init__(
        self,
        store_: WebhookStore,
        *,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        timeout_s: float = 15.0,
        disable_after_s: float = 5 * 86400.0,
        concurrency: int = 32,
        max_sleep_s: float = 1.0,
        gauges_every_s: float = 5.0,
        purge_window_s: float = 0.0,
        purge_every_s: float = 600.0,
        purge_batch: int = 1000,
    ) -> None:
        self.store = store_
        self.schedule = tuple(schedule)
        self.timeout_s = timeout_s
        self.lease_s = timeout_s * 2 + 5  # an attempt's result is written well within it
        self.disable_after_s = disable_after_s
        self.concurrency = concurrency
        self.max_sleep_s = max_sleep_s
        self.gauges_every_s = gauges_every_s
        self.purge_window_s = purge_window_s
        self.purge_every_s = purge_every_s
        self.purge_batch = purge_batch
        self.wake = asyncio.Event()  # set by LISTEN (the trigger's NOTIFY) and by replays
        self._results: list[Result] = []
        self._done = asyncio.Event()
        self._next_gauges = 0.0
        self._next_purge = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        inflight: set[asyncio.Task[None]] = set()
        failures = 0
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, raise_for_status=False
        ) as http:
            try:
                while not stop.is_set():
                    self._done.clear()
                    try:
                        await self._flush()
                        await self._housekeeping()
                        free = self.concurrency - len(inflight)
                        if inflight and free < max(1, self.concurrency // 4):
                            # Claim in batches, not one row per finished attempt (a round trip each).
                            await self._wait(stop, self._done, within_s=self.max_sleep_s)
                            continue
                        claimed: list[Claimed] = []
                        if free > 0:
                            self.wake.clear()
                            claimed = await self.store.claim(free, self.lease_s)
                        for c in claimed:
                            task = asyncio.create_task(self._attempt(http, c))
                            inflight.add(task)
                            task.add_done_callback(inflight.discard)
                        sleep = self.max_sleep_s
                        if free > 0 and len(claimed) < free and not inflight:
                            due = await self.store.next_due_in()
                            sleep = self.max_sleep_s if due is None else min(max(due, 0.0), self.max_sleep_s)
                        failures = 0
                    except errors.StoreError as exc:
                        failures += 1
                        log.warning("webhook_store_failed", error=str(exc), failures=failures)
                        await sleep_or_stop(stop, backoff(failures, cap=5.0))
                        continue
                    if claimed and len(claimed) == free:
                        await self._wait(stop, self._done, within_s=self.max_sleep_s)  # full: wait for a slot
                    elif sleep > 0:
                        await self._wait(stop, self.wake, self._done, within_s=sleep)
            finally:
                await self._drain(inflight)

    async def _drain(self, inflight: set[asyncio.Task[None]]) -> None:
        """On stop: let attempts in flight finish (bounded by their timeout), then write what is known."""
        if inflight:
            await asyncio.wait(set(inflight), timeout=self.timeout_s)
        for task in set(inflight):
            task.cancel()
        with contextlib.suppress(errors.StoreError):
            await self._flush()

    @staticmethod
    async def _wait(stop: asyncio.Event, *events: asyncio.Event, within_s: float) -> None:
        waiters = [asyncio.ensure_future(e.wait()) for e in (stop, *events)]
        try:
            await asyncio.wait(waiters, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _attempt(self, http: aiohttp.ClientSession, c: Claimed) -> None:
        body = c.body.encode()
        msg_id = webhook_id(c.id)
        ts = int(time.time())
        status: int | None = None
        error: str | None = None
        try:
            headers = {
                "content-type": "application/json",
                "user-agent": "fallback-daemon-webhooks",
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(c.secret, msg_id, ts, body),
            }
            async with http.post(c.url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                if not 200 <= status < 300:
                    snippet = (await resp.content.read(200)).decode("utf-8", "replace")
                    error = f"HTTP {status}: {snippet}".strip()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if isinstance(exc, TimeoutError):
                error = f"no answer within {self.timeout_s:g} s"
        ok = status is not None and 200 <= status < 300
        delay = None if ok else retry_delay(c.attempt, self.schedule)
        self._results.append(
            Result(
                id=c.id,
                attempt=c.attempt,
                ok=ok,
                status=status,
                error=None if ok else (error or "")[:ERROR_MAX],
                delay_s=delay,
            )
        )
        self._done.set()

    async def _flush(self) -> None:
        if not self._results:
            return
        batch = list(self._results)
        rows = await self.store.record(batch, self.disable_after_s)
        del self._results[: len(batch)]
        disabled: set[int] = set()
        for r in rows:
            metrics.webhook_deliveries.labels(r["result"]).inc()
            if r["result"] == "delivered":
                metrics.webhook_delivery_lag.observe(r["age_s"])
            if r["endpoint_disabled"]:
                disabled.add(r["endpoint_id"])
        lost = len(batch) - len(rows)
        if lost:
            metrics.webhook_deliveries.labels("lost_claim").inc(lost)
        for endpoint_id in sorted(disabled):
            log.warning("webhook_endpoint_disabled", endpoint_id=endpoint_id, after_s=self.disable_after_s)

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_gauges:
            self._next_gauges = now + self.gauges_every_s
            await self.store.refresh_gauges()
        if self.purge_window_s > 0 and now >= self._next_purge:
            self._next_purge = now + self.purge_every_s
            await self.store.purge(self.purge_window_s, self.purge_batch)
