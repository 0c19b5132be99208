"""The sandbox web application: ACS3- and RPC-signed call dispatch, the /sandbox control endpoints, serving.

`create_app` builds the app (pushers and producer run inside its cleanup_ctx with one ClientSession);
`serve` runs it on a loopback port and returns a `Sandbox` handle; `run_forever` is the CLI entry.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from fallback_daemon.sandbox import auth, cams, dybaseapi, mns, replies, signatures, sms, sts
from fallback_daemon.sandbox import config as config_mod
from fallback_daemon.sandbox import state as state_mod

Handler = Callable[..., Awaitable[web.Response]]


@dataclasses.dataclass(frozen=True)
class _Action:
    versions: tuple[str, ...]
    handler: Handler
    product: str
    anonymous: bool = False  # no AccessKey, no signature (STS AssumeRoleWithOIDC)


ACTIONS: Mapping[str, _Action] = {
    cams.ACTION: _Action((cams.VERSION,), cams.send_chatapp_message, "cams"),
    cams.LIST_ACTION: _Action((cams.VERSION,), cams.list_chatapp_message, "cams"),
    sms.GLOBE_ACTION: _Action((sms.GLOBE_VERSION,), sms.send_message_to_globe, "dysmsapi"),
    sms.SMS_ACTION: _Action((sms.SMS_VERSION,), sms.send_sms, "dysmsapi"),
    sms.QUERY_MESSAGE_ACTION: _Action((sms.GLOBE_VERSION,), sms.query_message, "dysmsapi"),
    sms.QUERY_SEND_DETAILS_ACTION: _Action((sms.SMS_VERSION,), sms.query_send_details, "dysmsapi"),
    dybaseapi.ACTION: _Action(dybaseapi.VERSIONS, dybaseapi.query_token_for_mns_queue, dybaseapi.PRODUCT),
    sts.ACTION: _Action((sts.VERSION,), sts.assume_role_with_oidc, sts.PRODUCT, anonymous=True),
}
# Sends whose answer can be lost on purpose (POST /sandbox/faults).
SEND_ACTIONS = (cams.ACTION, sms.GLOBE_ACTION, sms.SMS_ACTION)
FORM = "application/x-www-form-urlencoded"


def _is_acs3(request: web.Request, params: Mapping[str, str]) -> bool:
    """ACS3 when the Authorization header says so; RPC when the call carries its Signature parameter.

    The SDKs send x-acs-action with RPC-signed calls too, so that header alone decides nothing: only a
    call with neither an ACS3 Authorization nor a Signature falls back to it (and is then refused as an
    incomplete ACS3 signature).
    """
    if request.headers.get("Authorization", "").startswith(signatures.ACS3 + " "):
        return True
    return "Signature" not in params and "x-acs-action" in request.headers


async def acs_entry(request: web.Request) -> web.Response:
    """GET or POST /: an Alibaba RPC-style call, ACS3-signed or RPC-signed (V1), dispatched on its action.

    ACS3 names the action in x-acs-action / x-acs-version; RPC in the Action / Version parameters, which
    come from the query string and, for a POST form, the body.
    """
    state = request.app[state_mod.STATE]
    stats = state.journal.stats
    body = await request.read()
    raw_query = request.rel_url.raw_query_string
    params = dict(parse_qsl(raw_query, keep_blank_values=True))
    if request.content_type == FORM and body:
        try:
            params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            return replies.pop_error(request, 400, "InvalidParameter", "The form body is not UTF-8.")
    acs3 = _is_acs3(request, params)
    if acs3:
        name, version = request.headers.get("x-acs-action", ""), request.headers.get("x-acs-version")
    else:
        name, version = params.get("Action", ""), params.get("Version")
    action = ACTIONS.get(name)
    if action is None:
        return replies.pop_error(request, 404, "InvalidAction.NotFound", product="")
    if name == cams.ACTION:
        stats.cams_calls += 1
    if version not in action.versions:
        return replies.pop_error(
            request,
            400,
            "InvalidVersion",
            f"Specified parameter Version is not valid: {name} is {' or '.join(action.versions)}.",
            product=action.product,
        )
    verdict: str | auth.Denial = ""
    if action.anonymous:
        pass
    elif acs3:
        received = auth.Received(
            method=request.method,
            raw_path=request.raw_path.split("?", 1)[0],
            raw_query=raw_query,
            headers=request.headers,
            body=body,
        )
        verdict = state.verifier.verify(received)
    else:
        verdict = state.rpc_verifier.verify(request.method, params)
    if isinstance(verdict, auth.Denial):
        stats.auth_failures += 1
        if verdict.code == "SignatureDoesNotMatch":
            stats.signature_failures += 1
        return replies.pop_error(
            request, verdict.status, verdict.code, verdict.message, product=action.product
        )
    if not acs3:  # the signature's own parameters are not the action's
        params = {k: v for k, v in params.items() if k not in auth.RPC_COMMON}
    return await action.handler(state, access_key=verdict, params=params, request=request)


async def journal_view(request: web.Request) -> web.Response:
    """GET /sandbox/journal: per CAMS TaskId and per SMS TaskId/OutId records."""
    state = request.app[state_mod.STATE]
    body = state.journal.to_json()
    body["withheld_late"] = state.producer.withheld_count
    return web.json_response(body)


async def stats_view(request: web.Request) -> web.Response:
    """GET /sandbox/stats: counters."""
    return web.json_response(request.app[state_mod.STATE].journal.stats.to_json())


async def rates_view(request: web.Request) -> web.Response:
    """GET /sandbox/rates: CAMS calls admitted and throttled per second, and the fullest sliding second."""
    return web.json_response(request.app[state_mod.STATE].limiter.rates.to_json())


async def release_late(request: web.Request) -> web.Response:
    """POST /sandbox/release-late: push every withheld `late` Delivered receipt now."""
    return web.json_response({"released": request.app[state_mod.STATE].producer.release_late()})


async def faults_view(request: web.Request) -> web.Response:
    """GET/POST /sandbox/faults: the provider-trouble knobs of the send and query APIs.

    POST takes JSON {"lose_answers"?: {"SendChatappMessage"|"SendMessageToGlobe"|"SendSms": n},
    "fail_queries"?: n}: the next n accepted sends of that action are processed but never answered; the next
    n query calls (ListChatappMessage, QuerySendDetails, QueryMessage) answer 503 ServiceUnavailable.
    """
    book = request.app[state_mod.STATE].ledger
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        lose = body.get("lose_answers", {})
        if not isinstance(lose, dict) or not all(
            k in SEND_ACTIONS and type(v) is int and v >= 0 for k, v in lose.items()
        ):
            problem = f"lose_answers: an object of {', '.join(SEND_ACTIONS)} -> integer >= 0"
            return web.json_response({"error": problem}, status=400)
        fail = body.get("fail_queries", book.fail_queries)
        if type(fail) is not int or fail < 0:
            return web.json_response({"error": "fail_queries: an integer >= 0"}, status=400)
        book.lose_answers.update(lose)
        book.fail_queries = fail
    return web.json_response(book.to_json())


async def reset(request: web.Request) -> web.Response:
    """POST /sandbox/reset: clear the journal and counters (receipts already in flight still go out)."""
    request.app[state_mod.STATE].ledger.reset()
    request.app[state_mod.STATE].journal.reset()
    request.app[state_mod.STATE].limiter.rates.reset()
    return web.json_response({"reset": True})


async def callbacks_view(request: web.Request) -> web.Response:
    """GET/POST /sandbox/callbacks: read or change where receipts are pushed.

    POST takes JSON {"chatapp": url|null, "sms": url|null, "sms_domestic": url|null}; absent keys are kept.
    """
    state = request.app[state_mod.STATE]
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        for key in ("chatapp", "sms", "sms_domestic"):
            if key not in body:
                continue
            url = body[key]
            if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
                return web.json_response({"error": f"{key}: must be an http(s) URL or null"}, status=400)
            setattr(state.callbacks, key, url)
    return web.json_response(dataclasses.asdict(state.callbacks))


def create_app(config: config_mod.SandboxConfig) -> web.Application:
    """The sandbox as one aiohttp application (receipt pushers run while it runs)."""
    app = web.Application()
    app[state_mod.STATE] = state_mod.SandboxState(config)
    app.cleanup_ctx.append(_pushers)
    app.router.add_post("/", acs_entry)
    app.router.add_get("/", acs_entry)  # RPC calls may be GETs with every parameter in the query
    app.router.add_get("/sandbox/journal", journal_view)
    app.router.add_get("/sandbox/stats", stats_view)
    app.router.add_get("/sandbox/rates", rates_view)
    app.router.add_post("/sandbox/release-late", release_late)
    app.router.add_post("/sandbox/reset", reset)
    app.router.add_get("/sandbox/callbacks", callbacks_view)
    app.router.add_post("/sandbox/callbacks", callbacks_view)
    app.router.add_get("/sandbox/faults", faults_view)
    app.router.add_post("/sandbox/faults", faults_view)
    mns.add_routes(app)
    return app


async def _pushers(app: web.Application) -> AsyncIterator[None]:
    state = app[state_mod.STATE]
    async with aiohttp.ClientSession() as session:
        for pusher in state.pushers:
            pusher.start(session)
        try:
            yield
        finally:
            await state.producer.stop()
            for pusher in state.pushers:
                await pusher.stop()
            state.ledger.close()
            state.journal.close()  # both files: nothing writes to them after the pushers stopped


class Sandbox:
    """A running sandbox: its URL, its state, and `close()`."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self._runner = runner
        self.url = url
        self.state = runner.app[state_mod.STATE]

    def set_callbacks(
        self, chatapp_url: str | None, sms_url: str | None, sms_domestic_url: str | None = None
    ) -> None:
        """Point receipt pushes somewhere else (None: do not push; domestic defaults to the sms URL)."""
        self.state.set_callbacks(chatapp_url, sms_url, sms_domestic_url)

    def release_late(self) -> int:
        return self.state.producer.release_late()

    def set_receipt_delivery(self, mode: str) -> None:
        """Deliver reports over `http`, `mns` or `both` from now on."""
        if mode not in config_mod.DELIVERY_MODES:
            raise ValueError(f"delivery must be one of {config_mod.DELIVERY_MODES}")
        self.state.delivery = mode

    def stall_deletes(self, count: int) -> None:
        """Hold the next `count` MNS delete requests unanswered (the deletes are never applied)."""
        self.state.stall_deletes = count

    def lose_answers(self, action: str, count: int = 1) -> None:
        """Process the next `count` accepted `action` sends but never answer them (the client times out)."""
        if action not in SEND_ACTIONS or count < 0:
            raise ValueError(f"action must be one of {SEND_ACTIONS}, count >= 0")
        self.state.ledger.lose_answers[action] = count

    def fail_queries(self, count: int) -> None:
        """Answer the next `count` query calls with 503 ServiceUnavailable."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self.state.ledger.fail_queries = count

    def expire_sts(self) -> int:
        """Expire every STS credential AssumeRoleWithOIDC issued so far; returns how many were valid."""
        return self.state.sts.expire_all()

    def expire_tokens(self) -> int:
        """Expire every MNS token issued so far; returns how many were still valid."""
        return self.state.tokens.expire_all()

    def journal(self) -> dict[str, Any]:
        return self.state.journal.to_json()

    def stats(self) -> dict[str, int]:
        return self.state.journal.stats.to_json()

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve(config: config_mod.SandboxConfig, host: str = "127.0.0.1", port: int = 0) -> Sandbox:
    """Start the sandbox on host:port (0 = any free port) and return its handle."""
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    return Sandbox(runner, f"http://{shown}:{bound_port}")


async def run_forever(config: config_mod.SandboxConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until cancelled (the `fallback-daemon sandbox` command)."""
    sandbox = await serve(config, host, port)
    try:
        print(f"sandbox listening on {sandbox.url}", flush=True)
        await asyncio.Event().wait()
    finally:
        await sandbox.close()
