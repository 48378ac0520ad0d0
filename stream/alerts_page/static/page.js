// The live alerts page. Plain DOM, no framework and no build step: the list comes from
// GET /api/alerts, new alerts and verdicts from the Server-Sent Events at /api/events.
// Alert text is written by strangers (an email's subject), so it is only ever set with
// textContent, never as HTML.
"use strict";

const state = {
  alerts: new Map(),          // alert_id -> alert JSON (with .review)
  selected: null,             // alert_id shown in the detail panel
  token: sessionStorage.getItem("reviewerToken") || "",
  reviewer: null,
  reviewsEnabled: false,
};
const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const error = new Error((body && body.error) || response.status + " " + response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

// ---- filters: the same fields the server's /api/alerts understands ------------------
function filters() {
  const win = $("filter-window").value;
  return {
    kind: $("filter-kind").value,
    decision: $("filter-decision").value,
    since: win ? new Date(Date.now() - Number(win) * 1000).toISOString() : "",
    status: $("filter-status").value,
  };
}

function matches(alert, f) {
  if (f.kind && alert.kind !== f.kind) return false;
  if (f.decision && alert.decision !== f.decision) return false;
  if (f.since && new Date(alert.scored_at) < new Date(f.since)) return false;
  if (f.status === "open" && alert.review) return false;
  if (f.status === "reviewed" && !alert.review) return false;
  return true;
}

async function reload() {
  const f = filters();
  const query = new URLSearchParams(Object.entries(f).filter(([, v]) => v));
  try {
    const body = await api("/api/alerts?" + query);
    state.alerts = new Map(body.alerts.map((a) => [a.alert_id, a]));
    render();
    showMessage("");
  } catch (error) {
    showMessage("Could not load alerts: " + error.message);
  }
}

// ---- the table ------------------------------------------------------------------------
function time(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function statusBadge(alert) {
  if (!alert.review) return el("span", "open", "badge open");
  const text = alert.review.verdict === "confirmed" ? "confirmed" : "false positive";
  const badge = el("span", text, "badge " + alert.review.verdict);
  badge.title = "by " + alert.review.reviewer + " at " + alert.review.reviewed_at;
  return badge;
}

function row(alert, isNew) {
  const tr = el("tr");
  tr.dataset.alertId = alert.alert_id;
  if (isNew) tr.classList.add("new");
  if (alert.alert_id === state.selected) tr.classList.add("selected");
  tr.append(
    el("td", time(alert.scored_at)),
    el("td", alert.kind),
  );
  const decision = el("td");
  decision.append(el("span", alert.decision, "badge " + alert.decision));
  const status = el("td");
  status.className = "review-cell";
  status.append(statusBadge(alert));
  tr.append(decision, el("td", alert.score.toFixed(3), "num"), el("td", alert.summary, "summary"), status);
  tr.addEventListener("click", () => select(alert.alert_id));
  return tr;
}

function sortedAlerts() {
  return [...state.alerts.values()].sort((a, b) => (a.scored_at < b.scored_at ? 1 : -1));
}

function render() {
  const body = $("alerts").tBodies[0];
  body.replaceChildren(...sortedAlerts().map((a) => row(a, false)));
  $("count").textContent = state.alerts.size + " alert" + (state.alerts.size === 1 ? "" : "s");
  renderDetail();
}

function arrive(alert) {
  if (!matches(alert, filters()) || state.alerts.has(alert.alert_id)) return;
  state.alerts.set(alert.alert_id, alert);
  $("alerts").tBodies[0].prepend(row(alert, true));
  $("count").textContent = state.alerts.size + " alerts";
}

function reviewed(alert) {
  const known = state.alerts.get(alert.alert_id);
  if (!known) return;
  known.review = alert.review;
  if (!matches(known, filters())) {
    state.alerts.delete(alert.alert_id);
    render();
    return;
  }
  const tr = document.querySelector(`tr[data-alert-id="${CSS.escape(alert.alert_id)}"]`);
  if (tr) tr.querySelector(".review-cell").replaceChildren(statusBadge(known));
  if (state.selected === alert.alert_id) renderDetail();
}

// ---- the detail panel -------------------------------------------------------------------
function select(alertId) {
  state.selected = alertId;
  document.querySelectorAll("#alerts tr.selected").forEach((tr) => tr.classList.remove("selected"));
  const tr = document.querySelector(`tr[data-alert-id="${CSS.escape(alertId)}"]`);
  if (tr) tr.classList.add("selected");
  renderDetail();
}

function fact(dl, name, value) {
  dl.append(el("dt", name), el("dd", value));
}

function renderDetail() {
  const alert = state.selected && state.alerts.get(state.selected);
  const panel = $("detail");
  panel.hidden = !alert;
  if (!alert) return;
  $("detail-title").textContent = alert.alert_id;
  $("detail-summary").textContent = alert.summary;
  const dl = $("detail-facts");
  dl.replaceChildren();
  fact(dl, "decision", alert.decision);
  fact(dl, "score", alert.score.toFixed(4));
  fact(dl, "online score", alert.online_score.toFixed(4) + "  (" + alert.model_version + ")");
  fact(dl, "batch score", alert.batch_score === null ? "no batch model" : alert.batch_score.toFixed(4) + "  (" + alert.batch_version + ")");
  fact(dl, "entity", alert.entity_id);
  fact(dl, "event time", alert.event_time);
  fact(dl, "raised", alert.scored_at);

  const reasons = $("detail-reasons").tBodies[0];
  const widest = Math.max(1e-9, ...alert.reasons.map((r) => Math.abs(r.contribution)));
  reasons.replaceChildren(...alert.reasons.map((r) => {
    const tr = el("tr");
    const push = el("td");
    const bar = el("span", null, "bar " + (r.contribution >= 0 ? "up" : "down"));
    bar.style.width = Math.round(90 * Math.abs(r.contribution) / widest) + "px";
    push.append(bar, document.createTextNode((r.contribution >= 0 ? "+" : "") + r.contribution.toFixed(3)));
    tr.append(el("td", r.feature), el("td", r.value.toFixed(3), "num"), push);
    return tr;
  }));

  const features = $("detail-features").tBodies[0];
  features.replaceChildren(...Object.entries(alert.features || {}).map(([name, value]) => {
    const tr = el("tr");
    tr.append(el("td", name), el("td", Number(value).toFixed(4), "num"));
    return tr;
  }));

  const done = alert.review;
  $("review-status").textContent = done
    ? `Marked ${done.verdict.replace("_", " ")} by ${done.reviewer} at ${done.reviewed_at}` + (done.note ? ` — “${done.note}”` : "")
    : "Open: nobody has marked this alert yet.";
  const canReview = Boolean(state.reviewer) && !done;
  $("mark-confirmed").disabled = !canReview;
  $("mark-false-positive").disabled = !canReview;
  $("review-note").disabled = !canReview;
  $("review-hint").textContent = done ? "" : !state.reviewsEnabled
    ? "Reviews are turned off on this server (read-only)."
    : !state.reviewer ? "Sign in with a reviewer token to mark this alert." : "Your verdict is published as a label: the model learns from it.";
}

async function mark(verdict) {
  const alertId = state.selected;
  const note = $("review-note").value;
  $("mark-confirmed").disabled = $("mark-false-positive").disabled = true;
  try {
    await api(`/api/alerts/${encodeURIComponent(alertId)}/review`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ verdict, note }),
    });
    $("review-note").value = "";
    showMessage("");
    // The verdict comes back on the event stream, like everyone else's.
  } catch (error) {
    showMessage("Could not mark the alert: " + error.message);
    renderDetail();
  }
}

