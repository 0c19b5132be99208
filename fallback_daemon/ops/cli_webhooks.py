"""`fallback-daemon webhooks …`: subscriptions to outcome events, their deliveries, replay (docs/webhooks.md).

Like the other operator commands (cli_ops.py) it talks to a running daemon over /v1/webhooks (`--url`, tokens
from FALLBACK_OPERATOR_TOKEN / FALLBACK_READ_TOKEN / FALLBACK_API_TOKEN); same exit codes, `--json` for the
API's JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import aiohttp

from fallback_daemon import config
from fallback_daemon.engine import webhooks
from fallback_daemon.ops import cli_ops, cli_render

# API field (as cli_ops.Client names it in an error) -> what the operator typed here.
FIELD_FLAGS = {
    "url": "ENDPOINT",
    "event_types": "--event-type",
    "channels": "--channel",
    "cust_space_ids": "--cust-space-id",
    "description": "--description",
    "--id": "--delivery",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `webhooks` and its subcommands to `fallback-daemon`'s parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="the daemon's base URL (default http://FALLBACK_HTTP_HOST:FALLBACK_HTTP_PORT)"
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    hooks = sub.add_parser("webhooks", help="subscriptions to outcome events (webhooks) and their deliveries")
    verbs = hooks.add_subparsers(dest="webhooks_action", required=True)

    p = verbs.add_parser("add", parents=[common], help="subscribe an endpoint (prints its secret once)")
    p.add_argument("endpoint", help="the receiver's http(s) URL")
    p.add_argument("--secret", help="whsec_<base64> (default: a new random one)")
    types = ", ".join(webhooks.EVENT_TYPES)
    p.add_argument(
        "--event-type", action="append", dest="event_types", help=f"repeatable; default every type ({types})"
    )
    p.add_argument("--channel", action="append", dest="channels", help="only these channels (repeatable)")
    p.add_argument(
        "--cust-space-id", action="append", dest="cust_space_ids", help="only these CustSpaceIds (repeatable)"
    )
    p.add_argument("--description", default="")
    p.set_defaults(webhooks="add")

    p = verbs.add_parser("list", parents=[common], help="endpoints with pending, failed, lag, last status")
    p.set_defaults(webhooks="list")
    for verb, text in (
        ("show", "one endpoint and its delivery figures"),
        ("delete", "remove an endpoint and its pending deliveries"),
        ("enable", "re-enable an endpoint disabled after continuous failures"),
    ):
        p = verbs.add_parser(verb, parents=[common], help=text)
        p.add_argument("id", type=int)
        p.set_defaults(webhooks=verb)

    p = verbs.add_parser("deliveries", parents=[common], help="an endpoint's deliveries, newest first")
    p.add_argument("id", type=int)
    p.add_argument("--state", choices=webhooks.DELIVERY_STATES)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")
    p.set_defaults(webhooks="deliveries")

    p = verbs.add_parser("replay", parents=[common], help="send failed deliveries again (same webhook-id)")
    p.add_argument("id", type=int)
    p.add_argument("--since", help="only deliveries created since: RFC 3339, Unix seconds, or 30m, 2h, 1d")
    p.add_argument("--include-delivered", action="store_true", help="delivered ones too")
    p.add_argument("--delivery", action="append", type=int, dest="ids", help="a delivery id (repeatable)")
    p.set_defaults(webhooks="replay")


def is_webhooks(args: argparse.Namespace) -> bool:
    return getattr(args, "webhooks", None) is not None


async def run(args: argparse.Namespace, settings: config.Settings) -> int:
    """Run one `webhooks` subcommand; prints the result and returns the exit code."""
    target = cli_ops.daemon_target(args, settings)
    if target is None:
        return cli_ops.USAGE
    base, tokens = target
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        client = cli_ops.Client(http, base, tokens)
        try:
            out, text = await _command(client, args)
        except cli_ops.Failure as exc:
            field, sep, rest = str(exc).partition(": ")
            message = f"{FIELD_FLAGS[field]}: {rest}" if sep and field in FIELD_FLAGS else str(exc)
            print(f"fallback-daemon: {message}", file=sys.stderr)
            return exc.code
    print(json.dumps(out, indent=2, ensure_ascii=False) if args.json else text)
    return cli_ops.OK


async def _command(api: cli_ops.Client, args: argparse.Namespace) -> tuple[Any, str]:
    verb = args.webhooks
    if verb == "add":
        body = {
            "url": args.endpoint,
            "secret": args.secret,
            "event_types": args.event_types,
            "channels": args.channels,
            "cust_space_ids": args.cust_space_ids,
            "description": args.description,
        }
        done = await api.call("POST", "/v1/webhooks", body={k: v for k, v in body.items() if v is not None})
        ep = done["endpoint"]
        return done, (
            f"webhook endpoint {ep['id']} → {ep['url']}\n"
            f"events: {', '.join(ep['event_types']) or 'all'}\n"
            f"secret: {done['secret']}\n(the secret is shown only now: store it with the receiver)"
        )
    if verb == "list":
        page = await api.call("GET", "/v1/webhooks")
        return page, render_endpoints(page["webhooks"]) or "no webhook endpoints"
    if verb == "show":
        ep = await api.call("GET", f"/v1/webhooks/{args.id}")
        return ep, render_endpoints([ep])
    if verb == "delete":
        done = await api.call("DELETE", f"/v1/webhooks/{args.id}")
        return done, f"deleted webhook endpoint {done['id']}"
    if verb == "enable":
        ep = await api.call("POST", f"/v1/webhooks/{args.id}/enable")
        return ep, f"enabled webhook endpoint {ep['id']}\n" + render_endpoints([ep])
    if verb == "deliveries":
        params = {"limit": str(args.limit)}
        if args.state:
            params["state"] = args.state
        if args.cursor:
            params["cursor"] = args.cursor
        page = await api.call("GET", f"/v1/webhooks/{args.id}/deliveries", params=params)
        return page, render_deliveries(page)
    if verb == "replay":
        replay: dict[str, Any] = {"include_delivered": args.include_delivered}
        if args.since:
            replay["since"] = cli_ops.parse_age("since", args.since)
        if args.ids:
            replay["ids"] = args.ids
        done = await api.call("POST", f"/v1/webhooks/{args.id}/replay", body=replay)
        return done, f"replayed {done['replayed']} deliver{'y' if done['replayed'] == 1 else 'ies'}"
    raise AssertionError(verb)


def render_endpoints(endpoints: list[dict[str, Any]]) -> str:
    rows = []
    for ep in endpoints:
        s = ep.get("stats") or {}
        state = "disabled" if ep["disabled_at"] else ("failing" if ep["failing_since"] else "ok")
        rows.append(
            [
                str(ep["id"]),
                ep["url"][:48],
                state,
                str(s.get("pending", "-")),
                str(s.get("retrying", "-")),
                str(s.get("failed", "-")),
                str(s.get("delivered", "-")),
                str(s.get("attempts", "-")),
                f"{s.get('lag_s', 0):.1f}s",
                str(ep["last_status"] or "-") if ep["last_attempt_at"] else "-",
                ",".join(ep["event_types"])[:40] or "all",
            ]
        )
    headers = ["ID", "URL", "STATE", "PENDING", "RETRYING", "FAILED", "DELIVERED", "ATTEMPTS", "LAG", "LAST"]
    return cli_render.table([*headers, "EVENTS"], rows)


def render_deliveries(page: dict[str, Any]) -> str:
    rows = [
        [
            d["webhook_id"],
            d["event_type"],
            d["message_id"],
            str(d["sequence"]),
            d["state"],
            str(d["attempts"]),
            str(d["last_status"] or "-"),
            (d["last_error"] or "")[:40],
        ]
        for d in page["deliveries"]
    ]
    text = cli_render.table(
        ["WEBHOOK-ID", "TYPE", "MESSAGE", "SEQ", "STATE", "ATTEMPTS", "STATUS", "ERROR"], rows
    )
    if page.get("next_cursor"):
        text += f"\nmore: --cursor {page['next_cursor']}"
    return text or "no deliveries"
