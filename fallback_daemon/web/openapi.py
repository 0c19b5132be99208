"""The OpenAPI 3.1 document served at GET /v1/openapi.json, generated from the structs in `web/schemas.py`.

Each operation is one `Operation` entry: its method and path, what it takes (parameters, a request struct)
and what it answers (a response struct, error statuses), and who may call it. The schemas come from the
structs through `msgspec.json.schema_components`, so a body is described where it is declared and a limit
(`Meta(max_length=…)`) is written once. tests/integration/test_openapi.py checks the document against the
router (every route is documented and every documented route exists), against what the handlers accept
(query parameters, body fields) and against real answers (they validate against their schemas).

**Adding an operation** (a module with new routes, e.g. webhooks): declare its bodies as structs, then

    from fallback_daemon.web import openapi

    openapi.register(
        openapi.operation(
            "POST",
            "/v1/webhooks",
            summary="Register a webhook",
            scope="operate",
            request=WebhookBody,  # a msgspec.Struct; None: no body
            response=Webhook,  # the struct of the success answer
            status=201,
            errors=(400, 401, 403, 409),
        )
    )

at import time or in the module's `setup(app)` (registering the same operation twice is a no-op; a
different one for a method and path already documented raises ValueError). Path parameters are declared with
`path_param`, query parameters with `query`, headers with `header`. `auth="public"` marks a route that takes
no token, `auth="bearer-if-configured"` one that takes it only when a setting says so (/metrics).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from fallback_daemon.engine import webhooks
from fallback_daemon.ops import advice, opinput, opstats
from fallback_daemon.web import schemas

JSON = "application/json"
REF = "#/components/schemas/{name}"
Auth = Literal["bearer", "public", "bearer-if-configured"]
Location = Literal["query", "path", "header"]
# Components every document has even when no operation names them directly (Message.events refers to
# TimelineEvent by $ref; every error answer is an Error).
ALWAYS = (schemas.Error, schemas.TimelineEvent)

ERROR_TEXT: Mapping[int, str] = {
    400: "invalid input (names the field, header or parameter)",
    401: "missing or unknown bearer token",
    403: "a known token without the scope this operation needs",
    404: "no such object",
    408: "the body did not arrive within the body deadline (30 s)",
    409: "the current state does not allow it (the refusal is recorded in the timeline)",
    413: "body too large (also once decoded from its Content-Encoding)",
    415: "a Content-Encoding other than gzip, deflate or identity",
    422: "the Idempotency-Key was first used with a different request body (nothing stored)",
    503: "database unavailable, retry later",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Param:
    """One parameter. `schema` is a type msgspec can describe (`int`, `Annotated[...]`, a struct) or a
    JSON Schema mapping."""

    name: str
    location: Location
    description: str
    schema: Any
    required: bool = False


def query(name: str, description: str, schema: Any) -> Param:
    return Param(name=name, location="query", description=description, schema=schema)


def path_param(name: str, description: str, schema: Any) -> Param:
    return Param(name=name, location="path", description=description, schema=schema, required=True)


def header(name: str, description: str, schema: Any, *, required: bool = False) -> Param:
    return Param(name=name, location="header", description=description, schema=schema, required=required)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Operation:
    """One documented operation (see the module docstring; build it with `operation`)."""

    method: str
    path: str
    summary: str
    description: str = ""
    auth: Auth = "bearer"
    scope: str | None = None  # the token scope it needs (web/tokens.py): send, message, read, operate
    parameters: tuple[Param, ...] = ()
    request: Any = None  # the JSON body's type (a struct); None: no body
    request_required: bool = True
    request_also: tuple[tuple[str, Mapping[str, Any]], ...] = ()  # other media types: (type, JSON Schema)
    response: Any = None  # the success answer's type (a struct; `str` for a text body); None: no body
    status: int = 200
    response_description: str = "OK"
    media_type: str = JSON
    also: tuple[tuple[int, str], ...] = ()  # further success statuses with the same body: (status, text)
    errors: tuple[int | tuple[int, str], ...] = ()  # a status (text from ERROR_TEXT) or (status, text)


def operation(
    method: str,
    path: str,
    *,
    summary: str,
    description: str = "",
    auth: Auth = "bearer",
    scope: str | None = None,
    parameters: Iterable[Param] = (),
    request: Any = None,
    request_required: bool = True,
    request_also: Iterable[tuple[str, Mapping[str, Any]]] = (),
    response: Any = None,
    status: int = 200,
    response_description: str = "OK",
    media_type: str = JSON,
    also: Iterable[tuple[int, str]] = (),
    errors: Iterable[int | tuple[int, str]] = (),
) -> Operation:
    """An `Operation`; pass it to `register` (from another module) or list it in `BUILTIN`."""
    return Operation(
        method=method.upper(),
        path=path,
        summary=summary,
        description=description,
        auth=auth,
        scope=scope,
        parameters=tuple(parameters),
        request=request,
        request_required=request_required,
        request_also=tuple(request_also),
        response=response,
        status=status,
        response_description=response_description,
        media_type=media_type,
        also=tuple(also),
        errors=tuple(errors),
    )


_REGISTERED: dict[tuple[str, str], Operation] = {}


def register(*ops: Operation) -> None:
    """Add operations to the document (see the module docstring).

    Raises:
        ValueError: another operation is documented for the same method and path.
    """
    for op in ops:
        key = (op.method, op.path)
        known = _builtin_keys().get(key) or _REGISTERED.get(key)
        if known == op:
            continue
        if known is not None:
            raise ValueError(f"{op.method} {op.path} is documented already")
        _REGISTERED[key] = op
        document.cache_clear()


def operations() -> tuple[Operation, ...]:
    """Every documented operation: the built-in ones, then the registered ones in registration order."""
    return (*builtin(), *(op for key, op in _REGISTERED.items() if key not in _builtin_keys()))


@functools.cache
def builtin() -> tuple[Operation, ...]:
    """The daemon's own operations: `BUILTIN` and those of modules that import this one (web/guards.py →
    web/operator.py → here), built on first use rather than at import time."""
    return (*BUILTIN, *_guard_operations())


@functools.cache
def _builtin_keys() -> dict[tuple[str, str], Operation]:
    return {(op.method, op.path): op for op in builtin()}


# ---- the daemon's own operations -------------------------------------------------------------------------
MESSAGE_ID = path_param("id", "Our message id.", {"type": "string", "format": "uuid"})
IDEMPOTENCY_KEY = header(
    "Idempotency-Key",
    "Scoped to the endpoint (a batch's item i is keyed apart from any single send). The same key with the"
    " same body (key order and whitespace aside) replays the answer; another body is a 422.",
    {"type": "string", "minLength": 1, "maxLength": 255},
)
RECEIPT_TOKEN = path_param("token", "The receipt secret (FALLBACK_RECEIPT_TOKEN).", {"type": "string"})
SEND_ERRORS = (400, 401, 403, 408, 413, 415, 422, 503)
ACTION_ERRORS = (400, 401, 403, 404, 409)


def _action(verb: str, summary: str, description: str, body: type[schemas.ActionBody]) -> Operation:
    return operation(
        "POST",
        f"/v1/messages/{{id}}/{verb}",
        summary=summary,
        description=description,
        scope="operate",
        parameters=[MESSAGE_ID],
        request=body,
        request_required=False,
        response=schemas.ActionResult,
        response_description="done",
        errors=ACTION_ERRORS,
    )


def _held(verb: str, description: str) -> Operation:
    return operation(
        "POST",
        f"/v1/held/{verb}",
        summary=f"{verb.capitalize()} held fallbacks",
        description=description,
        scope="operate",
        request=schemas.HeldBody,
        response=schemas.HeldResult,
        response_description="what was done",
        errors=(400, 401, 403),
    )


# /v1/webhooks (web/webhooks.py; bodies in webhooks.py)
WEBHOOK_ID = path_param("id", "Webhook endpoint id.", {"type": "integer", "minimum": 1})
WEBHOOK_ERRORS = (400, 401, 403, 404, 503)
PAGE_CURSOR = query("cursor", "`next_cursor` of the previous page.", {"type": "string", "minLength": 1})
# The patterns web/operator.py checks (CHANNEL_RE, PREFIX_RE; test_openapi.py keeps them equal): that module
# imports this one.
CHANNEL_QUERY = query(
    "channel", "Only this channel.", {"type": "string", "pattern": "^[a-z]{1,32}$", "minLength": 1}
)


def _webhook(
    method: str,
    suffix: str,
    summary: str,
    scope: str,
    response: Any,
    *,
    parameters: Iterable[Param] | None = None,
    **kw: Any,
) -> Operation:
    """A /v1/webhooks operation; one under /{id} takes the id and can answer 404."""
    by_id = "{id}" in suffix
    return operation(
        method,
        f"/v1/webhooks{suffix}",
        summary=summary,
        scope=scope,
        response=response,
        parameters=parameters if parameters is not None else [WEBHOOK_ID] if by_id else [],
        errors=WEBHOOK_ERRORS if by_id else (400, 401, 403, 503),
        **kw,
    )


WEBHOOK_OPERATIONS = (
    _webhook(
        "POST",
        "",
        "Subscribe an endpoint to outcome events",
        "operate",
        schemas.CreatedEndpoint,
        description="The answer is the only one that shows the signing secret (Standard Webhooks;"
        " docs/webhooks.md).",
        request=schemas.NewEndpoint,
        status=201,
        response_description="subscribed",
    ),
    _webhook("GET", "", "Every webhook endpoint with its delivery figures", "read", schemas.EndpointList),
    _webhook("GET", "/{id}", "One webhook endpoint", "read", schemas.Endpoint),
    _webhook(
        "DELETE",
        "/{id}",
        "Remove a webhook endpoint and its pending deliveries",
        "operate",
        schemas.WebhookDeleted,
    ),
    _webhook(
        "POST",
        "/{id}/enable",
        "Re-enable an endpoint disabled after continuous failures",
        "operate",
        schemas.Endpoint,
        description="Its pending deliveries are due at once.",
    ),
    _webhook(
        "POST",
        "/{id}/replay",
        "Send failed (and with include_delivered, delivered) deliveries again",
        "operate",
        schemas.Replayed,
        description="From the start of the retry schedule, with the same webhook-id.",
        request=schemas.Replay,
        request_required=False,
    ),
    _webhook(
        "GET",
        "/{id}/deliveries",
        "An endpoint's deliveries, newest first",
        "read",
        schemas.DeliveryPage,
        parameters=[
            WEBHOOK_ID,
            query(
                "state",
                "Only deliveries in this state.",
                {"type": "string", "enum": list(webhooks.DELIVERY_STATES)},
            ),
            query(
                "limit",
                f"Page size, 1..{opinput.LIMIT_MAX}.",
                {"type": "integer", "minimum": 1, "maximum": opinput.LIMIT_MAX},
            ),
            PAGE_CURSOR,
        ],
    ),
)

STATS_OPERATIONS = (
    operation(
        "GET",
        "/v1/stats/series",
        summary="Per-minute event counts by channel (the operator page's charts)",
        scope="read",
        parameters=[
            query(
                "window",
                "Window in seconds.",
                {
                    "type": "integer",
                    "minimum": 60,
                    "maximum": opstats.SERIES_WINDOW_MAX,
                    "default": opstats.SERIES_WINDOW_DEFAULT,
                },
            ),
            CHANNEL_QUERY,
        ],
        response=schemas.StatsSeries,
        response_description="the series",
        errors=(400, 401, 403),
    ),
    operation(
        "GET",
        "/v1/stats/latency",
        summary="Delivery/read time distributions and the FallBackDuration advice",
        scope="read",
        parameters=[
            query(
                "window",
                "Window in seconds (messages sent in it).",
                {
                    "type": "integer",
                    "minimum": 60,
                    "maximum": advice.WINDOW_MAX,
                    "default": advice.WINDOW_DEFAULT,
                },
            ),
            CHANNEL_QUERY,
            query(
                "prefix",
                "Only numbers with this dialing-code prefix (one group per channel).",
                {"type": "string", "pattern": r"^\+?[0-9]{1,6}$"},
            ),
            query(
                "target",
                "The double-delivery rate the advice keeps under.",
                {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 0.5,
                    "default": advice.TARGET_DEFAULT,
                },
            ),
        ],
        response=schemas.StatsLatency,
        response_description="the distributions and the advice",
        errors=(400, 401, 403),
    ),
)


def _receipt(kind: str, path: str, body: Any) -> Operation:
    return operation(
        "POST",
        path,
        summary=f"Provider {kind} receipt push",
        description="An array of reports or one report; acknowledged only after they are committed. A wrong"
        " token answers 404, as if the URL did not exist.",
        auth="public",
        parameters=[RECEIPT_TOKEN],
        request=body,
        response=schemas.Ack,
        response_description="stored and applied",
        errors=(400, 404, 413, 503),
    )


BUILTIN: tuple[Operation, ...] = (
    operation(
        "POST",
        "/v1/messages",
        summary="Send a message (SendChatappMessage-shaped body)",
        scope="send",
        parameters=[IDEMPOTENCY_KEY],
        request=schemas.SendMessage,
        response=schemas.Accepted,
        status=202,
        response_description="stored",
        also=[(200, "idempotent repeat: the message as it is now")],
        errors=SEND_ERRORS,
    ),
    operation(
        "GET",
        "/v1/messages",
        summary="Search messages, newest first (keyset pagination)",
        scope="read",
        parameters=[query(p.name, p.description, dict(p.schema)) for p in opinput.SEARCH_PARAMS],
        response=schemas.SearchPage,
        response_description="one page",
        errors=(400, 401, 403),
    ),
    operation(
        "POST",
        "/v1/messages/batch",
        summary="Send many messages",
        scope="send",
        parameters=[IDEMPOTENCY_KEY],
        request=schemas.SendBatch,
        response=schemas.BatchAccepted,
        status=202,
        response_description="stored",
        also=[(200, "idempotent repeat: the messages as they are now")],
        errors=SEND_ERRORS,
    ),
    operation(
        "GET",
        "/v1/messages/{id}",
        summary="A message with its full timeline",
        scope="message",
        parameters=[MESSAGE_ID],
        response=schemas.Message,
        response_description="the message",
        errors=(400, 401, 404),
    ),
    _action(
        "cancel",
        "Cancel a pending fallback",
        "Armed or held → cancelled (OperatorCancel). A fallback already fired is refused (409).",
        schemas.ActionBody,
    ),
    _action(
        "fire",
        "Fire the fallback now",
        "Armed or held → due now; the timer loop sends the SMS (OperatorFire). A fallback held as "
        "sms_unknown (its SMS may have gone out) is refused (409) unless force=true.",
        schemas.FireBody,
    ),
    _action(
        "redrive",
        "Re-drive a stuck message",
        "Chat stuck in sending/unknown → sent again; fallback stuck in firing → SMS sent again. A provider "
        "call still inside its lease is refused (409) unless force=true.",
        schemas.RedriveBody,
    ),
    operation(
        "GET",
        "/v1/stats",
        summary="Counts, fallbacks by reason, timers, holds, pipeline, receipt feeds, dead letters",
        scope="read",
        parameters=[
            query(
                "window",
                "Window in seconds for the windowed figures.",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": opstats.WINDOW_MAX,
                    "default": opstats.WINDOW_DEFAULT,
                },
            )
        ],
        response=schemas.Stats,
        response_description="the stats",
        errors=(400, 401, 403),
    ),
    *STATS_OPERATIONS,
    _held("release", "Held fallbacks fire now (OperatorFire)."),
    _held("drop", "Held fallbacks never fire: suppressed (OperatorDrop)."),
    operation(
        "GET",
        "/v1/dead-letters",
        summary="Queue messages that could not be parsed, newest first",
        scope="read",
        parameters=[
            query("pending", "Only those not replayed yet (default true).", {"type": "boolean"}),
            query(
                "limit",
                f"Page size, 1..{opinput.LIMIT_MAX}.",
                {"type": "integer", "minimum": 1, "maximum": opinput.LIMIT_MAX},
            ),
            query("cursor", "`next_cursor` of the previous page.", {"type": "string"}),
        ],
        response=schemas.DeadLetterPage,
        response_description="one page",
        errors=(400, 401, 403),
    ),
    operation(
        "POST",
        "/v1/dead-letters/{id}/replay",
        summary="Re-parse a dead letter's stored body and ingest it",
        description="400 if it still does not parse (nothing changes); 409 if replayed already.",
        scope="operate",
        parameters=[path_param("id", "Dead letter id.", {"type": "integer", "minimum": 1})],
        request=schemas.ActionBody,
        request_required=False,
        response=schemas.ReplayResult,
        response_description="ingested",
        errors=ACTION_ERRORS,
    ),
    *WEBHOOK_OPERATIONS,
    operation(
        "GET",
        "/v1/openapi.json",
        summary="This document",
        auth="public",
        response=schemas.OpenAPIDocument,
        response_description="OpenAPI 3.1",
    ),
    _receipt("ChatApp status", "/receipts/{token}/chatapp", schemas.ChatAppReceipts),
    _receipt("SMS", "/receipts/{token}/sms", schemas.SmsReceipts),
    operation(
        "GET",
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        description="Open by default; with FALLBACK_METRICS_REQUIRE_TOKEN=true it needs a bearer token"
        " (401 without one, 403 for a token without the scope).",
        auth="bearer-if-configured",
        scope="read",
        response=str,
        media_type="text/plain",
        response_description="metrics",
        errors=(401, 403),
    ),
    operation("GET", "/healthz", summary="Liveness", auth="public", response=schemas.Health),
    operation(
        "GET",
        "/readyz",
        summary="Readiness: loops running and the database answers",
        description="`degraded` (still 200) while LISTEN reconnects: polling keeps every loop working.",
        auth="public",
        response=schemas.Ready,
        errors=[(503, "not ready: starting, stopping, or the database does not answer")],
    ),
)


def _guard_operations() -> tuple[Operation, ...]:
    """/v1/opt-outs, /v1/budgets, /v1/guards (web/guards.py, whose module declares their bodies)."""
    from fallback_daemon.web import guards  # here: guards imports operator, which imports this module

    number = path_param(
        "number",
        "The phone number (8 to 15 digits, optionally after '+').",
        {"type": "string", "pattern": r"^\+?[0-9]{8,15}$"},
    )
    budget_paths = (
        (
            "/v1/budgets/{scope}",
            [path_param("scope", "The global budget.", {"type": "string", "enum": ["global"]})],
        ),
        (
            "/v1/budgets/{scope}/{key}",
            [
                path_param("scope", "prefix or space.", {"type": "string", "enum": ["prefix", "space"]}),
                path_param(
                    "key",
                    "A dialing-code prefix (1 to 15 digits, country code first) or a CustSpaceId.",
                    {"type": "string", "minLength": 1},
                ),
            ],
        ),
    )
    text = {"type": "string", "description": "One number per line, or the first column of a CSV."}
    ops = [
        operation(
            "GET",
            "/v1/opt-outs",
            summary="The opt-out list, oldest first",
            scope="read",
            parameters=[
                query(
                    "number",
                    "Only this number, or the numbers starting with this prefix.",
                    {"type": "string", "pattern": r"^\+?[0-9]{1,15}$"},
                ),
                query(
                    "limit",
                    f"Page size, 1..{guards.LIMIT_MAX} (default {guards.LIMIT_DEFAULT}).",
                    {"type": "integer", "minimum": 1, "maximum": guards.LIMIT_MAX},
                ),
                PAGE_CURSOR,
            ],
            response=guards.OptOutPage,
            response_description="one page",
            errors=(400, 401, 403),
        ),
        operation(
            "POST",
            "/v1/opt-outs",
            summary="Add numbers to the opt-out list (no fallback SMS to them)",
            description="A JSON body (source `api`), or a text/plain or text/csv import (source `import`,"
            " `?reason=`, at most"
            f" {guards.IMPORT_MAX} numbers). All or nothing: a bad number or line is a 400 naming it.",
            scope="operate",
            parameters=[
                query(
                    "reason",
                    "Text imports only: why (recorded).",
                    {"type": "string", "minLength": 1, "maxLength": opinput.TEXT_MAX},
                )
            ],
            request=guards.OptOutAdd,
            request_also=[(media, text) for media in guards.TEXT_TYPES],
            response=guards.OptOutAdded,
            response_description="added",
            errors=(400, 401, 403),
        ),
        operation(
            "DELETE",
            "/v1/opt-outs/{number}",
            summary="Take a number off the opt-out list",
            scope="operate",
            parameters=[number],
            response=guards.OptOutRemoved,
            response_description="removed",
            errors=(400, 401, 403, (404, "the number is not on the list")),
        ),
        operation(
            "GET",
            "/v1/budgets",
            summary="Daily SMS budgets with what each spent today",
            scope="read",
            response=guards.BudgetList,
            response_description="the budgets",
            errors=(400, 401, 403),
        ),
    ]
    for path, params in budget_paths:
        ops.append(
            operation(
                "PUT",
                path,
                summary="Set a daily SMS budget",
                scope="operate",
                parameters=params,
                request=guards.BudgetSet,
                response=guards.Budget,
                response_description="the budget",
                errors=(400, 401, 403),
            )
        )
        ops.append(
            operation(
                "DELETE",
                path,
                summary="Remove a daily SMS budget",
                scope="operate",
                parameters=params,
                response=guards.BudgetDeleted,
                response_description="removed",
                errors=(400, 401, 403, (404, "no such budget")),
            )
        )
    ops.append(
        operation(
            "GET",
            "/v1/guards",
            summary="The guard settings this replica runs with",
            description="Deny-listed prefixes, quiet hours, the budget time zone and over-budget action.",
            scope="read",
            response=guards.GuardSettings,
            response_description="the settings",
            errors=(400, 401, 403),
        )
    )
    return tuple(ops)


# ---- building the document ---------------------------------------------------------------------------------
SECURITY: Mapping[Auth, list[dict[str, list[str]]] | None] = {
    "bearer": None,  # the document's default
    "public": [],
    "bearer-if-configured": [{}, {"bearer": []}],
}


def _parameter(p: Param, schema: dict[str, Any]) -> dict[str, Any]:
    out = {"name": p.name, "in": p.location, "required": p.required, "description": p.description}
    out["schema"] = schema
    if p.location == "query" and schema.get("type") == "array":
        out |= {"style": "form", "explode": False}
    return out


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _error(code: int | tuple[int, str]) -> tuple[str, dict[str, Any]]:
    status, text = code if isinstance(code, tuple) else (code, ERROR_TEXT[code])
    return str(status), {"description": text, "content": _content(JSON, {"$ref": REF.format(name="Error")})}


def _operation(
    op: Operation, schema_of: Mapping[int, dict[str, Any]], index: Mapping[str, int]
) -> dict[str, Any]:
    """One operation object; `schema_of[index[...]]` is the generated schema of each type it names."""
    out: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op)}
    description = op.description
    if op.scope is not None and op.auth != "public":
        description = f"{description} Token scope: `{op.scope}`.".strip()
        out["x-token-scope"] = op.scope
    if description:
        out["description"] = description
    security = SECURITY[op.auth]
    if security is not None:
        out["security"] = security
    params = [
        _parameter(
            p, schema_of[index[f"param:{p.name}"]] if not isinstance(p.schema, Mapping) else dict(p.schema)
        )
        for p in op.parameters
    ]
    if params:
        out["parameters"] = params
    if op.request is not None:
        content = _content(JSON, schema_of[index["request"]])
        for media, schema in op.request_also:
            content |= _content(media, dict(schema))
        out["requestBody"] = {"required": op.request_required, "content": content}
    success: dict[str, Any] = {"description": op.response_description}
    if op.response is not None:
        success["content"] = _content(op.media_type, schema_of[index["response"]])
    responses: dict[str, Any] = {str(op.status): success}
    for status, text in op.also:
        responses[str(status)] = {**success, "description": text}
    responses.update(_error(code) for code in op.errors)
    out["responses"] = responses
    return out


def _operation_id(op: Operation) -> str:
    words = [w.strip("{}") for w in op.path.replace(".", "/").replace("-", "_").split("/") if w]
    return "_".join([op.method.lower(), *words])


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; `register` rebuilds it)."""
    ops = operations()
    types: list[Any] = list(ALWAYS)
    indexes: list[dict[str, int]] = []
    for op in ops:
        index: dict[str, int] = {}
        named = [("request", op.request), ("response", op.response)]
        named += [(f"param:{p.name}", p.schema) for p in op.parameters if not isinstance(p.schema, Mapping)]
        for key, kind in named:
            if kind is not None:
                index[key] = len(types)
                types.append(kind)
        indexes.append(index)
    generated, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(enumerate(generated))
    paths: dict[str, dict[str, Any]] = {}
    for op, index in zip(ops, indexes, strict=True):
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schema_of, index)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fallback-daemon",
            "version": "1",
            "description": "ChatApp (CAMS) messages with a durable SMS fallback: send, operate, receipts.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "FALLBACK_API_TOKEN; where set, FALLBACK_OPERATOR_TOKEN and"
                    " FALLBACK_READ_TOKEN take the scopes each operation names (x-token-scope;"
                    " web/tokens.py). GET /v1 routes also accept a live /ui session cookie.",
                }
            },
            "schemas": dict(sorted(components.items())),
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
