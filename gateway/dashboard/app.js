// IOU gateway dashboard: plain JS, no build step, no external requests. Every list is paged,
// sorted and filtered by the server, and only what is on screen is polled.
// The admin token lives in sessionStorage only; every call sends it as a bearer header.
"use strict";

const REFRESH_MS = 2000;
const MICROS = 1000000n;
let timer = null;
const extraTimers = [];

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
    err.field = data.field;
    throw err;
  }
  return data;
}

function signOut(message) {
  sessionStorage.removeItem("iou-token");
  route(message);
}

function stopRefresh() {
  if (timer) { clearInterval(timer); timer = null; }
  for (const t of extraTimers.splice(0)) clearInterval(t);
}

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
  else if (hash === "#/usage") usageView(view);
  else overview(view);
}

// ---- overview ---------------------------------------------------------------------------
// One request per refresh: GET /v1/summary answers the page on screen (sorted, filtered
// and paged by the server) and the totals, however many agents the store holds.

const overviewState = { sort: "agent", order: "asc", q: "", frozen: "", limit: 50, cursors: [null] };
const SORTABLE = [["agent", "Agent"], ["balance", "Balance"], ["held", "Held"], ["spent_today", "Spent today / daily cap"]];

function dailyBar(spent, cap) {
  if (!cap) return h("span", { class: "hint" }, "no daily cap");
  const pct = Number((micros(spent) * 100n) / micros(cap));
  const cls = pct >= 100 ? "full" : pct > 80 ? "near" : "";
  return h("span", {}, h("span", { class: "bar", role: "img", "aria-label": `${pct}% of daily cap` },
    h("span", { class: cls, style: `width:${Math.min(pct, 100)}%` })), ` ${spent} / ${cap}`);
}

// A bar of `used` of `cap` (decimal strings), in integer math; `what` names it for readers.
function fillBar(used, cap, what) {
  const pct = micros(cap) > 0n ? Number((micros(used) * 100n) / micros(cap)) : 100;
  const cls = pct >= 100 ? "full" : pct > 80 ? "near" : "";
  return h("span", {}, h("span", { class: "bar", role: "img", "aria-label": `${pct}% of ${what}` },
    h("span", { class: cls, style: `width:${Math.min(pct, 100)}%` })), ` ${used} / ${cap}`);
}

function isLow(a) { return a.low_balance !== null && micros(a.balance) < micros(a.low_balance); }

function summaryQuery(s) {
  const q = new URLSearchParams({ sort: s.sort, order: s.order, limit: String(s.limit) });
  if (s.q) q.set("q", s.q);
  if (s.frozen) q.set("frozen", s.frozen);
  const cursor = s.cursors[s.cursors.length - 1];
  if (cursor) q.set("cursor", cursor);
  return q;
}

