// fission.js — the Fission client: one /ws socket for auth, calls with refs, live topics
// (snapshot, then events applied to it), and resume by seq after a reconnect.
// An ES module with no dependencies; docs/client.md documents it. The pure parts
// (reduce, applyFrame, nextDelay, closePolicy) are exported so they can be tested alone.

/** A refusal or failure of a call: `code` is the contract's error code. */
export class FissionError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "FissionError";
    this.code = code;
    Object.assign(this, extra); // ref, retry_after_ms
  }
}

// ---- reducers: how each topic's snapshot changes with an event (docs/api.md) ----------

function mergeGroup(state, data) {
  const group = { ...state.group, ...(data.group || {}) };
  const members = state.group.members || [];
  if (data.type === "member_joined" && data.user !== undefined) {
    group.members = [...members, data.user];
  } else {
    group.members = data.type === "deal_completed" && Array.isArray(data.members)
      ? data.members : members;
  }
  return { ...state, group };
}

function mergeBargain(state, data) {
  const bargain = { ...state.bargain, ...(data.bargain || {}) };
  const helpers = state.bargain.helpers || [];
  bargain.helpers = data.type === "bargain_helped"
    ? [...helpers, { user: data.helper, cut: data.cut, at: data.at }] : helpers;
  return { ...state, bargain };
}

function mergeLottery(state, data) {
  const lottery = { ...state.lottery };
  if (data.type === "won" && data.draw && data.draw.prize) {
    lottery.prizes = (lottery.prizes || []).map((p) =>
      p.id === data.draw.prize.id ? { ...p, stock_left: data.stock_left } : p);
    lottery.draws = (lottery.draws || 0) + 1;
    lottery.recent = [data.draw, ...(lottery.recent || [])].slice(0, 10);
  } else if (data.type === "revealed") {
    lottery.seed = data.seed;
  } else if (data.type === "committed") {
    lottery.commitment = data.commitment;
  }
  return { ...state, lottery };
}

function mergeBoard(state, data) {
  // A `board` frame carries the whole top N (coalesced, not a diff): it replaces the
  // board. A `champions` frame closes a period (its final top); a `board` frame of the
  // next period follows it.
  const { type, ...rest } = data;
  if (type === "champions") return { ...state, closed: rest };
  return { ...state, leaderboard: { ...(state.leaderboard || {}), ...rest } };
}

function mergeUser(state, data) {
  return { ...state, last: data };
}

export const REDUCERS = {
  groupbuy: mergeGroup,
  bargain: mergeBargain,
  lottery: mergeLottery,
  leaderboard: mergeBoard,
  user: mergeUser,
};

/** The reducer for `topic` (by its kind, the part before the first ':'). */
export function reducerFor(topic) {
  return REDUCERS[String(topic).split(":", 1)[0]] || ((state, data) => ({ ...state, last: data }));
}

/**
 * One frame applied to a subscription's `{state, seq}` (a pure function).
 * Returns `{state, seq, action}`: `snapshot` (state replaced), `applied` (the next event),
 * `duplicate` (an event already applied: ignored), `gap` (events are missing: resubscribe
 * with `after: seq`) or `waiting` (an event before any snapshot: ignored).
 */
export function applyFrame(sub, frame, reduce = reducerFor(frame.topic)) {
  if (frame.op === "snapshot") {
    return { state: frame.data, seq: frame.seq, action: "snapshot" };
  }
  if (sub.state == null || sub.seq == null) return { ...sub, action: "waiting" };
  if (frame.seq <= sub.seq) return { ...sub, action: "duplicate" };
  if (frame.seq > sub.seq + 1) return { ...sub, action: "gap" };
  return { state: reduce(sub.state, frame.data), seq: frame.seq, action: "applied" };
}

/** The subscribe frame that (re)joins a topic: with `after` once a seq is known. */
export function subscribeFrame(topic, seq, ref) {
  const frame = { op: "subscribe", topic, ref };
  if (seq != null) frame.after = seq;
  return frame;
}

// ---- reconnecting -------------------------------------------------------------------

/** Close codes (docs/api.md) and what a client does about each. */
export function closePolicy(code) {
  switch (code) {
    case 4001: return { reconnect: "token", reason: "unauthorized" }; // needs a new token
    case 4029: return { reconnect: "slow", reason: "too_many_connections" };
    case 1008: return { reconnect: "slow", reason: "policy" }; // rate limit abused
    case 1012: return { reconnect: "soon", reason: "server_restart" };
    case 4008: return { reconnect: "backoff", reason: "slow_consumer" };
    case 4002: return { reconnect: "backoff", reason: "idle" };
    default: return { reconnect: "backoff", reason: "lost" };
  }
}

