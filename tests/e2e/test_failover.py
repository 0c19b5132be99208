"""Failover on real servers: a primary and a streaming standby (pgserver's `initdb`, `pg_basebackup -R`,
`synchronous_standby_names`, so a commit is acknowledged only once the standby has it), the daemon on
`DATABASE_URL=postgresql://…@P1,…@P2/chaos?target_session_attrs=read-write`, load, the primary stopped with
`-m immediate`, the standby promoted (`pg_ctl promote`), more load.

The daemon must keep serving against the new primary: every message acknowledged with a 202 (before or
after the failover) is in the new primary, nothing is sent twice (the sandbox's journal), no daemon death.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import shutil
import tempfile
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chaos import check, load, pg, procs, world
from tests.e2e import procs as e2e_procs


@pytest.fixture
async def pair() -> AsyncIterator[tuple[pg.Cluster, pg.Cluster, pathlib.Path]]:
    """A primary with a synchronous streaming standby; both destroyed afterwards (logs kept in artifacts)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="chaos-failover-"))
    root.chmod(0o755)  # noqa: ASYNC240 - set-up, nothing runs yet
    primary = pg.Cluster(root / "primary", procs.free_port())
    standby = pg.Cluster(root / "standby", procs.free_port())
    try:
        await asyncio.to_thread(primary.init)
        await primary.arun("start")
        await primary.create_database("chaos")
        await asyncio.to_thread(standby.standby_of, primary, application_name="standby")
        await standby.arun("start")
        conn = await asyncpg.connect(primary.dsn())
        try:
            await conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
            await conn.execute("SELECT pg_reload_conf()")
            for _ in range(200):  # the standby reports itself synchronous within a moment
                state = await conn.fetchval("SELECT sync_state FROM pg_stat_replication")
                if state == "sync":
                    break
                await asyncio.sleep(0.05)
            assert state == "sync"
        finally:
            await conn.close()
        yield primary, standby, root
    finally:
        keep = e2e_procs.ARTIFACTS / "failover"
        shutil.rmtree(keep, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.copytree(root / "logs", keep)
        for cluster in (primary, standby):
            await asyncio.to_thread(cluster.destroy)
        shutil.rmtree(root, ignore_errors=True)


async def more_accepted(loader: load.Loader, n: int) -> None:
    """Poll the load generator's own count (bounded) until `n` more messages were acknowledged."""
    want = len(loader.accepted.ids) + n
    for _ in range(1200):
        if len(loader.accepted.ids) >= want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} more messages acknowledged ({len(loader.accepted.ids)} in all)")


async def test_daemon_carries_on_after_the_standby_is_promoted(
    pair: tuple[pg.Cluster, pg.Cluster, pathlib.Path],
) -> None:
    """Primary crashed, standby promoted: the daemon serves on, nothing acknowledged lost, nothing doubled."""
    primary, standby, root = pair
    dsn = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/chaos"
        "?target_session_attrs=read-write"
    )
    async with world.World(root, dsn=dsn, timer_s=3.0) as w:
        loader = load.Loader(w, rate=30, batch=5)
        stop = asyncio.Event()
        load_task = asyncio.create_task(loader.run(stop))
        try:
            await more_accepted(loader, 150)
            before_failover = set(loader.accepted.ids)
            await primary.arun("stop", "immediate")
            w.note("primary_stopped_immediate")
            await standby.arun("promote")
            w.note("standby_promoted")
            await more_accepted(loader, 150)
        finally:
            stop.set()
            await load_task
        settled, _ = await check.settle(w, 60)
        rep = await check.check(w, loader.accepted, "failover")
        new_primary = await asyncpg.connect(standby.dsn("chaos"))
        try:
            in_recovery = await new_primary.fetchval("SELECT pg_is_in_recovery()")
            stored = {str(r["id"]) for r in await new_primary.fetch("SELECT id FROM messages")}
        finally:
            await new_primary.close()

    assert in_recovery is False
    assert before_failover <= stored  # acknowledged on the old primary, replicated synchronously
    assert set(loader.accepted.ids) <= stored
    assert len(loader.accepted.ids) - len(before_failover) >= 150  # and served after the failover
    assert settled, rep.examples.get("stuck")
    failures = {
        "lost": rep.lost,
        "doubled_sms": rep.doubled_sms,
        "doubled_chat": rep.doubled_chat,
        "missed_fallbacks": rep.missed_fallbacks,
        "daemon_deaths": rep.daemon_deaths,
        "stuck": rep.stuck,
    }
    assert failures == dict.fromkeys(failures, 0), json.dumps(
        {"failures": failures, "examples": rep.examples, "deaths": rep.details["deaths"]},
        indent=1,
        default=str,
    )
