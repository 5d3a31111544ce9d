"""My team (我的团队): who a user brought in, whether each bought, and the second level;
a marketer's views of any user's team and commission ledger."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.support.client import WS, get, post, token
from tests.support.stack import Stack

pytestmark = pytest.mark.acceptance

PAIR = "/api/groupbuys/pair/groups"


async def _marketer_get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token('tm-boss', role='marketer')}"}
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_team_lists_direct_members_who_bought_and_counts_the_second_level(
        stack: Stack) -> None:
    url = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        # tm-lead brought tm-a and tm-b; tm-a brought tm-c.
        for user, referrer in (("tm-a", "tm-lead"), ("tm-b", "tm-lead"), ("tm-c", "tm-a")):
            status, body = await post(session, url + "/api/referrals", user,
                                      {"referrer": referrer})
            assert status == 200, body
        # tm-a buys (a completed pair with tm-x); tm-b never does.
        buyer = await WS.connect(stack.gateways[0].ws_url, "tm-a")
        await buyer.send({"op": "subscribe", "topic": "user:tm-a"})
        await buyer.until(lambda f: f.get("op") == "snapshot")
        status, body = await post(session, url + PAIR, "tm-a")
        assert status == 201, body
        status, body = await post(session, f"{url}{PAIR}/{body['group']['id']}/join", "tm-x")
        assert status == 200 and body["group"]["status"] == "completed", body
        await buyer.until(lambda f: f.get("op") == "event"
                          and f["data"]["type"] == "order_created")
        await buyer.close()

        status, team = await get(session, url + "/api/team", "tm-lead")
        assert status == 200, team
        assert (team["user"], team["direct"], team["level2"]) == ("tm-lead", 2, 1)
        assert {m["user"]: m["bought"] for m in team["members"]} == {"tm-a": True,
                                                                     "tm-b": False}
        status, small = await get(session, url + "/api/team?limit=1", "tm-lead")
        assert status == 200 and len(small["members"]) == 1 and small["direct"] == 2
        status, nobody = await get(session, url + "/api/team", "tm-nobody")
        assert (status, nobody["direct"], nobody["members"]) == (200, 0, [])

        # A marketer sees anyone's team and ledger; a user does not.
        status, seen = await _marketer_get(session, url + "/api/admin/users/tm-lead/team")
        assert status == 200 and seen == team
        status, ledger = await _marketer_get(session,
                                             url + "/api/admin/users/tm-lead/commissions")
        assert status == 200 and ledger["user"] == "tm-lead"
        assert set(ledger["balance"]) == {"pending", "available", "withdrawing", "debt"}
        status, body = await get(session, url + "/api/admin/users/tm-lead/team", "tm-a")
        assert status == 403 and body["error"]["code"] == "forbidden"
        for bad in ("tm%0alead", "x" * 65):
            status, body = await _marketer_get(session, f"{url}/api/admin/users/{bad}/team")
            assert status == 400 and body["error"]["code"] == "invalid_request", (bad, body)


async def test_the_tax_report_lists_a_year_as_json_or_csv_for_marketers_only(
        stack: Stack) -> None:
    url = stack.gateways[0].url + "/api/admin/tax-report"
    async with aiohttp.ClientSession() as session:
        status, body = await _marketer_get(session, url + "?year=2030")
        assert status == 200, body
        assert body == {"year": 2030, "threshold": 10_000_000, "zone": "Asia/Shanghai",
                        "users": []}
        headers = {"Authorization": f"Bearer {token('tm-boss', role='marketer')}"}
        async with session.get(url + "?year=2030&format=csv", headers=headers) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            assert (await resp.text()).splitlines() == ["user,year,income_fen,flagged_at"]
        status, body = await get(session, url + "?year=2030", "tm-a")
        assert status == 403 and body["error"]["code"] == "forbidden"
        for bad in ("", "?year=1999", "?year=abc", "?year=2030&format=xml"):
            status, body = await _marketer_get(session, url + bad)
            assert status == 400 and body["error"]["code"] == "invalid_request", (bad, body)
