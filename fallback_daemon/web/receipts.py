"""Provider receipt endpoints: acknowledged (200 {"code":0}) only after the receipts are committed."""

from __future__ import annotations

import hmac

from aiohttp import web

from fallback_daemon.core import receipts
from fallback_daemon.web import keys

ACK = {"code": 0, "msg": "success"}


def setup(app: web.Application) -> None:
    app.router.add_post("/receipts/{token}/chatapp", chatapp)
    app.router.add_post("/receipts/{token}/sms", sms)


def check_token(request: web.Request) -> None:
    """Wrong token → 404, as if the URL did not exist; compared in constant time."""
    expected = request.app[keys.SETTINGS].receipt_token.reveal().encode()
    given = request.match_info["token"].encode()
    if not expected or not hmac.compare_digest(given, expected):
        raise web.HTTPNotFound()


async def chatapp(request: web.Request) -> web.Response:
    check_token(request)
    parsed = receipts.parse_chatapp_reports(await request.read())
    await request.app[keys.SERVICE].push_chat(parsed, "http")  # committed (and logged) with its group
    return web.json_response(ACK)


async def sms(request: web.Request) -> web.Response:
    check_token(request)
    parsed = receipts.parse_sms_reports(await request.read())
    await request.app[keys.SERVICE].push_sms(parsed, "http")
    return web.json_response(ACK)
