"use strict";
// postrelay console: plain JS, no dependencies. Pages are sections switched
// by the URL hash; each loads its data from the JSON API (relative URLs, so
// the console can be mounted under any prefix).

const $ = (sel, root = document) => root.querySelector(sel);
const API = "api/v1/";
const TOKEN_KEY = "postrelay-console-token";
let status = null;
let refreshTimer = null;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (v !== undefined && v !== null) e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

function fmtAge(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const fmtRate = (n) => (n === null || n === undefined ? "–" : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString("en-US"));
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "–");

function flash(msg, isError) {
  const f = $("#flash");
  f.textContent = msg;
  f.className = isError ? "error" : "";
  f.hidden = false;
  clearTimeout(flash.t);
  flash.t = setTimeout(() => (f.hidden = true), isError ? 8000 : 4000);
}

async function get(path) {
  const r = await fetch(API + path, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// askToken shows the token dialog and resolves with the token or null.
function askToken() {
  const d = $("#token-dialog");
  $("#token-input").value = "";
  return new Promise((resolve) => {
    d.addEventListener("close", function onClose() {
      d.removeEventListener("close", onClose);
      const t = $("#token-input").value.trim();
      if (d.returnValue === "ok" && t) {
        sessionStorage.setItem(TOKEN_KEY, t);
        resolve(t);
      } else resolve(null);
    });
    d.showModal();
    $("#token-input").focus();
  });
}

// post sends a mutating call with the token, asking for it once.
async function post(path, body) {
  let token = sessionStorage.getItem(TOKEN_KEY);
  for (let attempt = 0; attempt < 2; attempt++) {
    if (!token) token = await askToken();
    if (!token) throw new Error("no token given");
    const r = await fetch(API + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify(body),
    });
    const out = await r.json().catch(() => ({ error: r.statusText }));
    if (r.status === 401 || (r.status === 403 && out.error === "wrong token")) {
      sessionStorage.removeItem(TOKEN_KEY);
      token = null;
      flash(out.error, true);
      continue;
    }
    if (!r.ok) throw new Error(out.error || r.statusText);
    return out;
  }
  throw new Error("the token was refused");
}

function confirmDialog(text) {
  const d = $("#confirm-dialog");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    d.addEventListener("close", function onClose() {
      d.removeEventListener("close", onClose);
      resolve(d.returnValue === "ok");
    });
    d.returnValue = "";
    d.showModal();
  });
}

// ---------- overview ----------

// loadStatus reads the status; other pages than the overview need it once
// (schema, modes), so they pass cached = true.
async function loadStatus(cached) {
  if (cached && status) return status;
  status = await get("status");
  $("#schema").textContent = "schema " + status.schema + " · " + status.partitions + " partitions";
  document.body.classList.toggle("read-only", status.read_only);
  $("#mode").textContent = [status.read_only ? "read-only" : "", status.hide_payloads ? "payloads hidden" : ""].filter(Boolean).join(" · ");
  return status;
}

