"""GET /v1/openapi.json: valid OpenAPI 3.1, generated from the structs, and true of the running daemon.

The document is checked against things it was *not* built from: the aiohttp router (every route is
documented and every documented operation is routed), the handlers (every documented query parameter is
read and others refused; every documented body field is known and others refused), validation.py (the send
struct names exactly the fields the validator knows), and real answers (each validates against the schema
the document gives for its status). A schema that says nothing (`{}`, a bare `{"type": "object"}`) fails.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import jsonschema  # type: ignore[import-untyped]
import msgspec
import openapi_spec_validator
import pytest

from fallback_daemon import app, config
from fallback_daemon import web as web_
from fallback_daemon.core import model, validation
from fallback_daemon.db import store
from fallback_daemon.engine import service
from fallback_daemon.ops import opstats
from fallback_daemon.web import openapi, operator, schemas
from tests.integration import opsupport

UNDOCUMENTED = "zz_undocumented"
# Routes that are not part of the API contract: the operator page's browser-facing routes (HTML, a form
# login, a same-origin session probe for its CSRF token, static files, and `/` redirecting to the page), and
# the HEAD aiohttp adds to a GET.
NOT_DOCUMENTED = ("/",)
NOT_DOCUMENTED_PREFIXES = ("/ui",)


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn) as running:
        yield running


@pytest.fixture
async def doc(daemon: app.Running) -> dict[str, Any]:
    async with aiohttp.ClientSession() as anon, anon.get(f"{daemon.url}/v1/openapi.json") as resp:
        assert resp.status == 200
        return dict(await resp.json())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with opsupport.client() as session:
        yield session


def operations_of(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def concrete(path: str) -> str:
    """A documented path with its parameters filled in (ids that exist nowhere: bodies are checked first)."""
    integer_id = "dead-letters" in path or "webhooks" in path
    return (
        path.replace("{id}", "1" if integer_id else str(uuid.uuid4()))
        .replace("{token}", "x")
        .replace("{number}", "6591234567")
        .replace("{scope}/{key}", "prefix/65")
        .replace("{scope}", "global")
    )


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return dict(doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    return schema


# ---- the document itself -----------------------------------------------------------------------------------
async def test_document_is_valid_openapi_31(doc: dict[str, Any]) -> None:
    """The served document validates as OpenAPI 3.1, is readable without a token, and is the one built."""
    assert doc["openapi"] == "3.1.0"
    openapi_spec_validator.validate(doc)
    assert doc == json.loads(json.dumps(openapi.document()))


async def test_routes_match_the_router(db: store.Store) -> None:
    """Every route of the app (built as the daemon builds it) is documented with its method, and every
    documented operation is routed; only the /ui page's routes are left out (NOT_DOCUMENTED*)."""
    aio = web_.create_app(config.Settings(), service.Service(db))
    registered = {
        (r.method, r.resource.canonical)
        for r in aio.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(m, p) for m, p, _ in operations_of(openapi.document())}
    api_routes = {
        r for r in registered if r[1] not in NOT_DOCUMENTED and not r[1].startswith(NOT_DOCUMENTED_PREFIXES)
    }
    assert sorted(api_routes - documented) == [], "routed but not documented"
    assert sorted(documented - registered) == [], "documented but not routed"


