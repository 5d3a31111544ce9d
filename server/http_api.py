"""HTTP routes: parse, authenticate, call the gateway, map errors to the contract's shape."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server import pages, state
from server.auth import Identity
from server.errors import ApiError
from server.gateway import METHODS, STORAGE_DOWN, Method, encode
from server.limits import retry_after_ms
from server.params import KEY_MAX, parse_json
from storage.text import clean_token

if TYPE_CHECKING:
    from server.app import Server

log = logging.getLogger("fission.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ID = re.compile(r"[0-9]{1,18}")
# Our limits on a request's target and each header, answered in the contract's shape;
# aiohttp's own parser limits sit above them (see `PARSER_LIMITS`), so only what is far
# too large to read gets its plain-text 400.
MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 8192
PARSER_LIMITS = {"max_line_size": 4 * MAX_URL_BYTES, "max_field_size": 4 * MAX_HEADER_BYTES}


def error_response(code: str, message: str, status: int | None = None,
                   retry_after: int | None = None) -> web.Response:
    """The contract's error body with its status (and `Retry-After` when the client
    should retry after `retry_after` ms)."""
    return api_error_response(ApiError(code, message, retry_after), status)


def api_error_response(exc: ApiError, status: int | None = None) -> web.Response:
    """`exc` as the contract's error body with its status."""
    response = web.json_response(exc.body(), status=status or exc.status)
    if exc.retry_after_ms is not None:
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after_ms / 1000))
    return response


def _check_size(request: web.Request) -> None:
    if len(request.raw_path) > MAX_URL_BYTES:
        raise ApiError("uri_too_long", f"the request target is over {MAX_URL_BYTES} bytes")
    for name, value in request.raw_headers:
        if len(name) + len(value) > MAX_HEADER_BYTES:
            raise ApiError("headers_too_large",
                           f"a header is over {MAX_HEADER_BYTES} bytes")


@web.middleware
async def errors_and_logs(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the contract's error shape; one log line per request."""
    server: Server = request.app[state.SERVER]
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource \
        else "unmatched"
    try:
        _check_size(request)
        response = await handler(request)
    except ApiError as exc:
        response = api_error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        response = error_response("payload_too_large", "the request body is too large", 413)
    except web.HTTPNotFound:
        response = error_response("not_found", "no such route", 404)
    except web.HTTPMethodNotAllowed as exc:
        response = error_response("method_not_allowed", "method not allowed on this route", 405)
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))  # RFC 9110
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response("invalid_request" if exc.status < 500 else "unavailable",
                                  exc.reason, exc.status)
    except STORAGE_DOWN:
        response = error_response("unavailable", "storage is unavailable; try again", 503)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response("internal", "the server failed to handle this request", 500)
    if route != "/ws":
        server.metrics.request(request.method, route, response.status)
        # The path only: the query string may carry a token and is never logged.
        log.info("request", extra={"fields": {
            "method": request.method, "path": request.path, "status": response.status,
            "ms": round((time.perf_counter() - started) * 1000, 2)}})
    return response


def identity(request: web.Request) -> Identity:
    """The caller, from `Authorization: Bearer <token>`."""
    server: Server = request.app[state.SERVER]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError("unauthorized", "send Authorization: Bearer <token>")
    who = server.verify(token.strip())
    wait = server.http_limiter.take(who.user)
    if wait:
        raise ApiError("rate_limited", "too many requests; retry after retry_after_ms",
                       retry_after_ms(wait))
    return who


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw:  # no body: the route's defaults (whitespace alone is not JSON: refused)
        return {}
    data = parse_json(raw, "the body")
    if not isinstance(data, dict):
        raise ApiError("invalid_request", "the body must be a JSON object")
    return data


def _key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not clean_token(key, KEY_MAX):
        # aiohttp hands a header's non-UTF-8 bytes on as lone surrogates: refused here.
        raise ApiError("invalid_request", f"Idempotency-Key must be 1-{KEY_MAX} characters"
                       " of UTF-8 text without control characters")
    return key


