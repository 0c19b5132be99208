"""The service against a real Postgres: acceptance, receipts, timers, at-most-once firing, recovery.

Time is driven through the database (due times are moved), never by sleeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from fallback_daemon.core import errors, model, policy, receipts, validation
from fallback_daemon.db import store
from fallback_daemon.engine import service


def req(to: str = "6591234567", **extra: object) -> model.SendRequest:
    body = {
        "ChannelType": "whatsapp",
        "Type": "message",
        "MessageType": "text",
        "From": "6580000000",
        "To": to,
        "Content": {"text": "hello"},
        "FallBackContent": "hello by sms",
        "FallBackDuration": 120,
    }
    body.update(extra)
    return validation.validate_send({k: v for k, v in body.items() if v is not None})


def chat_receipt(message_id: str, status: str, task_id: str | None) -> model.ChatReceipt:
    raw = {"MessageId": message_id, "Status": status, "Timestamp": 1691043638000, "From": "1", "To": "2"}
    if task_id:
        raw["TaskId"] = task_id
    [r] = receipts.parse_chatapp_reports([raw])
    return r


async def accept_and_send(svc: service.Service, pid: str, **extra: object) -> uuid.UUID:
    [a] = await svc.accept([req(**extra)], [None])
    rows = await svc.claim_sends(10, 60)
    assert [r.id for r in rows] == [a.id]
    await svc.apply([service.Outcome(message_id=a.id, event=policy.SendOk(), provider_message_id=pid)])
    return a.id


async def state(svc: service.Service, mid: uuid.UUID) -> tuple[str, str]:
    view = await svc.get_message(mid)
    assert view is not None
    return view["chat_state"], view["fallback_state"]


async def make_due(db: store.Store, mid: uuid.UUID | None = None) -> None:
    """Drive time through the database: the message's timer is now due."""
    if mid is None:
        await db.execute("UPDATE messages SET due_at = now() - interval '1 second' WHERE due_at IS NOT NULL")
    else:
        await db.execute("UPDATE messages SET due_at = now() - interval '1 second' WHERE id = $1", mid)


