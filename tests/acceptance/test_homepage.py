"""The browser test: the H5 homepage in headless Chromium on a phone, against the stack.

Debian's `chromium` (/usr/bin/chromium) driven by Playwright for Python (`pip install -e
'.[dev]'`; never `playwright install`). A phone viewport (375x812, a WeChat UA) on a
slow network (Lighthouse's mobile profile: 150 ms, 1.6 Mbps down, 750 kbps up, CPU 4x
slower): the page renders the campaigns and the boards, a deal done over HTTP shows on
the page without a reload, and a socket lost while the deal happens resumes with
`after` and catches up. The time to a rendered board is printed (a figure, not an
assertion). fission.js's merge and resume rules run in the same browser
(tests/acceptance/js/fission_unit.js). Screenshots go to artifacts/browser/.

Run it alone: `python -m pytest -q -s -m browser` (or this file).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.client import get, post, token
from tests.support.stack import Stack

pytestmark = [pytest.mark.acceptance, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "browser"
UNIT = Path(__file__).resolve().parent / "js" / "fission_unit.js"
PHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50 NetType/4G "
            "Language/zh_CN")
# Lighthouse's mobile throttling ("slow 4G"): round trip, bytes per second each way.
SLOW_NETWORK = {"offline": False, "latency": 150, "downloadThroughput": 1_638_400 // 8,
                "uploadThroughput": 768_000 // 8}
CPU_SLOWDOWN = 4
CAMPAIGN = "hp"  # the stack's group-buy of 3 for this test (tests/acceptance/conftest.py)
BOARD = "hpsales"  # its board: referred sales this week, by region
REGION = "HP"  # the region the test's users act from (no other test's do)
# Each brought one buyer in: one order each on every sales board of the shop, so that
# the other tests' sellers keep their ranks on the boards they read.
SELLER, SELLER2 = "hp-seller", "hp-seller2"
PRICE = 6000  # the group price of the stack's group-buys
WAIT_MS = 15_000
# When the page first drew a board (ms after navigation start; home.js marks it).
BOARD_MARK = "performance.getEntriesByName('fission:board-rendered').map(e => e.startTime)"
# Where the first paint's time goes, from the page's own timing entries (ms after start).
TIMINGS = """() => {
    const at = (name) => {
        const found = performance.getEntriesByType('resource').find((e) => e.name.includes(name));
        return found ? Math.round(found.responseEnd) : '-';
    };
    const nav = performance.getEntriesByType('navigation')[0];
    return `html ${Math.round(nav.responseEnd)} ms, home.js ${at('/static/home.js')}, `
        + `campaigns ${at('/api/campaigns')}, board answer ${at('/api/leaderboards/')} ms`;
}"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """Chromium from Debian's package: a clear failure, never a skip, when it is missing."""
    if not CHROMIUM.exists():  # noqa: ASYNC240 (one stat, before anything runs)
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (Debian's "
                    "package; never `playwright install`)", pytrace=False)
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("playwright is missing: `pip install -e '.[dev]'`", pytrace=False)
    async with async_playwright() as pw:
        found = await pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield found
        finally:
            await found.close()


async def _phone(browser: Any) -> Any:
    return await browser.new_context(
        viewport={"width": 375, "height": 812}, device_scale_factor=2, is_mobile=True,
        has_touch=True, user_agent=PHONE_UA, locale="zh-CN", timezone_id="Asia/Shanghai")


async def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def _join(session: aiohttp.ClientSession, stack: Stack, group: str, user: str
                ) -> dict[str, Any]:
    """`user` joins `group` over HTTP (through the other gateway); the group as the server
    then shows it."""
    url = f"{stack.gateways[1].url}/api/groupbuys/{CAMPAIGN}/groups/{group}"
    status, body = await post(session, f"{url}/join", user)
    assert status == 200, body
    status, body = await get(session, url, user)
    assert status == 200, body
    found: dict[str, Any] = body["group"]
    return found


