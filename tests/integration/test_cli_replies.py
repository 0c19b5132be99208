"""What the operator CLI says: whole timeline details, its own flag names in errors, plain words for `fire`,
`held list`, and a preview before `held … --all` acts."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from fallback_daemon import app
from tests.integration import opsupport
from tests.integration.test_cli_ops import cli


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with opsupport.client() as s:
        yield s


async def silent(daemon: app.Running, http: aiohttp.ClientSession, to: str) -> str:
    """A sent message that had its receipt and stays armed (sandbox: To …6 is silent after Sent)."""
    mid = await opsupport.send(http, daemon.url, to)
    await opsupport.wait_for(
        http, daemon.url, mid, lambda v: any(e["kind"] == "chat_receipt" for e in v["events"])
    )
    return mid


async def hold(daemon: app.Running, mid: str, reason: str) -> None:
    await daemon.svc.db.execute(
        "UPDATE messages SET fallback_state = 'held', hold_reason = $2, due_at = NULL WHERE id = $1",
        uuid.UUID(mid),
        reason,
    )


async def test_status_keeps_the_failed_receipts_error_code(
    daemon: app.Running, http: aiohttp.ClientSession
) -> None:
    """The timeline's DETAIL is not cut: the Failed receipt's error code is on its line, as in --json."""
    ids = await opsupport.seed_mixed(http, daemon.url)
    code, out, _ = await cli(daemon, "status", ids["failed"], "--json")
    [failed] = [e for e in json.loads(out)["events"] if e.get("status") == "Failed"]
    assert failed["error_code"]
    code, out, err = await cli(daemon, "status", ids["failed"])
    assert code == 0, err
    [line] = [x for x in out.splitlines() if '"status": "Failed"' in x]
    assert f'"error_code": "{failed["error_code"]}"' in line
    assert f'"receipt_id": {failed["receipt_id"]}' in line  # the tail of the detail is there too


async def test_stale_receipt_reads_as_no_change(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """A Sent report after the send answer is shown as `receipt_stale (no change)`, not as a bare alarm."""
    mid = await silent(daemon, http, "6591234516")
    code, out, _ = await cli(daemon, "status", mid)
    assert code == 0
    assert "receipt_stale (no change)" in out


async def test_fire_says_the_sms_is_due_not_armed(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """`fire` answers that the SMS goes out now, never "fallback armed"."""
    mid = await silent(daemon, http, "6591234526")
    code, out, err = await cli(daemon, "fire", mid, "--reason", "vip")
    assert code == 0, err
    assert "armed" not in out
    assert out.startswith(f"fire: {mid}: the SMS fallback is due now")


async def test_held_errors_use_cli_flags(daemon: app.Running) -> None:
    """`held drop` without a filter names --channel/--hold-reason/--id/--all (exit 2), not API fields."""
    code, _, err = await cli(daemon, "held", "drop", "--reason", "x")
    assert code == 2
    assert "give --channel, --hold-reason or --id, or --all" in err
    assert "all=true" not in err
    code, _, err = await cli(daemon, "held", "release", "--channel", "whatsapp", "--limit", "0")
    assert code == 2
    assert err.startswith("fallback-daemon: --limit: ")


async def test_held_list_preview_and_confirmed_all(daemon: app.Running, http: aiohttp.ClientSession) -> None:
    """`held list` shows held fallbacks by reason; `held drop --all` previews the count and changes nothing
    until `--yes`; `--dry-run` previews a filtered release."""
    feed = [await silent(daemon, http, f"659300{i:03d}6") for i in range(2)]
    crashed = await silent(daemon, http, "6593009996")
    for mid in feed:
        await hold(daemon, mid, "feed_down")
    await hold(daemon, crashed, "interrupted")

    code, out, _ = await cli(daemon, "held", "list", "--hold-reason", "feed_down")
    assert code == 0
    assert sorted(mid for mid in (*feed, crashed) if mid in out) == sorted(feed)

    code, out, _ = await cli(daemon, "held", "release", "--hold-reason", "interrupted", "--dry-run")
    assert (code, out.splitlines()[0]) == (0, "held release would act on 1 held fallback(s)")

    code, out, _ = await cli(daemon, "held", "drop", "--all", "--reason", "stale")
    assert code == 0
    assert out.splitlines()[0] == "held drop would act on 3 held fallback(s)"
    assert "run again with --yes" in out
    held = "SELECT count(*) FROM messages WHERE fallback_state = 'held'"
    assert await daemon.svc.db.fetchval(held) == 3

    code, out, _ = await cli(daemon, "held", "drop", "--all", "--yes", "--reason", "stale")
    assert (code, out.strip()) == (0, "drop: 3 of 3 held fallback(s) (0 refused)")
    assert await daemon.svc.db.fetchval(held) == 0
