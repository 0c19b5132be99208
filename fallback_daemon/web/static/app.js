// The operator page: polls GET /v1/stats, searches GET /v1/messages, shows GET /v1/messages/{id}, and acts
// through the operator API (cancel, fire, redrive, held release/drop) after a confirmation dialog.
// Every value from the API is untrusted (it carries provider receipts): it is only ever set as textContent.
// Reads use the session cookie. Actions: a session signed in with a token that may act (GET /ui/session:
// can_act) sends the cookie with the session's X-CSRF-Token header; a read-only session asks for the operator
// token once and sends it as a bearer header, kept in this tab's memory only.
// Charts: GET /v1/stats/series (per-minute counts), drawn as inline SVG (no library; CSP allows none).
// All times are shown in UTC, 24-hour.
"use strict";

const CHAT_STATES = ["accepted", "sending", "unknown", "sent", "send_failed", "failed", "delivered", "read"];
const FALLBACK_STATES = ["none", "armed", "held", "firing", "sms_sent", "sms_delivered", "sms_failed",
  "cancelled", "suppressed"];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const PHONE_RE = /^\+?[0-9][0-9 ]{6,20}$/;
const $ = (id) => document.getElementById(id);
let nextCursor = null;
let lastQuery = null;
let operatorToken = null; // in memory only: never in storage, cookies or the address bar
let pendingAction = null;
let lastStats = null;
let session = null; // GET /ui/session: {role, can_act, operator_token, csrf_token}

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
  const held = s.held.by_reason_channel.map((h) => row([h.reason, h.channel, h.count, ago(h.oldest_s),
    heldButtons(h)], [2]));
  fill("held", held.length ? held : [row(["none held"])]);
  $("held-all").hidden = !s.held.total;
  renderGateAlarm(s.feed_health, s.held);

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
  $("updated").textContent = "updated " + utc(s.generated_at).slice(11, 19) + " UTC";
  lastStats = s;
  document.body.dataset.statsLoaded = "1";
}

// The health-gate alarm sits at the top of the page, above every card.
function renderGateAlarm(feedHealth, held) {
  const closed = feedHealth.filter((g) => g.gate_closed);
  const alarm = $("gate-alarm");
  alarm.replaceChildren();
  alarm.hidden = !closed.length;
  if (!closed.length) return;
  const feedDown = held.by_reason_channel.filter((h) => h.reason === "feed_down")
    .reduce((n, h) => n + h.count, 0);
  alarm.append(el("strong", "Receipt feed down: "),
    closed.map((g) => g.channel + " (last receipt " + ago(g.since_last_s) + ")").join(", "),
    el("span", ". Timer fallbacks on " + (closed.length > 1 ? "these channels" : "it") + " are held, not fired ("
      + feedDown + " held so far): release or drop them under “Pending fallback timers” once the feed is back."));
}

