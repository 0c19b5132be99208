"""Operator subcommands of `fallback-daemon` (status, list, stats, cancel, fire, redrive, held, dead-letters).

Errors name the CLI's flags (`--channel`), not the API's body fields (`channel`).

They talk to a running daemon over its HTTP API (`--url`, default http://FALLBACK_HTTP_HOST:FALLBACK_HTTP_PORT,
token FALLBACK_API_TOKEN). Output is a human table, or the API's JSON with `--json`. Exit codes: 0 ok,
1 not found or refused by the state, 2 usage or configuration (bad argument, wrong token), 3 daemon
unreachable or failing.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
import time
import uuid
from typing import Any

import aiohttp

from fallback_daemon import config
from fallback_daemon.ops import advice, cli_render

OK, REFUSED, USAGE, UNAVAILABLE = 0, 1, 2, 3
PHONE = re.compile(r"\+?[0-9][0-9 ]{7,20}")
RELATIVE = re.compile(r"(\d+)([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SEARCH_FLAGS = (
    "id",
    "provider_message_id",
    "task_id",
    "to",
    "chat_state",
    "fallback_state",
    "channel",
    "since",
    "until",
    "limit",
    "cursor",
)


# API field -> the CLI flag an operator typed (error messages speak the CLI's language).
FIELD_FLAGS = {
    "channel": "--channel",
    "hold_reason": "--hold-reason",
    "ids": "--id",
    "all": "--all",
    "limit": "--limit",
    "cursor": "--cursor",
    "since": "--since",
    "until": "--until",
    "chat_state": "--chat-state",
    "fallback_state": "--fallback-state",
    "provider_message_id": "--provider-message-id",
    "task_id": "--task-id",
    "to": "--to",
    "window": "--window",
    "prefix": "--prefix",
    "target": "--target",
    "reason": "--reason",
    "actor": "--actor",
    "force": "--force",
}


class Failure(Exception):
    """A command failed; `code` is the exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _default_actor() -> str:
    try:
        return f"{getpass.getuser()}@cli"
    except (KeyError, OSError):
        return "operator@cli"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator subcommands to `fallback-daemon`'s parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="the daemon's base URL (default http://FALLBACK_HTTP_HOST:FALLBACK_HTTP_PORT)"
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    act = argparse.ArgumentParser(add_help=False)
    act.add_argument("--reason", help="why (recorded in the message timeline)")
    act.add_argument("--actor", default=_default_actor(), help="who (recorded; default: <user>@cli)")

    p = sub.add_parser(
        "status", parents=[common], help="a message's state and timeline, by id, MessageId or phone"
    )
    p.add_argument("ref", help="our message id, the CAMS MessageId, the client TaskId, or a phone number")
    p.set_defaults(ops="status")

    p = sub.add_parser("list", parents=[common], help="search messages (newest first)")
    for flag in ("id", "provider-message-id", "task-id", "to"):
        p.add_argument(f"--{flag}")
    p.add_argument("--chat-state", help="comma-separated, e.g. sending,unknown")
    p.add_argument("--fallback-state", help="comma-separated, e.g. armed,held")
    p.add_argument("--channel", help="comma-separated channels")
    p.add_argument("--since", help="RFC 3339 time, Unix seconds, or an age like 30m, 1h, 2d")
    p.add_argument("--until", help="same forms as --since")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="continue after a previous page")
    p.set_defaults(ops="list")

    p = sub.add_parser(
        "stats", parents=[common], help="counts, fallbacks by reason, timers, feeds, dead letters"
    )
    p.add_argument(
        "what", nargs="?", choices=["latency"], help="latency: delivery times and FallBackDuration advice"
    )
    p.add_argument("--window", help="window for the windowed figures: seconds or 15m, 1h, 1d (latency: 7d)")
    p.add_argument("--channel", help="latency: one channel only")
    p.add_argument("--prefix", help="latency: one To dialing-code prefix (e.g. 65) instead of per country")
    p.add_argument("--target", help="latency: the double-delivery rate to meet (default 0.01)")
    p.set_defaults(ops="stats")

    for verb, text in (
        ("cancel", "cancel a pending fallback"),
        ("fire", "fire a pending (or held) fallback now"),
        ("redrive", "re-drive a message stuck in sending/unknown or a fallback stuck in firing"),
    ):
        p = sub.add_parser(verb, parents=[common, act], help=text)
        p.add_argument("id", help="our message id")
        if verb == "redrive":
            p.add_argument("--force", action="store_true", help="even while a provider call is in flight")
        if verb == "fire":
            p.add_argument(
                "--force", action="store_true", help="even if its SMS may have gone out (sms_unknown)"
            )
        p.set_defaults(ops=verb)

    held = sub.add_parser("held", help="list, release or drop fallbacks held by the health gate or recovery")
    held_sub = held.add_subparsers(dest="held_action", required=True)
    p = held_sub.add_parser("list", parents=[common], help="held fallbacks (newest first), by channel/reason")
    p.add_argument("--channel")
    p.add_argument("--hold-reason", help="feed_down, sms_unknown or sms_retries_exhausted")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="continue after a previous page")
    p.set_defaults(ops="held-list")
    for verb, text in (("release", "held fallbacks fire now"), ("drop", "held fallbacks never fire")):
        p = held_sub.add_parser(verb, parents=[common, act], help=text)
        p.add_argument("--channel")
        p.add_argument("--hold-reason")
        p.add_argument("--id", action="append", dest="ids", help="a message id (repeatable)")
        p.add_argument(
            "--all", action="store_true", help="every held fallback (needed without another filter)"
        )
        p.add_argument("--limit", type=int)
        p.add_argument("--dry-run", action="store_true", help="only show how many would be affected")
        p.add_argument("--yes", action="store_true", help="confirm --all (without it, --all only previews)")
        if verb == "release":
            p.add_argument(
                "--force", action="store_true", help="also those held as sms_unknown (their SMS may be out)"
            )
        p.set_defaults(ops="held")

    dead = sub.add_parser("dead-letters", help="queue messages that could not be parsed")
    dead_sub = dead.add_subparsers(dest="dead_action", required=True)
    p = dead_sub.add_parser("list", parents=[common], help="dead letters, newest first")
    p.add_argument("--all", action="store_true", help="include replayed ones")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(ops="dead-list")
    p = dead_sub.add_parser("replay", parents=[common, act], help="re-parse and ingest one")
    p.add_argument("id", type=int)
    p.set_defaults(ops="dead-replay")