async def _shows(page: Any, group: dict[str, Any]) -> None:
    """Wait until the page's row of `group` shows it as of its seq: status and joined."""
    await page.wait_for_function(
        """([id, seq, joined, status]) => {
            const row = document.querySelector(`.group[data-group="${id}"]`);
            return row && row.dataset.seq === String(seq) && row.dataset.joined === String(joined)
                && row.dataset.status === status;
        }""", arg=[group["id"], group["seq"], group["joined"], group["status"]],
        timeout=WAIT_MS)


def _sockets(page: Any) -> list[dict[str, Any]]:
    """Every /ws the page opens, with the frames it sent and received (parsed)."""
    sockets: list[dict[str, Any]] = []

    def opened(ws: Any) -> None:
        record: dict[str, Any] = {"url": ws.url, "sent": [], "received": []}
        sockets.append(record)
        ws.on("framesent", lambda payload: record["sent"].append(json.loads(payload)))
        ws.on("framereceived", lambda payload: record["received"].append(json.loads(payload)))

    page.on("websocket", opened)
    return sockets


async def _ranks(page: Any, user: str, score: int, rank: int) -> None:
    """Wait until the page's board shows `user` at `rank` with `score`."""
    await page.locator(f'#board-list[data-board="{BOARD}"] li.row[data-user="{user}"]'
                       f'[data-score="{score}"][data-rank="{rank}"]').wait_for(timeout=WAIT_MS)


