"""Guards at the edge: bad tokens, bad bodies, bad frames all get the contract's error shape.

HTTP errors are `{"error": {"code", "message"}}` with a 4xx status; WebSocket errors are
`{"op": "reply", "ref": R, "ok": false, "error": {"code", "message"}}`, and a bad frame
leaves the connection usable. Every test uses its own user ids (prefix `gd-`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest
import websockets

from tests.support.client import WS, auth, get, post, token
from tests.support.configs import SECRET
from tests.support.stack import Stack

pytestmark = pytest.mark.acceptance

BASE = "/api/groupbuys/guard/groups"
FRAME_LIMIT = 4096  # the stack's [server] max_frame_bytes


# --- helpers -------------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def expired_token(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "role": "user", "iat": now - 120, "exp": now - 60},
                      SECRET, algorithm="HS256")


def foreign_token(user: str) -> str:
    """Well-formed, unexpired, but signed with another secret."""
    return jwt.encode({"sub": user, "role": "user", "exp": int(time.time()) + 3600},
                      "some-other-secret-0123456789abcdef", algorithm="HS256")


def none_token(user: str) -> str:
    """`alg: none`, no signature: must never be accepted."""
    header = _b64({"alg": "none", "typ": "JWT"})
    claims = _b64({"sub": user, "role": "marketer", "exp": int(time.time()) + 3600})
    return f"{header}.{claims}."


def role_token(user: str) -> str:
    """Correctly signed, but with a role that does not exist."""
    return jwt.encode({"sub": user, "role": "admin", "exp": int(time.time()) + 3600},
                      SECRET, algorithm="HS256")


BAD_TOKENS = {
    "expired": expired_token,
    "wrong_signature": foreign_token,
    "alg_none": none_token,
    "garbage": lambda user: "not-a-jwt-at-all",
    "unknown_role": role_token,
}


def assert_error(status: int, body: Any, want_status: int, code: str) -> None:
    """`body` is exactly the contract's error shape with `code`, under `want_status`."""
    assert status == want_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, body
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"], body


def assert_reply_error(frame: dict[str, Any], ref: Any, code: str) -> None:
    """`frame` is exactly a failed reply to `ref` with `code`."""
    assert set(frame) == {"op", "ref", "ok", "error"}, frame
    assert frame["op"] == "reply" and frame["ref"] == ref and frame["ok"] is False, frame
    error = frame["error"]
    # A refusal to retry later says when: retry_after_ms (and only such a refusal).
    want = {"code", "message", "retry_after_ms"} if code == "rate_limited" else {
        "code", "message"}
    assert isinstance(error, dict) and set(error) == want, frame
    assert error["code"] == code, frame
    assert isinstance(error["message"], str) and error["message"], frame
    if code == "rate_limited":
        assert isinstance(error["retry_after_ms"], int) and error["retry_after_ms"] > 0, frame


async def request(session: aiohttp.ClientSession, method: str, url: str, *,
                  headers: dict[str, str] | None = None, data: bytes | str | None = None,
                  ) -> tuple[int, Any]:
    """A request with a raw body; the status and the JSON answer (which must be JSON)."""
    async with session.request(method, url, headers=headers, data=data) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


def json_headers(user: str, **extra: str) -> dict[str, str]:
    return {**auth(user), "Content-Type": "application/json", **extra}


async def open_group(session: aiohttp.ClientSession, stack: Stack, leader: str
                     ) -> dict[str, Any]:
    status, body = await post(session, stack.gateways[0].url + BASE, leader)
    assert status == 201, body
    group: dict[str, Any] = body["group"]
    assert group["members"] == [leader]
    return group


async def groups_led_by(session: aiohttp.ClientSession, stack: Stack, user: str,
                        asker: str) -> list[dict[str, Any]]:
    status, body = await get(session, f"{stack.gateways[0].url}{BASE}?limit=100", asker)
    assert status == 200, body
    return [g for g in body["groups"] if g["members"] and g["members"][0] == user]


async def ws_raw(stack: Stack, query: str = "") -> websockets.ClientConnection:
    return await websockets.connect(stack.gateways[0].ws_url + query, max_size=2**22)


async def reply_to(ws: WS, ref: Any) -> dict[str, Any]:
    return await ws.until(lambda f: f.get("op") == "reply" and f.get("ref") == ref)


async def assert_usable(ws: WS) -> None:
    """The connection still answers: a ping gets its pong."""
    await ws.send({"op": "ping"})
    assert await ws.recv() == {"op": "pong"}


