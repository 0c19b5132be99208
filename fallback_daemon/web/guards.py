"""/v1/opt-outs, /v1/budgets, /v1/guards: the operator's side of the fallback guards (docs/guards.md).

Reads need the `read` scope, changes the `operate` scope (web/tokens.py). A refused request stores nothing:
an import with one bad line is a 400 naming the line, and no number of it is added.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Annotated, Any

import msgspec
from aiohttp import web

from fallback_daemon.core import errors, validation
from fallback_daemon.engine import guards as rules
from fallback_daemon.ops import opinput
from fallback_daemon.web import api, keys, operator

OPT_OUT_PARAMS = ("number", "limit", "cursor")
IMPORT_PARAMS = ("reason",)
IMPORT_MAX = 100_000  # numbers per request
LIMIT_MAX = 1000
LIMIT_DEFAULT = 100
DAILY_LIMIT_MAX = 1_000_000_000
TEXT_TYPES = ("text/plain", "text/csv")


# ---- bodies (msgspec; documented in web/openapi.py) ----------------------------------------------------
# Documentation-only annotations (extra_json_schema): the handlers check these themselves.
_TEXT = Annotated[str, msgspec.Meta(extra_json_schema={"minLength": 1, "maxLength": opinput.TEXT_MAX})]
_TIME = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]


class OptOutAdd(msgspec.Struct, forbid_unknown_fields=True):
    """Numbers to add to the opt-out list (8 to 15 digits, optionally after '+'). A text/plain or text/csv
    body (one number per line, or the first CSV column) is an import instead."""

    numbers: Annotated[list[str], msgspec.Meta(min_length=1, max_length=IMPORT_MAX)]
    reason: _TEXT | None = None


class OptOutAdded(msgspec.Struct, forbid_unknown_fields=True):
    """What the request added (all or nothing: a bad number refuses the whole request)."""

    added: int  # new on the list
    already: int  # were listed before
    numbers: int  # distinct numbers in the request


class OptOut(msgspec.Struct, forbid_unknown_fields=True):
    number: str
    source: str  # api | import | provider
    reason: str | None
    message_id: str | None  # source provider: the fallback whose SMS answer reported it
    created_at: _TIME


class OptOutPage(msgspec.Struct, forbid_unknown_fields=True):
    """One page, oldest first; `next_cursor` is the `cursor` of the next page."""

    opt_outs: list[OptOut]
    next_cursor: str | None


class OptOutRemoved(msgspec.Struct, forbid_unknown_fields=True):
    number: str
    removed: bool


class BudgetSet(msgspec.Struct, forbid_unknown_fields=True):
    """A daily SMS budget: at most `daily_limit` fallback SMS a day (in the budget time zone)."""

    daily_limit: Annotated[int, msgspec.Meta(ge=0, le=DAILY_LIMIT_MAX)]
    actor: _TEXT | None = None


class Budget(msgspec.Struct, forbid_unknown_fields=True):
    scope: str  # global | prefix | space
    key: str  # '' (global), dialing-code prefix, CustSpaceId
    daily_limit: int
    used_today: int
    remaining: int
    updated_at: _TIME
    updated_by: str | None


class BudgetList(msgspec.Struct, forbid_unknown_fields=True):
    day: str  # today in time_zone
    time_zone: str
    action: str  # hold | drop: what happens over budget
    budgets: list[Budget]


class BudgetDeleted(msgspec.Struct, forbid_unknown_fields=True):
    scope: str
    key: str
    deleted: bool


class QuietWindow(msgspec.Struct, forbid_unknown_fields=True):
    prefix: str
    window: str  # "22:00-08:00@Asia/Shanghai"


class GuardSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The guard settings this replica runs with (FALLBACK_GUARD_* settings; docs/guards.md)."""

    budget_time_zone: str
    budget_action: str
    deny_prefixes: list[str]
    quiet_hours: list[QuietWindow]


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/opt-outs", list_opt_outs)
    app.router.add_post("/v1/opt-outs", add_opt_outs)
    app.router.add_delete("/v1/opt-outs/{number}", remove_opt_out)
    app.router.add_get("/v1/budgets", list_budgets)
    app.router.add_put("/v1/budgets/{scope}", set_budget)
    app.router.add_put("/v1/budgets/{scope}/{key}", set_budget)
    app.router.add_delete("/v1/budgets/{scope}", delete_budget)
    app.router.add_delete("/v1/budgets/{scope}/{key}", delete_budget)
    app.router.add_get("/v1/guards", guard_settings)


