"""The sandbox gateway: WeChat Pay v3's shapes with keys of its own, and no money.

It plays both sides. As the merchant it answers `create` with client parameters signed
like WeChat's (paySign over its own key); as the platform it builds the notifications
WeChat would send — the same envelope, the resource encrypted with AES-256-GCM under its
API v3 key, the body signed with its RSA key under its serial — which the server delivers
to its own notify route, where `verify` checks them through the very code that checks
WeChat's (`actors.paynotify`). So everything downstream of the notify route runs as it
would in production, and the sandbox only decides *when* a payment is paid.

What it has created, announced and refunded is remembered in this process only: it is
what `query` answers from, and a payment it does not know is `PaymentNotFound`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from actors import paysign
from actors.paygate import (
    ClientParams,
    Notification,
    PaymentError,
    PaymentNotFound,
    PaymentRequest,
    PaymentState,
    PaymentStatus,
    RefundRequest,
    RefundResult,
    RefundStatus,
    now_ms,
)
from actors.paynotify import DEFAULT_WINDOW_S, NotifyVerifier
from actors.wechatpay import CHINA, CURRENCY
from storage.clock import Clock

APPID = "wxsandbox"
MCHID = "sandbox"
_REFUND_EVENTS = {RefundStatus.SUCCEEDED: "REFUND.SUCCESS",
                  RefundStatus.CLOSED: "REFUND.CLOSED",
                  RefundStatus.ABNORMAL: "REFUND.ABNORMAL"}
_REFUND_STATES = {RefundStatus.SUCCEEDED: "SUCCESS", RefundStatus.CLOSED: "CLOSED",
                  RefundStatus.ABNORMAL: "ABNORMAL"}


def _digits(kind: str, key: str, length: int) -> str:
    """A stable decimal id (WeChat's ids are digits) derived from `key`."""
    number = int(hashlib.sha256(f"{kind}|{key}".encode()).hexdigest(), 16)
    return str(number)[:length]


def transaction_no(payment_id: str) -> str:
    return f"42{_digits('transaction', payment_id, 26)}"


def refund_no(refund_id: str) -> str:
    return f"50{_digits('refund', refund_id, 27)}"


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, CHINA).isoformat(timespec="seconds")


@dataclass
class _Record:
    state: PaymentState
    expires_at: int | None = None
    refunds: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PaidAsk:
    """One payment to render the TRANSACTION.SUCCESS notification of: `payment_id` paid
    `amount` fen by `payer` at `at`, signed at `now` (both epoch ms)."""

    payment_id: str
    amount: int
    now: int
    at: int
    payer: str


