"""The operator page /ui: a static HTML+JS page over the JSON API, behind the read or operator token.

A token with the `read` scope (web/tokens.py: FALLBACK_READ_TOKEN, FALLBACK_OPERATOR_TOKEN, or the API token
while no read token is set) is given once (the /ui/login form, or `/ui?token=…`, which redirects at once so
the token leaves the address bar) and opens a server-side session: the cookie holds a random id (256 bits),
the `ui_sessions` table (migration 0006) only its SHA-256, with an expiry (`FALLBACK_UI_SESSION_TTL_S`, on
the database clock) and a revocation mark set by logout; every replica sees the same sessions, and they
survive restarts. Each row holds a digest of the token the session was opened with: the session has that
token's role, with the scopes the role has *now*, and ends when that token changes or is removed.

The cookie is HttpOnly, SameSite=Strict, `Secure` when the request came over TLS or `FALLBACK_PUBLIC_URL`
is https (a TLS proxy in front). It opens /v1 reads on GET/HEAD; a POST (an action) only together with the
`X-CSRF-Token` header, a keyed digest of the session id that the page reads from GET /ui/session (a
cross-site page can neither read that answer nor compute it), and only for a session whose token may
operate (the operator token, or the API token while no operator token is set). A read-token session acts
by asking for the operator token, which the page then sends as a bearer header from memory (never stored).
The token is never logged. `/` and `/ui/` redirect to `/ui`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pathlib
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from fallback_daemon.db import sql
from fallback_daemon.web import api, keys, tokens

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
    app.router.add_get("/ui/session", session_info)
    app.router.add_static("/ui/static", STATIC, append_version=False)
    app.middlewares.append(session_middleware)  # inside the error boundary: a database error is its 503
    app.on_response_prepare.append(_security_headers)


def session_hash(session_id: str) -> str:
    """What the table stores: the SHA-256 (hex) of the id, never the id."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def token_fingerprint(token: str) -> str:
    """A digest of the token a session belongs to (keyed, so it says nothing about the token)."""
    return hmac.new(token.encode(), b"fallback-daemon-ui-session-v2", hashlib.sha256).hexdigest()


def csrf_token(session_id: str) -> str:
    """The `X-CSRF-Token` a session's POSTs carry: a keyed digest of its (HttpOnly) id."""
    key = session_id.encode("utf-8", "surrogateescape")
    return hmac.new(key, b"fallback-daemon-ui-csrf-v1", hashlib.sha256).hexdigest()


def _cookie(request: web.Request) -> str | None:
    given = request.cookies.get(api.UI_COOKIE, "")
    return given if given and len(given) <= MAX_SESSION_ID else None


async def session_role(request: web.Request) -> tokens.Role | None:
    """The role of the live session the request's cookie names (None: no live session, or its token has
    changed, or the role may no longer read, e.g. the API token once FALLBACK_READ_TOKEN is set)."""
    given = _cookie(request)
    if given is None:
        return None
    settings = request.app[keys.SETTINGS]
    fp = await request.app[keys.SERVICE].db.fetchval(sql.queries["ui_session_token_fp"], session_hash(given))
    if fp is None:
        return None
    for role, token in tokens.configured(settings).items():
        if hmac.compare_digest(fp, token_fingerprint(token)) and role in tokens.allowed(settings, "read"):
            return role
    return None


async def session_valid(request: web.Request) -> bool:
    return await session_role(request) is not None


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a cookie-bearing /v1 request without an Authorization header, mark the live session's role
    (`tokens.check` reads the mark): on GET/HEAD always, on other methods only with the session's CSRF
    header."""
    if (
        request.path.startswith("/v1/")
        and api.UI_COOKIE in request.cookies
        and ("Authorization" not in request.headers)
    ):
        given = _cookie(request)
        csrf = request.headers.get("X-CSRF-Token", "")
        reading = request.method in ("GET", "HEAD")
        if given is not None and (
            reading
            or hmac.compare_digest(csrf.encode("utf-8", "surrogateescape"), csrf_token(given).encode())
        ):
            role = await session_role(request)
            if role is not None:
                request[tokens.SESSION_ROLE] = role
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path == "/ui" or request.path.startswith("/ui/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def _login_role(request: web.Request, token: str) -> tokens.Role | None:
    """The role of a token that may open a session (one with the read scope), else None."""
    settings = request.app[keys.SETTINGS]
    role = tokens.identify(settings, token)
    return role if role is not None and role in tokens.allowed(settings, "read") else None


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def _cookie_secure(request: web.Request) -> bool:
    return request.secure or request.app[keys.SETTINGS].public_url.lower().startswith("https://")


async def _redirect_with_session(request: web.Request, role: tokens.Role, location: str) -> web.Response:
    settings = request.app[keys.SETTINGS]
    session_id = secrets.token_urlsafe(32)
    db = request.app[keys.SERVICE].db
    await db.execute(sql.queries["ui_sessions_purge"])
    await db.execute(
        sql.queries["ui_session_open"],
        session_hash(session_id),
        token_fingerprint(tokens.configured(settings)[role]),
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
        role = _login_role(request, token)
        if role is not None:
            return await _redirect_with_session(request, role, "/ui")
        return _see_other("/ui/login?error=1")
    if not await session_valid(request):
        return _see_other("/ui/login")
    return _file("index.html")


async def login_form(request: web.Request) -> web.Response:
    return _file("login.html")


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    token = form.get("token")
    role = _login_role(request, token) if isinstance(token, str) else None
    if role is not None:
        return await _redirect_with_session(request, role, "/ui")
    return _see_other("/ui/login?error=1")


async def session_info(request: web.Request) -> web.Response:
    """GET /ui/session: what the signed-in page may do, and the CSRF token its actions send (401 without a
    live session). Same-origin only: no CORS header is ever set, so another site cannot read it."""
    role = await session_role(request)
    given = _cookie(request)
    if role is None or given is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": {"message": "no live /ui session; sign in at /ui/login"}}),
            content_type="application/json",
        )
    settings = request.app[keys.SETTINGS]
    operate = tokens.allowed(settings, "operate")
    body = {
        "role": role,
        "signed_in_with": tokens.VARS[role],
        "can_act": role in operate,
        "operator_token": [tokens.VARS[r] for r in operate],
        "csrf_token": csrf_token(given),
    }
    return web.json_response(body, headers=HEADERS)


async def logout(request: web.Request) -> web.Response:
    """Revokes the session (on every replica, at once) and clears the cookie."""
    given = _cookie(request)
    if given is not None:
        await request.app[keys.SERVICE].db.execute(sql.queries["ui_session_revoke"], session_hash(given))
    response = _see_other("/ui/login")
    response.del_cookie(
        api.UI_COOKIE, path="/", httponly=True, samesite="Strict", secure=_cookie_secure(request)
    )
    return response
