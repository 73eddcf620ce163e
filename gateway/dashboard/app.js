// IOU gateway dashboard: plain JS, no build step, no external requests.
// The admin token lives in sessionStorage only; every call sends it as a bearer header.
"use strict";

const REFRESH_MS = 2000;
const MICROS = 1000000n;
let timer = null;
let overviewSort = { key: "agent", dir: 1 };
let overviewFilter = "";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Decimal strings <-> integer micros (BigInt), so amounts never pass through a float.
function micros(text) {
  if (text === null || text === undefined) return 0n;
  const [whole, frac = ""] = String(text).split(".");
  const sign = whole.startsWith("-") ? -1n : 1n;
  return sign * (BigInt(whole.replace("-", "")) * MICROS + BigInt((frac + "000000").slice(0, 6)));
}
function tokens(m) {
  const sign = m < 0n ? "-" : "";
  const a = m < 0n ? -m : m;
  const frac = (a % MICROS).toString().padStart(6, "0").replace(/0+$/, "");
  return sign + (a / MICROS).toString() + (frac ? "." + frac : "");
}

async function api(method, path, body) {
  const headers = { authorization: "Bearer " + sessionStorage.getItem("iou-token") };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 204) return null;
  const data = await res.json();
  if (!res.ok) {
    if (res.status === 401) signOut("That token was refused.");
    const err = new Error(data.message || data.error);
    err.code = data.error;
    throw err;
  }
  return data;
}

function signOut(message) {
  sessionStorage.removeItem("iou-token");
  route(message);
}

function stopRefresh() { if (timer) { clearInterval(timer); timer = null; } }

function route(message) {
  stopRefresh();
  const signedIn = !!sessionStorage.getItem("iou-token");
  document.getElementById("signin").hidden = signedIn;
  document.getElementById("nav").hidden = !signedIn;
  const view = document.getElementById("view");
  view.replaceChildren();
  if (!signedIn) {
    document.getElementById("signin-error").textContent = message || "";
    document.getElementById("token").focus();
    return;
  }
  const hash = location.hash || "#/";
  if (hash.startsWith("#/agent/")) agentView(view, decodeURIComponent(hash.slice(8)));
  else if (hash === "#/tools") toolsView(view);
  else overview(view);
}

// ---- overview ---------------------------------------------------------------------------

