"""The `fallback-daemon` command: migrate, run, sandbox, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

import structlog

from fallback_daemon import app, config, logs
from fallback_daemon.core import errors
from fallback_daemon.db import migrate
from fallback_daemon.ops import cli_guards, cli_ops, cli_webhooks

log = structlog.get_logger("fallback_daemon.cli")


def roles_arg(raw: str) -> frozenset[str]:
    """`--role api,workers` -> {"api", "workers"}; an unknown role is a usage error (exit 2)."""
    roles = frozenset(r.strip() for r in raw.split(",") if r.strip())
    unknown = sorted(roles - set(app.ROLES))
    if not roles or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown role {', '.join(unknown) or '(none)'}: choose from {', '.join(app.ROLES)}"
        )
    return roles


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fallback-daemon",
        description="ChatApp (CAMS) messages with a durable SMS fallback. Configured by environment "
        "variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    embedded_help = (
        "without DATABASE_URL, use the embedded Postgres under FALLBACK_DATA_DIR (one host, for trying; "
        "never with replicas)"
    )
    mig = sub.add_parser("migrate", help="apply pending database migrations and exit")
    mig.add_argument("--embedded-db", action="store_true", help=embedded_help)
    run = sub.add_parser("run", help="run the daemon (HTTP server, sender, timers)")
    run.add_argument("--sandbox", action="store_true", help="start the built-in Alibaba sandbox in-process")
    run.add_argument("--no-migrate", action="store_true", help="do not apply migrations on start")
    run.add_argument("--embedded-db", action="store_true", help=embedded_help)
    run.add_argument(
        "--role",
        type=roles_arg,
        default=frozenset({"all"}),
        help="which loops this process runs, comma-separated: all (default), api, senders, timers, workers "
        "(every role serves HTTP; see docs/scaling.md)",
    )
    sb = sub.add_parser("sandbox", help="run the Alibaba sandbox alone (CAMS, SMS) for a daemon to talk to")
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=9100)
    sb.add_argument("--chatapp-callback", help="URL the sandbox posts ChatApp status reports to")
    sb.add_argument("--sms-callback", help="URL the sandbox posts SMS reports to")
    sb.add_argument("--mode", choices=["suffix", "mix"], default="suffix", help="how outcomes are chosen")
    sb.add_argument("--seed", type=int, default=0)
    sb.add_argument("--qps", type=int, default=250)
    sb.add_argument("--duplicate-rate", type=float, default=0.0)
    sb.add_argument("--omit-task-id-rate", type=float, default=0.0)
    sb.add_argument("--reorder", action="store_true")
    sb.add_argument("--access-key-id", default=None)
    sb.add_argument("--access-key-secret", default=None)
    # MNS: receipts as queue messages, temporary credentials (QueryTokenForMnsQueue), redelivery.
    sb.add_argument(
        "--receipt-delivery",
        choices=["http", "mns", "both"],
        default="http",
        help="push receipts over HTTP, put them into the MNS queues, or both (duplicates)",
    )
    sb.add_argument("--mns-uid", default="1234567890", help="<uid> in Alicom-Queue-<uid>-ChatAppStatus")
    sb.add_argument("--mns-chatapp-queue", default=None, help="MNS queue for ChatApp reports (an own queue)")
    sb.add_argument("--mns-sms-queue", default=None, help="MNS queue for SMS reports (an own queue)")
    sb.add_argument("--mns-visibility-timeout-s", type=int, default=30)
    sb.add_argument("--mns-token-ttl-s", type=int, default=600, help="lifetime of issued MNS tokens")
    sb.add_argument(
        "--journal-file", default=None, help="persist the journal of sends here (kept on restart)"
    )
    demo = sub.add_parser("demo", help="daemon + sandbox + a stream of demo messages, with a live view")
    demo.add_argument("--count", type=int, default=200, help="messages to send")
    demo.add_argument("--rate", type=float, default=40.0, help="messages per second to submit")
    demo.add_argument(
        "--timer-scale",
        type=float,
        default=0.1,
        help="sandbox-only: multiply FallBackDuration (60 s * 0.1 = 6 s)",
    )
    demo.add_argument("--exit", action="store_true", help="exit after the summary instead of staying up")
    cli_ops.register(sub)  # operator commands: status, list, stats, cancel, fire, redrive, held, dead-letters
    cli_webhooks.register(sub)  # webhooks: subscriptions to outcome events, deliveries, replay
    cli_guards.register(sub)  # guards: opt-out add/remove/list/import, budget list/set/unset
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(os.environ)
    except errors.ConfigError as exc:
        print(f"fallback-daemon: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(fmt=settings.log_format, level=settings.log_level, buffered=True)
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            return runner.run(_dispatch(args, settings))
    except errors.ConfigError as exc:
        print(f"fallback-daemon: configuration error: {exc}", file=sys.stderr)
        return 2
    except errors.StoreError as exc:
        print(f"fallback-daemon: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """FALLBACK_EVENT_LOOP: uvloop's loop, or None (asyncio.Runner's default: the standard library's)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def require_database(settings: config.Settings, args: argparse.Namespace) -> None:
    """A real run needs DATABASE_URL: starting an embedded database silently would, with a missing Secret
    key, give each replica its own private database. `--sandbox` and `--embedded-db` opt in to it."""
    if settings.database_url or getattr(args, "sandbox", False) or args.embedded_db:
        return
    raise errors.ConfigError(
        "DATABASE_URL",
        f"required for `{args.command}` (postgresql://…); to try it on one host with the embedded Postgres"
        f" under {settings.data_dir}, add --embedded-db",
    )


