"""Prometheus metrics (prometheus-client, default registry). Names are the contract for dashboards/alerts."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
receipts = Counter(
    "fallback_receipts_total", "Receipts received, by kind, source and status", ["kind", "source", "status"]
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
    "fallback_sms_total", "Fallback SMS outcomes (sent, rejected, delivered, failed, unknown)", ["outcome"]
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
    "fallback_feed_silent_seconds", "Seconds since the last receipt, per channel", ["channel"]
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