class SandboxGateway:
    """A `PaymentGateway` that moves no money and signs its own notifications.

    `key` (RSA, 2048 bits or more) and `api_v3_key` (32 bytes) are generated when not
    given; give the same ones to every process that must verify what this one signs.
    """

    name = "sandbox"

    def __init__(self, *, key: rsa.RSAPrivateKey | None = None,
                 api_v3_key: bytes | None = None, clock: Clock = now_ms,
                 window_s: int = DEFAULT_WINDOW_S, appid: str = APPID,
                 mchid: str = MCHID) -> None:
        self._key = key if key is not None else rsa.generate_private_key(65537, 2048)
        self.api_v3_key = paysign.check_api_v3_key(
            api_v3_key if api_v3_key is not None else paysign.random_nonce(32).encode())
        self.serial = paysign.public_serial(self._key.public_key())
        self.appid, self.mchid = appid, mchid
        self._clock = clock
        self._verifier = NotifyVerifier({self.serial: self._key.public_key()},
                                        self.api_v3_key, mchid=mchid, appid=appid,
                                        window_s=window_s)
        self._payments: dict[str, _Record] = {}

    def key_pem(self) -> bytes:
        """Its signing key as PKCS#8 PEM, for another process to sign with the same key
        (`actors.sandbox_signer`)."""
        return self._key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The key its notifications and client parameters are signed with."""
        return self._key.public_key()

    async def create(self, request: PaymentRequest) -> ClientParams:
        """Client parameters for `request`, signed like WeChat's; nothing remote."""
        known = self._payments.get(request.payment_id)
        if known is not None and (known.state.amount, known.state.payer) != (
                request.amount, request.user):
            # WeChat refuses an out_trade_no reused for another payment; so does this.
            raise PaymentError(400, "OUT_TRADE_NO_USED",
                               f"payment {request.payment_id} was created otherwise")
        if known is None:
            self._payments[request.payment_id] = _Record(
                PaymentState(request.payment_id, PaymentStatus.PENDING, request.amount,
                             payer=request.user),
                expires_at=request.expires_at)
        return self.client_params(request.payment_id)

    def client_params(self, payment_id: str) -> ClientParams:
        """What the client needs to pay `payment_id`, signed with this sandbox's key."""
        # The same payment gets the same prepay id, as WeChat's does for the same order.
        package = f"prepay_id=sbx{_digits('prepay', payment_id, 29)}"
        time_stamp, nonce_str = str(self._clock() // 1000), paysign.random_nonce()
        return ClientParams(
            app_id=self.appid, time_stamp=time_stamp, nonce_str=nonce_str, package=package,
            sign_type="RSA",
            pay_sign=paysign.pay_sign(self._key, self.appid, time_stamp, nonce_str, package))

    def pay(self, payment_id: str, now: int | None = None) -> tuple[dict[str, str], bytes]:
        """Pay a payment this sandbox created: the TRANSACTION.SUCCESS notification to
        deliver (the same notification again once it is paid, or refunded: a late
        redelivery, as WeChat may make)."""
        record = self._payments.get(payment_id)
        if record is None:
            raise PaymentNotFound(404, "ORDER_NOT_EXIST", f"no payment {payment_id}")
        now = self._clock() if now is None else now
        state = self._expire(record, now)
        if state.status not in (PaymentStatus.PENDING, PaymentStatus.PAID,
                                PaymentStatus.REFUNDED):
            raise PaymentError(400, "ORDER_CLOSED", f"payment {payment_id} is {state.status}")
        return self.notification(payment_id, PaymentStatus.PAID, state.amount, now=now,
                                 at=state.paid_at, payer=state.payer)

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Accept the refund at once (SUCCEEDED). The refund notification is the
        caller's to deliver: `notification(..., PaymentStatus.REFUNDED, ...)`."""
        record = self._payments.get(request.payment_id)
        if record is not None and request.refund_id not in record.refunds:
            if record.state.status not in (PaymentStatus.PAID, PaymentStatus.REFUNDED):
                raise PaymentError(400, "INVALID_REQUEST",
                                   f"payment {request.payment_id} is {record.state.status}")
            if sum(record.refunds.values()) + request.amount > record.state.amount:
                raise PaymentError(400, "INVALID_REQUEST", "refunds exceed the payment")
            record.refunds[request.refund_id] = request.amount
        return RefundResult(
            refund_id=request.refund_id,
            provider_refund_id=refund_no(request.refund_id),
            payment_id=request.payment_id, status=RefundStatus.SUCCEEDED,
            amount=request.amount, total=request.total, refunded_at=self._clock())

    def notification(self, payment_id: str, status: PaymentStatus, amount: int, *,
                     now: int | None = None, at: int | None = None,
                     payer: str | None = None,
                     refund_id: str | None = None, refund_amount: int | None = None,
                     refund_status: RefundStatus = RefundStatus.SUCCEEDED,
                     ) -> tuple[dict[str, str], bytes]:
        """The headers and body of the notification WeChat would send.

        `status` PAID is a payment's TRANSACTION.SUCCESS; REFUNDED is a refund's
        notification (of `refund_amount`, the whole `amount` by default; REFUND.SUCCESS,
        or REFUND.CLOSED / REFUND.ABNORMAL by `refund_status`). WeChat sends no others.
        It is signed at `now` and says the event happened `at` (both epoch ms, `now` by
        default). The same event always has the same notification id, as WeChat's
        redeliveries do.
        """
        now = self._clock() if now is None else now
        at = now if at is None else at
        signed = self.render(payment_id, status, amount, now=now, at=at, payer=payer,
                             refund_id=refund_id, refund_amount=refund_amount,
                             refund_status=refund_status)
        self._announced(payment_id, status, amount, at, payer, refund_id, refund_amount,
                        refund_status)
        return signed

    def render(self, payment_id: str, status: PaymentStatus, amount: int, *, now: int,
               at: int, payer: str | None = None, refund_id: str | None = None,
               refund_amount: int | None = None,
               refund_status: RefundStatus = RefundStatus.SUCCEEDED,
               ) -> tuple[dict[str, str], bytes]:
        """`notification`'s headers and body, remembering nothing (for a sandbox whose
        books are kept elsewhere, such as `actors.sandbox_books`)."""
        transaction_id = transaction_no(payment_id)
        if status is PaymentStatus.PAID:
            event, original = "TRANSACTION.SUCCESS", "transaction"
            resource: dict[str, object] = {
                "mchid": self.mchid, "appid": self.appid, "out_trade_no": payment_id,
                "transaction_id": transaction_id, "trade_type": "JSAPI",
                "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
                "bank_type": "OTHERS", "attach": "", "success_time": _rfc3339(at),
                **({} if payer is None else {"payer": {"openid": payer}}),
                "amount": {"total": amount, "payer_total": amount, "currency": CURRENCY,
                           "payer_currency": CURRENCY},
            }
            key = f"{payment_id}|{event}"
        elif status is PaymentStatus.REFUNDED:
            if refund_id is None or refund_status not in _REFUND_EVENTS:
                raise ValueError("a refund notification needs refund_id and a final status")
            refunded = amount if refund_amount is None else refund_amount
            event, original = _REFUND_EVENTS[refund_status], "refund"
            resource = {
                "mchid": self.mchid, "out_trade_no": payment_id,
                "transaction_id": transaction_id, "out_refund_no": refund_id,
                "refund_id": refund_no(refund_id),
                "refund_status": _REFUND_STATES[refund_status],
                "success_time": _rfc3339(at), "user_received_account": "支付用户零钱",
                "amount": {"total": amount, "refund": refunded, "payer_total": amount,
                           "payer_refund": refunded},
            }
            key = f"{payment_id}|{event}|{refund_id}"
        else:
            raise ValueError(f"WeChat sends no notification for {status}")
        return self.sign(self._envelope(key, event, original, resource, now), now)

    def render_paid(self, ask: PaidAsk) -> tuple[dict[str, str], bytes]:
        """The TRANSACTION.SUCCESS notification of `ask`, remembering nothing."""
        return self.render(ask.payment_id, PaymentStatus.PAID, ask.amount, now=ask.now,
                           at=ask.at, payer=ask.payer)

    def _envelope(self, key: str, event: str, original: str, resource: dict[str, object],
                  now: int) -> bytes:
        nonce = paysign.random_nonce(paysign.GCM_NONCE_BYTES)
        plaintext = json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode()
        envelope = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fission-sandbox:{key}")),
            "create_time": _rfc3339(now), "resource_type": "encrypt-resource",
            "event_type": event,
            "summary": "支付成功" if original == "transaction" else "退款状态变更",
            "resource": {"original_type": original, "algorithm": paysign.ALGORITHM,
                         "ciphertext": paysign.encrypt(self.api_v3_key, plaintext, nonce,
                                                       original),
                         "associated_data": original, "nonce": nonce},
        }
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()

    def sign(self, body: bytes, now: int) -> tuple[dict[str, str], bytes]:
        """`body` with the Wechatpay-* headers that sign it at `now` (epoch ms)."""
        timestamp, nonce = str(now // 1000), paysign.random_nonce()
        signature = paysign.sign(self._key, paysign.message(timestamp.encode(),
                                                            nonce.encode(), body))
        return {"Wechatpay-Timestamp": timestamp, "Wechatpay-Nonce": nonce,
                "Wechatpay-Serial": self.serial, "Wechatpay-Signature": signature,
                "Wechatpay-Signature-Type": paysign.SCHEMA}, body

    def _announced(self, payment_id: str, status: PaymentStatus, amount: int, at: int,
                   payer: str | None, refund_id: str | None, refund_amount: int | None,
                   refund_status: RefundStatus) -> None:
        """Remember what a notification said happened, for `query`."""
        record = self._payments.setdefault(
            payment_id, _Record(PaymentState(payment_id, PaymentStatus.PENDING, amount,
                                             payer=payer)))
        state = record.state
        transaction_id = transaction_no(payment_id)
        if status is PaymentStatus.PAID and state.status is PaymentStatus.PENDING:
            record.state = replace(state, status=PaymentStatus.PAID,
                                   transaction_id=transaction_id,
                                   paid_at=at // 1000 * 1000)  # as success_time says it
        elif status is PaymentStatus.REFUNDED and refund_status is RefundStatus.SUCCEEDED:
            assert refund_id is not None
            record.refunds.setdefault(refund_id, amount if refund_amount is None
                                      else refund_amount)
            record.state = replace(state, status=PaymentStatus.REFUNDED,
                                   transaction_id=transaction_id)

    def _expire(self, record: _Record, now: int) -> PaymentState:
        # WeChat closes an unpaid payment at its time_expire; so does the sandbox.
        if (record.state.status is PaymentStatus.PENDING and record.expires_at is not None
                and now >= record.expires_at):
            record.state = replace(record.state, status=PaymentStatus.CLOSED)
        return record.state

    def verify(self, headers: Mapping[str, str], body: bytes, now: int) -> Notification:
        """A notification this sandbox signed, checked exactly as WeChat's are."""
        return self._verifier.verify(headers, body, now)

    async def query(self, payment_id: str) -> PaymentState:
        """What this sandbox has created and announced for `payment_id`."""
        record = self._payments.get(payment_id)
        if record is None:
            raise PaymentNotFound(404, "ORDER_NOT_EXIST", f"no payment {payment_id}")
        return self._expire(record, self._clock())
