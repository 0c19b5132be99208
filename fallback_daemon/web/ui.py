"""The operator page /ui: a static HTML+JS page over the JSON API, behind the same token.

The token is given once (the /ui/login form, or `/ui?token=…`, which redirects at once so the token
leaves the address bar) and turned into an HttpOnly, SameSite=Strict cookie holding a value derived from
it (`api.ui_session`); the cookie is accepted on GET only, so it cannot be used for cross-site actions. The
page's actions (cancel, fire, re-drive, held release/drop) ask for the token again and send it as a bearer
header from memory (never stored). The token is never logged (the daemon has no access log).
`/` and `/ui/` redirect to `/ui`.
"""

from __future__ import annotations

import hmac
import pathlib

from aiohttp import web

from fallback_daemon.web import api, keys

STATIC = pathlib.Path(__file__).resolve().parent / "static"
COOKIE_MAX_AGE = 12 * 3600
PAGES = {name: (STATIC / name).read_bytes() for name in ("index.html", "login.html")}  # read once, at import
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def setup(app: web.Application) -> None:
    app.router.add_get("/", to_page)
    app.router.add_get("/ui/", to_page)
    app.router.add_get("/ui", page)
    app.router.add_get("/ui/login", login_form)
    app.router.add_post("/ui/login", login)
    app.router.add_post("/ui/logout", logout)
    app.router.add_static("/ui/static", STATIC, append_version=False)


def _session_ok(request: web.Request) -> bool:
    expected = request.app[keys.SETTINGS].api_token.reveal()
    given = request.cookies.get(api.UI_COOKIE, "")
    return bool(expected) and hmac.compare_digest(given.encode(), api.ui_session(expected).encode())


def _token_ok(request: web.Request, token: str) -> bool:
    expected = request.app[keys.SETTINGS].api_token.reveal()
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def _redirect_with_session(request: web.Request, location: str) -> web.Response:
    response = _see_other(location)
    response.set_cookie(
        api.UI_COOKIE,
        api.ui_session(request.app[keys.SETTINGS].api_token.reveal()),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
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
            return _redirect_with_session(request, "/ui")
        return _see_other("/ui/login?error=1")
    if not _session_ok(request):
        return _see_other("/ui/login")
    return _file("index.html")


async def login_form(request: web.Request) -> web.Response:
    return _file("login.html")


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    token = form.get("token")
    if isinstance(token, str) and _token_ok(request, token):
        return _redirect_with_session(request, "/ui")
    return _see_other("/ui/login?error=1")


async def logout(request: web.Request) -> web.Response:
    response = _see_other("/ui/login")
    response.del_cookie(api.UI_COOKIE, path="/")
    return response
