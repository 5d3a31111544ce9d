// The shop's homepage: boards, champions and running campaigns, live over one socket.
// Built on fission.js; plain DOM (no framework, no build step). See docs/client.md.
import { FissionClient, FissionError, tokenClaims } from "/static/fission.js";

const TOKEN_KEY = "fission.token";
const BARGAINS_KEY = "fission.bargains";
const GROUPS_SHOWN = 3;
const BOARD_ROWS = 10;
const $ = (id) => document.getElementById(id);

const MESSAGES = {
  group_full: "这个团已经满了，换一个吧", group_closed: "这个团已结束",
  already_member: "你已经在这个团里了", limit_reached: "已达到参与上限",
  out_of_stock: "商品已抢光", campaign_not_active: "活动未开始或已结束",
  already_helped: "你已经帮TA砍过了", own_bargain: "不能给自己砍价哦",
  bargain_closed: "这个砍价已结束", no_draws_left: "今天的抽奖次数用完啦，下单可再得",
  unauthorized: "请先登录", rate_limited: "操作太快了，请稍后再试",
  unavailable: "系统繁忙，请稍后再试", timeout: "网络不稳，请重试",
};

// ---- small helpers --------------------------------------------------------------------

/** An element: `h("div", {class: "x"}, child, "text")`; text is never parsed as HTML. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Fen as yuan: 12900 → "129", 150 → "1.5". */
function yuan(fen) {
  const value = Number(fen) / 100;
  return Number.isInteger(value) ? String(value) : value.toFixed(2).replace(/0$/, "");
}

function price(fen, was) {
  return h("div", { class: "price" }, h("small", {}, "¥"), yuan(fen),
    was != null ? h("span", { class: "was" }, `¥${yuan(was)}`) : null);
}

/** A user id as others see it: its first character and stars (as the lottery feed does);
 * the visitor's own is "我" unless `own` is false. */
function masked(user, own = true) {
  if (own && user === state.user) return "我";
  const text = String(user ?? "");
  return text.length <= 1 ? `${text}*` : `${text[0]}${"*".repeat(Math.min(3, text.length - 1))}`;
}

const HUES = [8, 22, 36, 200, 260, 330, 150, 280];
function avatar(user) {
  let sum = 0;
  for (const c of String(user)) sum = (sum * 31 + c.charCodeAt(0)) >>> 0;
  const el = h("span", { class: "avatar", "aria-hidden": "true" },
    user === state.user ? "我" : String(user ?? "?").slice(0, 1).toUpperCase());
  el.style.background = `hsl(${HUES[sum % HUES.length]} 75% 58%)`;
  return el;
}

let toastTimer = null;
function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 2600);
}

function explain(err) {
  const code = err instanceof FissionError ? err.code : "unavailable";
  return MESSAGES[code] || (err && err.message) || "操作失败，请重试";
}

function running(campaign, now = Date.now()) {
  return Date.parse(campaign.starts_at) <= now && now < Date.parse(campaign.ends_at);
}

function countdown(expiresAt) {
  return h("span", { class: "countdown", "data-expires": expiresAt }, left(expiresAt));
}

function left(expiresAt) {
  const ms = Date.parse(expiresAt) - Date.now();
  if (!(ms > 0)) return "已结束";
  const s = Math.floor(ms / 1000);
  const pad = (n) => String(n).padStart(2, "0");
  const days = Math.floor(s / 86400);
  const clock = `${pad(Math.floor(s / 3600) % 24)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
  return days > 0 ? `${days}天 ${clock}` : clock;
}

setInterval(() => {
  for (const el of document.querySelectorAll("[data-expires]")) {
    el.textContent = left(el.dataset.expires);
  }
}, 1000);

// ---- the token ------------------------------------------------------------------------

/**
 * The visitor's token: `#token=JWT` in the address (a mini-program's web-view passes it so,
 * and the shop's login page redirects so) is kept in localStorage and taken out of the
 * address bar; later visits read it from there. An expired one is forgotten. `#logout`
 * forgets it. No token: an anonymous visitor.
 *
 * A link may carry anybody's token, so one that would replace a stored token of another
 * user is not taken silently (a shared link must not sign the visitor in as its sender):
 * the page keeps the stored one and asks (`switchTo`), and only the visitor's tap switches.
 */
function readToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const offered = params.get("token");
  let store = null;
  try { store = window.localStorage; } catch { /* storage disabled: this visit only */ }
  if (params.has("logout") && store) store.removeItem(TOKEN_KEY);
  if (offered) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
  const stored = store && !params.has("logout") ? valid(store.getItem(TOKEN_KEY)) : null;
  if (!stored && store) store.removeItem(TOKEN_KEY);
  const fresh = offered ? valid(offered) : null;
  if (fresh && stored && fresh.claims.sub !== stored.claims.sub) {
    return { ...stored, switchTo: fresh };
  }
  const chosen = fresh || stored;
  if (chosen && store) store.setItem(TOKEN_KEY, chosen.token);
  return chosen || { token: null, claims: null };
}

