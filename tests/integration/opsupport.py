"""Helpers for the operator-surface tests: an in-process daemon with the sandbox, and ways to seed it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

from fallback_daemon import app, config

TOKEN = "ops-api-token-0123456789"
BODY: dict[str, Any] = {
    "ChannelType": "whatsapp",
    "Type": "message",
    "MessageType": "text",
    "From": "6580000000",
    "To": "6591234560",
    "Content": {"text": "hi"},
    "FallBackContent": "hi by sms",
    "FallBackDuration": 600,
}


@contextlib.asynccontextmanager
async def running_daemon(db_dsn: str, **env: str) -> AsyncIterator[app.Running]:
    """The whole daemon in-process (sandbox in suffix mode as Alibaba) on a free port; stopped on exit."""
    settings = config.load(
        {
            "DATABASE_URL": db_dsn,
            "FALLBACK_HTTP_PORT": "0",
            "FALLBACK_API_TOKEN": TOKEN,
            "FALLBACK_RECEIPT_TOKEN": "receipt-token-0123456789",
            "FALLBACK_LOG_LEVEL": "warning",
            **env,
        }
    )
    stop = asyncio.Event()
    started: asyncio.Future[app.Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(app.serve(settings, use_sandbox=True, started=started, stop=stop))
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield started.result()
    finally:
        stop.set()
        await task


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})


async def send(http: aiohttp.ClientSession, url: str, to: str, **extra: Any) -> str:
    """POST one message; returns our id."""
    async with http.post(f"{url}/v1/messages", json={**BODY, "To": to, **extra}) as resp:
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["id"])


async def wait_for(
    http: aiohttp.ClientSession,
    url: str,
    mid: str,
    predicate: Callable[[Mapping[str, Any]], bool],
    attempts: int = 300,
) -> dict[str, Any]:
    """Poll a message until `predicate(view)` holds (a bounded cross-task condition wait)."""
    view: dict[str, Any] = {}
    for _ in range(attempts):
        async with http.get(f"{url}/v1/messages/{mid}") as resp:
            view = await resp.json()
        if predicate(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition never held; last view: {view}")


def settled(view: Mapping[str, Any]) -> bool:
    """Nothing more will happen by itself soon: read/cancelled, or the SMS leg finished."""
    return view["fallback_state"] in ("cancelled", "sms_delivered", "sms_failed", "none") or (
        view["chat_state"] in ("delivered", "read") and view["fallback_state"] != "armed"
    )


async def seed_mixed(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """Messages of mixed outcomes, settled: read (To …0), failed → SMS (…5), rejected → SMS (…8)."""
    ids = {
        "read": await send(http, url, "6591234560"),
        "failed": await send(http, url, "6591234565"),
        "rejected": await send(http, url, "6591234568"),
    }
    for mid in ids.values():
        await wait_for(http, url, mid, settled)
    return ids
