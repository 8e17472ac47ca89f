// p2pchat's page. Events arrive over the WebSocket as the JSON objects
// `p2pchat join --json` prints; commands go back as JSON (`{"cmd":"send",...}`).
// Everything from the network is put in the page with textContent, never as HTML.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);

let socket = null;
let mode = null; // "relay", "direct" or null
let me = null; // our relay ID
const roster = new Map(); // id -> {id, name, key, away, exited}
const transfers = new Map(); // "send:name" / "recv:name" -> element

function human(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function add(li) {
  const list = $("messages");
  const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.appendChild(li);
  if (atEnd) list.scrollTop = list.scrollHeight;
}

function notice(text, cls = "notice") { add(el("li", cls, text)); }

function line(from, text, { own = false, all = false, history = false } = {}) {
  const li = el("li", own ? "own" : history ? "history" : "");
  li.appendChild(el("span", "from", from));
  if (all) li.appendChild(el("span", "all", "to everyone"));
  li.appendChild(el("span", "text", text));
  add(li);
}

function who(id) {
  const c = roster.get(id);
  return c && c.name ? `${id} ${c.name}` : `${id}`;
}

function drawRoster() {
  const list = $("roster");
  list.replaceChildren();
  const to = $("to");
  const chosen = to.value;
  to.replaceChildren();
  if (mode === "relay") {
    to.appendChild(el("option", "", "everyone")).value = "all";
  } else {
    to.appendChild(el("option", "", "the peer")).value = "peer";
  }
  for (const c of [...roster.values()].sort((a, b) => a.id - b.id)) {
    const li = el("li");
    li.dataset.id = c.id;
    li.appendChild(el("span", "id", String(c.id)));
    li.appendChild(el("span", "name", c.name || "(no name)"));
    if (c.id === me) {
      li.appendChild(el("span", "tag", "you"));
    } else if (c.key) {
      li.appendChild(el("span", "fp", c.key.slice(0, 9)));
    } else {
      li.appendChild(el("span", "plain", "no key: plain text"));
    }
    if (c.away) li.appendChild(el("span", "tag away", "away"));
    if (c.exited) li.appendChild(el("span", "tag", "said exit"));
    list.appendChild(li);
    if (c.id !== me && mode === "relay") {
      to.appendChild(el("option", "", who(c.id))).value = String(c.id);
    }
  }
  if ([...to.options].some((o) => o.value === chosen)) to.value = chosen;
}

function transfer(key, name, size, sending) {
  let item = transfers.get(key);
  if (!item) {
    item = el("li");
    item.appendChild(el("div", "name", `${sending ? "sending" : "receiving"} ${name} (${human(size)})`));
    const bar = el("progress");
    bar.max = Math.max(size, 1);
    bar.value = 0;
    item.appendChild(bar);
    item.appendChild(el("div", "rate", "waiting"));
    $("transfers").appendChild(item);
    transfers.set(key, item);
  }
  return item;
}

function setProgress(item, done, text) {
  const bar = item.querySelector("progress");
  bar.value = done;
  item.querySelector(".rate").textContent = text;
}

function offer(ev) {
  const li = el("li");
  li.dataset.number = ev.number;
  li.appendChild(el("div", "", `${ev.from} offers ${ev.name} (${human(ev.size)})`));
  const accept = el("button", "", "Accept");
  const decline = el("button", "", "Decline");
  accept.onclick = () => { send({ cmd: "accept", number: ev.number }); li.remove(); };
  decline.onclick = () => { send({ cmd: "decline", number: ev.number }); li.remove(); };
  li.append(accept, decline);
  $("offers").appendChild(li);
}

function setSecurity(text, encrypted) {
  const s = $("security");
  s.textContent = text.replace(/^\* /, "");
  s.classList.toggle("clear", !encrypted);
}

function showChat(on) {
  $("chat").hidden = !on;
  $("start").hidden = on;
}

function reset() {
  $("messages").replaceChildren();
  $("offers").replaceChildren();
  $("transfers").replaceChildren();
  roster.clear();
  transfers.clear();
  me = null;
}

// Each event, by name; unknown names are shown as they are.
const handlers = {
  web_started(ev) {
    reset();
    mode = ev.mode;
    $("alert").hidden = true;
    $("status").textContent = `${ev.mode === "relay" ? "relay" : "direct"}: ${ev.target}`;
    showChat(true);
    drawRoster();
  },
  web_ended(ev) {
    notice(ev.ok ? "the conversation is over" : `the conversation ended: ${ev.message}`, ev.ok ? "notice" : "error");
    mode = null;
    $("status").textContent = "not connected";
    $("start").hidden = false;
  },
  web_problem(ev) { notice(ev.message, "error"); },
  sent(ev) {
    if (ev.to === "all") line("you", ev.text, { own: true, all: true });
    else if (ev.to === "peer") line("you", ev.text, { own: true });
    else line(`you → ${who(ev.to)}`, ev.text, { own: true });
  },
  welcome(ev) {
    me = ev.id;
    setSecurity(ev.encrypted
      ? `encrypted (${ev.cipher}) · relay key ${ev.relay_key.slice(0, 19)}…`
      : "NOT ENCRYPTED: the relay and the network can read everything", ev.encrypted);
    $("status").textContent += ` — you are client ${ev.id}`;
    notice(`you are client ${ev.id} (the relay admits at most ${ev.max_clients})`);
  },
  security(ev) {
    const s = $("security");
    s.title = ev.summary.replace(/^\* /, "");
    if (!ev.encrypted) setSecurity(ev.summary, false);
    notice(ev.summary.replace(/^\* /, ""), ev.encrypted ? "notice" : "error");
  },
  key_changed(ev) {
    const a = $("alert");
    a.hidden = false;
    a.textContent = `WARNING: the other side's key has changed; nothing was sent. ${ev.hint}`;
  },
  roster(ev) {
    roster.clear();
    for (const c of ev.clients) roster.set(c.id, { ...c });
    drawRoster();
  },
  joined(ev) {
    roster.set(ev.id, { id: ev.id, name: ev.name, key: ev.key, away: false, exited: false });
    drawRoster();
    notice(`${who(ev.id)} joined`);
  },
  left(ev) {
    notice(`${who(ev.id)} left${ev.reason === "normal" ? "" : ` (${ev.reason})`}`);
    roster.delete(ev.id);
    drawRoster();
  },
  exited(ev) {
    const c = roster.get(ev.id);
    if (c) c.exited = true;
    drawRoster();
    notice(`${who(ev.id)} said exit`);
  },
  away(ev) {
    const c = roster.get(ev.id);
    if (c) c.away = true;
    drawRoster();
    notice(`${who(ev.id)} is away; messages to it wait up to ${Math.ceil(ev.wait_ms / 1000)} s`);
  },
  back(ev) {
    const c = roster.get(ev.id);
    if (c) c.away = false;
    drawRoster();
    notice(`${who(ev.id)} is back`);
  },
  held(ev) { notice(`${ev.to} is away: your message waits up to ${Math.ceil(ev.wait_ms / 1000)} s for it`); },
  message(ev) {
    if (mode === "relay") line(who(ev.from), ev.text, { all: ev.to === "all" });
    else line("peer", ev.text);
  },
  not_end_to_end(ev) { notice(`${ev.id} has no key: what you exchange with it is not end-to-end encrypted`, "error"); },
  unconfirmed(ev) { notice(`${ev.messages ? ev.messages.length : ev.seqs.length} of your messages were not confirmed delivered`, "error"); },
  unreadable(ev) { notice(`a message from ${ev.from} could not be read: ${ev.reason}`, "error"); },
  unsupported() { notice("a kind of message this version cannot show", "error"); },
  error(ev) { notice(ev.message, "error"); },
  refused(ev) { notice(`refused by the relay: ${ev.reason}`, "error"); },
  finished() { notice("everyone has said exit; the conversation is over"); },
  disconnected(ev) { notice(`disconnected: ${ev.reason} (${ev.code})`, ev.code === "normal" ? "notice" : "error"); },
  connection_lost(ev) { notice(`${ev.reason}; getting back (held for ${ev.grace_s} s)`); },
  reconnecting(ev) { notice(`could not reach the other side (attempt ${ev.attempt}); trying again`); },
  resumed() { notice("back: nothing was lost, nothing repeated"); },
  moved(ev) { notice(`back on another relay of the cluster: still client ${ev.id}; nothing is shown twice`); },
  session_lost(ev) { notice(`${ev.reason} (${ev.code})`, "error"); },
  rejoining(ev) { notice(`joining again in ${(ev.wait_ms / 1000).toFixed(1)} s (attempt ${ev.attempt})`); },
  rejoined(ev) { me = ev.id; notice(`joined again as client ${ev.id} (you were ${ev.was}); IDs may have changed`); },
  restored(ev) { notice(`resuming the session saved in ${ev.file}`); },
  set_aside(ev) { notice(`${ev.file}: ${ev.reason}; a new session starts`, "error"); },
  listening(ev) { notice(`listening on ${ev.address}; waiting for a peer`); },
  arrived(ev) { notice(`${ev.address} connected`); },
  connected(ev) {
    notice(ev.plain_text ? "connected to a plain-text peer (not encrypted)" : `connected to ${ev.name || "the peer"}`);
    setSecurity(ev.encrypted
      ? `encrypted (${ev.cipher}) · peer key ${ev.key.slice(0, 19)}…`
      : "NOT ENCRYPTED: the network can read everything", ev.encrypted);
  },
  peer_exited() { notice("the peer said exit"); },
  history_start(ev) { notice(`history: ${ev.lines} earlier lines`); },
  history(ev) { line(`${ev.at.replace("T", " ").replace("Z", "")} ${ev.from}`, ev.text, { history: true }); },
  history_end() { notice("end of history"); },
  problem(ev) { notice(ev.message, "error"); },
  warning(ev) { notice(ev.message, "error"); },
  delivered() {},
  file() {},
  file_offering(ev) { transfer(`send:${ev.name}`, ev.name, ev.size, true); notice(`offering ${ev.name} (${human(ev.size)}) to ${ev.to}`); },
  file_offered(ev) { offer(ev); notice(`${ev.from} offers ${ev.name} (${human(ev.size)})`); },
  file_accepted(ev) { transfer(`recv:${ev.name}`, ev.name, ev.size, false); },
  file_declined(ev) { notice(`declined ${ev.name}`); },
  file_peer_accepted(ev) { notice(`${ev.to} accepted ${ev.name}`); },
  file_peer_declined(ev) {
    notice(`${ev.to} declined ${ev.name}: ${ev.reason}`, "error");
    const t = transfers.get(`send:${ev.name}`);
    if (t) setProgress(t, 0, "declined");
  },
  file_progress(ev) {
    const t = transfer(`${ev.sending ? "send" : "recv"}:${ev.name}`, ev.name, ev.size, ev.sending);
    setProgress(t, ev.done, `${Math.floor((ev.done * 100) / Math.max(ev.size, 1))}% at ${human(ev.rate)}/s, about ${ev.left_s} s left`);
  },
  file_delivered(ev) {
    const t = transfer(`send:${ev.name}`, ev.name, ev.size, true);
    setProgress(t, ev.size, "delivered, hash verified");
    t.querySelector(".name").textContent = `sent ${ev.name} (${human(ev.size)}) to ${ev.to}`;
    notice(`${ev.name} delivered to ${ev.to} (hash verified)`);
  },
  file_received(ev) {
    const t = transfer(`recv:${ev.name}`, ev.name, ev.size, false);
    setProgress(t, ev.size, `saved as ${ev.path}`);
    t.querySelector(".name").textContent = `received ${ev.name} (${human(ev.size)}) from ${ev.from}`;
    notice(`received ${ev.name} (${human(ev.size)}, BLAKE3 verified) from ${ev.from}: ${ev.path}`);
  },
  file_send_failed(ev) { notice(`sending ${ev.name} to ${ev.to} failed: ${ev.reason}`, "error"); },
  file_receive_stopped(ev) { notice(`receiving ${ev.name} stopped at ${ev.percent}%: ${ev.reason}`, "error"); },
  file_problem(ev) { notice(ev.message, "error"); },
};

function handle(ev) {
  const h = handlers[ev.event];
  if (h) h(ev);
  else notice(JSON.stringify(ev));
}

function send(command) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(command));
  else notice("not connected to p2pchat web (reconnecting)", "error");
}

