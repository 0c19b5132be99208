"""The Prometheus metrics move when the thing they name happens (real Postgres, the service and gate loop).

Counters are process-global, so each test reads a value before and after and asserts the difference.
Time is driven through the database (due, sent and fired times are moved back), never by sleeping.
"""

from __future__ import annotations

import asyncio
import platform
import uuid

import prometheus_client
from prometheus_client import REGISTRY

from fallback_daemon import metrics
from fallback_daemon.core import model, policy, receipts
from fallback_daemon.db import store
from fallback_daemon.engine import health, service
from tests.integration import opsupport
from tests.integration.test_service import accept_and_send, chat_receipt, make_due


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def series(name: str) -> int:
    """How many samples /metrics shows for one metric family."""
    return sum(len(f.samples) for f in REGISTRY.collect() if f.name == name)


def sms_report(mid: uuid.UUID, sms_id: str, status: str) -> list[model.SmsReceipt]:
    return receipts.parse_sms_reports(
        [{"To": "6591234567", "Status": status, "ErrorCode": "x", "TaskId": str(mid), "MessageId": sms_id}]
    )


async def fired_sms(svc: service.Service, pid: str, sms_id: str) -> uuid.UUID:
    """A message whose fallback fired and whose SMS went out (fallback state sms_sent)."""
    mid = await accept_and_send(svc, pid)
    await make_due(svc.db, mid)
    assert len(await svc.claim_due(10, 60)) == 1
    await svc.apply([service.Outcome(message_id=mid, event=policy.SmsSent(), sms_provider_id=sms_id)])
    return mid


async def test_a_failed_message_moves_fired_and_sms_delivered(db_dsn: str) -> None:
    """End to end (daemon + sandbox): a Failed chat receipt fires the fallback and its SMS is delivered:
    fallback_fired_total{reason="failed_receipt"} and fallback_sms_total{outcome="delivered"} move by 1."""
    fired = value("fallback_fired_total", reason="failed_receipt")
    delivered = value("fallback_sms_total", outcome="delivered")
    sms_receipts = value("fallback_receipts_total", kind="sms", source="http", status="delivered")
    async with opsupport.running_daemon(db_dsn) as daemon, opsupport.client() as http:
        mid = await opsupport.send(http, daemon.url, "6591234565")  # sandbox: To …5 is Failed
        await opsupport.wait_for(http, daemon.url, mid, lambda v: v["fallback_state"] == "sms_delivered")
    assert value("fallback_fired_total", reason="failed_receipt") - fired == 1
    assert value("fallback_sms_total", outcome="delivered") - delivered == 1
    assert value("fallback_receipts_total", kind="sms", source="http", status="delivered") - sms_receipts == 1


class TestSmsOutcomes:
    async def test_sms_receipts_count_delivered_and_failed_once(self, svc: service.Service) -> None:
        """A delivered and a failed SMS report move fallback_sms_total and the sms receipt counter; a
        duplicate report is counted as received but moves no outcome."""
        delivered = await fired_sms(svc, "M1", "S1")
        failed = await fired_sms(svc, "M2", "S2")
        before = {
            "delivered": value("fallback_sms_total", outcome="delivered"),
            "failed": value("fallback_sms_total", outcome="failed"),
            "r_delivered": value("fallback_receipts_total", kind="sms", source="http", status="delivered"),
            "r_failed": value("fallback_receipts_total", kind="sms", source="mns", status="failed"),
        }
        await svc.ingest_sms(sms_report(delivered, "S1", "1"), "http")
        await svc.ingest_sms(sms_report(delivered, "S1", "1"), "http")  # the provider repeats itself
        await svc.ingest_sms(sms_report(failed, "S2", "2"), "mns")
        assert value("fallback_sms_total", outcome="delivered") - before["delivered"] == 1
        assert value("fallback_sms_total", outcome="failed") - before["failed"] == 1
        assert (
            value("fallback_receipts_total", kind="sms", source="http", status="delivered")
            - before["r_delivered"]
            == 2
        )
        assert (
            value("fallback_receipts_total", kind="sms", source="mns", status="failed") - before["r_failed"]
            == 1
        )

    async def test_an_in_progress_sms_report_is_other_and_no_outcome(self, svc: service.Service) -> None:
        """An SMS status neither delivered nor failed counts as status `other` and moves no outcome."""
        mid = await fired_sms(svc, "M3", "S3")
        outcomes = value("fallback_sms_total", outcome="delivered") + value(
            "fallback_sms_total", outcome="failed"
        )
        other = value("fallback_receipts_total", kind="sms", source="http", status="other")
        await svc.ingest_sms(sms_report(mid, "S3", "0"), "http")
        assert value("fallback_receipts_total", kind="sms", source="http", status="other") - other == 1
        after = value("fallback_sms_total", outcome="delivered") + value(
            "fallback_sms_total", outcome="failed"
        )
        assert after == outcomes


