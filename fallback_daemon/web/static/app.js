// The operator page: polls GET /v1/stats, searches GET /v1/messages, shows GET /v1/messages/{id}.
// Every value from the API is untrusted (it carries provider receipts): it is only ever set as textContent.
"use strict";

const CHAT_STATES = ["accepted", "sending", "unknown", "sent", "send_failed", "failed", "delivered", "read"];
const FALLBACK_STATES = ["none", "armed", "held", "firing", "sms_sent", "sms_delivered", "sms_failed",
  "cancelled", "suppressed"];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const PHONE_RE = /^\+?[0-9][0-9 ]{6,20}$/;
const $ = (id) => document.getElementById(id);
let nextCursor = null;
let lastQuery = null;

async function api(path) {
  const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (resp.status === 401) {
    location.assign("/ui/login");
    throw new Error("signed out");
  }
  const body = await resp.json();
  if (!resp.ok) {
    const err = body.error || {};
    throw new Error((err.field ? err.field + ": " : "") + (err.message || resp.statusText));
  }
  return body;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells, numeric) {
  const tr = document.createElement("tr");
  cells.forEach((cell, i) => {
    const td = cell instanceof Node ? (() => { const t = el("td"); t.append(cell); return t; })()
      : el("td", cell, numeric && numeric.includes(i) ? "n" : "");
    tr.append(td);
  });
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  return (seconds / 3600).toFixed(1) + " h ago";
}

function utc(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 23) : "–";
}

function secs(value) {
  return value === null || value === undefined ? "–" : value.toFixed(2) + " s";
}

function problem(text) {
  $("problem").textContent = text || "";
  $("problem").hidden = !text;
}

// ---- stats ------------------------------------------------------------------------------------------
function renderStats(s) {
  const m = s.messages;
  fill("chat-states", [
    ...Object.entries(m.by_chat_state).map(([k, v]) => row([k, v], [1])),
    row([el("strong", "total"), el("strong", m.total)], [1]),
  ]);
  fill("fallback-states", Object.entries(m.by_fallback_state).map(([k, v]) => row([k, v], [1])));
  const f = s.fallbacks;
  fill("fallbacks", [
    row([el("strong", "fired"), el("strong", f.fired.total)], [1]),
    ...Object.entries(f.fired.by_reason).map(([k, v]) => row(["  by " + k, v], [1])),
    row(["SMS delivered", f.sms_delivered], [1]),
    row(["SMS failed", f.sms_failed], [1]),
    row(["double delivered", f.double_delivered.total], [1]),
    row(["suppressed", f.suppressed.total], [1]),
    ...Object.entries(f.suppressed.by_reason).map(([k, v]) => row(["  by " + k, v], [1])),
  ]);

  const buckets = s.pending_timers.buckets;
  const max = Math.max(1, ...Object.values(buckets));
  const hist = $("histogram");
  hist.replaceChildren();
  for (const [label, count] of Object.entries(buckets)) {
    const bar = el("div", null, "bar" + (label === "overdue" ? " overdue" : ""));
    bar.style.width = (100 * count / max) + "%";
    const wrap = el("div");
    wrap.append(bar);
    hist.append(el("span", label), wrap, el("span", count, "n"));
  }
  const held = s.held.by_reason_channel.map((h) => row([h.reason, h.channel, h.count, ago(h.oldest_s)], [2]));
  fill("held", held.length ? held : [row(["none held"])]);

  const p = s.pipeline;
  fill("pipeline", [
    row(["waiting to send", p.queued_due, p.oldest_queued_s ? "oldest " + ago(p.oldest_queued_s) : ""], [1]),
    row(["waiting to retry", p.queued_retry], [1]),
    row(["sending", p.sending, p.sending_stale ? p.sending_stale + " past lease" : ""], [1]),
    row(["send outcome unknown", p.unknown], [1]),
    row(["SMS firing", p.firing, p.firing_stale ? p.firing_stale + " past lease" : ""], [1]),
  ]);
  fill("errors", s.errors.length ? s.errors.map((e) => row([e.error, e.count], [1])) : [row(["no errors"])]);

  const feeds = s.receipts.feeds.map((r) => row([r.source, r.kind, r.channel, r.count, ago(r.since_last_s),
    secs(r.lag_p50_s), secs(r.lag_p99_s)], [3]));
  fill("feed-table", feeds.length ? feeds : [row(["no receipts in the window"])]);
  const gates = s.feed_health.map((g) => row([g.channel, ago(g.since_last_s),
    el("span", g.gate_closed ? "CLOSED: timer fallbacks held" : "open", g.gate_closed ? "bad" : "ok")]));
  fill("gate-table", gates.length ? gates : [row(["no channel health recorded yet"])]);
  $("dead-letters").textContent = s.dead_letters.pending + " dead-lettered receipt(s) waiting for replay";
  $("updated").textContent = "updated " + new Date(s.generated_at).toLocaleTimeString();
  document.body.dataset.statsLoaded = "1";
}

