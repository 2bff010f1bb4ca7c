// The bus page: one WebSocket to /rpc/ws speaking JSON-RPC 2.0, one
// message per text frame. Received messages are shown with textContent
// only (never as HTML). Reconnects with a growing delay and subscribes
// again; a token, if given, is sent with sys.auth (never in the URL).
"use strict";

const root = document.documentElement;
const $ = (id) => document.getElementById(id);
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/rpc/ws";
const MAX_LOG = 500;

let ws = null;
let nextId = 1;
let delay = 250;
const pending = new Map();
const patterns = new Set();
const initial = new URLSearchParams(location.search).get("subscribe");
if (initial) {
  patterns.add(initial);
  $("pattern").value = initial;
}

function setState(state) {
  root.dataset.state = state;
  $("state").textContent = state;
}

function note(text) {
  $("note").textContent = text;
}

function call(method, params) {
  return new Promise((resolve, reject) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      reject(new Error("not connected"));
      return;
    }
    const id = nextId++;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ jsonrpc: "2.0", method, params, id }));
  });
}

function show(topic, data) {
  const li = document.createElement("li");
  const t = document.createElement("span");
  t.className = "topic";
  t.textContent = topic;
  li.append(t, document.createTextNode(JSON.stringify(data)));
  const log = $("log");
  log.prepend(li);
  while (log.children.length > MAX_LOG) log.lastChild.remove();
}

async function setUp() {
  const token = $("token").value;
  if (token) await call("sys.auth", { token });
  if (patterns.size) await call("bus.subscribe", { topics: [...patterns] });
}

function connect() {
  ws = new WebSocket(url);
  ws.onopen = () => {
    delay = 250;
    setState("open");
    setUp().then(() => note(patterns.size ? "subscribed to " + [...patterns].join(", ") : ""),
      (e) => note("error: " + e.message));
  };
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    if (msg.method === "bus.message" && msg.params) {
      show(msg.params.topic, msg.params.data);
    } else if (msg.id !== undefined && pending.has(msg.id)) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p.reject(new Error(msg.error.message));
      else p.resolve(msg.result);
    }
  };
  ws.onclose = () => {
    setState("closed");
    for (const p of pending.values()) p.reject(new Error("connection closed"));
    pending.clear();
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 10000);
  };
}

$("auth").addEventListener("submit", (e) => {
  e.preventDefault();
  call("sys.auth", { token: $("token").value })
    .then((r) => note("logged in as " + r.user), (err) => note("error: " + err.message));
});

$("sub").addEventListener("submit", (e) => {
  e.preventDefault();
  const p = $("pattern").value.trim();
  call("bus.subscribe", { topics: [p] })
    .then(() => { patterns.add(p); note("subscribed to " + [...patterns].join(", ")); },
      (err) => note("error: " + err.message));
});

$("pub").addEventListener("submit", (e) => {
  e.preventDefault();
  let data;
  try {
    data = JSON.parse($("data").value);
  } catch (err) {
    note("data is not JSON");
    return;
  }
  call("bus.publish", { topic: $("topic").value.trim(), data })
    .then((n) => note("published to " + n + " subscriber(s)"), (err) => note("error: " + err.message));
});

connect();