# --- HTTP: identity ------------------------------------------------------------------------


async def test_http_missing_or_malformed_authorization_is_unauthorized(stack: Stack) -> None:
    url = stack.gateways[0].url + BASE
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"},
                        {"Authorization": "Basic Z2QtYTpwdw=="},
                        {"Authorization": token("gd-nobearer")}):
            status, body = await request(session, "POST", url, headers=headers)
            assert_error(status, body, 401, "unauthorized")
            status, body = await request(session, "GET", url, headers=headers)
            assert_error(status, body, 401, "unauthorized")


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_http_bad_token_is_unauthorized(stack: Stack, kind: str) -> None:
    user = f"gd-badtok-{kind}"
    bad = BAD_TOKENS[kind](user)
    headers = {"Authorization": f"Bearer {bad}", "Content-Type": "application/json"}
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        status, body = await request(session, "POST", gw + BASE, headers=headers, data="{}")
        assert_error(status, body, 401, "unauthorized")
        status, body = await request(session, "GET", gw + BASE, headers=headers)
        assert_error(status, body, 401, "unauthorized")
        status, body = await request(session, "GET", gw + "/api/orders", headers=headers)
        assert_error(status, body, 401, "unauthorized")
        # Nothing was opened in that user's name.
        assert await groups_led_by(session, stack, user, "gd-badtok-check") == []


async def test_http_unauthorized_comes_before_body_checks(stack: Stack) -> None:
    """A stranger learns nothing about the body: 401, not 400 or 413."""
    url = stack.gateways[0].url + BASE
    async with aiohttp.ClientSession() as session:
        for data in ("{not json", json.dumps({"user": "bob"}), "x" * 20_000):
            status, body = await request(session, "POST", url, data=data,
                                         headers={"Content-Type": "application/json"})
            assert_error(status, body, 401, "unauthorized")


# --- HTTP: bodies --------------------------------------------------------------------------


@pytest.mark.parametrize(("tag", "extra"), [
    ("user", {"user": "gd-bob"}),
    ("self", {"user": "gd-ox-self"}),
    ("price", {"price": 1}),
    ("price0", {"price": 0}),
    ("both", {"user": "gd-ox-other", "campaign": "guard", "price": 6000}),
])
async def test_http_open_body_naming_user_or_price_is_refused(stack: Stack, tag: str,
                                                              extra: dict[str, Any]) -> None:
    user = f"gd-ox-{tag}"
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, gw + BASE, user, extra)
        assert_error(status, body, 400, "invalid_request")
        assert await groups_led_by(session, stack, user, user) == []
        if "user" in extra:
            assert await groups_led_by(session, stack, extra["user"], user) == []
        # The refused request consumed nothing: the same user opens normally now, at the
        # configured price.
        group = await open_group(session, stack, user)
        assert group["price"] == 6000
        led = await groups_led_by(session, stack, user, user)
        assert [g["id"] for g in led] == [group["id"]]


@pytest.mark.parametrize("extra", [{"user": "gd-bob"}, {"price": 1}])
async def test_http_join_body_naming_user_or_price_is_refused(stack: Stack,
                                                              extra: dict[str, Any]) -> None:
    tag = next(iter(extra))
    leader, joiner = f"gd-jx-lead-{tag}", f"gd-jx-join-{tag}"
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        group = await open_group(session, stack, leader)
        url = f"{gw}{BASE}/{group['id']}/join"
        status, body = await post(session, url, joiner, extra)
        assert_error(status, body, 400, "invalid_request")
        status, body = await get(session, f"{gw}{BASE}/{group['id']}", joiner)
        assert status == 200 and body["group"]["members"] == [leader], body
        # Not counted as a member: a valid join by the same user goes through.
        status, body = await post(session, url, joiner)
        assert status == 200, body
        assert body["group"]["members"] == [leader, joiner]
        assert body["group"]["price"] == 6000


@pytest.mark.parametrize("data", ["{not json", "{\"campaign\": ", "nul", "\x00\x01",
                                  "[]", "[{\"campaign\": \"guard\"}]", "\"guard\"", "42",
                                  "true", "null"])
async def test_http_body_that_is_not_a_json_object_is_invalid(stack: Stack, data: str) -> None:
    user = "gd-badbody"
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        status, body = await request(session, "POST", gw + BASE, data=data,
                                     headers=json_headers(user))
        assert_error(status, body, 400, "invalid_request")
        status, body = await request(session, "POST", f"{gw}{BASE}/abcdef/join", data=data,
                                     headers=json_headers(user))
        assert_error(status, body, 400, "invalid_request")
        assert await groups_led_by(session, stack, user, user) == []


