"""The fault injectors and the scenarios of the campaign (each in a fresh world), plus the LISTEN latency
measurement (accept->sent and failure->fired before a Postgres restart and in the 30 s after it)."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from chaos import check, load, world

Faults = Callable[[world.World, float], Awaitable[None]]


async def _pause(w: world.World, low: float, high: float) -> None:
    await asyncio.sleep(w.rng.uniform(low, high))


async def kill9(w: world.World, target: int | None = None, *, startup_share: float = 0.3) -> None:
    """kill -9 one replica now, or (startup_share of the time) just after its next restart: mid start-up."""
    daemons = w.daemons if target is None else [w.daemons[target]]
    daemon = w.rng.choice(daemons)
    if w.rng.random() < startup_share:
        daemon.restarted.clear()
        daemon.kill9()
        w.note("kill9")
        await daemon.restarted.wait()
        await _pause(w, 0.0, 1.5)
        daemon.kill9()
        w.note("kill9_startup")
    else:
        daemon.kill9()
        w.note("kill9")


def kill9_loop(every: tuple[float, float], target: int | None = None) -> Faults:
    async def run(w: world.World, duration: float) -> None:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            await _pause(w, *every)
            await kill9(w, target)

    return run


def pg_restart_loop(mode: str, every: tuple[float, float]) -> Faults:
    async def run(w: world.World, duration: float) -> None:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            await _pause(w, *every)
            await w.cluster.arun("restart", mode)
            w.note(f"pg_restart_{mode}")

    return run


async def outage(w: world.World, down_s: float) -> None:
    """The provider down: the sandbox killed (connection refused), back later on the same port and journal."""
    w.sandbox.kill9()
    w.note("provider_outage")
    await asyncio.sleep(down_s)
    await w.sandbox.start()


def outage_loop(down_s: float, every: tuple[float, float]) -> Faults:
    async def run(w: world.World, duration: float) -> None:
        end = time.monotonic() + duration
        while time.monotonic() + every[0] + down_s < end:
            await _pause(w, *every)
            await outage(w, down_s)

    return run


def sigterm_loop(every: tuple[float, float]) -> Faults:
    async def run(w: world.World, duration: float) -> None:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            await _pause(w, *every)
            daemon = w.rng.choice(w.live() or w.daemons)
            daemon.restarted.clear()
            daemon.sigterm()
            w.note("sigterm")
            await daemon.restarted.wait()

    return run


def together(*parts: Faults) -> Faults:
    async def run(w: world.World, duration: float) -> None:
        await asyncio.gather(*(p(w, duration) for p in parts))

    return run


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    faults: Faults
    replicas: int = 1
    rate: float = 40.0  # messages/s
    duration_s: float = 60.0


def campaign(*, outage_s: float = 60.0, duration_s: float = 60.0) -> list[Scenario]:
    """The long campaign (minutes): one fault family per scenario, then all of them together."""
    d = duration_s
    return [
        Scenario(name="kill9", faults=kill9_loop((2, 6)), duration_s=d),
        Scenario(
            name="replicas_kill9", faults=kill9_loop((2, 5), target=1), replicas=3, rate=60, duration_s=d
        ),
        Scenario(name="pg_restart_fast", faults=pg_restart_loop("fast", (5, 10)), duration_s=d),
        Scenario(name="pg_restart_immediate", faults=pg_restart_loop("immediate", (5, 10)), duration_s=d),
        Scenario(
            name=f"provider_outage_{outage_s:.0f}s",
            faults=outage_loop(outage_s, (3, 5)),
            duration_s=max(d, outage_s + 15),
        ),
        Scenario(name="sigterm", faults=sigterm_loop((3, 7)), duration_s=d),
        Scenario(
            name="everything",
            faults=together(
                kill9_loop((4, 9), target=1),
                pg_restart_loop("fast", (10, 20)),
                pg_restart_loop("immediate", (15, 25)),
                outage_loop(10, (12, 20)),
            ),
            replicas=3,
            rate=50,
            duration_s=d,
        ),
    ]


async def run(
    scenario: Scenario,
    root: pathlib.Path,
    *,
    tree: pathlib.Path,
    timer_s: float,
    settle_s: float,
    seed: int = 0,
) -> check.Report:
    """One scenario in a fresh world: load and faults together, then settle, then the invariants."""
    started = time.monotonic()
    async with world.World(
        root / scenario.name, replicas=scenario.replicas, timer_s=timer_s, daemon_tree=tree, seed=seed
    ) as w:
        loader = load.Loader(w, rate=scenario.rate)
        stop = asyncio.Event()
        load_task = asyncio.create_task(loader.run(stop), name="load")
        await scenario.faults(w, scenario.duration_s)
        stop.set()
        await load_task
        settled, took = await check.settle(w, settle_s)
        report = await check.check(w, loader.accepted, scenario.name)
        report.settled, report.settle_s = settled, round(took, 1)
        report.seconds = round(time.monotonic() - started, 1)
        return report


# --- LISTEN latency -------------------------------------------------------------------------------------

LATENCY = """
SELECT extract(epoch FROM m.sent_at - m.created_at) AS to_sent,
       extract(epoch FROM m.fired_at - (
           SELECT min(r.received_at) FROM receipts r WHERE r.message_id = m.id AND lower(r.status) = 'failed'
       )) AS to_fired