async def test_homepage_on_a_phone_shows_deals_live_and_resumes(stack: Stack,
                                                                browser: Any) -> None:
    base = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        for buyer, seller in (("hp-c", SELLER), ("hp-e", SELLER2)):
            status, body = await post(session, f"{base}/api/referrals", buyer,
                                      {"referrer": seller})
            assert status == 200, body
            # The seller acts from the region (the gateway records it): their board's.
            async with session.get(f"{base}/api/referrals", headers={
                    "Authorization": f"Bearer {token(seller, region=REGION)}"}) as resp:
                assert resp.status == 200, await resp.text()
        status, body = await post(session, f"{base}/api/groupbuys/{CAMPAIGN}/groups", "hp-lead")
        assert status == 201, body
        group = body["group"]["id"]
        context = await _phone(browser)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        sockets = _sockets(page)
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.emulateNetworkConditions", SLOW_NETWORK)
        await cdp.send("Emulation.setCPUThrottlingRate", {"rate": CPU_SLOWDOWN})

        started = time.perf_counter()
        await page.goto(f"{base}/#token={token('hp-watch', region=REGION)}")
        row = page.locator(f'.group[data-group="{group}"]')
        await row.wait_for(timeout=WAIT_MS)
        first_group = time.perf_counter() - started
        await page.locator(f'#boards[data-state="ready"] #board-list[data-board="{BOARD}"]'
                           ).wait_for(timeout=WAIT_MS)
        board_seconds = time.perf_counter() - started
        marks = await page.evaluate(BOARD_MARK)
        assert len(marks) == 1
        first_board = marks[0]
        print(f"\nhomepage on a phone, slow 4G, CPU {CPU_SLOWDOWN}x: board rendered "
              f"{marks[0] / 1000:.2f} s after navigation start by the page's clock "
              f"({board_seconds:.2f} s by the test's, {first_group:.2f} s to the group); "
              + await page.evaluate(TIMINGS))
        await _shot(page, "1-first-render")
        # Measured: the rest runs at the machine's speed (the network stays slow).
        await cdp.send("Emulation.setCPUThrottlingRate", {"rate": 1})

        # The token left the address bar for localStorage; the campaigns all render.
        assert "#token" not in page.url
        for kind in ("groupbuy", "bargain", "lottery"):
            assert await page.locator(f'article[data-kind="{kind}"]').count() >= 1, kind
        card = page.locator(f"#c-{CAMPAIGN}")
        assert "Product hp" in await card.inner_text()
        assert await page.locator('#c-luck .prize[data-prize="coupon"]').count() == 1
        status, body = await get(session, f"{base}/api/groupbuys/{CAMPAIGN}/groups/{group}",
                                 "hp-watch")
        assert status == 200, body
        await _shows(page, body["group"])
        assert body["group"]["status"] == "open"
        await page.wait_for_function("document.body.dataset.ws === 'open'", timeout=WAIT_MS)

        # A deal through the API shows on the page without a reload.
        now = await _join(session, stack, group, "hp-b")
        await _shows(page, now)
        assert f"还差 {now['size'] - now['joined']} 人" in await row.inner_text()
        await _shot(page, "2-member-joined")
        seen = now["seq"]

        # The network drops: the page's socket dies with it, and reconnecting fails.
        await cdp.send("Network.emulateNetworkConditions", {**SLOW_NETWORK, "offline": True})
        await page.evaluate("window.fissionHome.client.drop()")
        await page.wait_for_function("document.body.dataset.ws === 'reconnecting'",
                                     timeout=WAIT_MS)
        done = await _join(session, stack, group, "hp-c")  # the group completes meanwhile
        assert done["status"] == "completed" and done["seq"] > seen, done
        assert await row.get_attribute("data-seq") == str(seen)  # offline: not seen yet
        await _shot(page, "3-offline")
        await cdp.send("Network.emulateNetworkConditions", SLOW_NETWORK)
        await _shows(page, done)
        assert "已成团" in await row.inner_text()
        # The deal's order that the seller brought in reaches the board.
        await _ranks(page, SELLER, PRICE, 1)
        await _shot(page, "4-resumed")
        assert len(sockets) >= 2, sockets
        topic = f"groupbuy:{CAMPAIGN}:{group}"
        last = sockets[-1]
        resumed = [f for f in last["sent"] if f.get("op") == "subscribe"
                   and f.get("topic") == topic]
        assert resumed and resumed[0].get("after") == seen, resumed
        caught_up = [f for f in last["received"] if f.get("topic") == topic]
        assert caught_up and caught_up[0]["op"] == "event", caught_up  # no snapshot: events
        assert [f["seq"] for f in caught_up] == list(range(seen + 1, done["seq"] + 1))
        board_topic = f"leaderboard:{BOARD}:{REGION}"
        again = [f for f in last["sent"] if f.get("op") == "subscribe"
                 and f.get("topic") == board_topic]
        assert again and isinstance(again[0].get("after"), int), again  # the board resumed

        # Live, with no reconnect: the visitor opens a group from the page (a call with a
        # ref over the socket), and two buyers fill it, one brought in by another seller:
        # on the same score, the seller who reached it first ranks first.
        await page.locator(f'#c-{CAMPAIGN} [data-action="open"]').click()
        mine = page.locator(f'#c-{CAMPAIGN} .group[data-mine="1"][data-status="open"]')
        await mine.wait_for(timeout=WAIT_MS)
        assert "开团成功" in await page.inner_text("#toast")
        opened = await mine.get_attribute("data-group")
        calls = [f for f in last["sent"] if f.get("op") == "call"
                 and f.get("method") == "groupbuy.open"]
        assert len(calls) == 1 and calls[0]["params"] == {"campaign": CAMPAIGN}, calls
        replies = [f for f in last["received"] if f.get("op") == "reply"
                   and f.get("ref") == calls[0]["ref"]]
        assert replies and replies[0]["ok"] and replies[0]["result"]["group"]["id"] == opened
        for buyer in ("hp-d", "hp-e"):
            now = await _join(session, stack, str(opened), buyer)
        await _shows(page, now)
        await _ranks(page, SELLER2, PRICE, 2)
        await _ranks(page, SELLER, PRICE, 1)
        await _shot(page, "5-board-live")
        # Two sockets served the page: the first and the resumed one (attempts made while
        # offline never opened).
        assert len([s for s in sockets if s["received"]]) == 2

        # A second visit: the token from localStorage, the assets from the phone's cache.
        again_page = await context.new_page()
        cdp_again = await context.new_cdp_session(again_page)
        await cdp_again.send("Network.emulateNetworkConditions", SLOW_NETWORK)
        await cdp_again.send("Emulation.setCPUThrottlingRate", {"rate": CPU_SLOWDOWN})
        await again_page.goto(f"{base}/")
        await again_page.locator(f'#board-list[data-board="{BOARD}"] li.row[data-user="{SELLER}"]'
                                 ).wait_for(timeout=WAIT_MS)
        marks = await again_page.evaluate(BOARD_MARK)
        print(f"repeat visit (cached assets): board rendered {marks[0] / 1000:.2f} s; "
              + await again_page.evaluate(TIMINGS))

        # A friend's share link, in a week just closed. The champions route answers that
        # week's final top (its shape in docs/api.md), and the champion takes the top
        # spot. (The stack cannot close a week; the backend's tests do on a moved clock.
        # Playwright's routing turns the cache off: a page of its own, after the figures.)
        shared = await context.new_page()
        week = {"board": BOARD, "period": "2026-W48", "region": REGION, "final": True,
                "entries": [{"rank": 1, "user": "hp-champ", "score": 123400}],
                "champion": {"user": "hp-champ", "score": 123400}}
        await shared.route(
            f"**/api/leaderboards/{BOARD}/champions", lambda route: route.fulfill(
                json={"board": BOARD, "region": REGION, "champions": [week]}))
        # The link names its sharer (`ref`): the visitor's first play binds them to it.
        await shared.goto(f"{base}/#group={CAMPAIGN}/{group}&ref=hp-lead")
        champion = shared.locator('#champions[data-state="ready"] .champ[data-user="hp-champ"]')
        await champion.wait_for(timeout=WAIT_MS)
        assert "¥1234" in await champion.inner_text()
        assert "2026年第48周" in await champion.inner_text()
        # The shared group is shown, completed, although the list has only open ones.
        await shared.locator(f'.group[data-group="{group}"][data-status="completed"]'
                             ).wait_for(timeout=WAIT_MS)
        await _shot(shared, "6-share-link-and-champion")

        # A draw from the page (a call with a ref): `luck` gives its coupon every time, and
        # the lottery's won frame lowers the coupon's stock on the page.
        prizes = shared.locator('#c-luck .prizes[data-seq]')
        await prizes.wait_for(timeout=WAIT_MS)  # the topic's snapshot is in
        left = int(await prizes.locator('[data-prize="coupon"]').get_attribute("data-left"))
        await shared.locator('#c-luck [data-action="draw"]').click()
        await prizes.locator(f'[data-prize="coupon"][data-left="{left - 1}"]'
                             ).wait_for(timeout=WAIT_MS)
        assert "恭喜抽中" in await shared.inner_text("#toast")
        async with session.get(f"{base}/api/referrals", headers={
                "Authorization": f"Bearer {token('hp-watch')}"}) as resp:
            bound = await resp.json()
        assert bound["referral"]["referrer"] == "hp-lead", bound
        # A bargain started from the page; a friend's help over HTTP cuts its price live.
        await shared.locator('#c-cut [data-action="start"]').click()
        mine = shared.locator('#c-cut .bargain-state[data-status="open"][data-bargain]')
        await mine.wait_for(timeout=WAIT_MS)
        bargain = await mine.get_attribute("data-bargain")
        status, body = await post(session, f"{base}/api/bargains/cut/{bargain}/help", "hp-friend")
        assert status == 200, body
        await shared.locator(f'#c-cut .bargain-state[data-price="{body["bargain"]["price"]}"]'
                             ).wait_for(timeout=WAIT_MS)
        await _shot(shared, "7-draw-and-bargain")
        # Two more first visits (fresh phones), for a figure less at the mercy of the
        # machine's load at one moment: the median of three.
        firsts = [first_board]
        for _ in range(2):
            fresh = await _phone(browser)
            cold = await fresh.new_page()
            cdp_cold = await fresh.new_cdp_session(cold)
            await cdp_cold.send("Network.emulateNetworkConditions", SLOW_NETWORK)
            await cdp_cold.send("Emulation.setCPUThrottlingRate", {"rate": CPU_SLOWDOWN})
            await cold.goto(f"{base}/#token={token('hp-watch', region=REGION)}")
            await cold.locator(f'#board-list[data-board="{BOARD}"] li.row[data-user="{SELLER}"]'
                               ).wait_for(timeout=WAIT_MS)
            firsts += await cold.evaluate(BOARD_MARK)
            await fresh.close()
        firsts.sort()
        print("first visits: board rendered after " + ", ".join(
            f"{ms / 1000:.2f}" for ms in firsts) + f" s (median {firsts[1] / 1000:.2f} s)")
        assert await page.get_attribute("body", "data-ws") == "open"
        assert errors == []
        await context.close()


