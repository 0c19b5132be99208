"""The HTTP surface: public send API, receipt endpoints, health; `create_app` wires them."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import urllib.parse
import zlib
from typing import Any

import prometheus_client
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from fallback_daemon import config, logs
from fallback_daemon.core import errors, validation
from fallback_daemon.engine import health, service
from fallback_daemon.web import api, guards, keys, operator, receipts, ui, webhooks

log = structlog.get_logger("fallback_daemon.web")


# Read deadlines (see docs/security.md "Slow and hostile clients"). The request head must arrive within
# HEADER_TIMEOUT_S of the connection opening or of the previous response: aiohttp's keep-alive timer closes a
# connection that has not produced a complete request head by then, idle or half-sent alike. It is also the
# idle keep-alive, so it stays above the 60 s idle timeout of common proxies (ALB, nginx upstreams): a lower
# value makes a proxy reuse a connection the daemon is closing (a 502). A body must arrive within
# BODY_TIMEOUT_S of its head (408): a 2 MiB body needs only ~70 KiB/s for it.
HEADER_TIMEOUT_S = 75.0
BODY_TIMEOUT_S = 30.0
LIMITS = web.AppKey("http_limits", dict[str, float])
# OSErrors a file route (the /ui/static files) raises for a name that is not a file there: a 404, not a 500.
FILE_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EINVAL})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one error boundary: input → a JSON 4xx naming the field or header; 5xx only for server faults.

    Before the handler runs, every header and query parameter is checked for text the daemon cannot use
    (non-UTF-8 bytes, NUL), and the body is read (and a form parsed) under the body deadline, so no
    handler meets any of these.
    """
    try:
        check_request_text(request)
        if request.body_exists:
            await read_body(request)
            if request.content_type in FORM_TYPES:
                await read_form(request)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return _http_error(exc)
    except Exception as exc:
        return _error_answer(request, exc)


# Domain errors with a fixed answer: (type, status, field named in the answer).
_DOMAIN_ANSWERS: tuple[tuple[type[Exception], int, str | None], ...] = (
    (errors.IdempotencyMismatch, 422, "Idempotency-Key"),
    (errors.NotFound, 404, None),
    (errors.Conflict, 409, None),
)