def _schemas_in(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, subschema) below property maps, items and additionalProperties, recursively."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}/{key}"
            if key == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    yield f"{here}/{name}", sub
            elif key in ("items", "additionalProperties", "schema"):
                yield here, value
            yield from _schemas_in(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schemas_in(value, f"{where}[{i}]")


def test_every_schema_says_something() -> None:
    """No empty schema ({}) for a property, an item, a map value, a parameter or a body; no object without
    properties, additionalProperties or a $ref; every operation answers its success with a body schema."""
    doc = openapi.document()
    found = list(_schemas_in(doc))
    assert len(found) > 300  # the walk does reach the schemas
    empty = [where for where, schema in found if schema == {}]
    assert empty == []
    objects = [
        where
        for where, schema in found
        if isinstance(schema, dict)
        and schema.get("type") == "object"
        and not {"properties", "additionalProperties", "$ref"} & schema.keys()
    ]
    assert objects == []
    for method, path, op in operations_of(doc):
        success = [s for s in op["responses"] if s.startswith("2")]
        assert success, (method, path)
        for status in success:
            [(media, content)] = op["responses"][status]["content"].items()
            assert content["schema"], (method, path, status)
            assert media == "text/plain" or "$ref" in content["schema"], (method, path, status)


def test_the_send_struct_names_exactly_the_fields_the_validator_knows() -> None:
    """schemas.SendMessage and validation.KNOWN_FIELDS are declared apart (the validator keeps its own
    messages); a field added to one and not the other fails here."""
    fields = {f.encode_name for f in msgspec.structs.fields(schemas.SendMessage)}
    assert fields == set(validation.KNOWN_FIELDS)
    required = {f.encode_name for f in msgspec.structs.fields(schemas.SendMessage) if f.required}
    assert required == {"ChannelType", "Type", "From", "To"}


def test_another_module_registers_an_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    """`openapi.register` adds an operation with its structs; the same one again is a no-op, a different
    one for the same method and path (or for a built-in route) is refused."""

    class WidgetBody(msgspec.Struct, forbid_unknown_fields=True):
        name: str

    class Widget(msgspec.Struct, forbid_unknown_fields=True):
        id: int
        name: str

    monkeypatch.setattr(openapi, "_REGISTERED", {})
    openapi.document.cache_clear()
    try:
        op = openapi.operation(
            "post",
            "/v1/widgets",
            summary="Make a widget",
            scope="operate",
            request=WidgetBody,
            response=Widget,
            status=201,
            errors=(400, 401),
        )
        openapi.register(op)
        openapi.register(op)
        doc = openapi.document()
        item = doc["paths"]["/v1/widgets"]["post"]
        assert item["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/WidgetBody"
        }
        assert set(item["responses"]) == {"201", "400", "401"}
        assert doc["components"]["schemas"]["Widget"]["required"] == ["id", "name"]
        openapi_spec_validator.validate(doc)
        with pytest.raises(ValueError, match="documented already"):
            openapi.register(openapi.operation("POST", "/v1/widgets", summary="Another", response=Widget))
        with pytest.raises(ValueError, match="documented already"):
            openapi.register(openapi.operation("GET", "/healthz", summary="Mine", response=Widget))
    finally:
        monkeypatch.undo()
        openapi.document.cache_clear()
    assert "/v1/widgets" not in openapi.document()["paths"]


# ---- the document against the handlers ---------------------------------------------------------------------
async def test_documented_query_parameters_are_read_and_others_refused(
    daemon: app.Running, doc: dict[str, Any]
) -> None:
    """For each GET with query parameters: a documented one is validated (400 naming it); others refused."""
    async with opsupport.client() as http:
        for method, path, op in operations_of(doc):
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
            if method != "GET" or not names:
                continue
            for name in [*names, UNDOCUMENTED]:
                async with http.get(f"{daemon.url}{concrete(path)}?{name}=") as resp:
                    body = await resp.json()
                    assert (resp.status, body["error"]["field"]) == (400, name), (path, name, body)


async def test_documented_body_fields_are_known_and_others_refused(
    daemon: app.Running, doc: dict[str, Any]
) -> None:
    """For each POST with an object body: no documented field is unknown to the handler; others are."""
    async with opsupport.client() as http:
        for method, path, op in operations_of(doc):
            schema = resolve(
                doc,
                op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}),
            )
            if method != "POST" or "properties" not in schema:
                continue
            assert schema.get("additionalProperties") is False, path
            url = f"{daemon.url}{concrete(path)}"
            for name in schema["properties"]:
                async with http.post(url, json={name: None}) as resp:
                    body = await resp.json()
                    assert "unknown field" not in body.get("error", {}).get("message", ""), (path, name, body)
            async with http.post(url, json={UNDOCUMENTED: 1}) as resp:
                body = await resp.json()
                assert (resp.status, body["error"]["field"]) == (400, UNDOCUMENTED), (path, body)


