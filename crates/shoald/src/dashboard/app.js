// shoal's dashboard: renders the snapshots the node pushes as server-sent events
// (/api/events). Read-only: it sends nothing but the one GET of the stream. Every value is
// put in the page as text (textContent), never as HTML.
"use strict";

let snap = null;
let updates = 0;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function route() {
  const m = location.hash.match(/^#\/service\/(.+)$/);
  return m ? { service: decodeURIComponent(m[1]) } : {};
}

function render() {
  if (!snap) return;
  document.getElementById("node").textContent = "node " + snap.node + " · state v" + snap.version;
  document.body.dataset.version = snap.version;
  document.body.dataset.updates = updates;
  const error = document.getElementById("error");
  error.hidden = !snap.error;
  error.textContent = snap.error || "";
  const r = route();
  const svc = r.service && snap.services.find((s) => s.name === r.service);
  document.getElementById("overview").hidden = !!r.service;
  document.getElementById("service").hidden = !r.service;
  if (r.service) renderService(r.service, svc);
  else renderOverview();
}

function renderOverview() {
  fill(document.querySelector("#services tbody"), snap.services.map((s) =>
    el("tr", { "data-service": s.name },
      el("td", { class: "name" }, el("a", { href: "#/service/" + encodeURIComponent(s.name) }, s.name)),
      el("td", {}, s.mode),
      el("td", { class: "replicas", "data-running": s.running, "data-desired": s.desired ?? "" },
        s.running + "/" + (s.desired ?? "global")),
      el("td", {}, s.image),
      el("td", {}, s.vips.map((v) => v.addr + " (" + v.network + ")").join(", ")),
      el("td", {}, s.ports.join(", ")))));
  fill(document.querySelector("#nodes tbody"), snap.nodes.map((n) =>
    el("tr", { "data-node": n.hostname },
      el("td", {}, n.hostname + (n.leader ? " (leader)" : "")),
      el("td", {}, n.role),
      el("td", { class: "state-" + n.state }, n.state),
      el("td", {}, n.availability),
      el("td", {}, n.addr))));
  fill(document.querySelector("#networks tbody"), snap.networks.map((n) =>
    el("tr", { "data-network": n.name },
      el("td", {}, n.name + (n.ingress ? " (ingress)" : "")),
      el("td", {}, n.driver),
      el("td", {}, n.subnet))));
  fill(document.getElementById("convergence"), snap.convergence.map((c) =>
    el("li", {}, "state v" + c.version + ": " + c.took_ms + " ms")));
}

function renderService(name, s) {
  document.getElementById("service-name").textContent = name;
  const root = document.getElementById("service");
  root.dataset.service = name;
  if (!s) {
    document.getElementById("service-summary").textContent = "no service " + name + " (removed?)";
    document.getElementById("tasks-by-node").replaceChildren();
    return;
  }
  const summary = document.getElementById("service-summary");
  summary.replaceChildren(
    el("span", { id: "replicas", "data-running": s.running, "data-desired": s.desired ?? "" },
      s.running + "/" + (s.desired ?? "global") + " running"),
    " · " + s.mode + " · " + s.image);
  const byNode = new Map();
  for (const t of s.tasks) {
    const node = t.node || "(unassigned)";
    if (!byNode.has(node)) byNode.set(node, []);
    byNode.get(node).push(t);
  }
  document.getElementById("tasks-by-node").replaceChildren(...[...byNode.keys()].sort().map((node) =>
    el("div", { class: "node-tasks", "data-node": node },
      el("h3", {}, node),
      el("ul", {}, ...byNode.get(node).map((t) =>
        el("li", { class: "task state-" + t.state, "data-task": t.name, "data-state": t.state, "data-desired": t.desired },
          t.name + " " + t.state + (t.desired !== t.state ? " (desired " + t.desired + ")" : "") +
          (t.addr ? " " + t.addr : "") + (t.error ? " — " + t.error : "")))))));
  document.getElementById("vip-path").textContent = "VIP balancer: " + snap.dataplane.vip_balancer;
  document.getElementById("mesh-path").textContent = "mesh path: " + snap.dataplane.mesh_path;
  const counted = snap.dataplane.vip.filter((c) => c.service === name);
  const rows = [];
  for (const v of s.vips) {
    for (const t of s.tasks.filter((t) => t.desired === "running" && t.state === "running")) {
      const c = counted.find((c) => c.vip === v.addr && c.task.endsWith("." + t.id));
      rows.push(el("tr", { class: "backend", "data-task": t.name },
        el("td", {}, v.addr), el("td", {}, v.network), el("td", {}, t.name + " (" + t.node + ")"),
        el("td", {}, c ? c.backend : t.addr), el("td", { class: "count" }, c ? c.count : 0)));
    }
  }
  fill(document.querySelector("#backends tbody"), rows);
  const ports = s.ports.map((p) => Number(p.split(":")[0]));
  fill(document.querySelector("#mesh tbody"), snap.dataplane.mesh.filter((m) => ports.includes(m.port)).map((m) =>
    el("tr", {}, el("td", {}, m.port + "/" + m.protocol), el("td", {}, m.backend), el("td", { class: "count" }, m.count))));
}

function connect() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  events.addEventListener("snapshot", (e) => {
    snap = JSON.parse(e.data);
    updates += 1;
    live.textContent = "live";
    live.className = "live on";
    render();
  });
  events.onerror = () => {
    // EventSource reconnects by itself.
    live.textContent = "reconnecting…";
    live.className = "live off";
  };
}

window.addEventListener("hashchange", render);
connect();