async def test_http_body_contradicting_the_path_is_invalid(stack: Stack) -> None:
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, gw + BASE, "gd-contra", {"campaign": "live"})
        assert_error(status, body, 400, "invalid_request")
        assert await groups_led_by(session, stack, "gd-contra", "gd-contra") == []
        group = await open_group(session, stack, "gd-contra-lead")
        other = await open_group(session, stack, "gd-contra-lead2")
        url = f"{gw}{BASE}/{group['id']}/join"
        status, body = await post(session, url, "gd-contra", {"group": other["id"]})
        assert_error(status, body, 400, "invalid_request")
        status, body = await post(session, url, "gd-contra", {"campaign": "live"})
        assert_error(status, body, 400, "invalid_request")
        # Repeating the path's own values is harmless.
        status, body = await post(session, url, "gd-contra",
                                  {"campaign": "guard", "group": group["id"]})
        assert status == 200 and body["group"]["members"] == ["gd-contra-lead", "gd-contra"]
        status, body = await get(session, f"{gw}{BASE}/{other['id']}", "gd-contra")
        assert status == 200 and body["group"]["members"] == ["gd-contra-lead2"]


async def test_http_unknown_campaign_and_group_are_not_found(stack: Stack) -> None:
    gw = stack.gateways[0].url
    user = "gd-notfound"
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, gw + "/api/groupbuys/nosuch/groups", user)
        assert_error(status, body, 404, "not_found")
        status, body = await get(session, gw + "/api/groupbuys/nosuch/groups", user)
        assert_error(status, body, 404, "not_found")
        status, body = await post(session, gw + "/api/groupbuys/nosuch/groups/abc/join", user)
        assert_error(status, body, 404, "not_found")
        status, body = await get(session, gw + "/api/groupbuys/nosuch/groups/abc", user)
        assert_error(status, body, 404, "not_found")
        status, body = await post(session, f"{gw}{BASE}/nosuchgroup0/join", user)
        assert_error(status, body, 404, "not_found")
        status, body = await get(session, f"{gw}{BASE}/nosuchgroup0", user)
        assert_error(status, body, 404, "not_found")


@pytest.mark.parametrize("group", ["bad!id", "bad$id", "bad.id", "bad%20id", "x" * 65,
                                   "%C3%A9t%C3%A9"])
async def test_http_illegal_group_id_is_refused(stack: Stack, group: str) -> None:
    gw = stack.gateways[0].url
    user = "gd-illegal"
    async with aiohttp.ClientSession() as session:
        for method, url in (("POST", f"{gw}{BASE}/{group}/join"),
                            ("GET", f"{gw}{BASE}/{group}")):
            status, body = await request(session, method, url, headers=json_headers(user))
            assert 400 <= status < 500, (status, body)
            assert_error(status, body, status, body["error"]["code"])
            assert body["error"]["code"] in ("invalid_request", "not_found"), body


async def test_http_illegal_campaign_id_is_refused(stack: Stack) -> None:
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        for campaign in ("GUARD", "gu!ard", "c" * 65):
            status, body = await post(session, f"{gw}/api/groupbuys/{campaign}/groups",
                                      "gd-illegal-c")
            assert_error(status, body, 400, "invalid_request")


async def test_http_body_over_limit_is_413(stack: Stack) -> None:
    gw = stack.gateways[0].url
    user = "gd-toolarge"
    big = json.dumps({"pad": "x" * 20_000})
    async with aiohttp.ClientSession() as session:
        status, body = await request(session, "POST", gw + BASE, data=big,
                                     headers=json_headers(user))
        assert status == 413, body
        assert_error(status, body, 413, body["error"]["code"])
        assert await groups_led_by(session, stack, user, user) == []
        # The server is fine afterwards, for the same client.
        await open_group(session, stack, user)


async def test_http_unknown_route_and_method_get_the_error_shape(stack: Stack) -> None:
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        for method, path in (("GET", "/nope"), ("GET", "/api/nope"),
                             ("POST", "/api/groupbuys/guard"),
                             ("GET", "/api/groupbuys/guard/groups/a/b/c")):
            status, body = await request(session, method, gw + path,
                                         headers=json_headers("gd-route"))
            assert_error(status, body, 404, "not_found")
        status, body = await request(session, "DELETE", gw + BASE,
                                     headers=json_headers("gd-route"))
        assert 400 <= status < 500, (status, body)
        assert_error(status, body, status, body["error"]["code"])