async def test_anonymous_visitor_sees_campaigns_and_fission_js_passes_its_tests(
        stack: Stack, browser: Any) -> None:
    base = stack.gateways[0].url
    context = await _phone(browser)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sockets = _sockets(page)
    await page.goto(f"{base}/#logout")
    await page.wait_for_function(
        "document.getElementById('groupbuys').dataset.state === 'ready'", timeout=WAIT_MS)
    # Campaigns come from the public list; live parts ask for a login; no socket opens.
    assert await page.locator(f"#c-{CAMPAIGN}").count() == 1
    assert "登录后查看正在拼的团" in await page.locator(f"#c-{CAMPAIGN}").inner_text()
    assert await page.locator("#me .login").count() == 1
    assert await page.locator('#c-luck .prize[data-prize="coupon"]').count() == 1
    # Boards need a token (GET /api/leaderboards answers 401): the page asks for a login.
    await page.locator('#boards[data-state="login"] .login-note').wait_for(timeout=WAIT_MS)
    await _shot(page, "8-anonymous")
    assert sockets == [] and errors == []

    # fission.js's own rules, in this browser, on the module as the server sends it.
    await page.goto(f"{base}/fission.js")
    report = await page.evaluate(
        """async (source) => {
            const fission = await import('/fission.js');
            const url = URL.createObjectURL(new Blob([source], {type: 'text/javascript'}));
            return (await import(url)).run(fission);
        }""", UNIT.read_text(encoding="utf-8"))
    assert report["failures"] == [], report["failures"]
    assert len(report["ran"]) >= 40, report["ran"]
    await context.close()


