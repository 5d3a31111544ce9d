"""The payment gateway seam: create a payment, refund it, verify its notifications, query it.

A `PaymentGateway` is what a payment provider offers the server for a payment a user
makes (a seat held until paid, a purchase): `create` asks the provider for a payment and
answers what the client needs to pay it, the provider later tells the server the outcome
in a signed notification that `verify` checks and parses, `query` asks for a payment's
state (reconciliation: a lost notification, an expired hold), and `refund` gives money
back, all or part of it. `actors.wechatpay` speaks WeChat Pay v3; `actors.paysandbox`
speaks the same shape and moves no money.

This is not `actors.payments.PaymentAdapter`: that one records, inside the pipeline's
transaction, movements of deals already settled; this one talks to the provider.

Every value here is frozen data, money is integer fen and times are epoch milliseconds.
Requests validate what the provider would refuse (lengths, characters, amounts), so a
bad one fails at once, in our code, with the field named.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from storage.clock import wall

# WeChat Pay's out_trade_no: 6 to 32 of these; out_refund_no adds '@' and allows 64.
PAYMENT_ID = re.compile(r"[A-Za-z0-9_\-|*]{6,32}")
REFUND_ID = re.compile(r"[A-Za-z0-9_\-|*@]{1,64}")

# What a transport answers: HTTP status, response headers, raw body.
Response = tuple[int, Mapping[str, str], bytes]
Transport = Callable[[str, str, Mapping[str, str], bytes], Awaitable[Response]]
"""`(method, url, headers, body) -> (status, headers, body)`: the HTTP client a gateway is
given (aiohttp in the server, a recorded-shape fake in tests), so no gateway opens a
socket of its own and none needs the network to be tested."""


# The one clock (storage.clock), under the name the payment gateways read it by: the wall
# clock unless a gateway is given another.
now_ms = wall


class PaymentStatus(StrEnum):
    """Where a payment stands at the provider."""

    PENDING = "pending"    # created, not paid yet (WeChat NOTPAY, USERPAYING)
    PAID = "paid"          # SUCCESS
    REFUNDED = "refunded"  # REFUND: some or all of it has been refunded
    CLOSED = "closed"      # CLOSED, REVOKED: will never be paid (expired or closed)
    FAILED = "failed"      # PAYERROR


class RefundStatus(StrEnum):
    """Where a refund stands at the provider."""

    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    CLOSED = "closed"
    ABNORMAL = "abnormal"  # the money could not reach the payer; needs an operator


class Refusal(StrEnum):
    """Why a notification was refused (checked in this order)."""

    TOO_LARGE = "too_large"            # body over the size limit (checked before any crypto)
    BAD_HEADER = "bad_header"          # a Wechatpay-* header missing, empty or malformed
    UNKNOWN_SERIAL = "unknown_serial"  # signed by a platform key we do not hold
    STALE = "stale"                    # timestamp outside the window (old or ahead)
    BAD_SIGNATURE = "bad_signature"    # the signature does not verify over the message
    MALFORMED = "malformed"            # not UTF-8, not JSON, or not the documented shape
    UNSUPPORTED = "unsupported"        # an algorithm, event or state this code does not know
    UNDECRYPTABLE = "undecryptable"    # the resource fails AES-GCM (wrong key, tampered)
    WRONG_MERCHANT = "wrong_merchant"  # authentic, but for another merchant or app


class NotificationRefused(Exception):
    """A notification (or a provider's response) that must not be believed."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PaymentError(Exception):
    """The provider refused a request or answered something we cannot trust."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class PaymentNotFound(PaymentError):
    """The provider has no payment with that id (never created, or created elsewhere)."""


def _text(name: str, value: str, low: int, high: int) -> None:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise ValueError(f"{name} must be a string of {low} to {high} characters")


def _fen(name: str, value: int, low: int) -> None:
    # bool is an int to Python; a True amount is a bug, not one fen.
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer number of fen >= {low}")


@dataclass(frozen=True)
class PaymentRequest:
    """A payment to create.

    `payment_id` is the provider's out_trade_no, derived by the caller from what is paid
    (the campaign, instance and line), so asking twice asks for the same payment.
    """

    payment_id: str
    user: str          # the payer's openid
    amount: int        # fen
    description: str
    expires_at: int    # epoch ms; the provider closes the payment then

    def __post_init__(self) -> None:
        if not isinstance(self.payment_id, str) or not PAYMENT_ID.fullmatch(self.payment_id):
            raise ValueError("payment_id must be 6 to 32 of A-Z a-z 0-9 _ - | *")
        _text("user", self.user, 1, 128)
        _fen("amount", self.amount, 1)
        _text("description", self.description, 1, 127)
        _fen("expires_at", self.expires_at, 1)


@dataclass(frozen=True)
class ClientParams:
    """What the client needs to pay: WeChat JSAPI / mini-program `requestPayment`'s
    arguments. `pay_sign` is RSA-SHA256 over "appId\\ntimeStamp\\nnonceStr\\npackage\\n"
    with the merchant's key, base64."""

    app_id: str
    time_stamp: str   # epoch seconds, as a string
    nonce_str: str
    package: str      # "prepay_id=..."
    sign_type: str    # "RSA"
    pay_sign: str

    def wire(self) -> dict[str, str]:
        """The parameters under the names the client's `requestPayment` takes."""
        return {"appId": self.app_id, "timeStamp": self.time_stamp,
                "nonceStr": self.nonce_str, "package": self.package,
                "signType": self.sign_type, "paySign": self.pay_sign}


@dataclass(frozen=True)
class Notification:
    """A verified, decrypted notification.

    A payment notification has `paid_at`; a refund notification has `refund_id`,
    `refund_amount`, `refund_status` and `refunded_at`, and `status` is the payment's
    after it (REFUNDED if the refund succeeded, PAID if it was closed or abnormal).
    `notification_id` is the provider's id of the event, the same on every redelivery.
    """

    notification_id: str
    event_type: str              # e.g. TRANSACTION.SUCCESS, REFUND.SUCCESS
    payment_id: str
    status: PaymentStatus
    amount: int                  # the payment's total, fen
    transaction_id: str
    payer: str | None = None
    paid_at: int | None = None
    refund_id: str | None = None  # our out_refund_no
    refund_amount: int = 0
    refund_status: RefundStatus | None = None
    refunded_at: int | None = None


@dataclass(frozen=True)
class RefundRequest:
    """A refund of `amount` of a payment of `total` (both fen): full when they are equal.

    `refund_id` is the provider's out_refund_no, derived by the caller from what is
    refunded, so asking twice refunds once.
    """

    payment_id: str
    refund_id: str
    amount: int
    total: int
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.payment_id, str) or not PAYMENT_ID.fullmatch(self.payment_id):
            raise ValueError("payment_id must be 6 to 32 of A-Z a-z 0-9 _ - | *")
        if not isinstance(self.refund_id, str) or not REFUND_ID.fullmatch(self.refund_id):
            raise ValueError("refund_id must be 1 to 64 of A-Z a-z 0-9 _ - | * @")
        _fen("total", self.total, 1)
        _fen("amount", self.amount, 1)
        if self.amount > self.total:
            raise ValueError("a refund's amount cannot exceed the payment's total")
        _text("reason", self.reason, 0, 80)

    @property
    def full(self) -> bool:
        """Whether this refunds the whole payment."""
        return self.amount == self.total


