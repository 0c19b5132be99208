"""docs/operations.md is executable: every command block runs in bash against a live daemon and must succeed.

Each fenced block in the guide is preceded by an HTML comment: `<!-- example: NAME -->` (run here, with
the `prelude` block in front and the variables its scenario prepares, such as $ID), `<!-- output: NAME -->`
(a sample output of example NAME: each of its lines must match a whole line the command really printed, with
runs of spaces equal, any `YYYY-MM-DD HH:MM:SS.mmm` standing for a time and `…` for text that differs from run
to run, such as ids), or `<!-- env -->` (the settings block: it may only set variables the daemon reads).
A block without a comment, an example without a scenario, or a scenario without an example fails the suite.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pathlib
import re
import sys
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from fallback_daemon import app, config
from fallback_daemon.core import model
from tests.e2e import procs
from tests.integration import opsupport

GUIDE = procs.ROOT / "docs" / "operations.md"
BLOCK = re.compile(r"^(?:<!-- (\w+)(?:: ([\w-]+))? -->\n)?```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")
# The guide's sample numbers are ones `make demo` creates (demo.demo_body: To 659 + the message number, 7
# digits): #0 is read, #5 fails (→ SMS), #8 is rejected by CAMS (→ SMS).
DEMO_NUMBERS = {"read": "6590000000", "failed": "6590000005", "rejected": "6590000008"}


@dataclasses.dataclass(frozen=True)
class Block:
    tag: str | None  # example | output | env | None (unannotated)
    name: str | None
    text: str


def blocks() -> list[Block]:
    return [Block(m.group(1), m.group(2), m.group(4)) for m in BLOCK.finditer(GUIDE.read_text())]


def examples() -> dict[str, str]:
    return {b.name: b.text for b in blocks() if b.tag == "example" and b.name and b.name != "prelude"}


def squeeze(line: str) -> str:
    return " ".join(line.split())


def line_pattern(sample: str) -> re.Pattern[str]:
    """A sample line as a pattern: a timestamp matches any timestamp, `…` any text, spaces any run."""
    parts = re.split(f"({STAMP.pattern}|…)", squeeze(sample))
    regex = "".join(
        STAMP.pattern if STAMP.fullmatch(p) else ".*?" if p == "…" else re.escape(p) for p in parts
    )
    return re.compile(regex)


def unmatched_lines(sample: str, out: str) -> list[str]:
    """Sample lines that match no whole line of the real output."""
    printed = [squeeze(line) for line in out.splitlines()]
    return [
        line
        for line in sample.splitlines()
        if line.strip() and not any(line_pattern(line).fullmatch(p) for p in printed)
    ]


@dataclasses.dataclass
class Guide:
    daemon: app.Running
    http: aiohttp.ClientSession
    seeded: dict[str, str]
    next_phone: int = 0

    async def silent(self) -> str:
        """A fresh message that is sent, has its one receipt, and stays armed (To …6, 600 s timer)."""
        self.next_phone += 1
        mid = await opsupport.send(self.http, self.daemon.url, f"659200{self.next_phone:03d}6")
        await opsupport.wait_for(
            self.http, self.daemon.url, mid, lambda v: any(e["kind"] == "chat_receipt" for e in v["events"])
        )
        return mid

    async def sql(self, query: str, *args: Any) -> Any:
        return await self.daemon.svc.db.fetchval(query, *args)

    async def view(self, mid: str) -> dict[str, Any]:
        async with self.http.get(f"{self.daemon.url}/v1/messages/{mid}") as resp:
            return dict(await resp.json())

    async def held(self, reason: str) -> str:
        mid = await self.silent()
        await self.sql(
            "UPDATE messages SET fallback_state = 'held', hold_reason = $2, due_at = NULL WHERE id = $1",
            uuid.UUID(mid),
            reason,
        )
        return mid

    async def dead_letter(self) -> str:
        mid = await self.silent()
        pid = (await self.view(mid))["provider_message_id"]
        body = json.dumps({"MessageId": pid, "Status": "Delivered", "Timestamp": 1700000000000})
        await self.daemon.svc.ingest_queue_batch(
            model.ReceiptKind.CHATAPP,
            "mns",
            "Alicom-Queue-1-ChatAppStatus",
            [],
            [],
            [(f"q-{mid}", body, "was unparseable")],
        )
        return str(await self.sql("SELECT max(id) FROM dead_letters"))


Check = Callable[[str], Awaitable[None]]
Scenario = Callable[[Guide], Awaitable[tuple[dict[str, str], Check]]]


async def _nothing(_: str) -> None:
    return None


def _contains(*needles: str) -> Check:
    async def check(out: str) -> None:
        for needle in needles:
            assert needle in out, f"{needle!r} not in output:\n{out}"

    return check


async def status(g: Guide) -> tuple[dict[str, str], Check]:
    return {}, _contains(DEMO_NUMBERS["failed"], "sms_delivered", "failed_receipt")


async def status_http(g: Guide) -> tuple[dict[str, str], Check]:
    return {"ID": g.seeded["failed"]}, _contains(g.seeded["failed"], '"events"')


async def listing(g: Guide) -> tuple[dict[str, str], Check]:
    return {}, _contains(g.seeded["failed"])


async def stats(g: Guide) -> tuple[dict[str, str], Check]:
    return {}, _contains("failed_receipt", "send_failed", "pending timers")


async def fired_http(g: Guide) -> tuple[dict[str, str], Check]:
    return {}, _contains('"by_reason": {"failed_receipt": 1, "send_failed": 1}', g.seeded["failed"])


async def feeds_http(g: Guide) -> tuple[dict[str, str], Check]:
    return {}, _contains('"feeds"', "fallback_feed_gate_closed")


async def not_sending(g: Guide) -> tuple[dict[str, str], Check]:
    return {}, _contains('"ready"', "pipeline")


async def cancel(g: Guide) -> tuple[dict[str, str], Check]:
    mid = await g.silent()

    async def check(out: str) -> None:
        view = await g.view(mid)
        event = [e for e in view["events"] if e["kind"] == "operator_cancel"][-1]
        assert (view["fallback_state"], event["reason"]) == ("cancelled", "customer confirmed by phone")
        assert event["actor"].endswith("@cli")

    return {"ID": mid}, check


async def fire(g: Guide) -> tuple[dict[str, str], Check]:
    mid = await g.silent()

    async def check(out: str) -> None:
        view = await opsupport.wait_for(
            g.http, g.daemon.url, mid, lambda v: v["fallback_state"] == "sms_delivered"
        )
        assert view["fire_reason"] == "operator"

    return {"ID": mid}, check


async def cancel_fire_http(g: Guide) -> tuple[dict[str, str], Check]:
    first, second = await g.silent(), await g.silent()

    async def check(out: str) -> None:
        assert (await g.view(first))["fallback_state"] == "cancelled"
        assert (await g.view(second))["fire_reason"] == "operator"

    return {"ID": first, "ID2": second}, check


async def redrive(g: Guide) -> tuple[dict[str, str], Check]:
    mid = await g.silent()
    await g.sql("UPDATE messages SET chat_state = 'unknown' WHERE id = $1", uuid.UUID(mid))

    async def check(out: str) -> None:
        view = await opsupport.wait_for(g.http, g.daemon.url, mid, lambda v: v["send_attempts"] == 2)
        assert any(e["kind"] == "operator_resend" for e in view["events"])

    return {"ID": mid}, check


async def redrive_http(g: Guide) -> tuple[dict[str, str], Check]:
    mid = await g.silent()
    await g.sql(
        "UPDATE messages SET fallback_state = 'firing', fire_reason = 'timeout', fired_at = now(),"
        " due_at = NULL, fire_lease_until = now() + interval '1 hour' WHERE id = $1",
        uuid.UUID(mid),
    )

    async def check(out: str) -> None:
        assert mid in out  # listed as stuck in firing
        await opsupport.wait_for(g.http, g.daemon.url, mid, lambda v: v["fallback_state"] == "sms_delivered")

    return {"ID": mid}, check


async def held(g: Guide) -> tuple[dict[str, str], Check]:
    released = [await g.held("feed_down"), await g.held("feed_down")]
    dropped = await g.held("sms_unknown")

    async def check(out: str) -> None:
        for mid in released:
            assert (await g.view(mid))["fire_reason"] == "operator"
        assert (await g.view(dropped))["fallback_state"] == "suppressed"

    return {}, check


async def held_http(g: Guide) -> tuple[dict[str, str], Check]:
    await g.held("feed_down")
    await g.held("sms_unknown")

    async def check(out: str) -> None:
        assert await g.sql("SELECT count(*) FROM messages WHERE fallback_state = 'held'") == 0

    return {}, check


async def dead_letters(g: Guide) -> tuple[dict[str, str], Check]:
    dead = await g.dead_letter()

    async def check(out: str) -> None:
        assert (
            await g.sql("SELECT replay_reason FROM dead_letters WHERE id = $1", int(dead))
            == "parser fixed in 0.2"
        )

    return {"DEAD_ID": dead}, check


async def dead_letters_http(g: Guide) -> tuple[dict[str, str], Check]:
    dead = await g.dead_letter()

    async def check(out: str) -> None:
        assert await g.sql("SELECT replayed_by FROM dead_letters WHERE id = $1", int(dead)) == "dave"

    return {"DEAD_ID": dead}, check


async def plain(g: Guide) -> tuple[dict[str, str], Check]:
    return {}, _nothing


SCENARIOS: dict[str, Scenario] = {
    "status": status,
    "status-http": status_http,
    "list": listing,
    "stats": stats,
    "fired-http": fired_http,
    "feeds": plain,
    "feeds-http": feeds_http,
    "not-sending": not_sending,
    "cancel": cancel,
    "fire": fire,
    "cancel-fire-http": cancel_fire_http,
    "redrive": redrive,
    "redrive-http": redrive_http,
    "held": held,
    "held-http": held_http,
    "dead-letters": dead_letters,
    "dead-letters-http": dead_letters_http,
    "openapi": plain,
}


@pytest.fixture(scope="module")
async def guide(admin_dsn: str, template_db: str) -> AsyncIterator[Guide]:
    """One daemon for the whole guide, on its own database, seeded with read / failed / rejected messages."""
    name = f"fd_guide_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await conn.close()
    dsn = urllib.parse.urlunsplit(urllib.parse.urlsplit(admin_dsn)._replace(path="/" + name))
    try:
        async with opsupport.running_daemon(dsn) as daemon, opsupport.client() as http:
            yield Guide(daemon=daemon, http=http, seeded=await seed_demo_numbers(http, daemon.url))
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()


async def seed_demo_numbers(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """Read, failed (→ SMS) and rejected (→ SMS) messages, settled, to the numbers the guide shows."""
    ids = {name: await opsupport.send(http, url, to) for name, to in DEMO_NUMBERS.items()}
    for mid in ids.values():
        await opsupport.wait_for(http, url, mid, opsupport.settled)
    return ids


async def run_block(guide: Guide, text: str, variables: dict[str, str]) -> str:
    """Run prelude + block in bash with the CLI on PATH and the daemon's settings in the environment."""
    prelude = next(b.text for b in blocks() if b.name == "prelude")
    host, port = guide.daemon.url.removeprefix("http://").rsplit(":", 1)
    env = procs.clean_env(
        {
            "FALLBACK_API_TOKEN": opsupport.TOKEN,
            "FALLBACK_HTTP_HOST": host,
            "FALLBACK_HTTP_PORT": port,
            "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **variables,
        }
    )
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        prelude + text,
        env=env,
        cwd=procs.ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- stdout\n{out.decode()}\n--- stderr\n{err.decode()}"
    )
    return out.decode()


