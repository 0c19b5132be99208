"""Guards at the moment of fallback: opt-outs, deny-listed prefixes, quiet hours and SMS budgets.

Two halves. `decide` is pure (no I/O, no clock: `now` comes from the database): given the due fallbacks a
claim locked, today's budget rows and the settings, it says for each one fire / hold / drop / defer, and how
many budget units the batch spends. `GuardStore` is the database side: `claim_due` runs lock → decide → write
in ONE transaction, so the budget check and the `armed → firing` transition commit together, and the budget
rows are locked (in key order) before anyone decides — two replicas can never both take the last unit.
docs/guards.md has the rules and why they are in this order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog

from fallback_daemon import metrics
from fallback_daemon.core import errorclasses
from fallback_daemon.db import sql, store

log = structlog.get_logger("fallback_daemon.engine.guards")
Q = sql.queries

SCOPES = ("global", "prefix", "space")
ACTIONS = ("hold", "drop")
FAILURE_REASONS = frozenset({"send_failed", "failed_receipt"})


# ---- configuration ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class QuietHours:
    """No fallback SMS to numbers under `prefix` between `start` and `end` (minutes after local midnight)."""

    prefix: str
    start: int
    end: int
    tz: str

    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.tz)

    def describe(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}@{self.tz}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class GuardConfig:
    """The guard settings (FALLBACK_SMS_DENY_PREFIXES, FALLBACK_QUIET_HOURS, FALLBACK_BUDGET_*)."""

    deny_prefixes: tuple[str, ...] = ()
    quiet_hours: tuple[QuietHours, ...] = ()
    budget_tz: str = "UTC"
    budget_action: str = "hold"  # hold | drop

    @classmethod
    def from_settings(cls, settings: Any) -> GuardConfig:
        return cls(
            deny_prefixes=tuple(settings.sms_deny_prefixes),
            quiet_hours=tuple(
                QuietHours(prefix=p, start=s, end=e, tz=tz) for p, s, e, tz in settings.quiet_hours
            ),
            budget_tz=settings.budget_tz,
            budget_action=settings.budget_action,
        )


# ---- inputs and outputs of decide -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
    """A due, armed fallback locked by the claim (what the guards look at)."""

    id: uuid.UUID
    to: str
    space: str | None = None  # the message's CustSpaceId
    fire_reason: str | None = None  # None: the timer expired
    urgent: bool = False
    gated: bool = False  # the channel's receipt-feed gate is closed
    opted_out: bool = False
    error_code: str | None = None  # the chat failure's code (send answer or receipt), for the error class


@dataclasses.dataclass(frozen=True, kw_only=True)
class Budget:
    scope: str
    key: str
    limit: int
    used: int  # today, before this batch


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
    """What the claim writes for one candidate; `kind` + `detail` are its timeline event."""

    id: uuid.UUID
    action: str  # fire | hold | drop | defer
    kind: str
    detail: Mapping[str, Any]
    guard: str | None = None  # opt_out | deny_prefix | quiet_hours | budget (None: fired, or the feed gate)
    hold_reason: str | None = None
    until: float | None = None  # defer: unix seconds when the quiet window opens
    error_class: str | None = None  # counted when the verdict is final (not for a deferral)


def longest_prefix(number: str, prefixes: Iterable[str]) -> str | None:
    """The longest of `prefixes` that `number` starts with."""
    best = None
    for p in prefixes:
        if number.startswith(p) and (best is None or len(p) > len(best)):
            best = p
    return best


def quiet_until(
    number: str, now: dt.datetime, windows: Sequence[QuietHours]
) -> tuple[QuietHours, dt.datetime] | None:
    """The quiet window (longest matching prefix) `now` falls in, and when it opens (UTC); None: not quiet.

    A window with start > end spans midnight (22:00-08:00). Times are wall-clock times of the window's zone,
    so a daylight-saving change moves the UTC instant, not the local hour.
    """
    if now.tzinfo is None:
        raise ValueError("naive datetime: now must be timezone-aware")
    prefix = longest_prefix(number, (w.prefix for w in windows))
    if prefix is None:
        return None
    window = next(w for w in windows if w.prefix == prefix)
    zone = window.zone()
    local = now.astimezone(zone)
    minute = local.hour * 60 + local.minute
    if window.start < window.end:
        inside = window.start <= minute < window.end
        open_day = local.date()
    else:
        inside = minute >= window.start or minute < window.end
        open_day = local.date() + dt.timedelta(days=1) if minute >= window.start else local.date()
    if not inside:
        return None
    opens = dt.datetime.combine(open_day, dt.time(window.end // 60, window.end % 60), tzinfo=zone)
    return window, opens.astimezone(dt.UTC)


def budgets_for(c: Candidate, budgets: Iterable[Budget]) -> list[Budget]:
    """The budgets that count this fallback, most specific first (longest prefix, space, global)."""
    mine = [
        b
        for b in budgets
        if b.scope == "global"
        or (b.scope == "prefix" and c.to.startswith(b.key))
        or (b.scope == "space" and c.space is not None and c.space == b.key)
    ]
    order = {"prefix": 0, "space": 1, "global": 2}
    return sorted(mine, key=lambda b: (order[b.scope], -len(b.key)))


def decide(
    candidates: Sequence[Candidate], budgets: Sequence[Budget], config: GuardConfig, now: dt.datetime
) -> tuple[list[Verdict], dict[tuple[str, str], int]]:
    """Guard verdicts for a claim's candidates, in their order (earliest due first gets the budget).

    Order: opt-out (drop), deny-listed prefix (drop), receipt-feed gate (timer fallbacks held), quiet hours
    (deferred unless urgent), budgets (held or dropped per FALLBACK_BUDGET_ACTION), else fire. A check that
    stops a fallback spends no budget. Returns the verdicts and the units spent per (scope, key).
    """
    spent: dict[tuple[str, str], int] = {}
    out: list[Verdict] = []
    for c in candidates:
        out.append(_one(c, budgets, config, now, spent))
    return out, spent


def _one(
    c: Candidate,
    budgets: Sequence[Budget],
    config: GuardConfig,
    now: dt.datetime,
    spent: dict[tuple[str, str], int],
) -> Verdict:
    trigger = c.fire_reason or "timeout"
    error_class = None
    extra: dict[str, Any] = {}
    if c.fire_reason in FAILURE_REASONS:
        cls = errorclasses.classify_chat(c.error_code)
        error_class = cls.name
        extra = {
            "error_class": cls.name,
            "never_deliverable": cls.never_deliverable,
            "error_code": c.error_code,
        }
    if c.opted_out:
        return _blocked(c, "opt_out", "drop", trigger, error_class, extra)
    denied = longest_prefix(c.to, config.deny_prefixes)
    if denied is not None:
        return _blocked(c, "deny_prefix", "drop", trigger, error_class, {**extra, "prefix": denied})
    if c.gated and c.fire_reason is None:
        return Verdict(
            id=c.id,
            action="hold",
            kind="fallback_held",
            hold_reason="feed_down",
            detail={"reason": "feed_down"},
        )
    quiet = None if c.urgent else quiet_until(c.to, now, config.quiet_hours)
    if quiet is not None:
        window, opens = quiet
        return Verdict(
            id=c.id,
            action="defer",
            kind="fallback_deferred",
            guard="quiet_hours",
            until=opens.timestamp(),
            detail={
                **extra,
                "reason": trigger,
                "guard": "quiet_hours",
                "prefix": window.prefix,
                "window": window.describe(),
                "until": opens.isoformat(),
            },
        )
    mine = budgets_for(c, budgets)
    for b in mine:
        used = b.used + spent.get((b.scope, b.key), 0)
        if used >= b.limit:
            detail = {**extra, "scope": b.scope, "key": b.key, "limit": b.limit, "used": used}
            return _blocked(c, "budget", config.budget_action, trigger, error_class, detail)
    for b in mine:
        spent[(b.scope, b.key)] = spent.get((b.scope, b.key), 0) + 1
    return Verdict(
        id=c.id,
        action="fire",
        kind="fallback_fired",
        detail={**extra, "reason": trigger},
        error_class=error_class,
    )


def _blocked(
    c: Candidate, guard: str, action: str, trigger: str, error_class: str | None, detail: Mapping[str, Any]
) -> Verdict:
    return Verdict(
        id=c.id,
        action=action,
        kind="fallback_blocked",
        guard=guard,
        hold_reason=guard if action == "hold" else None,
        error_class=error_class,
        detail={**detail, "reason": trigger, "guard": guard, "action": action},
    )


# ---- input checks shared by the API and the CLI ----------------------------------------------------------
def normalize_number(raw: str) -> str | None:
    """ "+65 9123-4567" → "6591234567"; None when it is not 8 to 15 digits (after an optional '+')."""
    text = raw.strip().removeprefix("+").replace(" ", "").replace("-", "")
    return text if text.isascii() and text.isdigit() and 8 <= len(text) <= 15 else None


def parse_number_list(text: str) -> tuple[list[str], list[tuple[int, str]]]:
    """Numbers from a newline or CSV body (the first column; '#' comments, blank lines and a header skipped).

    Returns (numbers in order without duplicates, [(line number, problem)]).
    """
    numbers: dict[str, None] = {}
    problems: list[tuple[int, str]] = []
    for index, line in enumerate(text.splitlines(), start=1):
        cell = line.split(",", 1)[0].strip().strip('"').strip()
        if not cell or cell.startswith("#"):
            continue
        number = normalize_number(cell)
        if number is None:
            if index == 1 and not any(ch.isdigit() for ch in cell):
                continue  # a header row ("number,reason")
            problems.append((index, "not a phone number (8 to 15 digits, optionally after '+')"))
            continue
        numbers[number] = None
    return list(numbers), problems


# ---- the database side -----------------------------------------------------------------------------------
def _candidate(r: Any) -> Candidate:
    code = (
        r["receipt_error"]
        if r["fire_reason"] == "failed_receipt"
        else errorclasses.chat_code(r["last_error"])
    )
    return Candidate(
        id=r["id"],
        to=r["to_number"],
        space=r["space"],
        fire_reason=r["fire_reason"],
        urgent=r["urgent"],
        gated=r["gated"],
        opted_out=r["opted_out"],
        error_code=code,
    )


class GuardStore:
    """Guarded claims, opt-outs and budgets over Postgres (queries in sql_files/queries/guards.sql)."""

    def __init__(self, db: store.Store, config: GuardConfig | None = None) -> None:
        self.db = db
        self.config = config or GuardConfig()

    async def claim_due(self, limit: int, lease_s: float) -> list[Any]:
        """Lock due fallbacks, check the guards, write the verdicts: one transaction.

        Returns the rows that fired or were held (the columns `attempts._fallback_sms` reads).
        """
        async with self.db.transaction() as conn:
            rows = await conn.fetch(Q["claim_due_fallbacks"], limit, self.config.budget_tz)
            if not rows:
                return []
            candidates = [_candidate(r) for r in rows]
            now = dt.datetime.fromtimestamp(rows[0]["now"], dt.UTC)
            day = rows[0]["budget_day"]
            spaces = sorted({c.space for c in candidates if c.space})
            # No budget at all (the common case): nothing to lock, one round trip fewer per claim.
            budget_rows = (
                await conn.fetch(Q["lock_budget_usage"], sorted({c.to for c in candidates}), spaces, day)
                if rows[0]["budgeted"]
                else []
            )
            budgets = [
                Budget(scope=b["scope"], key=b["key"], limit=b["daily_limit"], used=b["used"])
                for b in budget_rows
            ]
            verdicts, spent = decide(candidates, budgets, self.config, now)
            keys = sorted(spent)
            out = await conn.fetch(
                Q["apply_guard_verdicts"],
                [v.id for v in verdicts],
                [v.action for v in verdicts],
                [v.hold_reason for v in verdicts],
                [v.until for v in verdicts],
                [v.kind for v in verdicts],
                [dict(v.detail) for v in verdicts],
                lease_s,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [spent[k] for k in keys],
                day,
            )
        _count(verdicts)
        return out

    # ---- opt-outs ----
    async def add_opt_outs(
        self, numbers: Sequence[str], *, source: str, reason: str | None
    ) -> tuple[int, int]:
        """Add numbers (already normalised); returns (added, already listed)."""
        added = await self.db.fetchval(Q["add_opt_outs"], list(numbers), source, reason)
        return int(added), len(numbers) - int(added)

    async def remove_opt_out(self, number: str) -> bool:
        return await self.db.fetchval(Q["remove_opt_out"], number) is not None

    async def list_opt_outs(
        self, *, number: str | None, limit: int, after: tuple[dt.datetime, str] | None
    ) -> list[Mapping[str, Any]]:
        rows = await self.db.fetch(
            Q["list_opt_outs"],
            number,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [dict(r) for r in rows]

    # ---- budgets ----
    async def set_budget(
        self, scope: str, key: str, daily_limit: int, actor: str | None
    ) -> Mapping[str, Any]:
        row = await self.db.fetchrow(Q["set_budget"], scope, key, daily_limit, actor, self.config.budget_tz)
        assert row is not None
        return dict(row)

    async def delete_budget(self, scope: str, key: str) -> bool:
        return await self.db.fetchval(Q["delete_budget"], scope, key) is not None

    async def list_budgets(self) -> tuple[dt.date, list[Mapping[str, Any]]]:
        rows = await self.db.fetch(Q["list_budgets"], self.config.budget_tz)
        day = await self.db.fetchval(Q["budget_day"], self.config.budget_tz)
        return day, [dict(r) for r in rows]


def _count(verdicts: Iterable[Verdict]) -> None:
    """Metrics after the commit (a rolled-back claim counts nothing)."""
    for v in verdicts:
        if v.action == "defer":
            metrics.guard_deferred.labels(v.guard or "unknown").inc()
            log.info("fallback_deferred", message_id=str(v.id), guard=v.guard, until=v.detail.get("until"))
            continue
        if v.error_class is not None:
            metrics.error_classes.labels(v.error_class).inc()
        if v.guard is not None:
            metrics.guard_blocked.labels(v.guard).inc()
            log.warning(
                "fallback_blocked",
                message_id=str(v.id),
                guard=v.guard,
                action=v.action,
                detail=dict(v.detail),
            )
