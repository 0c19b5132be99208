"""/v1/webhooks: subscriptions to outcome events, their deliveries, replay (docs/webhooks.md).

Creating, deleting, enabling and replaying need a token with the `operate` scope (a subscription receives
every matching event of every message); listing and the deliveries the `read` scope (web/tokens.py).
Bodies are the msgspec Structs of fallback_daemon/engine/webhooks.py.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from fallback_daemon.core import errors
from fallback_daemon.engine import webhooks
from fallback_daemon.ops import opinput
from fallback_daemon.web import api, keys, operator

NEW_FIELDS = tuple(webhooks.NewEndpoint.__struct_fields__)
REPLAY_FIELDS = tuple(webhooks.Replay.__struct_fields__)
DELIVERY_PARAMS = ("state", "limit", "cursor")
REPLAY_LIMIT_MAX = 100_000


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/webhooks", create)
    app.router.add_get("/v1/webhooks", list_endpoints)
    app.router.add_get("/v1/webhooks/{id}", get_endpoint)
    app.router.add_delete("/v1/webhooks/{id}", delete_endpoint)
    app.router.add_post("/v1/webhooks/{id}/enable", enable)
    app.router.add_post("/v1/webhooks/{id}/replay", replay)
    app.router.add_get("/v1/webhooks/{id}/deliveries", deliveries)


def _store(request: web.Request) -> webhooks.WebhookStore:
    return webhooks.WebhookStore(request.app[keys.SERVICE].db)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), status=status, content_type="application/json")


def _id(request: web.Request) -> int:
    return opinput.parse_int("id", request.match_info["id"], 1, 2**63 - 1, 0)


async def create(request: web.Request) -> web.Response:
    """POST /v1/webhooks → 201 with the endpoint and its secret (the only answer that shows it)."""
    api.check_bearer(request, "operate")
    raw = await operator.body(request, NEW_FIELDS)
    if "url" not in raw:
        raise errors.ValidationError("url", "required")
    new = webhooks.convert(raw, webhooks.NewEndpoint)
    return _json(await _store(request).create(new), status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    api.check_bearer(request, "read")
    operator.query(request, ())
    return _json(await _store(request).list_all())


async def get_endpoint(request: web.Request) -> web.Response:
    api.check_bearer(request, "read")
    return _json(await _store(request).get(_id(request)))


async def delete_endpoint(request: web.Request) -> web.Response:
    """DELETE /v1/webhooks/{id}: the subscription and its pending deliveries are gone."""
    api.check_bearer(request, "operate")
    return _json(await _store(request).delete(_id(request)))


async def enable(request: web.Request) -> web.Response:
    """Re-enable an endpoint disabled after continuous failures; its pending deliveries are due at once."""
    api.check_bearer(request, "operate")
    return _json(await _store(request).enable(_id(request)))


async def replay(request: web.Request) -> web.Response:
    """Send failed (and with include_delivered, delivered) deliveries again, same webhook-id."""
    api.check_bearer(request, "operate")
    endpoint_id = _id(request)
    body = webhooks.convert(await operator.body(request, REPLAY_FIELDS), webhooks.Replay)
    if not 1 <= body.limit <= REPLAY_LIMIT_MAX:
        raise errors.ValidationError("limit", f"must be an integer from 1 to {REPLAY_LIMIT_MAX}")
    if body.ids is not None and not 1 <= len(body.ids) <= opinput.HELD_LIMIT_MAX:
        raise errors.ValidationError("ids", f"must be a list of 1..{opinput.HELD_LIMIT_MAX} delivery ids")
    if body.ids is not None and any(not 1 <= i < 2**63 for i in body.ids):
        raise errors.ValidationError("ids", "must hold delivery ids (positive integers)")
    since = opinput.parse_time("since", str(body.since)) if body.since is not None else None
    return _json(await _store(request).replay(endpoint_id, body, since))


async def deliveries(request: web.Request) -> web.Response:
    """GET /v1/webhooks/{id}/deliveries?state=&limit=&cursor=: newest first."""
    api.check_bearer(request, "read")
    endpoint_id = _id(request)
    q = operator.query(request, DELIVERY_PARAMS)
    state = q.get("state")
    if state is not None and state not in webhooks.DELIVERY_STATES:
        raise errors.ValidationError("state", f"must be one of {', '.join(webhooks.DELIVERY_STATES)}")
    limit = opinput.parse_int("limit", q.get("limit"), 1, opinput.LIMIT_MAX, opinput.LIMIT_DEFAULT)
    before = opinput.parse_int("cursor", q.get("cursor"), 1, 2**63 - 1, 0) or None
    page = await _store(request).deliveries(endpoint_id, state=state, before=before, limit=limit)
    return _json(page)
