// The chat page: one WebSocket to /ws/<room>?name=<name>, reconnected with backoff.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), joinForm: $("join-form"), name: $("name"), room: $("room"),
  quickRooms: $("quick-rooms"), roomTitle: $("room-title"), count: $("member-count"),
  members: $("members"), messages: $("messages"), sendForm: $("send-form"),
  message: $("message"), send: $("send"), rtt: $("rtt"),
};

const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 5000;
const PING_EVERY_MS = 15000;

let socket = null;      // the current WebSocket, or null
let wanted = null;      // {room, name} we want to be connected to
let attempts = 0;       // failed attempts since the last successful open
let retryTimer = null;
let pingTimer = null;
let members = [];       // the room's names: the server's list on arrival, then each change

function setStatus(kind, text) {
  ui.status.className = "status status-" + kind;
  ui.status.textContent = text;
}

function addLine(className, text, from) {
  const li = document.createElement("li");
  li.className = className;
  if (from !== undefined) {
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = from;
    li.appendChild(who);
  }
  li.appendChild(document.createTextNode(text));
  ui.messages.appendChild(li);
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function showMembers(list) {
  members = list.slice();
  ui.count.textContent = String(members.length);
  ui.members.replaceChildren(...members.map((name) => {
    const li = document.createElement("li");
    li.textContent = name;
    return li;
  }));
}

function setComposer(enabled) {
  ui.message.disabled = !enabled;
  ui.send.disabled = !enabled;
  ui.message.placeholder = enabled ? "Say something to #" + wanted.room : "Join a room to chat";
}

function socketUrl({ room, name }) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/${encodeURIComponent(room)}?name=${encodeURIComponent(name)}`;
}

function send(obj) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify(obj));
    return true;
  }
  return false;
}

function ping() {
  send({ type: "ping", content: String(performance.now()), from: wanted.name });
}

function connect() {
  clearTimeout(retryTimer);
  const target = wanted;
  const ws = new WebSocket(socketUrl(target));
  socket = ws;
  setStatus("connecting", attempts ? `reconnecting (try ${attempts + 1})` : "connecting");

  ws.onopen = () => {
    attempts = 0;
    setStatus("online", "online in #" + target.room);
    setComposer(true);
    ping();
    clearInterval(pingTimer);
    pingTimer = setInterval(ping, PING_EVERY_MS);
  };

  ws.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    switch (msg.type) {
      case "members":  // on arrival (with our own name), and after the server resyncs
        if (Array.isArray(msg.members)) showMembers(msg.members);
        if (typeof msg.you === "string") target.you = msg.you;
        break;
      case "chat":
        addLine(msg.from === (target.you || target.name) ? "message mine" : "message", msg.content, msg.from);
        break;
      case "join":  // a notice carries the change, not the list
        if (!members.includes(msg.from)) showMembers([...members, msg.from]);
        addLine("notice", msg.content);
        break;
      case "leave":
        showMembers(members.filter((name) => name !== msg.from));
        addLine("notice", msg.content);
        break;
      case "pong": {
        const sent = Number(msg.content);
        if (Number.isFinite(sent)) ui.rtt.textContent = `${(performance.now() - sent).toFixed(1)} ms`;
        break;
      }
      case "error":
        addLine("notice error", "server: " + msg.content);
        break;
    }
  };

  ws.onclose = () => {
    clearInterval(pingTimer);
    if (socket !== ws) return;  // replaced by a newer connection on purpose
    socket = null;
    setComposer(false);
    showMembers([]);
    // Exponential backoff with jitter, so a restarted server is not stampeded.
    const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** attempts) * (0.5 + Math.random() / 2);
    attempts += 1;
    setStatus("connecting", `offline, retrying in ${(delay / 1000).toFixed(1)} s`);
    retryTimer = setTimeout(connect, delay);
  };
}

function join(room, name) {
  wanted = { room, name };
  localStorage.setItem("rue_trio.name", name);
  history.replaceState(null, "", "#" + room);
  ui.roomTitle.textContent = "#" + room;
  ui.messages.replaceChildren();
  showMembers([]);
  attempts = 0;
  const old = socket;
  socket = null;
  if (old) old.close(1000, "changing room");
  connect();
}

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!ui.joinForm.reportValidity()) return;
  join(ui.room.value.trim(), ui.name.value.trim());
});

ui.quickRooms.addEventListener("click", (event) => {
  const room = event.target.dataset && event.target.dataset.room;
  if (!room) return;
  ui.room.value = room;
  if (ui.name.value.trim()) join(room, ui.name.value.trim());
  else ui.name.focus();
});

ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const content = ui.message.value.trim();
  if (!content || !wanted) return;
  if (send({ type: "chat", content, from: wanted.name })) ui.message.value = "";
});

ui.name.value = localStorage.getItem("rue_trio.name") || "";
ui.room.value = decodeURIComponent(location.hash.slice(1)) || "lobby";
