"""The WeChat Pay v3 gateway for JSAPI / mini-program payments.

`create` calls the JSAPI prepay API and signs the client's `requestPayment` parameters;
`refund` calls the domestic refunds API; `query` reads a payment by out_trade_no; `verify`
checks a notification (`actors.paynotify`). Every request is signed with the merchant's
API key (`Authorization: WECHATPAY2-SHA256-RSA2048 ...`), every 2xx response must carry
a valid platform signature (the v3 rules treat an unsigned success as forged), and the
HTTP client is injected, so this module opens no socket and its tests need no network.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric import rsa

from actors import paysign
from actors.paygate import (
    ClientParams,
    Notification,
    NotificationRefused,
    PaymentError,
    PaymentNotFound,
    PaymentRequest,
    PaymentState,
    RefundRequest,
    RefundResult,
    Transport,
    now_ms,
)
from actors.paynotify import (
    DEFAULT_WINDOW_S,
    REFUND_STATES,
    NotifyVerifier,
    ShapeError,
    epoch_ms,
    payment_state,
)
from storage.clock import Clock

BASE_URL = "https://api.mch.weixin.qq.com"
PREPAY = "/v3/pay/transactions/jsapi"
REFUNDS = "/v3/refund/domestic/refunds"
BY_OUT_TRADE_NO = "/v3/pay/transactions/out-trade-no/"
CURRENCY = "CNY"
# time_expire is written in China Standard Time, as the API's examples are.
CHINA = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class WechatPayConfig:
    """A merchant's v3 credentials and where notifications go.

    `merchant_serial` is the serial of the merchant API certificate whose key signs our
    requests; `platform_keys` are the platform certificates' (or WeChat Pay public key's)
    keys by serial, which sign notifications and responses; `api_v3_key` is the 32-byte
    key resources are encrypted with. Keys are kept out of `repr`.
    """

    mchid: str
    appid: str
    merchant_serial: str
    merchant_key: rsa.RSAPrivateKey = field(repr=False)
    api_v3_key: bytes = field(repr=False)
    platform_keys: Mapping[str, rsa.RSAPublicKey] = field(repr=False)
    notify_url: str
    refund_notify_url: str | None = None   # the payment's notify_url when None
    base_url: str = BASE_URL
    window_s: int = DEFAULT_WINDOW_S


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(status: int, body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        raise PaymentError(status, "MALFORMED_RESPONSE", "the answer is not a JSON object")
    return answer


def _refused(status: int, body: bytes) -> PaymentError:
    """The error a non-2xx answer carries (`{"code": ..., "message": ...}` when it does)."""
    try:
        answer = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        answer = None
    code, message = "HTTP_ERROR", f"HTTP {status}"
    if isinstance(answer, dict):
        code = str(answer.get("code", code))[:64]
        message = str(answer.get("message", message))[:256]
    error = PaymentNotFound if status == 404 else PaymentError
    return error(status, code, message)


class WechatPay:
    """WeChat Pay v3, JSAPI: a `PaymentGateway` over an injected `Transport`."""

    name = "wechatpay"

    def __init__(self, config: WechatPayConfig, transport: Transport, *,
                 clock: Clock = now_ms,
                 nonces: Callable[[], str] = paysign.random_nonce) -> None:
        self.config = config
        self._transport = transport
        self._clock = clock
        self._nonces = nonces
        self._verifier = NotifyVerifier(config.platform_keys, config.api_v3_key,
                                        mchid=config.mchid, appid=config.appid,
                                        window_s=config.window_s)

    async def _call(self, method: str, path: str,
                    payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send a signed request; the authenticated JSON answer, or `PaymentError`."""
        cfg = self.config
        body = b"" if payload is None else _encode(payload)
        timestamp, nonce = str(self._clock() // 1000), self._nonces()
        headers = {
            "Authorization": paysign.authorization(cfg.mchid, cfg.merchant_serial,
                                                   cfg.merchant_key, method, path, body,
                                                   timestamp, nonce),
            "Accept": "application/json",
            "User-Agent": "fission-wechatpay/1",
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        status, answer_headers, answer = await self._transport(
            method, cfg.base_url + path, headers, body)
        if not 200 <= status < 300:
            raise _refused(status, answer)
        try:
            self._verifier.authenticate(answer_headers, answer, self._clock())
        except NotificationRefused as refused:
            raise PaymentError(status, "UNTRUSTED_RESPONSE", str(refused)) from None
        return _decode(status, answer)

    async def create(self, request: PaymentRequest) -> ClientParams:
        """Prepay at WeChat (idempotent by out_trade_no); the signed client parameters."""
        cfg = self.config
        # Seconds, rounded down: WeChat stops taking the payment no later than our hold.
        expires = datetime.fromtimestamp(request.expires_at // 1000, CHINA)
        answer = await self._call("POST", PREPAY, {
            "appid": cfg.appid, "mchid": cfg.mchid, "description": request.description,
            "out_trade_no": request.payment_id,
            "time_expire": expires.isoformat(timespec="seconds"),
            "notify_url": cfg.notify_url,
            "amount": {"total": request.amount, "currency": CURRENCY},
            "payer": {"openid": request.user},
        })
        prepay_id = answer.get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise PaymentError(200, "MALFORMED_RESPONSE", "no prepay_id in the answer")
        time_stamp, nonce_str = str(self._clock() // 1000), self._nonces()
        package = f"prepay_id={prepay_id}"
        return ClientParams(
            app_id=cfg.appid, time_stamp=time_stamp, nonce_str=nonce_str, package=package,
            sign_type="RSA",
            pay_sign=paysign.pay_sign(cfg.merchant_key, cfg.appid, time_stamp, nonce_str,
                                      package))

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Ask for a refund of all or part of a payment (idempotent by out_refund_no)."""
        cfg = self.config
        payload: dict[str, Any] = {
            "out_trade_no": request.payment_id, "out_refund_no": request.refund_id,
            "notify_url": cfg.refund_notify_url or cfg.notify_url,
            "amount": {"refund": request.amount, "total": request.total,
                       "currency": CURRENCY},
        }
        if request.reason:
            payload["reason"] = request.reason
        answer = await self._call("POST", REFUNDS, payload)
        try:
            return self._refund_result(request, answer)
        except ShapeError as bad:
            raise PaymentError(200, "MALFORMED_RESPONSE", f"refund answer: {bad}") from None

    @staticmethod
    def _refund_result(request: RefundRequest, answer: Mapping[str, Any]) -> RefundResult:
        raw_status, amount = answer.get("status"), answer.get("amount")
        status = REFUND_STATES.get(raw_status) if isinstance(raw_status, str) else None
        provider_id = answer.get("refund_id")
        if (status is None or not isinstance(provider_id, str) or not provider_id
                or not isinstance(amount, dict)
                or answer.get("out_refund_no") != request.refund_id
                or amount.get("refund") != request.amount
                or amount.get("total") != request.total):
            raise ShapeError("it does not answer the refund asked for")
        success_time = answer.get("success_time")
        return RefundResult(
            refund_id=request.refund_id, provider_refund_id=provider_id,
            payment_id=request.payment_id, status=status, amount=request.amount,
            total=request.total,
            refunded_at=epoch_ms(success_time) if isinstance(success_time, str) else None)

    async def query(self, payment_id: str) -> PaymentState:
        """The payment's state at WeChat (`PaymentNotFound` if it was never created)."""
        cfg = self.config
        path = (f"{BY_OUT_TRADE_NO}{quote(payment_id, safe='')}"
                f"?mchid={quote(cfg.mchid, safe='')}")
        answer = await self._call("GET", path)
        if answer.get("mchid") != cfg.mchid or answer.get("out_trade_no") != payment_id:
            raise PaymentError(200, "MALFORMED_RESPONSE", "the answer is another payment's")
        try:
            return payment_state(answer)
        except ShapeError as bad:
            raise PaymentError(200, "MALFORMED_RESPONSE", str(bad)) from None

    def verify(self, headers: Mapping[str, str], body: bytes, now: int) -> Notification:
        """The notification `headers` and raw `body` carry (see `actors.paynotify`)."""
        return self._verifier.verify(headers, body, now)
