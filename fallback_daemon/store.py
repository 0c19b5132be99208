"""The Postgres adapter: pool, transactions, LISTEN, and the translation of driver errors to StoreError."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import structlog

from fallback_daemon import errors

log = structlog.get_logger("fallback_daemon.store")

CHANNEL_SEND = "fallback_send"  # new messages to send
CHANNEL_DUE = "fallback_due"  # a fallback became due now


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's reset query (one round trip saved per use).

    asyncpg still rolls back a transaction left open. The reset query itself (unlock session advisory locks,
    UNLISTEN, RESET ALL) has nothing to undo here: pooled connections never LISTEN (`listen` has its own
    connection), never SET session variables (only SET LOCAL), and the one session advisory lock
    (migrate.migrate) is released by its own `finally`.
    """


@contextlib.contextmanager
def wrap_errors() -> Any:
    """Map driver and connection errors to StoreError (the most specific domain error)."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
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
                yield conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        with wrap_errors():
            async with self.pool.acquire() as conn:
                yield conn

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

    @contextlib.asynccontextmanager
    async def listen(self, channels: dict[str, asyncio.Event]) -> AsyncIterator[None]:
        """Set each channel's event on NOTIFY while inside the block (polling remains the backstop)."""
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn)

        def callback_for(event: asyncio.Event) -> Callable[..., None]:
            return lambda *_: event.set()

        try:
            for name, event in channels.items():
                await conn.add_listener(name, callback_for(event))
            yield
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)