# ---- real answers against their schemas --------------------------------------------------------------------
class Checker:
    """Validates answers against the schema the document gives their operation and status."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.checked: list[str] = []

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        responses = self.doc["paths"][path][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {path} answered an undocumented {status}: {body}"
        schema = responses[str(status)]["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator(
            {"components": self.doc["components"], **schema},
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
        assert errors == [], f"{method} {path} {status}"
        self.checked.append(f"{method} {path} {status}")

    async def call(
        self, http: aiohttp.ClientSession, method: str, url: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        async with http.request(method, url, json=body, **kw) as resp:
            answer = await resp.json()
        self.check(method, path, resp.status, answer)
        return resp.status, answer


async def test_real_answers_validate_against_their_schemas(
    daemon: app.Running, doc: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    """Send (new and replayed), batch, the message with its timeline, search pages, stats, dead letters, an
    action, a held release, errors, receipts, health: each answer validates against its documented schema
    (additionalProperties false: a field the structs do not declare fails)."""
    c, url = Checker(doc), daemon.url
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    status, sent = await c.call(
        http, "POST", f"{url}/v1/messages", "/v1/messages", opsupport.BODY, headers=key
    )
    assert status == 202
    status, again = await c.call(
        http, "POST", f"{url}/v1/messages", "/v1/messages", opsupport.BODY, headers=key
    )
    assert (status, again["id"]) == (200, sent["id"])
    batch = {"messages": [{**opsupport.BODY, "To": "6591234566"}, {**opsupport.BODY, "To": "6591234565"}]}
    status, _ = await c.call(http, "POST", f"{url}/v1/messages/batch", "/v1/messages/batch", batch)
    assert status == 202
    bad = {**opsupport.BODY, "To": "not a number"}
    status, error = await c.call(http, "POST", f"{url}/v1/messages", "/v1/messages", bad)
    assert (status, error["error"]["field"]) == (400, "To")

    mid = await opsupport.send(http, url, "6591234566")  # never delivered: armed, its timer pending
    view = await opsupport.wait_for(
        http, url, mid, lambda v: any(e["kind"] == "chat_receipt" for e in v["events"])
    )
    c.check("GET", "/v1/messages/{id}", 200, view)
    assert {"outcome", "chat", "fallback"} <= view["events"][-1].keys()
    await c.call(http, "GET", f"{url}/v1/messages/{uuid.uuid4()}", "/v1/messages/{id}")

    status, page = await c.call(http, "GET", f"{url}/v1/messages?limit=1", "/v1/messages")
    assert status == 200 and page["next_cursor"] and page["links"]["next"]
    status, last = await c.call(http, "GET", f"{url}/v1/messages?limit=500", "/v1/messages")
    assert status == 200 and last["next_cursor"] is None and "links" not in last

    status, stats = await c.call(http, "GET", f"{url}/v1/stats", "/v1/stats")
    assert status == 200 and stats["messages"]["total"] >= 4

    await daemon.svc.ingest_queue_batch(
        model.ReceiptKind.CHATAPP, "mns", "q1", [], [], [("m1", "{not json", "not JSON")]
    )
    status, letters = await c.call(http, "GET", f"{url}/v1/dead-letters", "/v1/dead-letters")
    assert status == 200 and len(letters["dead_letters"]) == 1
    replay = f"/v1/dead-letters/{letters['dead_letters'][0]['id']}/replay"
    status, _ = await c.call(http, "POST", f"{url}{replay}", "/v1/dead-letters/{id}/replay")
    assert status == 400

    cancel = "/v1/messages/{id}/cancel"
    status, done = await c.call(http, "POST", f"{url}/v1/messages/{mid}/cancel", cancel, {"actor": "ann"})
    assert (status, done["fallback_state"]) == (200, "cancelled")
    status, _ = await c.call(http, "POST", f"{url}/v1/messages/{mid}/cancel", cancel)
    assert status == 409
    status, held = await c.call(
        http, "POST", f"{url}/v1/held/release", "/v1/held/release", {"ids": [mid], "reason": "test"}
    )
    assert (status, held["not_held"]) == (200, [mid])

    receipt = [{"MessageId": "no-such-id", "Status": "Delivered", "Timestamp": 1700000000000}]
    token = "receipt-token-0123456789"
    status, _ = await c.call(
        http, "POST", f"{url}/receipts/{token}/chatapp", "/receipts/{token}/chatapp", receipt
    )
    assert status == 200
    for path in ("/healthz", "/readyz", "/v1/openapi.json"):
        status, _ = await c.call(http, "GET", f"{url}{path}", path)
        assert status == 200
    async with aiohttp.ClientSession() as anon:
        status, _ = await c.call(anon, "GET", f"{url}/v1/stats", "/v1/stats")
        assert status == 401
    assert len(c.checked) == 19, c.checked


NEW_PREFIXES = ("/v1/webhooks", "/v1/opt-outs", "/v1/budgets", "/v1/guards", "/v1/stats/")
OPERATOR_TOKEN = "ops-operator-token-0123456789"
READ_TOKEN = "ops-read-token-0123456789"


async def test_real_answers_of_webhooks_guards_and_charts_validate(db_dsn: str) -> None:
    """The routes of web/webhooks.py, web/guards.py and the chart/advice stats, with the operator and read
    tokens set: every answer (successes, 400/403/404 errors) validates against its documented schema."""
    env = {"FALLBACK_OPERATOR_TOKEN": OPERATOR_TOKEN, "FALLBACK_READ_TOKEN": READ_TOKEN}
    async with (
        opsupport.running_daemon(db_dsn, **env) as daemon,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}) as ops,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {READ_TOKEN}"}) as reader,
        opsupport.client() as api,
    ):
        url = daemon.url
        async with api.get(f"{url}/v1/openapi.json") as resp:
            c = Checker(dict(await resp.json()))

        # webhooks: subscribe first, so the messages below give it deliveries (the loop's attempts at a
        # closed port fail: they stay pending)
        hook = {"url": "http://127.0.0.1:9/hook", "description": "openapi test"}
        status, created = await c.call(ops, "POST", f"{url}/v1/webhooks", "/v1/webhooks", hook)
        assert status == 201 and created["secret"].startswith("whsec_")
        status, _ = await c.call(reader, "POST", f"{url}/v1/webhooks", "/v1/webhooks", hook)
        assert status == 403
        status, error = await c.call(ops, "POST", f"{url}/v1/webhooks", "/v1/webhooks", {"url": "ftp://x"})
        assert (status, error["error"]["field"]) == (400, "url")
        await opsupport.seed_mixed(api, url)
        wid = created["endpoint"]["id"]
        one, deliveries = "/v1/webhooks/{id}", "/v1/webhooks/{id}/deliveries"
        status, listed = await c.call(reader, "GET", f"{url}/v1/webhooks", "/v1/webhooks")
        assert status == 200 and [w["id"] for w in listed["webhooks"]] == [wid]
        status, got = await c.call(reader, "GET", f"{url}/v1/webhooks/{wid}", one)
        assert status == 200 and got["stats"]["pending"] > 0
        status, _ = await c.call(reader, "GET", f"{url}/v1/webhooks/{wid + 1000}", one)
        assert status == 404
        status, page = await c.call(reader, "GET", f"{url}/v1/webhooks/{wid}/deliveries?limit=2", deliveries)
        assert status == 200 and len(page["deliveries"]) == 2 and page["next_cursor"]
        assert page["deliveries"][0]["payload"]
        status, error = await c.call(
            reader, "GET", f"{url}/v1/webhooks/{wid}/deliveries?state=lost", deliveries
        )
        assert (status, error["error"]["field"]) == (400, "state")
        replay = "/v1/webhooks/{id}/replay"
        status, replayed = await c.call(ops, "POST", f"{url}/v1/webhooks/{wid}/replay", replay, {})
        assert (status, replayed) == (200, {"replayed": 0})
        status, _ = await c.call(ops, "POST", f"{url}/v1/webhooks/{wid}/enable", "/v1/webhooks/{id}/enable")
        assert status == 200
        status, deleted = await c.call(ops, "DELETE", f"{url}/v1/webhooks/{wid}", one)
        assert (status, deleted) == (200, {"id": wid, "deleted": True})

        # opt-outs: JSON and a text import, a page, removal
        status, added = await c.call(
            ops, "POST", f"{url}/v1/opt-outs", "/v1/opt-outs", {"numbers": ["+6591230001"], "reason": "t"}
        )
        assert (status, added["added"]) == (200, 1)
        status, imported = await c.call(
            ops,
            "POST",
            f"{url}/v1/opt-outs?reason=import",
            "/v1/opt-outs",
            data="6591230002\n6591230003\n",
            headers={"Content-Type": "text/plain"},
        )
        assert (status, imported["added"]) == (200, 2)
        status, error = await c.call(ops, "POST", f"{url}/v1/opt-outs", "/v1/opt-outs", {"numbers": ["12"]})
        assert (status, error["error"]["field"]) == (400, "numbers[0]")
        status, page = await c.call(reader, "GET", f"{url}/v1/opt-outs?limit=2", "/v1/opt-outs")
        assert status == 200 and len(page["opt_outs"]) == 2 and page["next_cursor"]
        removal = "/v1/opt-outs/{number}"
        status, _ = await c.call(ops, "DELETE", f"{url}/v1/opt-outs/6591230001", removal)
        assert status == 200
        status, _ = await c.call(ops, "DELETE", f"{url}/v1/opt-outs/6591230001", removal)
        assert status == 404

        # budgets and the guard settings
        by_key, global_ = "/v1/budgets/{scope}/{key}", "/v1/budgets/{scope}"
        status, budget = await c.call(ops, "PUT", f"{url}/v1/budgets/global", global_, {"daily_limit": 1000})
        assert (status, budget["key"]) == (200, "")
        status, _ = await c.call(ops, "PUT", f"{url}/v1/budgets/prefix/65", by_key, {"daily_limit": 10})
        assert status == 200
        status, error = await c.call(ops, "PUT", f"{url}/v1/budgets/prefix/65", by_key, {"daily_limit": -1})
        assert (status, error["error"]["field"]) == (400, "daily_limit")
        status, budgets = await c.call(reader, "GET", f"{url}/v1/budgets", "/v1/budgets")
        assert status == 200 and len(budgets["budgets"]) == 2
        status, _ = await c.call(ops, "DELETE", f"{url}/v1/budgets/prefix/65", by_key)
        assert status == 200
        status, _ = await c.call(ops, "DELETE", f"{url}/v1/budgets/prefix/65", by_key)
        assert status == 404
        status, _ = await c.call(ops, "DELETE", f"{url}/v1/budgets/global", global_)
        assert status == 200
        status, _ = await c.call(reader, "GET", f"{url}/v1/guards", "/v1/guards")
        assert status == 200

        # the charts' series and the duration advice (the seeded messages are in both)
        status, series = await c.call(reader, "GET", f"{url}/v1/stats/series", "/v1/stats/series")
        assert status == 200 and sum(series["channels"]["whatsapp"]["sent"]) == 2  # not the rejected one
        status, _ = await c.call(
            reader, "GET", f"{url}/v1/stats/series?channel=whatsapp&window=60", "/v1/stats/series"
        )
        assert status == 200
        status, latency = await c.call(reader, "GET", f"{url}/v1/stats/latency", "/v1/stats/latency")
        assert status == 200 and latency["groups"][0]["sent_to_delivered"]["count"] >= 1
        status, _ = await c.call(
            reader, "GET", f"{url}/v1/stats/latency?prefix=65&target=0.05", "/v1/stats/latency"
        )
        assert status == 200
        status, error = await c.call(reader, "GET", f"{url}/v1/stats/latency?target=0.9", "/v1/stats/latency")
        assert (status, error["error"]["field"]) == (400, "target")
        status, _ = await c.call(api, "GET", f"{url}/v1/stats/series", "/v1/stats/series")
        assert status == 403  # the read token is set: the API token no longer reads
        async with aiohttp.ClientSession() as anon:
            status, _ = await c.call(anon, "GET", f"{url}/v1/guards", "/v1/guards")
            assert status == 401
    assert len(c.checked) == 32, c.checked
    new = {f"{m} {p}" for m, p, _ in operations_of(c.doc) if p.startswith(NEW_PREFIXES)}
    assert len(new) == 18 and new <= {check.rsplit(" ", 1)[0] for check in c.checked}


def test_the_documented_query_patterns_are_the_handlers() -> None:
    """The channel and prefix patterns are written in openapi.py (operator.py imports it) and checked in
    operator.py; the chart series struct names exactly opstats.SERIES."""
    doc = openapi.document()
    params = {p["name"]: p["schema"] for p in doc["paths"]["/v1/stats/latency"]["get"]["parameters"]}
    assert params["channel"]["pattern"] == f"^{operator.CHANNEL_RE.pattern}$"
    assert params["prefix"]["pattern"] == f"^{operator.PREFIX_RE.pattern}$"
    assert tuple(schemas.SeriesCounts.__struct_fields__) == opstats.SERIES


def test_a_view_with_an_undeclared_field_fails_its_schema() -> None:
    """The response check can fail: the message view with one key more, or one less, is refused."""
    doc = openapi.document()
    c = Checker(doc)
    row = {
        "id": uuid.uuid4(),
        "channel": "whatsapp",
        "to_number": "6591234560",
        "from_number": "6580000000",
        "client_task_id": None,
        "chat_state": "sent",
        "fallback_state": "armed",
        "fallback_rule": "undelivered",
        "fallback_duration_s": 600,
        "provider_message_id": "pm-1",
        "sms_provider_id": None,
        "due_at": None,
        "fire_reason": None,
        "hold_reason": None,
        "double_delivered": False,
        "send_attempts": 1,
        "last_error": None,
        "created_at": dt.datetime.now(dt.UTC),
        "updated_at": dt.datetime.now(dt.UTC),
        "sent_at": None,
        "fired_at": None,
    }
    events = [{"at": dt.datetime.now(dt.UTC), "kind": "accepted", "detail": {"fallback_state": "armed"}}]
    good = msgspec.to_builtins(service.message_view(row, events))
    c.check("GET", "/v1/messages/{id}", 200, good)
    with pytest.raises(AssertionError):
        c.check("GET", "/v1/messages/{id}", 200, {**good, "extra": 1})
    with pytest.raises(AssertionError):
        c.check("GET", "/v1/messages/{id}", 200, {k: v for k, v in good.items() if k != "sms_id"})
    with pytest.raises(AssertionError):
        c.check("GET", "/v1/messages/{id}", 200, {**good, "events": [{"kind": "accepted"}]})
