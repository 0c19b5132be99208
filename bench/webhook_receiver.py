"""`python -m bench.webhook_receiver PORT`: the webhook receiver of the `steady-webhooks` scenario.

Its own process (so neither the load generator's event loop nor the daemon's pays for it; it still shares
the machine's cores): `POST /hook` answers 204 and counts the delivery with its lag (arrival minus the
payload's `timestamp`, the moment the state changed); `GET /stats` returns the counts and lag percentiles,
`POST /reset` forgets them. Prints `ready` once listening. Signatures are not checked: verifying them is the
application's cost, not the daemon's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import sys
import time

from aiohttp import web

received: list[float] = []  # lag (s) of each delivery, in arrival order
ids: set[str] = set()  # webhook-id values seen (a repeat is a retry or a redelivery)
repeats = 0


async def hook(request: web.Request) -> web.Response:
    global repeats
    body = await request.read()
    now = time.time()
    msg_id = request.headers.get("webhook-id", "")
    if msg_id in ids:
        repeats += 1
    ids.add(msg_id)
    try:
        stamp = json.loads(body)["timestamp"]
        at = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
        received.append(now - at)
    except (ValueError, KeyError, TypeError):
        received.append(math.nan)
    return web.Response(status=204)


def _pct(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


async def stats(request: web.Request) -> web.Response:
    lags = sorted(x for x in received if x == x)
    return web.json_response(
        {
            "received": len(received),
            "unique": len(ids),
            "repeats": repeats,
            "lag_p50_s": _pct(lags, 50),
            "lag_p99_s": _pct(lags, 99),
            "lag_max_s": lags[-1] if lags else None,
        }
    )


async def reset(request: web.Request) -> web.Response:
    global repeats
    received.clear()
    ids.clear()
    repeats = 0
    return web.Response(status=204)


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