class TestReceiptStatusLabels:
    async def test_invented_statuses_count_as_other_without_new_series(self, svc: service.Service) -> None:
        """5,000 ChatApp reports with invented statuses add 5,000 to status="other" and no series."""
        await svc.ingest_chat([chat_receipt("warm-up", "Weird", None)], "http")  # the `other` series exists
        families = series("fallback_receipts_total")
        other = value("fallback_receipts_total", kind="chatapp", source="http", status="other")
        invented = [chat_receipt(f"X{i}", f"Status{i}", None) for i in range(5000)]
        await svc.ingest_chat(invented, "http")
        assert value("fallback_receipts_total", kind="chatapp", source="http", status="other") - other == 5000
        assert series("fallback_receipts_total") == families
        text = prometheus_client.generate_latest().decode()
        assert "Status4999" not in text

    async def test_known_statuses_are_lower_case_labels(self, svc: service.Service) -> None:
        """A DELIVERED report counts under status="delivered" (closed set, whatever the case on the wire)."""
        mid = await accept_and_send(svc, "K1")
        before = value("fallback_receipts_total", kind="chatapp", source="sqs", status="delivered")
        await svc.ingest_chat([chat_receipt("K1", "DELIVERED", str(mid))], "sqs")
        assert (
            value("fallback_receipts_total", kind="chatapp", source="sqs", status="delivered") - before == 1
        )

    def test_receipt_status_maps_into_the_closed_set(self) -> None:
        """Known statuses keep their lower-case name; anything else is `other`."""
        assert [metrics.receipt_status(s) for s in ("Sent", " read ", "FAILED", "pending", "x" * 300)] == [
            "sent",
            "read",
            "failed",
            "other",
            "other",
        ]


class TestExposition:
    def test_build_info_labels(self) -> None:
        """fallback_build_info carries the installed version and the Python version."""
        labels = {"version": metrics._version(), "python": platform.python_version()}
        assert REGISTRY.get_sample_value("fallback_build_info", labels) == 1

    def test_build_info_and_no_created_series(self) -> None:
        """/metrics carries fallback_build_info = 1 with the version, and no `_created` series at all."""
        text = prometheus_client.generate_latest().decode()
        [line] = [x for x in text.splitlines() if x.startswith("fallback_build_info{")]
        assert 'version="' in line and 'python="' in line
        assert line.endswith(" 1.0")
        assert "_created" not in text