function button(label, onClick) {
  const b = el("button", label);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function heldButtons(h) {
  const where = h.reason + " on " + h.channel;
  const filter = { channel: h.channel, hold_reason: h.reason };
  const span = el("span", null, "actions");
  span.append(
    button("Release…", () => openAction({ title: "Release held fallbacks (" + where + ")", path: "/v1/held/release",
      body: filter, preview: h.count + " held fallback(s) will fire now: their SMS goes out.", count: h.count })),
    button("Drop…", () => openAction({ title: "Drop held fallbacks (" + where + ")", path: "/v1/held/drop",
      body: filter, preview: h.count + " held fallback(s) will never fire (fallback state suppressed).",
      count: h.count })));
  return span;
}

function bulkAll(verb) {
  const total = lastStats ? lastStats.held.total : 0;
  const what = verb === "release" ? "will fire now: their SMS goes out." : "will never fire (suppressed).";
  openAction({ title: (verb === "release" ? "Release" : "Drop") + " every held fallback",
    path: "/v1/held/" + verb, body: { all: true }, preview: total + " held fallback(s), all reasons and channels, "
      + what, count: total });
}

// ---- actions -----------------------------------------------------------------------------------------
function openAction(action) {
  pendingAction = action;
  $("action-title").textContent = action.title;
  $("action-preview").textContent = action.preview + (action.count !== undefined ? " Preview count: "
    + action.count + "." : "");
  $("action-preview").dataset.count = action.count === undefined ? "" : String(action.count);
  $("action-error").hidden = true;
  const needToken = operatorToken === null && !(session && session.can_act);
  $("action-token-label").hidden = !needToken;
  $("action-token").required = needToken;
  if (session) $("action-token-name").textContent = session.operator_token.join(" or ");
  $("action-dialog").showModal();
  $("action-reason").focus();
}

async function confirmAction(ev) {
  ev.preventDefault();
  const action = pendingAction;
  if (!action) return;
  const bySession = operatorToken === null && session && session.can_act;
  const token = operatorToken !== null ? operatorToken : $("action-token").value;
  const body = { ...action.body, actor: $("action-actor").value, reason: $("action-reason").value };
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (bySession) headers["X-CSRF-Token"] = session.csrf_token;
  else headers.Authorization = "Bearer " + token;
  $("action-confirm").disabled = true;
  try {
    const resp = await fetch(action.path, { method: "POST", credentials: bySession ? "same-origin" : "omit",
      headers, body: JSON.stringify(body) });
    const answer = await resp.json();
    if (resp.status === 401 || resp.status === 403) {
      operatorToken = null;
      $("action-token-label").hidden = false;
      $("action-token").required = true;
      const err = answer.error || {};
      throw new Error("refused: " + (err.message || resp.statusText));
    }
    if (!resp.ok) {
      const err = answer.error || {};
      throw new Error((err.field ? err.field + ": " : "") + (err.message || resp.statusText));
    }
    if (!bySession) operatorToken = token;
    $("action-dialog").close();
    $("action-token").value = "";
    $("action-reason").value = "";
    pendingAction = null;
    showResult(action, answer);
    await refreshStats();
    if (document.body.dataset.timeline) await showTimeline(document.body.dataset.timeline);
  } catch (e) {
    $("action-error").textContent = e.message;
    $("action-error").hidden = false;
  } finally {
    $("action-confirm").disabled = false;
  }
}

function showResult(action, answer) {
  let text;
  if (answer.matched !== undefined) {
    text = action.title + ": " + answer.done + " of " + answer.matched + " done (" + answer.refused + " refused"
      + (answer.more ? "; more remain: run it again" : "") + ").";
  } else {
    text = action.title + ": " + answer.outcome + " (chat " + answer.chat_state + ", fallback "
      + answer.fallback_state + ").";
  }
  $("action-result").textContent = text;
  $("action-result").hidden = false;
  document.body.dataset.lastAction = answer.outcome || "held";
}

function messageButtons(m) {
  const box = $("message-actions");
  box.replaceChildren();
  const pending = m.fallback_state === "armed" || m.fallback_state === "held";
  const stuck = ["sending", "unknown"].includes(m.chat_state) || m.fallback_state === "firing";
  const path = (verb) => "/v1/messages/" + encodeURIComponent(m.id) + "/" + verb;
  if (pending) {
    box.append(button("Cancel fallback…", () => openAction({ title: "Cancel the fallback of " + m.id,
      path: path("cancel"), body: {}, preview: "The SMS fallback will never be sent." })));
    box.append(button("Fire now…", () => openAction({ title: "Fire the fallback of " + m.id, path: path("fire"),
      body: {}, preview: "The SMS fallback goes out now, without waiting for its timer." })));
  }
  if (stuck) {
    box.append(button("Re-drive…", () => openAction({ title: "Re-drive " + m.id, path: path("redrive"), body: {},
      preview: "A stuck send is sent again (only if CAMS did not take it), a stuck SMS is fired again." })));
  }
}

async function refreshStats() {
  try {
    renderStats(await api("/v1/stats?window=" + encodeURIComponent($("window").value)));
    problem("");
  } catch (e) {
    problem("stats: " + e.message);
  }
}

// ---- charts -----------------------------------------------------------------------------------------
const CHART_SERIES = ["sent", "delivered", "read", "fired", "sms_sent", "sms_delivered"];
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function renderSeries(body) {
  const channel = $("chart-channel").value;
  const known = Object.keys(body.channels);
  const select = $("chart-channel");
  const have = [...select.options].map((o) => o.value);
  for (const c of known) if (!have.includes(c)) { const o = el("option", c); o.value = c; select.append(o); }
  const data = channel && body.channels[channel] ? body.channels[channel] : body.total;
  const W = 640, H = 150, L = 40, B = 18;
  const n = body.minutes;
  const max = Math.max(1, ...CHART_SERIES.flatMap((s) => data[s]));
  const x = (i) => L + (n > 1 ? i * (W - L - 4) / (n - 1) : 0);
  const y = (v) => 4 + (H - B - 4) * (1 - v / max);
  const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", class: "chart",
    "aria-label": "per-minute counts" });
  chart.append(svg("line", { x1: L, y1: y(0), x2: W - 4, y2: y(0), class: "axis" }),
    svg("text", { x: L - 4, y: y(max) + 8, "text-anchor": "end", class: "tick" }, max),
    svg("text", { x: L - 4, y: y(0), "text-anchor": "end", class: "tick" }, 0));
  const start = new Date(body.from).getTime();
  for (const [i, anchor] of [[0, "start"], [Math.floor((n - 1) / 2), "middle"], [n - 1, "end"]]) {
    const label = new Date(start + i * 60000).toISOString().slice(11, 16);
    chart.append(svg("text", { x: x(i), y: H - 4, "text-anchor": anchor, class: "tick" }, label));
  }
  for (const s of CHART_SERIES) {
    const points = data[s].map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
    chart.append(svg("polyline", { points, class: "line s-" + s, "data-series": s,
      "data-total": data[s].reduce((a, b) => a + b, 0) }));
  }
  const legend = el("p", null, "legend");
  for (const s of CHART_SERIES) {
    const total = data[s].reduce((a, b) => a + b, 0);
    legend.append(el("span", s + " " + total, "key s-" + s));
  }
  $("chart").replaceChildren(chart, legend);
  document.body.dataset.chartLoaded = "1";
}

