"""/v1 operator routes: search, stats, actions (cancel, fire, re-drive, held, dead letters), OpenAPI.

Handlers stay thin: parse and validate, one `operations` call, a JSON answer. Reads need a token with the
`read` scope, actions one with the `operate` scope (web/tokens.py: the operator, read and API tokens), except
the OpenAPI document, which holds no data.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Collection
from typing import Any, Literal

from aiohttp import web

from fallback_daemon.core import errors, validation
from fallback_daemon.ops import advice, operations, opinput, opstats
from fallback_daemon.web import api, keys, openapi

DEAD_LETTER_PARAMS = ("pending", "limit", "cursor")
STATS_PARAMS = ("window",)
SERIES_PARAMS = ("window", "channel")
LATENCY_PARAMS = ("window", "channel", "prefix", "target")
CHANNEL_RE = re.compile(r"[a-z]{1,32}")
PREFIX_RE = re.compile(r"\+?[0-9]{1,6}")
ACTION_FIELDS = ("actor", "reason")
HELD_FIELDS = (*ACTION_FIELDS, "channel", "hold_reason", "ids", "all", "limit", "force")


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/messages", search)
    app.router.add_get("/v1/stats", stats)
    app.router.add_get("/v1/stats/series", stats_series)
    app.router.add_get("/v1/stats/latency", stats_latency)
    app.router.add_post("/v1/messages/{id}/cancel", cancel)
    app.router.add_post("/v1/messages/{id}/fire", fire)
    app.router.add_post("/v1/messages/{id}/redrive", redrive)
    app.router.add_post("/v1/held/release", held_release)
    app.router.add_post("/v1/held/drop", held_drop)
    app.router.add_get("/v1/dead-letters", dead_letters)
    app.router.add_post("/v1/dead-letters/{id}/replay", replay)
    app.router.add_get("/v1/openapi.json", openapi_json)


def ops(request: web.Request) -> operations.Operations:
    return operations.Operations(request.app[keys.SERVICE])


def query(request: web.Request, accepted: Collection[str]) -> dict[str, str]:
    """The query string as a dict; an unknown or repeated parameter is a 400 naming it."""
    out: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in accepted:
            raise errors.ValidationError(name, f"unknown parameter (accepted: {', '.join(sorted(accepted))})")
        if name in out:
            raise errors.ValidationError(name, "given more than once")
        out[name] = value
    return out


async def body(request: web.Request, accepted: Collection[str]) -> dict[str, Any]:
    """An optional JSON object body; an unknown field is a 400 naming it."""
    raw = await request.read()
    if not raw.strip():
        return {}
    value = validation.loads_body(raw)  # NUL / lone surrogates: Postgres cannot store them (400, not 503)
    if not isinstance(value, dict):
        raise errors.ValidationError("body", "must be a JSON object")
    for name in value:
        if name not in accepted:
            raise errors.ValidationError(str(name), f"unknown field (accepted: {', '.join(accepted)})")
    return value


def message_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise errors.ValidationError("id", "not a message id") from None


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise errors.ValidationError(name, "must be true or false")
    return value


# ---- reads -------------------------------------------------------------------------------------------------
async def search(request: web.Request) -> web.Response:
    """GET /v1/messages: search with keyset pagination; `links.next` is the next page's URL."""
    api.check_bearer(request, "read")
    s = opinput.parse_search(request.query.items())
    page = await ops(request).search(s)
    if page["next_cursor"]:
        page["links"] = {"next": str(request.rel_url.update_query(cursor=page["next_cursor"]))}
    return web.json_response(page)


async def stats(request: web.Request) -> web.Response:
    api.check_bearer(request, "read")
    q = query(request, STATS_PARAMS)
    window = opinput.parse_int("window", q.get("window"), 1, opstats.WINDOW_MAX, opstats.WINDOW_DEFAULT)
    return web.json_response(await opstats.collect(request.app[keys.SERVICE].db, window))


def channel_param(value: str | None) -> str | None:
    if value is not None and not CHANNEL_RE.fullmatch(value):
        raise errors.ValidationError("channel", "must be a channel name such as whatsapp (a-z, 1..32)")
    return value


async def stats_series(request: web.Request) -> web.Response:
    """GET /v1/stats/series: per-minute counts by channel for the page's charts (opstats.series)."""
    api.check_bearer(request, "read")
    q = query(request, SERIES_PARAMS)
    window = opinput.parse_int(
        "window", q.get("window"), 60, opstats.SERIES_WINDOW_MAX, opstats.SERIES_WINDOW_DEFAULT
    )
    channel = channel_param(q.get("channel"))
    return web.json_response(await opstats.series(request.app[keys.SERVICE].db, window, channel))


def target_param(value: str | None) -> float:
    if value is None:
        return advice.TARGET_DEFAULT
    try:
        target = float(value) if len(value) <= 32 else math.nan
    except ValueError:
        target = math.nan
    if not 0 < target <= 0.5:  # NaN fails too
        raise errors.ValidationError("target", "must be a double-delivery rate above 0 and at most 0.5")
    return target


