"""HTTP fuzzing, kept in the suite: schemathesis over docs/openapi.yaml against a live gateway.

Every operation of the OpenAPI file is driven with schemathesis' examples, coverage cases
(boundaries, each kind of wrong value, methods a route does not offer) and positive and
negative fuzzing, each example as a user nobody has used (so the per-user rate limit does
not answer everything with 429; a marketer on marketer routes). Each answer must be no
5xx, a status the file documents for the route, a body in the documented schema (errors
in the contract's `{"error": {"code", "message"}}` shape), invalid data refused with a
4xx, valid data never refused as invalid, auth enforced (schemathesis probes without a
token and with a bad one), and 405 with `Allow` for a method a route does not offer.

Beside it, hypothesis sends what schemathesis cannot: raw header bytes that are not
UTF-8, correctly signed tokens whose claims have any type, and integers spelled as only
Python's int() reads them. One test provokes every status the file documents, one holds
the file to the routes the gateway registers.

`FISSION_FUZZ_EXAMPLES` sets the examples per operation (default 40: about a minute for
the file); a release check runs it with 1000 (docs/api.md, "Fuzzing for a release").
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case as AnyCase
from schemathesis import CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.support.claims import odd_claims, signed
from tests.support.client import token
from tests.support.stack import Stack

pytestmark = pytest.mark.acceptance

EXAMPLES = int(os.environ.get("FISSION_FUZZ_EXAMPLES", "40"))
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
# Campaigns of the acceptance stack a positive case may be pointed at: `guard` takes new
# groups (50 per user), `later` has not started (every command is refused), `cutstorm`
# takes bargains (100 per user; each needs 100 helpers to reach its floor), `luck` is a
# lottery (two free draws a user a day).
CAMPAIGNS = ("guard", "later", "cutstorm", "luck")
Case = AnyCase[Any]
_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
_ERROR_KEYS = frozenset({"code", "message", "retry_after_ms"})
_TIMEOUT = 15.0

CONFIG = schemathesis.Config.from_dict({
    "generation": {
        "mode": "all",
        # Tokens are this test's business (one user per example), not generated data.
        "with-security-parameters": False,
    },
    # Reproductions show every header: the tokens are the test secret's, and a key that
    # broke something is what a reproduction needs.
    "output": {"sanitization": {"enabled": False}},
})
SCHEMA = schemathesis.openapi.from_path(OPENAPI, config=CONFIG)


@SCHEMA.auth(refresh_interval=None, retry_on=[])
class FreshUser:
    """A token for a user nobody has used yet, for every example (a marketer on marketer
    routes), so one user's rate limit never answers for the others."""

    def get(self, case: Case, context: schemathesis.AuthContext) -> str:
        if case.path.startswith("/api/admin/"):
            return token(_fresh("fzm"), role="marketer")
        return token(_fresh("fzh"))

    def set(self, case: Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@schemathesis.check
def contract_error_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx answer is `{"error": {"code": snake_case, "message": str}}` (a
    rate-limit refusal may add an integer `retry_after_ms`), whatever the route."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"a {response.status_code} answer is not JSON: {response.content[:200]!r}") from None
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the error shape: {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"`error` is not an object: {body!r}"
    assert {"code", "message"} <= set(error) <= _ERROR_KEYS, f"error fields: {sorted(error)}"
    assert isinstance(error["code"], str) and _CODE.match(error["code"]), error
    assert isinstance(error["message"], str) and error["message"], error
    if "retry_after_ms" in error:
        assert error["code"] == "rate_limited", error
        after = error["retry_after_ms"]
        assert isinstance(after, int) and not isinstance(after, bool) and after >= 1, error
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    ignored_auth,
    unsupported_method,
    allow_header_conformance,
    contract_error_shape,
]


def _aim(case: Case) -> None:
    """Point some positive cases at a real campaign (chosen by the generated value, so a
    replayed example is aimed the same way), and make a body that repeats a path parameter
    repeat it with the path's value (what the route documents): valid data stays valid and
    reaches the actors instead of stopping at a 404 or a 400."""
    meta = case.meta
    if meta is None or meta.generation.mode.is_negative:
        return
    path = case.path_parameters
    if not path:
        return
    if isinstance(path.get("campaign"), str):
        pick = zlib.crc32(path["campaign"].encode()) % (len(CAMPAIGNS) + 1)
        if pick < len(CAMPAIGNS):
            path["campaign"] = CAMPAIGNS[pick]
    if isinstance(case.body, dict):
        for name, value in path.items():
            if name in case.body:
                # Path values may arrive as their wire text; the body holds the typed value.
                typed = isinstance(case.body[name], int) and str(value).isascii() \
                    and str(value).isdigit()
                case.body[name] = int(value) if typed else value


# /ws is a handshake (test_fuzz_ws.py fuzzes what follows it); requests cannot hold one.
@SCHEMA.exclude(path="/ws").parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_route_keeps_the_contract(case: Case, stack: Stack) -> None:
    """Schemathesis' examples, coverage cases (boundaries, every kind of wrong value,
    methods a route does not offer) and positive and negative fuzzing for one operation:
    no 5xx, documented statuses and bodies only, errors in the contract's shape, invalid
    data refused, valid data not refused as invalid, auth enforced."""
    _aim(case)
    case.call_and_validate(base_url=stack.gateways[0].url, checks=CHECKS, timeout=_TIMEOUT)


# --- what schemathesis cannot send -------------------------------------------------------------

# Routes of every kind: a read, a game command, a pipeline command, a marketer route.
ROUTES = [
    ("GET", "/api/orders"),
    ("POST", "/api/groupbuys/guard/groups"),
    ("POST", "/api/groupbuys/guard/groups/gnotthere/join"),
    ("POST", "/api/bargains/cutstorm"),
    ("POST", "/api/bargains/cutstorm/bnotthere/help"),
    ("POST", "/api/referrals"),
    ("POST", "/api/withdrawals"),
    ("GET", "/api/admin/withdrawals"),
    ("POST", "/api/admin/withdrawals/1/approve"),
]
_BODIES = {"/api/referrals": b'{"referrer": "fz-ref"}', "/api/withdrawals": b'{"amount": 100}'}

# The bytes HTTP allows in a header value (RFC 9110 field-vchar: VCHAR and obs-text, with
# spaces and tabs inside): controls are not an HTTP message at all, and aiohttp's parser
# refuses them before the application sees them.
_FIELD_BYTE = st.one_of(st.integers(0x21, 0x7E), st.integers(0x80, 0xFF),
                        st.sampled_from([0x20, 0x09]))


def _bytes_header() -> st.SearchStrategy[bytes]:
    """Header values a client may put on the wire, non-UTF-8 sequences included."""
    return st.lists(_FIELD_BYTE, min_size=1, max_size=200).map(
        lambda raw: bytes(raw).strip(b" \t") or b"\xff")


@dataclass(frozen=True)
class Sent:
    """A raw request and what came back."""

    request: bytes
    status: int
    body: bytes


def _raw(port: int, method: str, path: str, headers: list[tuple[bytes, bytes]],
         body: bytes = b"") -> Sent:
    """Send one HTTP/1.1 request byte for byte (no client library re-encodes a header)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1",
             b"Connection: close", b"Content-Type: application/json",
             f"Content-Length: {len(body)}".encode()]
    lines += [name + b": " + value for name, value in headers]
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), f"no HTTP answer to {request[:300]!r}: {answer[:200]!r}"
    return Sent(request, int(head.split()[1]), payload)


def _assert_contract(sent: Sent) -> None:
    """A 4xx in the contract's error shape (the request was bad or unauthorised)."""
    assert sent.status < 500, f"{sent.status} {sent.body[:300]!r} for {sent.request[:400]!r}"
    assert 400 <= sent.status < 500, f"{sent.status} for {sent.request[:400]!r}"
    body = json.loads(sent.body)
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body


def _healthy(port: int) -> None:
    sent = _raw(port, "GET", "/healthz", [])
    assert sent.status == 200, f"/healthz answered {sent.status}: {sent.body[:300]!r}"


@given(route=st.sampled_from(ROUTES), header=st.sampled_from(["Authorization",
                                                             "Idempotency-Key"]),
       value=_bytes_header())
@settings(max_examples=EXAMPLES * 3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_header_bytes_that_are_not_utf8(stack: Stack, route: tuple[str, str], header: str,
                                        value: bytes) -> None:
    """Any bytes in `Authorization` or `Idempotency-Key` get a 4xx in the contract's shape
    (or, for a key that is a fine string, the route's answer), never a 5xx; the gateway and
    its actors stay up."""
    method, path = route
    port = stack.gateways[0].port
    headers: list[tuple[bytes, bytes]] = []
    if header == "Authorization":
        headers.append((b"Authorization", b"Bearer " + value))
    else:
        headers.append((b"Authorization", f"Bearer {token(_fresh('fzb'), role='marketer')}"
                        .encode()))
        headers.append((b"Idempotency-Key", value))
    sent = _raw(port, method, path, headers, _BODIES.get(path, b""))
    assert sent.status < 500, f"{sent.status} {sent.body[:300]!r} for {sent.request[:400]!r}"
    if sent.status >= 400:
        _assert_contract(sent)
    _healthy(port)


@given(route=st.sampled_from(ROUTES), claims=odd_claims("fzc-odd-claims"))
@settings(max_examples=EXAMPLES * 3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_signed_tokens_with_claims_of_any_type(stack: Stack, route: tuple[str, str],
                                               claims: dict[str, Any]) -> None:
    """A correctly signed token whose claims have the wrong types is 401 (or, where the
    claims still make sense, the route's answer), never a 5xx."""
    method, path = route
    port = stack.gateways[0].port
    if claims.get("sub") == "fzc-odd-claims":  # a user of its own, for the rate limit
        claims = {**claims, "sub": _fresh("fzc")}
    encoded = signed(claims)
    if encoded is None:
        return  # PyJWT refuses to sign it: no client can send it either
    sent = _raw(port, method, path, [(b"Authorization", f"Bearer {encoded}".encode())],
                _BODIES.get(path, b""))
    assert sent.status < 500, f"{sent.status} {sent.body[:300]!r} for claims {claims!r}"
    if sent.status >= 400:
        _assert_contract(sent)


# Query integers as Python's int() reads them but the OpenAPI file's `integer` does not:
# digits of other scripts, `_` between digits, a sign, spaces around.
_ZEROS = [0x0660, 0x06F0, 0x0966, 0x09E6, 0xFF10, 0x1D7CE]
_LIMIT_ROUTES = ["/api/groupbuys/guard/groups", "/api/orders", "/api/commissions",
                 "/api/withdrawals", "/api/admin/withdrawals"]


@st.composite
def not_quite_integers(draw: st.DrawFn) -> str:
    """A number from 1 to 100 written so int() takes it, and a schema does not."""
    text = str(draw(st.integers(10, 100)))
    form = draw(st.sampled_from(["script", "underscore", "sign", "space"]))
    if form == "script":
        zero = draw(st.sampled_from(_ZEROS))
        return "".join(chr(zero + int(d)) for d in text)
    if form == "underscore":
        return text[0] + "_" + text[1:]
    if form == "sign":
        return "+" + text
    return draw(st.sampled_from([" ", "\t", "\n"])) + text


@given(path=st.sampled_from(_LIMIT_ROUTES), limit=not_quite_integers())
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_integer_query_parameters_are_plain_decimal(stack: Stack, path: str, limit: str
                                                    ) -> None:
    """`limit` is an integer: other spellings of one are refused (400), not read by int()."""
    headers = {"Authorization": f"Bearer {token(_fresh('fzq'), role='marketer')}"}
    response = requests.get(stack.gateways[0].url + path, params={"limit": limit},
                            headers=headers, timeout=_TIMEOUT)
    assert response.status_code == 400, (
        f"GET {response.url} answered {response.status_code}: {response.text[:200]}")
    assert response.json()["error"]["code"] == "invalid_request", response.text


# --- every documented status is real ------------------------------------------------------------

# Statuses the OpenAPI file documents that this stack cannot show on demand: 503 needs an
# actor or storage down (everywhere); the others need settled commission, and this stack's
# return window is 30 days (test_withdrawals.py proves them on a stack whose window is 0).
UNPROVOKED = {
    **{("POST", path, status): "needs settled commission"
       for path in ("/api/admin/withdrawals/{withdrawal}/approve",
                    "/api/admin/withdrawals/{withdrawal}/reject")
       for status in (200, 409)},
    ("POST", "/api/withdrawals", 201): "needs settled commission",
    ("POST", "/api/orders/{order}/refund", 409): "needs a closed return window",
    ("POST", "/api/admin/orders/{order}/refund", 409): "needs an order waiting for its deal"
                                                      " (test_payments.py proves it)",
    ("GET", "/ws", 403): "needs server.allowed_origins, which this stack leaves open",
    ("GET", "/api/lotteries/{campaign}/audit", 200): "needs a lottery that has ended"
                                                     " (test_lottery.py proves it)",
    ("POST", "/api/payments/{adapter}/notify", 200): "needs the sandbox's signature"
                                                     " (test_payments.py proves it)",
    **{(verb, path, 502): "needs a payment provider that fails (test_payments.py proves it)"
       for verb, path in (("POST", "/api/groupbuys/{campaign}/groups"),
                          ("POST", "/api/groupbuys/{campaign}/groups/{group}/join"),
                          ("POST", "/api/bargains/{campaign}/{bargain}/buy"))},
    **{("POST", "/api/sandbox/payments/{payment}/pay", status): "needs sandbox_pays ="
       ' "on_request", which this stack leaves immediate (test_payments.py proves it)'
       for status in (200, 403, 409)},
}
_MISSING = 999_999_999
_BIG = json.dumps({"x": "a" * 20_000})  # over the default server.max_body_bytes (16384)
_LIMITED = {"/api/groupbuys/{campaign}/groups", "/api/orders", "/api/commissions",
            "/api/withdrawals", "/api/admin/withdrawals", "/api/team",
            "/api/admin/users/{user}/team",
            "/api/admin/users/{user}/commissions",
            "/api/admin/distributors"}  # GET routes with a `limit`


@dataclass(frozen=True)
class World:
    """What the documented-status requests act on."""

    base: str
    group: str  # open, in `guard`
    buyer: str  # of `order`, a paid order of a completed group
    order: int
    initiator: str  # of `bargain`, open in `cutstorm` (bought only at its floor)
    bargain: str
    cut_initiator: str  # of `cut_bargain`, open in `cut` (buyable before its floor)
    cut_bargain: str
    started: str  # a user who started all the bargains `cut` lets one user start


@dataclass(frozen=True)
class Ask:
    """One request: who sends it (a user id, or None for no token) and what."""

    method: str
    path: str
    user: str | None
    role: str = "user"
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def _send(session: requests.Session, base: str, ask: Ask) -> requests.Response:
    headers = dict(ask.headers)
    if ask.user is not None:
        headers["Authorization"] = f"Bearer {token(ask.user, role=ask.role)}"
    if ask.body is not None:
        headers["Content-Type"] = "application/json"
    return session.request(ask.method, base + ask.path, data=ask.body, headers=headers,
                           timeout=_TIMEOUT)


def _world(session: requests.Session, base: str) -> World:
    """Groups, bargains and an order to act on (the order polled until the pipeline has
    written it)."""
    def post(path: str, user: str) -> dict[str, Any]:
        response = _send(session, base, Ask("POST", path, user))
        assert response.status_code in (200, 201), response.text
        found: dict[str, Any] = response.json()
        return found

    group = post("/api/groupbuys/guard/groups", _fresh("fzw"))["group"]["id"]
    buyer = _fresh("fzw")
    done = post("/api/groupbuys/guard/groups", buyer)["group"]["id"]
    for _ in range(2):
        post(f"/api/groupbuys/guard/groups/{done}/join", _fresh("fzw"))
    initiator, cut_initiator, started = _fresh("fzi"), _fresh("fzi"), _fresh("fzi")
    bargain = post("/api/bargains/cutstorm", initiator)["bargain"]["id"]
    cut_bargain = post("/api/bargains/cut", cut_initiator)["bargain"]["id"]
    for _ in range(10):  # `cut` lets a user start 10
        post("/api/bargains/cut", started)
    deadline = time.monotonic() + 30
    while True:
        orders = _send(session, base, Ask("GET", "/api/orders", buyer)).json()["orders"]
        if orders:
            return World(base, group, buyer, int(orders[0]["id"]), initiator, bargain,
                         cut_initiator, cut_bargain, started)
        if time.monotonic() > deadline:
            state = _send(session, base, Ask("GET", f"/api/groupbuys/guard/groups/{done}",
                                             buyer)).text
            lines = _send(session, base, Ask("GET", "/metrics", None)).text.splitlines()
            pipeline = [line for line in lines if "pipeline" in line or "outbox" in line]
            raise AssertionError(f"the completed group's order never appeared: {state}\n"
                                 + "\n".join(pipeline))
        time.sleep(0.1)  # polling the pipeline's outbox drain in another process


def _ask(world: World, method: str, template: str, status: int) -> Ask:
    """The request that should get `status` from the route."""
    user: str | None = _fresh("fzd")
    role = "marketer" if template.startswith("/api/admin/") else "user"
    is_bargain = template.startswith("/api/bargains/")
    is_lottery = template.startswith("/api/lotteries/")
    is_board = template.startswith("/api/leaderboards/")
    values = {"campaign": "cutstorm" if is_bargain else "luck" if is_lottery
              else "lb" if is_board else "guard",
              "group": world.group, "bargain": world.bargain, "order": str(_MISSING),
              "withdrawal": str(_MISSING), "user": _fresh("fzt"),
              "asset": "home.css" if status == 200 else "nope.css",
              "adapter": "nope" if status == 404 else "sandbox", "payment": "0" * 30}
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    query = ""
    if template == "/api/referrals" and method == "POST":
        body = json.dumps({"referrer": _fresh("fzr")})
    if template == "/api/withdrawals" and method == "POST":
        body = json.dumps({"amount": 100})  # refused as insufficient_balance: 409
    if template == "/api/withdrawals/quote":
        query = "?amount=0" if status == 400 else "?amount=150"
    if template == "/api/admin/tax-report":
        query = "?year=0" if status == 400 else "?year=2030"
    if status == 200 and template == "/api/orders/{order}/refund":
        user, values["order"] = world.buyer, str(world.order)
    if status == 200 and template == "/api/admin/orders/{order}/refund":
        values["order"] = str(world.order)  # a marketer's: refunded (again) after sales
    if status == 200 and template.endswith("/buy"):
        user, values["campaign"] = world.cut_initiator, "cut"
        values["bargain"] = world.cut_bargain
    if status == 400:
        if template == "/ws":
            pass  # a plain GET: no WebSocket handshake
        elif method == "POST":
            body = "[]"
        elif template in ("/api/withdrawals/quote", "/api/admin/tax-report"):
            pass  # an out-of-range query, above
        elif template in _LIMITED:
            query = "?limit=0"
        else:
            headers = (("Idempotency-Key", "k" * 129),)
    elif status == 401:
        user = None
    elif status == 403:
        role = "user"  # a marketer route; or a bargain bought by another than its initiator
    elif status == 404:
        values["campaign"] = "nope"
    elif status == 409:
        if template == "/api/bargains/{campaign}":
            user, values["campaign"] = world.started, "cut"  # limit_reached
        elif template.endswith("/help") or template.endswith("/buy"):
            user = world.initiator  # own_bargain; floor_not_reached
        elif template.endswith("/audit"):
            pass  # `luck` runs on: not_revealed
        elif is_lottery:
            values["campaign"] = "lsoon"  # campaign_not_active
        else:
            values["campaign"] = "later"  # campaign_not_active
    elif status == 413:
        body = _BIG
    elif status == 414:
        query = "?pad=" + "a" * 9000  # over the gateway's 8192-byte request target
    elif status == 431:
        headers = (("X-Pad", "a" * 9000),)  # over its 8192 bytes a header
    path = template
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return Ask(method, path + query, user, role, body, headers)


def _answer(session: requests.Session, world: World, method: str, template: str,
            status: int) -> requests.Response:
    """The route's answer to the request meant to get `status`."""
    if template == "/ws" and status == 101:
        return _handshake(world.base)
    ask = _ask(world, method, template, status)
    if status == 409 and template == "/api/referrals":
        first = _send(session, world.base, Ask("POST", ask.path, ask.user,
                                               body=json.dumps({"referrer": _fresh("fzr")})))
        assert first.status_code == 200, first.text
    if (status == 200 and template.startswith("/api/admin/distributors/{user}/")) or (
            status == 409 and template == "/api/distributors/apply"):
        # An application to decide on; for the 409, one approved already.
        applicant = ask.path.split("/")[4] if status == 200 else ask.user
        first = _send(session, world.base, Ask("POST", "/api/distributors/apply", applicant))
        assert first.status_code == 200, first.text
        if status == 409:
            approved = _send(session, world.base, Ask(
                "POST", f"/api/admin/distributors/{applicant}/approve", _fresh("fzm"),
                "marketer"))
            assert approved.status_code == 200, approved.text
    if status != 429:
        return _send(session, world.base, ask)
    # Spend the user's burst on a cheap read, then ask at once; the bucket refills at
    # frames_per_second, so a try may find a token again: a few tries.
    assert ask.user is not None
    response = _send(session, world.base, ask)
    for _ in range(20):
        for _ in range(400):
            drained = _send(session, world.base, Ask("GET", "/api/orders", ask.user, ask.role))
            if drained.status_code == 429:
                break
        response = _send(session, world.base, ask)
        if response.status_code == 429:
            break
    return response


def _handshake(base: str) -> requests.Response:
    """A WebSocket handshake, byte for byte (requests cannot keep an upgraded socket): its
    answer as a requests.Response, for the schema to validate."""
    port = int(base.rsplit(":", 1)[1])
    request = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    response = requests.Response()
    response.status_code = int(head.split()[1])
    response.url = base + "/ws"
    response.request = requests.Request("GET", response.url).prepare()
    response._content = b""
    return response


def test_documented_statuses_are_real(stack: Stack) -> None:
    """Every status the OpenAPI file documents for a route, the route really answers, with
    a body in the documented schema (statuses this stack cannot show are listed, with
    why, in UNPROVOKED)."""
    base = stack.gateways[0].url
    wrong: list[str] = []
    with requests.Session() as session:
        world = _world(session, base)
        for result in SCHEMA.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            for key in operation.definition.raw["responses"]:
                status = int(key)
                if status == 503 or (operation.method.upper(), operation.path,
                                     status) in UNPROVOKED:
                    continue
                response = _answer(session, world, operation.method.upper(), operation.path,
                                   status)
                label = f"{operation.label} [{status}]"
                if response.status_code != status:
                    wrong.append(f"{label}: got {response.status_code} {response.text[:200]}")
                    continue
                try:
                    operation.validate_response(response)
                except Exception as exc:  # the schema's own failure, reported below
                    wrong.append(f"{label}: {exc}")
    assert not wrong, "\n".join(wrong)


def test_the_openapi_file_describes_every_route() -> None:
    """Every route the gateway registers is an operation of docs/openapi.yaml, and every
    operation there is a route (fuzzing a file that misses routes proves nothing)."""
    from aiohttp import web

    from server import http_api

    app = web.Application()
    http_api.routes(app)
    registered = {(route.method, route.resource.canonical) for route in app.router.routes()
                  if route.method != "HEAD" and route.resource is not None}
    registered.add(("GET", "/ws"))  # server/app.py adds the socket beside the HTTP routes
    documented = set()
    for result in SCHEMA.get_all_operations():
        assert isinstance(result, Ok), result
        documented.add((result.ok().method.upper(), result.ok().path))
    assert registered - documented == set(), "routes the OpenAPI file does not describe"
    assert documented - registered == set(), "operations the server does not have"
