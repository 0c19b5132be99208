"""The sandbox's MNS queue endpoints (REST/XML, x-mns-version 2015-06-06) and its /sandbox/mns controls.

SendMessage / BatchSendMessage, ReceiveMessage / BatchReceiveMessage (long polling up to 30 s,
numOfMessages 1..16), PeekMessage / BatchPeekMessage (`peekonly=true`: nothing consumed, no receipt
handle), DeleteMessage / BatchDeleteMessage (partial failures as an `<Errors>` body),
ChangeMessageVisibility and GetQueueAttributes (`GET /queues/{queue}`), each authenticated by
`mnsauth.Verifier`. The stall knob holds the next N delete
requests unanswered (the delete is never applied) until the client goes away, so a test can kill a consumer
between its commit and its delete.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from aiohttp import web

from fallback_daemon.sandbox import config as config_mod
from fallback_daemon.sandbox import mnsqueue, mnsxml, replies
from fallback_daemon.sandbox import state as state_mod

XMLNS = mnsxml.XMLNS
MAX_BATCH = 16
MAX_WAIT_S = 30
MAX_BODY = 64 * 1024
# GetQueueAttributes reports these fixed settings of every sandbox queue: no default delay, the largest
# message size MNS allows (= MAX_BODY), MNS's default retention of 4 days (the sandbox keeps messages
# until deleted), no default long-poll wait (a receive without waitseconds answers at once), no logging.
DELAY_SECONDS = 0
RETENTION_S = 345600
POLLING_WAIT_S = 0


def _xml(root: str, inner: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{XMLNS}">{inner}</{root}>'


def _elements(pairs: list[tuple[str, object]]) -> str:
    return "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in pairs)


def _reply(request: web.Request, status: int, body: str | None = None) -> web.Response:
    headers = {"x-mns-request-id": replies.request_id(), "x-mns-version": mnsxml.API_VERSION}
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status, body=body.encode(), headers=headers, content_type="text/xml", charset="utf-8"
    )


def error(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """The MNS `<Error>` body."""
    inner = _elements(
        [("Code", code), ("Message", message), ("RequestId", replies.request_id()), ("HostId", request.host)]
    )
    return _reply(request, status, _xml("Error", inner))


def _message_xml(d: mnsqueue.Delivery) -> str:
    return _elements(
        [
            ("MessageId", d.message_id),
            ("ReceiptHandle", d.handle),
            ("MessageBodyMD5", d.body_md5),
            ("MessageBody", d.body),
            ("EnqueueTime", d.enqueue_ms),
            ("FirstDequeueTime", d.first_dequeue_ms),
            ("NextVisibleTime", d.next_visible_ms),
            ("DequeueCount", d.dequeue_count),
            ("Priority", d.priority),
        ]
    )


def _int_arg(query: dict[str, str], name: str, default: int, low: int, high: int) -> int | str:
    raw = query.get(name.lower())
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return f"{name} must be an integer."
    return value if low <= value <= high else f"{name} must be between {low} and {high}."


def _denied(
    request: web.Request, state: state_mod.SandboxState, name: str, body: bytes
) -> web.Response | None:
    """The MNS error for a request that fails authentication on queue `name`, else None."""
    denial = state.mns_verifier.verify(
        method=request.method, resource=request.raw_path, headers=request.headers, body=body, queue=name
    )
    if denial is None:
        return None
    stats = state.journal.stats
    stats.mns_auth_failures += 1
    stats.mns_token_denials += denial.token
    return error(request, denial.status, denial.code, denial.message)


async def queue_attributes(request: web.Request) -> web.Response:
    """GET /queues/{queue}: GetQueueAttributes, the `<Queue>` document (404 QueueNotExist if unknown)."""
    state = request.app[state_mod.STATE]
    name = request.match_info["queue"]
    denied = _denied(request, state, name, await request.read())
    if denied is not None:
        return denied
    queue = state.mns.queues.get(name)
    if queue is None:
        return error(request, 404, "QueueNotExist", "The queue name you provided is not exist.")
    a = queue.attributes()
    inner = _elements(
        [
            ("QueueName", a.name),
            ("CreateTime", a.created_s),
            ("LastModifyTime", a.created_s),
            ("VisibilityTimeout", a.visibility_timeout_s),
            ("MaximumMessageSize", MAX_BODY),
            ("MessageRetentionPeriod", RETENTION_S),
            ("DelaySeconds", DELAY_SECONDS),
            ("PollingWaitSeconds", POLLING_WAIT_S),
            ("ActiveMessages", a.active),
            ("InactiveMessages", a.inactive),
            ("DelayMessages", a.delayed),
            ("LoggingEnabled", "False"),
        ]
    )
    return _reply(request, 200, _xml("Queue", inner))


async def messages(request: web.Request) -> web.Response:
    """/queues/{queue}/messages for every method: authenticate, then dispatch."""
    state = request.app[state_mod.STATE]
    name = request.match_info["queue"]
    body = await request.read()
    if len(body) > MAX_BODY:
        return error(request, 400, "InvalidArgument", f"The body must be at most {MAX_BODY} bytes.")
    denied = _denied(request, state, name, body)
    if denied is not None:
        return denied
    queue = state.mns.queues.get(name)
    if queue is None:
        return error(request, 404, "QueueNotExist", f"The queue {name} does not exist.")
    query = {k.lower(): v for k, v in request.query.items()}
    if request.method not in ("GET", "POST", "PUT", "DELETE"):
        return error(request, 405, "InvalidRequestURL", f"{request.method} is not supported here.")
    if request.method == "GET":
        return await _receive(request, queue, query)
    if request.method == "POST":
        return _send(request, queue, body)
    if request.method == "PUT":
        return _change_visibility(request, queue, query)
    return await _delete(request, state, queue, query, body)


def _peeked_xml(p: mnsqueue.Peeked) -> str:
    """The fields the SDK's PeekMessageDecoder reads: no ReceiptHandle, no NextVisibleTime."""
    return _elements(
        [
            ("MessageId", p.message_id),
            ("MessageBodyMD5", p.body_md5),
            ("MessageBody", p.body),
            ("EnqueueTime", p.enqueue_ms),
            ("FirstDequeueTime", p.first_dequeue_ms),
            ("DequeueCount", p.dequeue_count),
            ("Priority", p.priority),
        ]
    )