async def stats_latency(request: web.Request) -> web.Response:
    """GET /v1/stats/latency: delivery/read time distributions and the FallBackDuration advice (advice.py)."""
    api.check_bearer(request, "read")
    q = query(request, LATENCY_PARAMS)
    window = opinput.parse_int("window", q.get("window"), 60, advice.WINDOW_MAX, advice.WINDOW_DEFAULT)
    prefix = q.get("prefix")
    if prefix is not None and not PREFIX_RE.fullmatch(prefix):
        raise errors.ValidationError("prefix", "must be a dialing-code prefix: 1..6 digits, e.g. 65")
    body = await advice.latency(
        request.app[keys.SERVICE].db,
        window_s=window,
        channel=channel_param(q.get("channel")),
        prefix=prefix.lstrip("+") if prefix else None,
        target=target_param(q.get("target")),
        timer_scale=request.app[keys.SETTINGS].sandbox_timer_scale,
    )
    return web.json_response(body)


async def dead_letters(request: web.Request) -> web.Response:
    api.check_bearer(request, "read")
    q = query(request, DEAD_LETTER_PARAMS)
    pending = q.get("pending", "true")
    if pending not in ("true", "false"):
        raise errors.ValidationError("pending", "must be true or false")
    limit = opinput.parse_int("limit", q.get("limit"), 1, opinput.LIMIT_MAX, opinput.LIMIT_DEFAULT)
    before = opinput.parse_int("cursor", q.get("cursor"), 1, 2**63 - 1, 0) or None
    return web.json_response(
        await ops(request).dead_letters(pending=pending == "true", limit=limit, before=before)
    )


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


# ---- actions -----------------------------------------------------------------------------------------------
async def _single(request: web.Request, verb: Literal["cancel", "fire"]) -> web.Response:
    api.check_bearer(request, "operate")
    mid = message_id(request)
    action = opinput.parse_action(await body(request, ACTION_FIELDS))
    return web.json_response(await ops(request).act(mid, verb, action))


async def cancel(request: web.Request) -> web.Response:
    """Cancel a pending (armed or held) fallback: it will never fire."""
    return await _single(request, "cancel")


async def fire(request: web.Request) -> web.Response:
    """Fire a pending (armed or held) fallback now; a held `sms_unknown` one needs force=true."""
    api.check_bearer(request, "operate")
    mid = message_id(request)
    b = await body(request, (*ACTION_FIELDS, "force"))
    force = flag("force", b.pop("force", False))
    return web.json_response(await ops(request).act(mid, "fire", opinput.parse_action(b), force=force))


async def redrive(request: web.Request) -> web.Response:
    api.check_bearer(request, "operate")
    mid = message_id(request)
    b = await body(request, (*ACTION_FIELDS, "force"))
    force = flag("force", b.pop("force", False))
    return web.json_response(await ops(request).redrive(mid, opinput.parse_action(b), force=force))


async def _held(request: web.Request, verb: Literal["release", "drop"]) -> web.Response:
    api.check_bearer(request, "operate")
    b = await body(request, HELD_FIELDS)
    channel, hold_reason, raw_ids = b.pop("channel", None), b.pop("hold_reason", None), b.pop("ids", None)
    everything = flag("all", b.pop("all", False))
    force = flag("force", b.pop("force", False))
    limit = b.pop("limit", opinput.HELD_LIMIT_DEFAULT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= opinput.HELD_LIMIT_MAX:
        raise errors.ValidationError("limit", f"must be an integer from 1 to {opinput.HELD_LIMIT_MAX}")
    for name, value in (("channel", channel), ("hold_reason", hold_reason)):
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= opinput.TEXT_MAX):
            raise errors.ValidationError(name, f"must be a string of 1..{opinput.TEXT_MAX} characters")
    ids = None
    if raw_ids is not None:
        if not isinstance(raw_ids, list) or not raw_ids or len(raw_ids) > opinput.HELD_LIMIT_MAX:
            raise errors.ValidationError("ids", f"must be a list of 1..{opinput.HELD_LIMIT_MAX} message ids")
        try:
            ids = [uuid.UUID(str(v)) for v in raw_ids]
        except ValueError:
            raise errors.ValidationError("ids", "must hold message ids (UUIDs)") from None
    if channel is None and hold_reason is None and ids is None and not everything:
        # Held fallbacks are often a whole wave (the receipt feed was down): acting on all needs saying so.
        raise errors.ValidationError(
            "all", "give channel, hold_reason or ids, or all=true to act on every one"
        )
    result = await ops(request).held(
        verb,
        opinput.parse_action(b),
        channel=channel,
        hold_reason=hold_reason,
        ids=ids,
        limit=limit,
        force=force,
    )
    return web.json_response(result)


async def held_release(request: web.Request) -> web.Response:
    """Release held fallbacks: they fire now."""
    return await _held(request, "release")


async def held_drop(request: web.Request) -> web.Response:
    """Drop held fallbacks: they never fire (fallback state `suppressed`)."""
    return await _held(request, "drop")


async def replay(request: web.Request) -> web.Response:
    api.check_bearer(request, "operate")
    dead_id = opinput.parse_int("id", request.match_info["id"], 1, 2**63 - 1, 0)
    action = opinput.parse_action(await body(request, ACTION_FIELDS))
    return web.json_response(await ops(request).replay(dead_id, action))