async function showOverview() {
  const [st, hist] = await Promise.all([loadStatus(), get("history")]);
  const live = st.instances.filter((i) => i.live).length;
  $("#ov-relays").textContent = live;
  $("#ov-backlog").textContent = (st.backlog_exact ? "" : "≈") + fmtNum(st.backlog);
  $("#ov-oldest").textContent = st.backlog > 0 ? fmtAge(st.oldest_pending_age_s) : "–";
  $("#ov-held").textContent = fmtNum(st.held);
  $("#ov-dead").textContent = fmtNum(st.dead_letters) + (st.dead_letters_capped ? "+" : "");
  $("#ov-delivered").textContent = fmtRate(st.delivered_per_s);
  $("#ov-failures").textContent = fmtRate(st.failures_per_s);
  const tb = $("#ov-instances");
  tb.replaceChildren(...st.instances.map((i) =>
    el("tr", {}, el("td", {}, i.id), el("td", {}, i.hostname), el("td", { class: "num" }, String(i.pid)),
      el("td", { class: i.live ? "ok" : "bad" }, i.live ? "yes" : "no"), el("td", { class: "num" }, fmtAge(i.heartbeat_age_s)),
      el("td", { class: "num" }, String(i.partitions)), el("td", {}, fmtTime(i.started_at)))));
  if (!st.instances.length) tb.append(el("tr", {}, el("td", { colSpan: 7, class: "muted" }, "no relay has registered")));
  const pts = hist.points;
  drawChart($("#chart-rates"), pts, [
    { key: "delivered_per_s", label: "delivered/s", color: "#1f8a4c" },
    { key: "failures_per_s", label: "failures/s", color: "#c0392b" },
    { key: "dead_lettered_per_s", label: "dead-lettered/s", color: "#8e44ad" },
  ]);
  drawChart($("#chart-backlog"), pts, [{ key: "backlog", label: "backlog (estimate)", color: "#2d5bd7" }]);
  $("#chart-note").textContent = pts.length
    ? `${pts.length} samples every ${hist.interval_s} s since the console started; rates from PostgreSQL's table statistics.`
    : "The chart fills as the console samples (every " + hist.interval_s + " s).";
}

