"""Outcome events against a real Postgres: the outbox trigger (atomic with the change, every path, per-message
sequence without gaps), the delivery loop against a real HTTP receiver on loopback, and the /v1/webhooks API.

Retry schedules are a few milliseconds long (the loop's own setting), so nothing sleeps through minutes; the
tests wait for conditions in the database or at the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from fallback_daemon import app
from fallback_daemon.core import errors, model, policy
from fallback_daemon.db import store
from fallback_daemon.engine import outcomes, service, webhooks
from tests.integration import opsupport
from tests.integration.test_cli_ops import cli
from tests.integration.test_service import accept_and_send, make_due, req

WAIT_S = 20.0
FAST = (0.0, 0.01, 0.01, 0.01)  # four attempts, milliseconds apart


async def until(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll `check` until truthy (each poll yields to the tasks under test); a hang guard only."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


async def subscribe(db: store.Store, **fields: Any) -> webhooks.CreatedEndpoint:
    body = webhooks.NewEndpoint(url=fields.pop("url", "http://127.0.0.1:9/hook"), **fields)
    return await webhooks.WebhookStore(db).create(body)


async def outbox(db: store.Store, endpoint_id: int | None = None) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM webhook_deliveries WHERE $1::bigint IS NULL OR endpoint_id = $1 ORDER BY id",
        endpoint_id,
    )


def types_of(rows: list[asyncpg.Record], mid: uuid.UUID) -> list[str]:
    return [r["event_type"] for r in rows if r["message_id"] == mid]


class Receiver:
    """A real HTTP receiver on loopback that verifies every signature; `fail` answers per attempt index."""

    def __init__(self, secret: str, fail: Callable[[dict[str, Any]], int] | None = None) -> None:
        self.secret = secret
        self.fail = fail or (lambda _: 200)
        self.requests: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = webhooks.verify(self.secret, request.headers, body, now=time.time())
        if not ok:
            self.bad_signatures += 1
            return web.Response(status=401)
        item = {"id": request.headers["webhook-id"], "body": body, "json": await request.json()}
        status = self.fail(item)
        item["status"] = status
        self.requests.append(item)
        return web.Response(status=status)

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[Receiver]:
        application = web.Application()
        application.router.add_post("/hook", self.handle)
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        try:
            yield self
        finally:
            await runner.cleanup()

    def delivered_ids(self) -> list[str]:
        return [r["id"] for r in self.requests if r["status"] == 200]


@contextlib.asynccontextmanager
async def running(loop: webhooks.WebhookLoop) -> AsyncIterator[webhooks.WebhookLoop]:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield loop
    finally:
        stop.set()
        await task


# ---- the outbox --------------------------------------------------------------------------------------------
class TestOutbox:
    async def test_no_endpoint_no_rows(self, svc: service.Service, db: store.Store) -> None:
        """Without a subscription the trigger writes nothing (its whole cost is one probe)."""
        await accept_and_send(svc, "pid-none")
        assert await outbox(db) == []

    async def test_a_rolled_back_change_writes_no_event_and_takes_no_number(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """The delivery rows are part of the writer's transaction: a rollback leaves no row, no gap."""
        ep = await subscribe(db)
        mid = await accept_and_send(svc, "pid-rb")
        inside: list[str] = []

        async def write_then_fail() -> None:
            async with db.transaction() as conn:
                rows = await conn.fetch("SELECT * FROM messages WHERE id = $1 FOR UPDATE", mid)
                receipt = policy.ChatReceipt(model.ReceiptStatus.DELIVERED)
                await svc._write(
                    conn, {mid: outcomes._state(rows[0])}, [service.Outcome(message_id=mid, event=receipt)]
                )
                inside.extend(r["event_type"] for r in await conn.fetch("SELECT * FROM webhook_deliveries"))
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            await write_then_fail()
        assert inside == ["message.sent", "message.delivered", "fallback.cancelled"]  # visible inside ...
        # ... and gone with it, sequence counter included: the next event gets number 2.
        assert types_of(await outbox(db), mid) == ["message.sent"]
        await svc.ingest_chat([chat_receipt("pid-rb", mid, model.ReceiptStatus.READ)], "http")
        rows = await outbox(db, ep.endpoint.id)
        assert [(r["event_type"], r["sequence"]) for r in rows] == [
            ("message.sent", 1),
            ("message.read", 2),
            ("fallback.cancelled", 3),
        ]

    async def test_payload_names_the_message_the_task_and_the_key(
        self, svc: service.Service, db: store.Store
    ) -> None:
        await subscribe(db)
        [a] = await svc.accept([req(TaskId="client-task-7")], ["idem-key-7"])
        await svc.claim_sends(10, 60)
        await svc.apply([service.Outcome(message_id=a.id, event=policy.SendOk(), provider_message_id="p7")])
        [row] = await outbox(db)
        assert row["payload"]["type"] == "message.sent"
        data = row["payload"]["data"]
        assert data["message_id"] == str(a.id)
        assert data["task_id"] == "client-task-7"
        assert data["idempotency_key"] == "idem-key-7"
        assert data["sequence"] == 1
        assert data["channel"] == "whatsapp"
        assert (data["chat_state"], data["fallback_state"]) == ("sent", "armed")
        assert row["payload"]["timestamp"].endswith("Z")

    async def test_timer_path_fired_sms_and_a_late_read(self, svc: service.Service, db: store.Store) -> None:
        """The transition done in SQL (the timer claim) is covered, then the SMS leg, a double delivery."""
        await subscribe(db)
        mid = await accept_and_send(svc, "pid-timer", FallBackRule="undelivered")
        await make_due(db, mid)
        [claimed] = await svc.claim_due(10, 60)
        assert claimed.id == mid
        await svc.apply([service.Outcome(message_id=mid, event=policy.SmsSent(), sms_provider_id="sms-1")])
        await svc.apply([service.Outcome(message_id=mid, event=policy.SmsReceipt(model.SmsStatus.DELIVERED))])
        await svc.ingest_chat([chat_receipt("pid-timer", mid, model.ReceiptStatus.READ)], "http")
        rows = await outbox(db)
        assert types_of(rows, mid) == [
            "message.sent",
            "fallback.fired",
            "fallback.sms_sent",
            "fallback.sms_delivered",
            "message.read",
            "message.double_delivered",
        ]
        assert [r["sequence"] for r in rows] == [1, 2, 3, 4, 5, 6]
        assert rows[1]["payload"]["data"]["reason"] == "timeout"

    async def test_failures_holds_releases_drops_and_blocks(
        self, svc: service.Service, db: store.Store
    ) -> None:
        await subscribe(db)
        # a send refused for good: message.failed, then fired at once (reason send_failed)
        [a] = await svc.accept([req(to="6591234501")], [None])
        await svc.claim_sends(10, 60)
        await svc.apply([service.Outcome(message_id=a.id, event=policy.SendFailed(), error="bad template")])
        assert len(await svc.claim_due(10, 60)) == 1
        await svc.apply([service.Outcome(message_id=a.id, event=policy.SmsRejected(), error="no route")])
        rows = await outbox(db)
        assert types_of(rows, a.id) == ["message.failed", "fallback.fired", "fallback.sms_failed"]
        assert rows[1]["payload"]["data"]["reason"] == "send_failed"
        # held by the receipt-feed gate, released by an operator, fired again (reason operator)
        held = await accept_and_send(svc, "pid-held", to="6591234502")
        await db.execute("INSERT INTO feed_health (channel, gate_closed) VALUES ('whatsapp', true)")
        await make_due(db, held)
        await svc.claim_due(10, 60)
        await svc.apply(
            [service.Outcome(message_id=held, event=policy.OperatorFire(), detail={"action": "held_release"})]
        )
        await db.execute("UPDATE feed_health SET gate_closed = false")
        await svc.claim_due(10, 60)
        rows = await outbox(db)
        assert types_of(rows, held) == [
            "message.sent",
            "fallback.held",
            "fallback.released",
            "fallback.fired",
        ]
        by_type = {r["event_type"]: r["payload"]["data"] for r in rows if r["message_id"] == held}
        assert by_type["fallback.held"]["reason"] == "feed_down"
        assert by_type["fallback.fired"]["reason"] == "operator"
        # dropped by an operator
        dropped = await accept_and_send(svc, "pid-drop", to="6591234503")
        await svc.apply([service.Outcome(message_id=dropped, event=policy.OperatorDrop())])
        assert types_of(await outbox(db), dropped) == ["message.sent", "fallback.dropped"]
        # blocked by a guard: the event the guarded claim writes (guards.py), kind fallback_blocked
        blocked = await accept_and_send(svc, "pid-block", to="6591234504")
        await db.execute(
            "INSERT INTO message_events (message_id, kind, detail) VALUES ($1, 'fallback_blocked', $2)",
            blocked,
            {"reason": "timeout", "guard": "budget", "action": "hold", "scope": "global"},
        )
        rows = await outbox(db)
        assert types_of(rows, blocked) == ["message.sent", "fallback.blocked"]
        data = rows[-1]["payload"]["data"]
        assert (data["reason"], data["blocked_action"], data["sequence"]) == ("budget", "hold", 2)

    async def test_internal_steps_are_not_events(self, svc: service.Service, db: store.Store) -> None:
        """Retries, stale receipts and duplicates produce no webhook (a receiver sees state changes only)."""
        await subscribe(db)
        mid = await accept_and_send(svc, "pid-stale")
        await svc.ingest_chat([chat_receipt("pid-stale", mid, model.ReceiptStatus.SENT)], "http")  # stale
        await svc.ingest_chat([chat_receipt("pid-stale", mid, model.ReceiptStatus.SENT)], "http")  # duplicate
        [b] = await svc.accept([req(to="6591234511")], [None])
        await svc.claim_sends(10, 60)
        await db.execute(service.Q["retry_send"], b.id, 0.0, "throttled", None)
        assert [r["event_type"] for r in await outbox(db)] == ["message.sent"]

    async def test_filters_and_per_endpoint_sequences(self, svc: service.Service, db: store.Store) -> None:
        """Each endpoint numbers the events it receives 1, 2, 3 …; type, channel and CustSpaceId filter."""
        everything = await subscribe(db)
        fired_only = await subscribe(db, event_types=["fallback.fired", "fallback.sms_sent"])
        other_channel = await subscribe(db, channels=["viber"])
        other_space = await subscribe(db, cust_space_ids=["space-b"])
        same_space = await subscribe(db, cust_space_ids=["space-a"])
        mid = await accept_and_send(svc, "pid-f", CustSpaceId="space-a")
        await make_due(db, mid)
        await svc.claim_due(10, 60)
        await svc.apply([service.Outcome(message_id=mid, event=policy.SmsSent(), sms_provider_id="s")])
        seq = {
            ep.endpoint.id: [(r["event_type"], r["sequence"]) for r in await outbox(db, ep.endpoint.id)]
            for ep in (everything, fired_only, other_channel, other_space, same_space)
        }
        full = [("message.sent", 1), ("fallback.fired", 2), ("fallback.sms_sent", 3)]
        assert seq[everything.endpoint.id] == full
        assert seq[same_space.endpoint.id] == full
        assert seq[fired_only.endpoint.id] == [("fallback.fired", 1), ("fallback.sms_sent", 2)]
        assert seq[other_channel.endpoint.id] == []
        assert seq[other_space.endpoint.id] == []

    async def test_concurrent_writers_never_leave_a_gap(self, svc: service.Service, db: store.Store) -> None:
        """Many transactions writing events for one message at once, some rolled back: 1..n exactly once."""
        ep = await subscribe(db, event_types=["fallback.blocked"])
        mid = await accept_and_send(svc, "pid-conc")

        async def write(i: int) -> None:
            with contextlib.suppress(RuntimeError):
                async with db.transaction() as conn:
                    await conn.execute(
                        "INSERT INTO message_events (message_id, kind, detail)"
                        " VALUES ($1, 'fallback_blocked', $2)",
                        mid,
                        {"guard": "budget", "action": "hold", "i": i},
                    )
                    await asyncio.sleep(0)
                    if i % 4 == 0:
                        raise RuntimeError("roll back")

        await asyncio.gather(*(write(i) for i in range(40)))
        rows = await outbox(db, ep.endpoint.id)
        assert sorted(r["sequence"] for r in rows) == list(range(1, 31))

    async def test_a_disabled_endpoint_gets_nothing_new(self, svc: service.Service, db: store.Store) -> None:
        ep = await subscribe(db)
        await db.execute("UPDATE webhook_endpoints SET disabled_at = now() WHERE id = $1", ep.endpoint.id)
        await accept_and_send(svc, "pid-dis")
        assert await outbox(db) == []


