"""The transitions done in SQL agree with `policy.decide` from every state (docs/architecture.md lists them).

Most state changes go through `policy.decide` and `Service._write`; the hot-path claims are single SQL
statements. Each is driven here from every (chat state, fallback state, rule) and compared with the decision
the policy takes for the event the statement stands for.
"""

from __future__ import annotations

import itertools

from fallback_daemon.core import model, policy
from fallback_daemon.core.model import ChatState as C
from fallback_daemon.core.model import FallbackState as F
from fallback_daemon.db import store
from fallback_daemon.engine import service
from tests.integration.test_service import req

STATES = list(itertools.product(C, F, model.Rule))


async def _row_in(svc: service.Service, db: store.Store, chat: C, fallback: F, rule: model.Rule) -> object:
    [a] = await svc.accept([req(FallBackRule=rule.value)], [None])
    await db.execute(
        "UPDATE messages SET chat_state = $2, fallback_state = $3, due_at = now() - interval '1 s', "
        "fire_lease_until = now() + interval '1 min' WHERE id = $1",
        a.id,
        chat.value,
        fallback.value,
    )
    return a.id


async def test_claim_due_is_timer_expired(svc: service.Service, db: store.Store) -> None:
    """claim_due_fallbacks fires exactly the rows policy.decide(TimerExpired) fires, from every state."""
    rows = {await _row_in(svc, db, *state): state for state in STATES}
    claimed = {c.id for c in await svc.claim_due(len(rows) + 1, 60)}
    for mid, (chat, fallback, rule) in rows.items():
        d = policy.decide(policy.State(chat=chat, fallback=fallback, rule=rule), policy.TimerExpired())
        fires = d.outcome == "fallback_fired"
        assert (mid in claimed) is fires, (chat, fallback, rule)
        got = await db.fetchval("SELECT fallback_state FROM messages WHERE id = $1", mid)
        assert got == d.fallback.value, (chat, fallback, rule)


async def test_claim_sends_takes_only_accepted(svc: service.Service, db: store.Store) -> None:
    """claim_sends moves accepted → sending and nothing else (what SendRequeued / OperatorResend undo)."""
    ids = {}
    for chat in C:
        [a] = await svc.accept([req()], [None])
        await db.execute("UPDATE messages SET chat_state = $2 WHERE id = $1", a.id, chat.value)
        ids[a.id] = chat
    claimed = {c.id for c in await svc.claim_sends(100, 60)}
    assert {ids[m] for m in claimed} == {C.ACCEPTED}
    back = policy.decide(
        policy.State(chat=C.SENDING, fallback=F.ARMED, rule=model.Rule.UNDELIVERED), policy.SendRequeued()
    )
    assert back.chat is C.ACCEPTED  # what a claim undoes when its request was never written
