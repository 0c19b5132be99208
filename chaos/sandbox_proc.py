"""`python -m chaos.sandbox_proc '<json>'`: the sandbox with a full `SandboxConfig` (journal file, push
retries), which the `sandbox` CLI does not all expose. The harness runs it as its own process."""

from __future__ import annotations

import asyncio
import json
import sys

from fallback_daemon import sandbox


def main() -> None:
    spec = json.loads(sys.argv[1])
    asyncio.run(sandbox.run_forever(sandbox.SandboxConfig(**spec["config"]), "127.0.0.1", spec["port"]))


if __name__ == "__main__":
    main()
