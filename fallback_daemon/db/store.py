"""The Postgres adapter: pool, transactions, LISTEN, and the translation of driver errors to StoreError."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import typing
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import structlog

from fallback_daemon import metrics
from fallback_daemon.core import errors

log = structlog.get_logger("fallback_daemon.db.store")

CHANNEL_SEND = "fallback_send"  # new messages to send
CHANNEL_DUE = "fallback_due"  # a fallback became due now


_msgspec_encode = msgspec.json.Encoder().encode


def encode_jsonb(value: Any) -> str:
    """jsonb parameters through msgspec (5-10x faster than json.dumps; every event's detail is one).

    For what the daemon stores (str keys; str, int, float, bool, None, lists and dicts) the jsonb value is the
    same as json.dumps gave. Differences, none reachable from validated input: a lone surrogate is refused
    by msgspec and goes to json.dumps (whose escape Postgres refuses, as before); a NaN or an infinity is
    written as null (json.dumps wrote `NaN`, which Postgres refused); a datetime is written as ISO text
    (json.dumps raised).
    """
    try:
        return _msgspec_encode(value).decode()
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return json.dumps(value)


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=encode_jsonb, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's reset query (one round trip saved per use).

    asyncpg still rolls back a transaction left open. The reset query itself (unlock session advisory locks,
    UNLISTEN, RESET ALL) has nothing to undo here: pooled connections never LISTEN (`listen` has its own
    connection), never SET session variables (only SET LOCAL), and the one session advisory lock
    (migrate.migrate) is released by its own `finally`.
    """


# What the driver raises when the server goes away: every one of these is weather (a restart, a failover, a
# reset connection), retried by whoever met it. InternalClientError is asyncpg's "cannot switch to state …;
# another operation is in progress" on a connection the server terminated mid-query (issue 9: it used to end
# the TaskGroup and the process). OSError covers refused/reset connections and TimeoutError.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions._base.InternalClientError,
    OSError,
)


@contextlib.contextmanager
def wrap_errors() -> Any:
    """Map driver and connection errors to StoreError (the most specific domain error)."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise errors.StoreError(f"database error: {type(exc).__name__}: {exc}") from exc


class Store:
    """An asyncpg pool plus helpers; the only place that holds database connections."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2, max_size: int = 10) -> Store:
        with wrap_errors():
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, init=_init, reset=_keep_session
            )
        return cls(pool, dsn)

    async def close(self) -> None:
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction; commits on exit, rolls back on error."""
        with wrap_errors():
            async with self.pool.acquire() as conn, conn.transaction():
                yield typing.cast(asyncpg.Connection, conn)  # a pool proxy: the same API as a Connection

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        with wrap_errors():
            async with self.pool.acquire() as conn:
                yield typing.cast(asyncpg.Connection, conn)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        with wrap_errors():
            return await self.pool.fetch(query, *args)

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        with wrap_errors():
            return await self.pool.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: object) -> Any:
        with wrap_errors():
            return await self.pool.fetchval(query, *args)

    async def execute(self, query: str, *args: object) -> str:
        with wrap_errors():
            return await self.pool.execute(query, *args)

    async def listen(
        self,
        channels: dict[str, asyncio.Event],
        stop: asyncio.Event,
        *,
        health: dict[str, Any] | None = None,
        retry_cap_s: float = 5.0,
    ) -> None:
        """Keep a LISTEN connection up until `stop`: set each channel's event on NOTIFY.

        Supervised: when the connection drops (server restart, failover, reset) it reconnects with backoff and
        then sets every event once, so the loops do a catch-up claim for whatever was notified while it was
        down (polling remains the backstop meanwhile). `health["listen"]` says whether it is up (/readyz).
        """
        health = health if health is not None else {}
        attempt = 0
        while not stop.is_set():
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncio.wait_for(asyncpg.connect(self.dsn), timeout=10)
                conn.add_termination_listener(functools.partial(_set_on_terminate, lost))
                for name, event in channels.items():
                    await conn.add_listener(name, _setter(event))
                if attempt:
                    log.info("listen_reconnected", attempts=attempt)
                attempt = 0
                health["listen"] = True
                metrics.listen_connected.set(1)
                for event in channels.values():  # catch up on anything notified while we were not listening
                    event.set()
                await _first(stop.wait(), lost.wait(), _watch(conn, lost))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure to (re)connect is retried: wake-ups are an optimisation
                log.warning("listen_failed", error=f"{type(exc).__name__}: {exc}", attempt=attempt)
            finally:
                health["listen"] = False
                metrics.listen_connected.set(0)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=2)
            if not stop.is_set():
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(retry_cap_s, 0.1 * 2**attempt))


def _set_on_terminate(event: asyncio.Event, _conn: object) -> None:
    event.set()


def _setter(event: asyncio.Event) -> Callable[..., None]:
    return lambda *_: event.set()


async def _watch(conn: asyncpg.Connection, lost: asyncio.Event, every_s: float = 2.0) -> None:
    """Probe the LISTEN connection: a server that vanished without a FIN is noticed within seconds."""
    while not lost.is_set():
        await asyncio.sleep(every_s)
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), timeout=every_s * 2)
        except Exception:  # any failure means the connection is gone: reconnect
            lost.set()


async def _first(*aws: Any) -> None:
    """Wait until the first of the awaitables completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