class TestStaleWorkGauges:
    async def test_silence_gauge_for_every_channel_before_any_receipt(self, svc: service.Service) -> None:
        """A gate check on a database with no receipt at all sets a silence gauge for every watched channel,
        including a configured one the built-in list does not name."""
        metrics.feed_silent.clear()  # process-global: start from no series at all
        metrics.feed_unanswered.clear()
        gate = health.GateLoop(
            health.PgGateStore(svc.db), feed=svc.feed, window_s=600, per_channel={"line": 300.0}
        )
        await gate.check_once()
        for channel in (*health.CHANNELS, "line"):
            assert REGISTRY.get_sample_value("fallback_feed_silent_seconds", {"channel": channel}) is not None
            assert value("fallback_feed_unanswered_seconds", channel=channel) == 0

    async def test_unanswered_gauge_grows_with_sends_and_clears_on_a_receipt(
        self, svc: service.Service, db: store.Store
    ) -> None:
        """A send with no receipt since shows its age on fallback_feed_unanswered_seconds; a receipt clears
        it."""
        mid = await accept_and_send(svc, "U1")
        await db.execute("UPDATE messages SET sent_at = now() - interval '200 seconds' WHERE id = $1", mid)
        gate = health.GateLoop(health.PgGateStore(svc.db), feed=svc.feed, window_s=600)
        await gate.check_once()
        assert value("fallback_feed_unanswered_seconds", channel="whatsapp") >= 200
        await svc.ingest_chat([chat_receipt("U1", "Delivered", str(mid))], "http")
        await gate.check_once()
        assert value("fallback_feed_unanswered_seconds", channel="whatsapp") == 0
        assert value("fallback_feed_silent_seconds", channel="whatsapp") < 200

    async def test_overdue_timers_gauge(self, svc: service.Service, db: store.Store) -> None:
        """An armed timer two minutes past due shows on fallback_overdue_timers and its lateness; firing it
        clears both."""
        mid = await accept_and_send(svc, "O1")
        await health.refresh_gauges(svc)
        assert value("fallback_overdue_timers") == 0
        await db.execute("UPDATE messages SET due_at = now() - interval '120 seconds' WHERE id = $1", mid)
        await health.refresh_gauges(svc)
        assert value("fallback_overdue_timers") == 1
        assert value("fallback_timer_overdue_seconds") >= 120
        assert len(await svc.claim_due(10, 60)) == 1
        await health.refresh_gauges(svc)
        assert (value("fallback_overdue_timers"), value("fallback_timer_overdue_seconds")) == (0, 0)

    async def test_sms_without_receipt_gauge(self, svc: service.Service, db: store.Store) -> None:
        """An SMS still sms_sent past the wait shows on fallback_sms_without_receipt until its report."""
        mid = await fired_sms(svc, "W1", "SW1")
        await health.refresh_gauges(svc)
        assert value("fallback_sms_without_receipt") == 0  # fired just now: still within the wait
        wait = int(metrics.SMS_RECEIPT_WAIT_S) + 60
        await db.execute(
            "UPDATE messages SET fired_at = now() - $2 * interval '1 second' WHERE id = $1", mid, wait
        )
        await health.refresh_gauges(svc)
        assert value("fallback_sms_without_receipt") == 1
        await svc.ingest_sms(sms_report(mid, "SW1", "1"), "http")
        await health.refresh_gauges(svc)
        assert value("fallback_sms_without_receipt") == 0

    async def test_gate_closed_gauge(self, svc: service.Service, db: store.Store) -> None:
        """A send unanswered for longer than the window closes the gate: fallback_feed_gate_closed 1."""
        mid = await accept_and_send(svc, "G1")
        gate = health.GateLoop(health.PgGateStore(svc.db), feed=svc.feed, window_s=60)
        await gate.check_once()
        assert value("fallback_feed_gate_closed", channel="whatsapp") == 0
        await db.execute("UPDATE messages SET sent_at = now() - interval '120 seconds' WHERE id = $1", mid)
        await gate.check_once()
        assert value("fallback_feed_gate_closed", channel="whatsapp") == 1

    async def test_held_gauge(self, svc: service.Service, db: store.Store) -> None:
        """A held fallback shows on fallback_held at the next scrape."""
        mid = await accept_and_send(svc, "H1")
        await health.refresh_gauges(svc)
        assert value("fallback_held") == 0
        await db.execute(
            "UPDATE messages SET fallback_state = 'held', hold_reason = 'feed_down' WHERE id = $1", mid
        )
        await health.refresh_gauges(svc)
        assert value("fallback_held") == 1

    async def test_dead_letter_counter(self, svc: service.Service) -> None:
        """An unparseable queue message moves fallback_dead_letters_total for its source."""
        before = value("fallback_dead_letters_total", source="mns")
        await svc.ingest_queue_batch(
            model.ReceiptKind.CHATAPP,
            "mns",
            "Alicom-Queue-1-ChatAppStatus",
            [],
            [],
            [("q-1", "{", "bad json")],
        )
        assert value("fallback_dead_letters_total", source="mns") - before == 1


async def test_metrics_endpoint_has_every_channel_silence_before_any_receipt(db_dsn: str) -> None:
    """Over HTTP, a fresh daemon's /metrics shows a silence gauge per watched channel before any receipt came,
    build info, and no `_created` series."""
    metrics.feed_silent.clear()  # process-global: start from no series at all
    metrics.feed_unanswered.clear()
    async with opsupport.running_daemon(db_dsn) as daemon, opsupport.client() as http:
        text = ""
        for _ in range(200):  # the gate loop's first check runs as the daemon starts: poll for it
            async with http.get(f"{daemon.url}/metrics") as resp:
                text = await resp.text()
            if all(f'fallback_feed_silent_seconds{{channel="{c}"}}' in text for c in health.CHANNELS):
                break
            await asyncio.sleep(0.05)
    for channel in health.CHANNELS:
        assert f'fallback_feed_silent_seconds{{channel="{channel}"}}' in text
        assert f'fallback_feed_unanswered_seconds{{channel="{channel}"}} 0.0' in text
    assert "fallback_build_info{" in text
    assert "_created" not in text
