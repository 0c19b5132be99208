"""`fallback-daemon demo`: daemon + sandbox + a stream of demo messages with mixed outcomes and a live view.

Outcomes come from the sandbox's suffix table (last digit of To): 0-2 read, 3-4 delivered, 5 failed,
6 silent, 7 late, 8 rejected, 9 early receipt. FallBackDuration is shortened by the sandbox-only timer scale.
The live view and the summary count only the messages this run submitted (a second demo on the same
database summarises its own run).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
import uuid
from typing import Any

import aiohttp

from fallback_daemon import app, config
from fallback_daemon.db import sql

RULES = ("undelivered", "undelivered", "unread", "sentFailed")
CHAT = ("accepted", "sending", "unknown", "sent", "delivered", "read", "failed", "send_failed")
FALLBACK = (
    "none",
    "armed",
    "held",
    "firing",
    "sms_sent",
    "sms_delivered",
    "sms_failed",
    "cancelled",
    "suppressed",
)


def demo_body(i: int) -> dict[str, Any]:
    return {
        "ChannelType": "whatsapp",
        "Type": "message",
        "MessageType": "text",
        "From": "6580000000",
        "To": f"659{i:07d}",
        "Content": {"text": f"Your order #{i} has shipped"},
        "FallBackContent": f"Your order #{i} has shipped (SMS)",
        "FallBackDuration": 60,
        "FallBackRule": RULES[i % len(RULES)],
    }


class View:
    """A live table of counts by state (redrawn in place on a TTY, printed periodically otherwise)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.lines = 0
        self.last_print = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.tty and not force and now - self.last_print < 3:
            return
        self.last_print = now
        if self.tty and self.lines:
            sys.stdout.write(f"\x1b[{self.lines}F\x1b[J")
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        self.lines = text.count("\n") + 1


async def snapshot(running: app.Running, ids: list[uuid.UUID]) -> dict[str, Any]:
    """Counts by state of this run's messages (`ids`), double deliveries, and how many are in flight."""
    chat: dict[str, int] = dict.fromkeys(CHAT, 0)
    fallback: dict[str, int] = dict.fromkeys(FALLBACK, 0)
    double = pending = 0
    for r in await running.svc.db.fetch(sql.queries["demo_counts"], ids):
        chat[r["chat_state"]] += r["n"]
        fallback[r["fallback_state"]] += r["n"]
        double += r["double_delivered"]
        pending += r["pending"]
    return {"chat": chat, "fallback": fallback, "double": double, "pending": pending}


def render(snap: dict[str, Any], submitted: int, count: int, started: float, phase: str) -> str:
    chat = "  ".join(f"{k} {v}" for k, v in snap["chat"].items())
    fb = "  ".join(f"{k} {v}" for k, v in snap["fallback"].items())
    return (
        f"[{time.monotonic() - started:6.1f}s] {phase}: submitted {submitted}/{count}, "
        f"still in flight {snap['pending']}\n"
        f"  chat leg:     {chat}\n"
        f"  fallback leg: {fb}\n"
        f"  double deliveries (success after the SMS fired): {snap['double']}"
    )


async def run(
    settings: config.Settings, *, count: int, rate: float, timer_scale: float, stay_up: bool
) -> int:
    settings = dataclasses.replace(settings, sandbox_timer_scale=timer_scale)
    stop = asyncio.Event()
    started: asyncio.Future[app.Running] = asyncio.get_running_loop().create_future()
    daemon = asyncio.create_task(
        app.serve(settings, use_sandbox=True, started=started, stop=stop), name="daemon"
    )
    running = await _first(started, daemon)
    token = running.settings.api_token.reveal()
    print(f"daemon: {running.url}   sandbox: {running.sandbox_url}   API token: {token}")
    print(
        f"sending {count} messages at {rate:.0f}/s; FallBackDuration 60 s runs as {60 * timer_scale:.0f} s\n"
    )
    view = View()
    t0 = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    example = ""
    ids: list[uuid.UUID] = []
    run_key = uuid.uuid4().hex[:12]  # idempotency keys unique to this run
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(count):
            async with http.post(
                f"{running.url}/v1/messages",
                json=demo_body(i),
                headers={"Idempotency-Key": f"demo-{run_key}-{i}"},
            ) as resp:
                resp.raise_for_status()
                ids.append(uuid.UUID((await resp.json())["id"]))
                if i == min(count - 1, 5):  # a message whose sandbox outcome is "failed" (To ends in 5)
                    example = str(ids[-1])
            view.show(render(await snapshot(running, ids), i + 1, count, t0, "sending"))
            await asyncio.sleep(1 / rate)  # pacing the demo's own submissions, not synchronisation
        while (snap := await snapshot(running, ids))["pending"] and not daemon.done():
            view.show(render(snap, count, count, t0, "waiting for receipts and timers"))
            await asyncio.sleep(0.5)
        async with http.post(f"{running.sandbox_url}/sandbox/release-late") as resp:
            released = (await resp.json()).get("released", 0)
        view.show(
            render(await snapshot(running, ids), count, count, t0, f"released {released} late receipts")
        )
        await asyncio.sleep(2)  # give the late receipts time to arrive before the summary
    snap = await snapshot(running, ids)
    view.show(render(snap, count, count, t0, "done"), force=True)
    fired = sum(snap["fallback"][k] for k in ("firing", "sms_sent", "sms_delivered", "sms_failed"))
    print(
        f"\nsummary of this run: {count} messages; {fired} SMS fallbacks fired;"
        f" {snap['fallback']['cancelled']} cancelled by a timely receipt; {snap['double']} double deliveries."
    )
    print(f"look around:  curl -H 'Authorization: Bearer {token}' {running.url}/v1/messages/{example}")
    if stay_up:
        print("the API stays up; Ctrl-C to stop.")
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()
    stop.set()
    await daemon
    return 0


async def _first(started: asyncio.Future[app.Running], daemon: asyncio.Task[None]) -> app.Running:
    waiting: list[asyncio.Future[Any]] = [started, daemon]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        daemon.result()  # raises the start-up error
        raise RuntimeError("daemon stopped before it started")
    return started.result()