function open() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
  // The app sends what this page missed first: start from a clean page.
  socket.onopen = () => {
    reset();
    showChat(false);
    $("status").textContent = "not connected";
    document.body.dataset.socket = "open";
  };
  socket.onmessage = (e) => handle(JSON.parse(e.data));
  socket.onclose = () => {
    document.body.dataset.socket = "closed";
    setTimeout(open, 1000);
  };
}

async function upload(file) {
  const to = $("to").value;
  const params = new URLSearchParams({ token, name: file.name });
  if (mode === "relay") {
    if (to === "all") { notice("choose who the file is for (files go to one client)", "error"); return; }
    params.set("to", to);
  }
  try {
    const r = await fetch(`/upload?${params}`, { method: "POST", body: file });
    if (!r.ok) notice(`${file.name}: ${await r.text()}`, "error");
  } catch (e) {
    notice(`${file.name}: the upload failed: ${e}`, "error");
  }
}

function wire() {
  $("join-form").onsubmit = (e) => {
    e.preventDefault();
    send({ cmd: "join", host: $("host").value.trim(), name: $("name").value.trim(), insecure: $("insecure").checked, password: $("password").value || null });
  };
  $("connect-form").onsubmit = (e) => {
    e.preventDefault();
    send({ cmd: "connect", host: $("peer").value.trim(), name: $("direct-name").value.trim() });
  };
  $("listen").onclick = () => send({ cmd: "listen", port: Number($("listen-port").value) || 0, name: $("direct-name").value.trim() });
  $("composer").onsubmit = (e) => {
    e.preventDefault();
    const text = $("text").value;
    if (!text.trim()) return;
    const to = $("to").value;
    // Shown when the app says it was sent (a `sent` event), on every open page.
    if (mode === "relay" && to === "all") send({ cmd: "broadcast", text });
    else if (mode === "relay") send({ cmd: "send", to: Number(to), text });
    else send({ cmd: "send", text });
    $("text").value = "";
  };
  $("who").onclick = () => send({ cmd: "who" });
  $("exit").onclick = () => send({ cmd: "exit" });
  $("quit").onclick = () => send({ cmd: "quit" });
  $("file").onchange = (e) => { for (const f of e.target.files) upload(f); e.target.value = ""; };
  const drop = $("messages");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("dragging"); };
  drop.ondragleave = () => drop.classList.remove("dragging");
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove("dragging");
    for (const f of e.dataTransfer.files) upload(f);
  };
  open();
}

wire();