// drawChart draws the series of the last hour as an inline SVG.
function drawChart(box, pts, series) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 900, H = 150, L = 48, R = 10, T = 18, B = 20;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  // The last hour, or less while the console has sampled for less (at
  // least five minutes).
  const now = Date.now();
  const first = pts.length ? new Date(pts[0].t).getTime() : now;
  const span = Math.min(3600e3, Math.max(300e3, Math.ceil((now - first) / 300e3) * 300e3));
  const t0 = now - span;
  let ymax = 0;
  for (const p of pts) for (const s of series) ymax = Math.max(ymax, p[s.key]);
  ymax = ymax > 0 ? niceCeil(ymax) : 1;
  const x = (t) => L + ((t - t0) / span) * (W - L - R);
  const y = (v) => T + (1 - v / ymax) * (H - T - B);
  for (const f of [0, 0.5, 1]) {
    mk("line", { x1: L, x2: W - R, y1: y(ymax * f), y2: y(ymax * f), stroke: "#e6e9ef" });
    mk("text", { x: L - 6, y: y(ymax * f) + 4, "text-anchor": "end" }, fmtRate(ymax * f));
  }
  const mins = span / 60e3;
  for (const f of [1, 0.75, 0.5, 0.25, 0]) {
    const m = mins * f;
    mk("text", { x: x(now - m * 60e3) + (f === 1 ? 14 : f === 0 ? -12 : 0), y: H - 5, "text-anchor": "middle" },
      m ? `-${Number.isInteger(m) ? m : m.toFixed(1)} min` : "now");
  }
  let lx = L + 4;
  for (const s of series) {
    const d = pts.filter((p) => new Date(p.t).getTime() >= t0)
      .map((p, i) => `${i ? "L" : "M"}${x(new Date(p.t).getTime()).toFixed(1)},${y(p[s.key]).toFixed(1)}`).join("");
    if (d) mk("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.6 });
    mk("rect", { x: lx, y: 4, width: 10, height: 10, fill: s.color });
    mk("text", { x: lx + 14, y: 13 }, s.label);
    lx += 24 + s.label.length * 6.5;
  }
  box.replaceChildren(svg);
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// ---------- partitions ----------

function ownerColor(owner) {
  let h = 2166136261; // FNV-1a, so names that differ in one letter get far-apart hues
  for (const c of owner) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return `hsl(${h % 360} 55% 42%)`;
}

async function showPartitions() {
  const [st, data] = await Promise.all([loadStatus(true), get("partitions")]);
  $("#pending-cap").textContent = fmtNum(data.pending_cap);
  const owners = new Map();
  for (const p of data.partitions) if (p.owner) owners.set(p.owner, (owners.get(p.owner) || 0) + 1);
  const legend = [...owners.entries()].sort().map(([o, n]) => {
    const s = el("span", {}, `${o} (${n})`);
    s.style.setProperty("--swatch", ownerColor(o));
    return s;
  });
  const free = data.partitions.length - [...owners.values()].reduce((a, b) => a + b, 0);
  if (free) legend.push(el("span", {}, `no owner (${free})`));
  $("#owners").replaceChildren(...legend);
  $("#grid").replaceChildren(...data.partitions.map((p) => {
    const c = el("div", { class: "cell" + (p.owner ? "" : " free"), title: p.owner || "no owner", "data-partition": String(p.partition) },
      el("b", {}, "#" + p.partition), el("br"),
      `epoch ${p.epoch}`, el("br"),
      `lease ${p.owner ? fmtAge(p.lease_left_s) : "–"}`, el("br"),
      `${fmtNum(p.pending)}${p.pending_capped ? "+" : ""} pending${p.held ? `, ${p.held} held` : ""}`, el("br"),
      `oldest ${p.pending ? fmtAge(p.oldest_age_s) : "–"}`);
    if (p.owner) c.style.background = ownerColor(p.owner);
    return c;
  }));
  void st;
}

// ---------- stuck keys ----------

async function showStuck() {
  await loadStatus(true);
  const q = new URLSearchParams(new FormData($("#stuck-filter")));
  for (const [k, v] of [...q.entries()]) if (!v) q.delete(k);
  const data = await get("stuck-keys?" + q);
  const tb = $("#stuck-rows");
  tb.replaceChildren(...data.stuck_keys.map((s) => {
    const ref = { partition: s.partition, id: s.record_id };
    const retry = el("button", { class: "small", "data-action": "retry", title: "attempt it now" }, "Retry now");
    retry.addEventListener("click", () => stuckAction("stuck-keys/retry", ref, `Retry record ${s.record_id} of key ${s.key} now?`, "retried"));
    const dead = el("button", { class: "small danger", "data-action": "dead-letter", title: "move it to the dead letters: the key's next record goes" }, "Dead-letter now");
    dead.addEventListener("click", () => stuckAction("stuck-keys/dead-letter", ref,
      `Move record ${s.record_id} of key ${s.key} to the dead letters? The ${s.waiting} record(s) waiting behind it will be delivered.`, "dead_lettered"));
    return el("tr", { "data-key": s.key }, el("td", {}, s.topic), el("td", {}, s.key), el("td", { class: "num" }, String(s.record_id)),
      el("td", { class: s.state === "failing" ? "bad" : "" }, s.state), el("td", { class: "num" }, String(s.attempts)),
      el("td", {}, s.next_attempt_in_s > 0 ? "in " + fmtAge(s.next_attempt_in_s) : "due"),
      el("td", { class: "err" }, s.last_error || "–"), el("td", { class: "num" }, fmtNum(s.waiting) + (s.waiting_capped ? "+" : "")),
      el("td", {}, retry, " ", dead));
  }));
  if (!data.stuck_keys.length) tb.append(el("tr", {}, el("td", { colSpan: 9, class: "muted" }, "no key is held back")));
  $("#stuck-note").textContent = `Waiting counts the key's records among the next ${fmtNum(data.waiting_window)} records of its partition.`;
}

async function stuckAction(path, ref, question, field) {
  if (!(await confirmDialog(question))) return;
  try {
    const out = await post(path, { records: [ref] });
    flash(out[field] ? "done" : "nothing changed: the record is no longer held");
  } catch (e) {
    flash(e.message, true);
  }
  showStuck().catch((e) => flash(e.message, true));
}

// ---------- dead letters ----------

let deadCursor = null;
const selected = new Set();

function deadFilter() {
  const f = Object.fromEntries(new FormData($("#dead-filter")));
  for (const k of Object.keys(f)) if (!f[k]) delete f[k];
  return f;
}

async function showDead(append) {
  await loadStatus(true);
  const q = new URLSearchParams(deadFilter());
  if (append && deadCursor) q.set("cursor", deadCursor);
  const data = await get("dead-letters?" + q);
  const tb = $("#dead-rows");
  if (!append) {
    tb.replaceChildren();
    selected.clear();
    $("#select-all").checked = false;
  }
  for (const d of data.dead_letters) {
    const cb = el("input", { type: "checkbox", title: "select" });
    cb.addEventListener("change", () => {
      if (cb.checked) selected.add(d.id); else selected.delete(d.id);
      tr.classList.toggle("selected", cb.checked);
    });
    const requeue = el("button", { class: "small", "data-action": "requeue", "data-id": String(d.id) }, "Requeue");
    requeue.addEventListener("click", (ev) => { ev.stopPropagation(); deadAction("requeue", [d.id]); });
    const tr = el("tr", { "data-id": String(d.id) }, el("td", {}, cb), el("td", { class: "num" }, String(d.id)), el("td", {}, d.topic),
      el("td", {}, d.key), el("td", { class: "num" }, String(d.attempts)), el("td", {}, fmtTime(d.dead_lettered_at)),
      el("td", { class: "err" }, d.last_error), el("td", {}, requeue));
    tr.addEventListener("click", (ev) => { if (ev.target !== cb) showDeadDetail(d.id); });
    tb.append(tr);
  }
  if (!tb.children.length) tb.append(el("tr", {}, el("td", { colSpan: 8, class: "muted" }, "no dead letters match")));
  deadCursor = data.next_cursor;
  $("#dead-more").hidden = !deadCursor;
}

async function showDeadDetail(id) {
  const d = await get("dead-letters/" + id);
  const box = $("#dead-detail");
  const dl = el("dl");
  const row = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
  row("ID", String(d.id));
  row("Topic", d.topic);
  row("Key", d.key);
  row("Message id", d.message_id);
  row("Partition", String(d.partition));
  row("Attempts", String(d.attempts));
  row("Created", fmtTime(d.created_at));
  row("Dead since", fmtTime(d.dead_lettered_at));
  row("Trace id", d.trace_id || "–");
  row("Last error", d.last_error || "–");
  const payload = d.payload_hidden ? "(hidden: the console runs with --hide-payloads)"
    : (d.payload_json || d.payload_hex || "(empty)") + (d.payload_truncated ? "\n… (first 64 KiB of " + fmtNum(d.payload_bytes) + " bytes)" : "");
  const md = el("table", {}, ...Object.entries(d.metadata || {}).sort().map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "err" }, v))));
  const requeue = el("button", { "data-action": "requeue-one" }, "Requeue");
  requeue.addEventListener("click", () => deadAction("requeue", [d.id]));
  const purge = el("button", { class: "danger", "data-action": "purge-one" }, "Purge");
  purge.addEventListener("click", () => deadAction("purge", [d.id]));
  box.replaceChildren(el("h2", {}, "Dead letter " + d.id), dl,
    el("h2", {}, `Payload (${fmtNum(d.payload_bytes)} bytes${d.payload_json ? ", JSON" : ""})`), el("pre", {}, payload),
    el("h2", {}, "Metadata"), md, el("div", { class: "toolbar mutating" }, requeue, purge));
  box.hidden = false;
}