function overview(view) {
  const s = overviewState;
  const status = h("p", { class: "notice", role: "status" });
  const say = (text, bad) => { status.textContent = text; status.className = bad ? "error" : "notice"; };
  const restart = () => { s.cursors = [null]; refresh(); };
  let debounce = null;
  const filter = h("input", { type: "search", placeholder: "Filter by name", value: s.q, "aria-label": "Filter agents by name",
    oninput: (e) => { clearTimeout(debounce); debounce = setTimeout(() => {
      s.q = e.target.value.trim().toLowerCase().replace(/[^a-z0-9_.-]/g, "").slice(0, 64); restart(); }, 200); } });
  const frozen = h("select", { "aria-label": "State filter", onchange: (e) => { s.frozen = e.target.value; restart(); } },
    ...[["", "any state"], ["false", "active"], ["true", "frozen"]].map(([v, t]) => h("option", { value: v, selected: s.frozen === v }, t)));
  const size = h("select", { "aria-label": "Rows per page", onchange: (e) => { s.limit = Number(e.target.value); restart(); } },
    ...[25, 50, 100, 250].map((n) => h("option", { value: n, selected: s.limit === n }, `${n} per page`)));
  const totals = h("div", { class: "totals" });
  const body = h("tbody");
  const heads = SORTABLE.map(([key, label]) => h("th", { "data-sort": key }, h("button", { type: "button", onclick: () => {
    s.order = s.sort === key && s.order === "asc" ? "desc" : "asc"; s.sort = key; restart(); } }, label)));
  const prev = h("button", { type: "button", class: "secondary", id: "prev", onclick: () => { s.cursors.pop(); refresh(); } }, "← Previous");
  const next = h("button", { type: "button", class: "secondary", id: "next" }, "Next →");
  const where = h("span", { class: "hint", id: "where" });
  let nextCursor = null;
  next.addEventListener("click", () => { if (nextCursor) { s.cursors.push(nextCursor); refresh(); } });

  const keyOut = h("p", { class: "key", hidden: true, id: "new-key" });
  const name = h("input", { name: "name", required: true, placeholder: "research-agent", pattern: "[a-z0-9_.\\-]{1,64}", "aria-label": "New agent name", size: 16 });
  const grant = h("input", { name: "grant", placeholder: "10", "aria-label": "Opening grant", size: 8 });
  const create = h("form", { class: "row", id: "create-agent", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const body = { name: name.value.trim() };
      if (grant.value.trim()) body.grant = grant.value.trim();
      const r = await api("POST", "/v1/agents", body);
      keyOut.hidden = false;
      keyOut.replaceChildren(`Agent ${r.agent} created with ${r.balance}. Its key, shown this once: `, h("code", {}, r.api_key));
      say(`Created ${r.agent}`); name.value = ""; grant.value = ""; refresh();
    } catch (err) { say(err.message, true); }
  } }, h("label", {}, "New agent", name), h("label", {}, "Grant", grant), h("button", { type: "submit" }, "Create agent"));

  view.append(h("h1", {}, "Agents"), totals, status,
    h("details", { class: "card", id: "create" }, h("summary", {}, "Create an agent"), create, keyOut),
    h("p", { class: "row" }, filter, frozen, size),
    h("div", { class: "table-wrap" }, h("table", { id: "agents" },
      h("thead", {}, h("tr", {}, ...heads, h("th", {}, "State"))), body)),
    h("p", { class: "row pager" }, prev, where, next));

  function draw(page) {
    const t = page.totals;
    totals.replaceChildren(
      h("div", {}, "Agents", h("b", { id: "total-agents" }, t.agents.toLocaleString("en"))),
      h("div", {}, "Balance", h("b", { id: "total-balance" }, t.balance)),
      h("div", {}, "Held", h("b", {}, t.held)),
      h("div", {}, "Spent today", h("b", {}, t.spent_today)),
      h("div", {}, "Frozen", h("b", {}, t.frozen)));
    for (const th of heads) {
      th.setAttribute("aria-sort", th.dataset.sort === page.sort ? (page.order === "asc" ? "ascending" : "descending") : "none");
    }
    body.replaceChildren(...page.agents.map((a) => {
      const low = isLow(a);
      return h("tr", { class: low ? "low" : null, "data-agent": a.agent },
        h("td", {}, h("a", { href: "#/agent/" + encodeURIComponent(a.agent) }, a.agent)),
        h("td", { class: "balance num" }, a.balance, low ? h("span", { class: "badge low" }, " low") : null),
        h("td", { class: "num" }, a.held),
        h("td", {}, dailyBar(a.spent_today, a.daily)),
        h("td", {}, a.frozen ? h("span", { class: "badge frozen" }, "frozen") : "active"));
    }));
    const first = page.matched ? page.position + 1 : 0;
    where.textContent = `${first.toLocaleString("en")}–${(page.position + page.agents.length).toLocaleString("en")} of ` +
      `${page.matched.toLocaleString("en")} · figures as of ${page.as_of.slice(11, 19)} UTC`;
    nextCursor = page.next_cursor;
    next.disabled = !nextCursor;
    prev.disabled = s.cursors.length < 2;
  }
  // A user's change (sort, filter, page) asks at once; only the newest answer is drawn. The
  // 2 s poll skips a beat while an answer is outstanding or the tab is hidden.
  let asked = 0, inFlight = 0;
  async function refresh() {
    const mine = ++asked;
    inFlight += 1;
    try { const page = await api("GET", "/v1/summary?" + summaryQuery(s)); if (mine === asked) draw(page); }
    catch (e) { say(e.message, true); }
    finally { inFlight -= 1; }
  }
  refresh();
  timer = setInterval(() => { if (!inFlight && !document.hidden) refresh(); }, REFRESH_MS);
}

// ---- agent page -------------------------------------------------------------------------

// ---- walls beyond the balance: a fill bar per wall the limits set ("walls" of GET
// /v1/agents/{agent}), each row named by its limit path (data-wall), and the limits form's
// inputs for them. Spend walls count spent + held; call walls count calls.
const SPEND_WALLS = [["hourly", "Last 60 minutes"], ["weekly", "This week"], ["monthly", "This month"]];
const CALL_WALLS = [["per_minute", "Calls this minute", "nm"], ["per_hour", "Calls this hour", "nh"],
                    ["per_day", "Calls today", "nd"]];

function wallRows(walls, path, scope) {
  const rows = [];
  const row = (key, text, used, max, what) => rows.push(h("tr", { "data-wall": path + key },
    h("th", { scope: "row" }, scope ? `${text} (${scope})` : text),
    h("td", {}, fillBar(used, max, `the ${scope ? scope.split(" ")[1] + " " : ""}${what} cap`))));
  for (const [key, text] of SPEND_WALLS) {
    if (walls[key]) row(key, text, walls[key].used, walls[key].max, key);
  }
  for (const [key, text] of CALL_WALLS) {
    const w = walls.calls && walls.calls[key];
    if (w) row("calls." + key, text, String(w.used), String(w.max), "calls " + key.replace("_", " "));
  }
  return rows;
}

function wallsTable(walls) {
  const rows = wallRows(walls, "", "");
  for (const [cat, w] of Object.entries(walls.categories || {})) rows.push(...wallRows(w, `categories.${cat}.`, `category ${cat}`));
  for (const [tool, w] of Object.entries(walls.tools || {})) rows.push(...wallRows(w, `tools.${tool}.`, `tool ${tool}`));
  if (!rows.length) return h("p", { class: "hint" }, "No hourly, weekly, monthly or call caps set.");
  return h("div", { class: "table-wrap" }, h("table", { id: "walls" }, h("tbody", {}, ...rows)));
}

// A call count as the limits object takes it: a whole number, or the text as typed (the
// server refuses it with a message naming the field), or null when empty (removes the cap).
function count(text) {
  const v = text.trim();
  return v === "" ? null : /^[0-9]+$/.test(v) ? Number(v) : v;
}
function amount(text) { return text.trim() || null; }

