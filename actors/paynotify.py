"""Verifying WeChat-Pay-v3-shaped notifications, and reading the JSON they carry.

A notification is believed only after every check, in this order (the cheap ones first,
so a flood of junk costs no RSA): the body's size; the `Wechatpay-Timestamp`, `-Nonce`,
`-Serial` and `-Signature` headers present and well formed; the serial one of the
platform keys we hold; the timestamp within the window of `now`; the signature, RSA-SHA256
over "timestamp\\nnonce\\nbody\\n" on the raw body bytes; then the body, UTF-8 JSON of the
documented envelope; then its `resource`, decrypted with AES-256-GCM under the API v3
key; then the transaction or refund inside it, for our merchant. Any failure raises
`NotificationRefused` with its `Refusal` and is logged.

Provider responses are signed the same way (`authenticate` checks them), and a query
answers the same transaction JSON in the clear (`payment_state` reads it).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from actors import paysign
from actors.paygate import (
    PAYMENT_ID,
    REFUND_ID,
    Notification,
    NotificationRefused,
    PaymentState,
    PaymentStatus,
    RefundStatus,
    Refusal,
)

log = logging.getLogger("fission.payments")

TIMESTAMP = "wechatpay-timestamp"
NONCE = "wechatpay-nonce"
SERIAL = "wechatpay-serial"
SIGNATURE = "wechatpay-signature"
SIGNATURE_TYPE = "wechatpay-signature-type"

DEFAULT_WINDOW_S = 300
DEFAULT_MAX_BODY = 64 * 1024   # a real notification is about 1 KB
MAX_SIGNATURE = 1024           # base64 of a 4096-bit signature is 684 characters
MAX_FEN = 2**63 - 1            # what the database's bigint holds

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Printable ASCII without spaces: were a newline allowed in the nonce, bytes could move
# between it and the body without changing the signed message.
_TOKEN = re.compile(r"[\x21-\x7e]{1,128}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

TRADE_STATES: dict[str, PaymentStatus] = {
    "SUCCESS": PaymentStatus.PAID, "REFUND": PaymentStatus.REFUNDED,
    "NOTPAY": PaymentStatus.PENDING, "USERPAYING": PaymentStatus.PENDING,
    "CLOSED": PaymentStatus.CLOSED, "REVOKED": PaymentStatus.CLOSED,
    "PAYERROR": PaymentStatus.FAILED,
}
REFUND_STATES: dict[str, RefundStatus] = {
    "SUCCESS": RefundStatus.SUCCEEDED, "CLOSED": RefundStatus.CLOSED,
    "PROCESSING": RefundStatus.PROCESSING, "ABNORMAL": RefundStatus.ABNORMAL,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ShapeError(ValueError):
    """JSON that is not the documented shape (`unsupported`: shaped right, but a value
    this code does not know)."""

    def __init__(self, detail: str, *, unsupported: bool = False) -> None:
        super().__init__(detail)
        self.unsupported = unsupported


def _get(obj: Mapping[str, Any], name: str, kind: type, where: str, *,
         required: bool = True) -> Any:
    value = obj.get(name)
    if value is None and not required:
        return None
    # bool is an int to Python; JSON's true is not an amount.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ShapeError(f"{where}.{name} must be a {kind.__name__}")
    return value


def _text(obj: Mapping[str, Any], name: str, where: str, *, required: bool = True,
          pattern: re.Pattern[str] = _TOKEN) -> Any:
    value = _get(obj, name, str, where, required=required)
    if value is not None and not pattern.fullmatch(value):
        raise ShapeError(f"{where}.{name} is not a valid value")
    return value


def _fen(obj: Mapping[str, Any], name: str, where: str) -> int:
    value: int = _get(obj, name, int, where)
    if not 0 <= value <= MAX_FEN:
        raise ShapeError(f"{where}.{name} is out of range")
    return value


def _object(obj: Mapping[str, Any], name: str, where: str, *,
            required: bool = True) -> Mapping[str, Any] | None:
    value: Mapping[str, Any] | None = _get(obj, name, dict, where, required=required)
    return value


def epoch_ms(text: str) -> int:
    """An RFC 3339 time with its offset ("2018-06-08T10:34:56+08:00") in epoch ms."""
    if len(text) > 40:
        raise ShapeError("time too long")
    try:
        when = datetime.fromisoformat(text)
        aware = when.utcoffset() is not None
        ms = (when - _EPOCH) // timedelta(milliseconds=1) if aware else None
    except (ValueError, OverflowError):
        raise ShapeError(f"not an RFC 3339 time: {text[:40]!r}") from None
    if ms is None:
        raise ShapeError("time without an offset")
    return ms


def _time(obj: Mapping[str, Any], name: str, where: str) -> int | None:
    text = _get(obj, name, str, where, required=False)
    return None if text is None else epoch_ms(text)


def _merchant(obj: Mapping[str, Any], mchid: str | None, appid: str | None,
              where: str) -> None:
    if mchid is not None and obj.get("mchid") != mchid:
        raise NotificationRefused(Refusal.WRONG_MERCHANT, f"{where} is for another merchant")
    if appid is not None and "appid" in obj and obj.get("appid") != appid:
        raise NotificationRefused(Refusal.WRONG_MERCHANT, f"{where} is for another app")


def payment_state(obj: Mapping[str, Any], *, need_transaction: bool = False) -> PaymentState:
    """A transaction's JSON (a query's answer, a payment notification's resource)."""
    where = "transaction"
    state = _text(obj, "trade_state", where)
    if state not in TRADE_STATES:
        raise ShapeError(f"unknown trade_state {state[:32]!r}", unsupported=True)
    amount = _object(obj, "amount", where)
    assert amount is not None
    payer = _object(obj, "payer", where, required=False)
    return PaymentState(
        payment_id=_text(obj, "out_trade_no", where, pattern=PAYMENT_ID),
        status=TRADE_STATES[state],
        amount=_fen(amount, "total", f"{where}.amount"),
        transaction_id=_text(obj, "transaction_id", where, required=need_transaction),
        payer=None if payer is None else _text(payer, "openid", f"{where}.payer",
                                               required=False),
        paid_at=_time(obj, "success_time", where),
    )