def chat_receipt(pid: str, mid: uuid.UUID, status: model.ReceiptStatus) -> model.ChatReceipt:
    return model.ChatReceipt(
        message_id=pid,
        task_id=str(mid),
        status=status,
        raw_status=status.value,
        timestamp=None,
        error_code=None,
        raw={"MessageId": pid, "Status": status.value, "n": uuid.uuid4().hex},
    )


# ---- the delivery loop -------------------------------------------------------------------------------------
class TestDelivery:
    async def test_signed_delivered_and_retried_with_the_same_id(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """Each delivery is signed (Standard Webhooks), failures are retried on the schedule, the id stays."""
        secret = webhooks.new_secret()
        attempts: dict[str, int] = {}

        def fail_twice(item: dict[str, Any]) -> int:
            attempts[item["id"]] = attempts.get(item["id"], 0) + 1
            return 500 if attempts[item["id"]] <= 2 else 200

        async with Receiver(secret, fail_twice).serve() as rx:
            ep = await subscribe(db, url=rx.url, secret=secret)
            mids = [await accept_and_send(svc, f"pid-d{i}", to=f"65912340{i:02d}") for i in range(5)]
            loop = webhooks.WebhookLoop(webhooks.WebhookStore(db), schedule=FAST, timeout_s=5, concurrency=4)
            async with running(loop):
                await until(lambda: pending(db, ep.endpoint.id, 0), "every delivery done")
        assert rx.bad_signatures == 0
        assert sorted(set(rx.delivered_ids())) == sorted(
            webhooks.webhook_id(r["id"]) for r in await outbox(db)
        )
        assert all(n == 3 for n in attempts.values()) and len(attempts) == len(mids)
        # one webhook-id, one body on every attempt
        bodies: dict[str, set[bytes]] = {}
        for r in rx.requests:
            bodies.setdefault(r["id"], set()).add(r["body"])
        assert all(len(b) == 1 for b in bodies.values())
        rows = await outbox(db)
        assert {(r["state"], r["attempts"], r["last_status"]) for r in rows} == {("delivered", 3, 200)}
        view = await webhooks.WebhookStore(db).get(ep.endpoint.id)
        assert view.stats is not None and (view.stats.delivered, view.stats.pending) == (5, 0)
        assert view.failing_since is None and view.last_status == 200

    async def test_exhausted_then_replayed(self, svc: service.Service, db: store.Store) -> None:
        secret = webhooks.new_secret()
        up = asyncio.Event()
        async with Receiver(secret, lambda _: 200 if up.is_set() else 503).serve() as rx:
            ep = await subscribe(db, url=rx.url, secret=secret)
            await accept_and_send(svc, "pid-ex")
            loop = webhooks.WebhookLoop(webhooks.WebhookStore(db), schedule=FAST, timeout_s=5)
            async with running(loop):
                await until(lambda: state_count(db, "failed", 1), "the delivery to give up")
                [row] = await outbox(db)
                assert (row["attempts"], row["last_status"]) == (len(FAST), 503)
                up.set()
                done = await webhooks.WebhookStore(db).replay(ep.endpoint.id, webhooks.Replay(), None)
                assert done.replayed == 1
                await until(lambda: state_count(db, "delivered", 1), "the replay to be delivered")
        assert len(set(r["id"] for r in rx.requests)) == 1  # the replay kept its webhook-id
        assert len(rx.requests) == len(FAST) + 1

    async def test_an_endpoint_failing_long_enough_is_disabled(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """After the configured time of continuous failures the endpoint is disabled; enable resumes it."""
        secret = webhooks.new_secret()
        up = asyncio.Event()
        async with Receiver(secret, lambda _: 200 if up.is_set() else 500).serve() as rx:
            ep = await subscribe(db, url=rx.url, secret=secret)
            await accept_and_send(svc, "pid-dis2")
            # failing since long ago: the next failure disables it (the database clock decides, no waiting)
            await db.execute(
                "UPDATE webhook_endpoints SET failing_since = now() - interval '1 hour' WHERE id = $1",
                ep.endpoint.id,
            )
            loop = webhooks.WebhookLoop(
                webhooks.WebhookStore(db), schedule=(0, 0.01) * 10, timeout_s=5, disable_after_s=60
            )
            async with running(loop):
                wh = webhooks.WebhookStore(db)
                await until(lambda: disabled(db, ep.endpoint.id), "the endpoint to be disabled")
                assert (await outbox(db))[0]["state"] == "pending"  # kept for when it comes back
                up.set()
                view = await wh.enable(ep.endpoint.id)
                assert view.disabled_at is None
                await until(lambda: state_count(db, "delivered", 1), "delivery after enable")
        assert rx.delivered_ids()

    async def test_two_replicas_share_the_work(self, svc: service.Service, db: store.Store) -> None:
        """Two loops over one database: every delivery is made once (SKIP LOCKED + lease)."""
        secret = webhooks.new_secret()
        async with Receiver(secret).serve() as rx:
            ep = await subscribe(db, url=rx.url, secret=secret, event_types=["message.sent"])
            [await accept_and_send(svc, f"pid-r{i}", to=f"659123{i:04d}") for i in range(60)]
            loops = [
                webhooks.WebhookLoop(webhooks.WebhookStore(db), schedule=FAST, timeout_s=5, concurrency=8)
                for _ in range(2)
            ]
            async with running(loops[0]), running(loops[1]):
                await until(lambda: pending(db, ep.endpoint.id, 0), "every delivery done")
        assert len(rx.requests) == 60 and len(set(rx.delivered_ids())) == 60

    async def test_a_killed_attempt_is_made_again_after_its_lease(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """A claim whose result was never written (the process died) is due again when its lease ends."""
        ep = await subscribe(db)
        await accept_and_send(svc, "pid-lease")
        wh = webhooks.WebhookStore(db)
        [first] = await wh.claim(10, 60)
        assert await wh.claim(10, 60) == []  # leased: no other replica takes it
        await db.execute("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'")
        [again] = await wh.claim(10, 60)
        assert (again.id, again.attempt) == (first.id, 2)
        # the dead attempt's late result is refused (fencing token)
        stale = webhooks.Result(id=first.id, attempt=1, ok=True, status=200, error=None, delay_s=None)
        assert await wh.record([stale], 0) == []
        assert (await outbox(db, ep.endpoint.id))[0]["state"] == "pending"


async def pending(db: store.Store, endpoint_id: int, n: int) -> bool:
    count = await db.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND state = 'pending'", endpoint_id
    )
    total = await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id)
    return bool(total) and int(count) == n


async def state_count(db: store.Store, state: str, n: int) -> bool:
    return int(await db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE state = $1", state)) == n


async def disabled(db: store.Store, endpoint_id: int) -> bool:
    return bool(
        await db.fetchval("SELECT disabled_at IS NOT NULL FROM webhook_endpoints WHERE id = $1", endpoint_id)
    )


# ---- the API -----------------------------------------------------------------------------------------------
@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn, FALLBACK_WEBHOOK_RETRY_SCHEDULE="0,0.01,0.01") as r:
        yield r


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, status: int = 200
) -> Any:
    async with http.request(method, url, json=body) as resp:
        answer = await resp.json()
        assert resp.status == status, answer
        return answer


