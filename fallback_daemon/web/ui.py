"""The operator page /ui: a static HTML+JS page over the JSON API, behind the same token.

The token is given once (the /ui/login form, or `/ui?token=…`, which redirects at once so the token
leaves the address bar) and opens a server-side session: the cookie holds a random id (256 bits), the
`ui_sessions` table (migration 0006) only its SHA-256, with an expiry (`FALLBACK_UI_SESSION_TTL_S`, on the
database clock) and a revocation mark set by logout; every replica sees the same sessions, and they
survive restarts. A session also dies when the API token changes (each row holds a digest of the token it
was opened with). The cookie is HttpOnly, SameSite=Strict, `Secure` when the request came over TLS or
`FALLBACK_PUBLIC_URL` is https (a TLS proxy in front), and is accepted on GET/HEAD only, so it cannot be used
for cross-site actions. The page's actions (cancel, fire, re-drive, held release/drop) ask for the token
again and send it as a bearer header from memory (never stored). The token is never logged.
`/` and `/ui/` redirect to `/ui`.
"""

from __future__ import annotations

import hashlib
import hmac
import pathlib
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from fallback_daemon import sql
from fallback_daemon.web import api, keys

STATIC = pathlib.Path(__file__).resolve().parent / "static"
PAGES = {name: (STATIC / name).read_bytes() for name in ("index.html", "login.html")}  # read once, at import
MAX_SESSION_ID = 64  # token_urlsafe(32) is 43 characters; a longer cookie is not ours and is not looked up
# On every /ui answer (pages, redirects, static files): no framing, no inline script, no sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}


def setup(app: web.Application) -> None:
    app.router.add_get("/", to_page)
    app.router.add_get("/ui/", to_page)
    app.router.add_get("/ui", page)
    app.router.add_get("/ui/login", login_form)
    app.router.add_post("/ui/login", login)
    app.router.add_post("/ui/logout", logout)
    app.router.add_static("/ui/static", STATIC, append_version=False)
    app.middlewares.append(session_middleware)  # inside the error boundary: a database error is its 503
    app.on_response_prepare.append(_security_headers)


def session_hash(session_id: str) -> str:
    """What the table stores: the SHA-256 (hex) of the id, never the id."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def token_fingerprint(api_token: str) -> str:
    """A digest of the API token a session belongs to (keyed, so it says nothing about the token)."""
    return hmac.new(api_token.encode(), b"fallback-daemon-ui-session-v2", hashlib.sha256).hexdigest()


async def session_valid(request: web.Request) -> bool:
    """Whether the request's `fallback_ui` cookie names a live session opened with the current token."""
    expected = request.app[keys.SETTINGS].api_token.reveal()
    given = request.cookies.get(api.UI_COOKIE, "")
    if not expected or not given or len(given) > MAX_SESSION_ID:
        return False
    db = request.app[keys.SERVICE].db
    return bool(
        await db.fetchval(sql.queries["ui_session_valid"], session_hash(given), token_fingerprint(expected))
    )


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a cookie-bearing GET/HEAD to /v1 without an Authorization header, mark whether the session is live
    (`api.check_bearer` reads the mark)."""
    if (
        request.method in ("GET", "HEAD")
        and request.path.startswith("/v1/")
        and api.UI_COOKIE in request.cookies
        and "Authorization" not in request.headers
    ):
        request[api.UI_SESSION_OK] = await session_valid(request)
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path == "/ui" or request.path.startswith("/ui/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def _token_ok(request: web.Request, token: str) -> bool:
    expected = request.app[keys.SETTINGS].api_token.reveal()
    return bool(expected) and hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected.encode())


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def _cookie_secure(request: web.Request) -> bool:
    return request.secure or request.app[keys.SETTINGS].public_url.lower().startswith("https://")


async def _redirect_with_session(request: web.Request, location: str) -> web.Response:
    settings = request.app[keys.SETTINGS]
    session_id = secrets.token_urlsafe(32)
    db = request.app[keys.SERVICE].db
    await db.execute(sql.queries["ui_sessions_purge"])
    await db.execute(
        sql.queries["ui_session_open"],
        session_hash(session_id),
        token_fingerprint(settings.api_token.reveal()),
        settings.ui_session_ttl_s,
    )
    response = _see_other(location)
    response.set_cookie(
        api.UI_COOKIE,
        session_id,
        max_age=int(settings.ui_session_ttl_s),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_cookie_secure(request),
    )
    return response


def _file(name: str) -> web.Response:
    return web.Response(body=PAGES[name], content_type="text/html", charset="utf-8", headers=HEADERS)


async def to_page(request: web.Request) -> web.Response:
    """`/` and `/ui/` lead to the page (no query carried over: a `?token=` belongs on /ui itself)."""
    return _see_other("/ui")


async def page(request: web.Request) -> web.Response:
    """The page; `?token=` logs in once and redirects to the clean URL."""
    token = request.query.get("token")
    if token is not None:
        if _token_ok(request, token):
            return await _redirect_with_session(request, "/ui")
        return _see_other("/ui/login?error=1")
    if not await session_valid(request):
        return _see_other("/ui/login")
    return _file("index.html")


async def login_form(request: web.Request) -> web.Response:
    return _file("login.html")


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    token = form.get("token")
    if isinstance(token, str) and _token_ok(request, token):
        return await _redirect_with_session(request, "/ui")
    return _see_other("/ui/login?error=1")


async def logout(request: web.Request) -> web.Response:
    """Revokes the session (on every replica, at once) and clears the cookie."""
    given = request.cookies.get(api.UI_COOKIE, "")
    if given and len(given) <= MAX_SESSION_ID:
        await request.app[keys.SERVICE].db.execute(sql.queries["ui_session_revoke"], session_hash(given))
    response = _see_other("/ui/login")
    response.del_cookie(
        api.UI_COOKIE, path="/", httponly=True, samesite="Strict", secure=_cookie_secure(request)
    )
    return response
