"""The token split (issue 13): every cell of the matrix in web/tokens.py, over real HTTP to the whole daemon.

Four configurations (only the API token; + operator; + read; all three) x three tokens x every scope. A
refusal is a JSON 401 (no or an unknown token) or 403 (a known token without the scope) naming, in
`error.tokens`, the variable(s) whose token the route takes; a refused send stores nothing. The expected
answers are written out here by hand, not computed from the code under test.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from fallback_daemon import config
from fallback_daemon.core import errors
from fallback_daemon.web import tokens
from tests.integration import opsupport

API, OPERATOR, READ = opsupport.TOKEN, "operator-token-0123456789", "read-token-0123456789"
NAMES = {"api": "FALLBACK_API_TOKEN", "operator": "FALLBACK_OPERATOR_TOKEN", "read": "FALLBACK_READ_TOKEN"}

# One representative request per route: (scope, method, path, JSON body).
ROUTES: list[tuple[str, str, str, Any]] = [
    ("send", "POST", "/v1/messages", {**opsupport.BODY, "To": "6591230001"}),
    ("send", "POST", "/v1/messages/batch", {"messages": [{**opsupport.BODY, "To": "6591230002"}]}),
    ("message", "GET", f"/v1/messages/{uuid.uuid4()}", None),
    ("read", "GET", "/v1/messages", None),
    ("read", "GET", "/v1/stats", None),
    ("read", "GET", "/v1/stats/series", None),
    ("read", "GET", "/v1/stats/latency", None),
    ("read", "GET", "/v1/dead-letters", None),
    ("read", "GET", "/metrics", None),
    ("operate", "POST", f"/v1/messages/{uuid.uuid4()}/cancel", {}),
    ("operate", "POST", f"/v1/messages/{uuid.uuid4()}/fire", {}),
    ("operate", "POST", f"/v1/messages/{uuid.uuid4()}/redrive", {}),
    ("operate", "POST", "/v1/held/release", {"all": True}),
    ("operate", "POST", "/v1/held/drop", {"all": True}),
    ("operate", "POST", "/v1/dead-letters/1/replay", {}),
]

# configuration -> scope -> the roles that may (the table of web/tokens.py, by hand).
MATRIX: dict[str, dict[str, set[str]]] = {
    "api-only": {"send": {"api"}, "message": {"api"}, "read": {"api"}, "operate": {"api"}},
    "with-operator": {
        "send": {"api"},
        "message": {"api", "operator"},
        "read": {"api", "operator"},
        "operate": {"operator"},
    },
    "with-read": {"send": {"api"}, "message": {"api", "read"}, "read": {"read"}, "operate": {"api"}},
    "all-three": {
        "send": {"api"},
        "message": {"api", "operator", "read"},
        "read": {"operator", "read"},
        "operate": {"operator"},
    },
}
ENV = {
    "api-only": {},
    "with-operator": {"FALLBACK_OPERATOR_TOKEN": OPERATOR},
    "with-read": {"FALLBACK_READ_TOKEN": READ},
    "all-three": {"FALLBACK_OPERATOR_TOKEN": OPERATOR, "FALLBACK_READ_TOKEN": READ},
}
TOKEN = {"api": API, "operator": OPERATOR, "read": READ}


async def call(url: str, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, json=body, headers=headers) as resp,
    ):
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


@pytest.mark.parametrize("setup", list(MATRIX))
async def test_every_token_on_every_route(db_dsn: str, setup: str) -> None:
    """Each token either passes authorisation (any answer but 401/403: the route then does its work) or is
    refused with 403 naming the tokens that would do; a refused send stores no message."""
    env = {**ENV[setup], "FALLBACK_METRICS_REQUIRE_TOKEN": "true"}
    async with opsupport.running_daemon(db_dsn, **env) as daemon:
        configured = {"api"} | {r for r, var in NAMES.items() if var in env}
        for role in sorted(configured):
            for scope, method, path, body in ROUTES:
                before = await daemon.svc.db.fetchval("SELECT count(*) FROM messages")
                status, answer = await call(
                    daemon.url, method, path, body, {"Authorization": f"Bearer {TOKEN[role]}"}
                )
                allowed = MATRIX[setup][scope]
                cell = (setup, role, method, path)
                if role in allowed:
                    assert status not in (401, 403), (cell, status, answer)
                else:
                    assert status == 403, (cell, status, answer)
                    assert answer["error"]["field"] == "Authorization", cell
                    assert sorted(answer["error"]["tokens"]) == sorted(NAMES[r] for r in allowed), cell
                    assert NAMES[role] in answer["error"]["message"], cell
                    assert await daemon.svc.db.fetchval("SELECT count(*) FROM messages") == before, cell


@pytest.mark.parametrize("setup", ["api-only", "all-three"])
async def test_no_token_a_wrong_one_or_another_scheme_is_401_naming_the_token(
    db_dsn: str, setup: str
) -> None:
    """401 with WWW-Authenticate: Bearer; the body names what the route takes, never a token value."""
    env = {**ENV[setup], "FALLBACK_METRICS_REQUIRE_TOKEN": "true"}
    async with opsupport.running_daemon(db_dsn, **env) as daemon:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": f"Basic {OPERATOR}"},
            {"Authorization": f"Bearer {OPERATOR}x"},
        ):
            for scope, method, path, body in ROUTES:
                async with (
                    aiohttp.ClientSession() as http,
                    http.request(method, daemon.url + path, json=body, headers=headers) as resp,
                ):
                    answer = await resp.json()
                    assert resp.status == 401, (headers, path, answer)
                    assert resp.headers["WWW-Authenticate"] == "Bearer"
                    want = sorted(NAMES[r] for r in MATRIX[setup][scope])
                    assert sorted(answer["error"]["tokens"]) == want, (path, answer)
                    assert all(t not in str(answer) for t in (API, OPERATOR, READ))
        assert await daemon.svc.db.fetchval("SELECT count(*) FROM messages") == 0


async def test_an_operator_token_acts_for_real_and_the_api_token_is_refused(db_dsn: str) -> None:
    """With the split, the application's token can send but not cancel; the operator token cancels; the
    refused attempt changes nothing (not even updated_at)."""
    async with opsupport.running_daemon(db_dsn, **ENV["all-three"]) as daemon, opsupport.client() as app_http:
        mid = await opsupport.send(app_http, daemon.url, "6591234566")
        # Silent (To …6): its one receipt (Sent) in, nothing more will happen to it by itself for 600 s.
        await opsupport.wait_for(
            app_http, daemon.url, mid, lambda v: any(e["kind"] == "chat_receipt" for e in v["events"])
        )
        stamp = await daemon.svc.db.fetchval("SELECT updated_at FROM messages WHERE id = $1", uuid.UUID(mid))
        cancel = f"/v1/messages/{mid}/cancel"
        status, answer = await call(daemon.url, "POST", cancel, {}, {"Authorization": f"Bearer {API}"})
        assert (status, answer["error"]["tokens"]) == (403, ["FALLBACK_OPERATOR_TOKEN"])
        status, answer = await call(daemon.url, "POST", cancel, {}, {"Authorization": f"Bearer {READ}"})
        assert status == 403
        row = await daemon.svc.db.fetchrow(
            "SELECT fallback_state, updated_at FROM messages WHERE id = $1", uuid.UUID(mid)
        )
        assert row is not None and (row["fallback_state"], row["updated_at"]) == ("armed", stamp)
        status, answer = await call(
            daemon.url,
            "POST",
            cancel,
            {"actor": "ops", "reason": "phoned"},
            {"Authorization": f"Bearer {OPERATOR}"},
        )
        assert (status, answer["fallback_state"]) == (200, "cancelled")
        status, view = await call(
            daemon.url, "GET", f"/v1/messages/{mid}", None, {"Authorization": f"Bearer {READ}"}
        )
        assert (status, view["fallback_state"]) == (200, "cancelled")


def test_equal_tokens_are_refused_at_start() -> None:
    """Two roles with one token would make a token's role ambiguous: config.load names the later one."""
    base = {"FALLBACK_API_TOKEN": API}
    with pytest.raises(errors.ConfigError) as exc:
        config.load({**base, "FALLBACK_OPERATOR_TOKEN": API})
    assert exc.value.variable == "FALLBACK_OPERATOR_TOKEN"
    assert "must differ from FALLBACK_API_TOKEN" in str(exc.value)
    with pytest.raises(errors.ConfigError) as exc:
        config.load({**base, "FALLBACK_OPERATOR_TOKEN": OPERATOR, "FALLBACK_READ_TOKEN": OPERATOR})
    assert exc.value.variable == "FALLBACK_READ_TOKEN"
    with pytest.raises(errors.ConfigError):
        config.load({**base, "FALLBACK_READ_TOKEN": "short"})  # the same rules as every token


def test_start_up_warns_while_the_api_token_can_act() -> None:
    """Without FALLBACK_OPERATOR_TOKEN the daemon warns that the send token also acts; with it, no warning."""
    [(event, text)] = tokens.warnings(config.load({"FALLBACK_API_TOKEN": API}))
    assert event == "operator_token_unset" and "FALLBACK_OPERATOR_TOKEN" in text
    assert (
        tokens.warnings(config.load({"FALLBACK_API_TOKEN": API, "FALLBACK_OPERATOR_TOKEN": OPERATOR})) == []
    )
