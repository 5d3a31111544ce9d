// Unit tests of fission.js's pure parts and its resume rules, run in Chromium by
// tests/acceptance/test_homepage.py (no Node toolchain). `run(f)` gets the module and
// returns the failures (an empty list: all passed) and the names of the checks run.

export async function run(f) {
  const failures = [];
  const ran = [];
  const check = (name, ok, detail = "") => {
    ran.push(name);
    if (!ok) failures.push(`${name}${detail ? `: ${detail}` : ""}`);
  };
  const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);

  // --- applyFrame: snapshot, next event, duplicate, gap, before any snapshot ---------
  const topic = "groupbuy:c:g1";
  const group = { id: "g1", status: "open", size: 3, joined: 1, members: ["a"], seq: 1 };
  let sub = { state: null, seq: null };
  let out = f.applyFrame(sub, { op: "event", topic, seq: 2, data: { type: "member_joined" } });
  check("an event before the snapshot waits", out.action === "waiting" && out.state === null);
  out = f.applyFrame(sub, { op: "snapshot", topic, seq: 1, data: { group } });
  check("a snapshot replaces the state", out.action === "snapshot" && out.seq === 1
    && eq(out.state.group.members, ["a"]));
  sub = out;
  const joined = { op: "event", topic, seq: 2, data: { type: "member_joined", user: "b",
    group: { id: "g1", status: "open", size: 3, joined: 2, seq: 2 } } };
  out = f.applyFrame(sub, joined);
  check("the next event is applied", out.action === "applied" && out.seq === 2
    && eq(out.state.group.members, ["a", "b"]) && out.state.group.joined === 2);
  check("applying does not change the old state", eq(sub.state.group.members, ["a"]));
  sub = out;
  out = f.applyFrame(sub, joined);
  check("a repeated event is a duplicate", out.action === "duplicate" && out.state === sub.state);
  out = f.applyFrame(sub, { ...joined, seq: 5 });
  check("a skipped seq is a gap", out.action === "gap" && out.seq === 2);
  out = f.applyFrame(sub, { op: "event", topic, seq: 3, data: { type: "group_completed",
    group: { id: "g1", status: "completed", size: 3, joined: 3, seq: 3 } } });
  check("a summary merges without a member list", out.state.group.status === "completed"
    && eq(out.state.group.members, ["a", "b"]));
  out = f.applyFrame(out, { op: "event", topic, seq: 4, data: { type: "deal_completed",
    members: ["a", "b", "c"], group: { status: "completed", seq: 4 } } });
  check("a deal names every member", eq(out.state.group.members, ["a", "b", "c"]));
  out = f.applyFrame(out, { op: "snapshot", topic, seq: 2, data: { group } });
  check("a snapshot always wins (history gone, state reset)", out.seq === 2
    && eq(out.state.group.members, ["a"]));

  // --- the other reducers ------------------------------------------------------------
  const bargain = f.reducerFor("bargain:h:b1")(
    { bargain: { id: "b1", price: 900, helpers: [{ user: "x", cut: 100, at: "t0" }] } },
    { type: "bargain_helped", helper: "y", cut: 50, at: "t1", bargain: { price: 850 } });
  check("a help appends a helper and merges the price", bargain.bargain.price === 850
    && eq(bargain.bargain.helpers.map((h) => h.user), ["x", "y"]));
  const lottery = f.reducerFor("lottery:w")(
    { lottery: { draws: 4, prizes: [{ id: "pot", stock_left: 3 }, { id: "thanks", stock_left: null }] } },
    { type: "won", draw: { user: "a*", prize: { id: "pot", title: "Pot" } }, stock_left: 2 });
  check("a win lowers its prize's stock", lottery.lottery.prizes[0].stock_left === 2
    && lottery.lottery.draws === 5 && lottery.lottery.recent[0].user === "a*");
  const revealed = f.reducerFor("lottery:w")({ lottery: { seed: null } },
    { type: "revealed", seed: "ab" });
  check("the reveal sets the seed", revealed.lottery.seed === "ab");
  const board = f.reducerFor("leaderboard:sales")(
    { leaderboard: { board: "sales", period: "2026-W49", entries: [{ rank: 1, user: "a", score: 5 }], seq: 3 } },
    { type: "board", board: "sales", period: "2026-W49", region: null,
      entries: [{ rank: 1, user: "b", score: 9 }, { rank: 2, user: "a", score: 5 }] });
  check("a board frame replaces the top N", board.leaderboard.entries.length === 2
    && board.leaderboard.entries[0].user === "b" && board.leaderboard.board === "sales"
    && board.leaderboard.type === undefined);
  const closed = f.reducerFor("leaderboard:sales")(board,
    { type: "champions", board: "sales", period: "2026-W49", next: "2026-W50",
      entries: [{ rank: 1, user: "b", score: 9 }] });
  check("a champions frame keeps the board and records the closed period",
    closed.closed.period === "2026-W49" && closed.leaderboard.entries.length === 2);

  // --- resubscribing, close codes, backoff ---------------------------------------------
  check("a first subscribe has no after",
    eq(f.subscribeFrame("t", null, "r"), { op: "subscribe", topic: "t", ref: "r" }));
  check("a resume carries after", f.subscribeFrame("t", 7, "r").after === 7);
  check("after: 0 is kept", f.subscribeFrame("t", 0, "r").after === 0);
  check("4001 needs a new token", f.closePolicy(4001).reconnect === "token");
  check("1012 comes back soon", f.closePolicy(1012).reconnect === "soon");
  check("4029 and 1008 back off slowly", f.closePolicy(4029).reconnect === "slow"
    && f.closePolicy(1008).reconnect === "slow");
  check("a lost socket backs off", f.closePolicy(1006).reconnect === "backoff");
  const top = () => 0.999999;
  const bottom = () => 0;
  check("backoff grows", f.nextDelay(0, "backoff", top) < f.nextDelay(3, "backoff", top));
  check("backoff is capped at 30 s", f.nextDelay(40, "backoff", top) <= 30000);
  check("backoff has full jitter", f.nextDelay(5, "backoff", bottom) === 0);
  check("a restart comes back within a second", f.nextDelay(0, "soon", top) < 1000
    && f.nextDelay(0, "soon", bottom) >= 100);
  check("too many sockets waits at least 5 s", f.nextDelay(0, "slow", bottom) >= 5000);
  const claims = f.tokenClaims("x." + btoa(JSON.stringify({ sub: "u1", exp: 5 }))
    .replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_") + ".y");
  check("a token's claims are read", claims && claims.sub === "u1" && claims.exp === 5);
  check("junk is no token", f.tokenClaims("junk") === null);
  check("refs are unique", f.newRef() !== f.newRef());

  // --- the client over a fake socket: auth first, resume with after, calls by ref ------
  const sockets = [];
  const factory = (url) => {
    const sock = { url, sent: [], closed: null, onopen: null, onmessage: null, onclose: null };
    sock.send = (text) => sock.sent.push(JSON.parse(text));
    sock.close = (code) => { sock.closed = code; };
    sockets.push(sock);
    return sock;
  };
  const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
  const statuses = [];
  const client = new f.FissionClient({ url: "ws://test/ws", token: "t1", socket: factory,
    random: () => 0, onStatus: (s) => statuses.push(s) });
  const seen = [];
  client.subscribe(topic, { onChange: (state, frame) => seen.push([frame.seq, state.group.joined]) });
  await tick();
  check("subscribing opens one socket", sockets.length === 1 && sockets[0].url === "ws://test/ws");
  const first = sockets[0];
  first.onopen();
  const push = (sock, frame) => sock.onmessage({ data: JSON.stringify(frame) });
  check("auth is the first frame", first.sent[0].op === "auth" && first.sent[0].token === "t1");
  const sub1 = first.sent.find((x) => x.op === "subscribe");
  check("then the subscribe, without after", sub1 && sub1.topic === topic && !("after" in sub1));
  push(first, { op: "reply", ref: first.sent[0].ref, ok: true, result: { user: "u1", role: "user" } });
  check("the auth reply opens the client", client.status === "open" && client.user === "u1");
  push(first, { op: "snapshot", topic, seq: 1, data: { group } });
  push(first, joined);
  check("frames reach the subscriber", eq(seen, [[1, 1], [2, 2]]));
  const call = client.call("groupbuy.join", { campaign: "c", group: "g1" }, { ref: "k1" });
  const sentCall = first.sent.find((x) => x.op === "call");
  check("a call carries its ref", sentCall && sentCall.ref === "k1" && sentCall.method === "groupbuy.join");
  push(first, { op: "reply", ref: "k1", ok: false,
    error: { code: "rate_limited", message: "slow down", retry_after_ms: 30 } });
  await tick(60);
  check("rate_limited is sent again after retry_after_ms with the same ref",
    first.sent.filter((x) => x.op === "call" && x.ref === "k1").length === 2);
  // The server restarts (1012) before answering: the client reconnects and resumes.
  first.onclose({ code: 1012, reason: "restart" });
  check("a close means reconnecting", client.status === "reconnecting");
  await tick(150); // nextDelay(0, "soon", () => 0) is 100 ms
  check("it reconnects", sockets.length === 2);
  const second = sockets[1];
  second.onopen();
  const resub = second.sent.find((x) => x.op === "subscribe");
  check("the resume subscribes with after = the last seq", resub && resub.after === 2,
    JSON.stringify(resub));
  check("the unanswered call is sent again with its ref",
    second.sent.some((x) => x.op === "call" && x.ref === "k1"));
  push(second, { op: "event", topic, seq: 2, data: joined.data });
  push(second, { op: "event", topic, seq: 3, data: { type: "member_joined", user: "c",
    group: { status: "open", joined: 3, seq: 3 } } });
  check("a replayed event is not applied twice", eq(seen, [[1, 1], [2, 2], [3, 3]]));
  push(second, { op: "reply", ref: "k1", ok: true, result: { group: { id: "g1" } } });
  const result = await call;
  check("the call resolves with its result", result.group.id === "g1");
  push(second, { op: "event", topic, seq: 9, data: joined.data });
  const again = second.sent.filter((x) => x.op === "subscribe").pop();
  check("a gap asks again from the last seq", again && again.after === 3 && again !== resub);
  const refused = client.call("lottery.draw", { campaign: "w" }, { ref: "k2" });
  push(second, { op: "reply", ref: "k2", ok: false, error: { code: "no_draws_left", message: "none" } });
  const err = await refused.then(() => null, (e) => e);
  check("a refusal rejects with its code and ref", err && err.code === "no_draws_left" && err.ref === "k2");
  second.onclose({ code: 4001, reason: "expired" });
  await tick(20);
  check("an expired token stops reconnecting", client.status === "unauthorized" && sockets.length === 2);
  client.close();

  // --- the wx.connectSocket adapter drives the same client -------------------------------
  const tasks = [];
  const wx = {
    connectSocket({ url }) {
      const handlers = {};
      const task = { url, sent: [], closed: null,
        onOpen: (cb) => { handlers.open = cb; }, onMessage: (cb) => { handlers.message = cb; },
        onClose: (cb) => { handlers.close = cb; }, onError: (cb) => { handlers.error = cb; },
        send: ({ data }) => task.sent.push(JSON.parse(data)),
        close: ({ code }) => { task.closed = code; }, handlers };
      tasks.push(task);
      return task;
    },
  };
  const mini = new f.FissionClient({ url: "wss://shop/ws", token: "t2", socket: f.wxSocket(wx) });
  mini.subscribe("lottery:w", {});
  await tick();
  tasks[0].handlers.open({});
  check("over wx the auth and subscribe go out", tasks[0].sent[0].op === "auth"
    && tasks[0].sent[1].topic === "lottery:w");
  let got = null;
  mini.subs.get("lottery:w").onChange = (state) => { got = state; };
  tasks[0].handlers.message({ data: JSON.stringify({ op: "snapshot", topic: "lottery:w", seq: 4,
    data: { lottery: { prizes: [] } } }) });
  check("over wx frames arrive", got && Array.isArray(got.lottery.prizes));
  mini.close();
  check("closing closes the task", tasks[0].closed === 1000);
  return { failures, ran };
}
