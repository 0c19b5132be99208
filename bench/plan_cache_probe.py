"""`python -m bench.plan_cache_probe [--singles N] [--with-fk] [--then SQL]`: batch accepts after single ones.

Session 7 found batch accepts taking seconds in the accept bench while the daemon idled; this probe is how the
cause was pinned down. On one connection (one plan cache) of a fresh database it accepts `--singles`
single messages through `Service.accept` (keyed, as the bench's clients send them), optionally runs `--then`
(say `ANALYZE messages`, or `SET plan_cache_mode = force_custom_plan`), then times six accepts of 500.

`--with-fk` first puts back the foreign key migration 0010 dropped (message_events.message_id -> messages).
With it, the batches grow by ~20 ms each (the key's check runs a plan the connection cached while the table
was nearly empty, which reads the whole table); with `--then "ANALYZE messages"`, or without the key, they
stay flat.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from bench import harness, replicas
from bench.__main__ import DATA_DIR
from fallback_daemon.core import validation
from fallback_daemon.db import embedded, store
from fallback_daemon.engine import service

FK = (
    "ALTER TABLE message_events ADD CONSTRAINT message_events_message_id_fkey"
    " FOREIGN KEY (message_id) REFERENCES messages(id) ON DELETE CASCADE"
)


async def main(args: argparse.Namespace) -> None:
    dsn = await embedded.start(DATA_DIR)
    b = harness.Bench(dsn, quick=False, log_dir=harness.RESULTS / "logs" / "plan_cache_probe", prefix="probe")
    db_dsn = await b.fresh_db("plan_cache")
    db = await store.Store.connect(db_dsn, min_size=1, max_size=1)  # one connection: one plan cache
    try:
        if args.with_fk:
            await db.execute(FK)
        svc = service.Service(db)
        for i in range(args.singles):
            req = validation.validate_send(replicas.body(i))
            await svc.accept([req], [f"single:k{i}"], request_hash="h")
        if args.then:
            await db.execute(args.then)
        batch = [validation.validate_send(replicas.body(1_000_000 + k)) for k in range(500)]
        for j in range(6):
            started = time.perf_counter()
            await svc.accept(batch, [None] * len(batch))
            print(f"batch {j}: {(time.perf_counter() - started) * 1000:.0f} ms", flush=True)
    finally:
        await db.close()
        await b.drop_databases()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.plan_cache_probe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--with-fk", action="store_true", help="put back the key migration 0010 dropped")
    parser.add_argument("--then", default="", help="SQL run on the connection after the singles")
    asyncio.run(main(parser.parse_args(sys.argv[1:])))