/** `token` with its claims, when it names a user and has not expired (else null). */
function valid(token) {
  const claims = token ? tokenClaims(token) : null;
  if (!claims || typeof claims.sub !== "string" || (claims.exp && claims.exp * 1000 <= Date.now())) {
    return null;
  }
  return { token, claims };
}

/** Offer to switch to the account of a link's token (see readToken); the visitor decides. */
function offerSwitch(offer) {
  const bar = $("switch");
  bar.replaceChildren(
    h("span", {}, `链接要以 ${masked(offer.claims.sub, false)} 的身份登录`),
    h("button", { type: "button", class: "yes" }, "切换"),
    h("button", { type: "button", class: "no" }, "保持当前"));
  bar.hidden = false;
  bar.querySelector(".yes").addEventListener("click", () => {
    try { window.localStorage.setItem(TOKEN_KEY, offer.token); } catch { /* nothing kept */ }
    location.reload();
  });
  bar.querySelector(".no").addEventListener("click", () => { bar.hidden = true; });
}

// ---- state ----------------------------------------------------------------------------

const { token, claims, switchTo } = readToken();
const state = {
  token, user: claims ? claims.sub : null, region: claims ? claims.region || null : null,
  campaigns: [], boards: [], board: null, boardSubs: new Map(), groupSubs: new Map(),
  bargainSubs: new Map(), lotterySubs: new Map(), drawsLeft: new Map(),
  firstBoardAt: null,
  referralTold: false, // the server has answered about the share link's referrer
};

const client = state.token ? new FissionClient({ token: state.token, onStatus: showStatus })
  : null;
// For a test or a curious developer's console: the client and what the page knows.
window.fissionHome = { client, state };

function showStatus(status) {
  document.body.dataset.ws = status;
  const text = {
    connecting: "连接中…", open: "实时更新中", reconnecting: "网络不稳，正在重连…",
    unauthorized: "登录已过期，请重新进入", closed: "已断开",
  }[status] || status;
  $("live").querySelector("span").textContent = text;
  if (status === "open") document.body.dataset.connects = String(client.connects);
  if (status === "unauthorized") {
    try { localStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ }
  }
}