# --- HTTP: game refusals -------------------------------------------------------------------


async def test_http_campaign_not_started_is_refused(stack: Stack) -> None:
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, gw + "/api/groupbuys/later/groups", "gd-early")
        assert_error(status, body, 409, "campaign_not_active")


async def test_http_join_twice_is_already_member(stack: Stack) -> None:
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        group = await open_group(session, stack, "gd-twice-lead")
        url = f"{gw}{BASE}/{group['id']}/join"
        status, body = await post(session, url, "gd-twice-lead")
        assert_error(status, body, 409, "already_member")
        status, body = await post(session, url, "gd-twice")
        assert status == 200, body
        status, body = await post(session, url, "gd-twice")
        assert_error(status, body, 409, "already_member")
        # Through the other gateway too.
        status, body = await post(session, f"{stack.gateways[1].url}{BASE}/{group['id']}/join",
                                  "gd-twice")
        assert_error(status, body, 409, "already_member")


async def test_http_join_full_group_is_group_full(stack: Stack) -> None:
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        group = await open_group(session, stack, "gd-full-lead")
        url = f"{gw}{BASE}/{group['id']}/join"
        for user in ("gd-full-a", "gd-full-b"):
            status, body = await post(session, url, user)
            assert status == 200, body
        assert body["group"]["status"] == "completed"
        status, body = await post(session, url, "gd-full-c")
        assert_error(status, body, 409, "group_full")


# --- HTTP: idempotency ---------------------------------------------------------------------


async def test_http_idempotency_key_repeat_returns_the_first_answer(stack: Stack) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        key = "gd-idem-open-1"
        first = await post(session, gw[0].url + BASE, "gd-idem", key=key)
        again = await post(session, gw[0].url + BASE, "gd-idem", key=key)
        other_gateway = await post(session, gw[1].url + BASE, "gd-idem", key=key)
        assert first[0] == 201, first
        assert again == first and other_gateway == first
        assert [g["id"] for g in await groups_led_by(session, stack, "gd-idem", "gd-idem")] \
            == [first[1]["group"]["id"]]
        # A join repeated with its key is answered again, not refused as already_member.
        url = f"{gw[0].url}{BASE}/{first[1]['group']['id']}/join"
        joined = await post(session, url, "gd-idem-j", key="gd-idem-join-1")
        assert joined[0] == 200, joined
        assert await post(session, url, "gd-idem-j", key="gd-idem-join-1") == joined
        # A new key is a new request.
        status, body = await post(session, url, "gd-idem-j", key="gd-idem-join-2")
        assert_error(status, body, 409, "already_member")


async def test_http_idempotency_keys_belong_to_their_user(stack: Stack) -> None:
    gw = stack.gateways[0].url
    key = "gd-shared-key"
    async with aiohttp.ClientSession() as session:
        status_a, body_a = await post(session, gw + BASE, "gd-keyowner-a", key=key)
        status_b, body_b = await post(session, gw + BASE, "gd-keyowner-b", key=key)
        assert status_a == 201 and status_b == 201, (body_a, body_b)
        assert body_a["group"]["members"] == ["gd-keyowner-a"]
        assert body_b["group"]["members"] == ["gd-keyowner-b"]
        assert body_a["group"]["id"] != body_b["group"]["id"]


async def test_http_refused_answer_is_repeated_for_its_key(stack: Stack) -> None:
    gw = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        first = await post(session, gw + "/api/groupbuys/later/groups", "gd-idem-err",
                           key="gd-idem-err-1")
        assert_error(*first, 409, "campaign_not_active")
        assert await post(session, gw + "/api/groupbuys/later/groups", "gd-idem-err",
                          key="gd-idem-err-1") == first


@pytest.mark.parametrize("length", [129, 500])
async def test_http_idempotency_key_too_long_is_invalid(stack: Stack, length: int) -> None:
    gw = stack.gateways[0].url
    user = f"gd-longkey-{length}"
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, gw + BASE, user, key="k" * length)
        assert_error(status, body, 400, "invalid_request")
        assert await groups_led_by(session, stack, user, user) == []
        # 128 is still fine.
        status, body = await post(session, gw + BASE, user, key="k" * 128)
        assert status == 201, body


