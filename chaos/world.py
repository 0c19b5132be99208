"""One scenario's world: a Postgres cluster of its own, the sandbox, N supervised daemon replicas, the
receipt balancer (the load balancer in front of the replicas that Alibaba's callbacks hit), and the timer
compressor (FallBackDuration cannot go below 60 s, so armed timers are pulled in to `timer_s` after the send).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pathlib
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from chaos import pg, procs

# Ordered and SKIP LOCKED: never waits on (or deadlocks with) the daemon's own row locks.
COMPRESS = """
UPDATE messages m SET due_at = greatest(now(), coalesce(m.sent_at, m.created_at) + $1 * interval '1 second')
WHERE m.id IN (
    SELECT id FROM messages
    WHERE fallback_state = 'armed' AND due_at IS NOT NULL
      AND due_at > greatest(now(), coalesce(sent_at, created_at) + $1 * interval '1 second')
    ORDER BY id FOR UPDATE SKIP LOCKED)
"""

# What a restarting or failing-over server does to a client connection (InternalClientError: asyncpg's "cannot
# switch to state …; another operation is in progress" on a connection the server terminated).
DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# Short leases so an interrupted send or firing is recovered within a run, not after the 2-minute default.
DAEMON_ENV = {
    "FALLBACK_FIRING_LEASE_S": "8",
    "FALLBACK_SEND_TIMEOUT_S": "3",
    "FALLBACK_SHUTDOWN_GRACE_S": "5",
    "FALLBACK_TIMER_MAX_SLEEP_S": "0.5",
    # Reconciliation of ambiguous sends (ListChatappMessage needs a CustSpaceId; the sandbox lists a send at
    # once, so the first lookup comes after 3 s instead of the 60 s a real provider's listing may need).
    # A daemon that predates these settings ignores them.
    "FALLBACK_CAMS_CUST_SPACE_ID": "chaos-space",
    "FALLBACK_RECONCILE_DELAY_S": "3",
}


class Balancer:
    """Receipt pushes (`/chatapp`, `/sms`) forwarded to the next live replica; 502 when none answers."""

    def __init__(self, daemons: list[procs.Daemon]) -> None:
        self.daemons = daemons
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._next = itertools.count()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{kind}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        body = await request.read()
        kind = request.match_info["kind"]
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        for _ in range(len(self.daemons)):
            daemon = self.daemons[next(self._next) % len(self.daemons)]
            if not daemon.child.alive:
                continue
            url = f"{daemon.url}/receipts/{procs.RECEIPT_TOKEN}/{kind}"
            try:
                async with self._http.post(url, data=body, headers=headers) as resp:
                    return web.Response(status=resp.status, body=await resp.read(), headers=headers)
            except (aiohttp.ClientError, TimeoutError):
                continue
        return web.Response(status=502, text="no replica answered")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()


class World:
    """Everything one scenario runs against; `faults` counts what was injected, by kind."""

    def __init__(
        self,
        root: pathlib.Path,
        *,
        replicas: int = 1,
        timer_s: float = 5.0,
        daemon_tree: pathlib.Path | None = None,
        daemon_env: Mapping[str, str] | None = None,
        seed: int = 0,
        dsn: str | None = None,
    ) -> None:
        self.root = root
        self.replicas = replicas
        self.timer_s = timer_s
        self.daemon_tree = daemon_tree or procs.DAEMON_TREE
        self.daemon_env = {**DAEMON_ENV, **(daemon_env or {})}
        self.rng = random.Random(seed)
        self.cluster = pg.Cluster(root / "pg", procs.free_port())
        self.own_cluster = dsn is None  # else the caller's servers (the failover test's primary and standby)
        self.dsn = dsn or ""
        self.daemons: list[procs.Daemon] = []
        self.balancer = Balancer(self.daemons)
        self.sandbox = procs.Sandbox(
            port=procs.free_port(), callback_base=self.balancer.url, log_dir=root / "logs"
        )
        self.faults: dict[str, int] = {}
        self.fault_log: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self._compressor: asyncio.Task[None] | None = None
        self.conn: asyncpg.Connection | None = None

    def note(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.fault_log.append((round(time.monotonic() - self.t0, 2), kind))

    @property
    def deaths(self) -> list[procs.Death]:
        return [d for daemon in self.daemons for d in daemon.deaths]

    def live(self) -> list[procs.Daemon]:
        return [d for d in self.daemons if d.child.alive]

    async def __aenter__(self) -> World:
        try:
            return await self._enter()
        except BaseException:
            await self.__aexit__()
            raise

    async def _enter(self) -> World:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        if self.own_cluster:
            await asyncio.to_thread(self.cluster.init)
            await self.cluster.arun("start")
            self.dsn = await self.cluster.create_database("chaos")
        await self.balancer.start()
        await self.sandbox.start()
        for n in range(self.replicas):
            self.daemons.append(
                procs.Daemon(
                    f"daemon-{n + 1}",
                    dsn=self.dsn,
                    port=procs.free_port(),
                    sandbox_url=self.sandbox.url,
                    log_dir=self.root / "logs",
                    tree=self.daemon_tree,
                    env=self.daemon_env,
                )
            )
        for daemon in self.daemons:
            await daemon.start()
        for daemon in self.daemons:
            if not await daemon.ready():
                raise RuntimeError(f"{daemon.name} did not become ready: {daemon.child.tail()}")
        self._compressor = asyncio.create_task(self._compress(), name="timer-compressor")
        self.t0 = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._compressor is not None:
            self._compressor.cancel()
            with contextlib.suppress(asyncio.CancelledError, *DB_ERRORS):
                await self._compressor
        for daemon in self.daemons:
            await daemon.close()
        await self.sandbox.close()
        await self.balancer.close()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
        if self.own_cluster:
            await asyncio.to_thread(self.cluster.destroy)

    async def db(self) -> asyncpg.Connection:
        """The harness's own connection for checks (re-opened after a restart took it away)."""
        self.conn = await self._reconnect(self.conn)
        return self.conn

    async def _reconnect(self, conn: asyncpg.Connection | None) -> asyncpg.Connection:
        if conn is not None and not conn.is_closed():
            try:
                await conn.fetchval("SELECT 1")
                return conn
            except DB_ERRORS:
                conn.terminate()
        for _ in range(300):
            try:
                return await asyncpg.connect(self.dsn)
            except DB_ERRORS:
                await asyncio.sleep(0.1)
        raise RuntimeError("the database did not come back")

    async def _compress(self) -> None:
        conn: asyncpg.Connection | None = None  # its own: a connection runs one operation at a time
        try:
            while True:
                await asyncio.sleep(0.5)
                # The database may be down (a restart fault): try again next round.
                with contextlib.suppress(*DB_ERRORS, RuntimeError):
                    conn = await self._reconnect(conn)
                    await conn.execute(COMPRESS, self.timer_s)
        finally:
            if conn is not None:
                conn.terminate()

    async def all_up(self, timeout_s: float = 90) -> None:
        """Wait until the sandbox and every replica answer (the supervisors restart dead ones)."""
        if not self.sandbox.child.alive:
            await self.sandbox.start()
        deadline = time.monotonic() + timeout_s
        for daemon in self.daemons:
            while not await daemon.ready(max(1.0, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{daemon.name} never came back: {daemon.child.tail()}")
                await asyncio.sleep(0.2)

    def summary(self) -> dict[str, Any]:
        return {
            "faults": dict(self.faults),
            "fault_log": self.fault_log,
            "deaths": [d.to_json() for d in self.deaths],
            "starts": {d.name: d.starts for d in self.daemons},
        }


@contextlib.asynccontextmanager
async def world(root: pathlib.Path, **kwargs: Any) -> AsyncIterator[World]:
    async with World(root, **kwargs) as w:
        yield w