async def _call(request: web.Request, who: Identity, method: str, params: dict[str, Any],
                status: int = 200) -> web.Response:
    server: Server = request.app[state.SERVER]
    result = await server.gateway.call(who, method, params, _key(request))
    return web.Response(text=encode(result), status=status, content_type="application/json")


async def _result(request: web.Request, who: Identity, method: str, params: dict[str, Any]
                  ) -> dict[str, Any]:
    """A method's result as data (for a route that answers in another format)."""
    server: Server = request.app[state.SERVER]
    result = await server.gateway.call(who, method, params, _key(request))
    found: dict[str, Any] = json.loads(encode(result))
    return found


async def healthz(request: web.Request) -> web.Response:
    server: Server = request.app[state.SERVER]
    problems = await server.health()
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    server: Server = request.app[state.SERVER]
    return web.Response(text=await server.render_metrics(),
                        content_type="text/plain", charset="utf-8")


async def campaigns(request: web.Request) -> web.Response:
    server: Server = request.app[state.SERVER]
    return web.json_response({"campaigns": [c.public() for c in server.config.campaigns]})


def _route(method: Method) -> Handler:
    """The HTTP handler of a method with a route: path parameters from the path, the rest
    from the body (POST) or the query string (GET; only the parameters it declares)."""
    assert method.route is not None
    route = method.route

    async def handle(request: web.Request) -> web.Response:
        who = identity(request)  # who asks comes first: a stranger learns nothing of the body
        path = dict(request.match_info)
        if route.verb == "POST":
            params = _merge(await _body(request), **path)
        else:
            params = {**_query(request, method), **path}
        return await _call(request, who, method.name, params, status=route.status)
    return handle


_INT = re.compile(r"-?[0-9]{1,18}")


def _query_int(request: web.Request, name: str) -> int:
    """A query parameter spelled as a plain decimal integer (int() would also read
    `1_0`, `+5`, ` 5` and other scripts' digits)."""
    raw = request.query[name]
    if not _INT.fullmatch(raw):
        raise ApiError("invalid_request", f"{name} must be an integer")
    return int(raw)


def _query(request: web.Request, method: Method) -> dict[str, Any]:
    """The declared parameters a GET carries in its query string."""
    found: dict[str, Any] = {}
    for name, param in method.params.items():
        if name not in request.query:
            continue
        if param.kind is int:
            found[name] = _query_int(request, name)
        else:
            found[name] = request.query[name]
    return found


def _limit(request: web.Request) -> dict[str, Any]:
    if "limit" not in request.query:
        return {}
    return {"limit": _query_int(request, "limit")}


async def orders(request: web.Request) -> web.Response:
    return await _call(request, identity(request), "orders.list", _limit(request))


async def refund_order(request: web.Request) -> web.Response:
    who = identity(request)
    body = await _body(request)
    return await _call(request, who, "orders.refund", _merge(body, order=_path_id(request,
                                                                                 "order")))


async def refund_after_sales(request: web.Request) -> web.Response:
    who = identity(request)
    body = await _body(request)
    return await _call(request, who, "admin.orders.refund",
                       _merge(body, order=_path_id(request, "order")))


def _path_id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not _ID.fullmatch(raw):  # ASCII digits only: str.isdigit() admits '²'
        raise ApiError("invalid_request", f"the {name} id must be a positive integer")
    return int(raw)


async def create_withdrawal(request: web.Request) -> web.Response:
    who = identity(request)
    return await _call(request, who, "withdrawals.create", await _body(request), status=201)


async def list_withdrawals(request: web.Request) -> web.Response:
    return await _call(request, identity(request), "withdrawals.list", _limit(request))


async def tax_report(request: web.Request) -> web.Response:
    """The marketers' tax report: JSON, or CSV with `format=csv` (for a spreadsheet)."""
    who = identity(request)
    params = {"year": _query_int(request, "year")} if "year" in request.query else {}
    as_csv = request.query.get("format") == "csv"
    if "format" in request.query and not as_csv:
        raise ApiError("invalid_request", "format must be csv (or left out for JSON)")
    if not as_csv:
        return await _call(request, who, "admin.tax_report", params)
    report = await _result(request, who, "admin.tax_report", params)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["user", "year", "income_fen", "flagged_at"])
    for row in report["users"]:
        writer.writerow([row["user"], report["year"], row["income"], row["flagged_at"]])
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition":
                                 f'attachment; filename="tax-{report["year"]}.csv"'})