/**
 * Milliseconds to wait before reconnect attempt `attempt` (0 = the first) after a close
 * of kind `how` (closePolicy's `reconnect`): exponential with full jitter, so that a
 * thousand pages dropped by one restart do not all come back in the same instant.
 */
export function nextDelay(attempt, how = "backoff", random = Math.random,
                          { base = 500, cap = 30000 } = {}) {
  if (how === "soon" && attempt === 0) return Math.floor(100 + random() * 900);
  const floor = how === "slow" ? 5000 : 0;
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 16));
  return Math.floor(floor + random() * Math.max(ceiling, 1));
}

/** A JWT's `exp` (seconds) and `sub`, read without checking it (the server checks). */
export function tokenClaims(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = decodeURIComponent(Array.from(atob(part),
      (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""));
    const claims = JSON.parse(text);
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

let refCounter = 0;
/** A fresh ref (idempotency key): random, so two pages never share one. */
export function newRef(prefix = "c") {
  refCounter += 1;
  // `typeof` checks: older mini-program engines have no global object by name.
  const rnd = typeof crypto !== "undefined" && crypto.randomUUID ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  return `${prefix}-${rnd}-${refCounter}`;
}

// ---- sockets ------------------------------------------------------------------------

/** The browser's WebSocket as a socket factory (the default). */
export function browserSocket(url) {
  return new WebSocket(url);
}

/**
 * A socket factory over a WeChat mini-program's `wx.connectSocket` (pass `wx`): it
 * returns an object with the browser WebSocket's shape (`send`, `close`, `onopen`,
 * `onmessage`, `onclose`, `onerror`) that FissionClient drives.
 */
export function wxSocket(wx) {
  return (url) => {
    const sock = { onopen: null, onmessage: null, onclose: null, onerror: null };
    const task = wx.connectSocket({ url, fail: (err) => sock.onerror && sock.onerror(err) });
    task.onOpen(() => sock.onopen && sock.onopen({}));
    task.onMessage((msg) => sock.onmessage && sock.onmessage({ data: msg.data }));
    task.onClose((res) => sock.onclose && sock.onclose({ code: res.code, reason: res.reason }));
    task.onError((err) => sock.onerror && sock.onerror(err));
    sock.send = (data) => task.send({ data });
    sock.close = (code = 1000, reason = "") => task.close({ code, reason });
    return sock;
  };
}

function defaultUrl() {
  const loc = typeof location !== "undefined" ? location : null;
  if (!loc) throw new Error("fission.js: pass `url` (no page location to derive it from)");
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

// A connection authenticated at least this long (ms) was healthy: its loss is a first drop.
export const STABLE_MS = 10000;

/**
 * The client. Options: `url` (the /ws URL; default: this page's host), `token` (a JWT)
 * or `getToken` (async, asked on connect and after an expired token's close), `socket`
 * (a factory `url => socket`: `browserSocket` by default, `wxSocket(wx)` in a
 * mini-program), `onStatus(status, detail)` (`connecting`, `open`, `reconnecting`,
 * `unauthorized`, `closed`), `callTimeout` (ms, default 20000), `pingEvery` (ms).
 */
export class FissionClient {
  constructor(options = {}) {
    this.url = options.url || defaultUrl();
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.factory = options.socket || browserSocket;
    this.onStatus = options.onStatus || (() => {});
    this.callTimeout = options.callTimeout ?? 20000;
    this.pingEvery = options.pingEvery ?? 25000;
    this.random = options.random || Math.random;
    this.subs = new Map(); // topic -> subscription
    this.pending = new Map(); // ref -> {frame, resolve, reject, timer, sent}
    this.socket = null;
    this.ready = false; // authenticated on the current socket
    this.attempt = 0;
    this.upSince = null; // when the current socket was authenticated (ms)
    this.stopped = true;
    this.retryTimer = null;
    this.heard = Date.now();
    this.pinger = null;
    this.status = "closed";
    this.user = null;
    this.connects = 0; // sockets opened so far (1 = no reconnect yet)
  }

  /** Open the socket (and keep it open until `close()`). */
  connect() {
    this.stopped = false;
    if (!this.socket) this._open();
    return this;
  }

  /** Close for good: no reconnect; pending calls fail with `closed`. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this._stopPinger();
    const sock = this.socket;
    this._detach();
    if (sock) sock.close(1000, "client closed");
    for (const [ref, call] of this.pending) {
      clearTimeout(call.timer);
      call.reject(new FissionError("closed", "the client was closed", { ref }));
    }
    this.pending.clear();
    this._status("closed");
  }

  /** Drop the current socket as if the network had lost it (it reconnects and resumes). */
  drop() {
    if (this.socket) this._lost({ code: 1006, reason: "dropped by the client" });
  }

  /** Reconnect at once if waiting to (the network is back): skips the backoff's wait. */
  reconnectNow() {
    if (!this.stopped && !this.socket && this.retryTimer) this._open();
  }

  /** Use a new token now (sent as an `auth` frame on an open socket: it extends it). */
  setToken(token) {
    this.token = token;
    if (this.socket && this.ready) this._send({ op: "auth", token, ref: newRef("auth") });
    else if (!this.stopped && !this.socket) this._open();
  }

  /**
   * Call a method (`groupbuy.join`, `lottery.draw`, ...) and get its `result`. `ref` is
   * the idempotency key: pass the same one to retry a call whose answer you did not get
   * (a timeout's error carries it). Calls made while disconnected wait for the socket, and
   * calls in flight when it drops are sent again with their ref once it is back (the
   * server answers a repeated ref with the first answer). `rate_limited` is retried
   * after the server's `retry_after_ms`.
   */
  call(method, params = {}, { ref = newRef(), timeout = this.callTimeout } = {}) {
    if (this.pending.has(ref)) return this.pending.get(ref).promise;
    let resolve, reject;
    const promise = new Promise((ok, fail) => { resolve = ok; reject = fail; });
    const call = { frame: { op: "call", ref, method, params }, resolve, reject, promise,
                   retries: 0, timer: null };
    call.timer = setTimeout(() => {
      this.pending.delete(ref);
      reject(new FissionError("timeout", `no answer to ${method} in ${timeout} ms; call again`
        + " with the same ref", { ref }));
    }, timeout);
    this.pending.set(ref, call);
    if (this.ready) this._send(call.frame);
    this.connect();
    return promise;
  }

  /**
   * Watch a topic: `onChange(state, frame, sub)` runs after its snapshot and after each
   * event applied to it (`state` is the snapshot's data with the events merged in, as
   * docs/api.md says how); `onError(err)` when the server refuses the topic. Returns the
   * subscription (`state`, `seq`, `unsubscribe()`).
   */
  subscribe(topic, { onChange = () => {}, onError = () => {}, reduce } = {}) {
    const old = this.subs.get(topic);
    if (old) old.unsubscribe();
    const sub = {
      topic, state: null, seq: null, onChange, onError, reduce: reduce || reducerFor(topic),
      ref: null, resyncs: 0,
      unsubscribe: () => {
        if (this.subs.get(topic) !== sub) return;
        this.subs.delete(topic);
        if (this.ready) this._send({ op: "unsubscribe", topic });
      },
    };
    this.subs.set(topic, sub);
    if (this.ready) this._join(sub);
    this.connect();
    return sub;
  }

  // ---- internals ----------------------------------------------------------------------

  _status(status, detail) {
    this.status = status;
    this.onStatus(status, detail);
  }

  async _open() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stopped || this.socket) return;
    if (!this.token && this.getToken) {
      try { this.token = await this.getToken(); } catch { this.token = null; }
    }
    if (!this.token) { this._status("unauthorized"); return; }
    if (this.stopped || this.socket) return;
    this._status(this.connects ? "reconnecting" : "connecting");
    let sock;
    try {
      sock = this.factory(this.url);
    } catch (err) {
      this._retry("backoff", err);
      return;
    }
    this.socket = sock;
    this.connects += 1;
    sock.onopen = () => {
      if (this.socket !== sock) return;
      this.heard = Date.now();
      // Auth first, then everything else at once: the server reads frames in order, so
      // nothing waits a round trip for the auth reply (a slow network's first paint).
      this._raw({ op: "auth", token: this.token, ref: newRef("auth") });
      this.ready = true;
      for (const sub of this.subs.values()) this._join(sub);
      for (const call of this.pending.values()) this._send(call.frame);
      this._startPinger();
    };
    sock.onmessage = (event) => {
      if (this.socket !== sock) return;
      this.heard = Date.now();
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      this._frame(frame);
    };
    sock.onclose = (event) => {
      if (this.socket === sock) this._lost(event || {});
    };
    sock.onerror = () => {}; // a close follows every error: handled there
  }

  _detach() {
    const sock = this.socket;
    if (sock) sock.onopen = sock.onmessage = sock.onclose = sock.onerror = null;
    this.socket = null;
    this.ready = false;
  }

  _lost(event) {
    const sock = this.socket;
    this._detach();
    this._stopPinger();
    if (sock) { try { sock.close(1000, "reconnecting"); } catch { /* already closed */ } }
    if (this.stopped) return;
    // Only a socket that stayed up a while starts the next backoff afresh: one that a
    // struggling server accepts and drops at once (slow consumer, overload) must not
    // bring every client back at the first attempt's pace.
    if (this.upSince != null && Date.now() - this.upSince >= STABLE_MS) this.attempt = 0;
    this.upSince = null;
    const policy = closePolicy(event.code);
    if (policy.reconnect === "token") {
      this.token = null; // expired or refused: a new one, or nothing
      if (!this.getToken) { this._status("unauthorized", policy); return; }
    }
    this._retry(policy.reconnect === "token" ? "backoff" : policy.reconnect, policy);
  }

  _retry(how, detail) {
    const wait = nextDelay(this.attempt, how, this.random);
    this.attempt += 1;
    this._status("reconnecting", { ...detail, wait });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._open(), wait);
  }

  _startPinger() {
    this._stopPinger();
    // A socket can die without a close (a phone changing networks): ping when quiet,
    // and count it lost if nothing at all comes back.
    this.pinger = setInterval(() => {
      const quiet = Date.now() - this.heard;
      if (quiet > this.pingEvery * 1.5) this._lost({ code: 1006, reason: "no answer to ping" });
      else if (quiet >= this.pingEvery * 0.9) this._send({ op: "ping" });
    }, Math.max(1000, this.pingEvery / 2));
  }

  _stopPinger() {
    clearInterval(this.pinger);
    this.pinger = null;
  }

  _raw(frame) {
    try { this.socket.send(JSON.stringify(frame)); } catch { /* the close handler reconnects */ }
  }

  _send(frame) {
    if (this.socket && this.ready) this._raw(frame);
  }

  _join(sub) {
    sub.ref = newRef("sub");
    this._send(subscribeFrame(sub.topic, sub.state == null ? null : sub.seq, sub.ref));
  }

  _frame(frame) {
    if (frame.op === "event" || frame.op === "snapshot") {
      const sub = this.subs.get(frame.topic);
      if (!sub) return;
      const next = applyFrame(sub, frame, sub.reduce);
      if (next.action === "gap") {
        // The server repairs its own gaps; one seen here means frames were lost on the
        // way: ask again from the last seq applied.
        sub.resyncs += 1;
        this._join(sub);
        return;
      }
      if (next.action !== "applied" && next.action !== "snapshot") return;
      sub.state = next.state;
      sub.seq = next.seq;
      try { sub.onChange(sub.state, frame, sub); } catch (err) { console.error(err); }
      return;
    }
    if (frame.op !== "reply") return;
    const ref = frame.ref;
    if (typeof ref === "string" && ref.startsWith("auth-")) {
      if (frame.ok) {
        this.user = frame.result.user;
        this.upSince = Date.now();
        this._status("open", frame.result);
      } else if (frame.error && frame.error.code === "unauthorized") {
        this.token = null;
        this._status("unauthorized", frame.error);
      }
      return;
    }
    const call = this.pending.get(ref);
    if (call) {
      const error = frame.error || {};
      if (!frame.ok && error.code === "rate_limited" && error.retry_after_ms && call.retries < 10) {
        call.retries += 1; // refused before it ran: the same ref again after the wait
        setTimeout(() => { if (this.pending.get(ref) === call) this._send(call.frame); },
          error.retry_after_ms);
        return;
      }
      this.pending.delete(ref);
      clearTimeout(call.timer);
      if (frame.ok) call.resolve(frame.result);
      else call.reject(new FissionError(error.code, error.message, { ref, ...error }));
      return;
    }
    if (!frame.ok) {
      for (const sub of this.subs.values()) {
        if (sub.ref !== ref) continue;
        const error = frame.error || {};
        if (error.code === "unauthorized") continue; // kept: joined again with a new token
        if ((error.code === "rate_limited" && error.retry_after_ms) || error.code === "unavailable") {
          // Refused before it ran, or storage did not answer: the same subscribe later.
          const wait = error.retry_after_ms || nextDelay(sub.resyncs++, "backoff", this.random);
          setTimeout(() => { if (this.subs.get(sub.topic) === sub && this.ready) this._join(sub); },
            wait);
        } else {
          this.subs.delete(sub.topic);
          try { sub.onError(new FissionError(error.code, error.message, { ref })); }
          catch (err) { console.error(err); }
        }
      }
    }
  }
}
