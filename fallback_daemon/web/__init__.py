"""The HTTP surface: public send API, receipt endpoints, health; `create_app` wires them."""

from __future__ import annotations

import json
from typing import Any

import prometheus_client
from aiohttp import web

from fallback_daemon import config, errors, health, service
from fallback_daemon.web import api, keys, operator, receipts, ui


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Map domain errors to JSON 4xx/5xx; never let an exception become an HTML 500."""
    try:
        return await handler(request)
    except errors.ValidationError as exc:
        return json_error(400, exc.problem, field=exc.field)
    except errors.NotFound as exc:
        return json_error(404, str(exc))
    except errors.Conflict as exc:
        return json_error(409, str(exc))
    except errors.StoreError:
        # Not acknowledged: a provider retries its receipt push; a client retries its send.
        return json_error(503, "database unavailable, retry later")
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "body too large", field="body")
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return json_error(exc.status, exc.reason)
        raise


def json_error(status: int, message: str, *, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"message": message}}
    if field is not None:
        body["error"]["field"] = field
    return web.json_response(body, status=status, dumps=json.dumps)


def create_app(settings: config.Settings, svc: service.Service) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[error_middleware])
    app[keys.SETTINGS] = settings
    app[keys.SERVICE] = svc
    app[keys.READY] = {"ready": False}
    api.setup(app)
    receipts.setup(app)
    operator.setup(app)  # operator API (/v1 search, stats, actions, OpenAPI)
    ui.setup(app)  # operator page (/ui)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format; database-backed gauges are refreshed on each scrape."""
    await health.refresh_gauges(request.app[keys.SERVICE])
    body = prometheus_client.generate_latest()
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the loops run and the database answers."""
    if not request.app[keys.READY]["ready"]:
        return json_error(503, "starting or stopping")
    await request.app[keys.SERVICE].db.fetchval("SELECT 1")
    return web.json_response({"status": "ready"})