def _error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for an exception a handler (or the checks before it) raised."""
    if isinstance(exc, errors.ValidationError):
        return json_error(400, exc.problem, field=exc.field)
    for kind, status, field in _DOMAIN_ANSWERS:
        if isinstance(exc, kind):
            return json_error(status, str(exc), field=field)
    if isinstance(exc, errors.StoreError):
        # Not acknowledged: a provider retries its receipt push; a client retries its send.
        return json_error(503, "database unavailable, retry later")
    if isinstance(exc, UnsupportedEncoding):
        return json_error(415, str(exc), field="Content-Encoding")
    if isinstance(exc, TimeoutError):
        response = json_error(408, "the request body did not arrive in time", field="body")
        response.force_close()
        return response
    if isinstance(exc, web.RequestPayloadError):
        # A body that is not what its Content-Encoding says (or a broken chunked / length framing). The stream
        # is marked finished, so aiohttp does not try to drain it after the answer (and log the error again),
        # and the connection is closed: nothing after this body can be framed reliably.
        field = "Content-Encoding" if "content-encoding" in str(exc).lower() else "body"
        request.content.feed_eof()
        response = json_error(
            400, "the body could not be read (not in its Content-Encoding, or cut short)", field=field
        )
        response.force_close()
        return response
    if isinstance(exc, ConnectionResetError):
        # The client closed its side mid-body: nobody is left to answer, and an outsider must not be able to
        # fill the ERROR log with tracebacks by doing it on purpose.
        log.info("request_abandoned", method=request.method, path=request.path)
        response = json_error(400, "the connection was closed before the body arrived", field="body")
        response.force_close()
        return response
    if isinstance(exc, OSError) and exc.errno in FILE_ERRNOS:
        return json_error(404, "Not Found")  # a file route (/ui/static) given a name that cannot be a file
    # A server fault (input maps to a 4xx above): logged with its traceback (masked), answered without it.
    log.error("request_failed", method=request.method, path=request.path, exc_info=exc)
    return json_error(500, "internal error")


def _http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx/5xx (404, 405, 413 …) as JSON, keeping the headers that go with them."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return json_error(413, "body too large", field="body")
    response = json_error(exc.status, exc.reason)
    for name in ("Allow", "WWW-Authenticate"):
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


def check_request_text(request: web.Request) -> None:
    """Refuse headers that are not UTF-8 (aiohttp hands them over with surrogate escapes) or hold NUL, and
    query parameters holding NUL (yarl has already replaced undecodable bytes there with U+FFFD)."""
    for name, value in request.headers.items():
        if not value.isascii() and validation.bad_text(value):
            raise errors.ValidationError(_printable(name), "header is not valid UTF-8 text")
    for name, value in request.query.items():
        if "\x00" in name or "\x00" in value:
            raise errors.ValidationError(_printable(name), "must not contain NUL characters")
        if "\ufffd" in name or "\ufffd" in value:
            _check_query_utf8(request.raw_path.partition("?")[2])


def _check_query_utf8(raw_query: str) -> None:
    """yarl decodes a query's percent-escapes with replacement: refuse bytes that are not UTF-8 (including
    encoded surrogates) by decoding each raw pair strictly, naming the parameter."""
    for pair in raw_query.split("&"):
        raw_name, _, raw_value = pair.partition("=")
        name = urllib.parse.unquote_plus(raw_name)
        for part in (raw_name, raw_value):
            try:
                urllib.parse.unquote_to_bytes(part.replace("+", " ")).decode("utf-8")
            except UnicodeDecodeError:
                raise errors.ValidationError(_printable(name), "is not valid UTF-8 text") from None


def _printable(name: str) -> str:
    return name.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")[:64]


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def read_form(request: web.Request) -> None:
    """Parse a form body now (cached: a handler's `request.post()` gets it back), mapping what a malformed
    form raises (text not in its charset, an unknown charset, a multipart body without boundary) to 400."""
    try:
        async with asyncio.timeout(request.app[LIMITS]["body_timeout_s"]):
            await request.post()
    except UnicodeDecodeError:
        raise errors.ValidationError("body", "is not text in the charset of its Content-Type") from None
    except LookupError:
        raise errors.ValidationError("Content-Type", "names a charset this daemon does not know") from None
    except ValueError:  # aiohttp's multipart reader: no boundary, no starting boundary, a part without name
        raise errors.ValidationError("body", "is not a well-formed form of its Content-Type") from None


async def read_body(request: web.Request) -> bytes:
    """Read the body within the body deadline, decode its Content-Encoding, and cache it (handlers'
    `request.read()` / `post()` get the decoded body back).

    aiohttp's own decoding is off (`auto_decompress=False`): it answers a body that is not in its encoding
    with a plain-text 400 before any middleware runs. Here every such body is a JSON 400 naming
    Content-Encoding, an encoding other than gzip/deflate/identity a 415, and a body that decodes to more than
    FALLBACK_MAX_BODY_BYTES a 413 (a gzip bomb stops at the limit: the decoder's output is bounded).
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    multipart = request.content_type == "multipart/form-data"
    if multipart and encoding not in ("", "identity"):
        raise UnsupportedEncoding("a multipart body cannot have a Content-Encoding here")
    if multipart:
        return b""  # read_form parses it from the stream (read() would consume it)
    async with asyncio.timeout(request.app[LIMITS]["body_timeout_s"]):
        raw = await request.read()
    if encoding in ("", "identity"):
        return raw
    if encoding not in DECODERS:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding[:32]!r} is not accepted (gzip, deflate, identity)"
        )
    body = _decode(raw, encoding, request.client_max_size)
    request._read_bytes = body  # aiohttp's body cache: every later read returns the decoded body
    return body


