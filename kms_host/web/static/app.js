// The dashboard: polls the JSON API and renders every value with textContent, never as
// HTML, so that whatever a client sent (a machine name is the client's to choose) shows
// as text. No build step, no library.
"use strict";

const POLL_MS = 1500;
const PAGE = 50;
const token = new URLSearchParams(location.search).get("token") || "";
let offset = 0;
let lastId = 0;
const feed = [];

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(tbody, items, render) {
  const rows = items.map((item) => {
    const tr = document.createElement("tr");
    render(tr, item);
    return tr;
  });
  tbody.replaceChildren(...rows);
}

async function get(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function renderStatus(doc) {
  const apps = Object.entries(doc.applications);
  fill(document.querySelector("#counts tbody"), apps, (tr, [key, app]) => {
    tr.dataset.app = key;
    cell(tr, app.name);
    cell(tr, app.current_count, "num count");
    cell(tr, app.threshold, "num");
    cell(tr, app.live_clients, "num");
    cell(tr, app.table_rows, "num");
  });
  document.getElementById("requests-total").textContent = String(doc.requests.total);
  document.getElementById("requests-failed").textContent = String(doc.requests.failed);
  const identity = [
    ["Version", doc.version + " (" + doc.rijndael + " Rijndael)"],
    ["Listening on", doc.daemon ? doc.daemon.tcp.join(", ") : doc.listen.join(", ")],
    ["HwId", doc.hwid || "not generated yet"],
    ["Scope", doc.scope.length + " host-key groups"],
    ["Activation interval", doc.activation_interval_min + " minutes"],
    ["Renewal interval", doc.renewal_interval_min + " minutes"],
    ["Counting", doc.counting.mode + ", prefill " + doc.counting.prefill + ", "
      + doc.counting.window_days + "-day window"],
  ];
  const dl = document.getElementById("identity");
  dl.replaceChildren(...identity.flatMap(([name, value]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value;
    return [dt, dd];
  }));
  document.getElementById("epid-count").textContent = String(Object.keys(doc.epids).length);
  fill(document.querySelector("#epids tbody"), Object.entries(doc.epids), (tr, [group, epid]) => {
    cell(tr, group);
    cell(tr, epid);
  });
}

function renderActivations(doc) {
  const note = document.getElementById("feed-note");
  note.hidden = doc.available;
  note.textContent = doc.available ? "" : "Not available here: with serve --workers each "
    + "worker keeps its own recent activations (see the log's activation events).";
  const fresh = doc.activations.filter((entry) => entry.id > lastId);
  if (!fresh.length) return;
  lastId = Math.max(lastId, ...fresh.map((entry) => entry.id));
  feed.unshift(...fresh);
  feed.length = Math.min(feed.length, 100);
  fill(document.querySelector("#activations tbody"), feed, (tr, entry) => {
    if (fresh.includes(entry)) tr.className = "new";
    cell(tr, entry.timestamp.slice(0, 19).replace("T", " "));
    cell(tr, entry.peer);
    cell(tr, entry.machine_name, "machine");
    cell(tr, entry.sku_name || entry.product);
    cell(tr, entry.result, entry.result === "activated" ? "good" : "bad");
    const code = entry.hresult || entry.fault_status || "";
    cell(tr, entry.hresult_name ? code + " " + entry.hresult_name : code);
    cell(tr, entry.count, "num");
  });
}

function filterQuery() {
  const form = new FormData(document.getElementById("filter"));
  const query = new URLSearchParams();
  for (const [name, value] of form) if (value) query.set(name, String(value));
  return query;
}

function renderClients(doc) {
  fill(document.querySelector("#clients tbody"), doc.clients, (tr, row) => {
    cell(tr, row.last_seen.slice(0, 19).replace("T", " "));
    cell(tr, row.app);
    cell(tr, row.machine_name, "machine");
    cell(tr, row.sku_name || row.sku_id);
    cell(tr, row.license_status);
    cell(tr, row.protocol_version);
    cell(tr, row.last_hresult);
    cell(tr, row.request_count, "num");
    cell(tr, row.last_peer);
  });
  const last = Math.min(doc.offset + doc.clients.length, doc.total);
  document.getElementById("page").textContent = doc.total
    ? (doc.offset + 1) + "-" + last + " of " + doc.total : "no clients match";
  document.getElementById("prev").disabled = doc.offset === 0;
  document.getElementById("next").disabled = last >= doc.total;
}

async function refresh() {
  const state = document.getElementById("state");
  try {
    const query = filterQuery();
    const csv = new URLSearchParams(query);
    csv.set("format", "csv");
    if (token) csv.set("token", token);
    document.getElementById("csv").href = "/api/clients?" + csv;
    query.set("offset", String(offset));
    query.set("limit", String(PAGE));
    const [status, activations, clients] = await Promise.all([
      get("/api/status"), get("/api/activations?after=" + lastId), get("/api/clients?" + query),
    ]);
    renderStatus(status);
    renderActivations(activations);
    renderClients(clients);
    state.textContent = "live, updated " + new Date().toISOString().slice(11, 19) + " UTC";
    state.className = "state";
  } catch (error) {
    state.textContent = "cannot reach the host: " + error.message;
    state.className = "state error";
  }
}

function start() {
  const form = document.getElementById("filter");
  form.addEventListener("input", () => { offset = 0; refresh(); });
  form.addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("prev").addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    refresh();
  });
  document.getElementById("next").addEventListener("click", () => { offset += PAGE; refresh(); });
  refresh();
  setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