def _peek(request: web.Request, queue: mnsqueue.Queue, n: int, batch: bool) -> web.Response:
    """PeekMessage (`?peekonly=true`) / BatchPeekMessage (`&numOfMessages=n`): answers at once, changes
    nothing (waitseconds does not apply to a peek)."""
    seen = queue.peek(n)
    if not seen:
        return error(request, 404, "MessageNotExist", "Message not exist.")
    if not batch:
        return _reply(request, 200, _xml("Message", _peeked_xml(seen[0])))
    return _reply(
        request, 200, _xml("Messages", "".join(f"<Message>{_peeked_xml(p)}</Message>" for p in seen))
    )


async def _receive(request: web.Request, queue: mnsqueue.Queue, query: dict[str, str]) -> web.Response:
    batch = "numofmessages" in query
    n = _int_arg(query, "numOfMessages", 1, 1, MAX_BATCH)
    wait = _int_arg(query, "waitseconds", 0, 0, MAX_WAIT_S)
    if isinstance(n, str) or isinstance(wait, str):
        return error(request, 400, "InvalidArgument", str(n if isinstance(n, str) else wait))
    if query.get("peekonly", "").lower() == "true":
        return _peek(request, queue, n, batch)
    got = await queue.receive(n, wait)
    if not got:
        return error(request, 404, "MessageNotExist", "Message not exist.")
    if not batch:
        return _reply(request, 200, _xml("Message", _message_xml(got[0])))
    inner = "".join(f"<Message>{_message_xml(d)}</Message>" for d in got)
    return _reply(request, 200, _xml("Messages", inner))


def _send(request: web.Request, queue: mnsqueue.Queue, body: bytes) -> web.Response:
    """SendMessage (`<Message>` root) or BatchSendMessage (`<Messages>`, 1..16 messages)."""
    try:
        batch, messages = mnsxml.send_request(body)
    except mnsxml.MalformedXml as exc:
        return error(
            request, 400, "MalformedXML", f"The body must be <Message> or <Messages> (MessageBody): {exc}."
        )
    parsed = [
        (m.body, m.delay_s, mnsqueue.DEFAULT_PRIORITY if m.priority is None else m.priority) for m in messages
    ]
    if not 1 <= len(parsed) <= MAX_BATCH:
        return error(request, 400, "InvalidArgument", f"A batch holds 1..{MAX_BATCH} messages.")
    if not all(0 <= d <= 604800 and 1 <= p <= 16 for _, d, p in parsed):
        return error(request, 400, "InvalidArgument", "DelaySeconds 0..604800, Priority 1..16.")
    sent = [queue.send(text, delay_s=d, priority=p) for text, d, p in parsed]
    items = [_elements([("MessageId", m.message_id), ("MessageBodyMD5", m.body_md5)]) for m in sent]
    if not batch:
        return _reply(request, 201, _xml("Message", items[0]))
    return _reply(request, 201, _xml("Messages", "".join(f"<Message>{i}</Message>" for i in items)))