def _refund(obj: Mapping[str, Any], notification_id: str, event_type: str) -> Notification:
    where = "refund"
    state = _text(obj, "refund_status", where)
    if state not in REFUND_STATES:
        raise ShapeError(f"unknown refund_status {state[:32]!r}", unsupported=True)
    amount = _object(obj, "amount", where)
    assert amount is not None
    total = _fen(amount, "total", f"{where}.amount")
    refund = _fen(amount, "refund", f"{where}.amount")
    if refund > total:
        raise ShapeError("refund.amount.refund exceeds the total")
    status = REFUND_STATES[state]
    return Notification(
        notification_id=notification_id, event_type=event_type,
        payment_id=_text(obj, "out_trade_no", where, pattern=PAYMENT_ID),
        # A refund that did not go through leaves the payment paid.
        status=PaymentStatus.REFUNDED if status is RefundStatus.SUCCEEDED
        else PaymentStatus.PAID,
        amount=total,
        transaction_id=_text(obj, "transaction_id", where),
        refund_id=_text(obj, "out_refund_no", where, pattern=REFUND_ID),
        refund_amount=refund, refund_status=status,
        refunded_at=_time(obj, "success_time", where),
    )


class NotifyVerifier:
    """Checks notifications (and responses) signed by the platform keys, by serial, and
    decrypts their resources with the API v3 key."""

    def __init__(self, platform_keys: Mapping[str, rsa.RSAPublicKey], api_v3_key: bytes, *,
                 mchid: str | None = None, appid: str | None = None,
                 window_s: int = DEFAULT_WINDOW_S, max_body: int = DEFAULT_MAX_BODY) -> None:
        if not platform_keys:
            raise ValueError("at least one platform key is needed")
        self._keys = dict(platform_keys)
        self._api_v3_key = paysign.check_api_v3_key(api_v3_key)
        self._mchid = mchid
        self._appid = appid
        self.window_s = window_s
        self.max_body = max_body

    @property
    def serials(self) -> frozenset[str]:
        """The serials of the platform keys held."""
        return frozenset(self._keys)

    def authenticate(self, headers: Mapping[str, str], body: bytes, now: int) -> None:
        """Check that `body` is signed by a platform key, at a time within the window of
        `now` (epoch ms); raises `NotificationRefused`."""
        if len(body) > self.max_body:
            raise NotificationRefused(Refusal.TOO_LARGE,
                                      f"{len(body)} bytes, over {self.max_body}")
        found = {str(name).lower(): value for name, value in headers.items()}

        def header(name: str, pattern: re.Pattern[str], limit: int = 128) -> str:
            value = found.get(name)
            if not isinstance(value, str) or not value:
                raise NotificationRefused(Refusal.BAD_HEADER, f"{name} missing")
            if len(value) > limit or not pattern.fullmatch(value):
                raise NotificationRefused(Refusal.BAD_HEADER, f"{name} malformed")
            return value

        timestamp = header(TIMESTAMP, _TIMESTAMP)
        nonce = header(NONCE, _TOKEN)
        serial = header(SERIAL, _TOKEN)
        signature = header(SIGNATURE, _BASE64, MAX_SIGNATURE)
        kind = found.get(SIGNATURE_TYPE)
        if kind is not None and kind != paysign.SCHEMA:
            raise NotificationRefused(Refusal.UNSUPPORTED, f"signature type {kind[:40]!r}")
        key = self._keys.get(serial)
        if key is None:
            raise NotificationRefused(Refusal.UNKNOWN_SERIAL, f"serial {serial[:40]!r}")
        skew = int(timestamp) - now // 1000
        if abs(skew) > self.window_s:
            raise NotificationRefused(
                Refusal.STALE, f"{-skew} s old" if skew < 0 else f"{skew} s ahead")
        signed = paysign.message(timestamp.encode(), nonce.encode(), body)
        if not paysign.verify(key, signed, signature):
            raise NotificationRefused(Refusal.BAD_SIGNATURE, f"not signed by {serial}")

    def verify(self, headers: Mapping[str, str], body: bytes, now: int) -> Notification:
        """The notification `headers` and raw `body` carry, if authentic and fresh at
        `now` (epoch ms); raises `NotificationRefused` (and logs why)."""
        try:
            return self._verify(headers, body, now)
        except NotificationRefused as refused:
            log.warning("payment notification refused: %s (%s)", refused.reason,
                        refused.detail)
            raise

    def _verify(self, headers: Mapping[str, str], body: bytes, now: int) -> Notification:
        self.authenticate(headers, body, now)
        try:
            envelope = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise NotificationRefused(Refusal.MALFORMED, "body is not UTF-8 JSON") from None
        try:
            return self._open(envelope)
        except ShapeError as bad:
            raise NotificationRefused(
                Refusal.UNSUPPORTED if bad.unsupported else Refusal.MALFORMED,
                str(bad)) from None

    def _open(self, envelope: Any) -> Notification:
        if not isinstance(envelope, dict):
            raise ShapeError("body is not a JSON object")
        notification_id: str = _text(envelope, "id", "body")
        event_type: str = _text(envelope, "event_type", "body")
        resource_type = envelope.get("resource_type", "encrypt-resource")
        resource = _object(envelope, "resource", "body")
        assert resource is not None
        where = "body.resource"
        algorithm = _get(resource, "algorithm", str, where)
        if resource_type != "encrypt-resource" or algorithm != paysign.ALGORITHM:
            raise ShapeError(f"resource encrypted by {algorithm[:40]!r}", unsupported=True)
        original_type = _get(resource, "original_type", str, where)
        expected = {"TRANSACTION": "transaction", "REFUND": "refund"}.get(
            event_type.partition(".")[0])
        if expected is None:
            raise ShapeError(f"event {event_type[:40]!r}", unsupported=True)
        if original_type != expected:
            raise ShapeError(f"{event_type} carries a {original_type[:40]!r}")
        try:
            plaintext = paysign.decrypt(
                self._api_v3_key, _get(resource, "ciphertext", str, where),
                _get(resource, "nonce", str, where),
                _get(resource, "associated_data", str, where, required=False) or "")
        except paysign.DecryptError as failed:
            if failed.malformed:
                raise ShapeError(str(failed)) from None
            raise NotificationRefused(Refusal.UNDECRYPTABLE, str(failed)) from None
        try:
            inner = json.loads(plaintext.decode("utf-8"))
        except (ValueError, RecursionError):
            raise ShapeError("resource is not UTF-8 JSON") from None
        if not isinstance(inner, dict):
            raise ShapeError("resource is not a JSON object")
        _merchant(inner, self._mchid, self._appid, original_type)
        if expected == "refund":
            return _refund(inner, notification_id, event_type)
        state = payment_state(inner, need_transaction=True)
        assert state.transaction_id is not None
        return Notification(
            notification_id=notification_id, event_type=event_type,
            payment_id=state.payment_id, status=state.status, amount=state.amount,
            transaction_id=state.transaction_id, payer=state.payer, paid_at=state.paid_at)
