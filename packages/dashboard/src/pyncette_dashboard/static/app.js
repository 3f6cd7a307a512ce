// Pyncette dashboard: one page, hash routes, data from the JSON API (api/...), refreshed periodically.
"use strict";

const config = JSON.parse(document.body.dataset.config || "{}");
const state = { view: null, timer: null, pages: [], continuation: null, scan: null, typed: {} };

// -- DOM helpers (text only: data is never parsed as HTML) -------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "className") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);

function when(m) {
  if (!m) return h("span", { className: "muted" }, "-");
  const local = m.local.replace("T", " ").replace(/\.\d+/, "");
  const utc = m.utc.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC");
  return h("span", { className: "when", title: "UTC: " + utc }, local, h("span", { className: "utc" }, utc));
}
function seconds(value) {
  if (!value || value < 1) return h("span", { className: "muted" }, "on time");
  const s = Math.round(value);
  const text = s < 120 ? s + " s" : s < 7200 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h";
  return h("span", { className: s > 60 ? "warn" : "" }, text + " late");
}
function outcome(value) {
  if (!value) return h("span", { className: "muted" }, "-");
  return h("span", { className: value === "succeeded" ? "ok" : value === "skipped" ? "" : "bad" }, value);
}
function schedule(s) {
  if (!s) return h("span", { className: "muted" }, "per instance");
  const exact = s.cron ? h("code", {}, s.cron) : s.interval_seconds ? h("code", {}, s.interval_seconds + " s")
    : s.execute_at ? h("code", {}, s.execute_at) : null;
  return h("span", {}, s.words, " ", exact);
}
function pausedTag(p) {
  if (!p) return null;
  const who = [p.by ? "by " + p.by : "", p.at ? "since " + p.at.slice(0, 19).replace("T", " ") : ""];
  return h("span", { className: "tag paused", title: [p.note || "", ...who].filter(Boolean).join(" - ") },
    "paused" + (p.scope !== "task" ? " (" + p.scope + " " + p.match + ")" : ""));
}
function taskLink(name) { return h("a", { href: "#/task/" + encodeURIComponent(name) }, name); }
function instanceLink(task, name) {
  return h("a", { href: "#/task/" + encodeURIComponent(task) + "/i/" + encodeURIComponent(name) }, name);
}

// -- API ------------------------------------------------------------------------------------------------------
async function api(path) {
  const response = await fetch("api/" + path, { headers: { Accept: "application/json" }, cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || response.status + " " + response.statusText);
  return body;
}

async function act(task, action, body) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (config.actions === "token") headers[config.tokenHeader] = $("token").value;
  if (config.actions === "hook") headers[config.csrfHeader] = "1";
  showNotice(null);
  try {
    const response = await fetch("api/tasks/" + encodeURIComponent(task) + "/" + action, {
      method: "POST", headers, body: JSON.stringify(body || {}), credentials: "same-origin",
    });
    const result = await response.json().catch(() => ({}));
    if (!response.ok) {
      showError(action + " refused: " + ((result.error && result.error.message) || response.status));
      return null;
    }
    showError(null);
    const target = task + (body && body.instance ? "/" + body.instance : "") + (body && body.prefix ? " prefix " + body.prefix : "");
    showNotice(action + " " + target + ": " + (result.result || "done"));
    refresh();
    return result;
  } catch (err) {
    showError(action + " failed: " + err.message);
    return null;
  }
}

function showError(message) { const el = $("error"); el.hidden = !message; el.textContent = message || ""; }
function showNotice(message) { const el = $("notice"); el.hidden = !message; el.textContent = message || ""; }

function actionButtons(task, target, paused, { run = true, unschedule = false } = {}) {
  if (!config.actions) return h("span", { className: "muted" }, "read-only");
  const body = target ? { instance: target } : {};
  const buttons = [];
  if (paused) buttons.push(h("button", { onclick: () => act(task, "resume", body), "data-action": "resume" }, "Resume"));
  else buttons.push(h("button", {
    "data-action": "pause",
    onclick: () => {
      const note = window.prompt("Pause " + task + (target ? "/" + target : "") + ": note (optional)", "");
      if (note !== null) act(task, "pause", { ...body, note });
    },
  }, "Pause"));
  if (run) buttons.push(h("button", { onclick: () => act(task, "run", body), "data-action": "run" }, "Run now"));
  if (unschedule) buttons.push(h("button", {
    "data-action": "unschedule",
    onclick: () => { if (window.confirm("Unschedule " + task + "/" + target + "?")) act(task, "unschedule", body); },
  }, "Unschedule"));
  return h("span", {}, buttons);
}