// The inputs of one category or tool row: class <prefix>-<short> (e.g. cat-hr, tool-nd).
function capInputs(prefix, caps, spend) {
  const input = (short, label, value) => h("label", {}, label,
    h("input", { class: `${prefix}-${short}`, value: value === undefined || value === null ? "" : value, size: 6 }));
  const calls = caps.calls || {};
  return [...spend.map(([short, key, label]) => input(short, label, caps[key])),
          ...CALL_WALLS.map(([key, , short]) => input(short, `Calls/${key.slice(4)}`, calls[key]))];
}
const CAT_SPEND = [["pc", "per_call", "Per call"], ["dl", "daily", "Daily"], ["hr", "hourly", "Hourly"],
                   ["wk", "weekly", "Weekly"], ["mo", "monthly", "Monthly"]];
const TOOL_SPEND = [["pc", "per_call", "Per call"]];

// A row's patch: {key: value} for its spend caps and {calls: {...}}; each input is tagged
// with the limit path it sets (data-field), so a refusal naming that path can mark it.
function capPatch(row, prefix, spend, path) {
  const out = { calls: {} };
  for (const [short, key] of spend) {
    const el = row.querySelector(`.${prefix}-${short}`);
    el.dataset.field = path + key;
    out[key] = amount(el.value);
  }
  for (const [key, , short] of CALL_WALLS) {
    const el = row.querySelector(`.${prefix}-${short}`);
    el.dataset.field = `${path}calls.${key}`;
    out.calls[key] = count(el.value);
  }
  return out;
}

// The agent-level walls of the limits form: hourly/weekly/monthly, call caps, the loop breaker
// and require_task; fill(limits) shows them, patch() reads them back (empty = removed).
function wallsInputs() {
  const input = (key, label, attrs = {}) => h("label", {}, label,
    h("input", { name: key, "data-field": key.replace("calls_", "calls.").replace("loop_", "loop."), size: 7, ...attrs }));
  const el = h("div", {},
    h("div", { class: "row" }, ...SPEND_WALLS.map(([key]) => input(key, key[0].toUpperCase() + key.slice(1))),
      ...CALL_WALLS.map(([key]) => input("calls_" + key, `Calls/${key.slice(4)}`))),
    h("div", { class: "row" }, input("loop_repeats", "Loop: repeats"), input("loop_window_s", "within (s)"),
      h("label", {}, "then", h("select", { name: "loop_action", "data-field": "loop.action" },
        h("option", { value: "refuse" }, "refuse"), h("option", { value: "freeze" }, "freeze"))),
      h("label", {}, "Require a task", h("input", { name: "require_task", type: "checkbox", "data-field": "require_task" }))));
  const get = (key) => el.querySelector(`[name=${key}]`);
  return {
    el,
    fill(limits) {
      for (const [key] of SPEND_WALLS) get(key).value = limits[key] || "";
      for (const [key] of CALL_WALLS) get("calls_" + key).value = (limits.calls || {})[key] || "";
      get("loop_repeats").value = limits.loop ? limits.loop.repeats : "";
      get("loop_window_s").value = limits.loop ? limits.loop.window_s : "";
      get("loop_action").value = limits.loop ? limits.loop.action : "refuse";
      get("require_task").checked = Boolean(limits.require_task);
    },
    patch() {
      const out = { calls: {} };
      for (const [key] of SPEND_WALLS) out[key] = amount(get(key).value);
      for (const [key] of CALL_WALLS) out.calls[key] = count(get("calls_" + key).value);
      const repeats = count(get("loop_repeats").value), windowS = count(get("loop_window_s").value);
      out.loop = repeats === null && windowS === null ? null
        : { repeats, window_s: windowS, action: get("loop_action").value };
      out.require_task = get("require_task").checked ? true : null;
      return out;
    },
  };
}

// ---- shadow limits: the shadow caps beside the enforced ones, each with the would-be
// refusals of its limit name (GET /v1/agents/{agent}/shadow), and "Promote to enforced":
// one PATCH that makes each shadow cap the enforced one and clears the shadow object.

// The caps of a limits object as [path, value] rows: per_call, calls.per_day,
// categories.llm.hourly, tools.web_browse.calls.per_minute, require_task.
function capRows(lim, path = "") {
  const rows = [];
  for (const [key, value] of Object.entries(lim || {})) {
    if (["low_balance", "webhook_url", "loop", "shadow"].includes(key) || value === null || value === false) continue;
    if (typeof value === "object") rows.push(...capRows(value, `${path}${key}.`));
    else rows.push([path + key, value]);
  }
  return rows;
}

// The `limit` name a cap's refusal carries (what the shadow sums are counted by).
function limitName(path) {
  const parts = path.split(".");
  const last = parts[parts.length - 1];
  if (path === "require_task") return "task_required";
  if (parts[parts.length - 2] === "calls") return "calls_" + last;
  if (parts[0] === "tools") return "tool_" + last;
  return (parts[0] === "categories" ? "category_" : "") + last;
}

function capAt(lim, path) {
  return path.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), lim);
}

// The PATCH that promotes: every shadow cap set as the enforced one, the shadow cleared.
function promotePatch(shadow) {
  const patch = { shadow: null };
  for (const [path, value] of capRows(shadow)) {
    const keys = path.split(".");
    let at = patch;
    for (const k of keys.slice(0, -1)) at = at[k] = at[k] || {};
    at[keys[keys.length - 1]] = value;
  }
  return patch;
}

