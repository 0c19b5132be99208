"""Guard subcommands of `fallback-daemon`: `opt-out add|remove|list|import` and `budget list|set|unset`.

Like the other operator commands (cli_ops.py) they talk to a running daemon over its HTTP API (`--url`;
changes take the operator token, else the API token; reads the operator, read or API token), print a table
or the API's JSON with `--json`, and exit 0 ok, 1 not found, 2 usage, 3 daemon unreachable.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import urllib.parse
from typing import Any

import aiohttp

from fallback_daemon import config
from fallback_daemon.ops import cli_ops, cli_render

OK, REFUSED, USAGE, UNAVAILABLE = cli_ops.OK, cli_ops.REFUSED, cli_ops.USAGE, cli_ops.UNAVAILABLE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `opt-out` and `budget` to `fallback-daemon`'s parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="the daemon's base URL (default http://FALLBACK_HTTP_HOST:FALLBACK_HTTP_PORT)"
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")

    opt = sub.add_parser("opt-out", help="numbers that never get a fallback SMS")
    opt_sub = opt.add_subparsers(dest="opt_action", required=True)
    p = opt_sub.add_parser("add", parents=[common], help="add numbers to the opt-out list")
    p.add_argument("numbers", nargs="+", help="phone numbers with country code (+ optional)")
    p.add_argument("--reason", help="why (stored with each number)")
    p.set_defaults(guards="opt-add")
    p = opt_sub.add_parser("remove", parents=[common], help="take a number off the opt-out list")
    p.add_argument("number")
    p.set_defaults(guards="opt-remove")
    p = opt_sub.add_parser("list", parents=[common], help="the opt-out list, oldest first")
    p.add_argument("--number", help="a number or a prefix of numbers")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--cursor", help="continue after a previous page")
    p.set_defaults(guards="opt-list")
    p = opt_sub.add_parser(
        "import", parents=[common], help="import a file: one number per line, or CSV (first column)"
    )
    p.add_argument("file", help="the file, or - for standard input")
    p.add_argument("--reason", help="why (stored with each number)")
    p.set_defaults(guards="opt-import")

    budget = sub.add_parser("budget", help="daily SMS budgets (global, per prefix, per CustSpaceId)")
    budget_sub = budget.add_subparsers(dest="budget_action", required=True)
    p = budget_sub.add_parser("list", parents=[common], help="budgets and what they spent today")
    p.set_defaults(guards="budget-list")
    p = budget_sub.add_parser(
        "set", parents=[common], help="set a daily limit: global N | prefix 86 N | space ID N"
    )
    p.add_argument("scope", choices=["global", "prefix", "space"])
    p.add_argument("args", nargs="+", help="[key] limit")
    p.add_argument("--actor", default=None, help="who (recorded with the budget)")
    p.set_defaults(guards="budget-set")
    p = budget_sub.add_parser(
        "unset", parents=[common], help="remove a budget: global | prefix 86 | space ID"
    )
    p.add_argument("scope", choices=["global", "prefix", "space"])
    p.add_argument("key", nargs="?")
    p.set_defaults(guards="budget-unset")


def is_guards(args: argparse.Namespace) -> bool:
    return getattr(args, "guards", None) is not None


async def run(args: argparse.Namespace, settings: config.Settings) -> int:
    """Run one guard subcommand; prints the result and returns the exit code."""
    target = cli_ops.daemon_target(args, settings)
    if target is None:
        return USAGE
    base, tokens = target
    acts = tokens["POST"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        try:
            out = await _command(cli_ops.Client(http, base, tokens), args, http, base, acts)
        except cli_ops.Failure as exc:
            print(f"fallback-daemon: {exc}", file=sys.stderr)
            return exc.code
    print(json.dumps(out[0], indent=2, ensure_ascii=False) if args.json else out[1])
    return OK


def _path_part(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def _command(
    api: cli_ops.Client, args: argparse.Namespace, http: aiohttp.ClientSession, base: str, token: str
) -> tuple[Any, str]:
    """(JSON answer, human text) for one subcommand."""
    if args.guards == "opt-add":
        body: dict[str, Any] = {"numbers": args.numbers}
        if args.reason:
            body["reason"] = args.reason
        done = await api.call("POST", "/v1/opt-outs", body=body)
        return done, f"opt-out: {done['added']} added, {done['already']} already listed"
    if args.guards == "opt-import":
        return await _import(http, base, token, args)
    if args.guards == "opt-remove":
        done = await api.call("DELETE", f"/v1/opt-outs/{_path_part(args.number)}")
        return done, f"opt-out: {done['number']} removed (it may get fallback SMS again)"
    if args.guards == "opt-list":
        params = {"limit": str(args.limit)}
        for name in ("number", "cursor"):
            if getattr(args, name):
                params[name] = getattr(args, name)
        page = await api.call("GET", "/v1/opt-outs", params=params)
        rows = [
            [o["number"], o["source"], o["created_at"][:19], (o["reason"] or "")[:50]]
            for o in page["opt_outs"]
        ]
        text = cli_render.table(["NUMBER", "SOURCE", "ADDED", "REASON"], rows) or "the opt-out list is empty"
        if page["next_cursor"]:
            text += f"\nmore: --cursor {page['next_cursor']}"
        return page, text
    return await _budget(api, args)


async def _budget(api: cli_ops.Client, args: argparse.Namespace) -> tuple[Any, str]:
    if args.guards == "budget-list":
        listing = await api.call("GET", "/v1/budgets")
        rows = [
            [b["scope"], b["key"] or "-", str(b["daily_limit"]), str(b["used_today"]), str(b["remaining"])]
            for b in listing["budgets"]
        ]
        head = f"budgets for {listing['day']} ({listing['time_zone']}; over budget: {listing['action']})"
        table = cli_render.table(["SCOPE", "KEY", "LIMIT", "USED", "LEFT"], rows) or "no budget set"
        return listing, f"{head}\n{table}"
    if args.guards == "budget-set":
        key, raw_limit = _key_and_limit(args.scope, args.args)
        path = (
            "/v1/budgets/global" if args.scope == "global" else f"/v1/budgets/{args.scope}/{_path_part(key)}"
        )
        body = {"daily_limit": raw_limit} | ({"actor": args.actor} if args.actor else {})
        done = await api.call("PUT", path, body=body)
        return done, (
            f"budget {done['scope']} {done['key'] or ''}: {done['daily_limit']} SMS a day"
            f" ({done['used_today']} used today)"
        )
    if args.guards == "budget-unset":
        if (args.scope == "global") != (args.key is None):
            raise cli_ops.Failure(USAGE, "budget unset: global takes no key; prefix and space need one")
        path = (
            "/v1/budgets/global" if args.key is None else f"/v1/budgets/{args.scope}/{_path_part(args.key)}"
        )
        done = await api.call("DELETE", path)
        return done, f"budget {done['scope']} {done['key']}: removed (no limit any more)".replace("  ", " ")
    raise AssertionError(args.guards)


def _key_and_limit(scope: str, values: list[str]) -> tuple[str, int]:
    want = 1 if scope == "global" else 2
    if len(values) != want:
        usage = "global LIMIT" if scope == "global" else f"{scope} KEY LIMIT"
        raise cli_ops.Failure(USAGE, f"budget set {usage}")
    try:
        limit = int(values[-1])
    except ValueError:
        raise cli_ops.Failure(
            USAGE, f"budget set: the limit must be a whole number, not {values[-1]!r}"
        ) from None
    return (values[0] if want == 2 else ""), limit


async def _import(
    http: aiohttp.ClientSession, base: str, token: str, args: argparse.Namespace
) -> tuple[Any, str]:
    """POST the file as text/csv (the server parses it: one set of rules for API and CLI)."""
    data = read_input(args.file)
    params = {"reason": args.reason} if args.reason else None
    headers = {"Content-Type": "text/csv; charset=utf-8", "Authorization": f"Bearer {token}"}
    try:
        async with http.post(
            base.rstrip("/") + "/v1/opt-outs", data=data, params=params, headers=headers
        ) as resp:
            status, text = resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise cli_ops.Failure(
            UNAVAILABLE, f"cannot reach the daemon at {base} ({exc or type(exc).__name__})"
        ) from None
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"error": {"message": text[:200]}}
    if status >= 300:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        code = {400: USAGE, 401: USAGE, 403: USAGE, 404: REFUSED}.get(status, UNAVAILABLE)
        raise cli_ops.Failure(code, f"opt-out import: {error.get('message', status)}")
    return answer, (
        f"opt-out import: {answer['numbers']} number(s), {answer['added']} added,"
        f" {answer['already']} already listed"
    )


def read_input(name: str) -> bytes:
    """The file's bytes, or standard input's for '-' (a CLI reads its one input before talking)."""
    try:
        return sys.stdin.buffer.read() if name == "-" else pathlib.Path(name).read_bytes()
    except OSError as exc:
        raise cli_ops.Failure(USAGE, f"opt-out import: cannot read {name}: {exc.strerror}") from None