class TestApi:
    async def test_subscribe_list_deliver_delete(self, daemon: app.Running) -> None:
        """A subscription made over the API receives the events of a message sent through the daemon."""
        async with opsupport.client() as http:
            created = await call(
                http, "POST", f"{daemon.url}/v1/webhooks", {"url": "http://127.0.0.1:9/x"}, 201
            )
            secret = created["secret"]
            assert secret.startswith("whsec_") and len(webhooks.secret_key(secret)) == 24
            async with Receiver(secret).serve() as rx:
                await call(http, "DELETE", f"{daemon.url}/v1/webhooks/{created['endpoint']['id']}")
                created = await call(
                    http,
                    "POST",
                    f"{daemon.url}/v1/webhooks",
                    {"url": rx.url, "secret": secret, "event_types": ["message.sent", "message.read"]},
                    201,
                )
                ep = created["endpoint"]["id"]
                listed = await call(http, "GET", f"{daemon.url}/v1/webhooks")
                assert [w["id"] for w in listed["webhooks"]] == [ep]
                assert "secret" not in str(listed) and secret not in str(listed)
                mid = await opsupport.send(http, daemon.url, "6591234560")  # sandbox: read
                await until(lambda: _got(rx, "message.read"), "message.read at the receiver")
                url = f"{daemon.url}/v1/webhooks/{ep}/deliveries?state=delivered"

                async def both_recorded() -> Any:
                    page = await call(http, "GET", url)
                    return page if len(page["deliveries"]) == 2 else None

                page = await until(both_recorded, "both results recorded")
                assert {d["event_type"] for d in page["deliveries"]} == {"message.sent", "message.read"}
                assert all(d["message_id"] == mid for d in page["deliveries"])
                one = await call(http, "GET", f"{daemon.url}/v1/webhooks/{ep}")
                assert one["stats"]["delivered"] == 2 and one["last_status"] == 200
                await call(http, "DELETE", f"{daemon.url}/v1/webhooks/{ep}")
                await call(http, "GET", f"{daemon.url}/v1/webhooks/{ep}", status=404)
            assert rx.bad_signatures == 0
            seqs = [r["json"]["data"]["sequence"] for r in rx.requests]
            assert sorted(seqs) == [1, 2]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "url"),
            ({"url": "ftp://x"}, "url"),
            ({"url": 5}, "url"),
            ({"url": "http://h/x", "secret": "nope"}, "secret"),
            ({"url": "http://h/x", "secret": "whsec_AAAA"}, "secret"),
            ({"url": "http://h/x", "event_types": ["message.lost"]}, "event_types"),
            ({"url": "http://h/x", "event_types": "message.sent"}, "event_types"),
            ({"url": "http://h/x", "channels": ["Bad Channel"]}, "channels"),
            ({"url": "http://h/x", "cust_space_ids": ["a b"]}, "cust_space_ids"),
            ({"url": "http://h/x", "colour": "red"}, "colour"),
        ],
    )
    async def test_bad_input_is_a_400_naming_the_field(
        self, daemon: app.Running, body: dict[str, Any], field: str
    ) -> None:
        async with opsupport.client() as http:
            answer = await call(http, "POST", f"{daemon.url}/v1/webhooks", body, 400)
            assert answer["error"]["field"] == field
            assert (await call(http, "GET", f"{daemon.url}/v1/webhooks"))["webhooks"] == []

    async def test_auth_and_unknown_ids(self, daemon: app.Running) -> None:
        async with aiohttp.ClientSession() as anon:
            await call(anon, "POST", f"{daemon.url}/v1/webhooks", {"url": "http://h/x"}, 401)
            await call(anon, "GET", f"{daemon.url}/v1/webhooks", status=401)
        async with opsupport.client() as http:
            for method, path in (
                ("GET", "/v1/webhooks/99"),
                ("DELETE", "/v1/webhooks/99"),
                ("POST", "/v1/webhooks/99/enable"),
                ("POST", "/v1/webhooks/99/replay"),
                ("GET", "/v1/webhooks/99/deliveries"),
            ):
                await call(http, method, f"{daemon.url}{path}", status=404)
            answer = await call(http, "GET", f"{daemon.url}/v1/webhooks/abc", status=400)
            assert answer["error"]["field"] == "id"
            ep = (await call(http, "POST", f"{daemon.url}/v1/webhooks", {"url": "http://h/x"}, 201))[
                "endpoint"
            ]
            answer = await call(
                http, "GET", f"{daemon.url}/v1/webhooks/{ep['id']}/deliveries?state=x", status=400
            )
            assert answer["error"]["field"] == "state"
            answer = await call(
                http, "POST", f"{daemon.url}/v1/webhooks/{ep['id']}/replay", {"since": "x"}, 400
            )
            assert answer["error"]["field"] == "since"


