"""Duration advice (GET /v1/stats/latency, `fallback-daemon stats latency`; issue 12).

A `FallBackDuration` that is too short sends the SMS for a chat message that is then delivered anyway: two
messages, two bills (`double_delivered`). From the stored receipts this module answers, per channel and
country calling code (or one `prefix`): how long chat messages take to be delivered and read, how often each
duration in use led to a double delivery, and which duration keeps double deliveries under a target rate.

Definitions (docs/operations.md "How long should FallBackDuration be?" has a worked example):

- A sample is a message *sent* (CAMS took it) in the window; its times are those of the first `Delivered`
  (or `Read`, which implies it) and the first `Read` receipt *as it reached the daemon* (`received_at`):
  the timer races the receipt's arrival, not the handset.
- `sent_to_delivered` / `sent_to_read`: those times from `sent_at`; nearest-rank percentiles (p50 is the
  smallest time at least half the samples are at or under) and a histogram by upper edge (`le`, seconds;
  the last bucket is open).
- The timer starts at *acceptance* (`due_at = created_at + FallBackDuration`), so the advice measures from
  there: with a duration D a message is delivered twice when its success arrives later than D after it was
  accepted. `predicted_rate(D)` = (samples whose success came later than D) / (all samples), the success
  being a delivery for rule `undelivered` and a read for `unread`. A message never delivered counts in the
  denominator only (its SMS is the wanted fallback, not a double).
- `needed_s`: the smallest time D for which at most floor(target * samples) successes came later; it is one
  of the observed times. `suggested_duration_s` rounds it up to whole seconds inside FallBackDuration's
  range (60 … 43200); `reachable` is false when even 43200 s leaves more than the target.
- `double_delivery_by_duration`: what really happened, for messages with a timer fallback, by the duration
  they were sent with (`from_s` ≤ FallBackDuration < `to_s`).

With the sandbox's `FALLBACK_SANDBOX_TIMER_SCALE` (demo only) a duration D runs as D * scale: the advice
divides by it, so it is in FallBackDuration units either way.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

from fallback_daemon.db import sql, store

LATENCY_EDGES: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)
DURATION_EDGES: tuple[int, ...] = (60, 120, 300, 600, 1800, 3600, 43201)  # [60,120) … [3600,43200]
CANDIDATES: tuple[int, ...] = (60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200)
DURATION_MIN, DURATION_MAX = 60, 43200  # validation.DURATION_RANGE
TARGET_DEFAULT = 0.01
WINDOW_DEFAULT, WINDOW_MAX = 7 * 86400, 90 * 86400
SAMPLE_LIMIT = 100_000  # newest sent messages read per answer (`sampled` says how many were)
RULES = ("undelivered", "unread")

# ITU-T E.164 country calling codes of two digits; the others have 1 (1: NANP, 7: Russia/Kazakhstan) or 3.
_TWO_DIGIT = frozenset(
    [
        "20",
        "27",
        "30",
        "31",
        "32",
        "33",
        "34",
        "36",
        "39",
        "40",
        "41",
        "43",
        "44",
        "45",
        "46",
        "47",
        "48",
        "49",
        "51",
        "52",
        "53",
        "54",
        "55",
        "56",
        "57",
        "58",
        "60",
        "61",
        "62",
        "63",
        "64",
        "65",
        "66",
        "81",
        "82",
        "84",
        "86",
        "90",
        "91",
        "92",
        "93",
        "94",
        "95",
        "98",
    ]
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sample:
    """One sent message, its times in seconds after it was accepted (None: no such receipt)."""

    channel: str
    to: str
    sent_s: float
    delivered_s: float | None  # first Delivered or Read receipt
    read_s: float | None  # first Read receipt
    timer_duration_s: int | None  # FallBackDuration of a timer fallback (None: no timer fallback)
    double_delivered: bool = False


def country_code(number: str) -> str:
    """The E.164 country calling code a number starts with: 6591234567 → 65, 14155550100 → 1, 971… → 971."""
    digits = number.lstrip("+")
    if digits[:1] in ("1", "7"):
        return digits[:1]
    if digits[:2] in _TWO_DIGIT:
        return digits[:2]
    return digits[:3]


def nearest_rank(ordered: Sequence[float], p: float) -> float | None:
    """The p-quantile by nearest rank: the smallest value with at least p of the values at or under it."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def distribution(values: Iterable[float]) -> dict[str, Any]:
    """Count, p50/p90/p99/max (nearest rank) and a histogram by upper edge of `values` (seconds)."""
    ordered = sorted(values)
    counts = [0] * (len(LATENCY_EDGES) + 1)
    for v in ordered:
        counts[bisect.bisect_left(LATENCY_EDGES, v)] += 1  # the first edge >= v; past the last: open bucket
    edges: list[float | None] = [*LATENCY_EDGES, None]
    return {
        "count": len(ordered),
        "p50_s": _r(nearest_rank(ordered, 0.5)),
        "p90_s": _r(nearest_rank(ordered, 0.9)),
        "p99_s": _r(nearest_rank(ordered, 0.99)),
        "max_s": _r(ordered[-1]) if ordered else None,
        "histogram": [{"le_s": e, "count": c} for e, c in zip(edges, counts, strict=True)],
    }


