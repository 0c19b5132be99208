"""/v1: the send API (single and batch) and message lookup, behind a bearer token."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

from aiohttp import web

from fallback_daemon import errors, validation
from fallback_daemon.web import keys

MAX_KEY = 255
UI_COOKIE = "fallback_ui"  # set by /ui/login (web/ui.py)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/messages", post_message)
    app.router.add_post("/v1/messages/batch", post_batch)
    app.router.add_get("/v1/messages/{id}", get_message)


def ui_session(api_token: str) -> str:
    """The /ui cookie value: derived from the API token, so the browser never stores the token itself."""
    return hmac.new(api_token.encode(), b"fallback-daemon-ui-v1", hashlib.sha256).hexdigest()


def check_bearer(request: web.Request) -> None:
    """The bearer token; on GET/HEAD the /ui session cookie counts too (read-only: actions need the token)."""
    expected = request.app[keys.SETTINGS].api_token.reveal()
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and request.method in ("GET", "HEAD") and expected and UI_COOKIE in request.cookies:
        scheme, token = "bearer", request.cookies[UI_COOKIE]
        expected = ui_session(expected)
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(token.encode(), expected.encode())
    ):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": {"message": "missing or wrong bearer token"}}),
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    return validation.loads("body", raw)


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise errors.ValidationError("Idempotency-Key", f"must be 1..{MAX_KEY} printable characters")
    return key


async def post_message(request: web.Request) -> web.Response:
    check_bearer(request)
    key = idempotency_key(request)
    req = validation.validate_send(await read_json(request))
    [accepted] = await request.app[keys.SERVICE].accept([req], [key])
    return web.json_response(
        {"id": str(accepted.id), "state": "accepted", "created": accepted.created},
        status=202 if accepted.created else 200,
    )


async def post_batch(request: web.Request) -> web.Response:
    """{"messages": [...]}; with an Idempotency-Key header, item i uses "<key>:<i>"."""
    check_bearer(request)
    key = idempotency_key(request)
    reqs = validation.validate_batch(await read_json(request))
    item_keys = [None if key is None else f"{key}:{i}" for i in range(len(reqs))]
    accepted = await request.app[keys.SERVICE].accept(reqs, item_keys)
    return web.json_response(
        {"messages": [{"id": str(a.id), "state": "accepted", "created": a.created} for a in accepted]},
        status=202,
    )


async def get_message(request: web.Request) -> web.Response:
    check_bearer(request)
    try:
        message_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise errors.ValidationError("id", "not a message id") from None
    view = await request.app[keys.SERVICE].get_message(message_id)
    if view is None:
        raise errors.NotFound(f"no message {message_id}")
    return web.json_response(view)