async def test_a_link_carrying_another_users_token_switches_only_when_the_visitor_says(
        stack: Stack, browser: Any) -> None:
    """A shared link may carry its sender's token: a visitor signed in as someone else
    stays themselves until they tap to switch (no login by link)."""
    base = stack.gateways[0].url
    context = await _phone(browser)
    errors: list[str] = []
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{base}/#token={token('hp-me')}")
    await page.locator('#me .who[data-user="hp-me"]').wait_for(timeout=WAIT_MS)
    # The same phone opens a link with hp-sender's token: still hp-me, and asked.
    link = await context.new_page()
    link.on("pageerror", lambda exc: errors.append(str(exc)))
    await link.goto(f"{base}/#token={token('hp-sender')}")
    await link.locator("#switch:not([hidden]) .yes").wait_for(timeout=WAIT_MS)
    assert await link.locator('#me .who[data-user="hp-me"]').count() == 1
    assert "#token" not in link.url
    await _shot(link, "9-switch-asked")
    # Keeping the current account changes nothing, on a reload too.
    await link.locator("#switch .no").click()
    await link.reload()
    await link.locator('#me .who[data-user="hp-me"]').wait_for(timeout=WAIT_MS)
    assert await link.locator("#switch").is_hidden()
    # Opened again, the visitor switches: the page comes back as hp-sender.
    again = await context.new_page()
    again.on("pageerror", lambda exc: errors.append(str(exc)))
    await again.goto(f"{base}/#token={token('hp-sender')}")
    await again.locator("#switch:not([hidden]) .yes").click()
    await again.locator('#me .who[data-user="hp-sender"]').wait_for(timeout=WAIT_MS)
    assert errors == []
    await context.close()
