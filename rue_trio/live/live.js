// RueLive: a browser client of rue_trio's live protocol (docs/reference/live.md).
// One file, no build step: <script src="/live.js"></script>, then `new RueLive(url, options)`.
//
// It reconnects by itself with exponential backoff and jitter (and at once when the
// browser comes back online), subscribes again to each room from the last message it
// handled there, and drops a replayed message it already handled: `onMessage` sees every
// message once, in order, whenever the server's history allows. When it cannot (the server
// restarted, or the page was away longer than the history reaches), `onEvent` gets the
// `subscribed` answer with `recovered: false`.
(function (global) {
  "use strict";

  class RueLive {
    // url: ws:// or wss:// URL of the endpoint.
    // options: backoffMin, backoffMax (milliseconds), onMessage(message),
    //   onEvent(event) for subscribed, join and leave, onStatus("connecting" | "online" |
    //   "offline").
    constructor(url, options) {
      const o = options || {};
      this.url = url;
      this.backoffMin = o.backoffMin || 100;
      this.backoffMax = o.backoffMax || 10000;
      this.onMessage = o.onMessage || function () {};
      this.onEvent = o.onEvent || function () {};
      this.onStatus = o.onStatus || function () {};
      this.rooms = new Map(); // room -> {epoch, offset} of the last message handled, or null
      this.pending = new Map(); // ref -> {resolve, reject}
      this.nextRef = 1;
      this.failures = 0;
      this.socket = null;
      this.timer = null;
      this.closed = false;
      this.connects = 0;
      this._online = () => this._connectNow();
      // Offline: give the socket up at once, without waiting for a closing handshake that
      // may never complete; the "online" event brings us back.
      this._offline = () => { if (this.socket) this._lost(this.socket, true); };
      global.addEventListener("online", this._online);
      global.addEventListener("offline", this._offline);
      this._connect();
    }

    // The position of the last message handled in `room`, or null.
    position(room) {
      return this.rooms.get(room) || null;
    }

    // Follow a room from now on, and after every reconnection. With `last`, first fetch the
    // room's last messages (handed to onMessage with `replayed: true`), then subscribe from
    // the position they end at: no gap and no duplicate between the two.
    async subscribe(room, options) {
      const o = options || {};
      if (!this.rooms.has(room)) this.rooms.set(room, o.since || null);
      if (o.last && !this.rooms.get(room)) {
        const page = await this.request({ op: "history", room: room, limit: o.last });
        for (const message of page.messages) this._deliver(message, true);
        if (!this.rooms.get(room)) this.rooms.set(room, { epoch: page.epoch, offset: page.offset });
      }
      return this.request(this._subscription(room));
    }

    unsubscribe(room) {
      this.rooms.delete(room);
      return this.request({ op: "unsubscribe", room: room });
    }

    publish(room, data) {
      return this.request({ op: "publish", room: room, data: data });
    }

    history(room, limit) {
      return this.request({ op: "history", room: room, limit: limit });
    }

    presence(room) {
      return this.request({ op: "presence", room: room }).then((answer) => answer.users);
    }

    // Send one op with a ref; resolves with the answer, rejects with an `error` answer
    // (its code and reason) or when the connection ends first.
    request(op) {
      return new Promise((resolve, reject) => {
        const send = () => {
          const ref = this.nextRef++;
          this.pending.set(ref, { resolve: resolve, reject: reject });
          this.socket.send(JSON.stringify(Object.assign({}, op, { ref: ref })));
        };
        if (this.socket && this.socket.readyState === WebSocket.OPEN) send();
        else this._whenOpen(send);
      });
    }

    close() {
      this.closed = true;
      clearTimeout(this.timer);
      global.removeEventListener("online", this._online);
      global.removeEventListener("offline", this._offline);
      if (this.socket) this.socket.close(1000, "bye");
    }

    // ------------------------------------------------------------------ the link

    _whenOpen(fn) {
      (this.waiting = this.waiting || []).push(fn);
    }

    _subscription(room) {
      const op = { op: "subscribe", room: room };
      const since = this.rooms.get(room);
      if (since) op.since = since;
      return op;
    }

    _connectNow() {
      if (this.closed || this.socket) return;
      clearTimeout(this.timer);
      this.failures = 0;
      this._connect();
    }

    _connect() {
      if (this.closed || this.socket) return;
      if (global.navigator && global.navigator.onLine === false) {
        this.onStatus("offline"); // the "online" event brings us back
        return;
      }
      this.onStatus("connecting");
      const socket = new WebSocket(this.url);
      this.socket = socket;
      socket.onopen = () => {
        this.failures = 0;
        this.connects += 1;
        if (this.connects > 1) {
          // Back after a loss: follow every room again from where we stopped.
          for (const room of this.rooms.keys()) {
            socket.send(JSON.stringify(this._subscription(room)));
          }
        }
        this.onStatus("online");
        const waiting = this.waiting || [];
        this.waiting = [];
        for (const fn of waiting) fn();
      };
      socket.onmessage = (event) => this._dispatch(JSON.parse(event.data));
      socket.onclose = () => this._lost(socket, false);
    }

    _lost(socket, abandon) {
      if (socket !== this.socket) return; // an old socket's late news
      socket.onopen = socket.onmessage = socket.onclose = null;
      if (abandon) socket.close(4000, "offline");
      this.socket = null;
      for (const p of this.pending.values()) p.reject(new Error("connection lost"));
      this.pending.clear();
      if (this.closed) return;
      this.onStatus("offline");
      const delay = Math.min(this.backoffMax, this.backoffMin * Math.pow(2, this.failures));
      this.failures += 1;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this._connect(), delay / 2 + Math.random() * delay / 2);
    }

    _deliver(message, replayed) {
      const seen = this.rooms.get(message.room);
      if (seen === undefined) return; // unsubscribed meanwhile
      if (message.epoch) {
        if (seen && seen.epoch === message.epoch && message.offset <= seen.offset) return;
        this.rooms.set(message.room, { epoch: message.epoch, offset: message.offset });
      }
      this.onMessage(Object.assign({ replayed: !!replayed }, message));
    }

    _dispatch(item) {
      if (item.op === "message") {
        this._deliver(item, false);
        return;
      }
      if (item.op === "subscribed") {
        const seen = this.rooms.get(item.room);
        if (seen === null || (seen && !item.recovered)) {
          this.rooms.set(item.room, { epoch: item.epoch, offset: item.offset });
        }
      }
      const waiter = item.ref !== undefined ? this.pending.get(item.ref) : undefined;
      if (waiter) {
        this.pending.delete(item.ref);
        if (item.op === "error") {
          const error = new Error(item.reason);
          error.code = item.code;
          waiter.reject(error);
        } else {
          waiter.resolve(item);
        }
      }
      if (item.op === "subscribed" || item.op === "join" || item.op === "leave") {
        this.onEvent(item);
      }
    }
  }

  global.RueLive = RueLive;
})(typeof window !== "undefined" ? window : this);
