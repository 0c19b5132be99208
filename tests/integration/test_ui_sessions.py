"""Sessions of the operator page /ui and access to /metrics (issue 10), over real loopback HTTP to the whole
daemon on a real Postgres.

A /ui session is a random id in the cookie and its SHA-256 in `ui_sessions`; it expires, logout revokes it,
a new API token ends it, and it survives a restart. The cookie is HttpOnly, SameSite=Strict, and Secure
behind an https `FALLBACK_PUBLIC_URL`; every /ui answer carries the CSP / framing / nosniff headers.
`/metrics` is open unless `FALLBACK_METRICS_REQUIRE_TOKEN` asks for the bearer token.
"""

from __future__ import annotations

import hashlib
import http.cookies
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from fallback_daemon import app
from tests.integration import opsupport
from tests.integration.opsupport import TOKEN

COOKIE = "fallback_ui"
OTHER_TOKEN = "another-api-token-0123456789"


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn) as running:
        yield running


async def sign_in(url: str, token: str = TOKEN) -> http.cookies.Morsel[str]:
    """POST the token to the login form; the session cookie it sets (checked to redirect to /ui)."""
    async with (
        aiohttp.ClientSession() as anon,
        anon.post(f"{url}/ui/login", data={"token": token}, allow_redirects=False) as resp,
    ):
        assert resp.status == 303
        assert resp.headers["Location"] == "/ui"
        return resp.cookies[COOKIE]


