"""Composition root: opens the database, provider clients, web server and loops; closes them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import os
import secrets
import signal
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from fallback_daemon import config, logs
from fallback_daemon import web as web_
from fallback_daemon.core import errors, model, ports
from fallback_daemon.db import embedded, migrate, store
from fallback_daemon.engine import consumers, guards, health, loops, ratelimit, service
from fallback_daemon.providers import acs, aws, cams, dybaseapi, mns, sms_routing, sqs
from fallback_daemon.providers import credentials as credentials_mod
from fallback_daemon.web import keys
from fallback_daemon.web import tokens as web_tokens

log = structlog.get_logger("fallback_daemon.app")
SANDBOX_API_TOKEN = "sandbox-token-not-secret"  # noqa: S105 - only with --sandbox / demo (documented)


@dataclasses.dataclass
class Running:
    """Handles on a running daemon (used by the demo and tests)."""

    settings: config.Settings
    svc: service.Service
    url: str
    sandbox_url: str | None
    stop: asyncio.Event
    ready: asyncio.Event


async def database_dsn(settings: config.Settings) -> str:
    if settings.database_url:
        return settings.database_url.reveal()
    return await embedded.start(settings.data_dir)


# A database that is down, starting, restarting or full is waited for at start-up (an orchestrator often
# starts the daemon and Postgres together); a wrong password or database name is not: it fails at once.
RETRY_CONNECT = (OSError, TimeoutError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)


def database_where(settings: config.Settings) -> str:
    """Where DATABASE_URL points, without its credentials (for messages and logs)."""
    if not settings.database_url:
        return f"the embedded Postgres under {settings.data_dir / 'pg'}"
    parts = urllib.parse.urlsplit(settings.database_url.reveal())
    # The netloc may list several hosts (failover: "h1:5432,h2:5432"); show them without the credentials.
    hosts = (
        parts.netloc.rpartition("@")[2] or urllib.parse.parse_qs(parts.query).get("host", ["local socket"])[0]
    )
    if "," not in hosts and ":" not in hosts and not hosts.startswith("/"):
        hosts = f"{hosts}:5432"
    return f"DATABASE_URL ({hosts}{parts.path or '/'})"


async def connect_database(
    settings: config.Settings, dsn: str, *, min_size: int = 2, max_size: int = 10
) -> store.Store:
    """Connect, retrying refusals for FALLBACK_DB_CONNECT_WAIT_S with capped backoff.

    Raises:
        errors.StoreError: naming DATABASE_URL (never its password) once the wait is over, or at once for a
            refusal that waiting cannot cure (authentication, no such database).
    """
    where = database_where(settings)
    started = time.monotonic()
    deadline = started + settings.db_connect_wait_s
    delay, attempt = 0.25, 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                return await store.Store.connect(dsn, min_size=min_size, max_size=max_size)
        except (errors.StoreError, TimeoutError) as exc:
            cause = exc.__cause__ if isinstance(exc, errors.StoreError) else exc
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            retriable = isinstance(cause, RETRY_CONNECT)
            if not retriable or time.monotonic() + delay >= deadline:
                waited = time.monotonic() - started
                tried = f" (tried {attempt} times over {waited:.0f} s)" if attempt > 1 else ""
                raise errors.StoreError(f"{where}: cannot connect{tried}: {reason}") from None
            log.warning("database_unavailable", where=where, attempt=attempt, retry_in_s=delay, error=reason)
            await asyncio.sleep(delay)  # backoff before the next connection attempt
            delay = min(delay * 2, 5.0)


async def start_site(site: web.TCPSite, settings: config.Settings) -> None:
    """Bind the HTTP listener; a busy or forbidden address is a configuration error naming the variable."""
    try:
        await site.start()
    except OSError as exc:
        raise bind_error(settings, exc) from None


def bind_error(settings: config.Settings, exc: OSError) -> errors.ConfigError:
    """The HTTP listener could not bind: name the variable to change (one line, no traceback)."""
    address = f"{settings.http_host}:{settings.http_port}"
    reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own text repeats the address
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return errors.ConfigError("FALLBACK_HTTP_HOST", f"cannot listen on {address}: {reason}")
    hint = "another process uses the port: stop it or choose another FALLBACK_HTTP_PORT"
    if exc.errno == errno.EACCES:
        hint = "ports below 1024 need privileges: choose another FALLBACK_HTTP_PORT"
    elif exc.errno != errno.EADDRINUSE:
        hint = "choose another FALLBACK_HTTP_PORT or FALLBACK_HTTP_HOST"
    return errors.ConfigError("FALLBACK_HTTP_PORT", f"cannot listen on {address}: {reason} ({hint})")


@contextlib.asynccontextmanager
async def open_sandbox(
    settings: config.Settings, sb_config: object | None = None
) -> AsyncIterator[tuple[config.Settings, object]]:
    """Start the built-in sandbox in-process and point the providers at it."""
    from fallback_daemon import sandbox

    sb_config = sb_config or sandbox.SandboxConfig()
    assert isinstance(sb_config, sandbox.SandboxConfig)
    sb = await sandbox.serve(sb_config, "127.0.0.1", 0)
    try:
        settings = dataclasses.replace(
            settings,
            access_key_id=sb_config.access_key_id,
            access_key_secret=config.Secret(sb_config.access_key_secret),
            security_token=config.Secret(""),  # the sandbox's key is a permanent one
            cams_endpoint=sb.url,
            sms_endpoint=sb.url,
            sms_from=settings.sms_from or "Fallback",
            receipt_token=settings.receipt_token or config.Secret(secrets.token_urlsafe(24)),
            api_token=settings.api_token or config.Secret(SANDBOX_API_TOKEN),
            # The sandbox answers ListChatappMessage for any space; lookups need one to be asked at all.
            cams_cust_space_id=settings.cams_cust_space_id or "sandbox-space",
        )
        yield settings, sb
    finally:
        await sb.close()


def alibaba_credentials(
    settings: config.Settings, session: aiohttp.ClientSession, *, sts_endpoint: str | None
) -> credentials_mod.CredentialsProvider:
    """The chain's source; the (possibly empty) static AccessKey when none is set up, which check_can_run
    allows only with --sandbox."""
    found = credentials_mod.from_settings(settings, session=session, sts_endpoint=sts_endpoint)
    return found or credentials_mod.static(settings.access_key_id, settings.access_key_secret)


def check_can_run(settings: config.Settings, *, use_sandbox: bool) -> None:
    if not use_sandbox:
        missing = settings.provider_credentials_missing
        try:
            source = credentials_mod.source(settings)
        except errors.ConfigError:
            if not missing:
                raise
            source = None  # a half-set AccessKey pair: the list below names its missing half with the rest
        if source in ("oidc_role_arn", "profile"):  # no AccessKey needed
            missing = [m for m in missing if not m.startswith("ALIBABA_CLOUD_ACCESS_KEY")]
        if missing:
            also = f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""
            raise errors.ConfigError(missing[0], f"required without --sandbox{also}")
        if settings.sandbox_timer_scale != 1.0:
            raise errors.ConfigError("FALLBACK_SANDBOX_TIMER_SCALE", "only allowed with --sandbox or demo")


# `run --role`: which loops a process runs (docs/scaling.md "Roles"). Every role serves HTTP (health,
# metrics, the API); a loop runs in a process when one of its roles is asked for. The feed gate runs wherever
# receipts are ingested (its feed clock is this process's), LISTEN wherever anything is woken by it.
ROLES = ("all", "api", "senders", "timers", "workers")
LOOP_ROLES = {
    "sender": {"senders"},
    "timer": {"timers"},
    "recovery": {"timers"},
    "feed-gate": {"api", "workers"},
    "retention": {"workers"},
    "webhooks": {"workers"},
    "consumer-": {"workers"},  # every queue consumer (consumer-<queue>)
}


def loops_for(roles: frozenset[str], names: list[str]) -> list[str]:
    """The loop names (of `supervised_loops`) a process with these roles runs; LISTEN always."""
    if "all" in roles:
        return names
    wanted = []
    for name in names:
        key = "consumer-" if name.startswith("consumer-") else name
        if name == "listen" or LOOP_ROLES.get(key, set()) & roles:
            wanted.append(name)
    return wanted


async def serve(
    settings: config.Settings,
    *,
    use_sandbox: bool = False,
    run_migrations: bool = True,
    started: asyncio.Future[Running] | None = None,
    stop: asyncio.Event | None = None,
    sandbox_config: object | None = None,
    roles: frozenset[str] = frozenset({"all"}),
) -> None:
    """Run the daemon until `stop` is set (SIGTERM/SIGINT set it); `roles` picks the loops (ROLES)."""
    check_can_run(settings, use_sandbox=use_sandbox)
    stop = stop or asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        sandbox_url = None
        sb = None
        if use_sandbox:
            settings, sb = await stack.enter_async_context(open_sandbox(settings, sandbox_config))
            sandbox_url = sb.url  # type: ignore[attr-defined]
        logs.register_secrets(
            settings
        )  # final values (the sandbox may have generated tokens): scrubbed from logs
        dsn = await database_dsn(settings)
        db = await connect_database(settings, dsn, max_size=10)
        stack.push_async_callback(db.close)
        if run_migrations:
            async with db.connection() as conn:
                await migrate.migrate(conn)

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.send_concurrency * 2), raise_for_status=False
        )
        stack.push_async_callback(acs.close_quietly, session)

        # Alibaba's credential chain (docs/credentials.md): one source shared by every signed client.
        alibaba_creds = alibaba_credentials(settings, session, sts_endpoint=sandbox_url)

        def client(endpoint: str, version: str) -> acs.AcsClient:
            return acs.AcsClient(
                session,
                endpoint=endpoint,
                version=version,
                credentials=alibaba_creds,
                timeout_s=settings.send_timeout_s,
            )

        chat = cams.CamsClient(
            client(settings.cams_endpoint, cams.VERSION), cust_space_id=settings.cams_cust_space_id
        )
        # --- SMS providers and routing (owned by the SMS provider work) ---
        aws_session = aws.new_session()  # also used by the SQS consumers below
        sms = await sms_routing.build(
            settings,
            stack=stack,
            alibaba=client,
            aws_session=aws_session,
            domestic_endpoint=sandbox_url or settings.sms_domestic_endpoint,
        )
        # --- end SMS providers ---
        feed = ports.FeedClock()  # receipt times: written by ingest (svc), read by the feed gate
        svc = service.Service(
            db,
            sms_template=settings.sms_template,
            timer_scale=settings.sandbox_timer_scale if use_sandbox else 1.0,
            reconcile_delay_s=settings.reconcile_delay_s,
            feed=feed,
        )
        svc.guard_config = guards.GuardConfig.from_settings(settings)  # checked by the timer claim
        # The timer loop's database work on connections of its own (docs/architecture.md, "Timers on their
        # own connections"): a claim never queues for a connection behind receipt and accept writes. Opened on
        # first use, so a process without the timers role holds none.
        timer_db = await connect_database(settings, dsn, min_size=0, max_size=2)
        stack.push_async_callback(timer_db.close)
        timer_svc = service.Service(
            timer_db,
            sms_template=settings.sms_template,
            timer_scale=svc.timer_scale,
            reconcile_delay_s=settings.reconcile_delay_s,
            feed=feed,
        )
        timer_svc.guard_config = svc.guard_config
        limiter = ratelimit.RateLimiter(
            db, name="cams", rate=settings.send_rate, headroom=settings.send_burst
        )
        send_lease = settings.send_timeout_s * 3 + 30
        sender = loops.SenderLoop(
            svc,
            chat,
            limiter,
            concurrency=settings.send_concurrency,
            max_attempts=settings.send_max_attempts,
            lease_s=send_lease,
        )
        timer = loops.TimerLoop(
            timer_svc,
            sms,
            batch=settings.fire_batch,
            lease_s=settings.firing_lease_s,
            max_sleep_s=settings.timer_max_sleep_s,
            concurrency=settings.send_concurrency,
            sms_max_attempts=settings.sms_max_attempts,
            retry_window_s=settings.sms_retry_window_s,
        )
        recovery = loops.RecoveryLoop(
            svc,
            timer,
            resend=settings.recovery_mode == "resend",
            chat=chat,
            reconcile_max_attempts=settings.reconcile_max_attempts,
            reconcile_delay_s=settings.reconcile_delay_s,
        )
        gate = health.GateLoop(
            health.PgGateStore(db),
            feed=feed,
            window_s=settings.gate_window_s,
            per_channel=dict(settings.gate_channels),
        )
        queue_consumers: list[consumers.QueueConsumer] = []
        # --- queue consumers (MNS, SQS): append QueueConsumer objects here ---
        queue_consumers += [
            consumers.QueueConsumer(
                queue, svc, pollers=settings.sqs_pollers, batch=sqs.MAX_MESSAGES, wait_s=settings.sqs_wait_s
            )
            for queue in await sqs.open_queues(settings, stack=stack, session=aws_session)
        ]
        # MNS (docs/receipts-mns.md): Alicom queues read with QueryTokenForMnsQueue tokens, or own queues read
        # with a static AccessKey. With the in-process sandbox, it serves both and delivers receipts into MNS.
        mns_names = (
            (settings.mns_chatapp_queue, model.ReceiptKind.CHATAPP),
            (settings.mns_sms_queue, model.ReceiptKind.SMS),
        )
        if any(name for name, _ in mns_names):
            own_key = bool(settings.mns_access_key_id) and sb is None
            mns_ak = settings.mns_access_key_id if own_key else settings.access_key_id
            mns_sk = settings.mns_access_key_secret if own_key else settings.access_key_secret
            tokens = dybaseapi.DybaseapiClient(
                session,
                endpoint=sandbox_url or settings.dybaseapi_endpoint,
                version=settings.dybaseapi_version,
                credentials=credentials_mod.static(mns_ak, mns_sk) if own_key else alibaba_creds,
                timeout_s=settings.send_timeout_s,
            )
            mns_endpoint = sandbox_url or mns.endpoint_for(settings.mns_mode, settings.mns_endpoint)
            for name, kind in filter(lambda nk: nk[0], mns_names):
                creds: mns.CredentialSource = mns.StaticCredentials(mns_ak, mns_sk)
                if settings.mns_mode == "alicom":
                    mtype = dybaseapi.message_type_for(name, kind)
                    creds = dybaseapi.TokenCredentials(tokens, queue_name=name, message_type=mtype)
                queue = mns.MnsQueue(
                    session, endpoint=mns_endpoint, queue_name=name, kind=kind, credentials=creds
                )
                queue_consumers.append(
                    consumers.QueueConsumer(
                        queue,
                        svc,
                        pollers=settings.mns_pollers,
                        batch=settings.mns_batch,
                        wait_s=settings.mns_wait_s,
                    )
                )
            if sb is not None:
                sb.set_receipt_delivery("mns")  # type: ignore[attr-defined]
        # --- end queue consumers ---

        app = web_.create_app(settings, svc)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await start_site(site, settings)
        port = runner.addresses[0][1]
        url = f"http://{settings.http_host}:{port}"
        if sb is not None:
            token = settings.receipt_token.reveal()
            sb.set_callbacks(f"{url}/receipts/{token}/chatapp", f"{url}/receipts/{token}/sms")  # type: ignore[attr-defined]

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        log.info("daemon_started", url=url, sandbox=sandbox_url, recovery_mode=settings.recovery_mode)
        web_tokens.log_warnings(settings)  # the API token still opens operator actions
        ready = asyncio.Event()
        app[keys.READY]["ready"] = True
        ready.set()
        if started is not None and not started.done():
            started.set_result(
                Running(settings=settings, svc=svc, url=url, sandbox_url=sandbox_url, stop=stop, ready=ready)
            )
        runs = supervised_loops(
            settings,
            db,
            stop,
            app,
            sender=sender,
            timer=timer,
            recovery=recovery,
            gate=gate,
            queue_consumers=queue_consumers,
        )
        runs = {name: runs[name] for name in loops_for(roles, list(runs))}
        log.info("daemon_roles", roles=sorted(roles), loops=sorted(runs))
        async with asyncio.TaskGroup() as tg:
            for name, run in runs.items():
                tg.create_task(loops.supervise(name, stop, run), name=name)
            tg.create_task(_stop_readiness(app, stop), name="readiness")
        log.info("daemon_stopped")


def supervised_loops(
    settings: config.Settings,
    db: store.Store,
    stop: asyncio.Event,
    app: web.Application,
    *,
    sender: loops.SenderLoop,
    timer: loops.TimerLoop,
    recovery: loops.RecoveryLoop,
    gate: health.GateLoop,
    queue_consumers: list[consumers.QueueConsumer],
) -> dict[str, Callable[[], Awaitable[None]]]:
    """Every long-running task of the daemon, by name; each runs under `loops.supervise`.

    An error nobody mapped is logged and the loop restarted, never the end of the TaskGroup (and of the
    outcomes batched in memory). LISTEN reconnects itself and reports to /readyz through `app[READY]`.
    """
    grace = settings.shutdown_grace_s
    wakeups = {store.CHANNEL_SEND: sender.wake, store.CHANNEL_DUE: timer.wake}
    runs: dict[str, Callable[[], Awaitable[None]]] = {
        "sender": functools.partial(sender.run, stop, grace),
        "timer": functools.partial(timer.run, stop, grace),
        "recovery": functools.partial(recovery.run, stop),
        "feed-gate": functools.partial(gate.run, stop),
        "listen": functools.partial(db.listen, wakeups, stop, health=app[keys.READY]),
    }
    # --- retention (purge of finished rows): owned by the performance work ---
    if settings.retention_days > 0:
        from fallback_daemon.engine import retention

        purge = retention.RetentionLoop(
            retention.PgRetentionStore(db), days=settings.retention_days, batch=settings.retention_batch
        )
        runs["retention"] = functools.partial(purge.run, stop)
    # --- end retention ---
    # --- outcome events (webhooks, docs/webhooks.md): their own loop, never on the send path ---
    from fallback_daemon.engine import webhooks

    deliverer = webhooks.WebhookLoop(
        webhooks.WebhookStore(db),
        schedule=settings.webhook_retry_schedule,
        timeout_s=settings.webhook_timeout_s,
        disable_after_s=settings.webhook_disable_after_s,
        concurrency=settings.webhook_concurrency,
        purge_window_s=settings.retention_days * 86_400.0,
        purge_batch=settings.retention_batch,
    )
    wakeups[webhooks.CHANNEL] = deliverer.wake  # the dict LISTEN registers (read when it connects)
    runs["webhooks"] = functools.partial(deliverer.run, stop)
    # --- end outcome events ---
    for consumer in queue_consumers:
        runs[f"consumer-{consumer.queue.name}"] = functools.partial(consumer.run, stop)
    return runs


async def _stop_readiness(app: web.Application, stop: asyncio.Event) -> None:
    await stop.wait()
    app[keys.READY]["ready"] = False
