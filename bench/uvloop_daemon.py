"""`python -m bench.uvloop_daemon run ...`: the daemon's CLI under uvloop, for the bench's uvloop lever.

The daemon itself does not depend on uvloop; `BENCH_DAEMON_LOOP=uvloop python -m bench ...` starts every
daemon process through this module instead of `python -m fallback_daemon`, so the same scenario can be
measured on both loops without editing the daemon. Needs `.venv/bin/pip install uvloop` (not a dependency).
"""

from __future__ import annotations

import sys

import uvloop

from fallback_daemon import cli

if __name__ == "__main__":
    uvloop.install()  # asyncio.run() in cli.main() then makes a uvloop loop
    sys.exit(cli.main())
