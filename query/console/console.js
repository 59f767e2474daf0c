// The compliance console: plain script, no framework, no build step.
"use strict";

const state = { token: sessionStorage.getItem("ledgerline-token") || "", config: null, socket: null,
                caseId: null, alerts: new Map() };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "onclick") node.addEventListener("click", v); else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function say(text) { $("message").textContent = text || ""; }

async function gql(query, variables) {
  const answer = await fetch(state.config.graphqlPath, {
    method: "POST", headers: { "Content-Type": "application/json", "Authorization": "Bearer " + state.token },
    body: JSON.stringify({ query, variables }) });
  const body = await answer.json();
  if (body.errors) throw new Error(body.errors.map((e) => e.message).join("; "));
  return body.data;
}

const ALERT_FIELDS = "id rule ruleVersion wallet asset severity status caseId evidence windowEnd";

function alertRow(a, fresh) {
  const row = el("tr", { class: "alert" + (fresh ? " fresh" : ""), "data-alert": a.id, "data-wallet": a.wallet,
                         onclick: () => openCase(a.caseId) },
    el("td", {}, new Date(a.windowEnd).toLocaleString()), el("td", {}, a.rule),
    el("td", {}, a.wallet), el("td", {}, a.asset), el("td", { class: "sev-" + a.severity }, a.severity),
    el("td", { class: "status", "data-case-status": a.caseId }, a.status || ""));
  return row;
}

function showAlert(a, fresh) {
  const old = document.querySelector(`tr[data-alert="${a.id}"]`);
  const row = alertRow(a, fresh);
  if (old) old.replaceWith(row); else $("alerts").prepend(row);
  state.alerts.set(a.id, a);
}

async function loadQueue() {
  const data = await gql(`query { alerts(first: 50) { nodes { ${ALERT_FIELDS} } } }`);
  for (const a of data.alerts.nodes.reverse()) {
    if (!state.alerts.has(a.id)) showAlert(a, false);
  }
}

function subscribe() {
  const url = location.origin.replace(/^http/, "ws") + state.config.graphqlPath;
  const ws = new WebSocket(url, "graphql-transport-ws");
  state.socket = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "connection_init",
                                             payload: { Authorization: "Bearer " + state.token } }));
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "connection_ack") {
      ws.send(JSON.stringify({ id: "alerts", type: "subscribe",
                               payload: { query: `subscription { alertRaised { ${ALERT_FIELDS} } }` } }));
      // Anything raised while the socket was (re)connecting: read the queue once more.
      setTimeout(() => loadQueue().then(() => {
        $("live").textContent = "live"; $("live").className = "on";
      }).catch((e) => say(e.message)), 300);
    } else if (msg.type === "next" && msg.payload.data) {
      const a = msg.payload.data.alertRaised;
      showAlert(a, true);
      if (a.caseId === state.caseId) openCase(a.caseId);
    } else if (msg.type === "ping") {
      ws.send(JSON.stringify({ type: "pong" }));
    } else if (msg.type === "error") {
      say("subscription refused: " + JSON.stringify(msg.payload));
    }
  };
  ws.onclose = () => {
    $("live").textContent = "offline"; $("live").className = "";
    if (state.token) setTimeout(() => { if (state.token) { subscribe(); loadQueue().catch((e) => say(e.message)); } }, 2000);
  };
}

const CASE_QUERY = `query($id: ID!) { case(id: $id) { id wallet status assignee reportReference openedAt
  alerts { id rule ruleVersion severity asset windowStart windowEnd evidenceEvents { id type occurredAt payload } }
  notes { author action text at } } }`;
const MOVES_QUERY = `query($w: ID!) { transfers(first: 10, filter: {wallet: $w}) { nodes {
  id status from to amount asset { symbol } initiatedAt } } }`;

