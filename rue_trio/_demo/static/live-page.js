// The /live page: a room with its last messages, recovery after a reconnect, and each
// user listed once with their number of tabs. The protocol work is RueLive's (/live.js).
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  let live = null;
  let room = null;

  function setStatus(status) {
    const el = $("status");
    el.textContent = status;
    el.className = "status status-" + status;
    const online = status === "online";
    $("message").disabled = !online || room === null;
    $("send").disabled = !online || room === null;
  }

  function notice(text) {
    $("notice").textContent = text;
  }

  function show(message) {
    const li = document.createElement("li");
    li.className = "message";
    li.dataset.offset = String(message.offset);
    const data = message.data || {};
    const who = document.createElement("strong");
    who.textContent = data.from + ": ";
    li.append(who, document.createTextNode(data.text));
    $("messages").append(li);
    li.scrollIntoView({ block: "end" });
  }

  async function refreshUsers() {
    if (live === null || room === null) return;
    let users;
    try {
      users = await live.presence(room);
    } catch (error) {
      return; // offline: the next reconnection refreshes the list
    }
    const list = $("users");
    list.replaceChildren();
    for (const [user, metas] of Object.entries(users)) {
      const li = document.createElement("li");
      li.dataset.user = user;
      li.dataset.tabs = String(metas.length);
      li.textContent = metas.length > 1 ? `${user} (${metas.length} tabs)` : user;
      list.append(li);
    }
    $("user-count").textContent = String(Object.keys(users).length);
  }

  async function reload() {
    // The server could not replay what we missed: start again from its history.
    $("messages").replaceChildren();
    const page = await live.history(room, 100);
    for (const message of page.messages) show(message);
  }

  function onEvent(event) {
    if (event.op === "subscribed" && event.ref === undefined) {
      // A resubscription after a reconnect (the first subscription carries a ref).
      if (event.recovered) {
        notice(`recovered ${event.missed} messages`);
      } else {
        notice("could not recover what was missed: history reloaded");
        reload();
      }
    }
    refreshUsers();
  }

  $("join-form").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    if (live !== null) live.close();
    $("messages").replaceChildren();
    room = $("room").value;
    $("room-title").textContent = "#" + room;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/live?name=${encodeURIComponent($("name").value)}`;
    live = new RueLive(url, { onMessage: show, onEvent: onEvent, onStatus: setStatus });
    try {
      await live.subscribe(room, { last: 100 });
      notice("");
    } catch (error) {
      notice(`could not join: ${error.message}`);
    }
    setStatus(live.socket ? "online" : "offline");
    refreshUsers();
  });

  $("send-form").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const text = $("message").value.trim();
    if (!text || live === null) return;
    $("message").value = "";
    try {
      await live.publish(room, { text: text });
    } catch (error) {
      notice(`not sent: ${error.message}`);
    }
  });

  // Tabs of a user already present do not announce themselves: refresh now and then.
  setInterval(refreshUsers, 3000);
})();
