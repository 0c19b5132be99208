"""/v1: the send API (single and batch) and message lookup, behind a bearer token."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from aiohttp import web

from fallback_daemon.core import errors, model, validation
from fallback_daemon.engine import service
from fallback_daemon.web import keys, schemas, tokens

MAX_KEY = 255
UI_COOKIE = "fallback_ui"  # set by /ui/login (web/ui.py)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/messages", post_message)
    app.router.add_post("/v1/messages/batch", post_batch)
    app.router.add_get("/v1/messages/{id}", get_message)


def check_bearer(request: web.Request, scope: tokens.Scope | None = None) -> tokens.Role:
    """The role of the request's bearer token (or /ui session) if it opens `scope`; else a 401/403 JSON
    naming the token the route takes (web/tokens.py has the matrix). Without `scope`: `message` on GET/HEAD
    (reading one message), `send` otherwise.

    Compared as bytes in constant time; a header that is not UTF-8 (surrogate-escaped by aiohttp) is refused
    by the error middleware before this runs, and is encoded losslessly here in case it does not.
    """
    if scope is None:
        scope = "message" if request.method in ("GET", "HEAD") else "send"
    return tokens.check(request, scope)


async def read_json(request: web.Request) -> Any:
    """The decoded JSON body; text Postgres cannot store (NUL, lone surrogates) is a 400 naming its path."""
    return validation.loads_body(await request.read())


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise errors.ValidationError("Idempotency-Key", f"must be 1..{MAX_KEY} printable characters")
    return key


# Keys are scoped to their endpoint, as stored: a single send keyed "k:0" and item 0 of a batch keyed "k"
# are different messages. In the batch scope "<key>:<i>" is unique: the index after the last ':' is digits.
def single_key(key: str | None) -> str | None:
    return None if key is None else f"single:{key}"


def batch_keys(key: str | None, count: int) -> list[str | None]:
    return [None if key is None else f"batch:{key}:{i}" for i in range(count)]


def accepted_view(a: service.Accepted) -> schemas.Accepted:
    """A new message (`state: accepted`), or the one the key named, in its current state (a replay)."""
    return schemas.Accepted(
        id=a.id,
        state=model.CHAT_STATES[a.chat_state],
        fallback_state=model.FALLBACK_STATES[str(a.fallback_state)],  # always set by accept (None: a fault)
        created=a.created,
    )


def struct_response(value: msgspec.Struct, *, status: int = 200) -> web.Response:
    """A JSON answer encoded from its struct (web/schemas.py), so it has exactly the documented fields."""
    return web.Response(body=msgspec.json.encode(value), status=status, content_type="application/json")


async def post_message(request: web.Request) -> web.Response:
    """POST /v1/messages: 202 with the new id; a replayed Idempotency-Key: 200 and the message as it is now;
    the key with another body: 422."""
    check_bearer(request)
    key = idempotency_key(request)
    body = await read_json(request)
    req = validation.validate_send(body)
    digest = None if key is None else validation.request_digest(body)
    # Group-committed with the POSTs arriving beside it; a key is checked for this POST alone.
    accepted = await request.app[keys.SERVICE].accept_post(req, single_key(key), digest)
    return struct_response(accepted_view(accepted), status=202 if accepted.created else 200)


async def post_batch(request: web.Request) -> web.Response:
    """{"messages": [...]}; with an Idempotency-Key, item i is keyed "<key>:<i>" in the batch scope, and the
    whole body is the request the key stands for (another body with the same key: 422, nothing stored)."""
    check_bearer(request)
    key = idempotency_key(request)
    body = await read_json(request)
    reqs = validation.validate_batch(body)
    digest = validation.request_digest(body) if key is not None else None
    accepted = await request.app[keys.SERVICE].accept(reqs, batch_keys(key, len(reqs)), request_hash=digest)
    return struct_response(
        schemas.BatchAccepted(messages=[accepted_view(a) for a in accepted]),
        status=202 if any(a.created for a in accepted) else 200,
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