def needed_time(successes: Sequence[float], population: int, target: float) -> float:
    """The smallest time D (seconds after acceptance) with at most floor(target * population) of the
    `successes` later than D: one of the observed times, or 0 when there are not that many successes."""
    allowed = math.floor(target * population + 1e-9)  # 1e-9: 0.01 * 300 is 3, not 2.9999…
    ordered = sorted(successes)  # timsort: O(n) on the already sorted lists of analyse()
    if len(ordered) <= allowed:
        return 0.0
    return ordered[len(ordered) - allowed - 1]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _success(sample: Sample, rule: str) -> float | None:
    return sample.delivered_s if rule == "undelivered" else sample.read_s


def _later(ordered: Sequence[float], limit: float) -> int:
    """How many of the sorted values are greater than `limit`."""
    return len(ordered) - bisect.bisect_right(ordered, limit)


def _successes(samples: Sequence[Sample]) -> dict[str, list[float]]:
    """Per rule, the sorted times after acceptance of the successes (delivery; read)."""
    return {rule: sorted(t for s in samples if (t := _success(s, rule)) is not None) for rule in RULES}


def _advice(
    samples: Sequence[Sample], successes: dict[str, list[float]], target: float, scale: float
) -> dict[str, Any]:
    out: dict[str, Any] = {"target": target}
    n = len(samples)
    for rule in RULES:
        needed = needed_time(successes[rule], n, target) / scale  # in FallBackDuration units
        suggested = min(DURATION_MAX, max(DURATION_MIN, math.ceil(round(needed, 6))))
        late = _later(successes[rule], suggested * scale)
        out[rule] = {
            "needed_s": _r(needed),
            "suggested_duration_s": suggested,
            "reachable": needed <= DURATION_MAX,
            "predicted_rate": _r(late / n) if n else None,
        }
    return out


