"""GET /v1/stats/latency and `fallback-daemon stats latency` over real HTTP, on rows seeded in Postgres whose
right answers are worked out by hand (the same ten Singapore messages as tests/unit/test_advice.py, plus
three UK ones), with their receipts stored as the ingest path stores them."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from fallback_daemon import app
from tests.e2e import procs
from tests.integration import opsupport

READ_TOKEN = "read-token-0123456789"
# seconds after acceptance: (delivered, read, FallBackDuration, double delivered); every message sent at +1 s
SG = [(2, 4, 600, False), (3, 6, 600, False), (4, 10, 600, False), (5, 200, 600, False),
      (6, None, 600, False), (11, None, 60, False), (31, None, 60, False), (61, None, 60, True),
      (121, None, 60, True), (None, None, 60, False)]  # fmt: skip
UK = [(3, None, 300, False), (4, None, 300, False), (5, None, 300, False)]

SEED_MESSAGE = """
INSERT INTO messages (channel, to_number, from_number, params, fallback_rule, fallback_duration_s, sms_text,
                      chat_state, fallback_state, double_delivered, provider_message_id, created_at, sent_at)
VALUES ('whatsapp', $1, '6580000000', '{}', 'undelivered', $2, 'sms', 'sent', 'cancelled', $3, $4,
        now() - interval '1 hour', now() - interval '1 hour' + interval '1 second')
RETURNING id
"""
SEED_RECEIPT = """
INSERT INTO receipts (kind, source, provider_id, status, message_id, raw, received_at)
VALUES ('chatapp', 'http', $1, $2, $3, '{}', now() - interval '1 hour' + $4 * interval '1 second')
"""


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn, FALLBACK_READ_TOKEN=READ_TOKEN) as running:
        async with running.svc.db.transaction() as conn:  # one transaction: one now() for every row
            for prefix, rows in (("659123456", SG), ("4477009001", UK)):
                for i, (delivered, read, duration, double) in enumerate(rows):
                    pid = f"P{prefix}{i}"
                    mid = await conn.fetchval(SEED_MESSAGE, f"{prefix}{i}", duration, double, pid)
                    for status, at in (("Sent", 1), ("Delivered", delivered), ("Read", read)):
                        if at is not None:
                            await conn.execute(SEED_RECEIPT, pid, status, mid, float(at))
        yield running


async def latency(url: str, query: str = "", status: int = 200) -> Any:
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/v1/stats/latency?{query}", headers=headers) as r,
    ):
        body = await r.json()
        assert r.status == status, body
        return body


async def test_distributions_buckets_and_advice_per_channel_and_country(daemon: app.Running) -> None:
    """Groups whatsapp +65 (10) and +44 (3). +65, target 0.1 (one late success allowed of ten): deliveries
    sorted 2 3 4 5 6 11 31 61 121 → FallBackDuration 61 (only 121 later); reads 4 6 10 200 → 10, i.e. the
    minimum 60. sent → delivered (minus the 1 s to send): p50 5, p90 120; sent → read 3 5 9 199: p50 5.
    In the 60 s bucket 2 of 5 were double delivered."""
    body = await latency(daemon.url, "target=0.1")
    assert body["sampled"] == 13
    assert [(g["channel"], g["prefix"], g["messages"]) for g in body["groups"]] == [
        ("whatsapp", "65", 10),
        ("whatsapp", "44", 3),
    ]
    sg = body["groups"][0]
    d, r = sg["sent_to_delivered"], sg["sent_to_read"]
    assert (d["count"], d["p50_s"], d["p90_s"], d["p99_s"], d["max_s"]) == (9, 5.0, 120.0, 120.0, 120.0)
    assert (r["count"], r["p50_s"], r["p90_s"]) == (4, 5.0, 199.0)
    assert sg["double_delivery_by_duration"] == [
        {"from_s": 60, "to_s": 120, "messages": 5, "double_delivered": 2, "rate": 0.4},
        {"from_s": 600, "to_s": 1800, "messages": 5, "double_delivered": 0, "rate": 0.0},
    ]
    assert sg["advice"]["undelivered"] == {
        "needed_s": 61.0,
        "suggested_duration_s": 61,
        "reachable": True,
        "predicted_rate": 0.1,
    }
    assert sg["advice"]["unread"]["suggested_duration_s"] == 60
    uk = body["groups"][1]
    assert uk["advice"]["undelivered"]["suggested_duration_s"] == 60  # 5 s at worst
    assert uk["double_delivery_by_duration"] == [
        {"from_s": 300, "to_s": 600, "messages": 3, "double_delivered": 0, "rate": 0.0}
    ]


async def test_filters_by_prefix_channel_and_window(daemon: app.Running) -> None:
    """prefix=44 keeps the UK group; a channel with no traffic, or a window that ends before the seeded
    hour, matches nothing; the default target is 0.01 (nothing late allowed of ten: 121)."""
    uk = await latency(daemon.url, "prefix=%2B44")
    assert [(g["prefix"], g["messages"]) for g in uk["groups"]] == [("44", 3)]
    assert (await latency(daemon.url, "channel=viber"))["groups"] == []
    assert (await latency(daemon.url, "window=600"))["groups"] == []
    strict = await latency(daemon.url, "prefix=65")
    assert strict["target"] == 0.01
    assert strict["groups"][0]["advice"]["undelivered"]["suggested_duration_s"] == 121


@pytest.mark.parametrize(
    ("query", "field"),
    [("target=0", "target"), ("target=0.9", "target"), ("target=nan", "target"), ("target=x", "target"),
     ("prefix=6a", "prefix"), ("prefix=1234567", "prefix"), ("channel=WA", "channel"), ("window=1", "window"),
     ("window=" + "9" * 5000, "window"), ("limit=5", "limit")],
)  # fmt: skip
async def test_bad_parameters_are_400_naming_them(daemon: app.Running, query: str, field: str) -> None:
    body = await latency(daemon.url, query, status=400)
    assert body["error"]["field"] == field


async def test_cli_stats_latency(daemon: app.Running) -> None:
    """`fallback-daemon stats latency` prints the advice per group, reading with the read token."""
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    tokens = {"FALLBACK_API_TOKEN": opsupport.TOKEN, "FALLBACK_READ_TOKEN": READ_TOKEN}
    env = procs.clean_env({"FALLBACK_HTTP_HOST": host, "FALLBACK_HTTP_PORT": port, **tokens})

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fallback_daemon", *args, env=env, cwd=procs.ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await cli("stats", "latency", "--target", "0.1", "--prefix", "65")
    assert code == 0, err
    assert "whatsapp +65   10 message(s)" in out
    assert "advice, rule undelivered: FallBackDuration 61 s  (needed 61 s, predicted 10.0 %)" in out
    assert "FallBackDuration 60-120 s: 2 of 5 double delivered (40.0 %)" in out
    code, out, _ = await cli("stats", "latency", "--json", "--window", "2h")
    assert (code, json.loads(out)["window_s"], json.loads(out)["sampled"]) == (0, 7200, 13)
    code, _, err = await cli("stats", "latency", "--target", "2")
    assert (code, "--target: " in err) == (2, True)