FROM messages m WHERE m.id = ANY($1::uuid[])
"""


def _p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


async def _window(w: world.World, loader: load.Loader, seconds: float, rate: float) -> dict[str, Any]:
    """Post one message at a time at `rate`/s for `seconds`; p50 of accept->sent and failure->fired."""
    before = set(loader.accepted.ids)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await loader.post_some(1)
        await asyncio.sleep(1 / rate)
    ids = [m for m in loader.accepted.ids if m not in before]
    await asyncio.sleep(2.0)  # the last ones get sent and fired (latency is measured in SQL, not here)
    conn = await w.db()
    rows = await conn.fetch(LATENCY, ids)
    sent = [float(r["to_sent"]) for r in rows if r["to_sent"] is not None]
    fired = [float(r["to_fired"]) for r in rows if r["to_fired"] is not None]
    return {
        "messages": len(ids),
        "accept_to_sent_p50_s": _p50(sent),
        "failure_to_fired_p50_s": _p50(fired),
        "sent_samples": len(sent),
        "fired_samples": len(fired),
    }


async def listen_latency(
    root: pathlib.Path, *, tree: pathlib.Path, mode: str = "fast", before_s: float = 10, after_s: float = 30
) -> dict[str, Any]:
    """accept->sent and failure->fired p50 before a `pg_ctl restart -m <mode>` and in the `after_s` after it.

    Half the messages are read, half get a failed receipt (an immediate fallback). Light load (5/s), one at a
    time, so the figures are wake-up latency, not queueing. Also reports LISTEN connections in
    pg_stat_activity before and after.
    """
    async with world.World(root / f"listen_latency_{mode}", daemon_tree=tree) as w:
        loader = load.Loader(w, rate=5, batch=1, digits=(0, 5))
        out: dict[str, Any] = {"mode": mode}
        out["listeners_before"] = await _listeners(w)
        out["before"] = await _window(w, loader, before_s, 5)
        await w.cluster.arun("restart", mode)
        w.note(f"pg_restart_{mode}")
        await w.all_up()
        out["after"] = await _window(w, loader, after_s, 5)
        out["listeners_after"] = await _listeners(w)
        out["listen_metric_after"] = await _listen_metric(w)
        out["daemon_deaths"] = len(w.deaths)
        return out


async def _listen_metric(w: world.World) -> float | None:
    """The daemon's own `fallback_listen_connected` gauge (None: a daemon without it)."""
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{w.daemons[0].url}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return None
    for line in text.splitlines():
        if line.startswith("fallback_listen_connected"):
            return float(line.split()[-1])
    return None


async def _listeners(w: world.World) -> int | None:
    conn = await w.db()
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        )
    except world.DB_ERRORS:
        return None
