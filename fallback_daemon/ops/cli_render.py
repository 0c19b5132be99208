"""Human renderings of the operator API's JSON for the CLI: plain fixed-width tables and short summaries."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

EVENT_KEYS = frozenset({"at", "kind", "outcome", "actor", "reason", "action", "chat", "fallback"})
# Detail keys an operator reads first (a Failed receipt's error code above all); the rest follow as stored.
DETAIL_FIRST = ("error_code", "error", "status", "sms_status")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned table; empty string when there are no rows."""
    if not rows:
        return ""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def when(value: str | None) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS.mmm` (UTC as the API gives it)."""
    return "-" if not value else value.replace("T", " ")[:23]


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def counts(mapping: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "none"


def render_message(m: Mapping[str, Any]) -> str:
    """A message's state and its timeline."""
    fired = f", fired by {m['fire_reason']} at {when(m['fired_at'])}" if m.get("fired_at") else ""
    held = f", held: {m['hold_reason']}" if m.get("hold_reason") else ""
    task = f", TaskId {m['task_id']}" if m.get("task_id") else ""
    lines = [
        f"message   {m['id']}  ({m['channel']} → {m['to']}{task})",
        f"chat      {m['chat_state']}   (MessageId {m.get('provider_message_id') or '-'},"
        f" {m['send_attempts']} send attempt(s))",
        f"fallback  {m['fallback_state']}   (rule {m['fallback_rule']}, due {when(m.get('due_at'))}"
        f"{fired}{held},"
        f" SMS id {m.get('sms_id') or '-'})",
        f"created   {when(m['created_at'])}   sent {when(m.get('sent_at'))}",
    ]
    if m.get("double_delivered"):
        lines.append("NOTE      double delivered: the chat message succeeded after the SMS fired")
    if m.get("last_error"):
        lines.append(f"error     {m['last_error']}")
    rows = []
    for e in m["events"]:
        who = f"{e['actor']}: {e.get('reason') or '-'}" if e.get("actor") else ""
        rest = {k: v for k, v in e.items() if k not in EVENT_KEYS and v is not None}
        state = f"{e['chat']}/{e['fallback']}" if "chat" in e else ""
        rows.append([when(e["at"]), e["kind"], outcome(e.get("outcome", "")), state, who, detail(rest)])
    return (
        "\n".join(lines)
        + "\n\n"
        + table(["AT", "EVENT", "OUTCOME", "CHAT/FALLBACK", "WHO: WHY", "DETAIL"], rows)
    )


def outcome(value: str) -> str:
    """`receipt_stale` (a Sent report after the send answer, say) changed nothing: say so, not alarm."""
    return f"{value} (no change)" if value.endswith("_stale") else value


def detail(rest: Mapping[str, Any]) -> str:
    """The event's details as JSON, whole (never cut: a Failed receipt's error code must stay visible)."""
    ordered = {k: rest[k] for k in DETAIL_FIRST if k in rest} | dict(rest)
    return json.dumps(ordered, ensure_ascii=False)


def render_action(verb: str, done: Mapping[str, Any]) -> str:
    """One line for cancel / fire / redrive, in words: a fired fallback is due now, not "armed"."""
    mid, chat, fallback = done["id"], done["chat_state"], done["fallback_state"]
    if verb == "fire":
        return (
            f"fire: {mid}: the SMS fallback is due now and goes out within seconds (chat {chat});"
            f" `fallback-daemon status {mid}` shows when it is sent"
        )
    if verb == "cancel":
        return f"cancel: {mid}: the SMS fallback will not be sent (fallback {fallback}, chat {chat})"
    return f"redrive: {mid} → chat {chat}, fallback {fallback} ({done['outcome']})"


def render_held_preview(verb: str, count: int, groups: Sequence[Mapping[str, Any]], *, by_ids: bool) -> str:
    """What `held release|drop` would act on (a preview; nothing is done)."""
    lines = [f"held {verb} would act on {count} held fallback(s)" + (" (given by id)" if by_ids else "")]
    rows = [[str(g["reason"]), str(g["channel"]), str(g["count"]), ago(g.get("oldest_s"))] for g in groups]
    if rows and not by_ids:
        lines.append(table(["HOLD REASON", "CHANNEL", "HELD", "OLDEST"], rows))
    return "\n".join(lines)


def render_list(page: Mapping[str, Any]) -> str:
    rows = [
        [
            when(m["created_at"]),
            m["id"],
            m["to"],
            m["channel"],
            m["chat_state"],
            m["fallback_state"],
            m.get("fire_reason") or m.get("hold_reason") or "",
        ]
        for m in page["messages"]
    ]
    text = (
        table(["CREATED", "ID", "TO", "CHANNEL", "CHAT", "FALLBACK", "REASON"], rows) or "no message matches"
    )
    if page.get("next_cursor"):
        text += f"\nmore: add --cursor {page['next_cursor']}"
    return text


def render_stats(s: Mapping[str, Any]) -> str:
    m, f, t, p = s["messages"], s["fallbacks"], s["pending_timers"], s["pipeline"]
    out = [
        f"window             last {s['window_s']} s (at {when(s['generated_at'])})",
        f"messages created   {m['total']}",
        f"  by chat state    {counts(m['by_chat_state'])}",
        f"  by fallback      {counts(m['by_fallback_state'])}",
        f"fallbacks fired    {f['fired']['total']}  by reason: {counts(f['fired']['by_reason'])}",
        f"  SMS              delivered {f['sms_delivered']}, failed {f['sms_failed']}",
        f"  double delivered {f['double_delivered']['total']}  {counts(f['double_delivered']['by_reason'])}",
        f"  suppressed       {f['suppressed']['total']}  {counts(f['suppressed']['by_reason'])}",
        f"pending timers     {t['total']}  " + " | ".join(f"{k} {v}" for k, v in t["buckets"].items()),
        f"held               {s['held']['total']}  {counts(s['held']['by_reason'])}"
        + "".join(
            f"\n  {h['reason']:<16} {h['channel']} {h['count']} (oldest {ago(h.get('oldest_s'))})"
            for h in s["held"].get("by_reason_channel", [])
        ),
        f"pipeline           waiting to send {p['queued_due']}"
        + (f" (oldest {ago(p['oldest_queued_s'])})" if p["oldest_queued_s"] else "")
        + f", retrying {p['queued_retry']}, sending {p['sending']} ({p['sending_stale']} past lease),"
        f" unknown {p['unknown']}, SMS firing {p['firing']} ({p['firing_stale']} past lease)",
    ]
    for c in s["sending"]:
        out.append(
            f"sends {c['channel']:<12} sent {c['sent']}, send_failed {c['send_failed']},"
            f" last sent {ago(c['since_last_sent_s'])}"
        )
    for e in s["errors"]:
        out.append(f"error x{e['count']:<5}     {e['error'][:100]}")
    feeds = [
        [
            r["source"],
            r["kind"],
            r["channel"],
            str(r["count"]),
            ago(r["since_last_s"]),
            _s(r["lag_p50_s"]),
            _s(r["lag_p99_s"]),
        ]
        for r in s["receipts"]["feeds"]
    ]
    out.append(f"\nreceipt feeds (newest {s['receipts']['sample_limit']} receipts in the window)")
    out.append(
        table(["SOURCE", "KIND", "CHANNEL", "RECEIPTS", "LAST", "LAG P50", "LAG P99"], feeds)
        or "  no receipts in the window"
    )
    gates = [
        [
            g["channel"],
            ago(g["since_last_s"]),
            "CLOSED (timer fallbacks held)" if g["gate_closed"] else "open",
        ]
        for g in s["feed_health"]
    ]
    if gates:
        out.append("\n" + table(["CHANNEL", "LAST RECEIPT", "HEALTH GATE"], gates))
    out.append(f"\ndead letters pending {s['dead_letters']['pending']}")
    return "\n".join(out)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"