async function refreshSeries() {
  try {
    renderSeries(await api("/v1/stats/series?window=" + encodeURIComponent($("chart-window").value)));
  } catch (e) {
    problem("charts: " + e.message);
  }
}

async function loadSession() {
  try {
    session = await api("/ui/session");
    $("role").textContent = "signed in with " + session.signed_in_with + (session.can_act ? " (may act)"
      : " (read-only: actions ask for " + session.operator_token.join(" or ") + ")");
  } catch (e) {
    problem("session: " + e.message);
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
      // A `*_stale` outcome changed nothing (e.g. a Sent report after the send answer): say so, not alarm.
      const outcome = (e.outcome || "") + (e.outcome && e.outcome.endsWith("_stale") ? " (no change)" : "");
      return row([utc(e.at), e.kind, outcome, state, who, el("span", JSON.stringify(rest), "detail")]);
    }));
    messageButtons(m);
    $("timeline").hidden = false;
    document.body.dataset.timeline = m.id;
    document.body.dataset.events = String(m.events.length);
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
$("action-form").addEventListener("submit", confirmAction);
$("action-back").addEventListener("click", () => { pendingAction = null; $("action-dialog").close(); });
$("release-all").addEventListener("click", () => bulkAll("release"));
$("drop-all").addEventListener("click", () => bulkAll("drop"));
window.addEventListener("hashchange", onHash);
$("chart-window").addEventListener("change", refreshSeries);
$("chart-channel").addEventListener("change", refreshSeries);
loadSession();
refreshStats();
refreshSeries();
setInterval(refreshStats, 5000);
setInterval(refreshSeries, 15000);
onHash();