// ---- signing in -----------------------------------------------------------------------------
async function signIn(token) {
  state.token = token;
  try {
    const body = await api("/api/whoami");
    state.reviewer = body.reviewer;
    sessionStorage.setItem("reviewerToken", token);
    showMessage("");
  } catch (error) {
    state.token = "";
    state.reviewer = null;
    sessionStorage.removeItem("reviewerToken");
    showMessage("Sign-in failed: " + error.message);
  }
  renderSession();
}

function renderSession() {
  $("sign-in-form").hidden = Boolean(state.reviewer) || !state.reviewsEnabled;
  $("whoami").hidden = !state.reviewer;
  $("sign-out").hidden = !state.reviewer;
  $("whoami").textContent = state.reviewer ? "Signed in as " + state.reviewer : "";
  renderDetail();
}

// ---- live updates ---------------------------------------------------------------------------
function connect() {
  const live = $("live-status");
  const source = new EventSource("/api/events");
  source.onopen = () => {
    live.textContent = "live";
    live.className = "status live";
    reload();  // after a reconnect: whatever was missed
  };
  source.onerror = () => {
    live.textContent = "reconnecting…";
    live.className = "status down";
  };
  source.addEventListener("alert", (e) => arrive(JSON.parse(e.data)));
  source.addEventListener("review", (e) => reviewed(JSON.parse(e.data)));
}

async function start() {
  for (const id of ["filter-kind", "filter-decision", "filter-window", "filter-status"]) {
    $(id).addEventListener("change", reload);
  }
  $("sign-in-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); $("token").value = ""; });
  $("sign-out").addEventListener("click", () => { state.token = ""; state.reviewer = null; sessionStorage.removeItem("reviewerToken"); renderSession(); });
  $("close-detail").addEventListener("click", () => { state.selected = null; render(); });
  $("mark-confirmed").addEventListener("click", () => mark("confirmed"));
  $("mark-false-positive").addEventListener("click", () => mark("false_positive"));
  try {
    state.reviewsEnabled = (await api("/api/status")).reviews_enabled;
  } catch (error) {
    showMessage("The alerts server does not answer: " + error.message);
  }
  if (state.token && state.reviewsEnabled) await signIn(state.token);
  renderSession();
  connect();
}

start();