def _store(request: web.Request) -> rules.GuardStore:
    svc = request.app[keys.SERVICE]
    return rules.GuardStore(svc.db, svc.guard_config)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), status=status, content_type="application/json")


def _iso(value: dt.datetime) -> str:
    return value.isoformat()


# ---- opt-outs ----------------------------------------------------------------------------------------------
def encode_cursor(created_at: dt.datetime, number: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{number}".encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[dt.datetime, str]:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        when, _, number = text.partition("|")
        moment = dt.datetime.fromisoformat(when)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise errors.ValidationError("cursor", "not a cursor from a previous page") from None
    if moment.tzinfo is None or not number:
        raise errors.ValidationError("cursor", "not a cursor from a previous page")
    return moment, number


async def list_opt_outs(request: web.Request) -> web.Response:
    """GET /v1/opt-outs: the list, oldest first; `number` filters by a number or its prefix."""
    api.check_bearer(request, "read")
    q = operator.query(request, OPT_OUT_PARAMS)
    number = q.get("number")
    if number is not None:
        number = number.strip().removeprefix("+")
        if not (number.isascii() and number.isdigit() and 1 <= len(number) <= 15):
            raise errors.ValidationError("number", "must be a number or its prefix: 1 to 15 digits")
    limit = opinput.parse_int("limit", q.get("limit"), 1, LIMIT_MAX, LIMIT_DEFAULT)
    after = decode_cursor(q["cursor"]) if "cursor" in q else None
    rows = await _store(request).list_opt_outs(number=number, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    page = OptOutPage(
        opt_outs=[
            OptOut(
                number=r["number"],
                source=r["source"],
                reason=r["reason"],
                message_id=None if r["message_id"] is None else str(r["message_id"]),
                created_at=_iso(r["created_at"]),
            )
            for r in rows
        ],
        next_cursor=encode_cursor(rows[-1]["created_at"], rows[-1]["number"]) if more else None,
    )
    return _json(page)


def _reason(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= opinput.TEXT_MAX:
        raise errors.ValidationError(field, f"must be a string of 1..{opinput.TEXT_MAX} characters")
    return validation.check_text(field, value)


async def add_opt_outs(request: web.Request) -> web.Response:
    """POST /v1/opt-outs: JSON {"numbers": [...], "reason"} (source api), or a text/plain / text/csv import
    (source import; `?reason=`). All or nothing: any bad number is a 400 naming it."""
    api.check_bearer(request, "operate")
    if request.content_type in TEXT_TYPES:
        q = operator.query(request, IMPORT_PARAMS)
        reason = _reason(q.get("reason"), "reason")
        raw = await request.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.ValidationError("body", "is not UTF-8 text") from None
        numbers, problems = rules.parse_number_list(text)
        if problems:
            line, problem = problems[0]
            more = f" ({len(problems) - 1} more bad lines)" if len(problems) > 1 else ""
            raise errors.ValidationError("body", f"line {line}: {problem}{more}; nothing was imported")
        if not numbers:
            raise errors.ValidationError("body", "holds no phone number")
        if len(numbers) > IMPORT_MAX:
            raise errors.ValidationError("body", f"holds more than {IMPORT_MAX} numbers; split it")
        source = "import"
    else:
        operator.query(request, ())
        b = await operator.body(request, tuple(OptOutAdd.__struct_fields__))
        raw_numbers = b.get("numbers")
        if not isinstance(raw_numbers, list) or not 1 <= len(raw_numbers) <= IMPORT_MAX:
            raise errors.ValidationError("numbers", f"must be a list of 1..{IMPORT_MAX} phone numbers")
        found: dict[str, None] = {}
        for index, item in enumerate(raw_numbers):
            number = rules.normalize_number(item) if isinstance(item, str) else None
            if number is None:
                raise errors.ValidationError(
                    f"numbers[{index}]", "must be a phone number: 8 to 15 digits, optionally after '+'"
                )
            found[number] = None
        numbers = list(found)
        reason = _reason(b.get("reason"), "reason")
        source = "api"
    added, already = await _store(request).add_opt_outs(numbers, source=source, reason=reason)
    return _json(OptOutAdded(added=added, already=already, numbers=len(numbers)), status=200)


async def remove_opt_out(request: web.Request) -> web.Response:
    """DELETE /v1/opt-outs/{number}: the number may get fallback SMS again; 404 if it was not listed."""
    api.check_bearer(request, "operate")
    operator.query(request, ())
    number = rules.normalize_number(request.match_info["number"])
    if number is None:
        raise errors.ValidationError("number", "must be a phone number: 8 to 15 digits, optionally after '+'")
    if not await _store(request).remove_opt_out(number):
        raise errors.NotFound(f"{number} is not on the opt-out list")
    return _json(OptOutRemoved(number=number, removed=True))


# ---- budgets -----------------------------------------------------------------------------------------------
def budget_key(request: web.Request) -> tuple[str, str]:
    """(scope, key) from the path: /v1/budgets/global, /v1/budgets/prefix/{digits}, /v1/budgets/space/{id}."""
    scope = request.match_info["scope"]
    key = request.match_info.get("key")
    if scope not in rules.SCOPES:
        raise errors.ValidationError("scope", f"must be one of {', '.join(rules.SCOPES)}")
    if scope == "global":
        if key is not None:
            raise errors.ValidationError("key", "the global budget has no key: /v1/budgets/global")
        return scope, ""
    if key is None:
        raise errors.ValidationError("key", f"a {scope} budget needs a key: /v1/budgets/{scope}/<key>")
    if scope == "prefix":
        key = key.strip().removeprefix("+")
        if not (key.isascii() and key.isdigit() and 1 <= len(key) <= 15):
            raise errors.ValidationError("key", "a prefix is 1 to 15 digits, country code first")
        return scope, key
    if not 0 < len(key) <= validation.STRING_MAX:
        raise errors.ValidationError("key", f"a CustSpaceId is 1..{validation.STRING_MAX} characters")
    return scope, validation.check_text("key", key)


def _budget(row: Any) -> Budget:
    return Budget(
        scope=row["scope"],
        key=row["key"],
        daily_limit=row["daily_limit"],
        used_today=row["used_today"],
        remaining=max(0, row["daily_limit"] - row["used_today"]),
        updated_at=_iso(row["updated_at"]),
        updated_by=row["updated_by"],
    )


async def list_budgets(request: web.Request) -> web.Response:
    """GET /v1/budgets: every budget with what it spent today."""
    api.check_bearer(request, "read")
    operator.query(request, ())
    store = _store(request)
    day, rows = await store.list_budgets()
    return _json(
        BudgetList(
            day=day.isoformat(),
            time_zone=store.config.budget_tz,
            action=store.config.budget_action,
            budgets=[_budget(r) for r in rows],
        )
    )


async def set_budget(request: web.Request) -> web.Response:
    """PUT /v1/budgets/{scope}[/{key}] {"daily_limit": n}: create or change a daily SMS budget."""
    api.check_bearer(request, "operate")
    operator.query(request, ())
    scope, key = budget_key(request)
    b = await operator.body(request, tuple(BudgetSet.__struct_fields__))
    limit = b.get("daily_limit")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= DAILY_LIMIT_MAX:
        raise errors.ValidationError("daily_limit", f"is required: an integer from 0 to {DAILY_LIMIT_MAX}")
    actor = _reason(b.get("actor"), "actor")
    return _json(_budget(await _store(request).set_budget(scope, key, limit, actor)))


async def delete_budget(request: web.Request) -> web.Response:
    """DELETE /v1/budgets/{scope}[/{key}]: no limit any more for that scope; 404 if there was none."""
    api.check_bearer(request, "operate")
    operator.query(request, ())
    scope, key = budget_key(request)
    if not await _store(request).delete_budget(scope, key):
        raise errors.NotFound(f"no {scope} budget{' ' + key if key else ''}")
    return _json(BudgetDeleted(scope=scope, key=key, deleted=True))


async def guard_settings(request: web.Request) -> web.Response:
    """GET /v1/guards: the guard settings this replica runs with (deny-list, quiet hours, budget zone)."""
    api.check_bearer(request, "read")
    operator.query(request, ())
    config = request.app[keys.SERVICE].guard_config
    return _json(
        GuardSettings(
            budget_time_zone=config.budget_tz,
            budget_action=config.budget_action,
            deny_prefixes=list(config.deny_prefixes),
            quiet_hours=[QuietWindow(prefix=w.prefix, window=w.describe()) for w in config.quiet_hours],
        )
    )