def _change_visibility(request: web.Request, queue: mnsqueue.Queue, query: dict[str, str]) -> web.Response:
    handle = query.get("receipthandle", "")
    timeout = _int_arg(query, "VisibilityTimeout", -1, 1, 43200)
    if not handle:
        return error(request, 400, "MissingReceiptHandle", "ReceiptHandle is missing.")
    if isinstance(timeout, str) or timeout < 0:
        return error(
            request,
            400,
            "MissingVisibilityTimeout" if timeout == -1 else "InvalidArgument",
            str(timeout) if isinstance(timeout, str) else "VisibilityTimeout is missing.",
        )
    result = queue.change_visibility(handle, timeout)
    if isinstance(result, str):
        return _handle_error(request, result)
    assert result.handle is not None
    inner = _elements([("ReceiptHandle", result.handle), ("NextVisibleTime", result.next_visible_ms)])
    return _reply(request, 200, _xml("ChangeVisibility", inner))


def _handle_error(request: web.Request, code: str) -> web.Response:
    return error(request, 404 if code == "MessageNotExist" else 400, code, "The receipt handle is not valid.")


async def _delete(
    request: web.Request,
    state: state_mod.SandboxState,
    queue: mnsqueue.Queue,
    query: dict[str, str],
    body: bytes,
) -> web.Response:
    if body:
        try:
            found = mnsxml.receipt_handles(body)
        except mnsxml.MalformedXml as exc:
            return error(
                request, 400, "MalformedXML", f"The body is not a valid <ReceiptHandles> document: {exc}."
            )
        if found is None or not 1 <= len(found) <= MAX_BATCH:
            return error(request, 400, "InvalidArgument", f"<ReceiptHandles> holds 1..{MAX_BATCH} handles.")
        handles = found
    elif query.get("receipthandle"):
        handles = [query["receipthandle"]]
    else:
        return error(request, 400, "MissingReceiptHandle", "ReceiptHandle is missing.")
    if state.stall_deletes > 0:
        state.stall_deletes -= 1
        await _stall(request, state)
        return error(request, 503, "ServiceUnavailable", "Stalled delete.")  # nobody is listening by now
    failed = [(h, code) for h in handles if (code := queue.delete(h)) is not None]
    if not failed:
        return _reply(request, 204)
    if not body:
        return _handle_error(request, failed[0][1])
    text = "The receipt handle is not valid."
    inner = "".join(
        f"<Error>{_elements([('ErrorCode', c), ('ErrorMessage', text), ('ReceiptHandle', h)])}</Error>"
        for h, c in failed
    )
    return _reply(request, 404, _xml("Errors", inner))


async def _stall(request: web.Request, state: state_mod.SandboxState) -> None:
    """Hold the request until its client disconnects or the sandbox shuts down; the delete never happens."""
    stats = state.journal.stats
    stats.mns_deletes_stalled += 1
    stats.mns_deletes_pending += 1
    try:
        while not state.mns.closed:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            # Connection state has no awaitable in aiohttp without handler cancellation: look every 50 ms.
            await state.mns.wait_closed(0.05)
    finally:
        stats.mns_deletes_pending -= 1


# ---- /sandbox/mns controls ---------------------------------------------------------------------------------


def _view(state: state_mod.SandboxState) -> dict[str, object]:
    return {
        "delivery": state.delivery,
        "queues": state.mns.counts(),
        "stall_deletes": state.stall_deletes,
        "token_ttl_s": state.tokens.ttl_s,
    }


async def control(request: web.Request) -> web.Response:
    """GET /sandbox/mns: queues and knobs.

    POST {"delivery"?: "http"|"mns"|"both", "stall_deletes"?: n, "expire_tokens"?: true} changes them.
    """
    state = request.app[state_mod.STATE]
    extra: dict[str, object] = {}
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        delivery, stall = body.get("delivery", state.delivery), body.get("stall_deletes", state.stall_deletes)
        if delivery not in config_mod.DELIVERY_MODES:
            return web.json_response({"error": f"delivery: one of {config_mod.DELIVERY_MODES}"}, status=400)
        if not isinstance(stall, int) or stall < 0:
            return web.json_response({"error": "stall_deletes: an integer >= 0"}, status=400)
        state.delivery, state.stall_deletes = delivery, stall
        if body.get("expire_tokens"):
            extra["expired_tokens"] = state.tokens.expire_all()
    return web.json_response({**_view(state), **extra})


async def _on_shutdown(app: web.Application) -> None:
    app[state_mod.STATE].mns.close()  # long polls return and stalled deletes let go


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/queues/{queue}/messages", messages)
    app.router.add_get("/queues/{queue}", queue_attributes)
    app.router.add_get("/sandbox/mns", control)
    app.router.add_post("/sandbox/mns", control)
    app.on_shutdown.append(_on_shutdown)
