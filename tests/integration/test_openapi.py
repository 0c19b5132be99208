"""GET /v1/openapi.json is valid OpenAPI 3.1 and matches the daemon: routes, query parameters, body fields.

The document is the oracle: every route under /v1 in the aiohttp router is documented and every documented
route exists; every documented query parameter is read by its handler (an empty value is a 400 naming it)
and an undocumented one is refused; every documented body field is known to its handler and an undocumented
one is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openapi_spec_validator
import pytest

from fallback_daemon import app, config, opinput, service, store
from fallback_daemon import web as web_
from fallback_daemon.web import openapi
from tests.integration import opsupport

UNDOCUMENTED = "zz_undocumented"


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn) as running:
        yield running


@pytest.fixture
async def doc(daemon: app.Running) -> dict[str, Any]:
    async with aiohttp.ClientSession() as anon, anon.get(f"{daemon.url}/v1/openapi.json") as resp:
        assert resp.status == 200
        return dict(await resp.json())


def operations_of(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def concrete(path: str) -> str:
    """A documented path with its parameters filled in (ids that exist nowhere: bodies are checked first)."""
    return path.replace("{id}", "1" if "dead-letters" in path else str(uuid.uuid4())).replace("{token}", "x")


async def test_document_is_valid_openapi_31(doc: dict[str, Any]) -> None:
    """The served document validates as OpenAPI 3.1 and is readable without a token."""
    assert doc["openapi"] == "3.1.0"
    openapi_spec_validator.validate(doc)


async def test_routes_match_the_router(db: store.Store) -> None:
    """Every /v1 route in the router is documented with its method; every documented route is registered."""
    aio = web_.create_app(config.Settings(), service.Service(db))
    registered = {
        (r.method, r.resource.canonical)
        for r in aio.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(m, p) for m, p, _ in operations_of(openapi.document())}
    assert {r for r in registered if r[1].startswith("/v1/")} == {
        d for d in documented if d[1].startswith("/v1/")
    }
    assert documented <= registered


async def test_search_parameters_are_exactly_the_documented_ones(doc: dict[str, Any]) -> None:
    """The documented GET /v1/messages parameters are the ones the search parser accepts."""
    params = {p["name"] for p in doc["paths"]["/v1/messages"]["get"]["parameters"]}
    assert params == {p.name for p in opinput.SEARCH_PARAMS}


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
            schema = (
                op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            )
            if "$ref" in schema:
                schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
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
