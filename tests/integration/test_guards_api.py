"""The guard routes over real HTTP (the daemon's application on loopback, no loops): opt-outs (add, import,
list, remove; all-or-nothing), budgets (set, list, delete), the guard settings, field-naming 400s, auth."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fallback_daemon import config
from fallback_daemon import web as web_
from fallback_daemon.db import store
from fallback_daemon.engine import guards, service

TOKEN = "guards-api-token-0123456789"


@contextlib.asynccontextmanager
async def serve(svc: service.Service) -> AsyncIterator[str]:
    settings = config.load(
        {
            "FALLBACK_API_TOKEN": TOKEN,
            "FALLBACK_RECEIPT_TOKEN": "receipt-token-0123456789",
            "FALLBACK_QUIET_HOURS": "86=22:00-08:00@Asia/Shanghai",
            "FALLBACK_SMS_DENY_PREFIXES": "882,883",
        }
    )
    svc.guard_config = guards.GuardConfig.from_settings(settings)
    runner = web.AppRunner(web_.create_app(settings, svc), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(svc: service.Service) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with serve(svc) as url, aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        yield http, url


async def call(http: aiohttp.ClientSession, method: str, url: str, status: int = 200, **kw: Any) -> Any:
    async with http.request(method, url, **kw) as resp:
        body = await resp.json()
        assert resp.status == status, body
        return body


class TestOptOuts:
    async def test_add_list_remove(self, api: tuple[aiohttp.ClientSession, str], db: store.Store) -> None:
        http, url = api
        added = await call(
            http, "POST", f"{url}/v1/opt-outs", json={"numbers": ["+65 9123 4567", "6591234568"]}
        )
        assert added == {"added": 2, "already": 0, "numbers": 2}
        again = await call(
            http, "POST", f"{url}/v1/opt-outs", json={"numbers": ["6591234567"], "reason": "STOP"}
        )
        assert again == {"added": 0, "already": 1, "numbers": 1}
        page = await call(http, "GET", f"{url}/v1/opt-outs?limit=1")
        assert [o["number"] for o in page["opt_outs"]] == ["6591234567"] and page["next_cursor"]
        rest = await call(http, "GET", f"{url}/v1/opt-outs", params={"cursor": page["next_cursor"]})
        assert [o["number"] for o in rest["opt_outs"]] == ["6591234568"] and rest["next_cursor"] is None
        by_prefix = await call(http, "GET", f"{url}/v1/opt-outs?number=659123456")
        assert len(by_prefix["opt_outs"]) == 2 and by_prefix["opt_outs"][0]["source"] == "api"
        assert await call(http, "DELETE", f"{url}/v1/opt-outs/+6591234567") == {
            "number": "6591234567",
            "removed": True,
        }
        missing = await call(http, "DELETE", f"{url}/v1/opt-outs/6591234567", status=404)
        assert "not on the opt-out list" in missing["error"]["message"]

    async def test_import_is_all_or_nothing(
        self, api: tuple[aiohttp.ClientSession, str], db: store.Store
    ) -> None:
        """A CSV import adds every number; one bad line refuses the whole body (400 naming the line)."""
        http, url = api
        csv = "number,reason\n6591234567,asked\n+447700900123\n"
        bad = csv + "not-a-number\n"
        refused = await call(
            http, "POST", f"{url}/v1/opt-outs", status=400, data=bad, headers={"Content-Type": "text/csv"}
        )
        assert refused["error"]["field"] == "body" and "line 4" in refused["error"]["message"]
        assert await db.fetchval("SELECT count(*) FROM sms_opt_outs") == 0
        done = await call(
            http,
            "POST",
            f"{url}/v1/opt-outs?reason=imported",
            data=csv,
            headers={"Content-Type": "text/csv"},
        )
        assert done == {"added": 2, "already": 0, "numbers": 2}
        rows = await db.fetch("SELECT number, source, reason FROM sms_opt_outs ORDER BY number")
        assert [tuple(r) for r in rows] == [
            ("447700900123", "import", "imported"),
            ("6591234567", "import", "imported"),
        ]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"numbers": ["6591234567", "12"]}, "numbers[1]"),
            ({"numbers": []}, "numbers"),
            ({"numbers": ["6591234567"], "why": "x"}, "why"),
            ({"numbers": ["6591234567"], "reason": 5}, "reason"),
        ],
    )
    async def test_bad_bodies_name_the_field(
        self, api: tuple[aiohttp.ClientSession, str], db: store.Store, body: Any, field: str
    ) -> None:
        http, url = api
        answer = await call(http, "POST", f"{url}/v1/opt-outs", status=400, json=body)
        assert answer["error"]["field"] == field
        assert await db.fetchval("SELECT count(*) FROM sms_opt_outs") == 0

    async def test_a_token_is_needed(self, svc: service.Service) -> None:
        async with serve(svc) as url, aiohttp.ClientSession() as anon:
            for method, path in (("GET", "/v1/opt-outs"), ("POST", "/v1/opt-outs"), ("GET", "/v1/budgets")):
                async with anon.request(method, url + path, json={"numbers": ["6591234567"]}) as resp:
                    assert resp.status == 401


class TestBudgets:
    async def test_set_list_delete(self, api: tuple[aiohttp.ClientSession, str], db: store.Store) -> None:
        http, url = api
        one = await call(http, "PUT", f"{url}/v1/budgets/global", json={"daily_limit": 100, "actor": "ops"})
        assert (one["scope"], one["key"], one["daily_limit"], one["used_today"], one["remaining"]) == (
            "global",
            "",
            100,
            0,
            100,
        )
        await call(http, "PUT", f"{url}/v1/budgets/prefix/+1876", json={"daily_limit": 5})
        await call(http, "PUT", f"{url}/v1/budgets/space/shop-a", json={"daily_limit": 0})
        listing = await call(http, "GET", f"{url}/v1/budgets")
        assert (listing["time_zone"], listing["action"]) == ("UTC", "hold")
        assert [(b["scope"], b["key"], b["daily_limit"]) for b in listing["budgets"]] == [
            ("global", "", 100),
            ("prefix", "1876", 5),
            ("space", "shop-a", 0),
        ]
        assert (await call(http, "DELETE", f"{url}/v1/budgets/prefix/1876"))["deleted"] is True
        await call(http, "DELETE", f"{url}/v1/budgets/prefix/1876", status=404)
        assert await db.fetchval("SELECT count(*) FROM sms_budgets") == 2

    @pytest.mark.parametrize(
        ("path", "body", "field"),
        [
            ("/v1/budgets/country/86", {"daily_limit": 1}, "scope"),
            ("/v1/budgets/prefix", {"daily_limit": 1}, "key"),
            ("/v1/budgets/global/x", {"daily_limit": 1}, "key"),
            ("/v1/budgets/prefix/8a", {"daily_limit": 1}, "key"),
            ("/v1/budgets/global", {"daily_limit": -1}, "daily_limit"),
            ("/v1/budgets/global", {"daily_limit": True}, "daily_limit"),
            ("/v1/budgets/global", {}, "daily_limit"),
            ("/v1/budgets/global", {"daily_limit": 1, "limit": 2}, "limit"),
        ],
    )
    async def test_bad_requests_name_the_field(
        self, api: tuple[aiohttp.ClientSession, str], db: store.Store, path: str, body: Any, field: str
    ) -> None:
        http, url = api
        answer = await call(http, "PUT", url + path, status=400, json=body)
        assert answer["error"]["field"] == field
        assert await db.fetchval("SELECT count(*) FROM sms_budgets") == 0

    async def test_guard_settings(self, api: tuple[aiohttp.ClientSession, str]) -> None:
        http, url = api
        got = await call(http, "GET", f"{url}/v1/guards")
        assert got == {
            "budget_time_zone": "UTC",
            "budget_action": "hold",
            "deny_prefixes": ["882", "883"],
            "quiet_hours": [{"prefix": "86", "window": "22:00-08:00@Asia/Shanghai"}],
        }


class TestCli:
    async def test_opt_out_and_budget_commands(
        self, svc: service.Service, db: store.Store, tmp_path: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`opt-out add|import|list|remove` and `budget set|list|unset` against the running routes."""
        from fallback_daemon import cli
        from fallback_daemon.ops import cli_guards

        settings = config.load({"FALLBACK_API_TOKEN": TOKEN})
        stop_list = tmp_path / "stop.csv"
        stop_list.write_text("number\n447700900123\n")
        async with serve(svc) as url:

            async def run(*argv: str) -> int:
                args = cli.build_parser().parse_args([*argv, "--url", url])
                assert cli_guards.is_guards(args)
                return await cli_guards.run(args, settings)

            assert await run("opt-out", "add", "+6591234567", "--reason", "phone") == 0
            assert await run("opt-out", "import", str(stop_list)) == 0
            assert "1 added" in capsys.readouterr().out
            assert await run("opt-out", "list") == 0
            listed = capsys.readouterr().out
            assert "6591234567" in listed and "447700900123" in listed and "import" in listed
            assert await run("opt-out", "remove", "6591234567") == 0
            assert await run("opt-out", "remove", "6591234567") == cli_guards.REFUSED
            assert await run("budget", "set", "prefix", "1876", "20") == 0
            assert await run("budget", "set", "prefix", "20") == cli_guards.USAGE
            assert await run("budget", "list", "--json") == 0
            out = capsys.readouterr().out
            assert '"key": "1876"' in out and '"daily_limit": 20' in out
            assert await run("budget", "unset", "prefix", "1876") == 0
        assert await db.fetchval("SELECT count(*) FROM sms_budgets") == 0
        assert [r["number"] for r in await db.fetch("SELECT number FROM sms_opt_outs")] == ["447700900123"]