async def _got(rx: Receiver, kind: str) -> bool:
    return any(r["json"]["type"] == kind and r["status"] == 200 for r in rx.requests)


def test_errors_module_is_used() -> None:
    """convert() maps msgspec's errors to a ValidationError naming the field."""
    with pytest.raises(errors.ValidationError) as info:
        webhooks.convert({"url": "http://h", "event_types": [1]}, webhooks.NewEndpoint)
    assert info.value.field == "event_types"


class TestCli:
    async def test_add_list_deliveries_replay_delete(self, daemon: app.Running, db: store.Store) -> None:
        """The `webhooks` subcommands in a subprocess against the live daemon, with the exit-code contract."""
        code, out, err = await cli(daemon, "webhooks", "add", "http://127.0.0.1:9/x", "--event-type", "x.y")
        assert code == 2 and "--event-type" in err and out == ""
        code, out, _ = await cli(
            daemon, "webhooks", "add", "http://127.0.0.1:9/x", "--event-type", "message.sent"
        )
        assert code == 0 and "secret: whsec_" in out
        code, out, _ = await cli(daemon, "webhooks", "list", "--json")
        [ep] = json.loads(out)["webhooks"]
        assert ep["event_types"] == ["message.sent"] and "secret" not in ep
        code, out, _ = await cli(daemon, "webhooks", "list")
        assert code == 0 and "PENDING" in out and "http://127.0.0.1:9/x" in out
        # one failed delivery to replay (the endpoint at port 9 refuses every attempt anyway)
        async with opsupport.client() as http:
            await opsupport.send(http, daemon.url, "6591234563")
        await until(lambda: db.fetchval("SELECT count(*) FROM webhook_deliveries"), "a delivery")
        await db.execute("UPDATE webhook_deliveries SET state = 'failed'")
        code, out, _ = await cli(daemon, "webhooks", "deliveries", str(ep["id"]), "--state", "failed")
        assert code == 0 and "message.sent" in out
        code, out, _ = await cli(daemon, "webhooks", "replay", str(ep["id"]))
        assert code == 0 and out.strip() == "replayed 1 delivery"
        code, out, _ = await cli(daemon, "webhooks", "delete", str(ep["id"]))
        assert code == 0
        code, _, err = await cli(daemon, "webhooks", "show", str(ep["id"]))
        assert code == 1 and "no webhook endpoint" in err
