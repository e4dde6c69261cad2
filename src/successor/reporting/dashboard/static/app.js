// The dashboard page: polls the run's JSON API and draws it. Plain DOM, no library. Every text that came from
// the run (a candidate's rationale, log or metrics are untrusted) goes in as textContent, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let version = null;
let openNode = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined) return "—";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  return Math.abs(x) >= 1e5 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : x.toFixed(digits);
}

function duration(s) {
  if (s === null || s === undefined) return "—";
  s = Math.round(s);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`
    : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function table(head, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

function pre(x) { return el("pre", {}, typeof x === "string" ? x : JSON.stringify(x, null, 2)); }

// A training curve, [[step, loss], ...], as a small SVG line with its range written beside it.
function curve(points, w = 260, h = 80) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "curve");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  if (!points || points.length < 2) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", 8); t.setAttribute("y", h / 2); t.setAttribute("font-size", "11");
    t.textContent = "no curve yet";
    svg.append(t);
    return svg;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => 4 + ((x - x0) / ((x1 - x0) || 1)) * (w - 8);
  const sy = (y) => h - 14 - ((y - y0) / ((y1 - y0) || 1)) * (h - 22);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#3b7dd8"); line.setAttribute("stroke-width", "1.5");
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", 4); label.setAttribute("y", h - 2); label.setAttribute("font-size", "10");
  label.textContent = `loss ${fmt(y1)} → ${fmt(ys[ys.length - 1])} over ${fmt(x1)} steps`;
  svg.append(line, label);
  return svg;
}

function bar(fraction) {
  const b = el("span", { class: "bar" }, el("span"));
  b.firstChild.style.width = `${Math.min(100, Math.max(0, (fraction || 0) * 100))}%`;
  return b;
}

function renderStatus(s) {
  $("run-name").textContent = `successor · ${s.run}`;
  const st = s.state.state;
  $("state").textContent = st;
  $("state").className = "badge " + ({ finished: "ok", running: "ok", "waiting for approval": "wait", paused: "wait",
    stopped: "bad", "not running": "bad" }[st] || "");
  const prog = s.in_progress;
  const facts = [
    ["state", st + (s.state.reason ? `: ${s.state.reason}` : "")],
    ["generation", prog ? `${prog.generation}, stage ${prog.stage}` : "none under way"],
    ["generations done", `${s.generations_done}${s.planned_generations ? ` of ${s.planned_generations}` : ""}`],
    ["promoted", s.promoted],
    [s.score === "metric" ? "champion metric" : "frontier", s.score === "metric" ? fmt(s.metric, 4) : fmt(s.frontier)],
    ["champion", s.champion ? s.champion.slice(0, 12) : "—"],
    ["ETA", s.eta_s === null ? "—" : duration(s.eta_s)],
    ["compute", `${s.compute.experiments} experiments, ${fmt(s.compute.cpu_s / 3600)} CPU-h`
      + (s.compute.flops ? `, ${fmt(s.compute.flops)} FLOPs` : "")],
    ["violations", s.violations],
  ];
  if (s.upper_bound) facts.push(["note", "UPPER BOUND: curated with the hidden checker"]);
  $("facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

  const w = s.waiting_for_approval;
  $("approval").hidden = !w;
  if (w) {
    $("approval").dataset.generation = w.generation;
    $("approval-text").textContent = `Generation ${w.generation} waits for a human: ${w.reasons.join("; ")}`;
  }
  $("budgets").tBodies[0].replaceChildren(...s.budgets.map((b) => el("tr", {}, el("td", {}, b.what),
    el("td", {}, fmt(b.used)), el("td", {}, b.limit === null ? "no limit" : fmt(b.limit)),
    el("td", {}, b.limit === null ? "" : bar(b.fraction)))));

  const cards = s.experiments.map((e) => el("div", { class: "card", "data-experiment": e.id },
    el("b", {}, `${e.candidate} · ${e.kind}`), ` ${e.status}`,
    e.status === "running" ? el("div", {}, `step ${fmt(e.step)} of ${fmt(e.total)} `, bar(e.total ? e.step / e.total : 0),
      ` loss ${fmt(e.loss)} · ${duration(e.elapsed_s)}`) : el("div", { class: "muted" }, `${fmt(e.wall_s, 1)} s`),
    curve(e.curve)));
  $("experiments").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted" }, "none running")]));
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function renderTree(data) {
  const cols = data.generations.map((g) => {
    const nodes = g.candidates.map((c) => {
      const champion = c.promoted && g.promoted && g.status === "done" && c.role === "successor";
      const cls = ["node", c.promoted === true ? "promoted" : c.promoted === false ? "refused" : "",
        champion ? "champion" : "", openNode === c.id ? "selected-node" : ""].join(" ");
      return el("button", { class: cls, type: "button", "data-node": c.id, title: c.reason || c.status,
        onclick: () => showNode(c.id) },
        el("b", {}, `${champion ? "★ " : ""}${c.id}`), el("br"), `${c.role} · ${c.status}`,
        c.score === null || c.score === undefined ? null : ` · ${fmt(c.score)}`,
        c.violations ? el("span", { class: "bad" }, ` · ${c.violations} violation(s)`) : null);
    });
    const head = `generation ${g.generation} · ${g.status}` + (g.status === "done" ? (g.promoted ? " · promoted" : " · kept") : "");
    return el("div", { class: "gen", "data-generation": g.generation }, el("h3", {}, head),
      el("div", { class: "muted" }, `from ${g.parent ? g.parent.slice(0, 10) : "nothing (bootstrap)"}`), ...nodes);
  });
  $("tree").replaceChildren(...(cols.length ? cols : [el("p", { class: "muted" }, "no generation yet")]));
}

async function showNode(id) {
  openNode = id;
  document.querySelectorAll(".node").forEach((n) => n.classList.toggle("selected-node", n.dataset.node === id));
  const n = await getJSON(`/api/node/${encodeURIComponent(id)}`);
  const parts = [el("h2", {}, `${n.id} · generation ${n.generation}`),
    table(["field", "value"], [["rationale", n.rationale || "—"], ["parent champion", n.parent || "none (bootstrap)"],
      ["champion of generation", n.champion_of_generation ?? "no"]])];
  if (n.gate) parts.push(el("h3", {}, "Gate"), el("p", { class: n.gate.promoted ? "ok" : "bad" }, n.gate.reason),
    el("details", {}, el("summary", {}, "gate statistics"), pre(n.gate.stats)));
  parts.push(el("h3", {}, "Recipe"), pre(n.recipe));
  if (n.diff) parts.push(el("h3", {}, "Code patch"), pre(n.diff));
  for (const e of n.experiments) {
    parts.push(el("h3", {}, `Experiment ${e.id} (${e.kind})`),
      el("p", {}, `${e.status}, ${e.attempts} attempt(s), ${fmt(e.wall_s, 1)} s wall, ${fmt(e.cpu_s, 1)} CPU-s`
        + (e.flops ? `, ${fmt(e.flops)} FLOPs` : "") + (e.error ? ` · ${e.error}` : "")),
      curve(e.curve, 420, 110),
      el("details", {}, el("summary", {}, "metrics (self-reported, never used)"), pre(e.metrics)),
      el("details", {}, el("summary", {}, "log tail"), pre(e.log_tail || "no log")));
  }
  for (const [model, tiers] of Object.entries(n.accuracy)) {
    const levels = [...new Set(Object.values(tiers).flatMap((t) => Object.keys(t)))].sort((a, b) => a - b);
    parts.push(el("h3", {}, `Accuracy of ${model.slice(0, 12)}`), table(["tier", ...levels],
      Object.entries(tiers).map(([tier, acc]) => [tier, ...levels.map((l) => fmt(acc[l]))])));
  }
  if (n.rungs.length) parts.push(el("h3", {}, "Successive halving"), table(["rung", "steps", "dev score", "rank", "went on"],
    n.rungs.map((r) => [r.rung, r.steps, fmt(r.dev_score), fmt(r.rank), r.promoted ? "yes" : "no"])));
  if (n.violations.length) parts.push(el("h3", {}, "Violations"), table(["experiment", "kind", "detail"],
    n.violations.map((v) => [v.experiment_id, v.kind, v.detail])));
  if (n.provenance) parts.push(el("h3", {}, "Provenance statement"), pre(n.provenance));
  $("details-body").replaceChildren(...parts);
  $("details").hidden = false;
}

function renderAcceleration(a) {
  $("acceleration-verdict").textContent = `Verified gain (${a.unit}) per generation: ${a.per_generation.verdict}. `
    + `Per CPU-hour: ${a.per_cpu_hour.verdict}. In all: ${fmt(a.total_gain, 4)} over ${fmt(a.total_cpu_h)} CPU-h`
    + (a.mean_gain_per_cpu_h === null ? "." : ` (${fmt(a.mean_gain_per_cpu_h, 4)} per CPU-hour of successors).`);
  $("acceleration-table").tBodies[0].replaceChildren(...a.generations.map((g) => el("tr", {},
    ...[g.generation, g.promoted ? "yes" : "no", fmt(g.gain, 4), fmt(g.frontier_gain), fmt(g.cpu_h),
      fmt(g.gain_per_cpu_h, 4), fmt(g.cumulative_gain, 4), fmt(g.cumulative_cpu_h)].map((c) => el("td", {}, c)))));
}

function renderAudit(a) {
  $("audit-badge").textContent = a.ok ? "audit: verified" : `audit: ${a.problems} problem(s)`;
  $("audit-badge").className = "badge " + (a.ok ? "ok" : "bad");
  $("audit-lines").replaceChildren(...a.lines.map((l) => el("li", { class: a.ok ? "" : "bad" }, l)));
}

async function refreshSlow(v) {
  const [tree, accel, guard, audit] = await Promise.all(["/api/lineage", "/api/acceleration", "/api/guardrail",
    "/api/audit"].map(getJSON));
  renderTree(tree);
  renderAcceleration(accel);
  $("guardrail-note").textContent = guard.note;
  renderAudit(audit);
  document.querySelectorAll("img[data-plot]").forEach((img) => {
    img.src = `/plots/${img.dataset.plot}.png?v=${encodeURIComponent(v)}`;
  });
}

async function refresh() {
  try {
    const s = await getJSON("/api/status");
    renderStatus(s);
    const v = [s.generations_done, s.promoted, s.in_progress ? `${s.in_progress.generation}-${s.in_progress.stage}` : "",
      s.state.state, s.violations].join("/");
    if (v !== version) {
      version = v;
      await refreshSlow(v);
    }
  } catch (err) {
    $("updated").textContent = `cannot read the run: ${err.message}`;
  }
}

async function act(path, body) {
  const out = $("action-result");
  const token = $("token").value.trim();
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body || {}) });
  let detail = "";
  try { const j = await r.json(); detail = j.message || (typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail)); }
  catch (e) { detail = r.statusText; }
  out.textContent = r.ok ? detail : `refused (${r.status}): ${detail}`;
  out.className = r.ok ? "ok" : "bad";
  version = null;
  refresh();
}

function init() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) $("token").value = decodeURIComponent(m[1]);
  const gen = () => Number($("approval").dataset.generation);
  $("approve").addEventListener("click", () => act("/api/approve", { generation: gen(), who: $("who").value, note: $("note").value || null }));
  $("reject").addEventListener("click", () => act("/api/reject", { generation: gen(), who: $("who").value, reason: $("note").value }));
  $("stop").addEventListener("click", () => act("/api/stop"));
  $("close-details").addEventListener("click", () => { $("details").hidden = true; openNode = null; });
  refresh();
  setInterval(refresh, 2000);
}

document.addEventListener("DOMContentLoaded", init);
