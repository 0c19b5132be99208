"""The /ui page in a real headless Chromium, driven over the DevTools protocol (aiohttp's websocket client).

Against a daemon with real traffic in it (the sandbox as Alibaba: To …0 read, …5 failed → SMS, …8 rejected →
SMS, …6 silent), the test signs in through the login form, checks the live counts, the timer histogram and
the receipt feeds, searches a phone number and reads its timeline, and saves tests/artifacts/ui.png; a second
test signs in with the read token (FALLBACK_READ_TOKEN), checks the per-minute chart, and drives the page's
actions (fire one fallback, drop a held group after a preview) with the operator token it then asks for, and
saves tests/artifacts/ui-action.png.
Chromium is Debian's `chromium` (`make test` installs it when missing).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import pathlib
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from fallback_daemon import app
from tests.e2e import procs
from tests.integration import opsupport

SCREENSHOT = procs.ARTIFACTS / "ui.png"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1400,1600",
)


class Page:
    """One page target over CDP: commands by id, events collected."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []

    async def reader(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                self.errors.append(json.dumps(data["params"]["exceptionDetails"])[:500])
            elif data.get("method") == "Log.entryAdded" and data["params"]["entry"]["level"] == "error":
                entry = data["params"]["entry"]
                self.errors.append(f"{entry['text']} {entry.get('url', '')}".strip())

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        mid = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[mid] = future
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        return dict(answer["result"])

    async def js(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, attempts: int = 200) -> Any:
        """Poll a JS expression until it is truthy (the page updates asynchronously); bounded."""
        for _ in range(attempts):
            try:
                value = await self.js(expression)
            except AssertionError:  # mid-navigation: the old document is gone, the new one not there yet
                value = None
            if value:
                return value
            await asyncio.sleep(0.05)
        html = await self.js("document.body ? document.body.innerText.slice(0, 2000) : ''")
        raise AssertionError(f"never true: {expression}\npage text:\n{html}")

    async def table(self, selector: str) -> list[list[str]]:
        return list(
            await self.js(
                f"[...document.querySelectorAll({json.dumps(selector + ' tbody tr')})]"
                ".map(r => [...r.cells].map(c => c.textContent.trim()))"
            )
        )


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Page]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get install chromium)")
    profile = pathlib.Path(tempfile.mkdtemp(prefix="fd-chromium-"))
    procs.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (procs.ARTIFACTS / "chromium.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary, *FLAGS, f"--user-data-dir={profile}", "about:blank", stdout=log, stderr=log
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(400):
            if port_file.exists() and (text := await asyncio.to_thread(port_file.read_text)).strip():
                break
            if proc.returncode is not None:
                raise AssertionError(
                    f"chromium exited with {proc.returncode}; see tests/artifacts/chromium.log"
                )
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("chromium never opened its DevTools port")
        port = int(text.split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            target = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                reader = asyncio.create_task(page.reader(), name="cdp-reader")
                try:
                    for domain in ("Page", "Runtime", "Log"):
                        await page.send(f"{domain}.enable")
                    await page.send(
                        "Emulation.setDeviceMetricsOverride",
                        width=1400,
                        height=1600,
                        deviceScaleFactor=1,
                        mobile=False,
                    )
                    yield page
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
        await asyncio.to_thread(shutil.rmtree, profile, True)


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn) as running:
        yield running


async def test_ui_shows_counts_feeds_and_a_searched_timeline(daemon: app.Running) -> None:
    """Signed in by the form, the page shows live counts, timers, feeds, and a searched message's timeline."""
    async with opsupport.client() as http:
        ids = await opsupport.seed_mixed(http, daemon.url)
        armed = await opsupport.send(http, daemon.url, "6591234566")
        cancelled = await opsupport.send(http, daemon.url, "6591234576")
        for mid in (armed, cancelled):
            await opsupport.wait_for(http, daemon.url, mid, lambda v: v["chat_state"] == "sent")
        async with http.post(
            f"{daemon.url}/v1/messages/{cancelled}/cancel",
            json={"actor": "alice", "reason": "reached by phone"},
        ) as resp:
            assert resp.status == 200

    async with chromium() as page:
        await page.send("Page.navigate", url=f"{daemon.url}/ui")
        await page.until("location.pathname === '/ui/login' && !!document.getElementById('token')")
        await page.js(
            f"document.getElementById('token').value = {json.dumps(opsupport.TOKEN)};"
            "document.getElementById('login').submit(); true"
        )
        await page.until("location.pathname === '/ui' && document.body.dataset.statsLoaded === '1'")

        chat = dict(await page.table("#chat-states"))
        assert chat == {"failed": "1", "read": "1", "send_failed": "1", "sent": "2", "total": "5"}
        fallback = dict(await page.table("#fallback-states"))
        assert fallback == {"armed": "1", "cancelled": "2", "sms_delivered": "2"}
        fired = dict(r[:2] for r in await page.table("#fallbacks"))
        assert (fired["fired"], fired["by failed_receipt"], fired["by send_failed"]) == ("2", "1", "1")
        histogram = await page.js(
            "[...document.querySelectorAll('#histogram > span')].map(s => s.textContent)"
        )
        assert dict(zip(histogram[::2], histogram[1::2], strict=True))["<15m"] == "1"
        feeds = await page.table("#feed-table")
        assert feeds[0][:3] == ["http", "chatapp", "whatsapp"]

        await page.js(
            "document.getElementById('q').value = '+65 9123 4565';"
            "document.getElementById('search-form').requestSubmit(); true"
        )
        await page.until(f"document.body.dataset.timeline === {json.dumps(ids['failed'])}")
        events = await page.table("#events")
        kinds = [e[1] for e in events]
        assert {"accepted", "send_ok", "chat_receipt", "fallback_fired", "sms_receipt"} <= set(kinds)
        fields = await page.js("document.getElementById('message-fields').innerText")
        assert "failed_receipt" in fields
        assert "sms_delivered" in fields

        await page.js(f"location.hash = 'm={cancelled}'; true")
        await page.until(f"document.body.dataset.timeline === {json.dumps(cancelled)}")
        who = [e[4] for e in await page.table("#events") if e[1] == "operator_cancel"]
        assert who == ["alice: reached by phone"]

        await page.js(
            f"document.getElementById('q').value = {json.dumps(ids['failed'])};"
            "document.getElementById('search-form').requestSubmit(); true"
        )
        await page.until(f"document.body.dataset.timeline === {json.dumps(ids['failed'])}")
        await page.until("document.querySelectorAll('#results tbody a').length === 1")
        shot = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
        assert page.errors == [], page.errors
    assert SCREENSHOT.stat().st_size > 10_000


ACTION_SCREENSHOT = procs.ARTIFACTS / "ui-action.png"


async def click(page: Page, selector: str, text: str) -> None:
    """Click the button under `selector` whose label starts with `text`."""
    found = await page.js(
        f"(() => {{ const b = [...document.querySelectorAll({json.dumps(selector)})]"
        f".find(b => b.textContent.startsWith({json.dumps(text)})); if (b) b.click(); return !!b; }})()"
    )
    assert found, f"no {text!r} button under {selector}"


async def confirm(page: Page, reason: str, *, token: str | None) -> None:
    """Fill the open action dialog (the token only when it asks for one) and confirm it."""
    await page.until("document.getElementById('action-dialog').open")
    await page.js(
        f"document.getElementById('action-reason').value = {json.dumps(reason)};"
        "document.getElementById('action-actor').value = 'alice@ui';"
        + (f"document.getElementById('action-token').value = {json.dumps(token)};" if token else "")
        + "document.getElementById('action-confirm').click(); true"
    )


OPERATOR_TOKEN, READ_TOKEN = "operator-token-0123456789", "read-token-0123456789"


async def test_ui_actions_fire_and_drop_with_preview(db_dsn: str) -> None:
    """Signed in with the read token, the page reads, but its first action asks for the operator token: with
    it, fire one fallback (the timeline then shows the operator's fire and the SMS), and drop a group of held
    fallbacks after a confirmation that previews their count; the per-minute chart draws the traffic; `/` and
    `/ui/` lead to /ui, the feed-down alarm sits above the cards, the receipt-feeds card does not overflow,
    times say UTC."""
    split = {"FALLBACK_OPERATOR_TOKEN": OPERATOR_TOKEN, "FALLBACK_READ_TOKEN": READ_TOKEN}
    async with opsupport.running_daemon(db_dsn, **split) as daemon, opsupport.client() as http:
        for path in ("/", "/ui/"):
            async with http.get(f"{daemon.url}{path}", allow_redirects=False) as resp:
                assert (resp.status, resp.headers["Location"]) == (303, "/ui")
        await opsupport.seed_mixed(http, daemon.url)
        armed = await opsupport.send(http, daemon.url, "6591234566")
        held = [await opsupport.send(http, daemon.url, f"65912345{i}6") for i in (7, 8)]
        for mid in (armed, *held):
            await opsupport.wait_for(
                http, daemon.url, mid, lambda v: any(e["kind"] == "chat_receipt" for e in v["events"])
            )
        await daemon.svc.db.execute(
            "UPDATE messages SET fallback_state = 'held', hold_reason = 'feed_down', due_at = NULL"
            " WHERE id = ANY($1::uuid[])",
            [uuid.UUID(m) for m in held],
        )

        async with chromium() as page:
            await page.send("Page.navigate", url=f"{daemon.url}/ui?token={READ_TOKEN}")
            await page.until("location.pathname === '/ui' && document.body.dataset.statsLoaded === '1'")
            assert re.fullmatch(r"updated \d\d:\d\d:\d\d UTC", await page.js("$('updated').textContent"))
            await page.until("$('role').textContent.includes('read-only')")

            # The chart: per-minute lines from /v1/stats/series (the seeded traffic is in the last minutes).
            await page.until("document.body.dataset.chartLoaded === '1'")
            totals = await page.js(
                "Object.fromEntries([...document.querySelectorAll('#chart polyline')]"
                ".map(p => [p.dataset.series, Number(p.dataset.total)]))"
            )
            assert totals["sent"] >= 4 and totals["fired"] >= 2 and totals["sms_sent"] >= 2, totals
            feeds_fit = "(() => { const s = $('feeds'); return s.scrollWidth <= s.clientWidth; })()"
            assert await page.js(feeds_fit)

            # One action on one message: fire its fallback now.
            await page.js(f"location.hash = 'm={armed}'; true")
            await page.until(f"document.body.dataset.timeline === {json.dumps(armed)}")
            await click(page, "#message-actions button", "Fire now")
            assert await page.js("$('action-token-label').hidden") is False  # a read-only session
            assert await page.js("$('action-token-name').textContent") == "FALLBACK_OPERATOR_TOKEN"
            await confirm(page, "VIP: do not wait", token=READ_TOKEN)  # the read token is refused (403) …
            await page.until("!$('action-error').hidden")
            assert "FALLBACK_OPERATOR_TOKEN" in await page.js("$('action-error').textContent")
            await confirm(page, "VIP: do not wait", token=OPERATOR_TOKEN)  # … the operator token acts
            await page.until("document.body.dataset.lastAction === 'operator_fire'")
            await opsupport.wait_for(
                http, daemon.url, armed, lambda v: v["fallback_state"] == "sms_delivered"
            )
            await page.js(f"showTimeline({json.dumps(armed)}).then(() => true)")
            events = await page.table("#events")
            assert ["operator_fire", "alice@ui: VIP: do not wait"] in [[e[1], e[4]] for e in events]
            assert {"fallback_fired", "sms_sent", "sms_receipt"} <= {e[1] for e in events}

            # A bulk action: drop the held group, after a preview of its count (the token is remembered).
            await page.until("[...document.querySelectorAll('#held tbody tr')].some(r => r.cells.length > 2)")
            rows = await page.table("#held")
            assert [r[:3] for r in rows] == [["feed_down", "whatsapp", "2"]]
            await click(page, "#held .actions button", "Drop")
            await page.until("document.getElementById('action-dialog').open")
            assert await page.js("$('action-preview').dataset.count") == "2"
            assert "2 held fallback(s) will never fire" in await page.js("$('action-preview').textContent")
            assert await page.js("$('action-token-label').hidden") is True
            await confirm(page, "feed back; delivered meanwhile", token=None)
            await page.until("document.body.dataset.lastAction === 'held'")
            assert "2 of 2 done" in await page.js("$('action-result').textContent")
            count = "SELECT count(*) FROM messages WHERE fallback_state = 'held'"
            assert await daemon.svc.db.fetchval(count) == 0

            # The feed-down alarm is the first thing on the page.
            await page.js(
                "renderGateAlarm([{channel: 'viber', gate_closed: true, since_last_s: 700}],"
                " {by_reason_channel: [{reason: 'feed_down', channel: 'viber', count: 3}]}); true"
            )
            alarm = await page.js("$('gate-alarm').hidden ? '' : $('gate-alarm').textContent")
            assert "Receipt feed down: viber" in alarm
            assert "3 held so far" in alarm
            above = "$('gate-alarm').getBoundingClientRect().bottom <= document.querySelector('main')"
            assert await page.js(above + ".getBoundingClientRect().top")

            shot = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            ACTION_SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
            refused = [e for e in page.errors if "status of 403" in e and "/fire" in e]
            assert len(refused) == 1, page.errors  # the read token's attempt, logged by Chromium
            assert [e for e in page.errors if e not in refused] == [], page.errors
    assert ACTION_SCREENSHOT.stat().st_size > 10_000