async function loadAgents() {
  let rows = [], cursor = null;
  do {
    const page = await api("GET", "/v1/agents?limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    rows = rows.concat(page.agents);
    cursor = page.next_cursor;
  } while (cursor);
  const details = await Promise.all(rows.map((a) => api("GET", "/v1/agents/" + encodeURIComponent(a.agent))));
  return details;
}

function dailyBar(spent, cap) {
  if (!cap) return h("span", { class: "hint" }, "no daily cap");
  const pct = Number((micros(spent) * 100n) / micros(cap));
  const cls = pct >= 100 ? "full" : pct > 80 ? "near" : "";
  return h("span", {}, h("span", { class: "bar", role: "img", "aria-label": `${pct}% of daily cap` },
    h("span", { class: cls, style: `width:${Math.min(pct, 100)}%` })), ` ${spent} / ${cap}`);
}

function overview(view) {
  const filter = h("input", { type: "search", placeholder: "Filter agents", value: overviewFilter,
    "aria-label": "Filter agents", oninput: (e) => { overviewFilter = e.target.value; draw(); } });
  const totals = h("div", { class: "totals" });
  const body = h("tbody");
  const header = h("tr", {}, ...[["agent", "Agent"], ["balance", "Balance"], ["held", "Held"],
    ["spent_today", "Spent today / daily cap"], ["frozen", "State"]].map(([key, label]) =>
    h("th", {}, h("button", { type: "button", onclick: () => {
      overviewSort = { key, dir: overviewSort.key === key ? -overviewSort.dir : 1 }; draw(); } }, label))));
  view.append(h("h1", {}, "Agents"), totals, h("p", {}, filter),
    h("div", { class: "table-wrap" }, h("table", { id: "agents" }, h("thead", {}, header), body)));
  let agents = [];
  function draw() {
    const sum = (k) => tokens(agents.reduce((s, a) => s + micros(a[k]), 0n));
    totals.replaceChildren(
      h("div", {}, "Agents", h("b", {}, agents.length)),
      h("div", {}, "Balance", h("b", { id: "total-balance" }, sum("balance"))),
      h("div", {}, "Held", h("b", {}, sum("held"))),
      h("div", {}, "Spent today", h("b", {}, sum("spent_today"))),
      h("div", {}, "Low balance", h("b", {}, agents.filter((a) => a.warnings.includes("low_balance")).length)));
    const shown = agents.filter((a) => a.agent.includes(overviewFilter.trim()));
    const key = overviewSort.key;
    shown.sort((x, y) => {
      const a = x[key], b = y[key];
      const c = typeof a === "string" && /^-?[0-9.]+$/.test(a) ? (micros(a) > micros(b) ? 1 : micros(a) < micros(b) ? -1 : 0)
        : String(a).localeCompare(String(b));
      return c * overviewSort.dir;
    });
    body.replaceChildren(...shown.map((a) => {
      const low = a.warnings.includes("low_balance");
      return h("tr", { class: low ? "low" : null, "data-agent": a.agent },
        h("td", {}, h("a", { href: "#/agent/" + encodeURIComponent(a.agent) }, a.agent)),
        h("td", { class: "balance" }, a.balance, low ? h("span", { class: "badge low" }, " low") : null),
        h("td", {}, a.held),
        h("td", {}, dailyBar(a.spent_today, a.limits.daily)),
        h("td", {}, a.frozen ? h("span", { class: "badge frozen" }, "frozen") : "active"));
    }));
  }
  async function refresh() {
    try { agents = await loadAgents(); draw(); } catch (e) { /* shown on next success */ }
  }
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

// ---- agent page -------------------------------------------------------------------------

function agentView(view, name) {
  const status = h("p", { class: "notice", role: "status" });
  const summary = h("div", { class: "totals" });
  const charts = h("div", { class: "grid2" });
  const ledgerBody = h("tbody");
  let entries = [], cursor = null;
  const kind = h("select", { "aria-label": "Kind filter" }, ...["", "charge", "fund", "grant", "hold", "capture", "release", "expire"].map((k) => h("option", { value: k }, k || "all kinds")));
  const tool = h("input", { placeholder: "tool", "aria-label": "Tool filter", size: 12 });
  const more = h("button", { type: "button", class: "secondary", onclick: () => loadLedger(false) }, "Older entries");

  const say = (text, bad) => { status.textContent = text; status.className = bad ? "error" : "notice"; };
  const act = (fn) => async (e) => { e.preventDefault(); try { await fn(e); } catch (err) { say(err.message, true); } };

  const fundInput = h("input", { name: "amount", placeholder: "20", required: true, "aria-label": "Amount to add" });
  const fundForm = h("form", { class: "row", id: "fund", onsubmit: act(async () => {
    const r = await api("POST", `/v1/agents/${encodeURIComponent(name)}/fund`, { amount: fundInput.value.trim() });
    say(`Funded: balance ${r.balance}`); fundInput.value = ""; await refresh();
  }) }, h("label", {}, "Add tokens", fundInput), h("button", { type: "submit" }, "Fund"));

  const freezeBtn = h("button", { type: "button", class: "secondary", id: "freeze" }, "Freeze");
  freezeBtn.addEventListener("click", act(async () => {
    const verb = freezeBtn.dataset.frozen === "true" ? "unfreeze" : "freeze";
    await api("POST", `/v1/agents/${encodeURIComponent(name)}/${verb}`); say(`${verb}d`); await refresh();
  }));
  const keyOut = h("p", { class: "key", hidden: true });
  const keyBtn = h("button", { type: "button", class: "secondary", onclick: act(async () => {
    const r = await api("POST", `/v1/agents/${encodeURIComponent(name)}/keys`);
    keyOut.hidden = false; keyOut.textContent = `New key ${r.key_id} (shown once): ${r.api_key}`;
  }) }, "New key");

  const fields = {};
  const limitInput = (key, label) => (fields[key] = h("input", { name: key, "aria-label": label, size: 10 }),
    h("label", {}, label, fields[key]));
  const catRows = h("div");
  const addCat = (cat = "", caps = {}) => catRows.append(h("div", { class: "row cat" },
    h("label", {}, "Category", h("input", { class: "cat-name", value: cat, size: 10 })),
    h("label", {}, "Per call", h("input", { class: "cat-pc", value: caps.per_call || "", size: 8 })),
    h("label", {}, "Daily", h("input", { class: "cat-dl", value: caps.daily || "", size: 8 }))));
  const limitsForm = h("form", { id: "limits", onsubmit: act(async () => {
    const patch = {};
    for (const key of ["per_call", "daily", "low_balance", "webhook_url"]) patch[key] = fields[key].value.trim() || null;
    patch.categories = {};
    for (const row of catRows.querySelectorAll(".cat")) {
      const cat = row.querySelector(".cat-name").value.trim();
      if (!cat) continue;
      patch.categories[cat] = { per_call: row.querySelector(".cat-pc").value.trim() || null,
                                daily: row.querySelector(".cat-dl").value.trim() || null };
    }
    await api("PATCH", `/v1/agents/${encodeURIComponent(name)}/limits`, patch);
    say("Limits saved"); await refresh();
  }) }, h("div", { class: "row" }, limitInput("per_call", "Per call"), limitInput("daily", "Daily"),
      limitInput("low_balance", "Low balance"), limitInput("webhook_url", "Webhook URL")),
    catRows, h("p", { class: "row" }, h("button", { type: "button", class: "secondary", onclick: () => addCat() }, "Add category"),
      h("button", { type: "submit" }, "Save limits")));

  view.append(h("p", {}, h("a", { href: "#/" }, "← Agents")), h("h1", {}, name), status, summary,
    h("div", { class: "card" }, fundForm, h("p", { class: "row" }, freezeBtn, keyBtn), keyOut),
    charts,
    h("div", { class: "card" }, h("h2", {}, "Limits"), limitsForm),
    h("div", { class: "card" }, h("h2", {}, "Ledger"),
      h("div", { class: "row" }, h("label", {}, "Kind", kind), h("label", {}, "Tool", tool),
        h("button", { type: "button", class: "secondary", onclick: () => loadLedger(true) }, "Apply"),
        h("button", { type: "button", class: "secondary", id: "csv", onclick: exportCsv }, "Export CSV")),
      h("div", { class: "table-wrap" }, h("table", { id: "ledger" }, h("thead", {}, h("tr", {},
        ...["At", "Kind", "Tool", "Category", "Amount", "Balance after"].map((t) => h("th", {}, t)))), ledgerBody)),
      more));

  let limitsLoaded = false;
  async function refresh() {
    const a = await api("GET", "/v1/agents/" + encodeURIComponent(name));
    const low = a.warnings.includes("low_balance");
    summary.replaceChildren(
      h("div", {}, "Balance", h("b", { id: "balance" }, a.balance), low ? h("span", { class: "badge low" }, "low balance") : null),
      h("div", {}, "Held", h("b", {}, a.held)),
      h("div", {}, "Spent today", h("b", {}, dailyBar(a.spent_today, a.limits.daily))),
      h("div", {}, "State", h("b", {}, a.frozen ? "frozen" : "active")));
    freezeBtn.textContent = a.frozen ? "Unfreeze" : "Freeze";
    freezeBtn.dataset.frozen = String(a.frozen);
    if (!limitsLoaded) {
      for (const key of ["per_call", "daily", "low_balance", "webhook_url"]) fields[key].value = a.limits[key] || "";
      catRows.replaceChildren();
      for (const [cat, caps] of Object.entries(a.limits.categories)) addCat(cat, caps);
      limitsLoaded = true;
    }
  }

  async function loadLedger(reset) {
    if (reset) { entries = []; cursor = null; }
    const q = new URLSearchParams({ limit: "100" });
    if (cursor) q.set("before", cursor);
    if (kind.value) q.set("kind", kind.value);
    if (tool.value.trim()) q.set("tool", tool.value.trim());
    const page = await api("GET", `/v1/agents/${encodeURIComponent(name)}/ledger?${q}`);
    entries = reset ? page.entries : entries.concat(page.entries);
    cursor = page.next_cursor;
    more.hidden = !cursor;
    ledgerBody.replaceChildren(...entries.map((e) => h("tr", { "data-entry": e.entry_id },
      h("td", {}, e.at), h("td", {}, e.kind), h("td", {}, e.tool || ""), h("td", {}, e.category || ""),
      h("td", {}, e.amount), h("td", {}, e.balance_after || ""))));
  }

  function exportCsv() {
    const cols = ["entry_id", "at", "kind", "tool", "category", "amount", "balance_after", "idempotency_key", "hold_id"];
    const esc = (v) => (v === null || v === undefined ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
    const text = [cols.join(",")].concat(entries.map((e) => cols.map((c) => esc(e[c])).join(","))).join("\n") + "\n";
    const link = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: `${name}-ledger.csv` });
    document.body.append(link); link.click(); link.remove();
  }

  async function drawCharts() {
    const page = await api("GET", `/v1/agents/${encodeURIComponent(name)}/ledger?limit=1000`);
    charts.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Balance over time"), balanceChart(page.entries)),
      h("div", { class: "card" }, h("h2", {}, "Spend by category, last 24 h"), categoryChart(page.entries)));
  }

  const tick = async () => { try { await refresh(); await loadLedger(true); await drawCharts(); } catch (e) { say(e.message, true); } };
  tick();
  timer = setInterval(tick, REFRESH_MS);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function balanceChart(entries) {
  const points = entries.filter((e) => e.balance_after !== null).map((e) => [Date.parse(e.at), Number(e.balance_after)]).reverse();
  const chart = svg("svg", { viewBox: "0 0 400 180", role: "img", "aria-label": "Balance over time" });
  if (points.length < 2) { const t = svg("text", { x: 10, y: 90 }); t.textContent = "Not enough entries yet"; chart.append(t); return chart; }
  const [t0, t1] = [points[0][0], points[points.length - 1][0] || points[0][0] + 1];
  const max = Math.max(...points.map((p) => p[1]), 0.000001);
  const xy = points.map(([t, v]) => `${10 + ((t - t0) / Math.max(t1 - t0, 1)) * 380},${170 - (v / max) * 155}`);
  chart.append(svg("polyline", { points: xy.join(" "), fill: "none", stroke: "#2453d6", "stroke-width": 2 }));
  const label = svg("text", { x: 10, y: 12, "font-size": 11 }); label.textContent = `max ${max}`; chart.append(label);
  return chart;
}

function categoryChart(entries) {
  const since = Date.now() - 86400000;
  const spend = {};
  for (const e of entries) {
    if ((e.kind === "charge" || e.kind === "capture") && Date.parse(e.at) >= since) {
      spend[e.category || "?"] = (spend[e.category || "?"] || 0n) + micros(e.amount);
    }
  }
  const cats = Object.entries(spend);
  const chart = svg("svg", { viewBox: "0 0 400 180", role: "img", "aria-label": "Spend by category" });
  const max = cats.reduce((m, [, v]) => (v > m ? v : m), 1n);
  cats.forEach(([cat, v], i) => {
    const y = 10 + i * 30;
    chart.append(svg("rect", { x: 110, y, height: 20, width: Number((v * 270n) / max) || 1, fill: "#1f7a3a" }));
    const t = svg("text", { x: 5, y: y + 15, "font-size": 12 }); t.textContent = `${cat} ${tokens(v)}`; chart.append(t);
  });
  return chart;
}

// ---- tools page -------------------------------------------------------------------------

function toolsView(view) {
  const status = h("p", { class: "notice", role: "status" });
  const body = h("tbody");
  const say = (text, bad) => { status.textContent = text; status.className = bad ? "error" : "notice"; };
  const input = (name, value, label, size) => h("input", { name, value: value || "", "aria-label": label, size });
  function toolRow(t) {
    const price = input("price", t.price, `Price of ${t.tool}`, 8);
    const category = input("category", t.category, `Category of ${t.tool}`, 10);
    const pricing = h("select", { "aria-label": `Pricing of ${t.tool}` }, ...["fixed", "variable"].map((p) => h("option", { value: p, selected: p === t.pricing }, p)));
    const save = async () => {
      try {
        const body = { price: price.value.trim(), category: category.value.trim(), pricing: pricing.value };
        if (t.upstream) body.upstream = t.upstream;
        await api("PUT", `/v1/tools/${encodeURIComponent(t.tool)}`, body); say(`Saved ${t.tool}`); await load();
      } catch (e) { say(e.message, true); }
    };
    const remove = async () => { try { await api("DELETE", `/v1/tools/${encodeURIComponent(t.tool)}`); say(`Deleted ${t.tool}`); await load(); } catch (e) { say(e.message, true); } };
    return h("tr", { "data-tool": t.tool }, h("td", {}, t.tool), h("td", {}, price), h("td", {}, category), h("td", {}, pricing),
      h("td", {}, t.upstream || ""), h("td", {}, h("button", { type: "button", onclick: save }, "Save"), " ",
        h("button", { type: "button", class: "secondary", onclick: remove }, "Delete")));
  }
  async function load() {
    const data = await api("GET", "/v1/tools");
    body.replaceChildren(...data.tools.map(toolRow));
  }
  const newName = input("tool", "", "New tool name", 12), newPrice = input("price", "", "New tool price", 8);
  const newCat = input("category", "tool", "New tool category", 10);
  const addForm = h("form", { class: "row", id: "add-tool", onsubmit: async (e) => {
    e.preventDefault();
    try { await api("PUT", `/v1/tools/${encodeURIComponent(newName.value.trim())}`, { price: newPrice.value.trim(), category: newCat.value.trim() });
      say(`Added ${newName.value}`); newName.value = ""; newPrice.value = ""; await load(); } catch (err) { say(err.message, true); }
  } }, h("label", {}, "Tool", newName), h("label", {}, "Price", newPrice), h("label", {}, "Category", newCat), h("button", { type: "submit" }, "Add tool"));
  view.append(h("h1", {}, "Price catalog"), status, h("div", { class: "card" }, addForm),
    h("div", { class: "table-wrap" }, h("table", { id: "tools" }, h("thead", {}, h("tr", {},
      ...["Tool", "Price per call", "Category", "Pricing", "Upstream", ""].map((t) => h("th", {}, t)))), body)));
  load().catch((e) => say(e.message, true));
}

// ---- start ------------------------------------------------------------------------------

document.getElementById("signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = document.getElementById("token").value.trim();
  sessionStorage.setItem("iou-token", token);
  try { await api("GET", "/v1/agents?limit=1"); document.getElementById("token").value = ""; route(); }
  catch (err) { sessionStorage.removeItem("iou-token"); route(err.code === "forbidden" ? "That is an agent key; use the admin token." : "That token was refused."); }
});
document.getElementById("signout").addEventListener("click", () => signOut(""));
window.addEventListener("hashchange", () => route());
route();