async function openCase(caseId) {
  if (!caseId) return;
  state.caseId = caseId;
  document.querySelectorAll("tr.alert").forEach((r) => r.classList.toggle("selected",
    state.alerts.get(r.getAttribute("data-alert"))?.caseId === caseId));
  const data = await gql(CASE_QUERY, { id: caseId });
  const c = data.case;
  if (!c) { $("case").replaceChildren(el("p", {}, "No such case.")); return; }
  const moves = (await gql(MOVES_QUERY, { w: c.wallet })).transfers.nodes;
  for (const a of c.alerts) {
    const known = state.alerts.get(a.id);
    if (known) showAlert({ ...known, status: c.status }, false);
  }
  const input = (id, placeholder) => el("input", { id, placeholder });
  const act = (label, action, body) => el("button", { id: "act-" + action,
    onclick: () => caseAction(c.id, action, body()) }, label);
  $("case").replaceChildren(
    el("h2", {}, "Case ", el("code", {}, c.id)),
    el("p", {}, "Wallet ", el("b", { id: "case-wallet" }, c.wallet), " — status ",
       el("b", { id: "case-status", class: "status" }, c.status),
       c.assignee ? ` — assigned to ${c.assignee}` : "", c.reportReference ? ` — report ${c.reportReference}` : ""),
    el("div", { class: "actions" },
      input("assignee", "assignee"), act("Assign", "assign", () => ({ assignee: $("assignee").value })),
      input("note", "note"), el("span", {}, act("Add note", "note", () => ({ note: $("note").value })),
                                act("Clear", "clear", () => ({ note: $("note").value || "cleared" }))),
      input("report", "report reference"), act("Escalate", "escalate",
                                               () => ({ report_reference: $("report").value, note: $("note").value })),
      input("reason", "freeze reason"), el("span", {},
        el("button", { id: "act-freeze", onclick: () => freeze(c.wallet, true) }, "Freeze wallet"),
        el("button", { id: "act-unfreeze", onclick: () => freeze(c.wallet, false) }, "Unfreeze"))),
    el("h3", {}, "Alerts and evidence"),
    ...c.alerts.map((a) => el("div", { class: "evidence" },
      el("p", {}, el("b", {}, a.rule), ` (rules ${a.ruleVersion}, ${a.severity}) on ${a.asset}, `,
         `${new Date(a.windowStart).toLocaleString()} – ${new Date(a.windowEnd).toLocaleString()}`),
      ...a.evidenceEvents.map((e) => el("pre", { "data-event": e.id }, `${e.type} ${e.occurredAt}\n${e.payload}`)))),
    el("h3", {}, "Recent movements of the wallet"),
    el("table", {}, el("tbody", { id: "moves" }, ...moves.map((t) => el("tr", {},
      el("td", {}, new Date(t.initiatedAt).toLocaleString()), el("td", {}, `${t.from} → ${t.to}`),
      el("td", {}, `${t.amount} ${t.asset?.symbol ?? ""}`), el("td", {}, t.status))))),
    el("h3", {}, "Notes"),
    el("ul", { id: "notes" }, ...c.notes.map((n) => el("li", {}, `${n.at} ${n.author} ${n.action}: ${n.text}`))));
}

async function command(path, body) {
  const answer = await fetch(state.config.commandUrl + path, {
    method: "POST", headers: { "Content-Type": "application/json", "Authorization": "Bearer " + state.token },
    body: JSON.stringify(body) });
  const reply = await answer.json();
  if (!answer.ok) throw new Error(reply.error ? `${reply.error.code}: ${reply.error.message}` : answer.statusText);
  return reply;
}

async function caseAction(caseId, action, body) {
  say("");
  try {
    await command(`/v1/cases/${caseId}/${action}`, body);
    // Decided by the monitor: watch the case until it shows the action.
    const before = JSON.stringify((await gql(CASE_QUERY, { id: caseId })).case.notes);
    for (let i = 0; i < 50; i++) {
      const now = (await gql(CASE_QUERY, { id: caseId })).case;
      if (JSON.stringify(now.notes) !== before || i === 49) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await openCase(caseId);
  } catch (e) { say(e.message); }
}

async function freeze(wallet, frozen) {
  say("");
  try {
    const reply = await command(`/v1/wallets/${encodeURIComponent(wallet)}/${frozen ? "freeze" : "unfreeze"}`,
                                { reason: $("reason").value || (frozen ? "compliance review" : "review closed") });
    say(`${frozen ? "freeze" : "unfreeze"} of ${wallet}: ${reply.status}`);
  } catch (e) { say(e.message); }
}

async function signIn() {
  state.config = state.config || await (await fetch("/console/config.json")).json();
  try {
    await loadQueue();
  } catch (e) { say("cannot sign in: " + e.message); return; }
  sessionStorage.setItem("ledgerline-token", state.token);
  $("signin").classList.add("hidden"); $("desk").classList.remove("hidden"); $("signout").classList.remove("hidden");
  subscribe();
}

$("login").addEventListener("click", () => { state.token = $("token").value.trim(); signIn(); });
$("signout").addEventListener("click", () => {
  state.token = ""; sessionStorage.removeItem("ledgerline-token"); if (state.socket) state.socket.close();
  location.reload();
});
if (state.token) signIn();