async def my_team(request: web.Request) -> web.Response:
    return await _call(request, identity(request), "team.get", _limit(request))


def _of_user(method: str) -> Handler:
    """A marketer's view of one user's (`/api/admin/users/{user}/...`)."""
    async def view(request: web.Request) -> web.Response:
        who = identity(request)
        return await _call(request, who, method,
                           {"user": request.match_info["user"], **_limit(request)})
    return view


async def quote_withdrawal(request: web.Request) -> web.Response:
    who = identity(request)
    params = {"amount": _query_int(request, "amount")} if "amount" in request.query else {}
    return await _call(request, who, "withdrawals.quote", params)


async def review_list(request: web.Request) -> web.Response:
    who = identity(request)
    params = _limit(request)
    if "status" in request.query:
        params["status"] = request.query["status"]
    return await _call(request, who, "withdrawals.review_list", params)


def _review(method: str) -> Handler:
    """The route that approves or rejects a withdrawal (`method` says which)."""
    async def review(request: web.Request) -> web.Response:
        who = identity(request)
        body = await _body(request)
        return await _call(request, who, method,
                           _merge(body, withdrawal=_path_id(request, "withdrawal")))
    return review


async def bind_referral(request: web.Request) -> web.Response:
    who = identity(request)
    return await _call(request, who, "referrals.bind", await _body(request))


async def get_referral(request: web.Request) -> web.Response:
    return await _call(request, identity(request), "referrals.get", {})


async def commissions(request: web.Request) -> web.Response:
    return await _call(request, identity(request), "commissions.list", _limit(request))


def _merge(body: dict[str, Any], **path: object) -> dict[str, Any]:
    """Path parameters win; a body repeating them with other values is refused."""
    for name, value in path.items():
        if name in body and body[name] != value:
            raise ApiError("invalid_request", f"field {name!r} contradicts the path")
    return {**body, **path}


async def payment_notify(request: web.Request) -> web.Response:
    """A payment provider's notification (signed, never authenticated by token)."""
    server: Server = request.app[state.SERVER]
    body = await request.read()
    await server.paydesk.notify(request.match_info["adapter"], request.headers, body)
    # What WeChat Pay expects of a notification taken (a refusal is a 4xx it resends).
    return web.json_response({"code": "SUCCESS", "message": "成功"})


def routes(app: web.Application) -> None:
    """Register every HTTP route."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/campaigns", campaigns)
    for method in METHODS.values():  # every game's routes, as its methods declare them
        if method.route is not None:
            app.router.add_route(method.route.verb, method.route.path, _route(method))
    app.router.add_post("/api/payments/{adapter}/notify", payment_notify)
    app.router.add_get("/api/orders", orders)
    app.router.add_post("/api/orders/{order}/refund", refund_order)
    app.router.add_get("/api/referrals", get_referral)
    app.router.add_post("/api/referrals", bind_referral)
    app.router.add_get("/api/commissions", commissions)
    app.router.add_get("/api/withdrawals", list_withdrawals)
    app.router.add_get("/api/withdrawals/quote", quote_withdrawal)
    app.router.add_get("/api/team", my_team)
    app.router.add_post("/api/admin/orders/{order}/refund", refund_after_sales)
    app.router.add_get("/api/admin/tax-report", tax_report)
    app.router.add_get("/api/admin/users/{user}/team", _of_user("admin.team"))
    app.router.add_get("/api/admin/users/{user}/commissions", _of_user("admin.commissions"))
    app.router.add_get("/api/admin/users/{user}/referrals", _of_user("admin.referrals"))
    app.router.add_post("/api/withdrawals", create_withdrawal)
    app.router.add_get("/api/admin/withdrawals", review_list)
    app.router.add_post("/api/admin/withdrawals/{withdrawal}/approve",
                        _review("withdrawals.approve"))
    app.router.add_post("/api/admin/withdrawals/{withdrawal}/reject",
                        _review("withdrawals.reject"))
    pages.routes(app)  # the H5 homepage and fission.js (server/pages.py)