async def _dispatch(args: argparse.Namespace, settings: config.Settings) -> int:
    if cli_guards.is_guards(args):
        return await cli_guards.run(args, settings)
    if cli_webhooks.is_webhooks(args):
        return await cli_webhooks.run(args, settings)
    if cli_ops.is_ops(args):
        return await cli_ops.run(args, settings)
    if args.command == "migrate":
        require_database(settings, args)
        db = await app.connect_database(settings, await app.database_dsn(settings), min_size=1, max_size=1)
        try:
            async with db.connection() as conn:
                applied = await migrate.migrate(conn)
        finally:
            await db.close()
        print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
        return 0
    if args.command == "run":
        require_database(settings, args)
        await app.serve(
            settings, use_sandbox=args.sandbox, run_migrations=not args.no_migrate, roles=args.role
        )
        return 0
    if args.command == "sandbox":
        from fallback_daemon import sandbox

        overrides = {
            k: v
            for k, v in {
                "access_key_id": args.access_key_id,
                "access_key_secret": args.access_key_secret,
            }.items()
            if v
        }
        sb_config = sandbox.SandboxConfig(
            chatapp_callback_url=args.chatapp_callback,
            sms_callback_url=args.sms_callback,
            mode=args.mode,
            seed=args.seed,
            qps=args.qps,
            duplicate_rate=args.duplicate_rate,
            omit_task_id_rate=args.omit_task_id_rate,
            reorder=args.reorder,
            **overrides,
            receipt_delivery=args.receipt_delivery,
            mns_uid=args.mns_uid,
            mns_chatapp_queue=args.mns_chatapp_queue,
            mns_sms_queue=args.mns_sms_queue,
            mns_visibility_timeout_s=args.mns_visibility_timeout_s,
            mns_token_ttl_s=args.mns_token_ttl_s,
            journal_path=args.journal_file,
        )
        await sandbox.run_forever(sb_config, args.host, args.port)
        return 0
    if args.command == "demo":
        from fallback_daemon import demo

        if "FALLBACK_LOG_LEVEL" not in os.environ:  # keep the live view readable
            logs.configure(fmt=settings.log_format, level="warning")

        return await demo.run(
            settings, count=args.count, rate=args.rate, timer_scale=args.timer_scale, stay_up=not args.exit
        )
    raise AssertionError(args.command)
