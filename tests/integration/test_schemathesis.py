"""schemathesis over the daemon's own OpenAPI document (issue 10): every operation of `/v1/openapi.json`,
with data that fits the schema (positive) and data that breaks it (negative), sent over loopback HTTP to
the whole daemon (the sandbox as Alibaba) with the operator token and, for the receipt endpoints, the
receipt token in the path.

Each generated request asserts no 5xx; after the run the daemon still answers /healthz and /readyz.
Fixed seed (`derandomize=True`) and a bounded number of examples per operation and mode, so the run is
repeatable and short. Hypothesis runs in a worker thread (schemathesis calls with `requests`, which blocks),
while the daemon serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import hypothesis.errors
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from fallback_daemon import app
from tests.integration import opsupport

RECEIPT_TOKEN = "receipt-token-0123456789"  # opsupport's
EXAMPLES_PER_OPERATION = 20  # per operation and generation mode
REQUESTS: collections.Counter[str] = collections.Counter()
NOTHING_TO_NEGATE: list[str] = []
HEADERS = {"Authorization": f"Bearer {opsupport.TOKEN}"}


@pytest.fixture
async def daemon(db_dsn: str) -> AsyncIterator[app.Running]:
    async with opsupport.running_daemon(db_dsn) as running:
        yield running


def fuzz(document: dict[str, Any], base_url: str) -> list[str]:
    """Run every operation in both modes; the list of 5xx answers (empty when the property holds)."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            fixed = {"token": RECEIPT_TOKEN} if operation.path.startswith("/receipts/") else None
            for mode in schemathesis.GenerationMode:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)
                run_examples(strategy, f"{operation.label} [{mode.value}]", base_url, session, failures)
    return failures


def run_examples(
    strategy: Any, label: str, base_url: str, session: requests.Session, failures: list[str]
) -> None:
    """One bounded, derandomized hypothesis run of one operation in one mode."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def one(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, session=session, headers=HEADERS, timeout=30)
        REQUESTS[label] += 1
        REQUESTS[f"{response.status_code // 100}xx"] += 1
        if response.status_code >= 500:
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")

    try:
        one()
    except hypothesis.errors.Unsatisfiable:
        NOTHING_TO_NEGATE.append(label)  # no parameters, no body: no schema-breaking data exists


async def test_schemathesis_over_the_openapi_document_finds_no_5xx(daemon: app.Running) -> None:
    """Every operation, positive and negative data: no 5xx; the daemon is alive and ready afterwards."""
    async with opsupport.client() as http, http.get(f"{daemon.url}/v1/openapi.json") as resp:
        assert resp.status == 200
        document = await resp.json()
    operations = sum(len(v) for v in document["paths"].values())
    failures = await asyncio.to_thread(fuzz, document, daemon.url)
    assert failures == []
    # Every operation was exercised in both modes, except the negative mode of operations that take no
    # input at all (nothing to break: hypothesis reports it unsatisfiable).
    labels = {k for k in REQUESTS if k.endswith("]")}
    no_input = {
        f"{method.upper()} {path} [negative]"
        for path, methods in document["paths"].items()
        for method, op in methods.items()
        if not op.get("parameters") and "requestBody" not in op and "{" not in path
    }
    assert set(NOTHING_TO_NEGATE) <= no_input, NOTHING_TO_NEGATE
    assert len(labels | set(NOTHING_TO_NEGATE)) == 2 * operations, sorted(labels)
    assert REQUESTS["2xx"] > 0 and REQUESTS["4xx"] > 0, REQUESTS
    async with aiohttp.ClientSession() as anon:
        for path in ("/healthz", "/readyz"):
            async with anon.get(f"{daemon.url}{path}") as resp:
                assert resp.status == 200, path
    total = sum(v for k, v in REQUESTS.items() if k.endswith("]"))
    print(f"\nschemathesis: {total} requests over {operations} operations; {dict(REQUESTS)}")
