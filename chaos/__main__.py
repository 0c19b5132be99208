"""`python -m chaos`: the fault campaign. Each scenario gets a fresh Postgres cluster, sandbox and replicas;
the table (one row per scenario) is printed and written to JSON with every flagged message's timeline.

    python -m chaos                          # the long campaign (~12 min on 2 cores)
    python -m chaos --quick                  # 20 s per scenario, 15 s outage
    python -m chaos --only kill9 sigterm     # some scenarios
    python -m chaos --tree /tmp/before       # run another checkout's daemon (the sandbox stays this one's)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from typing import Any

from chaos import check, procs, scenarios

COLUMNS = (
    ("messages", "msgs"),
    ("faults", "faults"),
    ("lost", "lost"),
    ("missed_fallbacks", "missed"),
    ("doubled_sms", "2xSMS"),
    ("doubled_chat", "2xchat"),
    ("fired_after_success", "late-fire"),
    ("daemon_deaths", "deaths"),
    ("stuck", "stuck"),
    ("unknown", "unknown"),
    ("unknown_never_sent", "unk-unsent"),
    ("held", "held"),
    ("held_never_sent", "held-unsent"),
    ("extra_fallbacks", "extra"),
    ("settle_s", "settle s"),
)


def table(reports: list[check.Report]) -> str:
    def cell(rep: check.Report, field: str) -> str:
        value = getattr(rep, field)
        if field == "faults":
            return str(sum(value.values()))
        return str(value)

    header = ["scenario", *(label for _, label in COLUMNS), "ok"]
    rows = [[r.scenario, *(cell(r, f) for f, _ in COLUMNS), "yes" if r.ok else "NO"] for r in reports]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(x.rjust(w) for x, w in zip(line, widths, strict=True)) for line in [header, *rows]]
    return "\n".join(lines)


def latency_table(lat: dict[str, Any]) -> str:
    b, a = lat["before"], lat["after"]
    return (
        f"LISTEN latency (pg_ctl restart -m {lat['mode']}): accept->sent p50 {b['accept_to_sent_p50_s']} s "
        f"before, {a['accept_to_sent_p50_s']} s in the 30 s after; failure->fired p50 "
        f"{b['failure_to_fired_p50_s']} s before, {a['failure_to_fired_p50_s']} s after; LISTEN connections "
        f"{lat['listeners_before']} -> {lat['listeners_after']} (a connection whose last query was LISTEN; "
        f"the daemon's fallback_listen_connected after: {lat.get('listen_metric_after')}); "
        f"daemon deaths {lat['daemon_deaths']}"
    )


async def main(args: argparse.Namespace, root: pathlib.Path, tree: pathlib.Path) -> int:
    duration = 20.0 if args.quick else args.duration_s
    outage = 15.0 if args.quick else args.outage_s
    chosen = [
        s
        for s in scenarios.campaign(outage_s=outage, duration_s=duration)
        if not args.only or any(s.name.startswith(o) for o in args.only)
    ]
    print(f"chaos: daemon tree {tree}, work folder {root} (logs under <scenario>/logs)", flush=True)
    reports: list[check.Report] = []
    errors: dict[str, str] = {}
    latency: dict[str, Any] = {}
    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = (
        pathlib.Path(args.out)
        if args.out
        else procs.ROOT / "chaos" / "results" / f"{args.label}-{stamp}.json"
    )

    def save() -> None:  # after every scenario: a campaign cut short keeps what it measured
        out.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "label": args.label,
            "tree": str(tree),
            "seconds": round(time.monotonic() - started, 1),
            "load": os.getloadavg(),
            "scenarios": [r.to_json() for r in reports],
            "errors": errors,
            "listen_latency": latency,
        }
        out.write_text(json.dumps(body, indent=2, default=str))

    for n, scenario in enumerate(chosen):
        print(f"-- {scenario.name} ({scenario.duration_s:.0f} s, {scenario.replicas} replica(s))", flush=True)
        try:
            rep = await scenarios.run(
                scenario, root, tree=tree, timer_s=args.timer_s, settle_s=args.settle_s, seed=n
            )
        except Exception as exc:  # one broken scenario must not lose the other scenarios' figures
            errors[scenario.name] = f"{type(exc).__name__}: {exc}"
            print(f"   harness error: {errors[scenario.name]}", flush=True)
            continue
        reports.append(rep)
        print(table([rep]), flush=True)
        save()
    if not args.no_latency:
        for mode in ("fast", "immediate"):
            latency[mode] = await scenarios.listen_latency(root, tree=tree, mode=mode, after_s=30)
            print(latency_table(latency[mode]), flush=True)
            save()
    print("\n" + table(reports))
    for lat in latency.values():
        print(latency_table(lat))
    save()
    print(f"written {out}")
    return 0 if all(r.ok for r in reports) and not errors else 1


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m chaos", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    p.add_argument("--quick", action="store_true", help="20 s per scenario, a 15 s outage")
    p.add_argument("--only", nargs="*", default=[], help="scenario name prefixes")
    p.add_argument("--duration-s", type=float, default=60.0, help="load and faults per scenario")
    p.add_argument("--outage-s", type=float, default=60.0, help="how long the provider stays down")
    p.add_argument("--timer-s", type=float, default=5.0, help="armed timers fire this long after the send")
    p.add_argument("--settle-s", type=float, default=240.0, help="most time allowed to settle")
    p.add_argument("--tree", default=str(procs.DAEMON_TREE), help="the checkout whose daemon runs")
    p.add_argument("--label", default="run", help="name of the JSON result file")
    p.add_argument("--out", default=None, help="JSON result path")
    p.add_argument("--no-latency", action="store_true", help="skip the LISTEN latency measurement")
    return p.parse_args(argv)


def cli(argv: list[str]) -> int:
    args = parse(argv)
    root = pathlib.Path(tempfile.mkdtemp(prefix="chaos-"))
    root.chmod(0o755)  # the Postgres system user must reach the clusters under it
    return asyncio.run(_cancellable(main(args, root, pathlib.Path(args.tree).absolute())))


async def _cancellable(run: Coroutine[Any, Any, int]) -> int:
    """SIGTERM cancels the campaign like Ctrl-C does, so every world still stops its processes and servers."""
    task = asyncio.ensure_future(run)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
