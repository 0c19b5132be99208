"""Receipts/s through MNS: the daemon's MnsQueue + QueueConsumer (Alicom mode, QueryTokenForMnsQueue tokens)
draining a sandbox MNS queue into Postgres, for several poller counts.

    .venv/bin/python -m bench.mns_ingest [--receipts 20000] [--pollers 2 4 8] [--batch 16]

The sandbox runs as its own process (as Alibaba's MNS is remote); Postgres is DATABASE_URL or the embedded
server. Each run gets a fresh database holding one accepted message per receipt, so every receipt is a real
state transition (stored, deduplicated, applied, event written), then deleted from the queue after commit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import pathlib
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import aiohttp
import asyncpg

from fallback_daemon import config, logs
from fallback_daemon.core import model, validation
from fallback_daemon.db import embedded, migrate, store
from fallback_daemon.engine import consumers, service
from fallback_daemon.providers import dybaseapi, mns

ROOT = pathlib.Path(__file__).resolve().parent.parent
AK, SK = "bench-mns-ak", "bench-mns-secret-0123"
UID = "1234567890"
QUEUE = f"Alicom-Queue-{UID}-ChatAppStatus"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.mns_ingest", description=__doc__.splitlines()[0])
    p.add_argument("--receipts", type=int, default=20_000)
    p.add_argument("--pollers", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--batch", type=int, default=16)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def sandbox_process() -> AsyncIterator[str]:
    """`fallback-daemon sandbox` delivering into MNS; yields its URL."""
    port = free_port()
    log = (ROOT / "bench" / "results" / "logs").resolve()
    log.mkdir(parents=True, exist_ok=True)
    out = (log / "mns-ingest-sandbox.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FALLBACK_", "ALIBABA_CLOUD_"))}
    args = [
        "sandbox",
        "--port",
        str(port),
        "--receipt-delivery",
        "mns",
        "--mns-uid",
        UID,
        "--access-key-id",
        AK,
        "--access-key-secret",
        SK,
        "--mns-visibility-timeout-s",
        "60",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fallback_daemon", *args, env=env, stdout=out, stderr=out, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/sandbox/stats") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the sandbox did not start")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        out.close()


@contextlib.asynccontextmanager
async def fresh_database(admin_dsn: str) -> AsyncIterator[str]:
    from tests.conftest import with_database  # one helper, shared with the tests

    name = f"fd_bench_mns_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        dsn = with_database(admin_dsn, name)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def accept(svc: service.Service, n: int) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for start in range(0, n, 1000):
        reqs = [
            validation.validate_send(
                {
                    "ChannelType": "whatsapp",
                    "Type": "template",
                    "TemplateCode": "t",
                    "Language": "en",
                    "From": "6580000000",
                    "To": f"65{i:08d}",
                    "FallBackContent": "sms",
                    "FallBackDuration": 600,
                }
            )
            for i in range(start, min(n, start + 1000))
        ]
        ids += [a.id for a in await svc.accept(reqs, [None] * len(reqs))]
    await svc.db.execute("ANALYZE")
    return ids


async def fill(queue_url: str, session: aiohttp.ClientSession, ids: list[uuid.UUID]) -> None:
    """BatchSendMessage (16 per request) with the queue's temporary credentials, 8 requests in flight."""
    client = dybaseapi.DybaseapiClient(
        session, endpoint=queue_url, access_key_id=AK, access_key_secret=config.Secret(SK)
    )
    creds = dybaseapi.TokenCredentials(client, queue_name=QUEUE, message_type="ChatAppStatus")
    path = f"/queues/{QUEUE}/messages"

    async def send(chunk: list[uuid.UUID]) -> None:
        now_ms = int(time.time() * 1000)
        reports = [
            {
                "MessageId": f"pid-{mid.hex}",
                "TaskId": str(mid),
                "Status": "Delivered",
                "From": "6580000001",
                "To": "6500000000",
                "Timestamp": now_ms,
                "MsgFrameType": "template",
            }
            for mid in chunk
        ]
        items = "".join(
            f"<Message><MessageBody>{base64.b64encode(json.dumps(r).encode()).decode()}"
            "</MessageBody></Message>"
            for r in reports
        )
        xml = f'<?xml version="1.0" encoding="UTF-8"?><Messages xmlns="{mns.XMLNS}">{items}</Messages>'
        body = xml.encode()
        headers = mns.signed_headers(
            await creds.get(), method="POST", resource=path, date=mns.http_date(time.time()), body=body
        )
        async with session.post(f"{queue_url}{path}", data=body, headers=headers) as r:
            assert r.status == 201, await r.text()

    chunks = [ids[i : i + 16] for i in range(0, len(ids), 16)]
    slots = asyncio.Semaphore(8)

    async def bounded(chunk: list[uuid.UUID]) -> None:
        async with slots:
            await send(chunk)

    await asyncio.gather(*(bounded(c) for c in chunks))


async def one_run(admin_dsn: str, sb_url: str, receipts: int, pollers: int, batch: int) -> dict[str, float]:
    async with (
        fresh_database(admin_dsn) as dsn,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session,
    ):
        db = await store.Store.connect(dsn, max_size=10)
        try:
            svc = service.Service(db)
            ids = await accept(svc, receipts)
            await fill(sb_url, session, ids)
            client = dybaseapi.DybaseapiClient(
                session, endpoint=sb_url, access_key_id=AK, access_key_secret=config.Secret(SK)
            )
            creds = dybaseapi.TokenCredentials(client, queue_name=QUEUE, message_type="ChatAppStatus")
            queue = mns.MnsQueue(
                session, endpoint=sb_url, queue_name=QUEUE, kind=model.ReceiptKind.CHATAPP, credentials=creds
            )
            consumer = consumers.QueueConsumer(queue, svc, pollers=pollers, batch=batch, wait_s=1)
            stop = asyncio.Event()
            started = time.perf_counter()
            task = asyncio.create_task(consumer.run(stop), name="bench-mns-consumer")
            try:
                while True:  # the queue is drained when every receipt was committed and deleted
                    async with session.get(f"{sb_url}/sandbox/mns") as r:
                        if (await r.json())["queues"][QUEUE]["messages"] == 0:
                            break
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - started
            finally:
                stop.set()
                await task
            applied = await db.fetchval("SELECT count(*) FROM receipts WHERE applied_at IS NOT NULL")
            delivered = await db.fetchval("SELECT count(*) FROM messages WHERE chat_state = 'delivered'")
            assert applied == delivered == receipts, (applied, delivered)
        finally:
            await db.close()
    return {"pollers": pollers, "seconds": elapsed, "per_s": receipts / elapsed, "tokens": creds.fetched}


async def main(args: argparse.Namespace) -> int:
    logs.configure(fmt="console", level="warning")
    admin_dsn = os.environ.get("DATABASE_URL") or await embedded.start(ROOT / ".data" / "bench")
    load = os.getloadavg()[0]
    print(f"MNS ingest: {args.receipts} ChatAppStatus receipts, batch {args.batch}, load {load:.2f}")
    print(f"{'pollers':>8} {'seconds':>8} {'receipts/s':>11}")
    async with sandbox_process() as sb_url:
        for pollers in args.pollers:
            row = await one_run(admin_dsn, sb_url, args.receipts, pollers, args.batch)
            print(f"{row['pollers']:>8} {row['seconds']:>8.2f} {row['per_s']:>11.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse(None))))