function shadowCard(name, act, say, refreshAll) {
  const card = h("div", { class: "card", id: "shadow-card" });
  const path = `/v1/agents/${encodeURIComponent(name)}`;
  let shadow = null;
  const promote = h("button", { type: "button", id: "promote", onclick: act(async () => {
    await api("PATCH", `${path}/limits`, promotePatch(shadow));
    say("Shadow limits promoted to enforced"); await refreshAll();
  }) }, "Promote to enforced");
  const clear = h("button", { type: "button", class: "secondary", id: "shadow-clear", onclick: act(async () => {
    await api("PATCH", `${path}/limits`, { shadow: null });
    say("Shadow limits cleared"); await refreshAll();
  }) }, "Clear shadow limits");
  async function draw(limits) {
    shadow = limits.shadow || null;
    const title = h("h2", {}, "Shadow limits");
    if (!shadow) {
      card.replaceChildren(title, h("p", { class: "hint" }, "No shadow limits: set some with iou limits --shadow (checked on every call, never refusing)."));
      return;
    }
    const sums = await api("GET", `${path}/shadow`);
    const counted = new Set();
    const rows = capRows(shadow).map(([cap, value]) => {
      const limit = limitName(cap);
      const seen = sums.refusals[limit];
      counted.add(limit);
      const enforced = capAt(limits, cap);
      return h("tr", { "data-shadow": cap }, h("th", { scope: "row" }, cap), h("td", {}, String(value)),
        h("td", {}, enforced === undefined || enforced === null || enforced === false ? "-" : String(enforced)),
        h("td", { class: "num" }, seen ? String(seen.count) : "0"), h("td", { class: "num" }, seen ? seen.amount : "0"));
    });
    // Refusals of limits no longer in the shadow object (their sums are kept).
    for (const [limit, seen] of Object.entries(sums.refusals)) {
      if (!counted.has(limit)) rows.push(h("tr", { "data-shadow-past": limit }, h("th", { scope: "row" }, limit),
        h("td", { class: "hint" }, "(earlier)"), h("td", {}, ""), h("td", { class: "num" }, String(seen.count)), h("td", { class: "num" }, seen.amount)));
    }
    card.replaceChildren(title,
      h("p", { class: "hint" }, `Would have refused ${sums.total.count} calls (${sums.total.amount}); every call succeeded.`),
      h("div", { class: "table-wrap" }, h("table", { id: "shadow" }, h("thead", {}, h("tr", {},
        ...["Limit", "Shadow cap", "Enforced cap", "Would-be refusals", "Amount"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...rows))),
      h("p", { class: "row" }, promote, clear));
  }
  return { el: card, draw };
}

function agentView(view, name) {
  const status = h("p", { class: "notice", role: "status" });
  const summary = h("div", { class: "totals" });
  const charts = h("div", { class: "grid2" });
  const ledgerBody = h("tbody");
  let entries = [], cursor = null;
  const kind = h("select", { "aria-label": "Kind filter" }, ...["", "charge", "fund", "grant", "hold", "capture", "release", "expire", "refund", "debit", "transfer_out", "transfer_in"].map((k) => h("option", { value: k }, k || "all kinds")));
  const tool = h("input", { placeholder: "tool", "aria-label": "Tool filter", size: 12 });
  const more = h("button", { type: "button", class: "secondary", onclick: () => loadLedger(false) }, "Older entries");

  const say = (text, bad) => { status.textContent = text; status.className = bad ? "error" : "notice"; };
  const act = (fn) => async (e) => {
    e.preventDefault();
    for (const el of view.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    try { await fn(e); } catch (err) { say(err.field && !err.message.includes(err.field) ? `${err.field}: ${err.message}` : err.message, true); markInvalid(err.field); }
  };
  // The input of the limit path a refusal names (data-field), marked and focused.
  const markInvalid = (field) => {
    const el = field && [...view.querySelectorAll("[data-field]")].find((i) => i.dataset.field === field);
    if (el) { el.setAttribute("aria-invalid", "true"); el.focus(); }
  };

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
  const keysBody = h("tbody");
  const keyBtn = h("button", { type: "button", class: "secondary", onclick: act(async () => {
    const r = await api("POST", `/v1/agents/${encodeURIComponent(name)}/keys`);
    keyOut.hidden = false; keyOut.textContent = `New key ${r.key_id} (shown once): ${r.api_key}`;
    await loadKeys();
  }) }, "New key");
  async function loadKeys() {
    const data = await api("GET", `/v1/agents/${encodeURIComponent(name)}/keys`);
    keysBody.replaceChildren(...data.keys.map((k) => h("tr", { "data-key": k.key_id },
      h("td", {}, h("code", {}, k.key_id)), h("td", {}, k.created_at || ""), h("td", {}, k.last_used_at || "never"))));
  }
  const usage = usageCard(name);
  // The agent's recent tasks: each budget's spent + held as a bar, its calls and state.
  const tasksBody = h("tbody");
  async function loadTasks() {
    const data = await api("GET", `/v1/agents/${encodeURIComponent(name)}/tasks?limit=20`);
    tasksBody.replaceChildren(...(data.tasks.length ? data.tasks.map((t) => {
      const used = tokens(micros(t.spent) + micros(t.held));
      return h("tr", { "data-task": t.task_id }, h("td", {}, t.name || h("code", {}, t.task_id)),
        h("td", {}, t.state), h("td", {}, fillBar(used, t.budget, "the task's budget")),
        h("td", { class: "num" }, String(t.calls)), h("td", {}, t.expires_at));
    }) : [h("tr", {}, h("td", { colspan: 5, class: "hint" }, "No tasks."))]));
  }
  // The family as a tree: the parent (if any) above this agent, its sub-agents below, each a
  // link; a sub-agent's Reclaim moves what it has left back to this agent.
  const family = h("div", { id: "family" });
  async function loadFamily() {
    const f = await api("GET", `/v1/agents/${encodeURIComponent(name)}/children`);
    const link = (n) => h("a", { href: `#/agent/${encodeURIComponent(n)}` }, n);
    const kids = f.children.map((c) => h("li", { "data-child": c.agent }, link(c.agent), ` ${c.balance} `,
      h("button", { type: "button", class: "secondary reclaim", onclick: act(async () => {
        const r = await api("POST", `/v1/agents/${encodeURIComponent(c.agent)}/reclaim`);
        say(`Reclaimed ${r.amount} from ${c.agent}`); await refresh(); await loadFamily();
      }) }, "Reclaim")));
    const self = h("li", {}, h("b", {}, name), kids.length ? h("ul", {}, ...kids) : null);
    family.replaceChildren(f.parent ? h("ul", { class: "tree" }, h("li", {}, link(f.parent), h("ul", {}, self)))
      : h("ul", { class: "tree" }, self));
  }

  const fields = {};
  const limitInput = (key, label) => (fields[key] = h("input", { name: key, "aria-label": label, size: 10 }),
    h("label", {}, label, fields[key]));
  const catRows = h("div");
  const addCat = (cat = "", caps = {}) => catRows.append(h("div", { class: "row cat" },
    h("label", {}, "Category", h("input", { class: "cat-name", value: cat, size: 10 })),
    ...capInputs("cat", caps, CAT_SPEND)));
  const toolRows = h("div");
  const addTool = (tool = "", caps = {}) => toolRows.append(h("div", { class: "row tool" },
    h("label", {}, "Tool", h("input", { class: "tool-name", value: tool, size: 12 })),
    ...capInputs("tool", caps, TOOL_SPEND)));
  const wallsFields = wallsInputs();
  const limitsForm = h("form", { id: "limits", onsubmit: act(async () => {
    const patch = {};
    for (const key of ["per_call", "daily", "low_balance", "webhook_url"]) patch[key] = fields[key].value.trim() || null;
    patch.categories = {};
    for (const row of catRows.querySelectorAll(".cat")) {
      const cat = row.querySelector(".cat-name").value.trim();
      if (cat) patch.categories[cat] = capPatch(row, "cat", CAT_SPEND, `categories.${cat}.`);
    }
    patch.tools = {};
    for (const row of toolRows.querySelectorAll(".tool")) {
      const tool = row.querySelector(".tool-name").value.trim();
      if (tool) patch.tools[tool] = capPatch(row, "tool", TOOL_SPEND, `tools.${tool}.`);
    }
    Object.assign(patch, wallsFields.patch());
    await api("PATCH", `/v1/agents/${encodeURIComponent(name)}/limits`, patch);
    say("Limits saved"); await refresh();
  }) }, h("div", { class: "row" }, limitInput("per_call", "Per call"), limitInput("daily", "Daily"),
      limitInput("low_balance", "Low balance"), limitInput("webhook_url", "Webhook URL")),
    wallsFields.el, catRows, toolRows,
    h("p", { class: "row" }, h("button", { type: "button", class: "secondary", onclick: () => addCat() }, "Add category"),
      h("button", { type: "button", class: "secondary", onclick: () => addTool() }, "Add tool"),
      h("button", { type: "submit" }, "Save limits")));
  const wallsCard = h("div", { class: "card", id: "walls-card" });
  const shadow = shadowCard(name, act, say, async () => { limitsLoaded = false; await refresh(); });

  view.append(h("p", {}, h("a", { href: "#/" }, "← Agents")), h("h1", {}, name), status, summary,
    h("div", { class: "card" }, fundForm, h("p", { class: "row" }, freezeBtn, keyBtn), keyOut),
    wallsCard, shadow.el, charts, usage,
    h("div", { class: "card" }, h("h2", {}, "Keys"), h("p", { class: "hint" }, "Key ids only: a key is shown once, when it is made."),
      h("div", { class: "table-wrap" }, h("table", { id: "keys" }, h("thead", {}, h("tr", {},
        ...["Key id", "Created", "Last used"].map((t) => h("th", {}, t)))), keysBody))),
    h("div", { class: "card" }, h("h2", {}, "Tasks"),
      h("div", { class: "table-wrap" }, h("table", { id: "tasks" }, h("thead", {}, h("tr", {},
        ...["Task", "State", "Spent + held of budget", "Calls", "Expires"].map((t) => h("th", {}, t)))), tasksBody))),
    h("div", { class: "card" }, h("h2", {}, "Limits"), limitsForm),
    h("div", { class: "card" }, h("h2", {}, "Family"), family),
    h("div", { class: "card" }, h("h2", {}, "Ledger"),
      h("div", { class: "row" }, h("label", {}, "Kind", kind), h("label", {}, "Tool", tool),
        h("button", { type: "button", class: "secondary", onclick: () => loadLedger(true) }, "Apply"),
        h("button", { type: "button", class: "secondary", id: "csv", onclick: exportCsv }, "Export CSV")),
      h("div", { class: "table-wrap" }, h("table", { id: "ledger" }, h("thead", {}, h("tr", {},
        ...["At", "Kind", "Tool", "Category", "Amount", "Balance after", "Note", ""].map((t) => h("th", {}, t)))), ledgerBody)),
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
    wallsCard.replaceChildren(h("h2", {}, "Walls"), wallsTable(a.walls || {}));
    await shadow.draw(a.limits);
    freezeBtn.textContent = a.frozen ? "Unfreeze" : "Freeze";
    freezeBtn.dataset.frozen = String(a.frozen);
    if (!limitsLoaded) {
      for (const key of ["per_call", "daily", "low_balance", "webhook_url"]) fields[key].value = a.limits[key] || "";
      catRows.replaceChildren();
      for (const [cat, caps] of Object.entries(a.limits.categories)) addCat(cat, caps);
      toolRows.replaceChildren();
      for (const [tool, caps] of Object.entries(a.limits.tools || {})) addTool(tool, caps);
      wallsFields.fill(a.limits);
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
      h("td", {}, e.amount), h("td", {}, e.balance_after || ""),
      h("td", {}, [e.ref, e.reason].filter(Boolean).join(" · ")),
      h("td", {}, (e.kind === "charge" || e.kind === "capture") && e.amount !== "0"
        ? h("button", { type: "button", class: "secondary refund", onclick: act(() => refundRow(e)) }, "Refund")
        : ""))));
  }

  // A refund of one charge row: the amount asked for (empty: what is left), then a reason.
  async function refundRow(e) {
    const amount = window.prompt(`Refund how much of ${e.amount} (empty: all that is left)?`, "");
    if (amount === null) return;
    const reason = window.prompt("Reason (optional)", "") || undefined;
    const body = amount.trim() ? { amount: amount.trim(), reason } : { reason };
    const r = await api("POST", `/v1/charges/${encodeURIComponent(e.entry_id)}/refund`, body);
    say(`Refunded ${r.amount}: balance ${r.balance}`);
    await refresh();
    await loadLedger(true);
  }

  function exportCsv() {
    const cols = ["entry_id", "at", "kind", "tool", "category", "amount", "balance_after", "idempotency_key", "hold_id"];
    const esc = (v) => (v === null || v === undefined ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
    const text = [cols.join(",")].concat(entries.map((e) => cols.map((c) => esc(e[c])).join(","))).join("\n") + "\n";
    download(text, `${name}-ledger.csv`);
  }

  async function drawCharts() {
    // The ledger page already on screen (newest 100 entries) draws the balance line.
    charts.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Balance over time"), balanceChart(entries)));
  }

  const tick = async () => {
    if (document.hidden) return;
    try { await refresh(); await loadLedger(true); await drawCharts(); await loadTasks(); } catch (e) { say(e.message, true); }
  };
  const usageTick = () => { if (!document.hidden) usage.load().catch((e) => say(e.message, true)); };
  tick(); usageTick(); loadKeys().catch((e) => say(e.message, true));
  loadFamily().catch((e) => say(e.message, true));
  timer = setInterval(tick, REFRESH_MS);
  extraTimers.push(setInterval(usageTick, usage.every));
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// A chart frame with axes: time (UTC) along x, tokens along y, ticks and labels on both.
// Positions are drawn with Numbers; the labels come from the decimal strings' math in micros.
const CHART = { w: 560, h: 220, left: 58, right: 30, top: 24, bottom: 36 };
function niceStep(maxMicros) {
  const raw = Number(maxMicros) / 4;
  const pow = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((v) => v >= raw) || pow * 10;
  return BigInt(Math.max(1, Math.round(step)));
}
function timeText(ms, spanMs) {
  const iso = new Date(ms).toISOString();
  if (spanMs > 2 * 86400000) return iso.slice(5, 10);
  if (spanMs > 43200000) return iso.slice(5, 10) + " " + iso.slice(11, 16);
  return spanMs > 900000 ? iso.slice(11, 16) : iso.slice(11, 19);
}
function frame(label, t0, t1, maxMicros, width) {
  const c = { ...CHART, w: width || CHART.w }, pw = c.w - c.left - c.right, ph = c.h - c.top - c.bottom;
  const chart = svg("svg", { viewBox: `0 0 ${c.w} ${c.h}`, role: "img", "aria-label": label, class: "chart" });
  const step = niceStep(maxMicros > 0n ? maxMicros : MICROS);
  const top = ((maxMicros > 0n ? maxMicros : MICROS) + step - 1n) / step * step;
  const x = (t) => c.left + ((t - t0) / Math.max(t1 - t0, 1)) * pw;
  const y = (m) => c.top + ph - (Number(m) / Number(top)) * ph;
  const axis = svg("g", { class: "axis" });
  for (let v = 0n; v <= top; v += step) {
    axis.append(svg("line", { x1: c.left, x2: c.w - c.right, y1: y(v), y2: y(v), class: v === 0n ? "base" : "grid" }),
      svg("text", { x: c.left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick y-tick" }, tokens(v)));
  }
  const ticks = 5;
  for (let i = 0; i <= ticks; i++) {
    const t = t0 + ((t1 - t0) * i) / ticks;
    axis.append(svg("line", { x1: x(t), x2: x(t), y1: c.top + ph, y2: c.top + ph + 4, class: "base" }),
      svg("text", { x: x(t), y: c.h - c.bottom + 18, "text-anchor": "middle", class: "tick x-tick" }, timeText(t, t1 - t0)));
  }
  axis.append(svg("text", { x: c.w - c.right, y: c.h - 4, "text-anchor": "end", class: "tick" }, "time (UTC)"),
    svg("text", { x: 4, y: 12, class: "tick" }, "tokens"));
  chart.append(axis);
  return { chart, x, y, pw, ph, top };
}

function balanceChart(entries) {
  const points = entries.filter((e) => e.balance_after !== null).map((e) => [Date.parse(e.at), micros(e.balance_after)]).reverse();
  if (points.length < 2) {
    const chart = svg("svg", { viewBox: `0 0 ${CHART.w} ${CHART.h}`, role: "img", "aria-label": "Balance over time", class: "chart" });
    chart.append(svg("text", { x: 10, y: 90 }, "Not enough entries yet"));
    return chart;
  }
  const t0 = points[0][0], t1 = Math.max(points[points.length - 1][0], t0 + 1000);
  const max = points.reduce((m, p) => (p[1] > m ? p[1] : m), 0n);
  const f = frame("Balance over time", t0, t1, max);
  const xy = points.map(([t, v]) => `${f.x(t).toFixed(1)},${f.y(v).toFixed(1)}`);
  f.chart.append(svg("polyline", { points: xy.join(" "), fill: "none", stroke: "#2453d6", "stroke-width": 2, class: "line" }));
  return f.chart;
}

// ---- usage: stacked bars per hour or day, by tool or category, from the ledger ------------

const PALETTE = ["#2453d6", "#1f7a3a", "#a15c00", "#b3261e", "#6b3fa0", "#0f7c8c", "#8a6d1d", "#c2457a", "#4b5563", "#3f8f2f"];
const PERIOD_MS = { hour: 3600000, day: 86400000 };
const RANGES = [["24h", "last 24 hours", 86400000, "hour"], ["7d", "last 7 days", 7 * 86400000, "hour"],
  ["30d", "last 30 days", 30 * 86400000, "day"], ["365d", "last 365 days", 365 * 86400000, "day"]];

function usageChart(report) {
  const width = PERIOD_MS[report.period], by = report.by;
  const t0 = Date.parse(report.since), t1 = Date.parse(report.until);
  const keys = report.totals.slice().sort((a, b) => (micros(b.amount) > micros(a.amount) ? 1 : -1)).map((t) => t[by]);
  const color = (k) => PALETTE[keys.indexOf(k) % PALETTE.length];
  const stacks = new Map();
  for (const r of report.rows) {
    const start = Date.parse(r.start);
    if (!stacks.has(start)) stacks.set(start, []);
    stacks.get(start).push(r);
  }
  let max = 0n;
  for (const rows of stacks.values()) { const s = rows.reduce((a, r) => a + micros(r.amount), 0n); if (s > max) max = s; }
  const f = frame(`Spending per ${report.period} by ${by}`, t0, t1, max, 900);
  const barW = Math.max(1, (f.pw * width) / Math.max(t1 - t0, 1) - 1);
  for (const [start, rows] of stacks) {
    let base = 0n;
    rows.sort((a, b) => keys.indexOf(a[by]) - keys.indexOf(b[by]));
    for (const r of rows) {
      const top = base + micros(r.amount);
      const rect = svg("rect", { x: f.x(start) + 0.5, y: f.y(top), width: barW, height: Math.max(0.5, f.y(base) - f.y(top)),
        fill: color(r[by]), "data-key": r[by], class: "seg" });
      rect.append(svg("title", {}, `${r.start} ${r[by]}: ${r.amount} (${r.calls} calls)`));
      f.chart.append(rect);
      base = top;
    }
  }
  const legend = h("ul", { class: "legend" }, ...report.totals.map((t) => h("li", {},
    h("span", { class: "swatch", style: `background:${color(t[by])}` }), `${t[by]} ${t.amount} (${t.calls} calls)`)));
  return h("div", {}, f.chart, legend);
}

function usageCsv(report) {
  const by = report.by;
  const lines = [["start", by, "calls", "amount"].join(",")].concat(report.rows.map((r) => [r.start, r[by], r.calls, r.amount].join(",")));
  return lines.join("\n") + "\n";
}

function download(text, filename) {
  const link = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/csv" })), download: filename });
  document.body.append(link); link.click(); link.remove();
}

// A card with the usage of one agent (or all agents when `agent` is null), refreshed every
// USAGE_REFRESH_MS while on screen: the ledger changes by the second, not by the frame.
const USAGE_REFRESH_MS = 10000;
function usageCard(agent) {
  const state = { by: "tool", range: "24h" };
  const body = h("div", { class: "usage-chart" });
  const total = h("p", { class: "hint" });
  const by = h("select", { "aria-label": "Group by", name: "by", onchange: (e) => { state.by = e.target.value; load(); } },
    h("option", { value: "tool" }, "by tool"), h("option", { value: "category" }, "by category"));
  const range = h("select", { "aria-label": "Range", name: "range", onchange: (e) => { state.range = e.target.value; load(); } },
    ...RANGES.map(([v, t]) => h("option", { value: v }, t)));
  let report = null;
  const csv = h("button", { type: "button", class: "secondary", id: agent ? "usage-csv" : "all-usage-csv", onclick: () => {
    if (report) download(usageCsv(report), `${agent || "all-agents"}-usage-${report.period}-${report.by}.csv`); } }, "Export CSV");
  async function load() {
    const [, , span, period] = RANGES.find((r) => r[0] === state.range);
    const q = new URLSearchParams({ by: state.by, period, since: new Date(Date.now() - span).toISOString().slice(0, 19) + "Z" });
    const path = agent ? `/v1/agents/${encodeURIComponent(agent)}/usage?${q}` : `/v1/usage?${q}`;
    report = await api("GET", path);
    body.replaceChildren(usageChart(report));
    total.textContent = `Total ${report.total.amount} tokens in ${report.total.calls} paid calls, ${report.since.slice(0, 16)} to ${report.until.slice(0, 16)} UTC`;
  }
  const card = h("div", { class: "card usage", id: agent ? "usage" : "all-usage" },
    h("h2", {}, agent ? "Usage" : "Usage of all agents"), h("div", { class: "row" }, by, range, csv), body, total);
  card.load = load;
  card.every = USAGE_REFRESH_MS;
  return card;
}

function usageView(view) {
  const card = usageCard(null);
  const status = h("p", { class: "error", role: "status" });
  view.append(h("h1", {}, "Usage"), status, card);
  const tick = () => { if (!document.hidden) card.load().catch((e) => { status.textContent = e.message; }); };
  tick();
  timer = setInterval(tick, USAGE_REFRESH_MS);
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
  // Upstream MCP servers beside the catalog: each upstream tool is offered to agents as
  // <server>.<tool> only while the catalog prices that name ("Price it" fills the form).
  const mcpBody = h("tbody");
  function mcpRows(servers, priced) {
    return servers.flatMap((srv) => (srv.tools.length ? srv.tools : [null]).map((tool, i) => {
      const full = tool === null ? "" : `${srv.server}.${tool}`;
      const entry = priced.get(full);
      const offer = tool === null ? "no tools" : entry ? `offered at ${entry.price} (${entry.category})`
        : h("button", { type: "button", class: "secondary", onclick: () => { newName.value = full; newPrice.focus(); } }, "Price it");
      const remove = async () => { try { await api("DELETE", `/v1/mcp/servers/${encodeURIComponent(srv.server)}`); say(`Removed ${srv.server}`); await load(); } catch (e) { say(e.message, true); } };
      return h("tr", { "data-mcp-tool": full || srv.server },
        h("td", {}, i === 0 ? srv.server : ""), h("td", {}, i === 0 ? srv.url : ""),
        h("td", {}, tool === null ? "" : h("code", {}, full)), h("td", {}, offer),
        h("td", {}, i === 0 ? h("button", { type: "button", class: "secondary", onclick: remove }, "Remove") : ""));
    }));
  }
  async function load() {
    const [data, mcp] = await Promise.all([api("GET", "/v1/tools"), api("GET", "/v1/mcp/servers")]);
    body.replaceChildren(...data.tools.map(toolRow));
    mcpBody.replaceChildren(...mcpRows(mcp.servers, new Map(data.tools.map((t) => [t.tool, t]))));
  }
  const srvName = input("server", "", "MCP server name", 10), srvUrl = input("url", "", "MCP server URL", 28);
  const srvHeaders = input("headers", "", "MCP server headers (JSON)", 24);
  const mcpForm = h("form", { class: "row", id: "add-mcp", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const body = { url: srvUrl.value.trim() };
      if (srvHeaders.value.trim()) body.headers = JSON.parse(srvHeaders.value);
      const r = await api("PUT", `/v1/mcp/servers/${encodeURIComponent(srvName.value.trim())}`, body);
      say(`Registered ${r.server}: ${r.tools.length} tools`); srvHeaders.value = ""; await load();
    } catch (err) { say(err.message, true); }
  } }, h("label", {}, "Server", srvName), h("label", {}, "URL", srvUrl), h("label", {}, "Headers", srvHeaders),
    h("button", { type: "submit" }, "Register"));
  const newName = input("tool", "", "New tool name", 12), newPrice = input("price", "", "New tool price", 8);
  const newCat = input("category", "tool", "New tool category", 10);
  const addForm = h("form", { class: "row", id: "add-tool", onsubmit: async (e) => {
    e.preventDefault();
    try { await api("PUT", `/v1/tools/${encodeURIComponent(newName.value.trim())}`, { price: newPrice.value.trim(), category: newCat.value.trim() });
      say(`Added ${newName.value}`); newName.value = ""; newPrice.value = ""; await load(); } catch (err) { say(err.message, true); }
  } }, h("label", {}, "Tool", newName), h("label", {}, "Price", newPrice), h("label", {}, "Category", newCat), h("button", { type: "submit" }, "Add tool"));
  view.append(h("h1", {}, "Price catalog"), status, h("div", { class: "card" }, addForm),
    h("div", { class: "table-wrap" }, h("table", { id: "tools" }, h("thead", {}, h("tr", {},
      ...["Tool", "Price per call", "Category", "Pricing", "Upstream", ""].map((t) => h("th", {}, t)))), body)),
    h("div", { class: "card" }, h("h2", {}, "MCP servers"),
      h("p", { class: "hint" }, "Agents reach an upstream MCP server's tools at /mcp as server.tool, each only while the catalog prices that name. Headers are stored encrypted and never shown again."),
      mcpForm, h("div", { class: "table-wrap" }, h("table", { id: "mcp-servers" }, h("thead", {}, h("tr", {},
        ...["Server", "URL", "Tool", "Offered", ""].map((t) => h("th", {}, t)))), mcpBody))));
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