class TestAccept:
    async def test_accept_arms_a_timer_after_acceptance(self, svc: service.Service, db: store.Store) -> None:
        """An undelivered message with FallBackDuration is armed with due_at = accepted + duration."""
        [a] = await svc.accept([req()], [None])
        row = await db.fetchrow("SELECT created_at, due_at, fallback_state FROM messages WHERE id=$1", a.id)
        assert row["fallback_state"] == "armed"
        assert row["due_at"] - row["created_at"] == dt.timedelta(seconds=120)

    async def test_idempotency_key_returns_the_original(self, svc: service.Service, db: store.Store) -> None:
        """A repeated Idempotency-Key returns the first message and stores nothing new."""
        [a] = await svc.accept([req()], ["k1"])
        [b] = await svc.accept([req(to="6599999999")], ["k1"])
        assert (a.created, b.created, b.id) == (True, False, a.id)
        assert await db.fetchval("SELECT count(*) FROM messages") == 1

    async def test_sentfailed_and_no_content_have_no_timer(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """sentFailed never gets a due time; a message without SMS content has no fallback at all."""
        [a, b] = await svc.accept([req(FallBackRule="sentFailed"), req(FallBackContent=None)], [None, None])
        rows = {r["id"]: r for r in await db.fetch("SELECT id, due_at, fallback_state FROM messages")}
        assert (rows[a.id]["fallback_state"], rows[a.id]["due_at"]) == ("armed", None)
        assert rows[b.id]["fallback_state"] == "none"

    async def test_concurrent_posts_share_one_insert_and_each_gets_its_own_message(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """POSTs arriving together are inserted together (group commit); each caller gets its own row."""
        numbers = [f"65912345{i:02d}" for i in range(12)]
        accepted = await asyncio.gather(*(svc.accept_post(req(to=n)) for n in numbers))
        rows = {r["id"]: r["to_number"] for r in await db.fetch("SELECT id, to_number FROM messages")}
        assert [rows[a.id] for a in accepted] == numbers
        assert all(a.created for a in accepted)
        # All twelve are queued before the first writer runs: one insert (created_at is its transaction's
        # start time), so the mapping of returned rows to callers is what the first assertion checked.
        assert await db.fetchval("SELECT count(DISTINCT created_at) FROM messages") == 1

    async def test_keyed_posts_in_one_group_are_answered_each_as_if_alone(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """Keyed POSTs arriving together share one insert, and each key is judged for its own POST: a key
        stored earlier with another body refuses only that POST, the same key twice in the group is one
        message (created once, replayed once), and the same key with another body in the group is refused."""
        [old] = await svc.accept([req(to="6590000001")], ["single:old"], request_hash="h-old")
        posts = [
            svc.accept_post(req(to="6591111111"), "single:a", "h-a"),
            svc.accept_post(req(to="6592222222"), None, None),
            svc.accept_post(req(to="6593333333"), "single:old", "h-other"),  # stored with h-old
            svc.accept_post(req(to="6594444444"), "single:b", "h-b"),
            svc.accept_post(req(to="6594444444"), "single:b", "h-b"),  # a retry racing its original
            svc.accept_post(req(to="6595555555"), "single:b", "h-b2"),  # the key reused for another body
            svc.accept_post(req(to="6590000001"), "single:old", "h-old"),  # a plain replay
        ]
        a, plain, refused, b1, b2, b_other, replay = await asyncio.gather(*posts, return_exceptions=True)
        assert isinstance(refused, errors.IdempotencyMismatch)
        assert isinstance(b_other, errors.IdempotencyMismatch)
        assert isinstance(a, service.Accepted) and isinstance(plain, service.Accepted)
        assert isinstance(b1, service.Accepted) and isinstance(b2, service.Accepted)
        assert isinstance(replay, service.Accepted)
        assert (a.created, plain.created, b1.created, b2.created, replay.created) == (
            True,
            True,
            True,
            False,
            False,
        )
        assert (b2.id, replay.id) == (b1.id, old.id)
        rows = {r["id"]: r["to_number"] for r in await db.fetch("SELECT id, to_number FROM messages")}
        assert rows == {old.id: "6590000001", a.id: "6591111111", plain.id: "6592222222", b1.id: "6594444444"}
        # All seven are queued before the first writer runs: one insert (created_at: its transaction's start).
        new = "SELECT count(DISTINCT created_at) FROM messages WHERE id <> $1"
        assert await db.fetchval(new, old.id) == 1


class TestReceipts:
    async def test_delivered_cancels_and_duplicates_change_nothing(self, svc: service.Service) -> None:
        """Delivered cancels an undelivered fallback; the same receipt again is a stored duplicate."""
        mid = await accept_and_send(svc, "P1")
        r1 = await svc.ingest_chat([chat_receipt("P1", "Delivered", str(mid))], "http")
        r2 = await svc.ingest_chat([chat_receipt("P1", "Delivered", str(mid))], "mns")
        assert (r1.applied, r2.duplicates, r2.applied) == (1, 1, 0)
        assert await state(svc, mid) == ("delivered", "cancelled")

    async def test_receipt_before_send_response_matches_by_task_id(self, svc: service.Service) -> None:
        """A receipt carrying our TaskId applies even while the send call is in flight."""
        [a] = await svc.accept([req()], [None])
        await svc.claim_sends(10, 60)
        await svc.ingest_chat([chat_receipt("P2", "Delivered", str(a.id))], "http")
        assert await state(svc, a.id) == ("delivered", "cancelled")
        await svc.apply([service.Outcome(message_id=a.id, event=policy.SendOk(), provider_message_id="P2")])
        view = await svc.get_message(a.id)
        assert (view["chat_state"], view["provider_message_id"]) == ("delivered", "P2")

    async def test_unmatched_receipt_is_parked_then_applied(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """A receipt without TaskId for an unknown MessageId waits, then applies when the send is recorded."""
        [a] = await svc.accept([req()], [None])
        await svc.claim_sends(10, 60)
        res = await svc.ingest_chat([chat_receipt("P3", "Read", None)], "http")
        assert res.parked == 1
        assert await state(svc, a.id) == ("sending", "armed")
        await svc.apply([service.Outcome(message_id=a.id, event=policy.SendOk(), provider_message_id="P3")])
        assert await state(svc, a.id) == ("read", "cancelled")
        assert await db.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NULL") == 0

    async def test_parked_receipt_applied_when_a_taskid_receipt_reveals_the_id(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """A parked receipt (no TaskId) is applied by the transaction in which a TaskId receipt records its
        MessageId."""
        [a] = await svc.accept([req()], [None])
        await svc.claim_sends(10, 60)
        assert (await svc.ingest_chat([chat_receipt("P7", "Read", None)], "http")).parked == 1
        res = await svc.ingest_chat([chat_receipt("P7", "Delivered", str(a.id))], "http")
        assert (res.applied, res.parked) == (2, 0)
        assert await state(svc, a.id) == ("read", "cancelled")
        await svc.apply([service.Outcome(message_id=a.id, event=policy.SendOk(), provider_message_id="P7")])
        assert await state(svc, a.id) == ("read", "cancelled")
        assert await db.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NULL") == 0

    async def test_failed_receipt_fires_through_the_timer_path(self, svc: service.Service) -> None:
        """A Failed receipt makes the fallback due now; the claim then fires it exactly once."""
        mid = await accept_and_send(svc, "P4")
        res = await svc.ingest_chat([chat_receipt("P4", "Failed", str(mid))], "http")
        assert res.fired == 1
        fired = await svc.claim_due(100, 60)
        assert [(r.id, r.fire_reason) for r in fired] == [(mid, "failed_receipt")]
        assert await svc.claim_due(100, 60) == []
        assert await state(svc, mid) == ("failed", "firing")

    async def test_late_success_after_fire_is_double_delivered(self, svc: service.Service) -> None:
        """A Delivered receipt after the fallback fired is recorded as double_delivered, once."""
        mid = await accept_and_send(svc, "P5")
        await make_due(svc.db, mid)
        assert len(await svc.claim_due(10, 60)) == 1
        await svc.apply([service.Outcome(message_id=mid, event=policy.SmsSent(), sms_provider_id="S5")])
        res = await svc.ingest_chat(
            [chat_receipt("P5", "Delivered", str(mid)), chat_receipt("P5", "Read", str(mid))], "http"
        )
        assert res.double_delivered == 1
        view = await svc.get_message(mid)
        assert (view["chat_state"], view["fallback_state"], view["double_delivered"]) == (
            "read",
            "sms_sent",
            True,
        )

    async def test_sms_receipt_updates_the_fallback_leg(self, svc: service.Service) -> None:
        """An international SMS report with our id as TaskId moves sms_sent to sms_delivered."""
        mid = await accept_and_send(svc, "P6")
        await make_due(svc.db, mid)
        await svc.claim_due(10, 60)
        await svc.apply([service.Outcome(message_id=mid, event=policy.SmsSent(), sms_provider_id="S6")])
        parsed = receipts.parse_sms_reports(
            [
                {
                    "To": "6591234567",
                    "Status": "1",
                    "ErrorCode": "success",
                    "TaskId": str(mid),
                    "MessageId": "S6",
                }
            ]
        )
        assert (await svc.ingest_sms(parsed, "http")).applied == 1
        assert await state(svc, mid) == ("sent", "sms_delivered")

    async def test_concurrent_pushes_share_one_transaction_and_each_is_applied(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """Pushes that arrive together are committed together (group commit); every receipt applies once."""
        mids = [await accept_and_send(svc, f"G{i}") for i in range(6)]
        pushes = [
            svc.push_chat([chat_receipt(f"G{i}", "Delivered", str(m))], "http") for i, m in enumerate(mids)
        ]
        # A duplicate of a receipt in the same group is stored once.
        pushes.append(svc.push_chat([chat_receipt("G1", "Delivered", str(mids[1]))], "http"))
        # All seven are queued before the writer task first runs: one transaction, one result for all.
        results = await asyncio.gather(*pushes)
        assert {id(r) for r in results} == {id(results[0])}
        r = results[0]
        assert (r.requests, r.received, r.applied, r.duplicates) == (7, 7, 6, 1)
        assert [await state(svc, m) for m in mids] == [("delivered", "cancelled")] * 6
        assert await db.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NOT NULL") == 6


class TestTimers:
    async def test_timer_fires_only_when_due(self, svc: service.Service) -> None:
        """Nothing fires before due_at; after the due time moves into the past it fires with reason
        timeout."""
        mid = await accept_and_send(svc, "T1")
        assert await svc.claim_due(10, 60) == []
        assert 100 < await svc.next_due_in() <= 120
        await make_due(svc.db, mid)
        [row] = await svc.claim_due(10, 60)
        assert (row.id, row.fire_reason, row.text) == (mid, "timeout", "hello by sms")

    async def test_success_committed_before_fire_wins(self, svc: service.Service) -> None:
        """A Delivered receipt committed after the due time but before the claim cancels the fallback."""
        mid = await accept_and_send(svc, "T2")
        await make_due(svc.db, mid)
        await svc.ingest_chat([chat_receipt("T2", "Delivered", str(mid))], "http")
        assert await svc.claim_due(10, 60) == []
        assert await state(svc, mid) == ("delivered", "cancelled")

    async def test_unread_rule_fires_after_delivered(self, svc: service.Service) -> None:
        """With rule unread, Delivered keeps the timer armed and it fires; Read would have cancelled it."""
        mid = await accept_and_send(svc, "T3", FallBackRule="unread")
        await svc.ingest_chat([chat_receipt("T3", "Delivered", str(mid))], "http")
        assert await state(svc, mid) == ("delivered", "armed")
        await make_due(svc.db, mid)
        assert len(await svc.claim_due(10, 60)) == 1

    async def test_concurrent_claimers_fire_each_fallback_once(self, svc: service.Service) -> None:
        """Four concurrent claimers over 400 due timers fire each exactly once (SKIP LOCKED + re-check)."""
        accepted = await svc.accept([req(to=f"65900{i:05d}") for i in range(400)], [None] * 400)
        await svc.db.execute("UPDATE messages SET chat_state='sent'")
        await make_due(svc.db)
        fired: list[uuid.UUID] = []

        async def claimer() -> None:
            while rows := await svc.claim_due(37, 60):
                fired.extend(r.id for r in rows)

        await asyncio.gather(*(claimer() for _ in range(4)))
        assert sorted(fired) == sorted(a.id for a in accepted)
        n = await svc.db.fetchval("SELECT count(*) FROM message_events WHERE kind='fallback_fired'")
        assert n == 400

    async def test_claim_and_next_due_use_the_partial_index(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """The next-due query reads the messages_due partial index, not the table (SPEC §5)."""
        await svc.accept([req(to=f"65800{i:05d}") for i in range(200)], [None] * 200)
        async with db.connection() as conn:
            await conn.execute("ANALYZE messages")
            await conn.execute("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + service.Q["next_due_in"]))
        assert "messages_due" in plan


class TestSendResults:
    @pytest.mark.parametrize("rule", ["undelivered", "sentFailed", "unread"])
    async def test_send_failure_fires_under_every_rule(self, svc: service.Service, rule: str) -> None:
        """A permanent send failure makes the fallback due now whatever the rule."""
        [a] = await svc.accept([req(FallBackRule=rule)], [None])
        await svc.claim_sends(10, 60)
        await svc.apply(
            [service.Outcome(message_id=a.id, event=policy.SendFailed(), error="InvalidParameter.X")]
        )
        [row] = await svc.claim_due(10, 60)
        assert row.fire_reason == "send_failed"

    async def test_ambiguous_send_is_recorded_not_resent(self, svc: service.Service) -> None:
        """A send whose outcome is unknown is recorded as `unknown` and is not claimed for sending again."""
        [a] = await svc.accept([req()], [None])
        await svc.claim_sends(10, 60)
        await svc.apply([service.Outcome(message_id=a.id, event=policy.SendUnknown(), error="Timeout")])
        assert await state(svc, a.id) == ("unknown", "armed")
        assert await svc.claim_sends(10, 60) == []

    async def test_retry_puts_the_message_back_later(self, svc: service.Service, db: store.Store) -> None:
        """A throttled send goes back to accepted with a later attempt time and a timeline entry."""
        [a] = await svc.accept([req()], [None])
        await svc.claim_sends(10, 60)
        await svc.retry_send(a.id, 30, "Throttling.User")
        assert await svc.claim_sends(10, 60) == []
        await db.execute("UPDATE messages SET next_attempt_at = now()")
        [row] = await svc.claim_sends(10, 60)
        assert row.attempt == 2


class TestRecovery:
    """Claimed is not in flight: only an attempt marked in flight (own commit) can have reached a provider."""

    async def test_firing_claimed_but_never_started_is_simply_retried(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """A crash between the firing claim and the SMS request leaves no mark: the SMS is claimed again."""
        mid = await accept_and_send(svc, "R1")
        await make_due(db, mid)
        await svc.claim_due(10, 60)
        await db.execute("UPDATE messages SET fire_lease_until = now() - interval '1 second'")
        assert await svc.claim_stale_firings(10, 60) == []  # nothing to reconcile: nothing can have gone out
        [row] = await svc.claim_sms_retries(10, 60)
        assert (row.id, row.attempt) == (mid, 2)
        assert await svc.mark_sms_started(mid, 2)
        assert not await svc.mark_sms_started(mid, 1), "a stale attempt must not mark the new one in flight"

    async def test_in_flight_firing_undecided_is_parked(self, svc: service.Service, db: store.Store) -> None:
        """With recovery mode park, an in-flight SMS nobody can decide becomes held as sms_unknown."""
        mid = await accept_and_send(svc, "R1")
        await make_due(db, mid)
        [row] = await svc.claim_due(10, 60)
        assert await svc.mark_sms_started(mid, row.attempt)
        await db.execute("UPDATE messages SET fire_lease_until = now() - interval '1 second'")
        assert await svc.claim_sms_retries(10, 60) == []  # in flight: never silently resent
        [stale] = await svc.claim_stale_firings(10, 60)
        assert stale.id == mid
        assert await svc.claim_stale_firings(10, 60) == [], "re-leased: one reconciler at a time"
        assert await svc.interrupt_firing(mid, resend=False, lease_s=60, detail="no query API") is None
        view = await svc.get_message(mid)
        assert (view["fallback_state"], view["hold_reason"]) == ("held", "sms_unknown")

    async def test_in_flight_firing_undecided_is_resent_in_resend_mode(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """With recovery mode resend, the same fallback is re-claimed for one more SMS (at-least-once)."""
        mid = await accept_and_send(svc, "R2")
        await make_due(db, mid)
        [row] = await svc.claim_due(10, 60)
        assert await svc.mark_sms_started(mid, row.attempt)
        row = await svc.interrupt_firing(mid, resend=True, lease_s=60, detail="no query API")
        assert row is not None
        assert (row.id, row.attempt) == (mid, 2)
        assert await db.fetchval("SELECT sms_started_at FROM messages WHERE id=$1", mid) is None

    async def test_sms_absent_makes_the_retry_due(self, svc: service.Service, db: store.Store) -> None:
        """The provider proves the in-flight SMS never arrived: the mark is cleared, the retry due now."""
        mid = await accept_and_send(svc, "R3")
        await make_due(db, mid)
        [row] = await svc.claim_due(10, 60)
        assert await svc.mark_sms_started(mid, row.attempt)
        await svc.sms_absent(mid, row.attempt, "QuerySendDetails: no row with OutId")
        [again] = await svc.claim_sms_retries(10, 60)
        assert again.id == mid
        kinds = [e["kind"] for e in (await svc.get_message(mid))["events"]]
        assert "sms_reconciled_absent" in kinds

    async def test_stale_send_never_written_is_sent_again(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """A message claimed but never marked in flight goes back to accepted, not to unknown."""
        [a] = await svc.accept([req()], [None])
        await svc.claim_sends(10, 60)
        await db.execute("UPDATE messages SET send_lease_until = now() - interval '1 second'")
        assert await svc.recover_sends(10) == (1, 0)
        assert await state(svc, a.id) == ("accepted", "armed")
        [row] = await svc.claim_sends(10, 60)
        assert row.attempt == 2
        assert not await svc.mark_send_started(a.id, 1), "the first claim lost its fencing token"
        assert await svc.mark_send_started(a.id, 2)

    async def test_stale_send_in_flight_becomes_unknown_with_a_lookup_scheduled(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """A message marked in flight past its lease is unknown (never resent blindly), due for a lookup."""
        svc.reconcile_delay_s = 0.0
        [a] = await svc.accept([req()], [None])
        [row] = await svc.claim_sends(10, 60)
        assert await svc.mark_send_started(a.id, row.attempt)
        await db.execute("UPDATE messages SET send_lease_until = now() - interval '1 second'")
        assert await svc.recover_sends(10) == (0, 1)
        assert await state(svc, a.id) == ("unknown", "armed")
        [due] = await svc.claim_reconcile(10, 60)
        assert (due.id, due.lookups) == (a.id, 1)
        assert due.started_at is not None
        assert await svc.claim_reconcile(10, 60) == [], "leased to one reconciler"
