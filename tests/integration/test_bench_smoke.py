"""The benchmark harness runs end to end in its quick mode and writes its report (timings are not checked)."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIOS = [
    "1 timer burst",
    "2 steady load",
    "3 receipt ingest",
    "4 accept API",
    "5 scale of state",
    "6 replicas",
]


async def test_bench_quick_completes_and_reports(admin_dsn: str, tmp_path: pathlib.Path) -> None:
    """`python -m bench --quick` exits 0 and its JSON report holds all six scenarios with their figures."""
    out = tmp_path / "quick.json"
    env = {**os.environ, "DATABASE_URL": admin_dsn}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--out",
        str(out),
        "--prefix",
        f"fd_bench_{os.getpid()}",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    text, _ = await asyncio.wait_for(proc.communicate(), 280)
    assert proc.returncode == 0, text.decode(errors="replace")[-4000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert [s["scenario"] for s in report["scenarios"]] == SCENARIOS
    for scenario in report["scenarios"]:
        assert scenario["metrics"], scenario["scenario"]
        assert all(
            {"name", "unit", "daemon", "raw", "ratio", "target", "ok"} <= m.keys()
            for m in scenario["metrics"]
        )
    assert report["machine"]["cores"]
    assert report["machine"]["postgres"]
    assert "timer lateness p99" in {m["name"] for m in report["scenarios"][1]["metrics"]}