def is_ops(args: argparse.Namespace) -> bool:
    return getattr(args, "ops", None) is not None


def parse_age(flag: str, value: str) -> str:
    """`30m` → Unix seconds that long ago; anything else is passed through for the API to validate."""
    match = RELATIVE.fullmatch(value.strip())
    if match is None:
        return value
    return str(round(time.time() - int(match.group(1)) * UNITS[match.group(2)], 3))


def window_seconds(value: str) -> str:
    match = RELATIVE.fullmatch(value.strip())
    return str(int(match.group(1)) * UNITS[match.group(2)]) if match else value


class Client:
    """The operator API over one aiohttp session."""

    def __init__(self, http: aiohttp.ClientSession, base: str, tokens: dict[str, str] | None = None) -> None:
        self.http, self.base = http, base.rstrip("/")
        self.tokens = tokens or {}  # method -> bearer token (reads and actions may take different tokens)

    async def call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        try:
            token = self.tokens.get(method)
            headers = {"Authorization": f"Bearer {token}"} if token else None
            async with self.http.request(
                method, self.base + path, params=params, json=body, headers=headers
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Failure(
                UNAVAILABLE,
                f"cannot reach the daemon at {self.base} ({exc or type(exc).__name__}); "
                "is it running? (--url, FALLBACK_HTTP_HOST/PORT)",
            ) from None
        try:
            data = json.loads(text)
        except ValueError:
            data = {"error": {"message": text[:200]}}
        if status < 300:
            return data
        error = data.get("error", {}) if isinstance(data, dict) else {}
        field = error.get("field")
        flag = FIELD_FLAGS.get(str(field), str(field)) if field else ""
        message = (f"{flag}: " if flag else "") + str(error.get("message", status))
        code = {401: USAGE, 403: USAGE, 400: USAGE, 404: REFUSED, 409: REFUSED}.get(status, UNAVAILABLE)
        if status in (401, 403) and "FALLBACK_" not in message:
            message += " (check FALLBACK_API_TOKEN)"
        raise Failure(code, message)


def daemon_target(args: argparse.Namespace, settings: config.Settings) -> tuple[str, dict[str, str]] | None:
    """The daemon's base URL and the bearer token per HTTP method, shared by every operator subcommand.

    Actions take the operator token when one is set (else the API token); reads the operator, else the read,
    else the API token (web/tokens.py has the matrix). None (after saying so) when no token is set.
    """
    api_token, op_token, read_token = (
        t.reveal() for t in (settings.api_token, settings.operator_token, settings.read_token)
    )
    reads, acts = op_token or read_token or api_token, op_token or api_token
    if not (reads or acts):
        print(
            "fallback-daemon: FALLBACK_API_TOKEN is not set (nor FALLBACK_OPERATOR/READ_TOKEN)",
            file=sys.stderr,
        )
        return None
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host  # noqa: S104
    base = args.url or f"http://{host}:{settings.http_port}"
    return base, {"GET": reads, "POST": acts, "PUT": acts, "DELETE": acts}


async def run(args: argparse.Namespace, settings: config.Settings) -> int:
    """Run one operator subcommand; prints the result and returns the exit code."""
    target = daemon_target(args, settings)
    if target is None:
        return USAGE
    base, tokens = target
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            out = await _command(Client(http, base, tokens), args)
        except Failure as exc:
            print(f"fallback-daemon: {exc}", file=sys.stderr)
            return exc.code
    if args.json:
        print(json.dumps(out[0], indent=2, ensure_ascii=False))
    else:
        print(out[1])
    return OK


async def _command(api: Client, args: argparse.Namespace) -> tuple[Any, str]:
    """(JSON answer, human text) for one subcommand."""
    if args.ops == "status":
        return await _status(api, args.ref)
    if args.ops == "list":
        params = {f: str(getattr(args, f)) for f in SEARCH_FLAGS if getattr(args, f, None) is not None}
        for f in ("since", "until"):
            if f in params:
                params[f] = parse_age(f, params[f])
        page = await api.call("GET", "/v1/messages", params=params)
        return page, cli_render.render_list(page)
    if args.ops == "stats":
        return await _stats(api, args)
    body: dict[str, Any] = {"actor": getattr(args, "actor", None), "reason": getattr(args, "reason", None)}
    if args.ops in ("cancel", "fire", "redrive"):
        if args.ops in ("redrive", "fire"):
            body["force"] = args.force
        done = await api.call("POST", f"/v1/messages/{args.id}/{args.ops}", body=body)
        return done, cli_render.render_action(args.ops, done)
    if args.ops == "held-list":
        return await _held_list(api, args)
    if args.ops == "held":
        return await _held(api, args, body)
    if args.ops == "dead-list":
        page = await api.call(
            "GET",
            "/v1/dead-letters",
            params={"pending": "false" if args.all else "true", "limit": str(args.limit)},
        )
        rows = [
            [
                str(d["id"]),
                d["received_at"][:19],
                d["source"],
                d["queue"],
                d["kind"],
                d["replayed_at"][:19] if d["replayed_at"] else "-",
                d["error"][:60],
            ]
            for d in page["dead_letters"]
        ]
        return page, cli_render.table(
            ["ID", "RECEIVED", "SOURCE", "QUEUE", "KIND", "REPLAYED", "ERROR"], rows
        ) or "no dead letters"
    if args.ops == "dead-replay":
        done = await api.call("POST", f"/v1/dead-letters/{args.id}/replay", body=body)
        return done, (
            f"replayed dead letter {done['id']}: {done['received']} receipt(s), applied {done['applied']},"
            f" duplicates {done['duplicates']}, parked {done['parked']}"
        )
    raise AssertionError(args.ops)


async def _stats(api: Client, args: argparse.Namespace) -> tuple[Any, str]:
    """`stats` (the overview) or `stats latency` (delivery times and FallBackDuration advice)."""
    if args.what == "latency":
        params = {"window": window_seconds(args.window or "7d")}
        params |= {k: v for k in ("channel", "prefix", "target") if (v := getattr(args, k)) is not None}
        latency = await api.call("GET", "/v1/stats/latency", params=params)
        return latency, advice.render(latency)
    stats = await api.call("GET", "/v1/stats", params={"window": window_seconds(args.window or "1h")})
    return stats, cli_render.render_stats(stats)


async def _held_list(api: Client, args: argparse.Namespace) -> tuple[Any, str]:
    """Held fallbacks via the search API (fallback_state=held), filtered by hold reason here."""
    params = {"fallback_state": "held", "limit": str(args.limit)}
    for name in ("channel", "cursor"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    page = await api.call("GET", "/v1/messages", params=params)
    if args.hold_reason:
        page = {**page, "messages": [m for m in page["messages"] if m.get("hold_reason") == args.hold_reason]}
    text = cli_render.render_list(page)
    if not page["messages"]:
        text = "no held fallback matches"
    return page, text


async def _held(api: Client, args: argparse.Namespace, body: dict[str, Any]) -> tuple[Any, str]:
    """Release or drop held fallbacks; `--dry-run`, and `--all` without `--yes`, only preview the count."""
    verb = args.held_action
    if not (args.channel or args.hold_reason or args.ids or args.all):
        raise Failure(
            USAGE,
            f"held {verb}: give --channel, --hold-reason or --id, or --all to act on every held fallback",
        )
    if args.dry_run or (args.all and not args.yes and not (args.channel or args.hold_reason or args.ids)):
        stats = await api.call("GET", "/v1/stats", params={"window": "60"})
        groups = [
            h
            for h in stats["held"]["by_reason_channel"]
            if (not args.channel or h["channel"] == args.channel)
            and (not args.hold_reason or h["reason"] == args.hold_reason)
        ]
        count = len(args.ids) if args.ids else sum(int(h["count"]) for h in groups)
        preview = {"action": verb, "would_match": count, "groups": groups, "done": 0}
        text = cli_render.render_held_preview(verb, count, groups, by_ids=bool(args.ids))
        if not args.dry_run:
            text += f"\nnothing done: run again with --yes to {verb} them"
        return preview, text
    body |= {
        "channel": args.channel,
        "hold_reason": args.hold_reason,
        "ids": args.ids,
        "all": args.all,
        "limit": args.limit,
        "force": getattr(args, "force", None) or None,
    }
    done = await api.call("POST", f"/v1/held/{verb}", body={k: v for k, v in body.items() if v is not None})
    text = (
        f"{verb}: {done['done']} of {done['matched']} held fallback(s)"
        f" ({done['refused']} refused{', more remain: run again' if done['more'] else ''})"
    )
    if done.get("not_held"):
        text += f"\nnot held: {', '.join(done['not_held'])}"
    if done.get("needs_force"):
        text += (
            f"\nleft held (their SMS may have gone out; check the provider, then --force): "
            f"{', '.join(done['needs_force'])}"
        )
    return done, text


async def _status(api: Client, ref: str) -> tuple[Any, str]:
    """Find the message by id, phone (newest), MessageId or TaskId; its state and timeline."""
    ref = ref.strip()
    try:
        message_id = uuid.UUID(ref)
    except ValueError:
        pass
    else:
        view = await api.call("GET", f"/v1/messages/{message_id}")
        return view, cli_render.render_message(view)
    if PHONE.fullmatch(ref):
        tries = [{"to": ref.replace(" ", "").lstrip("+")}]
    else:
        tries = [{"provider_message_id": ref}, {"task_id": ref}]
    for params in tries:
        page = await api.call("GET", "/v1/messages", params={**params, "limit": "10"})
        if page["messages"]:
            newest, others = page["messages"][0], page["messages"][1:]
            view = await api.call("GET", f"/v1/messages/{newest['id']}")
            text = cli_render.render_message(view)
            if others:
                text += "\n\nother messages (newest first):\n" + cli_render.render_list(
                    {"messages": others, "next_cursor": None}
                )
            return {**view, "other_messages": others}, text
    raise Failure(REFUSED, f"no message matches {ref!r}")
