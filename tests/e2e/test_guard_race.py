"""Replicas racing at a budget edge: several timer loops, each with its own service and connection pool on one
database, fire 50 due fallbacks against a global budget of 10. Never more than 10 SMS go out (each once), the
other 40 are held with reason `budget`, and the usage row says 10. Run in three shapes (replicas x batch).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Mapping

import pytest

from fallback_daemon.core import ports, validation
from fallback_daemon.db import store
from fallback_daemon.engine import guards, loops, service

N, BUDGET = 50, 10
BODY = {
    "ChannelType": "whatsapp",
    "Type": "message",
    "MessageType": "text",
    "From": "6580000000",
    "To": "6591234567",
    "Content": {"text": "hi"},
    "FallBackContent": "hi by sms",
    "FallBackDuration": 600,
}


class CountingSms:
    """Accepts every SMS and counts them per fallback id (shared by every replica, like one provider)."""

    name = "counting"

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def route(self, *, to: str, channel: str) -> CountingSms:
        return self

    async def send(self, *, fallback_id: str, to: str, text: str, template_params: Mapping[str, str]) -> str:
        self.sent[fallback_id] += 1
        await asyncio.sleep(0)  # let the other replicas run between calls
        return f"sms-{fallback_id}"

    async def lookup(
        self, *, fallback_id: str, to: str, since: dt.datetime, until: dt.datetime
    ) -> ports.Lookup:
        return ports.Lookup(result=ports.LookupResult.UNKNOWN)


async def settled(db: store.Store) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM messages WHERE fallback_state IN ('sms_sent', 'held')")
    )


@pytest.mark.parametrize(("replicas", "batch"), [(3, 1), (4, 3), (5, 7)])
async def test_replicas_never_spend_more_than_the_budget(db_dsn: str, replicas: int, batch: int) -> None:
    seed = await store.Store.connect(db_dsn, min_size=1, max_size=2)
    try:
        await service.Service(seed).accept([validation.validate_send(BODY) for _ in range(N)], [None] * N)
        # As if every chat message had been sent and its timer had run out (ordered, as bulk writes must be).
        await seed.execute(
            "WITH l AS (SELECT id FROM messages ORDER BY id FOR UPDATE) UPDATE messages m"
            " SET chat_state = 'sent', sent_at = now(), due_at = now() - interval '1 second'"
            " FROM l WHERE m.id = l.id"
        )
        await guards.GuardStore(seed).set_budget("global", "", BUDGET, "race")
        sms = CountingSms()
        pools = [await store.Store.connect(db_dsn, min_size=1, max_size=4) for _ in range(replicas)]
        timers = [
            loops.TimerLoop(
                service.Service(p),
                sms,
                batch=batch,
                lease_s=60,
                max_sleep_s=0.02,
                concurrency=4,
                sms_max_attempts=3,
            )
            for p in pools
        ]
        stop = asyncio.Event()
        runs = [asyncio.create_task(t.run(stop, 5.0)) for t in timers]
        try:
            for _ in range(600):  # a bounded wait on the database condition, not a timing assertion
                if await settled(seed) == N:
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*runs)
            for p in pools:
                await p.close()
        assert await settled(seed) == N
        assert sum(sms.sent.values()) == BUDGET and set(sms.sent.values()) == {1}
        states = dict(
            await seed.fetch(
                "SELECT coalesce(hold_reason, fallback_state), count(*) FROM messages GROUP BY 1"
            )
        )
        assert states == {"sms_sent": BUDGET, "budget": N - BUDGET}
        assert await seed.fetchval("SELECT used FROM sms_budget_usage WHERE scope = 'global'") == BUDGET
        assert (
            await seed.fetchval("SELECT count(*) FROM message_events WHERE kind = 'fallback_blocked'")
            == N - BUDGET
        )
    finally:
        await seed.close()
