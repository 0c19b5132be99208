"""The service, split by noun: accept, ingest (receipts), attempts (the loops' database work), views; all on
the one write path of `outcomes`. `Service` composes them; the names other modules use are re-exported here.
"""

from __future__ import annotations

import asyncio

from fallback_daemon.core import ports
from fallback_daemon.db import store
from fallback_daemon.engine.accept import NOTIFY_EVERY_S, Accept, Accepted, fill_template
from fallback_daemon.engine.attempts import Attempts
from fallback_daemon.engine.ingest import Ingest, IngestResult
from fallback_daemon.engine.outcomes import Outcome, Q, Row
from fallback_daemon.engine.views import Views, message_view

__all__ = [
    "NOTIFY_EVERY_S",
    "Accepted",
    "IngestResult",
    "Outcome",
    "Q",
    "Row",
    "Service",
    "fill_template",
    "message_view",
]


class Service(Accept, Ingest, Attempts, Views):
    def __init__(
        self,
        db: store.Store,
        *,
        sms_template: str | None = None,
        timer_scale: float = 1.0,
        reconcile_delay_s: float = 60.0,
        feed: ports.FeedClock | None = None,
    ) -> None:
        self.db = db
        self.reconcile_delay_s = (
            reconcile_delay_s  # first provider lookup of an ambiguous send, after its write
        )
        self.sms_template = sms_template
        self.timer_scale = timer_scale
        self.feed = feed if feed is not None else ports.FeedClock()  # receipts seen; the gate flushes it
        self._notified_at = -1.0  # monotonic time of the last "new messages" NOTIFY sent by accept
        self._trailing: asyncio.Task[None] | None = None
        self._chat_pushes = {}
        self._posts = None
        self._sms_pushes = {}
