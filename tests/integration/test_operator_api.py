"""The operator API over real HTTP, the sandbox as Alibaba: search, stats, actions, dead letters, auth.

States that need a crash or an outage to happen (a send stuck in `unknown`, a firing stuck past its lease,
held fallbacks) are made by writing the row as the crash or the gate would have left it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
import pytest

from fallback_daemon import app
from fallback_daemon.core import model, validation
from fallback_daemon.db import sql, store
from fallback_daemon.engine import service
from tests.integration import opsupport
from tests.integration.opsupport import send, wait_for


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with opsupport.client() as s:
        yield s


async def get(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return body


async def post(http: aiohttp.ClientSession, url: str, body: Any = None, status: int = 200) -> Any:
    async with http.post(url, json=body) as resp:
        answer = await resp.json()
        assert resp.status == status, answer
        return answer


async def silent(daemon: app.Running, http: aiohttp.ClientSession, to: str = "6591234566") -> str:
    """A message sent but never delivered (To …6): armed, its 600 s timer pending, its one receipt in."""
    mid = await send(http, daemon.url, to)
    await wait_for(http, daemon.url, mid, lambda v: any(e["kind"] == "chat_receipt" for e in v["events"]))
    return mid


def last_event(view: dict[str, Any], kind: str) -> dict[str, Any]:
    return [e for e in view["events"] if e["kind"] == kind][-1]


class TestSearch:
    async def test_each_filter_finds_its_message(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        """Search by id, MessageId, TaskId, phone (with +), states, channel and time range finds the rows."""
        ids = await opsupport.seed_mixed(http, daemon.url)
        tagged = await send(http, daemon.url, "6591234570", TaskId="order-77")
        read = await get(http, f"{daemon.url}/v1/messages/{ids['read']}")
        base = f"{daemon.url}/v1/messages?"

        async def found(query: str) -> list[str]:
            page = await get(http, base + query)
            for m in page["messages"]:
                assert m["links"]["self"] == f"/v1/messages/{m['id']}"
            return [m["id"] for m in page["messages"]]

        assert await found(f"id={ids['failed']}") == [ids["failed"]]
        assert await found(f"provider_message_id={read['provider_message_id']}") == [ids["read"]]
        assert await found("task_id=order-77") == [tagged]
        assert await found("to=%2B6591234565") == [ids["failed"]]
        assert await found("chat_state=send_failed") == [ids["rejected"]]
        assert sorted(await found("fallback_state=sms_delivered,sms_sent")) == sorted(
            [ids["failed"], ids["rejected"]]
        )
        assert len(await found("channel=whatsapp")) == 4
        assert await found("channel=viber") == []
        since = read["created_at"]
        assert ids["read"] in await found(f"since={since.replace('+', '%2B')}")
        assert await found(f"until={since.replace('+', '%2B')}") == []
        assert await found("since=0&until=1") == []

    async def test_keyset_pages_cover_everything_once(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        """limit=3 over 7 messages gives pages of 3, 3, 1, newest first, each id once, then no cursor."""
        async with http.post(
            f"{daemon.url}/v1/messages/batch", json={"messages": [{**opsupport.BODY, "To": "6591230006"}] * 7}
        ) as resp:
            sent = [m["id"] for m in (await resp.json())["messages"]]
        pages, url = [], f"{daemon.url}/v1/messages?to=6591230006&limit=3"
        while url:
            page = await get(http, url)
            pages.append(page["messages"])
            url = f"{daemon.url}{page['links']['next']}" if page["next_cursor"] else ""
            assert ("links" in page) == bool(page["next_cursor"])
        assert [len(p) for p in pages] == [3, 3, 1]
        flat = [m for p in pages for m in p]
        assert sorted(m["id"] for m in flat) == sorted(sent)
        keys = [(m["created_at"], m["id"]) for m in flat]
        assert keys == sorted(keys, reverse=True)

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("id=nope", "id"),
            ("to=%2B65%2F1", "to"),
            ("chat_state=lost", "chat_state"),
            ("fallback_state=armed,gone", "fallback_state"),
            ("channel=Whats%20App", "channel"),
            ("since=yesterday", "since"),
            ("since=2025-01-01T00:00:00", "since"),
            ("since=5&until=4", "until"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("cursor=abc", "cursor"),
            ("state=read", "state"),
            ("task_id=a&task_id=b", "task_id"),
            ("provider_message_id=" + "x" * 256, "provider_message_id"),
        ],
    )
    async def test_bad_parameters_are_400_naming_them(
        self, daemon: app.Running, http: aiohttp.ClientSession, query: str, field: str
    ) -> None:
        """Every invalid, unknown or repeated search parameter is a 400 whose error names it."""
        body = await get(http, f"{daemon.url}/v1/messages?{query}", status=400)
        assert body["error"]["field"] == field


class TestStats:
    async def test_stats_count_states_reasons_and_feeds(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        """Stats count the outcomes by state and fire reason, bucket the timer, and see the HTTP feed."""
        await opsupport.seed_mixed(http, daemon.url)
        await silent(daemon, http)
        s = await get(http, f"{daemon.url}/v1/stats?window=3600")
        assert s["window_s"] == 3600
        assert s["messages"]["total"] == 4
        assert s["messages"]["by_chat_state"] == {"failed": 1, "read": 1, "send_failed": 1, "sent": 1}
        assert s["messages"]["by_fallback_state"]["armed"] == 1
        assert s["fallbacks"]["fired"] == {"total": 2, "by_reason": {"failed_receipt": 1, "send_failed": 1}}
        assert s["fallbacks"]["sms_delivered"] == 2
        assert s["fallbacks"]["double_delivered"]["total"] == 0
        assert list(s["pending_timers"]["buckets"]) == ["overdue", "<1m", "<5m", "<15m", "<1h", "later"]
        assert s["pending_timers"]["buckets"]["<15m"] == 1
        assert s["held"] == {"total": 0, "by_reason": {}, "by_reason_channel": []}
        assert s["pipeline"]["queued_due"] == 0
        chat_feeds = [f for f in s["receipts"]["feeds"] if f["kind"] == "chatapp"]
        assert {(f["source"], f["channel"]) for f in chat_feeds} == {("http", "whatsapp")}
        assert chat_feeds[0]["count"] >= 5  # read: Sent, Delivered, Read; failed: Sent, Failed
        assert chat_feeds[0]["lag_p50_s"] is not None
        assert chat_feeds[0]["lag_p99_s"] < 60
        assert {f["kind"] for f in s["receipts"]["feeds"]} == {"chatapp", "sms"}
        assert s["dead_letters"] == {"pending": 0, "by_source": []}
        assert any(e["error"] for e in s["errors"])  # the rejected send's error

    @pytest.mark.parametrize("query", ["window=0", "window=x", "window=9999999", "windows=60"])
    async def test_bad_window_is_400(
        self, daemon: app.Running, http: aiohttp.ClientSession, query: str
    ) -> None:
        """An invalid or unknown stats parameter is a 400 naming it."""
        body = await get(http, f"{daemon.url}/v1/stats?{query}", status=400)
        assert body["error"]["field"] == query.split("=")[0]


class TestActions:
    async def test_cancel_records_who_and_why_and_refuses_twice(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        """Cancel: armed → cancelled, actor/reason in the timeline; a second cancel is 409, also recorded."""
        mid = await silent(daemon, http)
        done = await post(
            http,
            f"{daemon.url}/v1/messages/{mid}/cancel",
            {"actor": "alice", "reason": "customer replied by phone"},
        )
        assert (done["outcome"], done["fallback_state"]) == ("operator_cancelled", "cancelled")
        refused = await post(http, f"{daemon.url}/v1/messages/{mid}/cancel", {"actor": "bob"}, status=409)
        assert "only an armed or held fallback" in refused["error"]["message"]
        view = await get(http, f"{daemon.url}/v1/messages/{mid}")
        first, second = [e for e in view["events"] if e["kind"] == "operator_cancel"]
        assert (first["actor"], first["reason"], first["outcome"]) == (
            "alice",
            "customer replied by phone",
            "operator_cancelled",
        )
        assert (second["actor"], second["outcome"]) == ("bob", "operator_cancel_refused")

    async def test_fire_now_sends_the_sms(self, daemon: app.Running, http: aiohttp.ClientSession) -> None:
        """Fire makes an armed fallback due now: the SMS goes out; the default actor is "operator"."""
        mid = await silent(daemon, http)
        await post(http, f"{daemon.url}/v1/messages/{mid}/fire")
        view = await wait_for(http, daemon.url, mid, lambda v: v["fallback_state"] == "sms_delivered")
        assert view["fire_reason"] == "operator"
        assert last_event(view, "operator_fire")["actor"] == "operator"
        await post(http, f"{daemon.url}/v1/messages/{mid}/fire", status=409)

    async def test_unknown_message_and_bad_body(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        """Actions on an unknown id are 404; a bad actor or an unknown body field is a 400 naming it."""
        await post(http, f"{daemon.url}/v1/messages/{uuid.uuid4()}/cancel", status=404)
        mid = await silent(daemon, http)
        body = await post(http, f"{daemon.url}/v1/messages/{mid}/cancel", {"actor": ""}, status=400)
        assert body["error"]["field"] == "actor"
        body = await post(http, f"{daemon.url}/v1/messages/{mid}/cancel", {"who": "x"}, status=400)
        assert body["error"]["field"] == "who"

    async def test_redrive_unknown_send_sends_again(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        """A send left `unknown` (ambiguous timeout) is re-driven: sent again; the timeline says who."""
        mid = await silent(daemon, http)
        await daemon.svc.db.execute(
            "UPDATE messages SET chat_state = 'unknown' WHERE id = $1", uuid.UUID(mid)
        )
        done = await post(
            http, f"{daemon.url}/v1/messages/{mid}/redrive", {"actor": "carol", "reason": "CAMS timeout"}
        )
        assert done["outcome"] == "operator_resend"
        view = await wait_for(
            http, daemon.url, mid, lambda v: v["send_attempts"] == 2 and v["chat_state"] == "sent"
        )
        assert last_event(view, "operator_resend")["actor"] == "carol"
        refused = await post(http, f"{daemon.url}/v1/messages/{mid}/redrive", status=409)
        assert "stuck in sending/unknown" in refused["error"]["message"]

    async def test_redrive_refuses_a_live_send_lease_unless_forced(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        """A send inside its lease may still succeed: re-drive is 409 without force, done with force=true."""
        mid = await silent(daemon, http)
        await daemon.svc.db.execute(
            "UPDATE messages SET chat_state = 'sending', send_lease_until = now() + interval '1 hour'"
            " WHERE id = $1",
            uuid.UUID(mid),
        )
        refused = await post(http, f"{daemon.url}/v1/messages/{mid}/redrive", status=409)
        assert "in flight" in refused["error"]["message"]
        done = await post(http, f"{daemon.url}/v1/messages/{mid}/redrive", {"force": True})
        assert done["chat_state"] == "accepted"

    async def test_redrive_stuck_firing_sends_the_sms_again(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        """A fallback stuck in `firing` is parked and fired again in one step, and the SMS is sent."""
        mid = await silent(daemon, http)
        await daemon.svc.db.execute(
            "UPDATE messages SET fallback_state = 'firing', fire_reason = 'timeout', fired_at = now(),"
            " due_at = NULL, fire_lease_until = now() + interval '1 hour' WHERE id = $1",
            uuid.UUID(mid),
        )
        await post(http, f"{daemon.url}/v1/messages/{mid}/redrive", status=409)
        done = await post(
            http,
            f"{daemon.url}/v1/messages/{mid}/redrive",
            {"actor": "dave", "reason": "SMS gateway timed out", "force": True},
        )
        assert (done["outcome"], done["fallback_state"]) == ("operator_fire", "armed")
        view = await wait_for(http, daemon.url, mid, lambda v: v["fallback_state"] == "sms_delivered")
        kinds = [e["kind"] for e in view["events"]]
        assert kinds.index("firing_interrupted") < kinds.index("operator_fire") < len(kinds) - 1
        assert last_event(view, "firing_interrupted")["actor"] == "dave"
        assert "fallback_fired" in kinds[kinds.index("operator_fire") :]

    async def test_held_release_and_drop(self, daemon: app.Running, http: aiohttp.ClientSession) -> None:
        """Held fallbacks are released (fire now) by reason or dropped by id; no filter at all is refused."""
        mids = [await silent(daemon, http, f"659123400{i}6") for i in range(3)]
        await daemon.svc.db.execute(
            "UPDATE messages SET fallback_state = 'held', hold_reason = 'interrupted', due_at = NULL"
            " WHERE id = ANY($1::uuid[])",
            [uuid.UUID(m) for m in mids],
        )
        body = await post(http, f"{daemon.url}/v1/held/release", {}, status=400)
        assert body["error"]["field"] == "all"
        dropped = await post(
            http,
            f"{daemon.url}/v1/held/drop",
            {"ids": [mids[0], str(uuid.uuid4())], "actor": "erin", "reason": "duplicate"},
        )
        assert (dropped["done"], len(dropped["not_held"])) == (1, 1)
        stats = await get(http, f"{daemon.url}/v1/stats")
        assert stats["held"]["by_reason"] == {"interrupted": 2}
        released = await post(
            http,
            f"{daemon.url}/v1/held/release",
            {"hold_reason": "interrupted", "channel": "whatsapp", "actor": "erin"},
        )
        assert (released["matched"], released["done"], released["more"]) == (2, 2, False)
        for mid in mids[1:]:
            view = await wait_for(http, daemon.url, mid, lambda v: v["fallback_state"] == "sms_delivered")
            assert last_event(view, "operator_fire")["action"] == "held_release"
        view = await get(http, f"{daemon.url}/v1/messages/{mids[0]}")
        assert view["fallback_state"] == "suppressed"
        assert last_event(view, "operator_drop")["reason"] == "duplicate"
        stats = await get(http, f"{daemon.url}/v1/stats")
        assert stats["fallbacks"]["suppressed"]["by_reason"] == {"operator_dropped": 1}


class TestDeadLetters:
    async def test_replay_ingests_once_and_refuses_what_still_fails(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        """A parseable dead letter is ingested and marked; a second replay is 409; an unparseable one 400."""
        mid = await silent(daemon, http)
        pid = (await get(http, f"{daemon.url}/v1/messages/{mid}"))["provider_message_id"]
        good = json.dumps({"MessageId": pid, "Status": "Delivered", "Timestamp": 1700000000000})
        await daemon.svc.ingest_queue_batch(
            model.ReceiptKind.CHATAPP,
            "mns",
            "q1",
            [],
            [],
            [("m1", good, "was broken"), ("m2", "{not json", "not JSON")],
        )
        page = await get(http, f"{daemon.url}/v1/dead-letters")
        assert [d["queue_message_id"] for d in page["dead_letters"]] == ["m2", "m1"]
        bad_id, good_id = (d["id"] for d in page["dead_letters"])
        done = await post(
            http, f"{daemon.url}/v1/dead-letters/{good_id}/replay", {"actor": "frank", "reason": "fixed"}
        )
        assert (done["received"], done["applied"]) == (1, 1)
        view = await get(http, f"{daemon.url}/v1/messages/{mid}")
        assert (view["chat_state"], view["fallback_state"]) == ("delivered", "cancelled")
        assert last_event(view, "chat_receipt")["source"] == "mns"
        await post(http, f"{daemon.url}/v1/dead-letters/{good_id}/replay", status=409)
        body = await post(http, f"{daemon.url}/v1/dead-letters/{bad_id}/replay", status=400)
        assert "still does not parse" in body["error"]["message"]
        pending = await get(http, f"{daemon.url}/v1/dead-letters")
        assert [d["id"] for d in pending["dead_letters"]] == [bad_id]
        every = await get(http, f"{daemon.url}/v1/dead-letters?pending=false")
        replayed = next(d for d in every["dead_letters"] if d["id"] == good_id)
        assert (replayed["replayed_by"], replayed["replay_reason"]) == ("frank", "fixed")
        await post(http, f"{daemon.url}/v1/dead-letters/999999/replay", status=404)
        assert (await get(http, f"{daemon.url}/v1/stats"))["dead_letters"]["pending"] == 1


class TestAuth:
    ROUTES: ClassVar[list[tuple[str, str]]] = [
        ("GET", "/v1/messages"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/dead-letters"),
        ("POST", f"/v1/messages/{uuid.uuid4()}/cancel"),
        ("POST", f"/v1/messages/{uuid.uuid4()}/fire"),
        ("POST", f"/v1/messages/{uuid.uuid4()}/redrive"),
        ("POST", "/v1/held/release"),
        ("POST", "/v1/held/drop"),
        ("POST", "/v1/dead-letters/1/replay"),
    ]

    async def test_every_operator_route_needs_the_token(self, daemon: app.Running) -> None:
        """Without a token, or with a wrong one, every operator route answers 401 and changes nothing."""
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            async with aiohttp.ClientSession(headers=headers) as anon:
                for method, path in self.ROUTES:
                    async with anon.request(method, daemon.url + path, json={"all": True}) as resp:
                        assert resp.status == 401, (method, path)

    async def test_ui_cookie_reads_but_cannot_act(self, daemon: app.Running) -> None:
        """The /ui session cookie (from ?token=) authorises GETs only; actions still need the bearer token."""
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            async with browser.get(f"{daemon.url}/ui?token={opsupport.TOKEN}", allow_redirects=False) as resp:
                assert resp.status == 303
                assert resp.headers["Location"] == "/ui"
                assert opsupport.TOKEN not in resp.headers.get("Set-Cookie", "")
            async with browser.get(f"{daemon.url}/v1/stats") as resp:
                assert resp.status == 200
            async with browser.post(f"{daemon.url}/v1/held/release", json={"all": True}) as resp:
                assert resp.status == 401


async def test_search_uses_an_index_for_each_lookup(svc: service.Service, db: store.Store) -> None:
    """With many rows, each search access path reads its index (never a scan of the messages table)."""
    reqs = [
        validation.validate_send({**opsupport.BODY, "To": f"6580{i:07d}", "TaskId": f"t{i}"})
        for i in range(3000)
    ]
    await svc.accept(reqs, [None] * len(reqs))
    await db.execute("UPDATE messages SET provider_message_id = 'P' || client_task_id")
    some = await db.fetchrow("SELECT id, to_number FROM messages LIMIT 1")
    assert some is not None
    cases = {
        "messages_pkey": [some["id"], None, None, None],
        "messages_provider_id": [None, "Pt17", None, None],
        "messages_client_task_id": [None, None, "t17", None],
        "messages_to": [None, None, None, some["to_number"]],
    }
    async with db.transaction() as conn:
        await conn.execute("ANALYZE messages")
        await conn.execute(sql.queries["force_custom_plan"])
        for index, head in cases.items():
            args = [*head, None, None, None, None, None, None, None, 51]
            plan = "\n".join(
                r[0] for r in await conn.fetch("EXPLAIN " + sql.queries["search_messages"], *args)
            )
            assert index in plan, plan


class TestSeries:
    """GET /v1/stats/series: per-minute counts for the page's charts, live for the last minutes and from the
    event_minutes roll-up (migration 0007) for minutes that have closed."""

    async def test_counts_live_then_from_the_roll_up(
        self, daemon: app.Running, http: aiohttp.ClientSession
    ) -> None:
        await opsupport.seed_mixed(http, daemon.url)
        # read (…0): sent, Delivered, Read; failed (…5): sent, Failed → fired, SMS sent and delivered;
        # rejected (…8): refused by CAMS (not sent) → fired, SMS sent and delivered.
        want = {"sent": 2, "delivered": 1, "read": 1, "failed": 1, "fired": 2, "sms_sent": 2,
                "sms_delivered": 2, "sms_failed": 0}  # fmt: skip
        body = await get(http, f"{daemon.url}/v1/stats/series?window=3600")
        assert body["minutes"] == 61 and body["minute_s"] == 60
        assert {s: sum(v) for s, v in body["total"].items()} == want
        assert {s: sum(v) for s, v in body["channels"]["whatsapp"].items()} == want
        assert all(len(v) == 61 for v in body["total"].values())
        assert await daemon.svc.db.fetchval("SELECT count(*) FROM event_minutes") == 0  # nothing closed yet

        # As if the traffic had come ten minutes ago, on a database never rolled up: the next read rolls
        # those minutes up, and they stay counted after the timeline rows are gone.
        await daemon.svc.db.execute("UPDATE message_events SET at = at - interval '10 minutes'")
        await daemon.svc.db.execute("UPDATE event_minutes_progress SET rolled_through = '-infinity'")
        rolled = await get(http, f"{daemon.url}/v1/stats/series?window=3600")
        assert {s: sum(v) for s, v in rolled["total"].items()} == want
        stored = await daemon.svc.db.fetch("SELECT series, sum(n)::int AS n FROM event_minutes GROUP BY 1")
        assert {r["series"]: r["n"] for r in stored} == {k: v for k, v in want.items() if v}
        await daemon.svc.db.execute("DELETE FROM message_events")
        kept = await get(http, f"{daemon.url}/v1/stats/series?window=3600&channel=whatsapp")
        assert kept["total"] == rolled["total"]
        assert sum(kept["total"]["sent"][-13:-8]) == 2  # in the minutes around ten minutes ago
        assert (await get(http, f"{daemon.url}/v1/stats/series?channel=viber"))["channels"] == {}

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("window=59", "window"),
            ("window=21601", "window"),
            ("channel=Whats%20App", "channel"),
            ("x=1", "x"),
        ],
    )
    async def test_bad_parameters_are_400(
        self, daemon: app.Running, http: aiohttp.ClientSession, query: str, field: str
    ) -> None:
        body = await get(http, f"{daemon.url}/v1/stats/series?{query}", status=400)
        assert body["error"]["field"] == field


async def test_sms_without_receipt_gauge_reads_its_partial_index(
    svc: service.Service, db: store.Store
) -> None:
    """The `fallback_sms_without_receipt` gauge (metrics_overdue) reads messages_sms_sent (migration 0007),
    not the table, among thousands of finished rows."""
    reqs = [validation.validate_send({**opsupport.BODY, "To": f"6580{i:07d}"}) for i in range(3000)]
    await svc.accept(reqs, [None] * len(reqs))
    await db.execute(
        "UPDATE messages SET fired_at = now() - interval '1 hour',"
        " fallback_state = CASE WHEN random() < 0.02 THEN 'sms_sent' ELSE 'sms_delivered' END"
    )
    async with db.transaction() as conn:
        await conn.execute("ANALYZE messages")
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN " + sql.queries["metrics_overdue"], 60.0, 900.0)
        )
    assert "messages_sms_sent" in plan, plan