class UnsupportedEncoding(Exception):
    """A Content-Encoding the daemon does not decode (415)."""


DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _decode(raw: bytes, encoding: str, limit: int) -> bytes:
    """`raw` decoded (deflate: zlib-wrapped, or raw as some clients send it); at most `limit` bytes out."""
    wbits = DECODERS[encoding]
    for attempt in (wbits, -zlib.MAX_WBITS) if encoding == "deflate" else (wbits,):
        decoder = zlib.decompressobj(wbits=attempt)
        try:
            body = decoder.decompress(raw, limit + 1)
        except zlib.error:
            continue
        if len(body) > limit or decoder.unconsumed_tail:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
        if not decoder.eof or decoder.unused_data:
            break  # cut short, or something after the end of the stream
        return body
    raise errors.ValidationError("Content-Encoding", f"the body is not valid {encoding} data")


def json_error(status: int, message: str, *, field: str | None = None) -> web.Response:
    """A JSON error answer; its texts are masked like log lines (no phone number, no secret)."""
    body: dict[str, Any] = {"error": {"message": logs.mask_text(message)}}
    if field is not None:
        # A field is a path ("actor.<key>"): each step is masked on its own ('.' is no word boundary in text).
        body["error"]["field"] = ".".join(logs.mask_text(step) for step in field.split("."))
    return web.json_response(body, status=status, dumps=json.dumps)


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, for the errors its protocol code logs itself: a malformed request (bad
    framing, a body not in its Content-Encoding) is the client's fault and becomes one WARNING line without a
    traceback, so that an outsider cannot flood the ERROR log; anything else stays an ERROR with traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError | web.RequestPayloadError):
            self.warning("http_request_malformed: %s", str(exc_info).replace("\n", " "))
            return
        self.error(msg, *args, exc_info=exc_info, **kwargs)


SERVER_LOG = _ServerLog(logging.getLogger("aiohttp.server"), {})


def create_app(
    settings: config.Settings,
    svc: service.Service,
    *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> web.Application:
    """The application; the timeouts are the read deadlines above (tests shorten them)."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware],
        handler_args={"keepalive_timeout": header_timeout_s, "logger": SERVER_LOG, "auto_decompress": False},
    )
    app[LIMITS] = {"body_timeout_s": body_timeout_s}
    app[keys.SETTINGS] = settings
    app[keys.SERVICE] = svc
    app[keys.READY] = {"ready": False}
    api.setup(app)
    receipts.setup(app)
    operator.setup(app)  # operator API (/v1 search, stats, actions, OpenAPI)
    ui.setup(app)  # operator page (/ui)
    guards.setup(app)  # guards: opt-outs, SMS budgets (/v1/opt-outs, /v1/budgets, /v1/guards)
    webhooks.setup(app)  # outcome events: /v1/webhooks subscriptions, deliveries, replay
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format; database-backed gauges are refreshed on each scrape.

    Open by default (scrapers on a private network rarely carry a token, and the series hold counts, never
    phone numbers or message text); `FALLBACK_METRICS_REQUIRE_TOKEN=true` asks for a bearer token with the
    read scope (FALLBACK_READ_TOKEN or the operator token; the API token while no read token is set: see
    web/tokens.py), Prometheus `authorization: {credentials: …}`, checked before the database is touched.
    """
    if request.app[keys.SETTINGS].metrics_require_token:
        api.check_bearer(request, "read")
    await health.refresh_gauges(request.app[keys.SERVICE])
    body = prometheus_client.generate_latest()
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the loops run and the database answers."""
    if not request.app[keys.READY]["ready"]:
        return json_error(503, "starting or stopping")
    await request.app[keys.SERVICE].db.fetchval("SELECT 1")
    if request.app[keys.READY].get("listen") is False:
        # Still ready (200): polling keeps every loop working, only wake-ups are slower while LISTEN
        # reconnects.
        return web.json_response({"status": "degraded", "degraded": ["listen"]})
    return web.json_response({"status": "ready"})