async function refreshStats() {
  try {
    renderStats(await api("/v1/stats?window=" + encodeURIComponent($("window").value)));
    problem("");
  } catch (e) {
    problem("stats: " + e.message);
  }
}

// ---- search -----------------------------------------------------------------------------------------
function searchParams() {
  const q = $("q").value.trim();
  const params = new URLSearchParams();
  if (UUID_RE.test(q)) params.set("id", q);
  else if (PHONE_RE.test(q)) params.set("to", q.replace(/[ +]/g, ""));
  else if (q) params.set("provider_message_id", q);
  if ($("chat-state").value) params.set("chat_state", $("chat-state").value);
  if ($("fallback-state").value) params.set("fallback_state", $("fallback-state").value);
  return params;
}

function renderResults(page, append) {
  const rows = page.messages.map((m) => {
    const link = el("a", m.id, "mono");
    link.href = "#m=" + m.id;
    return row([utc(m.created_at), m.to, m.channel, m.chat_state, m.fallback_state, link]);
  });
  const body = $("results").tBodies[0];
  if (append) body.append(...rows);
  else body.replaceChildren(...(rows.length ? rows : [row(["no match"])]));
  nextCursor = page.next_cursor;
  $("more").hidden = !nextCursor;
}

async function search(append) {
  try {
    let params = append ? new URLSearchParams(lastQuery) : searchParams();
    if (append) params.set("cursor", nextCursor);
    let page = await api("/v1/messages?" + params);
    if (!append && !page.messages.length && params.has("provider_message_id")) {
      // Not a CAMS MessageId: maybe the client's own TaskId.
      params.set("task_id", params.get("provider_message_id"));
      params.delete("provider_message_id");
      page = await api("/v1/messages?" + params);
    }
    params.delete("cursor");
    lastQuery = params.toString();
    renderResults(page, append);
    if (!append && page.messages.length === 1) location.hash = "m=" + page.messages[0].id;
    problem("");
  } catch (e) {
    problem("search: " + e.message);
  }
}

// ---- timeline ----------------------------------------------------------------------------------------
const FIELDS = ["channel", "to", "task_id", "chat_state", "fallback_state", "fallback_rule", "fallback_duration_s",
  "provider_message_id", "sms_id", "due_at", "fire_reason", "hold_reason", "double_delivered", "last_error",
  "created_at", "sent_at", "fired_at"];
const EVENT_KEYS = new Set(["at", "kind", "outcome", "actor", "reason", "action", "chat", "fallback"]);
const TIME_FIELDS = new Set(["due_at", "created_at", "sent_at", "fired_at"]);

async function showTimeline(id) {
  try {
    const m = await api("/v1/messages/" + encodeURIComponent(id));
    $("timeline-id").textContent = m.id;
    const dl = $("message-fields");
    dl.replaceChildren();
    for (const key of FIELDS) {
      if (m[key] === null || m[key] === undefined) continue;
      dl.append(el("dt", key), el("dd", TIME_FIELDS.has(key) ? utc(m[key]) + " UTC" : m[key]));
    }
    fill("events", m.events.map((e) => {
      const who = e.actor ? e.actor + (e.reason ? ": " + e.reason : "") : "";
      const rest = Object.fromEntries(Object.entries(e).filter(([k]) => !EVENT_KEYS.has(k)));
      const state = e.chat ? e.chat + " / " + e.fallback : "";
      return row([utc(e.at), e.kind, e.outcome || "", state, who, el("span", JSON.stringify(rest), "detail")]);
    }));
    $("timeline").hidden = false;
    document.body.dataset.timeline = m.id;
    problem("");
  } catch (e) {
    problem("timeline: " + e.message);
  }
}

function onHash() {
  const match = /^#m=([0-9a-f-]{36})$/i.exec(location.hash);
  if (match) showTimeline(match[1]);
}

// ---- start -------------------------------------------------------------------------------------------
for (const [id, states] of [["chat-state", CHAT_STATES], ["fallback-state", FALLBACK_STATES]]) {
  for (const s of states) {
    const opt = el("option", s);
    opt.value = s;
    $(id).append(opt);
  }
}
$("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); search(false); });
$("more").addEventListener("click", () => search(true));
$("window").addEventListener("change", refreshStats);
window.addEventListener("hashchange", onHash);
refreshStats();
setInterval(refreshStats, 5000);
onHash();
