// The dashboard page: every panel polls its JSON endpoint and renders it.
// Everything shown is user data (task names, errors), so it goes into the page
// as text nodes only (textContent / createElement), never as markup.
"use strict";

const REFRESH_MS = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(columns, rows) {
  if (!rows.length) return el("p", { class: "empty" }, "none");
  const head = el("tr", {}, ...columns.map(([title]) => el("th", {}, title)));
  const body = rows.map((row) =>
    el("tr", {}, ...columns.map(([, cell, cls]) => el("td", cls ? { class: cls } : {}, cell(row))))
  );
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function quantity(name, value) {
  if (/memory/i.test(name)) return (value / 2 ** 30).toFixed(2) + " GiB";
  return String(Math.round(value * 100) / 100);
}

function bytes(n) {
  if (n >= 2 ** 20) return (n / 2 ** 20).toFixed(2) + " MiB";
  if (n >= 2 ** 10) return (n / 2 ** 10).toFixed(1) + " KiB";
  return n + " B";
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function usage(r) {
  const share = r.total > 0 ? Math.min(r.used / r.total, 1) : 0;
  const fill = el("span");
  fill.style.width = (share * 100).toFixed(0) + "%"; // CSSOM: the CSP forbids style attributes
  const bar = el("span", { class: "bar" }, fill);
  return el("div", { class: "usage" }, bar, r.name + " " + quantity(r.name, r.used) + " / " + quantity(r.name, r.total));
}

function counts(map) {
  return Object.entries(map || {}).map(([k, v]) => k + ": " + v).join(", ");
}

const PANELS = {
  nodes: ["api/nodes", (d) => table([
    ["Node", (n) => n.node_id, "mono"],
    ["Host", (n) => [n.hostname, n.ip].filter(Boolean).join(" ")],
    ["Liveness", (n) => el("span", { class: n.alive ? "alive" : "dead" },
      (n.alive ? "alive" : "not heartbeating") + " (" + seconds(n.heartbeat_age_s) + " ago)")],
    ["Resources used / total", (n) => el("div", {}, ...n.resources.map(usage))],
  ], d.nodes)],
  tasks: ["api/tasks", (d) => el("div", {},
    el("p", {}, "By state: ", counts(d.by_state) || "no tasks"),
    table([
      ["Function", (f) => f.name, "mono"],
      ["Type", (f) => f.type],
      ["States", (f) => counts(f.state_counts)],
    ], d.by_function))],
  running: ["api/tasks/running", (d) => table([
    ["Name", (t) => t.name, "mono"],
    ["Task", (t) => t.task_id, "mono"],
    ["State", (t) => t.state],
    ["Node", (t) => t.node_id, "mono"],
    ["Age", (t) => seconds(t.age_s)],
  ], d.running)],
  actors: ["api/actors", (d) => table([
    ["Class", (a) => a.class_name, "mono"],
    ["Name", (a) => a.name, "mono"],
    ["State", (a) => a.state],
    ["Restarts", (a) => a.num_restarts],
    ["Node", (a) => a.node_id, "mono"],
    ["Actor", (a) => a.actor_id, "mono"],
  ], d.actors)],
  jobs: ["api/jobs", (d) => table([
    ["Job", (j) => j.job_id, "mono"],
    ["Status", (j) => j.status],
    ["Entrypoint", (j) => j.entrypoint, "mono"],
    ["Driver", (j) => [j.driver_host, j.driver_pid && "pid " + j.driver_pid].filter(Boolean).join(" ")],
    ["Started", (j) => j.start_time_ms ? new Date(j.start_time_ms).toLocaleTimeString() : ""],
  ], d.jobs)],
  objects: ["api/objects", (d) => el("div", {},
    el("p", {}, d.total + " objects, " + bytes(d.total_bytes)),
    table([
      ["Owner (job)", (o) => o.job_id, "mono"],
      ["Objects", (o) => o.count],
      ["Size", (o) => bytes(o.bytes)],
    ], d.by_owner),
    el("h3", {}, "Largest"),
    table([
      ["Object", (o) => o.object_id, "mono"],
      ["Size", (o) => bytes(o.size || 0)],
      ["Owner (job)", (o) => o.job_id, "mono"],
    ], d.largest.slice(0, 8)))],
  queues: ["api/queues", (d) => table([
    ["Shape", (q) => counts(q.resources), "mono"],
    ["Queued", (q) => q.queued],
    ["Waiting for inputs", (q) => q.waiting_for_inputs],
    ["Feasible", (q) => q.infeasible ? el("span", { class: "dead" }, "no node has " + q.missing.join(", ")) : "yes"],
  ], d.demands)],
  dead_letters: ["api/dead_letters", (d) => table([
    ["When", (x) => new Date(parseFloat(x.time || 0) * 1000).toLocaleString()],
    ["Source", (x) => x.source],
    ["Reason", (x) => x.reason],
    ["Ids", (x) => ["task", "actor", "entry"].filter((k) => x[k]).map((k) => k + "=" + x[k]).join(" "), "mono"],
  ], d.dead_letters)],
};

function setStatus(ok, text) {
  const status = document.getElementById("status");
  status.className = "status " + (ok ? "ok" : "down");
  status.textContent = text;
}

async function fetchJson(path) {
  const reply = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  const data = await reply.json();
  if (!reply.ok) throw new Error(data.error || reply.statusText);
  return data;
}

async function refresh() {
  let down = null;
  try {
    const info = await fetchJson("api/cluster");
    document.getElementById("address").textContent = info.address;
  } catch (err) {
    down = err;
  }
  await Promise.all(Object.entries(PANELS).map(async ([id, [path, render]]) => {
    const section = document.getElementById(id);
    const body = section.querySelector(".body");
    try {
      const data = await fetchJson(path);
      body.replaceChildren(render(data));
      section.classList.remove("stale");
    } catch (err) {
      down = down || err;
      section.classList.add("stale");
    }
  }));
  if (down) setStatus(false, "cannot reach cluster: " + down.message);
  else setStatus(true, "live · " + new Date().toLocaleTimeString());
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);
}

loop();