async def status_with(url: str, path: str, cookie: str, method: str = "GET") -> int:
    """The status of one request carrying only `fallback_ui=<cookie>` (no redirects followed)."""
    async with (
        aiohttp.ClientSession() as anon,
        anon.request(
            method, url + path, headers={"Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False
        ) as resp,
    ):
        if resp.status == 303:
            return 303 if resp.headers["Location"] == "/ui/login" else -1
        return resp.status


async def test_sign_in_sets_a_random_session_id_stored_only_as_its_sha256(daemon: app.Running) -> None:
    """Two sign-ins give two different random ids (not derived from the token); the table holds their
    SHA-256, never the id; the cookie is HttpOnly, SameSite=Strict, Path=/, Max-Age 8 h, not Secure on
    plain http."""
    first, second = await sign_in(daemon.url), await sign_in(daemon.url)
    assert first.value != second.value
    assert len(first.value) >= 43 and TOKEN not in first.value
    assert first["httponly"] is True
    assert first["samesite"] == "Strict"
    assert first["path"] == "/"
    assert first["max-age"] == str(8 * 3600)
    assert not first["secure"]
    rows = await daemon.svc.db.fetch(
        "SELECT id_hash, extract(epoch FROM expires_at - created_at) AS ttl, revoked_at FROM ui_sessions"
    )
    stored = {r["id_hash"] for r in rows}
    assert stored == {hashlib.sha256(m.value.encode()).hexdigest() for m in (first, second)}
    assert first.value not in stored and second.value not in stored
    assert {float(r["ttl"]) for r in rows} == {8 * 3600.0}
    assert all(r["revoked_at"] is None for r in rows)
    for cookie in (first.value, second.value):
        assert await status_with(daemon.url, "/ui", cookie) == 200
        assert await status_with(daemon.url, "/v1/stats", cookie) == 200


async def test_logout_revokes_the_session_so_the_same_cookie_is_refused(daemon: app.Running) -> None:
    """After "Sign out", the very cookie replayed is sent to the login page and is a 401 on /v1; another
    session stays live (logout ends only its own)."""
    mine, other = (await sign_in(daemon.url)).value, (await sign_in(daemon.url)).value
    async with (
        aiohttp.ClientSession() as anon,
        anon.post(
            f"{daemon.url}/ui/logout", headers={"Cookie": f"{COOKIE}={mine}"}, allow_redirects=False
        ) as resp,
    ):
        assert resp.status == 303 and resp.headers["Location"] == "/ui/login"
        cleared = resp.cookies[COOKIE]
        assert cleared.value == "" and cleared["max-age"] == "0"
    assert await status_with(daemon.url, "/ui", mine) == 303
    assert await status_with(daemon.url, "/v1/stats", mine) == 401
    assert await status_with(daemon.url, "/v1/messages", mine) == 401
    assert await status_with(daemon.url, "/v1/stats", other) == 200
    revoked = await daemon.svc.db.fetchval(
        "SELECT revoked_at IS NOT NULL FROM ui_sessions WHERE id_hash = $1",
        hashlib.sha256(mine.encode()).hexdigest(),
    )
    assert revoked is True


async def test_an_expired_session_is_refused(db_dsn: str) -> None:
    """FALLBACK_UI_SESSION_TTL_S sets the expiry; once the database clock passes it the cookie is refused.
    (Time is moved by moving the row's expiry into the past, not by waiting.)"""
    async with opsupport.running_daemon(db_dsn, FALLBACK_UI_SESSION_TTL_S="120") as daemon:
        cookie = await sign_in(daemon.url)
        assert cookie["max-age"] == "120"
        ttl = await daemon.svc.db.fetchval(
            "SELECT extract(epoch FROM expires_at - created_at) FROM ui_sessions"
        )
        assert float(ttl) == 120.0
        assert await status_with(daemon.url, "/v1/stats", cookie.value) == 200
        await daemon.svc.db.execute("UPDATE ui_sessions SET expires_at = now() - interval '1 second'")
        assert await status_with(daemon.url, "/ui", cookie.value) == 303
        assert await status_with(daemon.url, "/v1/stats", cookie.value) == 401


async def test_sessions_survive_a_restart_and_end_when_the_api_token_changes(db_dsn: str) -> None:
    """The session lives in the database: a restarted daemon (same token) accepts the cookie; one started
    with a new FALLBACK_API_TOKEN refuses it."""
    async with opsupport.running_daemon(db_dsn) as daemon:
        cookie = (await sign_in(daemon.url)).value
    async with opsupport.running_daemon(db_dsn) as daemon:
        assert await status_with(daemon.url, "/v1/stats", cookie) == 200
    async with opsupport.running_daemon(db_dsn, FALLBACK_API_TOKEN=OTHER_TOKEN) as daemon:
        assert await status_with(daemon.url, "/ui", cookie) == 303
        assert await status_with(daemon.url, "/v1/stats", cookie) == 401


async def test_the_cookie_is_secure_behind_an_https_public_url(db_dsn: str) -> None:
    """The daemon sees plain HTTP from its TLS proxy; FALLBACK_PUBLIC_URL=https://… makes the cookie Secure
    (on sign-in and on the logout that clears it)."""
    async with opsupport.running_daemon(db_dsn, FALLBACK_PUBLIC_URL="https://fallback.example.com") as daemon:
        cookie = await sign_in(daemon.url)
        assert cookie["secure"] is True
        assert cookie["httponly"] is True and cookie["samesite"] == "Strict"
        async with aiohttp.ClientSession() as anon:
            async with anon.get(f"{daemon.url}/ui?token={TOKEN}", allow_redirects=False) as resp:
                assert resp.status == 303 and resp.cookies[COOKIE]["secure"] is True
            async with anon.post(
                f"{daemon.url}/ui/logout",
                headers={"Cookie": f"{COOKIE}={cookie.value}"},
                allow_redirects=False,
            ) as resp:
                assert resp.cookies[COOKIE]["secure"] is True


@pytest.mark.parametrize(
    "cookie",
    ["", "x", "0" * 43, "A" * 64, "A" * 65, "A" * 4000, "%00", "'; DROP TABLE ui_sessions; --"],
    ids=["empty", "short", "unknown-id", "max-length", "too-long", "huge", "escaped-nul", "sql"],
)
async def test_a_forged_cookie_opens_nothing_and_is_never_a_5xx(daemon: app.Running, cookie: str) -> None:
    """Any cookie that is not a live session id: /ui leads to the login page, /v1 answers 401."""
    assert await status_with(daemon.url, "/ui", cookie) == 303
    assert await status_with(daemon.url, "/v1/stats", cookie) == 401
    assert await status_with(daemon.url, "/v1/messages", cookie, method="HEAD") == 401
    assert await daemon.svc.db.fetchval("SELECT count(*) FROM ui_sessions") == 0


async def test_a_session_cookie_cannot_act(daemon: app.Running) -> None:
    """A live session reads, but a POST action with only the cookie is a 401 (SameSite aside)."""
    cookie = (await sign_in(daemon.url)).value
    for path in ("/v1/held/release", "/v1/held/drop", "/v1/messages"):
        assert await status_with(daemon.url, path, cookie, method="POST") == 401


@pytest.mark.parametrize(
    "path", ["/ui", "/ui/login", "/ui/", "/", "/ui?token=wrong", "/ui/static/app.js", "/ui/static/style.css"]
)
async def test_every_ui_answer_carries_csp_framing_and_nosniff_headers(
    daemon: app.Running, path: str
) -> None:
    """Pages, redirects and static files: CSP with frame-ancestors 'none', X-Frame-Options, nosniff."""
    async with (
        aiohttp.ClientSession() as anon,
        anon.get(daemon.url + path, allow_redirects=False) as resp,
    ):
        assert resp.status in (200, 303)
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"


class TestMetricsAccess:
    async def test_metrics_are_open_by_default(self, daemon: app.Running) -> None:
        """Without FALLBACK_METRICS_REQUIRE_TOKEN, a scraper without credentials reads /metrics."""
        async with aiohttp.ClientSession() as anon, anon.get(f"{daemon.url}/metrics") as resp:
            assert resp.status == 200
            assert "fallback_build_info" in await resp.text()

    async def test_metrics_need_the_bearer_token_when_required(self, db_dsn: str) -> None:
        """With the option on: no token, a wrong token, or a live /ui session cookie → 401 JSON; the API
        token → 200 with the series; /healthz stays open."""
        async with opsupport.running_daemon(db_dsn, FALLBACK_METRICS_REQUIRE_TOKEN="true") as daemon:
            cookie = (await sign_in(daemon.url)).value
            refused: list[dict[str, str]] = [
                {},
                {"Authorization": "Bearer wrong-token-0123456789"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Cookie": f"{COOKIE}={cookie}"},
            ]
            async with aiohttp.ClientSession() as anon:
                for headers in refused:
                    async with anon.get(f"{daemon.url}/metrics", headers=headers) as resp:
                        assert resp.status == 401, headers
                        assert resp.headers["WWW-Authenticate"] == "Bearer"
                        body = await resp.json()
                        assert "fallback_build_info" not in str(body)
                async with anon.get(
                    f"{daemon.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
                ) as resp:
                    assert resp.status == 200
                    assert "fallback_build_info" in await resp.text()
                async with anon.get(f"{daemon.url}/healthz") as resp:
                    assert resp.status == 200


OPERATOR_TOKEN, READ_TOKEN = "operator-token-0123456789", "read-token-0123456789"
SPLIT = {"FALLBACK_OPERATOR_TOKEN": OPERATOR_TOKEN, "FALLBACK_READ_TOKEN": READ_TOKEN}


async def session_info(url: str, cookie: str) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as anon,
        anon.get(f"{url}/ui/session", headers={"Cookie": f"{COOKIE}={cookie}"}) as resp,
    ):
        return resp.status, await resp.json()


async def post_with(
    url: str, path: str, cookie: str, csrf: str | None, body: object
) -> tuple[int, dict[str, Any]]:
    headers = {"Cookie": f"{COOKIE}={cookie}"} | ({"X-CSRF-Token": csrf} if csrf is not None else {})
    async with aiohttp.ClientSession() as anon, anon.post(url + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


class TestSessionRoles:
    """With FALLBACK_OPERATOR_TOKEN and FALLBACK_READ_TOKEN set: which token signs in, and whether its session
    may act (only an operator-token session, only with its CSRF header, never a send)."""

    async def test_a_read_token_session_reads_but_cannot_act(self, db_dsn: str) -> None:
        async with opsupport.running_daemon(db_dsn, **SPLIT) as daemon:
            cookie = (await sign_in(daemon.url, READ_TOKEN)).value
            assert await status_with(daemon.url, "/v1/stats", cookie) == 200
            assert await status_with(daemon.url, "/v1/messages", cookie) == 200
            status, info = await session_info(daemon.url, cookie)
            assert (status, info["role"], info["can_act"]) == (200, "read", False)
            assert info["operator_token"] == ["FALLBACK_OPERATOR_TOKEN"]
            status, answer = await post_with(
                daemon.url, "/v1/held/release", cookie, str(info["csrf_token"]), {"all": True}
            )
            assert status == 403
            assert answer["error"]["tokens"] == ["FALLBACK_OPERATOR_TOKEN"]
            assert "FALLBACK_READ_TOKEN" in answer["error"]["message"]

    async def test_an_operator_session_acts_with_its_csrf_header_only(self, db_dsn: str) -> None:
        async with opsupport.running_daemon(db_dsn, **SPLIT) as daemon, opsupport.client() as app_http:
            mid = await opsupport.send(app_http, daemon.url, "6591234566")
            await opsupport.wait_for(
                app_http, daemon.url, mid, lambda v: any(e["kind"] == "chat_receipt" for e in v["events"])
            )
            cookie = (await sign_in(daemon.url, OPERATOR_TOKEN)).value
            status, info = await session_info(daemon.url, cookie)
            assert (status, info["role"], info["can_act"]) == (200, "operator", True)
            csrf = str(info["csrf_token"])
            cancel = f"/v1/messages/{mid}/cancel"
            for bad in (None, "", "0" * 64, csrf[:-1]):
                status, answer = await post_with(daemon.url, cancel, cookie, bad, {"reason": "x"})
                assert status == 401, (bad, answer)
            other = (await sign_in(daemon.url, OPERATOR_TOKEN)).value  # another session's CSRF token
            status, _ = await post_with(daemon.url, cancel, other, csrf, {"reason": "x"})
            assert status == 401
            state = "SELECT fallback_state FROM messages WHERE id = $1::uuid"
            assert await daemon.svc.db.fetchval(state, mid) == "armed"
            status, answer = await post_with(
                daemon.url, cancel, cookie, csrf, {"actor": "op@ui", "reason": "phoned"}
            )
            assert (status, answer["fallback_state"]) == (200, "cancelled")
            # A session never sends, whatever its role.
            body = {**opsupport.BODY, "To": "6591234000"}
            status, _ = await post_with(daemon.url, "/v1/messages", cookie, csrf, body)
            assert status == 401
            assert await daemon.svc.db.fetchval("SELECT count(*) FROM messages") == 1

    async def test_the_api_token_signs_in_only_while_no_read_token_is_set(self, db_dsn: str) -> None:
        async with (
            opsupport.running_daemon(db_dsn, **SPLIT) as daemon,
            aiohttp.ClientSession() as anon,
            anon.post(f"{daemon.url}/ui/login", data={"token": TOKEN}, allow_redirects=False) as resp,
        ):
            assert (resp.status, resp.headers["Location"]) == (303, "/ui/login?error=1")
            assert COOKIE not in resp.cookies
        async with opsupport.running_daemon(db_dsn) as daemon:  # compatible: the API token does everything
            cookie = (await sign_in(daemon.url, TOKEN)).value
            status, info = await session_info(daemon.url, cookie)
            assert (status, info["role"], info["can_act"]) == (200, "api", True)
            assert info["operator_token"] == ["FALLBACK_API_TOKEN"]
        # The same API-token session after a read token is configured: no longer one that may read.
        async with opsupport.running_daemon(db_dsn, **SPLIT) as daemon:
            assert await status_with(daemon.url, "/ui", cookie) == 303
            assert await status_with(daemon.url, "/v1/stats", cookie) == 401

    async def test_session_info_needs_a_live_session(self, daemon: app.Running) -> None:
        for cookie in ("", "A" * 43):
            status, answer = await session_info(daemon.url, cookie)
            assert status == 401 and "sign in" in str(answer)