def _by_duration(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    counts = [[0, 0] for _ in DURATION_EDGES]  # per bucket: messages, double deliveries
    for s in samples:
        d = s.timer_duration_s
        if d is not None and DURATION_EDGES[0] <= d < DURATION_EDGES[-1]:
            bucket = counts[bisect.bisect_right(DURATION_EDGES, d) - 1]
            bucket[0] += 1
            bucket[1] += s.double_delivered
    return [
        {
            "from_s": lo,
            "to_s": min(hi, DURATION_MAX),
            "messages": n,
            "double_delivered": doubles,
            "rate": _r(doubles / n),
        }
        for (lo, hi), (n, doubles) in zip(itertools.pairwise(DURATION_EDGES), counts, strict=False)
        if n
    ]


def _predicted(n: int, successes: dict[str, list[float]], scale: float) -> list[dict[str, Any]]:
    rows = []
    for d in CANDIDATES:
        row: dict[str, Any] = {"duration_s": d}
        for rule in RULES:
            row[rule] = _r(_later(successes[rule], d * scale) / n) if n else None
        rows.append(row)
    return rows


def analyse(
    samples: Iterable[Sample], *, target: float, prefix: str | None = None, timer_scale: float = 1.0
) -> list[dict[str, Any]]:
    """One group per (channel, country code) — or per channel for one `prefix` — largest first."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.channel, prefix or country_code(s.to)), []).append(s)
    out = []
    for (channel, group_prefix), members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        successes = _successes(members)
        out.append(
            {
                "channel": channel,
                "prefix": group_prefix,
                "messages": len(members),
                "sent_to_delivered": distribution(
                    max(0.0, s.delivered_s - s.sent_s) for s in members if s.delivered_s is not None
                ),
                "sent_to_read": distribution(
                    max(0.0, s.read_s - s.sent_s) for s in members if s.read_s is not None
                ),
                "double_delivery_by_duration": _by_duration(members),
                "predicted_rate_by_duration": _predicted(len(members), successes, timer_scale),
                "advice": _advice(members, successes, target, timer_scale),
            }
        )
    return out


def from_row(row: Any) -> Sample:
    """A Sample from a `latency_samples` row."""
    return Sample(
        channel=row["channel"],
        to=row["to_number"],
        sent_s=row["sent_s"],
        delivered_s=row["delivered_s"],
        read_s=row["read_s"],
        timer_duration_s=row["fallback_duration_s"] if row["timed"] else None,
        double_delivered=row["double_delivered"],
    )


async def latency(
    db: store.Store,
    *,
    window_s: int,
    channel: str | None,
    prefix: str | None,
    target: float,
    timer_scale: float = 1.0,
    limit: int = SAMPLE_LIMIT,
) -> dict[str, Any]:
    """Everything GET /v1/stats/latency answers."""
    rows = await db.fetch(sql.queries["latency_samples"], float(window_s), channel, prefix, limit)
    body: dict[str, Any] = {
        "window_s": window_s,
        "target": target,
        "channel": channel,
        "prefix": prefix,
        "sampled": len(rows),
        "sample_limit": limit,
        "groups": analyse((from_row(r) for r in rows), target=target, prefix=prefix, timer_scale=timer_scale),
    }
    if timer_scale != 1.0:
        body["timer_scale"] = timer_scale
    return body


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f} %"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


def render(body: dict[str, Any]) -> str:
    """The human text of `fallback-daemon stats latency`."""
    days = body["window_s"] / 86400
    lines = [
        f"latency and FallBackDuration advice: {body['sampled']} sent message(s) in the last"
        f" {days:g} day(s), target double-delivery rate {_pct(body['target'])}"
    ]
    if body.get("timer_scale"):
        lines.append(
            f"(sandbox timer scale {body['timer_scale']:g}: durations are in FallBackDuration units)"
        )
    if not body["groups"]:
        lines.append("no sent messages match")
    for g in body["groups"]:
        lines.append("")
        lines.append(f"{g['channel']} +{g['prefix']}   {g['messages']} message(s)")
        for label, key in (("sent → delivered", "sent_to_delivered"), ("sent → read", "sent_to_read")):
            d = g[key]
            lines.append(
                f"  {label:<17} n {d['count']:<6} p50 {_secs(d['p50_s'])}  p90 {_secs(d['p90_s'])}"
                f"  p99 {_secs(d['p99_s'])}  max {_secs(d['max_s'])}"
            )
        for row in g["double_delivery_by_duration"]:
            lines.append(
                f"  FallBackDuration {row['from_s']}-{row['to_s']} s: {row['double_delivered']} of"
                f" {row['messages']} double delivered ({_pct(row['rate'])})"
            )
        for rule in RULES:
            a = g["advice"][rule]
            verdict = f"FallBackDuration {a['suggested_duration_s']} s"
            if not a["reachable"]:
                verdict += " (the maximum; the target is not reachable)"
            lines.append(
                f"  advice, rule {rule + ':':<12} {verdict}  (needed {_secs(a['needed_s'])},"
                f" predicted {_pct(a['predicted_rate'])})"
            )
    return "\n".join(lines)