async function deadAction(verb, ids) {
  const filter = deadFilter();
  let body, question;
  if (ids) {
    if (!ids.length) return flash("select dead letters first", true);
    body = { ids };
    question = `${verb === "requeue" ? "Requeue" : "Purge for good"} ${ids.length === 1 ? "dead letter " + ids[0] : ids.length + " dead letters"}?`;
  } else {
    body = { all: true, filter, confirm: verb + " all matching" };
    const what = Object.keys(filter).length ? "matching " + JSON.stringify(filter) : "— every dead letter, no filter is set";
    question = `${verb === "requeue" ? "Requeue" : "Purge for good"} ALL dead letters ${what}?`;
  }
  if (!(await confirmDialog(question))) return;
  try {
    const out = await post("dead-letters/" + verb, body);
    flash(`${verb}d ${out[verb + "d"]}`);
    $("#dead-detail").hidden = true;
  } catch (e) {
    flash(e.message, true);
  }
  showDead(false).catch((e) => flash(e.message, true));
}

// ---------- lookup ----------

async function showLookup() {
  await loadStatus(true);
}

let lookupNext = null; // the query continuing the last lookup, or null

async function lookup(more) {
  let q;
  if (more && lookupNext) {
    q = lookupNext;
  } else {
    const f = new FormData($("#lookup-form"));
    q = new URLSearchParams({ [f.get("by")]: f.get("q").trim() });
    const key = (f.get("key") || "").trim();
    if (f.get("by") === "message_id" && key) q.set("key", key);
  }
  try {
    const data = await get("records?" + q);
    $("#lookup-state").textContent = "State: " + data.state.replace("_", " ");
    $("#lookup-rows").replaceChildren(...data.records.map((r) =>
      el("tr", {}, el("td", { class: r.state === "pending" ? "" : "bad" }, r.state.replace("_", " ")), el("td", { class: "num" }, String(r.partition)),
        el("td", { class: "num" }, String(r.id)), el("td", {}, r.topic), el("td", {}, r.key), el("td", {}, r.message_id),
        el("td", { class: "num" }, String(r.attempts)), el("td", {}, r.dead_lettered_at ? "dead since " + fmtTime(r.dead_lettered_at) : fmtTime(r.available_at)),
        el("td", { class: "err" }, r.last_error || "–"), el("td", {}, fmtTime(r.created_at)))));
    $("#lookup-searched").textContent = (data.complete ? "Searched " : "Not every record was searched: ") + data.searched + ".";
    lookupNext = null;
    if (data.next_after) {
      lookupNext = new URLSearchParams(q);
      lookupNext.set("after", data.next_after);
    }
    $("#lookup-more").hidden = !lookupNext;
  } catch (e) {
    $("#lookup-state").textContent = e.message;
    $("#lookup-rows").replaceChildren();
    $("#lookup-searched").textContent = "";
    $("#lookup-more").hidden = true;
    lookupNext = null;
  }
}