async function api(path, { auth = true } = {}) {
  const headers = auth && state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const response = await fetch(path, { headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    throw new FissionError(error.code || `http_${response.status}`, error.message,
      { status: response.status });
  }
  return body;
}

function loginNote(text) {
  return h("div", { class: "login-note" }, text, " ", h("a", { href: "#login" }, "去登录"));
}

// ---- boards and champions ---------------------------------------------------------------

const METRIC_NAMES = { sales: "销售榜", commission: "佣金榜", orders: "订单榜", members: "拉新榜" };
const PERIOD_NAMES = { all: "总榜", daily: "日榜", weekly: "周榜", monthly: "月榜" };

function isMoney(board) {
  return /sales|commission|amount|fen|earn|gmv/i.test(String(board.metric || ""));
}

function boardTitle(board) {
  // A config title may gloss itself in parentheses ("本周带货榜 (this week's top sellers)").
  const title = String(board.title || "").replace(/\s*[(（].*[)）]\s*$/, "");
  if (/[\u4e00-\u9fff]/.test(title)) return title;
  let metric = METRIC_NAMES[board.metric] || board.title || board.id;
  if (board.scope === "region") metric = `${state.region || "地区"}${metric}`;
  const period = PERIOD_NAMES[board.period] || "";
  return period && !String(metric).includes(period) ? `${metric}·${period}` : metric;
}

function scoreText(board, score) {
  return isMoney(board) ? `¥${yuan(score)}` : `${score}${board.metric === "orders" ? " 单" : " 人"}`;
}

function boardTopic(board) {
  return board.scope === "region" && state.region
    ? `leaderboard:${board.id}:${state.region}` : `leaderboard:${board.id}`;
}

/** A period id as a shopper reads it: 2026-W49 → 2026年第49周, 2026-12 → 2026年12月. */
function periodText(period) {
  let m = /^(\d{4})-W(\d{2})$/.exec(period);
  if (m) return `${m[1]}年第${Number(m[2])}周`;
  m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(period);
  if (m) return `${Number(m[2])}月${Number(m[3])}日`;
  m = /^(\d{4})-(\d{2})$/.exec(period);
  if (m) return `${m[1]}年${Number(m[2])}月`;
  return period === "all" ? "总榜" : period;
}

/** A board's live view: its topic's state (`{leaderboard}`) or a `leaderboard.get` answer. */
function viewOf(data) {
  if (!data) return null;
  const view = data.leaderboard || data;
  return Array.isArray(view.entries) ? view : null;
}

/** First paint by HTTP (no wait for the socket's handshake), then the socket's answer:
 * `path` over HTTP, else `method` over /ws when HTTP fails (say, its rate limit). */
async function read(path, method, params) {
  try {
    return await api(path);
  } catch (err) {
    if (err.status === 404 || err.status === 401 || !client) throw err;
    return client.call(method, params);
  }
}

function loadBoards(boards) {
  const section = $("boards");
  state.boards = boards;
  if (!boards.length) {
    section.dataset.state = "empty";
    $("board-list").replaceChildren(h("li", { class: "empty" }, "排行榜即将上线，敬请期待"));
    champions([]);
    return;
  }
  $("board-tabs").replaceChildren(...boards.map((board) => h("button", {
    class: "tab", role: "tab", "data-board": board.id, "aria-selected": "false",
    onclick: () => showBoard(board.id),
  }, boardTitle(board))));
  if (!client) {
    // Ranks and champions are for logged-in shoppers (the routes ask for a token).
    section.dataset.state = "login";
    $("board-list").replaceChildren(loginNote("登录后查看实时排行"));
    $("champions").dataset.state = "login";
    $("champ-list").replaceChildren(loginNote("登录后查看本周冠军"));
    return;
  }
  showBoard(boards[0].id);
  loadChampions(boards);
  for (const board of boards) watchBoard(board);
}

function watchBoard(board) {
  const sub = client.subscribe(boardTopic(board), {
    onChange: (data, frame) => {
      board.live = data;
      board.seq = frame.seq;
      if (frame.op === "event" && frame.data.type === "champions" && board.period === "weekly") {
        loadChampions(state.boards); // a week closed just now: its champion takes the top spot
      }
      if (state.board === board.id) renderBoard(board, frame.op === "event");
    },
    onError: () => {
      // A regional board has no topic until its region first scores (not_found): the
      // page asks again on its next refresh.
      state.boardSubs.delete(board.id);
      if (state.board === board.id && !board.live) renderBoard(board, false);
    },
  });
  state.boardSubs.set(board.id, sub);
  // The top N and the caller's own rank and score (`me`), before the socket is up.
  const id = encodeURIComponent(board.id);
  read(`/api/leaderboards/${id}?limit=${BOARD_ROWS}`, "leaderboard.get",
    { campaign: board.id, limit: BOARD_ROWS }).then((answer) => {
    board.me = answer.me || null;
    if (!board.live) board.live = answer;
    if (state.board === board.id) renderBoard(board, false);
  }, () => {});
}

function showBoard(id) {
  state.board = id;
  for (const tab of $("board-tabs").children) {
    tab.setAttribute("aria-selected", String(tab.dataset.board === id));
  }
  const board = state.boards.find((b) => b.id === id);
  if (board) renderBoard(board, false);
}

function renderBoard(board, changed) {
  const section = $("boards");
  const list = $("board-list");
  const view = viewOf(board.live);
  const entries = view && view.entries;
  $("board-period").textContent = view && view.period ? periodText(view.period) : "";
  if (entries == null) {
    // Not loaded yet (a tab just chosen): a placeholder, not the last board's rows.
    list.replaceChildren(client ? h("li", { class: "skeleton" }) : loginNote("登录后查看实时排行"));
    delete list.dataset.board;
    return;
  }
  const before = new Map([...list.querySelectorAll("li.row")].map((li) => [li.dataset.user, li.dataset.score]));
  const rows = entries.slice(0, BOARD_ROWS).map((entry) => {
    const li = h("li", {
      class: `row${entry.user === state.user ? " mine" : ""}`, "data-user": entry.user,
      "data-rank": entry.rank, "data-score": entry.score,
    }, h("span", { class: `rank r${entry.rank}` }, entry.rank), avatar(entry.user),
    h("span", { class: "who-name" }, masked(entry.user)),
    h("span", { class: "score" }, scoreText(board, entry.score)));
    if (changed && before.get(entry.user) !== String(entry.score)) {
      li.classList.add("changed");
      setTimeout(() => li.classList.remove("changed"), 1500);
    }
    return li;
  });
  list.replaceChildren(...(rows.length ? rows : [h("li", { class: "empty" }, "本期还没有上榜的达人，快来抢第一")]));
  list.dataset.board = board.id;
  list.dataset.seq = board.seq ?? "";
  section.dataset.state = "ready";
  if (state.firstBoardAt == null) {
    state.firstBoardAt = performance.now();
    performance.mark("fission:board-rendered");
  }
  const me = board.me;
  const mine = $("my-rank");
  mine.hidden = !state.user;
  mine.textContent = me && me.rank ? `我的排名：第 ${me.rank} 名 · ${scoreText(board, me.score)}`
    : "我还未上榜，分享好物给好友即可冲榜";
}

async function loadChampions(boards) {
  const found = [];
  await Promise.all(boards.filter((b) => b.period === "weekly" || boards.length === 1)
    .map(async (board) => {
      try {
        const answer = await api(`/api/leaderboards/${encodeURIComponent(board.id)}/champions`);
        const last = (answer.champions || [])[0]; // newest first: the week just closed
        const winner = last && (last.champion || (last.entries || [])[0]);
        if (winner) found.push({ board, period: last.period, user: winner.user, score: winner.score });
      } catch { /* no champions route yet: the section says so */ }
    }));
  champions(found);
}

function champions(found) {
  const section = $("champions");
  const list = $("champ-list");
  section.dataset.state = found.length ? "ready" : "empty";
  if (!found.length) {
    list.replaceChildren(h("div", { class: "empty" }, "本周冠军评选中，周一揭晓"));
    return;
  }
  list.replaceChildren(...found.map((c) => h("div", { class: "champ", "data-user": c.user },
    avatar(c.user), h("div", { class: "name" }, masked(c.user)),
    h("div", { class: "what" }, `${boardTitle(c.board)}${c.period ? ` · ${periodText(c.period)}` : ""}`),
    h("div", { class: "score" }, scoreText(c.board, c.score)))));
}

// ---- campaigns ------------------------------------------------------------------------

async function loadCampaigns() {
  let campaigns = [];
  try {
    // Public, and asked without a token: the page's <link rel=preload> already holds it.
    campaigns = (await api("/api/campaigns", { auth: false })).campaigns.filter((c) => running(c));
  } catch {
    for (const id of ["groupbuys", "bargains", "lotteries", "boards", "champions"]) {
      $(id).dataset.state = "unavailable";
    }
    toast("网络不佳，活动加载失败，请下拉刷新");
    return;
  }
  state.campaigns = campaigns;
  // The boards first: their requests leave before the campaigns' (a phone's browser
  // opens only a few connections to one host at once).
  loadBoards(campaigns.filter((c) => c.kind === "leaderboard"));
  renderGroupbuys(campaigns.filter((c) => c.kind === "groupbuy"));
  renderBargains(campaigns.filter((c) => c.kind === "bargain"));
  renderLotteries(campaigns.filter((c) => c.kind === "lottery"));
}

function section(id, listId, cards, empty) {
  $(listId).replaceChildren(...(cards.length ? cards : [h("div", { class: "card empty" }, empty)]));
  $(id).dataset.state = "ready";
}

// group-buys ------------------------------------------------------------------------------

function renderGroupbuys(list) {
  section("groupbuys", "groupbuy-list", list.map((c) => {
    const groups = h("div", { class: "groups", "data-campaign": c.id },
      client ? h("div", { class: "empty" }, "正在加载拼团…") : loginNote("登录后查看正在拼的团"));
    const card = h("article", { class: "card", id: `c-${c.id}`, "data-kind": "groupbuy" },
      h("div", { class: "product" }, h("div", { class: "thumb" }, `${c.group_size}人`),
        h("div", { class: "info" },
          h("div", { class: "title" }, c.product.title),
          h("div", { class: "tagline" }, h("span", { class: "tag" }, `${c.group_size}人团`),
            c.virtual_fill_ratio ? h("span", { class: "tag" }, "未满也能成团") : null, c.title),
          price(c.product.group_price, c.product.list_price),
          h("div", { class: "actions" }, h("button", {
            class: "btn", "data-action": "open", onclick: () => openGroup(c),
          }, "我要开团")))),
      groups);
    if (client) refreshGroups(c);
    // A friend's share link: #group=campaign/id shows that group, whatever the list holds.
    const [sharedCampaign, sharedGroup] = (new URLSearchParams(location.hash.slice(1))
      .get("group") || "").split("/");
    if (client && sharedCampaign === c.id && sharedGroup) showSharedGroup(c, sharedGroup, card);
    return card;
  }), "暂无进行中的拼团");
}

async function showSharedGroup(campaign, id, card) {
  let group;
  try {
    group = (await read(`/api/groupbuys/${encodeURIComponent(campaign.id)}/groups/${encodeURIComponent(id)}`,
      "groupbuy.get", { campaign: campaign.id, group: id })).group;
  } catch {
    toast("这个团不存在或已结束，看看别的团吧");
    return;
  }
  watchGroup(campaign, group, true);
  card.scrollIntoView({ block: "start" });
}

async function refreshGroups(campaign) {
  let groups;
  try {
    groups = (await read(`/api/groupbuys/${encodeURIComponent(campaign.id)}/groups?limit=${GROUPS_SHOWN}`,
      "groupbuy.list_open", { campaign: campaign.id, limit: GROUPS_SHOWN })).groups;
  } catch {
    return; // the list stays as it was; the next refresh tries again
  }
  const box = document.querySelector(`.groups[data-campaign="${campaign.id}"]`);
  if (!box) return;
  const keep = new Set(groups.map((g) => g.id));
  for (const [key, sub] of state.groupSubs) {
    if (key.startsWith(`${campaign.id}/`) && !keep.has(key.split("/")[1]) && !sub.mine) {
      sub.unsubscribe();
      state.groupSubs.delete(key);
      box.querySelector(`[data-group="${key.split("/")[1]}"]`)?.remove();
    }
  }
  for (const group of groups) watchGroup(campaign, group);
  if (!box.querySelector(".group")) {
    box.replaceChildren(h("div", { class: "empty" }, "还没有人开团，开一个邀请好友吧"));
  }
}

/** Show `group` live in its campaign's card; a `pinned` one (opened here, or a share
 * link's) stays when the list is asked again, and after it completes. */
function watchGroup(campaign, group, pinned = false) {
  const key = `${campaign.id}/${group.id}`;
  if (state.groupSubs.has(key)) {
    if (pinned) state.groupSubs.get(key).mine = true;
    return;
  }
  const box = document.querySelector(`.groups[data-campaign="${campaign.id}"]`);
  box.querySelector(".empty")?.remove();
  const row = h("div", { class: "group", "data-group": group.id });
  box.append(row);
  drawGroup(campaign, row, group);
  const sub = client.subscribe(`groupbuy:${campaign.id}:${group.id}`, {
    onChange: (data, frame) => {
      drawGroup(campaign, row, data.group, frame.seq);
      if (data.group.status !== "open" && !sub.mine) {
        // Shown done for a moment, then the list makes room for groups still filling.
        setTimeout(() => {
          if (state.groupSubs.get(key) !== sub) return;
          sub.unsubscribe();
          state.groupSubs.delete(key);
          row.remove();
          refreshGroups(campaign);
        }, 8000);
      }
    },
    onError: () => row.remove(),
  });
  sub.mine = pinned;
  state.groupSubs.set(key, sub);
}

function drawGroup(campaign, row, group, seq) {
  const joined = group.joined ?? (group.members || []).length;
  const need = Math.max(0, group.size - joined);
  const member = (group.members || []).includes(state.user);
  row.dataset.status = group.status;
  row.dataset.mine = member ? "1" : "0";
  row.dataset.joined = joined;
  if (seq != null) row.dataset.seq = seq;
  const leader = (group.members || [])[0];
  const status = group.status === "completed" ? "已成团"
    : group.status === "failed" ? "未成团，已退款" : null;
  row.replaceChildren(avatar(leader ?? "?"),
    h("div", { class: "leader" },
      h("div", {}, `${masked(leader)} 的团`),
      h("div", { class: "need" }, status ?? [h("span", {}, "还差 "), h("b", {}, need), ` 人 · 剩 `,
        countdown(group.expires_at)]),
      h("div", { class: "bar" }, barFill(joined / group.size))),
    group.status === "open" && !member ? h("button", {
      class: "btn", "data-action": "join", onclick: (e) => joinGroup(campaign, group, e.target),
    }, "去参团") : member && group.status === "open" ? h("button", {
      class: "btn ghost", "data-action": "share",
      onclick: () => copy(shareLink("group", campaign.id, group.id)),
    }, "邀请好友") : h("span", { class: "muted" }, ""));
}

function barFill(ratio) {
  const fill = h("i");
  fill.style.width = `${Math.round(Math.min(1, ratio) * 100)}%`;
  return fill;
}

async function act(button, run) {
  if (!client) { toast("请先登录"); return null; }
  if (button) button.disabled = true;
  try {
    return await run();
  } catch (err) {
    toast(explain(err));
    return null;
  } finally {
    if (button) button.disabled = false;
  }
}

// Share links carry their sharer (`ref` in the hash) so that the friend who opens one is
// bound to them: the page passes it as `referrer` with the visitor's joins, helps, starts
// and draws until the server has answered about it (bound, or why not: already bound to
// someone, their own link). The server refuses a malformed id with the whole command, so
// only a well-formed one other than the visitor's own is sent.
const USER_ID = /^[A-Za-z0-9_.:@-]{1,64}$/;

function sharer() {
  const ref = new URLSearchParams(location.hash.slice(1)).get("ref");
  return ref && USER_ID.test(ref) && ref !== state.user && !state.referralTold ? ref : null;
}

/** Call `method` with `params`, and the share link's referrer while it is still news. */
async function play(method, params) {
  const referrer = sharer();
  const answer = await client.call(method, referrer ? { ...params, referrer } : params);
  // Told: bound, or refused for good. A pipeline that did not answer (`unavailable`)
  // is asked again with the next play.
  if (referrer && answer && ("referral" in answer
      || ("referral_error" in answer && answer.referral_error.code !== "unavailable"))) {
    state.referralTold = true;
  }
  return answer;
}

/** A link to `kind=campaign/id` on this page that names the visitor as its sharer. */
function shareLink(kind, campaign, id) {
  const by = state.user && USER_ID.test(state.user) ? `&ref=${encodeURIComponent(state.user)}` : "";
  return `${location.origin}/#${kind}=${encodeURIComponent(campaign)}/${encodeURIComponent(id)}${by}`;
}

async function openGroup(campaign) {
  const answer = await act(null, () => play("groupbuy.open", { campaign: campaign.id }));
  if (!answer) return;
  toast(answer.payment && answer.payment.status !== "paid" ? "开团成功，请完成支付" : "开团成功，快邀请好友参团");
  watchGroup(campaign, answer.group, true);
}

async function joinGroup(campaign, group, button) {
  const answer = await act(button, () => play("groupbuy.join",
    { campaign: campaign.id, group: group.id }));
  if (answer) toast(answer.group.status === "completed" ? "拼团成功！" : "参团成功，等待成团");
}

// bargains ------------------------------------------------------------------------------

function myBargains() {
  try { return JSON.parse(localStorage.getItem(`${BARGAINS_KEY}:${state.user}`) || "{}"); } catch { return {}; }
}

function rememberBargain(campaign, id) {
  const all = myBargains();
  all[campaign] = id;
  try { localStorage.setItem(`${BARGAINS_KEY}:${state.user}`, JSON.stringify(all)); } catch { /* this visit only */ }
}

function renderBargains(list) {
  // A friend's share link: #bargain=campaign/id asks this visitor to help.
  const shared = new URLSearchParams(location.hash.slice(1)).get("bargain");
  section("bargains", "bargain-list", list.map((c) => {
    const body = h("div", { class: "bargain-state", "data-campaign": c.id });
    const card = h("article", { class: "card", id: `c-${c.id}`, "data-kind": "bargain" },
      h("div", { class: "product" }, h("div", { class: "thumb bargain" }, "砍"),
        h("div", { class: "info" },
          h("div", { class: "title" }, c.product.title),
          h("div", { class: "tagline" }, h("span", { class: "tag" }, `${c.helpers_to_floor}位好友砍到底`), c.title),
          price(c.product.floor_price, c.product.list_price),
          body)));
    const mine = state.user ? myBargains()[c.id] : null;
    const [sharedCampaign, sharedId] = (shared || "").split("/");
    if (client && sharedCampaign === c.id && sharedId && sharedId !== mine) watchBargain(c, sharedId, body, false);
    else if (client && mine) watchBargain(c, mine, body, true);
    else drawBargainStart(c, body);
    return card;
  }), "暂无进行中的砍价");
}

function drawBargainStart(campaign, body) {
  body.replaceChildren(h("div", { class: "actions" }, h("button", {
    class: "btn", "data-action": "start", onclick: (e) => startBargain(campaign, body, e.target),
  }, `最低 ¥${yuan(campaign.product.floor_price)} 带回家，发起砍价`)));
}

async function startBargain(campaign, body, button) {
  const answer = await act(button, () => play("bargain.start", { campaign: campaign.id }));
  if (!answer) return;
  rememberBargain(campaign.id, answer.bargain.id);
  watchBargain(campaign, answer.bargain.id, body, true);
  toast("已发起，分享给好友帮你砍一刀");
}

function watchBargain(campaign, id, body, mine) {
  const topic = `bargain:${campaign.id}:${id}`;
  state.bargainSubs.get(topic)?.unsubscribe();
  const sub = client.subscribe(topic, {
    onChange: (data) => drawBargain(campaign, data.bargain, body, mine),
    onError: () => { if (mine) rememberBargain(campaign.id, null); drawBargainStart(campaign, body); },
  });
  state.bargainSubs.set(topic, sub);
}

function drawBargain(campaign, b, body, mine) {
  const total = b.list_price - b.floor_price;
  const done = total > 0 ? (b.list_price - b.price) / total : 1;
  body.dataset.bargain = b.id;
  body.dataset.price = b.price;
  body.dataset.status = b.status;
  const share = shareLink("bargain", campaign.id, b.id);
  const helped = (b.helpers || []).some((x) => x.user === state.user);
  const buttons = [];
  if (mine && (b.status === "open" || b.status === "floor_reached")) {
    if (b.status === "open") {
      buttons.push(h("button", { class: "btn ghost", onclick: () => copy(share) }, "邀请好友砍一刀"));
    }
    if (b.status === "floor_reached" || campaign.buy_before_floor) {
      buttons.push(h("button", { class: "btn", "data-action": "buy", onclick: (e) => buyBargain(campaign, b, e.target) },
        `¥${yuan(b.price)} 立即买`));
    }
  } else if (!mine && b.status === "open" && !helped) {
    buttons.push(h("button", { class: "btn", "data-action": "help", onclick: (e) => helpBargain(campaign, b, e.target) },
      `帮${masked(b.initiator)}砍一刀`));
  }
  const note = {
    open: `已砍 ¥${yuan(b.list_price - b.price)}，还差 ¥${yuan(b.price - b.floor_price)} 到底价`,
    floor_reached: "已砍到底价！请尽快下单", bought: "已购买，感谢参与", expired: "砍价已结束",
  }[b.status] || "";
  body.replaceChildren(
    h("div", { class: "progress-note" }, mine ? "我的砍价：" : `${masked(b.initiator)}的砍价：`, note,
      b.status === "open" ? [" · 剩 ", countdown(b.expires_at)] : null),
    h("div", { class: "bar" }, barFill(done)),
    h("div", { class: "actions" }, ...buttons,
      mine && (b.status === "bought" || b.status === "expired")
        ? h("button", { class: "btn ghost", onclick: () => { rememberBargain(campaign.id, null); drawBargainStart(campaign, body); } }, "再砍一个")
        : null));
}

async function helpBargain(campaign, b, button) {
  const answer = await act(button, () => play("bargain.help", { campaign: campaign.id, bargain: b.id }));
  if (answer) toast(`帮砍成功，砍掉 ¥${yuan(answer.cut)}`);
}

async function buyBargain(campaign, b, button) {
  const answer = await act(button, () => client.call("bargain.buy", { campaign: campaign.id, bargain: b.id }));
  if (answer) toast(`下单成功 ¥${yuan(answer.order ? answer.order.amount : b.price)}`);
}

async function copy(text) {
  try { await navigator.clipboard.writeText(text); toast("链接已复制，发给好友吧"); } catch { toast(text); }
}

// lotteries -----------------------------------------------------------------------------

function renderLotteries(list) {
  section("lotteries", "lottery-list", list.map((c) => {
    const prizes = h("div", { class: "prizes", "data-campaign": c.id });
    const winners = h("div", { class: "winners" }, "");
    const button = h("button", { class: "btn", "data-action": "draw", onclick: (e) => draw(c, e.target) },
      client ? "抽一次" : "登录抽奖");
    const card = h("article", { class: "card", id: `c-${c.id}`, "data-kind": "lottery" },
      h("div", { class: "product" }, h("div", { class: "thumb lottery" }, "抽"),
        h("div", { class: "info" }, h("div", { class: "title" }, c.title),
          h("div", { class: "tagline" }, `每天免费 ${c.free_draws_per_day} 次 · 下单再送 ${c.draws_per_order} 次`),
          h("div", { class: "actions" }, h("span", { class: "muted draws-left" }, ""), button))),
      prizes, winners);
    drawPrizes(prizes, c.prizes.map((p) => ({ ...p, stock_left: p.stock })));
    if (client) {
      const sub = client.subscribe(`lottery:${c.id}`, {
        onChange: (data, frame) => {
          drawPrizes(prizes, data.lottery.prizes, frame.seq);
          const recent = data.lottery.recent || [];
          if (recent.length) {
            winners.textContent = `恭喜 ${recent.slice(0, 3)
              .map((d) => `${d.user} 抽中 ${d.prize.title}`).join(" · ")}`;
          }
        },
      });
      state.lotterySubs.set(c.id, sub);
      read(`/api/lotteries/${encodeURIComponent(c.id)}`, "lottery.get", { campaign: c.id }).then((answer) => drawsLeft(card, c, answer.lottery.draws_left), () => {});
    }
    return card;
  }), "暂无进行中的抽奖");
}

function drawPrizes(box, prizes, seq) {
  box.replaceChildren(...prizes.filter((p) => p.id !== "thanks").map((p) => h("div", {
    class: `prize${p.stock_left === 0 ? " gone" : ""}`, "data-prize": p.id, "data-left": p.stock_left,
  }, h("span", { class: "pname" }, p.title),
  h("span", { class: "left" }, p.stock_left === 0 ? "已抽完" : `剩 ${p.stock_left}`))));
  if (seq != null) box.dataset.seq = seq;
}

function drawsLeft(card, campaign, n) {
  state.drawsLeft.set(campaign.id, n);
  card.querySelector(".draws-left").textContent = n == null ? "" : `剩 ${n} 次`;
}

async function draw(campaign, button) {
  const answer = await act(button, () => play("lottery.draw", { campaign: campaign.id }));
  if (!answer) return;
  const prize = answer.draw.prize;
  toast(prize.id === "thanks" ? "差一点点，明天再来" : `恭喜抽中：${prize.title}`);
  drawsLeft(document.getElementById(`c-${campaign.id}`), campaign, answer.draws_left);
}

// ---- the visitor ------------------------------------------------------------------------

function renderMe() {
  const me = $("me");
  if (!state.user) {
    showStatus("closed");
    $("live").querySelector("span").textContent = "登录后实时更新";
    return;
  }
  me.replaceChildren(h("span", { class: "who", "data-user": state.user }, `你好，${masked(state.user, false)}`));
}

function watchMe() {
  // My own events: toasts for what happens to me while the page is open.
  client.subscribe(`user:${state.user}`, {
    onChange: (data, frame) => {
      if (frame.op !== "event") return;
      const e = data.last || {};
      let moved = null;
      if (e.type === "rank_changed") {
        const board = state.boards.find((b) => b.id === e.board);
        // A regional board's rank counts only for the region this page shows (a seller
        // ranked where they last acted may be browsing with another region's token).
        const shown = board && (board.scope !== "region" || (e.region || null) === state.region);
        if (shown) {
          const before = board.me && board.me.rank;
          board.me = { rank: e.rank, score: e.score };
          if (!state.boardSubs.has(board.id)) watchBoard(board); // its region's board exists now
          if (state.board === board.id) renderBoard(board, false);
          if (e.rank) {
            moved = !before || e.rank < before ? `你的排名升至第 ${e.rank} 名`
              : e.rank > before ? `你的排名降至第 ${e.rank} 名` : null;
          }
        }
      }
      const words = {
        order_created: "下单成功", commission_pending: `佣金 +¥${yuan(e.amount)} 待结算`,
        bargain_helped: `好友帮你砍掉 ¥${yuan(e.cut)}`, deal_completed: "拼团成功！",
        rank_changed: moved,
      }[e.type];
      if (words) toast(words);
    },
  });
}

window.addEventListener("hashchange", () => {
  if (location.hash === "#login") {
    toast("请从小程序进入，或在商城登录后打开本页");
    history.replaceState(null, "", location.pathname + location.search);
  }
});

renderMe();
if (switchTo) offerSwitch(switchTo);
if (client) {
  client.connect();
  watchMe();
  // While the page is open, new groups others open appear: the list is asked again now
  // and then (a group's own topic carries its joins live).
  setInterval(() => {
    if (document.visibilityState !== "visible") return;
    for (const c of state.campaigns) if (c.kind === "groupbuy") refreshGroups(c);
    for (const board of state.boards) if (!state.boardSubs.has(board.id)) watchBoard(board);
  }, 30000);
  // A phone back online should not wait for the backoff.
  window.addEventListener("online", () => client.reconnectNow());
  // A phone that put the page away may have lost its socket: back at once, resumed.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") client.reconnectNow();
  });
}
loadCampaigns();
