"""Logs of real flows (the daemon with the in-process sandbox, JSON output captured): every decision names
its message, phone numbers are masked, and no secret appears in any line or in repr(settings).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import structlog

from fallback_daemon import app, config, logs, sandbox

# Test-only values, chosen to be recognisable if they ever leak into a line.
API_TOKEN = "logs-api-token-0123456789"
RECEIPT_TOKEN = "logs-receipt-token-0123456789"
AK_SECRET = "logs-access-key-secret-0123456789"
DB_PASSWORD = "logs-db-password-0123456789"
# To -> what the sandbox does (suffix table): each ends in a fallback except the read one.
NUMBERS = {
    "6591234568": "sms_delivered",  # send rejected -> fallback
    "6591234565": "sms_delivered",  # Failed receipt -> fallback
    "6591234555": "sms_failed",  # Failed receipt -> fallback, and the SMS fails too
    "6591234566": "sms_delivered",  # silent -> the (scaled) timer fires
    "6591234560": "cancelled",  # Read -> no fallback
}
DECISION_EVENTS = {"decision", "fallback_firing", "fallback_held", "sms_outcome_unknown", "operator_action"}


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The daemon's real logging set-up (JSON, debug), writing to a buffer; the previous set-up restored."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buf = io.StringIO()
    logs.configure(fmt="json", level="debug", file=buf, cache=False)
    yield buf
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def with_password(dsn: str) -> tuple[str, str | None]:
    """The DSN with DB_PASSWORD in it (the embedded server trusts local connections and ignores it).

    A DSN that already has a password keeps it; returns (dsn, password worth checking for).
    """
    parts = urllib.parse.urlsplit(dsn)
    if parts.password:
        return dsn, parts.password if len(parts.password) >= logs.MIN_PASSWORD_LEN else None
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{DB_PASSWORD}@{host}")), DB_PASSWORD


@pytest.fixture
async def daemon(db_dsn: str, log_output: io.StringIO) -> AsyncIterator[tuple[app.Running, str | None]]:
    dsn, password = with_password(db_dsn)
    settings = config.load(
        {
            "DATABASE_URL": dsn,
            "FALLBACK_HTTP_PORT": "0",
            "FALLBACK_API_TOKEN": API_TOKEN,
            "FALLBACK_RECEIPT_TOKEN": RECEIPT_TOKEN,
            "FALLBACK_SANDBOX_TIMER_SCALE": "0.02",
            "FALLBACK_TIMER_MAX_SLEEP_S": "0.1",
        }
    )
    sb_config = sandbox.SandboxConfig(access_key_id="logs-ak", access_key_secret=AK_SECRET)
    stop = asyncio.Event()
    started: asyncio.Future[app.Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        app.serve(settings, use_sandbox=True, started=started, stop=stop, sandbox_config=sb_config)
    )
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    yield started.result(), password
    stop.set()
    await task


def body(to: str) -> dict[str, Any]:
    return {
        "ChannelType": "whatsapp",
        "Type": "message",
        "MessageType": "text",
        "From": "6580000000",
        "To": to,
        "Content": {"text": f"hello {to}"},
        "FallBackContent": f"sms for {to}",
        "FallBackDuration": 60,
    }


async def settle(http: aiohttp.ClientSession, url: str, ids: dict[str, str]) -> None:
    """Poll each message until its fallback leg reaches the expected end (cross-task condition, bounded)."""
    pending = dict(ids)
    for _ in range(400):
        for mid, to in list(pending.items()):
            async with http.get(f"{url}/v1/messages/{mid}") as resp:
                view = await resp.json()
            if view["fallback_state"] == NUMBERS[to]:
                del pending[mid]
        if not pending:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not settled: {pending}")


def parse(buf: io.StringIO) -> list[dict[str, Any]]:
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


async def test_decisions_masking_and_secrets_in_real_flows(
    daemon: tuple[app.Running, str | None], log_output: io.StringIO
) -> None:
    """Every decision line names its message; To numbers appear only masked; no secret is in any line."""
    running, db_password = daemon
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
        ids = {}
        for to in NUMBERS:
            async with http.post(f"{running.url}/v1/messages", json=body(to)) as resp:
                assert resp.status == 202
                ids[(await resp.json())["id"]] = to
        await settle(http, running.url, ids)
    events = parse(log_output)
    raw = log_output.getvalue()

    decisions = [e for e in events if e["event"] in DECISION_EVENTS]
    assert all(uuid.UUID(e["message_id"]) for e in decisions)
    assert {e["message_id"] for e in events if e["event"] == "decision"} >= set(ids)
    fired = {e["message_id"]: e for e in events if e["event"] == "fallback_firing"}
    assert set(fired) == {mid for mid, to in ids.items() if NUMBERS[to] != "cancelled"}

    for mid, to in ids.items():
        assert to not in raw, f"{to} appears unmasked"
        if mid in fired:
            assert fired[mid]["to"] == logs.mask_phone(to)
    secrets = [API_TOKEN, RECEIPT_TOKEN, AK_SECRET, *([db_password] if db_password else [])]
    for secret in secrets:
        assert secret not in raw
        assert secret not in repr(running.settings)
        assert secret not in str(running.settings)
    assert running.settings.database_url is not None
    assert running.settings.database_url.reveal() not in raw


def emit(buf: io.StringIO) -> dict[str, Any]:
    [event] = parse(buf)
    buf.seek(0)
    buf.truncate()
    return event


def test_masking_reaches_free_text_nested_fields_and_tracebacks(log_output: io.StringIO) -> None:
    """A number inside an error text, a nested detail or a traceback is masked; ids and codes are kept."""
    log = structlog.get_logger("test")
    mid = "12345678-1234-4234-8234-123456789012"
    log.info(
        "decision",
        message_id=mid,
        error="PhoneNumberError: 6591234568 is invalid",
        error_code="131026",
        detail={"To": "+6591234568", "note": "retry 6591234568"},
        sms_id="900619746936498440^0",
    )
    event = emit(log_output)
    assert event["error"] == "PhoneNumberError: 659*****68 is invalid"
    assert event["detail"] == {"To": "659*****68", "note": "retry 659*****68"}
    kept = (event["message_id"], event["error_code"], event["sms_id"])
    assert kept == (mid, "131026", "900619746936498440^0")
    try:
        raise ValueError("cannot reach 6591234568")
    except ValueError:
        log.exception("call_crashed")
    event = emit(log_output)
    assert "659*****68" in event["exception"]
    assert "6591234568" not in event["exception"]


def test_secrets_are_scrubbed_everywhere(log_output: io.StringIO) -> None:
    """Registered secret values and credential-shaped text (DSN password, receipt path token) become ***."""
    settings = config.load(
        {
            "FALLBACK_API_TOKEN": "scrub-api-token-0123456789",
            "DATABASE_URL": "postgresql://fd:scrub-db-password-0123@db:5432/fd",
        }
    )
    logs.register_secrets(settings)
    structlog.get_logger("test").warning(
        "push_failed",
        error="401 for token scrub-api-token-0123456789",
        url="http://d:8080/receipts/some-unregistered-token-0123/chatapp",
        detail={
            "dsn": "postgresql://other:unregistered-pass-0123@db/x",
            "raw": "password 'scrub-db-password-0123'",
        },
    )
    event = emit(log_output)
    assert event["error"] == "401 for token ***"
    assert event["url"] == "http://d:8080/receipts/***/chatapp"
    assert event["detail"] == {"dsn": "postgresql://other:***@db/x", "raw": "password '***'"}


def test_library_logs_go_through_the_same_processors(log_output: io.StringIO) -> None:
    """A standard-library warning (aiohttp, asyncpg, botocore) is a JSON line, masked and scrubbed as ours."""
    library = logging.getLogger("aiohttp.server")
    library.warning("Error handling request from 6591234568 with Bearer abc.def-123")
    event = emit(log_output)
    assert event == {
        **event,
        "logger": "aiohttp.server",
        "level": "warning",
        "event": "Error handling request from 659*****68 with Bearer ***",
    }
