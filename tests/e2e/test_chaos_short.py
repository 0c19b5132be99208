"""The short fault campaign: one daemon, the sandbox and a Postgres cluster of the test's own (pgserver's
binaries), all real processes, under load with a kill -9 of the daemon mid-load, a `pg_ctl restart -m fast`
and a provider outage (the sandbox killed, connection refused, restarted on the same port and journal file).

After the faults everything settles, and the invariants of `chaos.check` are asserted against the sandbox's
persisted journal: nothing accepted is lost, every due fallback went out exactly once, no chat send doubled,
no daemon death, nothing left in a non-final state, no `unknown` message that never reached the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import shutil
import tempfile
from collections.abc import AsyncIterator

import aiohttp
import pytest

from chaos import check, load, scenarios, world
from fallback_daemon.sandbox import journal
from tests.e2e import procs

OUTAGE_S = 4.0


@pytest.fixture
async def chaos_root() -> AsyncIterator[pathlib.Path]:
    """A work folder the Postgres system user can reach; the logs are kept in tests/artifacts/chaos-short."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="chaos-short-"))
    root.chmod(0o755)  # noqa: ASYNC240 - set-up, nothing runs yet
    yield root
    keep = procs.ARTIFACTS / "chaos-short"
    shutil.rmtree(keep, ignore_errors=True)
    with contextlib.suppress(OSError):
        shutil.copytree(root / "logs", keep)
    shutil.rmtree(root, ignore_errors=True)


async def accepted_at_least(loader: load.Loader, n: int) -> None:
    """Poll the load generator's own count (bounded): the faults start once load is really flowing."""
    for _ in range(600):
        if len(loader.accepted.ids) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} messages accepted")


def explained(rep: check.Report) -> list[dict[str, object]]:
    """Unknown and held messages without a timeline that explains them (a hold reason and events)."""
    out = []
    for column in ("unknown", "held"):
        for m in rep.examples.get(column, []):
            if not m["last_events"] or (column == "held" and not m["hold_reason"]):
                out.append(m)
    return out


async def test_kill9_pg_restart_and_outage_keep_the_guarantee(chaos_root: pathlib.Path) -> None:
    """Under kill -9, a fast Postgres restart and a provider outage: nothing lost, doubled or missed."""
    async with world.World(chaos_root, timer_s=3.0) as w:
        loader = load.Loader(w, rate=30, batch=5)
        stop = asyncio.Event()
        load_task = asyncio.create_task(loader.run(stop))
        try:
            await accepted_at_least(loader, 60)
            await scenarios.kill9(w, startup_share=0.0)
            await w.all_up()
            await accepted_at_least(loader, len(loader.accepted.ids) + 60)
            await w.cluster.arun("restart", "fast")
            w.note("pg_restart_fast")
            await accepted_at_least(loader, len(loader.accepted.ids) + 60)
            before = await w.sandbox.journal()
            await scenarios.outage(w, OUTAGE_S)
            after = await w.sandbox.journal()
            await accepted_at_least(loader, len(loader.accepted.ids) + 60)
        finally:
            stop.set()
            await load_task
        settled, _ = await check.settle(w, 60)
        rep = await check.check(w, loader.accepted, "short")

    # The journal file carried every send across the sandbox's kill -9 and restart.
    for section, key in (("chat", "accepted"), ("sms", "sends")):
        lost = [
            ref for ref, e in before[section].items() if after[section].get(ref, {}).get(key, -1) < e[key]
        ]
        assert lost == [], f"{section} records the restarted sandbox forgot: {lost[:5]}"
    assert before["chat"], "nothing reached the sandbox before the outage"
    assert w.faults == {"kill9": 1, "pg_restart_fast": 1, "provider_outage": 1}
    assert settled, rep.examples.get("stuck")
    assert len(loader.accepted.ids) >= 240
    assert rep.messages == len(loader.accepted.ids)
    assert rep.sms_sent > 0
    failures = {
        "lost": rep.lost,
        "missed_fallbacks": rep.missed_fallbacks,
        "doubled_sms": rep.doubled_sms,
        "doubled_chat": rep.doubled_chat,
        "fired_after_success": rep.fired_after_success,
        "daemon_deaths": rep.daemon_deaths,
        "stuck": rep.stuck,
        "unknown_never_sent": rep.unknown_never_sent,
    }
    flagged = {k: rep.examples.get(k, [])[:3] for k, v in failures.items() if v and k != "daemon_deaths"}
    assert failures == dict.fromkeys(failures, 0), json.dumps(
        {"failures": failures, "flagged": flagged, "deaths": rep.details["deaths"]}, indent=1, default=str
    )
    assert explained(rep) == []


async def test_sandbox_cli_replays_its_journal_file(tmp_path: pathlib.Path) -> None:
    """`sandbox --journal-file F` starts with the sends already recorded in F (as a killed one left it)."""
    path = tmp_path / "journal.jsonl"
    earlier = journal.Journal(limit=100, path=path)
    chat = earlier.chat_entry("task-1", "6500000001")
    chat.attempts += 1
    chat.accepted += 1
    chat.message_ids.append("2026120200000100000001")
    earlier.sms_entry("task-1", "SendMessageToGlobe", "6500000001").sends += 1
    earlier.close()
    port = procs.free_port()
    args = ["sandbox", "--port", str(port), "--journal-file", str(path)]
    async with procs.process("journal-cli-sandbox", args, procs.clean_env({})) as sb:
        await procs.wait_http(f"http://127.0.0.1:{port}/sandbox/stats", sb)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/sandbox/journal") as r,
        ):
            body = await r.json()
    assert body["chat"]["task-1"]["accepted"] == 1
    assert body["chat"]["task-1"]["message_ids"] == ["2026120200000100000001"]
    assert body["sms"]["task-1"]["sends"] == 1
