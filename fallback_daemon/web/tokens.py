"""Which bearer token opens which route: the API (send) token, the operator token, the read token (issue 13).

Three roles, each a token of its own (config.check_tokens_distinct refuses two equal ones):

| scope: routes                                          | API token         | OPERATOR | READ |
|--------------------------------------------------------|-------------------|----------|------|
| send: POST /v1/messages, /v1/messages/batch             | yes               | 403      | 403  |
| message: GET /v1/messages/{id}                          | yes               | yes      | yes  |
| read: search, stats, series, latency, dead letters, (*) | unless READ set   | yes      | yes  |
| operate: cancel, fire, redrive, held release/drop,      | unless OPERATOR   | yes      | 403  |
|   dead-letter replay                                    | set               |          |      |

(*) /metrics only with FALLBACK_METRICS_REQUIRE_TOKEN=true; otherwise it is open.

Each new token, once set, takes its scope away from the API token: an application's send token then can
neither act on fallbacks nor search every phone number; it can still read the messages it sent (by id). With
neither new token set everything works as before with the API token alone, and the daemon logs
`operator_token_unset` at start.

A /ui session belongs to the token it was opened with and has that token's scopes *now* (reads always; acts
only if the token may operate), never `send`. A session's cookie opens a POST only together with the
`X-CSRF-Token` header the page reads from GET /ui/session (web/ui.py).

No token, a token that is none of the three, or another scheme: 401. A known token without the scope: 403.
Both are JSON naming the variable(s) whose token the route takes. Every compare is constant-time, and every
configured token is compared (no early exit), so the answer's timing does not tell which role a token has.
"""

from __future__ import annotations

import hmac
import json
from typing import Literal, cast, get_args

import structlog
from aiohttp import web

from fallback_daemon import config
from fallback_daemon.web import keys

Role = Literal["api", "operator", "read"]
Scope = Literal["send", "message", "read", "operate"]
ROLES: tuple[Role, ...] = get_args(Role)
log = structlog.get_logger("fallback_daemon.web.tokens")
VARS: dict[Role, str] = {
    "api": "FALLBACK_API_TOKEN",
    "operator": "FALLBACK_OPERATOR_TOKEN",
    "read": "FALLBACK_READ_TOKEN",
}
# Set by ui.session_middleware on a cookie-bearing /v1 request without Authorization: the live session's role.
SESSION_ROLE = web.RequestKey("ui_session_role", str)


def configured(settings: config.Settings) -> dict[Role, str]:
    """The tokens that are set, by role."""
    values: dict[Role, config.Secret] = {
        "api": settings.api_token,
        "operator": settings.operator_token,
        "read": settings.read_token,
    }
    return {role: secret.reveal() for role, secret in values.items() if secret}


def allowed(settings: config.Settings, scope: Scope) -> tuple[Role, ...]:
    """The roles whose token opens `scope` under the current settings (the table above)."""
    have = configured(settings)
    roles: tuple[Role, ...]
    if scope == "send":
        roles = ("api",)
    elif scope == "message":
        roles = ("api", "operator", "read")
    elif scope == "read":
        roles = ("operator", "read") if "read" in have else ("api", "operator")
    else:
        roles = ("operator",) if "operator" in have else ("api",)
    return tuple(r for r in roles if r in have)


def identify(settings: config.Settings, given: str) -> Role | None:
    """The role whose token `given` is, compared in constant time against every configured token."""
    raw = given.encode("utf-8", "surrogateescape")
    found: Role | None = None
    for role, token in configured(settings).items():
        if hmac.compare_digest(raw, token.encode()):
            found = role
    return found


def warnings(settings: config.Settings) -> list[tuple[str, str]]:
    """(event, text) for a start-up warning when the API token still carries the operator scopes."""
    out = []
    if not settings.operator_token:
        out.append(
            (
                "operator_token_unset",
                "FALLBACK_API_TOKEN also authorises operator actions (cancel, fire, redrive, held, replay); "
                "set FALLBACK_OPERATOR_TOKEN to keep them away from the applications' send token",
            )
        )
    return out


def log_warnings(settings: config.Settings) -> None:
    """Log `warnings(settings)`, once at start."""
    for event, text in warnings(settings):
        log.warning(event, message=text)


def _names(roles: tuple[Role, ...]) -> list[str]:
    return [VARS[r] for r in roles]


def _refuse(status: int, message: str, roles: tuple[Role, ...]) -> web.HTTPException:
    body = {"error": {"message": message, "field": "Authorization", "tokens": _names(roles)}}
    kind = web.HTTPUnauthorized if status == 401 else web.HTTPForbidden
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return kind(text=json.dumps(body), content_type="application/json", headers=headers)


def check(request: web.Request, scope: Scope) -> Role:
    """The role of the request's bearer token (or /ui session); raises 401/403 JSON when it may not."""
    settings = request.app[keys.SETTINGS]
    roles = allowed(settings, scope)
    takes = " or ".join(_names(roles)) or "a token that is not configured"
    header = request.headers.get("Authorization", "")
    if not header:
        mark = request.get(SESSION_ROLE)
        if mark is not None and scope != "send":
            session = cast(Role, mark)
            if session in roles:
                return session
            raise _refuse(
                403,
                f"this /ui session (signed in with {VARS[session]}) only reads; this takes {takes}",
                roles,
            )
        raise _refuse(401, f"missing bearer token; this route takes {takes}", roles)
    scheme, _, token = header.partition(" ")
    role = identify(settings, token) if scheme.lower() == "bearer" else None
    if role is None:
        raise _refuse(401, f"missing or wrong bearer token; this route takes {takes}", roles)
    if role not in roles:
        raise _refuse(403, f"{VARS[role]} may not do this; this route takes {takes}", roles)
    return role