@pytest.mark.parametrize("name", list(examples()))
async def test_guide_example_runs(guide: Guide, name: str) -> None:
    """The guide's example runs as written against a live daemon, does what it says, and prints its sample."""
    variables, check = await SCENARIOS[name](guide)
    out = await run_block(guide, examples()[name], variables)
    await check(out)
    for sample in (b for b in blocks() if b.tag == "output" and b.name == name):
        missing = unmatched_lines(sample.text, out)
        assert not missing, "sample lines not printed:\n" + "\n".join(missing) + f"\n--- printed:\n{out}"


def test_every_block_is_annotated_and_every_example_has_a_scenario() -> None:
    """Each code block in the guide is an example, a sample output or the env block; examples are tested."""
    found = blocks()
    assert found, "no code blocks found in docs/operations.md"
    assert [b for b in found if b.tag is None] == []
    assert set(examples()) == set(SCENARIOS)
    assert {b.name for b in found if b.tag == "output"} <= set(examples())


def test_sample_lines_are_whole_line_patterns() -> None:
    """A sample line must equal a printed line: a different word anywhere fails, `…` and times do not."""
    out = "fallback  sms_delivered   (rule undelivered, due -, fired at 2025-01-31 09:00:01.204)"
    assert (
        unmatched_lines(
            "fallback sms_delivered (rule undelivered, due -, fired at 2026-12-02 01:00:00.000)", out
        )
        == []
    )
    assert unmatched_lines("fallback sms_delivered (rule …, due -, fired at …)", out) == []
    assert unmatched_lines("fallback sms_failed (rule undelivered, due -, fired at …)", out) != []
    assert unmatched_lines("fallback sms_delivered", out) != []  # a prefix is not the whole line


def test_env_block_sets_only_real_settings() -> None:
    """The guide's settings block exports only variables the daemon and the CLI read."""
    [env] = [b for b in blocks() if b.tag == "env"]
    names = re.findall(r"^export (\w+)=", env.text, re.MULTILINE)
    assert names
    assert set(names) <= set(config.ENV)
