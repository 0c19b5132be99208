"""Prometheus metrics (prometheus-client, default registry). Names are the contract for dashboards/alerts.

Label values come from closed sets only (an unknown receipt status counts as `other`), so no input can grow
/metrics. `deploy/prometheus/rules.yml` alerts on these names; `tests/unit/test_prometheus_rules.py` keeps the
two in step.
"""

from __future__ import annotations

import importlib.metadata
import platform

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

# No `<name>_created` series: they double the series count and no dashboard or alert reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
LAG_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)

sends = Counter(
    "fallback_sends_total", "SendChatappMessage calls by outcome (ok, failed, unknown, retry)", ["outcome"]
)
provider_latency = Histogram(
    "fallback_provider_latency_seconds", "Provider call latency", ["provider"], buckets=LATENCY_BUCKETS
)
throttled = Counter("fallback_throttled_total", "Throttling answers from a provider", ["provider"])
# Receipt status labels: the ChatApp statuses (sent, delivered, read, failed) and the SMS outcomes (delivered,
# failed); anything else is `other`.
RECEIPT_STATUSES = frozenset({"sent", "delivered", "read", "failed", "other"})
receipts = Counter(
    "fallback_receipts_total",
    "Receipts received (duplicates included), by kind (chatapp, sms), source and status "
    "(sent, delivered, read, failed, other)",
    ["kind", "source", "status"],
)
receipt_duplicates = Counter(
    "fallback_receipt_duplicates_total", "Receipts already stored (deduplicated)", ["kind", "source"]
)
receipts_parked = Counter("fallback_receipts_parked_total", "Receipts that matched no message yet", ["kind"])
receipt_lag = Histogram(
    "fallback_receipt_lag_seconds",
    "Receipt arrival time minus its provider Timestamp",
    ["source"],
    buckets=LAG_BUCKETS,
)
timer_lateness = Histogram(
    "fallback_timer_lateness_seconds", "Fallback fired time minus due time", buckets=LATENESS_BUCKETS
)
fallbacks_fired = Counter("fallback_fired_total", "Fallbacks fired, by trigger", ["reason"])
fallback_sms = Counter(
    "fallback_sms_total",
    "Fallback SMS outcomes: sent, rejected, unknown (the SMS call) and delivered, failed (its receipt)",
    ["outcome"],
)
fallbacks_held = Counter("fallback_holds_total", "Fallbacks held instead of fired, by reason", ["reason"])
double_delivered = Counter("fallback_double_delivered_total", "Chat success after the fallback SMS fired")
dead_letters = Counter("fallback_dead_letters_total", "Queue messages that could not be parsed", ["source"])
recovered = Counter(
    "fallback_recovered_total", "Expired leases found by the recovery sweep, by what was done", ["action"]
)
# Gauges refreshed from Postgres on each scrape (every replica reports the shared truth).
pending_timers = Gauge("fallback_pending_timers", "Armed fallbacks with a timer")
held = Gauge("fallback_held", "Fallbacks currently held (health gate or interrupted firing)")
messages_by_state = Gauge("fallback_messages", "Messages by chat and fallback state", ["chat", "fallback"])
feed_silent = Gauge(
    "fallback_feed_silent_seconds",
    "Seconds since the last receipt, per channel (since this replica started watching, if none ever came)",
    ["channel"],
)
feed_unanswered = Gauge(
    "fallback_feed_unanswered_seconds",
    "Age of the oldest send after the channel's last receipt (0: every send was followed by a receipt)",
    ["channel"],
)
# How long an armed timer may be past due before it counts as overdue, and an SMS without a delivery report.
OVERDUE_AFTER_S = 30.0
SMS_RECEIPT_WAIT_S = 900.0
overdue_timers = Gauge(
    "fallback_overdue_timers", f"Armed fallbacks more than {OVERDUE_AFTER_S:.0f} s past their due time"
)
oldest_overdue = Gauge(
    "fallback_timer_overdue_seconds", "How far past its due time the most overdue armed fallback is (0: none)"
)
sms_without_receipt = Gauge(
    "fallback_sms_without_receipt",
    f"Fallback SMS still `sms_sent` (no delivery report) {SMS_RECEIPT_WAIT_S:.0f} s after they fired",
)
feed_gate = Gauge(
    "fallback_feed_gate_closed", "1 while the receipt-feed health gate holds timer fallbacks", ["channel"]
)
# MNS receipt queues (providers/mns.py, providers/dybaseapi.py)
mns_requests = Counter(
    "fallback_mns_requests_total", "MNS requests by operation and HTTP status (or error)", ["op", "status"]
)
mns_token_refreshes = Counter(
    "fallback_mns_token_refreshes_total",
    "QueryTokenForMnsQueue calls, by queue and why (initial, expiring, refused)",
    ["queue", "reason"],
)

build_info = Gauge("fallback_build_info", "Always 1; the labels say which build runs", ["version", "python"])


def _version() -> str:
    try:
        return importlib.metadata.version("fallback-daemon")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree without an install
        return "unknown"


build_info.labels(_version(), platform.python_version()).set(1)


def receipt_status(raw: str) -> str:
    """A receipt status as a label from the closed set RECEIPT_STATUSES (anything else is `other`)."""
    value = raw.strip().lower()
    return value if value in RECEIPT_STATUSES else "other"


# --- durable attempts and database weather (issue 9) ---
loop_restarts = Counter(
    "fallback_loop_restarts_total", "Loops restarted by their supervisor after an error", ["loop"]
)
reconciled = Counter(
    "fallback_reconciled_total",
    "Ambiguous sends looked up at the provider, by leg and result (found, absent, unknown, gave_up)",
    ["leg", "result"],
)
listen_connected = Gauge("fallback_listen_connected", "1 while the LISTEN connection (wake-ups) is up")

# --- guards at the moment of fallback (guards.py, errorclasses.py; docs/guards.md) ---
guard_blocked = Counter(
    "fallback_guard_blocked_total",
    "Fallbacks a guard stopped at the moment of firing (held or dropped), by guard "
    "(opt_out, deny_prefix, budget)",
    ["guard"],
)
guard_deferred = Counter(
    "fallback_guard_deferred_total", "Fallbacks moved to the end of a quiet window, by guard", ["guard"]
)
error_classes = Counter(
    "fallback_error_class_total",
    "Chat failures that triggered a fallback, by error class (errorclasses.py; `unclassified` for the rest)",
    ["class"],
)

# --- outcome events (webhooks, docs/webhooks.md) ---
webhook_deliveries = Counter(
    "fallback_webhook_deliveries_total",
    "Webhook delivery attempts by result (delivered, retry, exhausted, lost_claim)",
    ["result"],
)
webhook_pending = Gauge(
    "fallback_webhook_pending", "Webhook deliveries not yet delivered, per endpoint id", ["endpoint"]
)
webhook_lag = Gauge(
    "fallback_webhook_lag_seconds",
    "Age of the oldest pending webhook delivery, per endpoint id (0: none)",
    ["endpoint"],
)
webhook_delivery_lag = Histogram(
    "fallback_webhook_delivery_lag_seconds",
    "From the state change to its webhook being delivered (retries included)",
    buckets=LAG_BUCKETS,
)
