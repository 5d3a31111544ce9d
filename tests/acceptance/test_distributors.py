"""Distributors end to end: users apply, marketers approve, revoke and list them, and only
approved distributors earn, over HTTP and `/ws`.

A deployment of its own (one gateway on the shared Ray head, its own database) whose
`[commission] earners = "approved"`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from storage import db
from tests.support import configs, ledger
from tests.support.client import WS, get, post, token
from tests.support.faults import fault_env, own_database
from tests.support.services import Services
from tests.support.stack import (
    Stack,
    start_gateway,
    stop_group,
    wait_healthy,
    write_config,
)

pytestmark = pytest.mark.acceptance

PRICE = 6000  # fen; an approved referrer earns 10%: 600
DATABASE = "fission_distributors"


@pytest.fixture(scope="module")
async def shop(migrated: Services, ray_address: str,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    database_url = await own_database(migrated, DATABASE)
    tmp: Path = tmp_path_factory.mktemp("distributors")
    doc = configs.document(
        [configs.campaign("ds", size=2, stock=1000, led=50, joined=50)], shards=1,
        namespace=f"d{uuid.uuid4().hex[:8]}", database_url=database_url,
        redis_url=migrated.redis_url, ray_address=ray_address, data_dir=str(tmp / "data"))
    doc["commission"] = {"earners": "approved"}
    # This deployment's database must win over an environment's (CI's second pass sets
    # FISSION_DATABASE_URL), or the shared stack's pipeline drains its deals.
    env = fault_env(database_url, migrated.redis_url)
    gateway = start_gateway(write_config(tmp, doc), tmp, env=env)
    try:
        await wait_healthy(gateway)
        yield Stack(tmp / "config.toml", doc, [gateway], ray_address)
    finally:
        stop_group(gateway.proc, 10)


@pytest.fixture(autouse=True)
async def sound_ledger(shop: Stack, migrated: Services) -> AsyncIterator[None]:
    """After each test: this deployment's ledger is sound (tests.support.ledger)."""
    yield
    conn = await asyncpg.connect(db.with_database(migrated.database_url, DATABASE))
    try:
        assert await ledger.problems(conn) == []
    finally:
        await conn.close()


async def admin(session: aiohttp.ClientSession, method: str, url: str,
                body: Any = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token('ds-boss', role='marketer')}"}
    async with session.request(method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


def is_event(kind: str) -> Any:
    return lambda f: f.get("op") == "event" and f["data"]["type"] == kind


async def test_users_apply_marketers_decide_and_only_the_approved_earn(shop: Stack) -> None:
    url = shop.gateways[0].url
    async with aiohttp.ClientSession() as session:
        amy = await WS.connect(shop.gateways[0].ws_url, "ds-amy")
        await amy.send({"op": "subscribe", "topic": "user:ds-amy"})
        await amy.until(lambda f: f.get("op") == "snapshot")
        status, body = await get(session, url + "/api/distributors/me", "ds-amy")
        assert status == 200 and body["distributor"] is None, body
        assert (body["earners"], body["eligible"], body["grade"]) == ("approved", False, None)
        # Applying is idempotent: again answers the same application.
        first = await post(session, url + "/api/distributors/apply", "ds-amy")
        assert first[0] == 200 and first[1]["distributor"]["status"] == "applied", first
        assert await post(session, url + "/api/distributors/apply", "ds-amy") == first
        await amy.until(is_event("distributor_status"))
        # Only a marketer lists, approves and revokes.
        for method, path in (("GET", "/api/admin/distributors"),
                             ("POST", "/api/admin/distributors/ds-amy/approve"),
                             ("POST", "/api/admin/distributors/ds-amy/revoke")):
            async with session.request(method, url + path, headers={
                    "Authorization": f"Bearer {token('ds-amy')}"}) as resp:
                assert (resp.status, (await resp.json())["error"]["code"]) == (
                    403, "forbidden"), path
        status, body = await admin(session, "GET", url + "/api/admin/distributors")
        assert status == 200 and body["status"] == "applied"
        assert [d["user"] for d in body["distributors"]] == ["ds-amy"]
        # Bad input: a status that is none, a user who never applied, a malformed id.
        status, body = await admin(session, "GET", url + "/api/admin/distributors?status=gold")
        assert (status, body["error"]["code"]) == (400, "invalid_request")
        status, body = await admin(session, "POST",
                                   url + "/api/admin/distributors/ds-nobody/approve")
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = await admin(session, "POST",
                                   url + "/api/admin/distributors/%20bad%20/approve")
        assert (status, body["error"]["code"]) == (400, "invalid_request")
        status, body = await admin(session, "POST",
                                   url + "/api/admin/distributors/ds-amy/approve")
        assert status == 200 and body["distributor"]["status"] == "approved", body
        assert body["distributor"]["decided_by"] == "ds-boss"
        event = await amy.until(lambda f: is_event("distributor_status")(f)
                                and f["data"]["distributor"]["status"] == "approved")
        assert event["data"]["distributor"]["user"] == "ds-amy"
        # An approved distributor applying again is told so.
        status, body = await post(session, url + "/api/distributors/apply", "ds-amy")
        assert (status, body["error"]["code"]) == (409, "already_distributor")

        # ds-zed (never applied) brought ds-amy; ds-amy brought ds-bob; bob buys.
        for user, referrer in (("ds-amy", "ds-zed"), ("ds-bob", "ds-amy")):
            status, _ = await post(session, url + "/api/referrals", user,
                                   {"referrer": referrer})
            assert status == 200
        status, body = await post(session, url + "/api/groupbuys/ds/groups", "ds-bob")
        assert status == 201, body
        status, body = await post(session, f"{url}/api/groupbuys/ds/groups/"
                                  f"{body['group']['id']}/join", "ds-cy")
        assert status == 200 and body["group"]["status"] == "completed", body
        earned = await amy.until(is_event("commission_pending"))
        assert (earned["data"]["level"], earned["data"]["amount"]) == (1, PRICE // 10)
        # zed's level 2 was skipped (written in the same commit as amy's: already there).
        status, body = await get(session, url + "/api/commissions", "ds-zed")
        assert status == 200 and body["commissions"] == [], body

        # Over /ws the same methods, and the same refusals.
        reply = await amy.call("m1", "distributors.me", {})
        assert reply["ok"] and reply["result"]["eligible"] is True, reply
        assert reply["result"]["distributor"]["status"] == "approved"
        reply = await amy.call("m2", "distributors.revoke", {"user": "ds-amy"})
        assert reply["error"]["code"] == "forbidden", reply
        reply = await amy.call("m3", "distributors.list", {"status": 5})
        assert reply["error"]["code"] == "invalid_request", reply
        # Revoked: listed as such, and no longer eligible.
        status, body = await admin(session, "POST",
                                   url + "/api/admin/distributors/ds-amy/revoke")
        assert status == 200 and body["distributor"]["status"] == "revoked", body
        status, body = await admin(session, "GET",
                                   url + "/api/admin/distributors?status=revoked&limit=5")
        assert [d["user"] for d in body["distributors"]] == ["ds-amy"]
        status, body = await get(session, url + "/api/distributors/me", "ds-amy")
        assert body["distributor"]["status"] == "revoked" and body["eligible"] is False
        await amy.close()