# --- WebSocket: identity -------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_ws_bad_query_token_is_refused_and_closed_4001(stack: Stack, kind: str) -> None:
    conn = await ws_raw(stack, f"?token={BAD_TOKENS[kind]('gd-wsq-' + kind)}")
    ws = WS(conn)
    try:
        frame = await ws.recv()
        assert_reply_error(frame, None, "unauthorized")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    finally:
        await ws.close()


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_ws_bad_auth_frame_is_refused_and_socket_stays_usable(stack: Stack,
                                                                    kind: str) -> None:
    user = f"gd-wsa-{kind}"
    ws = WS(await ws_raw(stack))
    try:
        await ws.send({"op": "auth", "ref": "a1", "token": BAD_TOKENS[kind](user)})
        assert_reply_error(await ws.recv(), "a1", "unauthorized")
        await assert_usable(ws)
        # Still not authenticated: calls are refused.
        assert_reply_error(await ws.call("c1", "groupbuy.open", {"campaign": "guard"}), "c1",
                           "unauthorized")
        await ws.send({"op": "auth", "ref": "a2", "token": token(user)})
        ok = await ws.recv()
        assert ok == {"op": "reply", "ref": "a2", "ok": True,
                      "result": {"user": user, "role": "user"}}
        reply = await ws.call("c2", "groupbuy.open", {"campaign": "guard"})
        assert reply["ok"] is True, reply
        assert reply["result"]["group"]["members"] == [user]
    finally:
        await ws.close()


async def test_ws_auth_frame_without_usable_token(stack: Stack) -> None:
    ws = WS(await ws_raw(stack))
    try:
        for frame in ({"op": "auth", "ref": "n1"}, {"op": "auth", "ref": "n2", "token": 5},
                      {"op": "auth", "ref": "n3", "token": ""},
                      {"op": "auth", "ref": "n4", "token": "x" * 3000}):
            await ws.send(frame)
            assert_reply_error(await ws.recv(), frame["ref"], "unauthorized")
        await assert_usable(ws)
    finally:
        await ws.close()


async def test_ws_everything_but_ping_and_auth_needs_auth_first(stack: Stack) -> None:
    user = "gd-wspre"
    ws = WS(await ws_raw(stack))
    try:
        reply = await ws.call("p1", "groupbuy.open", {"campaign": "guard"})
        assert_reply_error(reply, "p1", "unauthorized")
        await ws.send({"op": "subscribe", "ref": "p2", "topic": f"user:{user}"})
        assert_reply_error(await ws.recv(), "p2", "unauthorized")
        await ws.send({"op": "unsubscribe", "ref": "p3", "topic": f"user:{user}"})
        assert_reply_error(await ws.recv(), "p3", "unauthorized")
        await assert_usable(ws)
        await ws.send({"op": "auth", "ref": "p4", "token": token(user)})
        assert (await ws.recv())["ok"] is True
        reply = await ws.call("p5", "groupbuy.open", {"campaign": "guard"})
        assert reply["ok"] is True and reply["result"]["group"]["members"] == [user], reply
    finally:
        await ws.close()