// ---------- routing ----------

const pages = {
  overview: { show: showOverview, every: 5000 },
  partitions: { show: showPartitions, every: 5000 },
  stuck: { show: showStuck, every: 5000 },
  dead: { show: () => showDead(false) },
  lookup: { show: showLookup },
};

function route() {
  const name = (location.hash || "#overview").slice(1);
  const page = pages[name] ? name : "overview";
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  clearInterval(refreshTimer);
  const run = () => pages[page].show().catch((e) => flash(e.message, true));
  run();
  if (pages[page].every) refreshTimer = setInterval(run, pages[page].every);
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", route);
  $("#stuck-filter").addEventListener("submit", (e) => { e.preventDefault(); showStuck().catch((x) => flash(x.message, true)); });
  $("#dead-filter").addEventListener("submit", (e) => { e.preventDefault(); showDead(false).catch((x) => flash(x.message, true)); });
  $("#dead-more").addEventListener("click", () => showDead(true).catch((x) => flash(x.message, true)));
  $("#lookup-form").addEventListener("submit", (e) => { e.preventDefault(); lookup(false); });
  $("#lookup-more").addEventListener("click", () => lookup(true));
  $("#requeue-selected").addEventListener("click", () => deadAction("requeue", [...selected]));
  $("#purge-selected").addEventListener("click", () => deadAction("purge", [...selected]));
  $("#requeue-all").addEventListener("click", () => deadAction("requeue", null));
  $("#purge-all").addEventListener("click", () => deadAction("purge", null));
  $("#select-all").addEventListener("change", (e) => {
    for (const cb of document.querySelectorAll("#dead-rows input[type=checkbox]")) {
      if (cb.checked !== e.target.checked) { cb.checked = e.target.checked; cb.dispatchEvent(new Event("change")); }
    }
  });
  $("#token-button").addEventListener("click", () => askToken().then((t) => t && flash("token saved for this tab")));
  route();
});
