"""Provider lookups of ambiguous sends against the sandbox over real HTTP (signatures checked): CAMS
ListChatappMessage, SMS QuerySendDetails / QueryMessage; found, absent, paging, provider errors, and a send
the sandbox processed but whose answer was lost."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from fallback_daemon import sandbox
from fallback_daemon.core import errors, ports
from fallback_daemon.providers import acs, alibaba_sms, cams, sms_routing, sns

FOUND, ABSENT, UNKNOWN = ports.LookupResult.FOUND, ports.LookupResult.ABSENT, ports.LookupResult.UNKNOWN
CHAT = {
    "ChannelType": "whatsapp",
    "Type": "template",
    "TemplateCode": "744c4b5c79c9432497a075bdfca3ee",
    "Language": "en",
    "From": "6580000000",
    "CustSpaceId": "cams-sandbox",
    "TemplateParams": '{"code":"1234"}',
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sb() -> AsyncIterator[sandbox.Sandbox]:
    box = await sandbox.serve(sandbox.SandboxConfig())
    yield box
    await box.close()


def acs_client(
    session: aiohttp.ClientSession,
    url: str,
    *,
    version: str = cams.VERSION,
    secret: str = "sandbox-secret",
    timeout: float = 5.0,
) -> acs.AcsClient:
    return acs.AcsClient(
        session,
        endpoint=url,
        version=version,
        access_key_id="sandbox-ak",
        access_key_secret=secret,
        timeout_s=timeout,
    )


def chat(
    session: aiohttp.ClientSession,
    sb: sandbox.Sandbox,
    *,
    timeout: float = 5.0,
    secret: str = "sandbox-secret",
    page_size: int = cams.PAGE_SIZE,
    cust_space_id: str = "",
) -> cams.CamsClient:
    client = acs_client(session, sb.url, timeout=timeout, secret=secret)
    return cams.CamsClient(client, cust_space_id=cust_space_id, page_size=page_size)


def window() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=1)


class TestChatLookup:
    """CamsClient.lookup through ListChatappMessage."""

    async def test_lost_answer_is_found_with_the_sandbox_message_id(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """A send the sandbox processed but never answered is AmbiguousError for the sender, and the lookup
        finds it with the MessageId the sandbox gave it."""
        sb.lose_answers("SendChatappMessage")
        since = dt.datetime.now(dt.UTC)
        params = {**CHAT, "To": "6591000010"}
        with pytest.raises(errors.AmbiguousError):
            await chat(session, sb, timeout=0.5).send(task_id="m-lost", params=params)
        entry = sb.journal()["chat"]["m-lost"]
        assert entry["accepted"] == 1
        found = await chat(session, sb).lookup(
            task_id="m-lost", params=params, since=since, until=dt.datetime.now(dt.UTC)
        )
        assert (found.result, found.provider_id, found.status) == (FOUND, entry["message_id"], "read")

    async def test_no_send_to_that_user_is_absent(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """Messages to other users, and a send the sandbox rejected, leave this user's window empty."""
        client = chat(session, sb)
        await client.send(task_id="other", params={**CHAT, "To": "6591000020"})
        with pytest.raises(errors.PermanentError):  # suffix 8: rejected, never accepted
            await client.send(task_id="rejected", params={**CHAT, "To": "6591000028"})
        since, until = window()
        for to in ("6591000021", "6591000028"):
            got = await client.lookup(task_id="x", params={**CHAT, "To": to}, since=since, until=until)
            assert got.result is ABSENT, got.detail

    async def test_a_send_outside_the_window_is_not_a_candidate(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """The window is passed to ListChatappMessage: a message sent before it does not count."""
        client = chat(session, sb)
        params = {**CHAT, "To": "6591000030"}
        await client.send(task_id="before", params=params)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
        got = await client.lookup(
            task_id="after", params=params, since=later, until=later + dt.timedelta(minutes=1)
        )
        assert got.result is ABSENT, got.detail

    async def test_paging_across_pages_with_other_messages_excluded(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """With 2 rows a page, the lookup reads all 3 pages; our lost send is found once the three
        messages known to be others are excluded, and is UNKNOWN (4 candidates) without that."""
        client = chat(session, sb, page_size=2)
        params = {**CHAT, "To": "6591000040"}
        known = [await client.send(task_id=f"known-{i}", params=params) for i in range(3)]
        sb.lose_answers("SendChatappMessage")
        with pytest.raises(errors.AmbiguousError):
            await chat(session, sb, timeout=0.5).send(task_id="ours", params=params)
        ours_id = sb.journal()["chat"]["ours"]["message_id"]
        since, until = window()
        before = sb.state.ledger.queries
        found = await client.lookup(
            task_id="ours", params=params, since=since, until=until, exclude_ids=known
        )
        assert (found.result, found.provider_id) == (FOUND, ours_id)
        assert sb.state.ledger.queries - before == 3  # pages of 2, 2 and 0 rows
        unsure = await client.lookup(task_id="ours", params=params, since=since, until=until)
        assert (unsure.result, unsure.candidates) == (UNKNOWN, 4)
        gone = await client.lookup(
            task_id="x", params=params, since=since, until=until, exclude_ids=[*known, ours_id]
        )
        assert gone.result is ABSENT, gone.detail

    async def test_one_candidate_with_another_template_is_unknown(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """A single row that could be ours but carries another TemplateCode is neither found nor absent."""
        client = chat(session, sb)
        params = {**CHAT, "To": "6591000050"}
        await client.send(task_id="a", params={**params, "TemplateCode": "other-template"})
        since, until = window()
        got = await client.lookup(task_id="b", params=params, since=since, until=until)
        assert (got.result, got.candidates) == (UNKNOWN, 1)
        assert "TemplateCode" in got.detail

    async def test_provider_errors_are_unknown(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """A 503 from the query, or a refused signature, gives UNKNOWN (never an exception, never ABSENT)."""
        params = {**CHAT, "To": "6591000060"}
        since, until = window()
        sb.fail_queries(1)
        failed = await chat(session, sb).lookup(task_id="t", params=params, since=since, until=until)
        assert failed.result is UNKNOWN
        assert "ServiceUnavailable" in failed.detail
        refused = await chat(session, sb, secret="wrong").lookup(
            task_id="t", params=params, since=since, until=until
        )
        assert refused.result is UNKNOWN
        assert "SignatureDoesNotMatch" in refused.detail

    async def test_uncovered_channel_or_no_space_is_unknown_without_a_call(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """Messenger is not covered by ListChatappMessage, and without a CustSpaceId it cannot be asked."""
        since, until = window()
        for params in (
            {**CHAT, "ChannelType": "messenger", "To": "123"},
            {k: v for k, v in CHAT.items() if k != "CustSpaceId"} | {"To": "6591000070"},
        ):
            got = await chat(session, sb).lookup(task_id="t", params=params, since=since, until=until)
            assert got.result is UNKNOWN
        assert sb.state.ledger.queries == 0

    async def test_configured_space_is_used_when_params_have_none(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """The client's own CustSpaceId stands in for a message sent without one."""
        params = {k: v for k, v in CHAT.items() if k != "CustSpaceId"} | {"To": "6591000080"}
        client = chat(session, sb, cust_space_id="cams-sandbox")
        mid = await client.send(task_id="s", params=params)
        since, until = window()
        got = await client.lookup(task_id="s", params=params, since=since, until=until)
        assert (got.result, got.provider_id) == (FOUND, mid)


def domestic(
    session: aiohttp.ClientSession,
    sb: sandbox.Sandbox,
    *,
    timeout: float = 5.0,
    page_size: int = alibaba_sms.PAGE_SIZE,
) -> alibaba_sms.DomesticSms:
    client = acs_client(session, sb.url, version=alibaba_sms.DOMESTIC_VERSION, timeout=timeout)
    return alibaba_sms.DomesticSms(
        client, sign_name="Demo", template_code="SMS_123456789", page_size=page_size
    )


class TestDomesticLookup:
    """DomesticSms.lookup through QuerySendDetails."""

    async def test_lost_answer_is_found_by_out_id(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """A SendSms processed but never answered is found by its OutId, with its delivery status."""
        sb.lose_answers("SendSms")
        with pytest.raises(errors.AmbiguousError):
            await domestic(session, sb, timeout=0.5).send(
                fallback_id="fb-lost", to="8613900000001", text="", template_params={"code": "1"}
            )
        assert sb.journal()["sms"]["fb-lost"]["sends"] == 1
        since, until = window()
        got = await domestic(session, sb).lookup(
            fallback_id="fb-lost", to="8613900000001", since=since, until=until
        )
        assert (got.result, got.status, got.provider_id) == (FOUND, "delivered", None)

    async def test_never_sent_is_absent(self, session: aiohttp.ClientSession, sb: sandbox.Sandbox) -> None:
        """Other fallbacks to the same number carry other OutIds: ours is ABSENT."""
        gw = domestic(session, sb)
        await gw.send(fallback_id="fb-other", to="8613900000002", text="", template_params={})
        since, until = window()
        got = await gw.lookup(fallback_id="fb-never", to="8613900000002", since=since, until=until)
        assert got.result is ABSENT, got.detail

    async def test_paging_finds_the_oldest_on_a_later_page(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """With 2 rows a page and 3 sends to the number (newest first), the first send is on page 2."""
        gw = domestic(session, sb, page_size=2)
        for ref in ("fb-p1", "fb-p2", "fb-p3"):
            await gw.send(fallback_id=ref, to="8613900000003", text="", template_params={})
        since, until = window()
        before = sb.state.ledger.queries
        got = await gw.lookup(fallback_id="fb-p1", to="8613900000003", since=since, until=until)
        assert got.result is FOUND, got.detail
        dates = len(
            alibaba_sms.send_dates(since - alibaba_sms.CLOCK_MARGIN, until + alibaba_sms.CLOCK_MARGIN)
        )
        assert sb.state.ledger.queries - before >= dates + 1  # page 2 asked on the date that has the rows

    async def test_provider_error_is_unknown(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """A failed QuerySendDetails call gives UNKNOWN, never ABSENT."""
        sb.fail_queries(1)
        since, until = window()
        got = await domestic(session, sb).lookup(
            fallback_id="fb-x", to="8613900000004", since=since, until=until
        )
        assert got.result is UNKNOWN
        assert "ServiceUnavailable" in got.detail

    async def test_a_row_without_out_id_on_our_template_is_unknown(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """A SendSms without OutId (someone else's tooling) on our template could be ours: UNKNOWN."""
        client = acs_client(session, sb.url, version=alibaba_sms.DOMESTIC_VERSION)
        await client.call(
            "SendSms", {"PhoneNumbers": "8613900000005", "SignName": "Demo", "TemplateCode": "SMS_123456789"}
        )
        since, until = window()
        got = await domestic(session, sb).lookup(
            fallback_id="fb-y", to="8613900000005", since=since, until=until
        )
        assert (got.result, got.candidates) == (UNKNOWN, 1)

    async def test_old_window_is_unknown(self, session: aiohttp.ClientSession, sb: sandbox.Sandbox) -> None:
        """QuerySendDetails keeps 30 days: an older window cannot be proven empty."""
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
        got = await domestic(session, sb).lookup(fallback_id="fb", to="8613900000006", since=old, until=old)
        assert got.result is UNKNOWN
        assert sb.state.ledger.queries == 0


class TestNoQuery:
    """Gateways without a usable query answer UNKNOWN; routing hands the lookup to the routed gateway."""

    async def test_globe_lookup_is_unknown_but_query_message_finds_a_known_id(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """SendMessageToGlobe has no query by TaskId (UNKNOWN); QueryMessage finds a MessageId we hold."""
        gw = alibaba_sms.GlobeSms(acs_client(session, sb.url, version=alibaba_sms.VERSION), sender="Fallback")
        message_id = await gw.send(fallback_id="fb-g", to="6591234567", text="hello", template_params={})
        since, until = window()
        assert (
            await gw.lookup(fallback_id="fb-g", to="6591234567", since=since, until=until)
        ).result is UNKNOWN
        got = await gw.query_message(message_id)
        assert (got.result, got.provider_id, got.status) == (FOUND, message_id, "sent")
        assert (await gw.query_message("0000")).result is UNKNOWN

    async def test_sns_lookup_is_unknown(self) -> None:
        """SNS cannot list published SMS: UNKNOWN, without touching the client."""
        since, until = window()
        got = await sns.SnsSms(None).lookup(fallback_id="fb", to="6591234567", since=since, until=until)
        assert got.result is UNKNOWN

    async def test_router_routes_and_delegates_the_lookup(
        self, session: aiohttp.ClientSession, sb: sandbox.Sandbox
    ) -> None:
        """route() returns the gateway for the number (pick is the same), and lookup goes to it."""
        dom = domestic(session, sb)
        globe = alibaba_sms.GlobeSms(acs_client(session, sb.url, version=alibaba_sms.VERSION), sender="")
        router = sms_routing.SmsRouter(
            {"globe": globe, "domestic": dom}, default="globe", routes=[("86", "domestic")]
        )
        assert router.route(to="8613900000007", channel="whatsapp") is dom
        assert router.pick(to="6591234567") is globe
        assert dom.route(to="x", channel="y") is dom
        await router.send(fallback_id="fb-r", to="8613900000007", text="", template_params={})
        since, until = window()
        got = await router.lookup(fallback_id="fb-r", to="8613900000007", since=since, until=until)
        assert got.result is FOUND, got.detail


async def test_throttling_raises_throttled_with_the_retry_after(
    session: aiohttp.ClientSession,
) -> None:
    """Beyond the QPS cap the sandbox answers Throttling.User with x-acs-retry-after (ms): Throttled, with
    retry_after_s in seconds, still a TransientError and still is_throttling."""
    box = await sandbox.serve(sandbox.SandboxConfig(qps=1, clock=lambda: 0.0))
    try:
        client = cams.CamsClient(acs_client(session, box.url))
        await client.send(task_id="first", params={**CHAT, "To": "6591000090"})
        with pytest.raises(errors.Throttled) as info:
            await client.send(task_id="second", params={**CHAT, "To": "6591000091"})
    finally:
        await box.close()
    assert (info.value.code, info.value.retry_after_s) == ("Throttling.User", 1.0)
    assert isinstance(info.value, errors.TransientError)
    assert acs.is_throttling(info.value.code)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("80", 0.08), (" 2000 ", 2.0), ("0", None), ("-5", None), ("x", None), (None, None)],
)
def test_retry_after_header_is_positive_milliseconds(header: str | None, expected: float | None) -> None:
    """x-acs-retry-after is read as positive milliseconds; anything else means "not said"."""
    assert acs.retry_after_s(header) == expected


async def serve_once(handler: Callable[[web.Request], Awaitable[web.Response]]) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_list_parameters_travel_in_the_query_string(session: aiohttp.ClientSession) -> None:
    """As in the SDK, ListChatappMessage's parameters (Page JSON-shrunk) go in the query string."""
    seen: list[tuple[dict[str, str], bytes]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((dict(parse_qsl(request.rel_url.raw_query_string)), await request.read()))
        return web.json_response({"RequestId": "r", "Code": "OK", "Success": True, "Data": []})

    runner = await serve_once(answer)
    try:
        port = runner.addresses[0][1]
        client = cams.CamsClient(acs_client(session, f"http://127.0.0.1:{port}"))
        since, until = window()
        got = await client.lookup(task_id="t", params={**CHAT, "To": "6591000099"}, since=since, until=until)
    finally:
        await runner.cleanup()
    assert got.result is ABSENT
    [(query, body)] = seen
    assert body == b""
    assert (query["BusinessNumber"], query["UserNumber"], query["EventAction"]) == (
        "6580000000",
        "6591000099",
        "DOWN",
    )
    assert json.loads(query["Page"]) == {"Index": 1, "Size": cams.PAGE_SIZE}
    assert int(query["StartTime"]) == int((since - cams.CLOCK_MARGIN).timestamp() * 1000)


async def test_http_429_is_throttled_with_retry_after(session: aiohttp.ClientSession) -> None:
    """An HTTP 429 without a JSON body is Throttled too, and its x-acs-retry-after is honoured."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=429, text="slow down", headers={"x-acs-retry-after": "250"})

    runner = await serve_once(answer)
    try:
        port = runner.addresses[0][1]
        with pytest.raises(errors.Throttled) as info:
            await acs_client(session, f"http://127.0.0.1:{port}").call("SendChatappMessage", {"To": "1"})
    finally:
        await runner.cleanup()
    assert (info.value.status, info.value.retry_after_s) == (429, 0.25)
