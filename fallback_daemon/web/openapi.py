"""The OpenAPI 3.1 document served at GET /v1/openapi.json: /v1 routes, receipt endpoints, health, metrics.

Written by hand as the contract; tests/integration/test_operator_api.py checks it against the router and
against what each handler accepts (query parameters and body fields), so the two cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import Any

from fallback_daemon import model, opinput, opstats, validation

JSON = "application/json"
ERROR = {"$ref": "#/components/schemas/Error"}
PUBLIC: list[dict[str, list[str]]] = []  # `security: []`: no bearer token


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid input (names the field)",
        401: "missing or wrong bearer token",
        404: "no such object",
        408: "the body did not arrive within the body deadline (30 s)",
        409: "the current state does not allow it (the refusal is recorded in the timeline)",
        413: "body too large (also once decoded from its Content-Encoding)",
        415: "a Content-Encoding other than gzip, deflate or identity",
        422: "the Idempotency-Key was first used with a different request body (nothing stored)",
        503: "database unavailable",
    }
    return {str(c): _json(ERROR, text[c]) for c in codes}


def _path_id(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "description": description, "schema": schema}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    param = {"name": name, "in": "query", "required": False, "description": description, "schema": schema}
    if schema.get("type") == "array":
        param |= {"style": "form", "explode": False}
    return param


def _body(properties: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return {"required": required, "description": description, "content": {JSON: {"schema": schema}}}


ACTION_PROPS: dict[str, Any] = {
    "actor": {"type": "string", "default": "operator", "description": "Who asks (recorded in the timeline)."},
    "reason": {"type": "string", "maxLength": opinput.REASON_MAX, "description": "Why (recorded)."},
}
UUID = {"type": "string", "format": "uuid"}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Scoped to the endpoint (a batch's item i is keyed apart from any single send). The same"
    " key with the same body (key order and whitespace aside) replays the answer; another body is a 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
BATCH_ACCEPTED = {
    "type": "object",
    "properties": {"messages": {"type": "array", "items": {"$ref": "#/components/schemas/Accepted"}}},
}


def _action(summary: str, description: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": description,
        "parameters": [_path_id("Our message id.", UUID)],
        "requestBody": _body({**ACTION_PROPS, **(extra or {})}, "Who and why; optional."),
        "responses": {"200": _json(_ref("ActionResult"), "done"), **_errors(400, 401, 404, 409)},
    }


def _held(verb: str, what: str) -> dict[str, Any]:
    props = {
        **ACTION_PROPS,
        "channel": {"type": "string", "description": "Only held fallbacks of this channel."},
        "hold_reason": {
            "type": "string",
            "description": "Only this hold reason (feed_down, sms_unknown, sms_retries_exhausted).",
        },
        "force": {
            "type": "boolean",
            "default": False,
            "description": "Release also fallbacks held as sms_unknown (their SMS may have gone out: "
            "releasing sends another). Without it they are listed under needs_force.",
        },
        "ids": {"type": "array", "items": UUID, "maxItems": opinput.HELD_LIMIT_MAX},
        "all": {
            "type": "boolean",
            "default": False,
            "description": "Required when no other filter is given.",
        },
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": opinput.HELD_LIMIT_MAX,
            "default": opinput.HELD_LIMIT_DEFAULT,
        },
    }
    return {
        "summary": f"{verb.capitalize()} held fallbacks",
        "description": what,
        "requestBody": _body(
            props, "Filter (channel / hold_reason / ids, or all=true) plus who and why.", required=True
        ),
        "responses": {"200": _json(_ref("HeldResult"), "what was done"), **_errors(400, 401)},
    }


def _schemas() -> dict[str, Any]:
    states = {
        "chat_state": {"enum": [s.value for s in model.ChatState]},
        "fallback_state": {"enum": [s.value for s in model.FallbackState]},
    }
    summary_props = {
        "id": UUID,
        "channel": {"type": "string"},
        "to": {"type": "string"},
        "task_id": {"type": ["string", "null"]},
        **states,
        "provider_message_id": {"type": ["string", "null"]},
        "fire_reason": {"type": ["string", "null"]},
        "hold_reason": {"type": ["string", "null"]},
        "double_delivered": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "links": {"type": "object", "properties": {"self": {"type": "string"}}},
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {"message": {"type": "string"}, "field": {"type": "string"}},
                }
            },
        },
        "MessageSummary": {"type": "object", "properties": summary_props},
        "Message": {
            "type": "object",
            "properties": {
                **summary_props,
                "events": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "at": {"type": "string", "format": "date-time"},
                            "kind": {"type": "string"},
                            "outcome": {"type": "string"},
                            "actor": {"type": "string"},
                            "reason": {"type": ["string", "null"]},
                        },
                    },
                },
            },
            "description": "The message, its state and its full event timeline.",
        },
        "SearchPage": {
            "type": "object",
            "properties": {
                "messages": {"type": "array", "items": _ref("MessageSummary")},
                "next_cursor": {"type": ["string", "null"]},
                "links": {"type": "object", "properties": {"next": {"type": "string"}}},
            },
        },
        "ActionResult": {
            "type": "object",
            "properties": {
                "id": UUID,
                "action": {"type": "string"},
                "outcome": {"type": "string"},
                **states,
                "links": {"type": "object"},
            },
        },
        "HeldResult": {
            "type": "object",
            "properties": {
                "action": {"type": "string"},
                "matched": {"type": "integer"},
                "done": {"type": "integer"},
                "refused": {"type": "integer"},
                "ids": {"type": "array", "items": UUID},
                "more": {"type": "boolean"},
                "not_held": {"type": "array", "items": UUID},
            },
        },
        "Stats": {
            "type": "object",
            "properties": {
                k: {"type": "object"}
                for k in (
                    "messages",
                    "fallbacks",
                    "pending_timers",
                    "held",
                    "pipeline",
                    "receipts",
                    "dead_letters",
                )
            }
            | {
                "window_s": {"type": "integer"},
                "sending": {"type": "array"},
                "errors": {"type": "array"},
                "feed_health": {"type": "array"},
            },
        },
        "SendRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ChannelType", "Type", "From", "To"],
            "description": "SendChatappMessage field names (see reference/SendChatappMessage.txt).",
            "properties": {name: {} for name in sorted(validation.KNOWN_FIELDS)},
        },
        "Accepted": {
            "type": "object",
            "description": "A new message (`state: accepted`, 202), or on a replayed Idempotency-Key the one"
            " it named, as it is now (200).",
            "properties": {
                "id": UUID,
                "state": {"type": "string", "enum": sorted(s.value for s in model.ChatState)},
                "fallback_state": {"type": "string", "enum": sorted(s.value for s in model.FallbackState)},
                "created": {"type": "boolean"},
            },
        },
        "Ack": {"type": "object", "properties": {"code": {"const": 0}, "msg": {"const": "success"}}},
    }


def _receipt(kind: str) -> dict[str, Any]:
    return {
        "summary": f"Provider {kind} receipt push",
        "security": PUBLIC,
        "description": "Acknowledged only after the receipts are committed. A wrong token answers 404.",
        "parameters": [
            {
                "name": "token",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "The receipt secret (FALLBACK_RECEIPT_TOKEN).",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {"oneOf": [{"type": "array", "items": {"type": "object"}}, {"type": "object"}]}
                }
            },
        },
        "responses": {"200": _json(_ref("Ack"), "stored and applied"), **_errors(400, 404, 413, 503)},
    }


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    search_params = [_query(p.name, p.description, dict(p.schema)) for p in opinput.SEARCH_PARAMS]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fallback-daemon",
            "version": "1",
            "description": "ChatApp (CAMS) messages with a durable SMS fallback: send, operate, receipts.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "FALLBACK_API_TOKEN"}
            },
            "schemas": _schemas(),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/messages": {
                "post": {
                    "summary": "Send a message (SendChatappMessage-shaped body)",
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": {"required": True, "content": {JSON: {"schema": _ref("SendRequest")}}},
                    "responses": {
                        "202": _json(_ref("Accepted"), "stored"),
                        "200": _json(_ref("Accepted"), "idempotent repeat: the message as it is now"),
                        **_errors(400, 401, 408, 413, 415, 422, 503),
                    },
                },
                "get": {
                    "summary": "Search messages, newest first (keyset pagination)",
                    "parameters": search_params,
                    "responses": {"200": _json(_ref("SearchPage"), "one page"), **_errors(400, 401)},
                },
            },
            "/v1/messages/batch": {
                "post": {
                    "summary": "Send many messages",
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["messages"],
                                    "properties": {
                                        "messages": {
                                            "type": "array",
                                            "items": _ref("SendRequest"),
                                            "minItems": 1,
                                            "maxItems": 1000,
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(BATCH_ACCEPTED, "stored"),
                        "200": _json(BATCH_ACCEPTED, "idempotent repeat: the messages as they are now"),
                        **_errors(400, 401, 408, 413, 415, 422, 503),
                    },
                }
            },
            "/v1/messages/{id}": {
                "get": {
                    "summary": "A message with its full timeline",
                    "parameters": [_path_id("Our message id.", UUID)],
                    "responses": {"200": _json(_ref("Message"), "the message"), **_errors(400, 401, 404)},
                }
            },
            "/v1/messages/{id}/cancel": {
                "post": _action("Cancel a pending fallback", "Armed or held → cancelled (OperatorCancel).")
            },
            "/v1/messages/{id}/fire": {
                "post": _action(
                    "Fire the fallback now",
                    "Armed or held → due now; the timer loop sends the SMS (OperatorFire). A fallback held "
                    "as sms_unknown (its SMS may have gone out) is refused (409) unless force=true.",
                    {
                        "force": {
                            "type": "boolean",
                            "default": False,
                            "description": "Fire even a fallback whose SMS may have gone out (a second SMS).",
                        }
                    },
                )
            },
            "/v1/messages/{id}/redrive": {
                "post": _action(
                    "Re-drive a stuck message",
                    "Chat stuck in sending/unknown → sent again; fallback stuck in firing → SMS sent again. "
                    "A provider call still inside its lease is refused (409) unless force=true.",
                    {
                        "force": {
                            "type": "boolean",
                            "default": False,
                            "description": "Re-drive even while a call is in flight (risks a duplicate).",
                        }
                    },
                )
            },
            "/v1/stats": {
                "get": {
                    "summary": "Counts, fallbacks by reason, timers, holds, pipeline, receipt feeds, dead letters",  # noqa: E501
                    "parameters": [
                        _query(
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
                    "responses": {"200": _json(_ref("Stats"), "the stats"), **_errors(400, 401)},
                }
            },
            "/v1/held/release": {"post": _held("release", "Held fallbacks fire now (OperatorFire).")},
            "/v1/held/drop": {"post": _held("drop", "Held fallbacks never fire: suppressed (OperatorDrop).")},
            "/v1/dead-letters": {
                "get": {
                    "summary": "Queue messages that could not be parsed, newest first",
                    "parameters": [
                        _query("pending", "Only those not replayed yet (default true).", {"type": "boolean"}),
                        _query(
                            "limit",
                            f"Page size, 1..{opinput.LIMIT_MAX}.",
                            {"type": "integer", "minimum": 1, "maximum": opinput.LIMIT_MAX},
                        ),
                        _query("cursor", "`next_cursor` of the previous page.", {"type": "string"}),
                    ],
                    "responses": {"200": _json({"type": "object"}, "one page"), **_errors(400, 401)},
                }
            },
            "/v1/dead-letters/{id}/replay": {
                "post": {
                    "summary": "Re-parse a dead letter's stored body and ingest it",
                    "description": "400 if it still does not parse (nothing changes); 409 if replayed.",
                    "parameters": [_path_id("Dead letter id.", {"type": "integer", "minimum": 1})],
                    "requestBody": _body(ACTION_PROPS, "Who and why; optional."),
                    "responses": {
                        "200": _json({"type": "object"}, "ingested"),
                        **_errors(400, 401, 404, 409),
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": PUBLIC,
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
            "/receipts/{token}/chatapp": {"post": _receipt("ChatApp status")},
            "/receipts/{token}/sms": {"post": _receipt("SMS")},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "security": PUBLIC,
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "security": PUBLIC,
                    "responses": {"200": _json({"type": "object"}, "alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: loops running and the database answers",
                    "security": PUBLIC,
                    "responses": {
                        "200": _json({"type": "object"}, "ready"),
                        "503": _json(ERROR, "not ready"),
                    },
                }
            },
        },
    }