// -- views ------------------------------------------------------------------------------------------------------
async function overview(main) {
  const data = await api("overview");
  const rows = data.tasks.map((t) => {
    let next, outcomeCell, failing, late, lease;
    if (t.kind === "static") {
      const s = t.state;
      next = s ? when(s.next_run) : h("span", { className: "muted" }, "not stored yet");
      outcomeCell = s ? outcome(s.last_outcome) : "-";
      failing = s && s.failing ? h("span", { className: "bad" }, "failing" + (s.attempt > 1 ? " (attempt " + s.attempt + ")" : "")) : h("span", { className: "muted" }, "0");
      late = s ? seconds(s.lateness_seconds) : "-";
      lease = s && s.lease ? h("span", { className: s.lease === "expired" ? "bad" : "" }, "running, lease " + s.lease) : null;
    } else {
      const i = t.instances;
      const scope = i.complete ? "of " + i.scanned : "in the first " + i.scanned + " scanned";
      next = h("span", {}, i.soonest ? when(i.soonest) : h("span", { className: "muted" }, "no instances"),
        h("span", { className: "utc" }, "soonest " + scope));
      outcomeCell = h("span", { className: "muted" }, i.complete ? i.scanned + " instance(s)" : i.scanned + "+ instances");
      failing = h("span", { className: i.failing ? "bad" : "muted", title: "counted " + scope }, i.failing + " " + scope);
      late = h("span", { className: i.late ? "warn" : "muted" }, i.late + " late");
    }
    return h("tr", { "data-task": t.name },
      h("td", {}, taskLink(t.name), h("span", { className: "utc" }, t.kind + (t.partitions ? " x" + t.partitions : ""))),
      h("td", {}, schedule(t.schedule)),
      h("td", {}, t.timezone),
      h("td", {}, next, lease),
      h("td", { className: "paused-cell" }, pausedTag(t.paused) || h("span", { className: "muted" }, "no")),
      h("td", {}, outcomeCell),
      h("td", { className: "failing-cell" }, failing),
      h("td", {}, late),
      h("td", { className: "actions" }, actionButtons(t.name, null, !!t.paused, { run: t.kind === "static" })));
  });
  main.replaceChildren(
    h("h1", {}, data.app || "Tasks"),
    h("p", { className: "note" }, "Backend ", h("code", {}, data.backend.name), " ",
      Object.entries(data.backend.options).map(([k, v]) => h("code", {}, k + "=" + v)),
      ". Counts of dynamic templates cover at most the first " + data.scan_limit + " instances (no full scans)."),
    h("table", { id: "tasks" },
      h("thead", {}, h("tr", {}, ["Task", "Schedule", "Time zone", "Next run", "Paused", "Last outcome", "Failing",
        "Lateness", "Actions"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows)));
}

function stateList(s, extra) {
  const items = [
    ["Schedule", schedule(s.schedule)], ["Time zone", s.schedule ? s.schedule.timezone : "-"],
    ["Next run", when(s.next_run)], ["Lease", s.lease ? s.lease + " until " : "not running", s.lease ? when(s.locked_until) : null],
    ["Lease holder", s.locked_by || "-"], ["Attempt", String(s.attempt)], ["Last outcome", outcome(s.last_outcome)],
    ["Last started", when(s.last_started)], ["Last finished", when(s.last_finished)],
    ["Last error", s.last_error ? h("pre", { className: "err" }, s.last_error) : "-"], ...(extra || []),
  ];
  if (s.args) items.push(["Arguments", h("code", {}, JSON.stringify(s.args))]);
  return h("dl", { className: "kv" }, items.map(([k, ...v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function historyTable(history, enabled) {
  if (!enabled) return h("p", { className: "note" }, "History is off for this task (declare it with history=N).");
  if (!history.length) return h("p", { className: "note" }, "No runs recorded yet.");
  return h("table", { id: "history" }, h("thead", {}, h("tr", {}, ["Scheduled", "Started", "Seconds", "Outcome", "Attempt",
    "Process", "Error"].map((c) => h("th", {}, c)))),
    h("tbody", {}, history.map((e) => h("tr", {}, h("td", {}, when(e.scheduled_at)), h("td", {}, when(e.started_at)),
      h("td", { className: "num" }, e.seconds.toFixed(3)), h("td", {}, outcome(e.outcome)), h("td", {}, e.attempt),
      h("td", {}, e.process), h("td", {}, e.error ? h("pre", { className: "err" }, e.error) : "")))));
}

function pausesBlock(task, pauses) {
  if (!pauses.length) return h("p", { className: "note" }, "Not paused.");
  return h("table", { id: "pauses" }, h("thead", {}, h("tr", {}, ["Scope", "Match", "Since", "By", "Note", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, pauses.map((p) => h("tr", {}, h("td", {}, p.scope), h("td", {}, p.match || "-"), h("td", {}, p.at ? p.at.slice(0, 19).replace("T", " ") + " UTC" : "-"),
      h("td", {}, p.by || "-"), h("td", {}, p.note || "-"),
      h("td", {}, config.actions ? h("button", { onclick: () => act(task, "resume", p.scope === "instance" ? { instance: p.match } : p.scope === "prefix" ? { prefix: p.match } : {}) }, "Resume") : null)))));
}

async function taskView(main, name, fresh) {
  if (fresh) { state.pages = [null]; }
  const token = state.pages[state.pages.length - 1];
  const data = await api("tasks/" + encodeURIComponent(name) + (token ? "?continuation=" + encodeURIComponent(token) : ""));
  const t = data.task;
  const parts = [h("h1", {}, t.name, " ", h("span", { className: "tag" }, t.kind)),
    h("p", { className: "note" }, "Schedule: ", schedule(t.schedule), " - time zone " + t.timezone +
      " - lease " + t.lease_seconds + " s - " + t.execution_mode),
    h("h2", {}, "Pauses"), pausesBlock(t.name, data.pauses)];
  if (t.kind === "static") {
    const s = data.state;
    parts.push(h("div", { className: "bar" }, actionButtons(t.name, null, !!data.paused)));
    parts.push(h("h2", {}, "State"), s ? stateList(s, [["Paused", pausedTag(data.paused) || "no"]]) : h("p", {}, "Not stored yet."));
    parts.push(h("h2", {}, "Next " + data.next_runs.length + " runs"), h("ol", { id: "next-runs" }, data.next_runs.map((m) => h("li", {}, when(m)))));
    parts.push(h("h2", {}, "History"), historyTable(data.history, t.history > 0));
  } else {
    const page = data.instances;
    state.continuation = page.continuation;
    const search = h("input", { type: "search", id: "instance-name", placeholder: "exact instance name",
      value: state.typed["instance-name"] || "", oninput: (e) => { state.typed["instance-name"] = e.target.value; } });
    const filter = h("input", { type: "search", id: "filter", placeholder: "filter this page", value: state.filter || "" });
    const rows = page.items.map((s) => h("tr", { "data-instance": s.instance },
      h("td", {}, instanceLink(t.name, s.instance)), h("td", {}, s.undecodable ? h("span", { className: "bad" }, "cannot be decoded") : schedule(s.schedule)),
      h("td", {}, when(s.next_run)), h("td", {}, s.lease ? h("span", { className: s.lease === "expired" ? "bad" : "" }, s.lease + ", " + (s.locked_by || "")) : "-"),
      h("td", { className: "num" }, s.attempt || ""), h("td", {}, outcome(s.last_outcome)),
      h("td", {}, s.paused ? h("span", { className: "tag paused" }, "paused" + (s.paused_by !== "instance" ? " (" + s.paused_by + ")" : "")) : ""),
      h("td", {}, s.last_error ? h("pre", { className: "err" }, s.last_error) : s.undecodable || ""),
      h("td", { className: "actions" }, actionButtons(t.name, s.instance, s.paused_by === "instance", { unschedule: true }))));
    const table = h("table", { id: "instances" }, h("thead", {}, h("tr", {}, ["Instance", "Schedule", "Next run", "Lease",
      "Attempt", "Last outcome", "Paused", "Last error", "Actions"].map((c) => h("th", {}, c)))), h("tbody", {}, rows));
    const applyFilter = () => {
      state.filter = filter.value;
      const needle = filter.value.toLowerCase();
      for (const row of table.tBodies[0].rows) row.hidden = needle && !row.dataset.instance.toLowerCase().includes(needle);
    };
    filter.addEventListener("input", applyFilter);
    applyFilter();
    // Typed values survive the periodic refresh, which rebuilds the page.
    const kept = (id, attrs) => h("input", { type: "text", id, value: state.typed[id] || "", size: 20, ...attrs,
      oninput: (e) => { state.typed[id] = e.target.value; } });
    const prefix = kept("prefix", { placeholder: "instance name prefix" });
    const note = kept("note", { placeholder: "note (optional)" });
    const byPrefix = config.actions ? h("form", { className: "bar", id: "prefix-form", onsubmit: (e) => {
      e.preventDefault();
      if (prefix.value) act(t.name, e.submitter && e.submitter.value === "resume" ? "resume" : "pause",
        e.submitter && e.submitter.value === "resume" ? { prefix: prefix.value } : { prefix: prefix.value, note: note.value });
    } }, prefix, note, h("button", { type: "submit", value: "pause" }, "Pause prefix"),
      h("button", { type: "submit", value: "resume" }, "Resume prefix")) : null;
    parts.push(h("div", { className: "bar" }, actionButtons(t.name, null, data.pauses.some((p) => p.scope === "task"), { run: false })),
      byPrefix,
      h("h2", {}, "Instances"),
      h("div", { className: "bar" },
        h("form", { onsubmit: (e) => { e.preventDefault(); if (search.value) location.hash = "#/task/" + encodeURIComponent(t.name) + "/i/" + encodeURIComponent(search.value); } },
          search, h("button", { type: "submit" }, "Open")),
        filter,
        h("span", { className: "muted" }, "Page " + state.pages.length + ", " + page.items.length + " instance(s)"),
        h("button", { id: "first-page", disabled: state.pages.length <= 1, onclick: () => { state.pages = [null]; refresh(); } }, "First page"),
        h("button", { id: "next-page", disabled: !page.continuation, onclick: () => { state.pages.push(page.continuation); refresh(); } }, "Next page")),
      h("p", { className: "note" }, "Search finds one instance by its exact name; the filter only looks through the page shown. " +
        "Pages follow the storage's own order, without counting."),
      table);
  }
  main.replaceChildren(...parts);
}

async function instanceView(main, task, name) {
  const data = await api("tasks/" + encodeURIComponent(task) + "/instance?name=" + encodeURIComponent(name));
  const i = data.instance;
  if (i.undecodable) {
    main.replaceChildren(h("h1", {}, task + " / " + name), h("p", { className: "bad" }, i.undecodable));
    return;
  }
  main.replaceChildren(
    h("p", {}, taskLink(task)),
    h("h1", {}, task + " / " + name),
    h("div", { className: "bar" }, actionButtons(task, name, !!i.paused && i.paused.scope === "instance", { unschedule: true })),
    h("h2", {}, "State"), stateList(i, [["Paused", pausedTag(i.paused) || "no"]]),
    h("h2", {}, "Next " + i.next_runs.length + " runs"), h("ol", { id: "next-runs" }, i.next_runs.map((m) => h("li", {}, when(m)))),
    h("h2", {}, "History"), historyTable(i.history, data.task.history > 0));
}

async function problemsView(main, more) {
  if (!more) state.scan = { items: [], scanned: 0, continuation: null, complete: false, requests: 0 };
  const data = await api("problems" + (more && state.scan.continuation ? "?continuation=" + encodeURIComponent(state.scan.continuation) : ""));
  state.scan.items.push(...data.items);
  state.scan.scanned += data.scanned;
  state.scan.continuation = data.continuation;
  state.scan.complete = data.complete;
  state.scan.requests += 1;
  const rows = state.scan.items.map((p) => h("tr", {},
    h("td", {}, taskLink(p.task), p.instance ? [" / ", instanceLink(p.task, p.instance)] : ""),
    h("td", {}, p.problems.map((k) => h("span", { className: "tag " + (k === "late" ? "warn" : "bad") }, k))),
    h("td", {}, when(p.next_run)), h("td", {}, p.locked_until ? when(p.locked_until) : "-", p.locked_by ? h("span", { className: "utc" }, p.locked_by) : ""),
    h("td", { className: "num" }, p.attempt || ""), h("td", {}, outcome(p.last_outcome)),
    h("td", {}, h("pre", { className: "err" }, p.undecodable || p.last_error || ""))));
  main.replaceChildren(
    h("h1", {}, "Failing / stuck"),
    h("p", { className: "note", id: "scan-status" }, "Scanned " + state.scan.scanned + " record(s)" +
      (state.scan.complete ? ": every stored record." : ", at most " + data.scan_limit + " per request; more remain.") +
      " Stuck: held past its lease. Failed: the last run failed and no retry is pending. Retrying: a retry is due." +
      " Late: due over a minute ago, not running, not paused. Undecodable: the stored record cannot be read."),
    h("div", { className: "bar" }, h("button", { id: "scan-further", disabled: state.scan.complete, onclick: () => render(true) }, "Scan further")),
    rows.length ? h("table", { id: "problems" }, h("thead", {}, h("tr", {}, ["Task", "Problems", "Next run", "Lease until / holder",
      "Attempt", "Last outcome", "Error"].map((c) => h("th", {}, c)))), h("tbody", {}, rows))
      : h("p", {}, "Nothing failing or stuck in the records scanned."));
}

// -- routing and refresh -------------------------------------------------------------------------------------------
function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "task" && parts[1] && parts[2] === "i" && parts.length >= 4) return { kind: "instance", task: parts[1], name: parts.slice(3).join("/") };
  if (parts[0] === "task" && parts[1]) return { kind: "task", task: parts[1] };
  if (parts[0] === "problems") return { kind: "problems" };
  return { kind: "overview" };
}

async function render(more) {
  const main = $("main");
  const r = route();
  const key = JSON.stringify(r);
  const fresh = key !== state.view;
  state.view = key;
  for (const [id, kind] of [["nav-overview", "overview"], ["nav-problems", "problems"]]) $(id).classList.toggle("active", r.kind === kind);
  try {
    if (r.kind === "task") await taskView(main, r.task, fresh);
    else if (r.kind === "instance") await instanceView(main, r.task, r.name);
    else if (r.kind === "problems") await problemsView(main, more === true);
    else await overview(main);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    $("main").dataset.loaded = "1";
  } catch (err) {
    if (fresh) main.replaceChildren(h("p", { className: "bad" }, err.message));
    else showError("refresh failed: " + err.message);
  }
}

function refresh() {
  const focused = document.activeElement;
  if (focused && focused.tagName === "INPUT" && $("main").contains(focused)) return;  // do not wipe what is typed
  // The problems view keeps what "scan further" collected; everything else reloads its data in place.
  if (route().kind === "problems" && state.scan && state.scan.requests > 1) return;
  render(false);
}

function start() {
  $("mode").textContent = config.actions === "token" ? "actions: token" : config.actions === "hook" ? "actions: signed in" : "read-only";
  if (config.actions === "token") {
    $("token-box").hidden = false;
    $("token-box").addEventListener("submit", (event) => event.preventDefault());
    $("token").value = sessionStorage.getItem("pyncette-token") || "";
    $("token").addEventListener("change", () => sessionStorage.setItem("pyncette-token", $("token").value));
  }
  if (config.title) { $("brand").textContent = config.title; document.title = config.title + " - Pyncette"; }
  window.addEventListener("hashchange", () => { showError(null); showNotice(null); render(false); });
  render(false);
  if (config.refreshSeconds > 0) state.timer = setInterval(refresh, config.refreshSeconds * 1000);
}

start();