async def test_ws_connection_cannot_change_its_user(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsswap")
    try:
        await ws.send({"op": "auth", "ref": "s1", "token": token("gd-wsswap-other")})
        assert_reply_error(await ws.recv(), "s1", "forbidden")
        reply = await ws.call("s2", "groupbuy.open", {"campaign": "guard"})
        assert reply["ok"] is True and reply["result"]["group"]["members"] == ["gd-wsswap"]
    finally:
        await ws.close()


# --- WebSocket: frames ---------------------------------------------------------------------


async def test_ws_call_open_succeeds(stack: Stack) -> None:
    user = "gd-wsopen"
    ws = await WS.connect(stack.gateways[0].ws_url, user)
    try:
        reply = await ws.call("o1", "groupbuy.open", {"campaign": "guard"})
        assert set(reply) == {"op", "ref", "ok", "result"}, reply
        assert reply["op"] == "reply" and reply["ref"] == "o1" and reply["ok"] is True
        group = reply["result"]["group"]
        assert group["campaign"] == "guard" and group["status"] == "open"
        assert group["members"] == [user] and group["size"] == 3 and group["price"] == 6000
        # `ref` is the idempotency key: the same ref is the same answer.
        again = await ws.call("o1", "groupbuy.open", {"campaign": "guard"})
        assert again == reply
    finally:
        await ws.close()
    async with aiohttp.ClientSession() as session:
        status, body = await get(session, f"{stack.gateways[1].url}{BASE}/{group['id']}", user)
        assert status == 200 and body["group"]["members"] == [user], body


@pytest.mark.parametrize("text", ["{not json", "{\"op\": \"ping\"", "", "nul", "'x'"])
async def test_ws_malformed_json_is_invalid_and_socket_stays_usable(stack: Stack,
                                                                    text: str) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsjson")
    try:
        await ws.send(text)
        assert_reply_error(await ws.recv(), None, "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()


@pytest.mark.parametrize("text", ["[]", "[{\"op\": \"ping\"}]", "\"ping\"", "42", "null",
                                  "true"])
async def test_ws_non_object_json_is_invalid(stack: Stack, text: str) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsnonobj")
    try:
        await ws.send(text)
        assert_reply_error(await ws.recv(), None, "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()


@pytest.mark.parametrize("frame", [{"op": "fly", "ref": "u1"}, {"ref": "u1"},
                                   {"op": 7, "ref": "u1"}, {"op": None, "ref": "u1"}])
async def test_ws_unknown_op_is_invalid(stack: Stack, frame: dict[str, Any]) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsop")
    try:
        await ws.send(frame)
        assert_reply_error(await ws.recv(), "u1", "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()


@pytest.mark.parametrize("ref", [5, "", "r" * 129, ["r"], {"r": 1}])
async def test_ws_bad_ref_is_invalid(stack: Stack, ref: Any) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsref")
    try:
        await ws.send({"op": "call", "ref": ref, "method": "groupbuy.open",
                       "params": {"campaign": "guard"}})
        assert_reply_error(await ws.recv(), None, "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()
    async with aiohttp.ClientSession() as session:
        assert await groups_led_by(session, stack, "gd-wsref", "gd-wsref") == []


async def test_ws_call_without_ref_is_invalid(stack: Stack) -> None:
    user = "gd-wsnoref"
    ws = await WS.connect(stack.gateways[0].ws_url, user)
    try:
        await ws.send({"op": "call", "method": "groupbuy.open", "params": {"campaign": "guard"}})
        assert_reply_error(await ws.recv(), None, "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()
    async with aiohttp.ClientSession() as session:
        assert await groups_led_by(session, stack, user, user) == []


@pytest.mark.parametrize("method", ["groupbuy.explode", "", "GROUPBUY.OPEN", 5, None])
async def test_ws_unknown_method_is_invalid(stack: Stack, method: Any) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsmethod")
    try:
        await ws.send({"op": "call", "ref": "m1", "method": method,
                       "params": {"campaign": "guard"}})
        assert_reply_error(await ws.recv(), "m1", "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()


CALL_PARAM_CASES = {
    "open_no_params": ("groupbuy.open", None),
    "open_empty": ("groupbuy.open", {}),
    "join_missing_group": ("groupbuy.join", {"campaign": "guard"}),
    "join_missing_campaign": ("groupbuy.join", {"group": "abcdef"}),
    "join_group_int": ("groupbuy.join", {"campaign": "guard", "group": 12345}),
    "join_group_null": ("groupbuy.join", {"campaign": "guard", "group": None}),
    "join_group_list": ("groupbuy.join", {"campaign": "guard", "group": ["abcdef"]}),
    "join_group_illegal": ("groupbuy.join", {"campaign": "guard", "group": "bad!id"}),
    "open_campaign_int": ("groupbuy.open", {"campaign": 1}),
    "open_campaign_bool": ("groupbuy.open", {"campaign": True}),
    "open_user": ("groupbuy.open", {"campaign": "guard", "user": "gd-bob"}),
    "open_price": ("groupbuy.open", {"campaign": "guard", "price": 1}),
    "params_list": ("groupbuy.open", ["guard"]),
    "params_string": ("groupbuy.open", "guard"),
    "list_limit_zero": ("groupbuy.list_open", {"campaign": "guard", "limit": 0}),
    "list_limit_string": ("groupbuy.list_open", {"campaign": "guard", "limit": "5"}),
}


@pytest.mark.parametrize("case", sorted(CALL_PARAM_CASES))
async def test_ws_bad_params_are_invalid(stack: Stack, case: str) -> None:
    user = f"gd-wsp-{case.replace('_', '-')}"
    method, params = CALL_PARAM_CASES[case]
    ws = await WS.connect(stack.gateways[0].ws_url, user)
    try:
        frame: dict[str, Any] = {"op": "call", "ref": "bp1", "method": method}
        if params is not None:
            frame["params"] = params
        await ws.send(frame)
        assert_reply_error(await reply_to(ws, "bp1"), "bp1", "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()
    async with aiohttp.ClientSession() as session:
        assert await groups_led_by(session, stack, user, user) == []
        assert await groups_led_by(session, stack, "gd-bob", user) == []


async def test_ws_join_with_user_or_price_does_not_join(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        group = await open_group(session, stack, "gd-wsjx-lead")
        ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsjx")
        try:
            params = {"campaign": "guard", "group": group["id"]}
            for ref, extra in (("jx1", {"user": "gd-wsjx-other"}), ("jx2", {"price": 1})):
                reply = await ws.call(ref, "groupbuy.join", {**params, **extra})
                assert_reply_error(reply, ref, "invalid_request")
            status, body = await get(session, f"{stack.gateways[0].url}{BASE}/{group['id']}",
                                     "gd-wsjx")
            assert status == 200 and body["group"]["members"] == ["gd-wsjx-lead"], body
            reply = await ws.call("jx3", "groupbuy.join", params)
            assert reply["ok"] is True, reply
            assert reply["result"]["group"]["members"] == ["gd-wsjx-lead", "gd-wsjx"]
            assert_reply_error(await ws.call("jx4", "groupbuy.join", params), "jx4",
                               "already_member")
            assert_reply_error(await ws.call("jx5", "groupbuy.join",
                                             {"campaign": "guard", "group": "nosuchgroup0"}),
                               "jx5", "not_found")
            assert_reply_error(await ws.call("jx6", "groupbuy.open", {"campaign": "later"}),
                               "jx6", "campaign_not_active")
            assert_reply_error(await ws.call("jx7", "groupbuy.open", {"campaign": "nosuch"}),
                               "jx7", "not_found")
        finally:
            await ws.close()


async def test_ws_oversized_frame_is_invalid_and_socket_stays_usable(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsbig")
    try:
        for size in (FRAME_LIMIT + 1, 8000, 4 * FRAME_LIMIT - 64):
            text = json.dumps({"op": "ping", "pad": "x" * size})
            assert FRAME_LIMIT < len(text) <= 4 * FRAME_LIMIT
            await ws.send(text)
            assert_reply_error(await ws.recv(), None, "invalid_request")
            await assert_usable(ws)
        # Just under the limit is handled normally.
        text = json.dumps({"op": "ping", "pad": "x" * (FRAME_LIMIT - 64)})
        assert len(text) <= FRAME_LIMIT
        await ws.send(text)
        assert await ws.recv() == {"op": "pong"}
    finally:
        await ws.close()


async def test_ws_far_oversized_frame_closes_the_socket(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wshuge")
    try:
        await ws.send(json.dumps({"op": "ping", "pad": "x" * 100_000}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.until(lambda f: False)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        await ws.close()


async def test_ws_binary_frame_is_invalid(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsbin")
    try:
        await ws.conn.send(b'{"op": "ping"}')
        assert_reply_error(await ws.recv(), None, "invalid_request")
        await ws.conn.send(b"\x00\xff\x10")
        assert_reply_error(await ws.recv(), None, "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()


# --- WebSocket: subscriptions --------------------------------------------------------------


async def test_ws_subscribe_to_someone_elses_user_topic_is_forbidden(stack: Stack) -> None:
    user = "gd-wssub"
    ws = await WS.connect(stack.gateways[0].ws_url, user)
    try:
        await ws.send({"op": "subscribe", "ref": "f1", "topic": "user:gd-someoneelse"})
        assert_reply_error(await ws.recv(), "f1", "forbidden")
        await assert_usable(ws)
        # Its own user topic is fine.
        await ws.send({"op": "subscribe", "ref": "f2", "topic": f"user:{user}"})
        snap = await ws.recv()
        assert snap["op"] == "snapshot" and snap["topic"] == f"user:{user}", snap
    finally:
        await ws.close()


@pytest.mark.parametrize("topic", ["nosuch:topic", "groupbuy:nosuch:abcdef",
                                   "groupbuy:guard:nosuchgroup0", "user:", "lottery",
                                   "groupbuy:guard"])
async def test_ws_subscribe_to_unknown_topic_is_not_found(stack: Stack, topic: str) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsnotopic")
    try:
        await ws.send({"op": "subscribe", "ref": "t1", "topic": topic})
        assert_reply_error(await ws.recv(), "t1", "not_found")
        await assert_usable(ws)
    finally:
        await ws.close()


@pytest.mark.parametrize("frame", [
    {"topic": "user:gd-wsafter", "after": -1},
    {"topic": "user:gd-wsafter", "after": "3"},
    {"topic": "user:gd-wsafter", "after": 1.5},
    {"topic": "user:gd-wsafter", "after": True},
    {"topic": "user:gd-wsafter", "after": [1]},
    {"topic": 5},
    {"topic": ""},
    {},
    {"topic": "x" * 201},
])
async def test_ws_subscribe_with_bad_fields_is_invalid(stack: Stack,
                                                       frame: dict[str, Any]) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsafter")
    try:
        await ws.send({"op": "subscribe", "ref": "b1", **frame})
        assert_reply_error(await ws.recv(), "b1", "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()


async def test_ws_unsubscribe_with_bad_topic_is_invalid(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsunsub")
    try:
        await ws.send({"op": "unsubscribe", "ref": "us1", "topic": 7})
        assert_reply_error(await ws.recv(), "us1", "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()


# --- WebSocket: rate limit -----------------------------------------------------------------

PING = '{"op":"ping"}'


async def send_batch(ws: WS, texts: list[str]) -> None:
    """Write several text frames in one TCP write, as a pipelining client does."""
    for text in texts:
        ws.conn.protocol.send_text(text.encode())
    ws.conn.transport.write(b"".join(ws.conn.protocol.data_to_send()))


async def close_code(ws: WS) -> int | None:
    await asyncio.wait_for(ws.conn.wait_closed(), 10)
    rcvd = ws.conn.protocol.close_rcvd
    return rcvd.code if rcvd is not None else None


async def flood(ws: WS, total: int, batch: int) -> tuple[list[dict[str, Any]], int | None]:
    """`total` pings as fast as the answers come back, `batch` per write; the answers, and
    the close code if the server closed the socket."""
    frames: list[dict[str, Any]] = []
    sent = 0
    try:
        while sent < total:
            count = min(batch, total - sent)
            await send_batch(ws, [PING] * count)
            sent += count
            for _ in range(count):
                frames.append(await ws.recv())
    except (websockets.ConnectionClosed, websockets.InvalidState):
        return frames, await close_code(ws)
    return frames, None


def split_answers(frames: list[dict[str, Any]]) -> tuple[int, int]:
    """(pongs, rate_limited replies); anything else fails the test."""
    pongs = limited = 0
    for frame in frames:
        if frame == {"op": "pong"}:
            pongs += 1
        else:
            assert_reply_error(frame, None, "rate_limited")
            limited += 1
    return pongs, limited


async def test_ws_flood_gets_rate_limited(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsflood")
    try:
        frames, code = await flood(ws, 300, batch=20)
    finally:
        await ws.close()
    pongs, limited = split_answers(frames)
    assert limited > 0, f"no rate_limited reply among {len(frames)} answers"
    assert pongs >= 100, pongs  # the burst (frame_burst = 100) is let through
    # Either every ping was answered, or the server gave up on the flood with 1008.
    assert (code is None and len(frames) == 300) or code == 1008, (len(frames), code)


async def test_ws_repeated_flooding_is_closed_with_policy_violation(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wsflood2")
    try:
        frames, code = await flood(ws, 3000, batch=50)
    finally:
        await ws.close()
    pongs, limited = split_answers(frames)
    assert code == 1008, (code, pongs, limited)
    assert limited > 200, limited  # closed after 2 x burst strikes, each one answered


async def test_ws_pipelined_frames_under_the_queue_size_are_all_answered(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wspipe-small")
    try:
        await send_batch(ws, [PING] * 50)
        assert [await ws.recv() for _ in range(50)] == [{"op": "pong"}] * 50
        await assert_usable(ws)
    finally:
        await ws.close()


async def test_ws_pipelined_burst_within_limits_is_answered(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "gd-wspipe-burst")
    frames: list[dict[str, Any]] = []
    code: int | None = None
    try:
        await send_batch(ws, [PING] * 80)  # < frame_burst: no rate limit applies
        try:
            for _ in range(80):
                frames.append(await ws.recv())
        except websockets.ConnectionClosed:
            code = await close_code(ws)
    finally:
        await ws.close()
    assert code is None, f"closed with {code} after {len(frames)} of 80 pongs"
    assert frames == [{"op": "pong"}] * 80


async def test_ws_rate_limit_is_per_connection(stack: Stack) -> None:
    """A flooding socket does not slow a quiet one of the same user."""
    noisy = await WS.connect(stack.gateways[0].ws_url, "gd-wsquiet")
    quiet = await WS.connect(stack.gateways[0].ws_url, "gd-wsquiet")
    try:
        frames, code = await flood(noisy, 160, batch=20)
        assert code is None
        assert split_answers(frames)[1] > 0
        await assert_usable(quiet)
        reply = await quiet.call("q1", "groupbuy.open", {"campaign": "guard"})
        assert reply["ok"] is True, reply
    finally:
        await noisy.close()
        await quiet.close()