@dataclass(frozen=True)
class RefundResult:
    """The provider's answer to a refund: accepted as `status` (often PROCESSING; the
    outcome then arrives as a refund notification)."""

    refund_id: str            # ours (out_refund_no)
    provider_refund_id: str   # the provider's
    payment_id: str
    status: RefundStatus
    amount: int
    total: int
    refunded_at: int | None = None


@dataclass(frozen=True)
class PaymentState:
    """A payment as the provider knows it now (the answer of a reconciliation query)."""

    payment_id: str
    status: PaymentStatus
    amount: int
    transaction_id: str | None = None
    payer: str | None = None
    paid_at: int | None = None


class PaymentGateway(Protocol):
    """A payment provider, as the server uses it.

    `create`, `refund` and `query` talk to the provider (through an injected transport)
    and raise `PaymentError` when it refuses or answers something unsigned; transport
    errors propagate, and every request is idempotent by its ids, so the caller retries.
    `verify` is pure: it checks and parses a notification's headers and raw body at
    `now` (epoch ms), raising `NotificationRefused`. Dedupe is the caller's: the same
    notification verifies to equal values every time it is delivered.
    """

    name: str

    async def create(self, request: PaymentRequest) -> ClientParams:
        """Create the payment at the provider; what the client needs to pay it."""
        ...

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund all or part of a paid payment."""
        ...

    def verify(self, headers: Mapping[str, str], body: bytes, now: int) -> Notification:
        """The notification `headers` and `body` carry, if authentic and fresh at `now`."""
        ...

    async def query(self, payment_id: str) -> PaymentState:
        """The payment's state at the provider (`PaymentNotFound` if it has none)."""
        ...
