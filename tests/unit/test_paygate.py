"""Unit tests for the payment gateways: actors.paygate, paysign, paynotify, wechatpay and
paysandbox.

Pure, with no network: the WeChat-Pay-v3-shaped gateway talks to a fake transport that
answers recorded-shape responses, and notifications are recorded-shape fixtures signed
and encrypted with key pairs made here, once per module. The fixtures are built with the
`cryptography` library directly, not with `actors.paysign`, so a mistake in how that
module assembles messages cannot hide itself by being made twice.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import logging
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import paysign
from actors.paygate import (
    Notification,
    NotificationRefused,
    PaymentError,
    PaymentNotFound,
    PaymentRequest,
    PaymentState,
    PaymentStatus,
    RefundRequest,
    RefundStatus,
    Refusal,
)
from actors.paynotify import NotifyVerifier
from actors.paysandbox import SandboxGateway
from actors.wechatpay import WechatPay, WechatPayConfig


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# Made once for the module: the platform's key (signs notifications and responses), a
# second platform key (a known serial that did not sign), a stranger's key, and the
# merchant's key (signs our requests and the client's paySign).
PLATFORM = rsa_key()
OTHER_PLATFORM = rsa_key()
STRANGER = rsa_key()
MERCHANT = rsa_key()
SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
OTHER_SERIAL = "7132D72A03E93CDDF8C03BBD1F37EEDF3F3A2B4C"
API_V3_KEY = b"a7cde1ef4bf1e7c5d3f1e2a9b6c8d0f2"
MCHID = "1230000109"
APPID = "wxd678efh567hg6787"
MERCHANT_SERIAL = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"
NOTIFY_URL = "https://shop.example.com/api/payments/wechatpay/notify"

# 2018-06-08T10:34:56+08:00, the success_time of the recorded transaction.
NOW_MS = 1_528_425_296_000
NOW_S = NOW_MS // 1000

# The decrypted resource of a JSAPI payment notification, in the documented shape.
TRANSACTION: dict[str, Any] = {
    "transaction_id": "1217752501201407033233368018",
    "amount": {"payer_total": 100, "total": 100, "currency": "CNY",
               "payer_currency": "CNY"},
    "mchid": MCHID,
    "trade_state": "SUCCESS",
    "bank_type": "CMC",
    "promotion_detail": [{"amount": 100, "wechatpay_contribute": 0,
                          "coupon_id": "109519", "scope": "GLOBAL", "merchant_contribute": 0,
                          "name": "单品惠-6", "other_contribute": 0, "currency": "CNY",
                          "stock_id": "931386",
                          "goods_detail": [{"goods_remark": "商品备注信息", "quantity": 1,
                                            "discount_amount": 1, "goods_id": "M1000",
                                            "unit_price": 100}]}],
    "success_time": "2018-06-08T10:34:56+08:00",
    "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    "out_trade_no": "gb_20180608_000123",
    "appid": APPID,
    "trade_state_desc": "支付成功",
    "trade_type": "JSAPI",
    "attach": "自定义数据",
    "scene_info": {"device_id": "013467007045764"},
}

# The decrypted resource of a refund notification.
REFUND: dict[str, Any] = {
    "mchid": MCHID,
    "transaction_id": "1217752501201407033233368018",
    "out_trade_no": "gb_20180608_000123",
    "refund_id": "50000000382019052709732678859",
    "out_refund_no": "rf_gb_20180608_000123_1",
    "refund_status": "SUCCESS",
    "success_time": "2018-06-08T10:34:56+08:00",
    "user_received_account": "招商银行信用卡0403",
    "amount": {"total": 100, "refund": 100, "payer_total": 100, "payer_refund": 100},
}


def wx_sign(key: rsa.RSAPrivateKey, *lines: bytes) -> str:
    """What the platform (or the merchant) signs: each line ended by a newline."""
    data = b"".join(line + b"\n" for line in lines)
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def wx_verify(key: rsa.RSAPublicKey, signature: str, *lines: bytes) -> None:
    """Raises InvalidSignature unless `signature` is `key`'s over `lines`."""
    key.verify(base64.b64decode(signature), b"".join(line + b"\n" for line in lines),
               padding.PKCS1v15(), hashes.SHA256())


def envelope(resource: Any, *, event: str = "TRANSACTION.SUCCESS",
             original: str = "transaction", key: bytes = API_V3_KEY,
             nonce: bytes = b"fdasflkja484", aad: str = "transaction",
             notification_id: str = "EV-2018022511223320873",
             **fields: Any) -> bytes:
    """A notification body as WeChat sends it, the resource encrypted under `key`."""
    plaintext = resource if isinstance(resource, bytes) else json.dumps(
        resource, ensure_ascii=False).encode()
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, aad.encode())
    body = {
        "id": notification_id, "create_time": "2018-06-08T10:34:56+08:00",
        "resource_type": "encrypt-resource", "event_type": event, "summary": "支付成功",
        "resource": {"original_type": original, "algorithm": "AEAD_AES_256_GCM",
                     "ciphertext": base64.b64encode(ciphertext).decode(),
                     "associated_data": aad, "nonce": nonce.decode()},
        **fields,
    }
    return json.dumps(body, ensure_ascii=False).encode()


def signed(body: bytes, *, timestamp: int = NOW_S, nonce: str = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
           serial: str = SERIAL, key: rsa.RSAPrivateKey = PLATFORM) -> dict[str, str]:
    """The Wechatpay-* headers of `body`, signed by `key` under `serial`."""
    return {"Wechatpay-Timestamp": str(timestamp), "Wechatpay-Nonce": nonce,
            "Wechatpay-Serial": serial,
            "Wechatpay-Signature": wx_sign(key, str(timestamp).encode(), nonce.encode(), body),
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048"}


def verifier(**options: Any) -> NotifyVerifier:
    return NotifyVerifier({SERIAL: PLATFORM.public_key(),
                           OTHER_SERIAL: OTHER_PLATFORM.public_key()},
                          API_V3_KEY, mchid=MCHID, appid=APPID, **options)


VERIFIER = verifier()
GOOD_BODY = envelope(TRANSACTION)
GOOD_HEADERS = signed(GOOD_BODY)
GOOD = Notification(
    notification_id="EV-2018022511223320873", event_type="TRANSACTION.SUCCESS",
    payment_id="gb_20180608_000123", status=PaymentStatus.PAID, amount=100,
    transaction_id="1217752501201407033233368018", payer="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    paid_at=NOW_MS)


def refused(headers: Mapping[str, str], body: bytes, now: int = NOW_MS,
            check: NotifyVerifier = VERIFIER) -> Refusal:
    with pytest.raises(NotificationRefused) as caught:
        check.verify(headers, body, now)
    return caught.value.reason


# --- a good notification ----------------------------------------------------------------


def test_a_recorded_shape_notification_verifies_and_parses() -> None:
    assert VERIFIER.verify(GOOD_HEADERS, GOOD_BODY, NOW_MS) == GOOD


def test_the_same_notification_verified_twice_gives_equal_values() -> None:
    # Dedupe is the caller's, by notification_id and payment_id: they must be stable.
    first = VERIFIER.verify(GOOD_HEADERS, GOOD_BODY, NOW_MS)
    # WeChat's redelivery: the same body, signed again later with a fresh nonce.
    again = VERIFIER.verify(signed(GOOD_BODY, timestamp=NOW_S + 60, nonce="n2"), GOOD_BODY,
                            NOW_MS + 60_000)
    assert first == again == GOOD and hash(first) == hash(again)


def test_header_names_are_case_insensitive_and_the_signature_type_optional() -> None:
    lowered = {name.lower(): value for name, value in GOOD_HEADERS.items()}
    del lowered["wechatpay-signature-type"]
    assert VERIFIER.verify(lowered, GOOD_BODY, NOW_MS) == GOOD
    upper = {name.upper(): value for name, value in GOOD_HEADERS.items()}
    assert VERIFIER.verify(upper, GOOD_BODY, NOW_MS) == GOOD


def test_the_window_is_inclusive_at_300_seconds_either_way() -> None:
    assert VERIFIER.verify(signed(GOOD_BODY, timestamp=NOW_S - 300), GOOD_BODY, NOW_MS) == GOOD
    assert VERIFIER.verify(signed(GOOD_BODY, timestamp=NOW_S + 300), GOOD_BODY, NOW_MS) == GOOD


def test_a_platform_key_rotation_verifies_under_either_serial() -> None:
    headers = signed(GOOD_BODY, serial=OTHER_SERIAL, key=OTHER_PLATFORM)
    assert VERIFIER.verify(headers, GOOD_BODY, NOW_MS) == GOOD


def test_empty_associated_data_and_a_missing_one_both_decrypt() -> None:
    empty = envelope(TRANSACTION, aad="")
    assert VERIFIER.verify(signed(empty), empty, NOW_MS) == GOOD
    raw = json.loads(envelope(TRANSACTION, aad=""))
    del raw["resource"]["associated_data"]
    missing = json.dumps(raw).encode()
    assert VERIFIER.verify(signed(missing), missing, NOW_MS) == GOOD


@pytest.mark.parametrize(("state", "event", "status", "refunded"), [
    ("SUCCESS", "REFUND.SUCCESS", PaymentStatus.REFUNDED, RefundStatus.SUCCEEDED),
    ("CLOSED", "REFUND.CLOSED", PaymentStatus.PAID, RefundStatus.CLOSED),
    ("ABNORMAL", "REFUND.ABNORMAL", PaymentStatus.PAID, RefundStatus.ABNORMAL),
])
@pytest.mark.parametrize("amount", [100, 30])
def test_refund_notifications_parse_full_and_partial(state: str, event: str,
                                                     status: PaymentStatus,
                                                     refunded: RefundStatus,
                                                     amount: int) -> None:
    resource = copy.deepcopy(REFUND)
    resource["refund_status"] = state
    resource["amount"].update(refund=amount, payer_refund=amount)
    body = envelope(resource, event=event, original="refund", aad="refund")
    assert VERIFIER.verify(signed(body), body, NOW_MS) == Notification(
        notification_id="EV-2018022511223320873", event_type=event,
        payment_id="gb_20180608_000123", status=status, amount=100,
        transaction_id="1217752501201407033233368018",
        refund_id="rf_gb_20180608_000123_1", refund_amount=amount, refund_status=refunded,
        refunded_at=NOW_MS)


@pytest.mark.parametrize(("trade_state", "status"), [
    ("SUCCESS", PaymentStatus.PAID), ("REFUND", PaymentStatus.REFUNDED),
    ("NOTPAY", PaymentStatus.PENDING), ("USERPAYING", PaymentStatus.PENDING),
    ("CLOSED", PaymentStatus.CLOSED), ("REVOKED", PaymentStatus.CLOSED),
    ("PAYERROR", PaymentStatus.FAILED),
])
def test_every_trade_state_maps_to_a_status(trade_state: str, status: PaymentStatus) -> None:
    body = envelope({**TRANSACTION, "trade_state": trade_state})
    assert VERIFIER.verify(signed(body), body, NOW_MS).status is status


# --- refusals, by class -----------------------------------------------------------------


def resigned(resource: Any, **options: Any) -> tuple[dict[str, str], bytes]:
    """A body built from `resource`, properly signed (what a confused platform, or a
    platform key holder, would send): refused only for what it says."""
    body = envelope(resource, **options)
    return signed(body), body


def without(header: str) -> tuple[dict[str, str], bytes]:
    headers = dict(GOOD_HEADERS)
    del headers[header]
    return headers, GOOD_BODY


def with_header(header: str, value: str) -> tuple[dict[str, str], bytes]:
    return {**GOOD_HEADERS, header: value}, GOOD_BODY


def tampered_body() -> tuple[dict[str, str], bytes]:
    raw = json.loads(GOOD_BODY)
    raw["resource"]["ciphertext"] = base64.b64encode(
        base64.b64decode(raw["resource"]["ciphertext"])[::-1]).decode()
    return dict(GOOD_HEADERS), json.dumps(raw, ensure_ascii=False).encode()


def tampered_signature() -> tuple[dict[str, str], bytes]:
    raw = bytearray(base64.b64decode(GOOD_HEADERS["Wechatpay-Signature"]))
    raw[17] ^= 0x01
    return with_header("Wechatpay-Signature", base64.b64encode(bytes(raw)).decode())


def reframed() -> tuple[dict[str, str], bytes]:
    # The platform signed "ts\nnonce\nx\n{...}\n" (a body that is not JSON); moving
    # "x" from the body into the nonce leaves the signed message unchanged but would
    # make the body valid JSON, were a newline allowed in the nonce.
    body = b"x\n" + GOOD_BODY
    headers = signed(body, nonce="abc")
    return {**headers, "Wechatpay-Nonce": "abc\nx"}, GOOD_BODY


def deep_json() -> tuple[dict[str, str], bytes]:
    body = b"[" * 30_000 + b"]" * 30_000
    return signed(body), body


def huge() -> tuple[dict[str, str], bytes]:
    body = envelope(TRANSACTION, padding="x" * (64 * 1024))
    return signed(body), body


def other_merchant() -> tuple[dict[str, str], bytes]:
    return resigned({**TRANSACTION, "mchid": "1900000109"})


def shape(change: dict[str, Any], drop: str | None = None) -> tuple[dict[str, str], bytes]:
    resource = {**copy.deepcopy(TRANSACTION), **change}
    if drop is not None:
        del resource[drop]
    return resigned(resource)


def envelope_field(**fields: Any) -> tuple[dict[str, str], bytes]:
    raw = {**json.loads(GOOD_BODY), **fields}
    body = json.dumps(raw).encode()
    return signed(body), body


def resource_field(name: str, value: Any) -> tuple[dict[str, str], bytes]:
    raw = json.loads(GOOD_BODY)
    raw["resource"][name] = value
    body = json.dumps(raw).encode()
    return signed(body), body


REFUSALS: dict[str, tuple[Any, Refusal]] = {
    "tampered body": (tampered_body, Refusal.BAD_SIGNATURE),
    "tampered signature": (tampered_signature, Refusal.BAD_SIGNATURE),
    "signature not base64": (lambda: with_header("Wechatpay-Signature", "%%%"),
                             Refusal.BAD_HEADER),
    "signed by a stranger under our serial": (
        lambda: (signed(GOOD_BODY, key=STRANGER), GOOD_BODY), Refusal.BAD_SIGNATURE),
    "signed by the other platform key under this one's serial": (
        lambda: (signed(GOOD_BODY, key=OTHER_PLATFORM), GOOD_BODY), Refusal.BAD_SIGNATURE),
    "unknown serial": (lambda: (signed(GOOD_BODY, serial="DEADBEEF", key=STRANGER), GOOD_BODY),
                       Refusal.UNKNOWN_SERIAL),
    "a known serial that did not sign": (
        lambda: with_header("Wechatpay-Serial", OTHER_SERIAL), Refusal.BAD_SIGNATURE),
    "stale by 301 s": (lambda: (signed(GOOD_BODY, timestamp=NOW_S - 301), GOOD_BODY),
                       Refusal.STALE),
    "a day old": (lambda: (signed(GOOD_BODY, timestamp=NOW_S - 86_400), GOOD_BODY),
                  Refusal.STALE),
    "301 s in the future": (lambda: (signed(GOOD_BODY, timestamp=NOW_S + 301), GOOD_BODY),
                            Refusal.STALE),
    "re-timestamped, signature kept": (lambda: with_header("Wechatpay-Timestamp",
                                                           str(NOW_S + 1)),
                                       Refusal.BAD_SIGNATURE),
    "wrong API v3 key": (lambda: resigned(TRANSACTION, key=b"b" * 32), Refusal.UNDECRYPTABLE),
    "wrong associated data": (
        lambda: resource_field("associated_data", "refund"), Refusal.UNDECRYPTABLE),
    "resource nonce changed": (lambda: resource_field("nonce", "aaaaaaaaaaaa"),
                               Refusal.UNDECRYPTABLE),
    "resource nonce of 11 bytes": (lambda: resource_field("nonce", "aaaaaaaaaaa"),
                                   Refusal.MALFORMED),
    "ciphertext not base64": (lambda: resource_field("ciphertext", "!!"), Refusal.MALFORMED),
    "ciphertext shorter than a tag": (lambda: resource_field("ciphertext", "AAAA"),
                                      Refusal.MALFORMED),
    "malformed JSON": (lambda: (signed(b'{"id": '), b'{"id": '), Refusal.MALFORMED),
    "a JSON array": (lambda: (signed(b"[]"), b"[]"), Refusal.MALFORMED),
    "empty body": (lambda: (signed(b""), b""), Refusal.MALFORMED),
    "non-UTF-8 body bytes": (lambda: (signed(b"\xff\xfe{}"), b"\xff\xfe{}"),
                             Refusal.MALFORMED),
    "deeply nested JSON": (deep_json, Refusal.MALFORMED),
    "huge body": (huge, Refusal.TOO_LARGE),
    "missing timestamp": (lambda: without("Wechatpay-Timestamp"), Refusal.BAD_HEADER),
    "missing nonce": (lambda: without("Wechatpay-Nonce"), Refusal.BAD_HEADER),
    "missing serial": (lambda: without("Wechatpay-Serial"), Refusal.BAD_HEADER),
    "missing signature": (lambda: without("Wechatpay-Signature"), Refusal.BAD_HEADER),
    "no headers at all": (lambda: ({}, GOOD_BODY), Refusal.BAD_HEADER),
    "empty signature": (lambda: with_header("Wechatpay-Signature", ""), Refusal.BAD_HEADER),
    "timestamp not a number": (lambda: with_header("Wechatpay-Timestamp", "1528425296.0"),
                               Refusal.BAD_HEADER),
    "timestamp in Arabic-Indic digits": (
        lambda: with_header("Wechatpay-Timestamp", "١٥٢٨٤٢٥٢٩٦"), Refusal.BAD_HEADER),
    "a nonce that swallows the body's first line": (reframed, Refusal.BAD_HEADER),
    "another signature type": (lambda: with_header("Wechatpay-Signature-Type", "HMAC-SHA256"),
                               Refusal.UNSUPPORTED),
    "another algorithm": (lambda: resource_field("algorithm", "AEAD_CHACHA20_POLY1305"),
                          Refusal.UNSUPPORTED),
    "an event we do not know": (lambda: resigned(TRANSACTION, event="COUPON.USE"),
                                Refusal.UNSUPPORTED),
    "a trade state we do not know": (lambda: shape({"trade_state": "ACCEPT"}),
                                     Refusal.UNSUPPORTED),
    "a transaction event carrying a refund": (
        lambda: resigned(REFUND, original="refund", aad="refund"), Refusal.MALFORMED),
    "decrypted resource not JSON": (lambda: resigned(b"not json"), Refusal.MALFORMED),
    "decrypted resource a JSON list": (lambda: resigned(b"[1]"), Refusal.MALFORMED),
    "no out_trade_no": (lambda: shape({}, drop="out_trade_no"), Refusal.MALFORMED),
    "an out_trade_no WeChat never accepts": (lambda: shape({"out_trade_no": "a b"}),
                                             Refusal.MALFORMED),
    "no transaction_id": (lambda: shape({}, drop="transaction_id"), Refusal.MALFORMED),
    "no amount": (lambda: shape({}, drop="amount"), Refusal.MALFORMED),
    "amount as a string": (lambda: shape({"amount": {"total": "100"}}), Refusal.MALFORMED),
    "amount as a float": (lambda: shape({"amount": {"total": 100.0}}), Refusal.MALFORMED),
    "amount as true": (lambda: shape({"amount": {"total": True}}), Refusal.MALFORMED),
    "a negative amount": (lambda: shape({"amount": {"total": -1}}), Refusal.MALFORMED),
    "an amount over bigint": (lambda: shape({"amount": {"total": 2**63}}), Refusal.MALFORMED),
    "success_time without an offset": (lambda: shape({"success_time": "2018-06-08T10:34:56"}),
                                       Refusal.MALFORMED),
    "success_time not a time": (lambda: shape({"success_time": "yesterday"}),
                                Refusal.MALFORMED),
    "no notification id": (lambda: envelope_field(id=None), Refusal.MALFORMED),
    "no resource": (lambda: envelope_field(resource=None), Refusal.MALFORMED),
    "another merchant": (other_merchant, Refusal.WRONG_MERCHANT),
    "another app": (lambda: shape({"appid": "wx0000000000000000"}), Refusal.WRONG_MERCHANT),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_class_is_refused_with_its_reason(case: str) -> None:
    build, reason = REFUSALS[case]
    headers, body = build()
    assert refused(headers, body) is reason


def test_a_refund_for_more_than_its_payment_is_malformed() -> None:
    resource = copy.deepcopy(REFUND)
    resource["amount"]["refund"] = 101
    headers, body = resigned(resource, event="REFUND.SUCCESS", original="refund", aad="refund")
    assert refused(headers, body) is Refusal.MALFORMED


def test_refusals_are_logged_with_their_reason(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fission.payments"):
        refused(*tampered_body())
    assert "bad_signature" in caplog.text


def test_a_huge_body_is_refused_before_any_crypto() -> None:
    # Unsigned and oversized: refused for its size, not its signature.
    assert refused({}, b"x" * (64 * 1024 + 1)) is Refusal.TOO_LARGE
    small = verifier(max_body=1024)
    assert refused(GOOD_HEADERS, GOOD_BODY, check=small) is Refusal.TOO_LARGE


def test_the_window_is_configurable() -> None:
    tight = verifier(window_s=10)
    assert refused(signed(GOOD_BODY, timestamp=NOW_S - 11), GOOD_BODY, check=tight) \
        is Refusal.STALE
    assert tight.verify(signed(GOOD_BODY, timestamp=NOW_S - 10), GOOD_BODY, NOW_MS) == GOOD


# --- mutations: refused, or exactly the original ----------------------------------------


@st.composite
def mutated_body(draw: st.DrawFn) -> bytes:
    body = GOOD_BODY
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append", "swap"]))
    at = draw(st.integers(0, len(body) - 1))
    if kind == "flip":
        bit = draw(st.integers(0, 7))
        return body[:at] + bytes([body[at] ^ (1 << bit)]) + body[at + 1:]
    if kind == "insert":
        return body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]
    if kind == "delete":
        return body[:at] + body[at + draw(st.integers(1, 16)):]
    if kind == "truncate":
        return body[:at]
    if kind == "append":
        return body + draw(st.binary(min_size=1, max_size=8))
    other = draw(st.integers(0, len(body) - 1))
    chars = bytearray(body)
    chars[at], chars[other] = chars[other], chars[at]
    return bytes(chars)


HEADER_NAMES = sorted(GOOD_HEADERS)
header_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789ABCDEFabcdef+/=\n ", max_size=40),
    st.sampled_from([str(NOW_S), str(NOW_S + 1), str(NOW_S - 1), OTHER_SERIAL, SERIAL,
                     "0" + str(NOW_S), GOOD_HEADERS["Wechatpay-Signature"] + "=",
                     GOOD_HEADERS["Wechatpay-Signature"][:-4],
                     GOOD_HEADERS["Wechatpay-Nonce"] + "\n"]),
)


@st.composite
def mutated_headers(draw: st.DrawFn) -> dict[str, str]:
    headers = dict(GOOD_HEADERS)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "replace", "rename", "add", "edit"]))
        name = draw(st.sampled_from(HEADER_NAMES))
        if name not in headers:
            continue
        if kind == "drop":
            del headers[name]
        elif kind == "replace":
            headers[name] = draw(header_text)
        elif kind == "rename":
            value = headers.pop(name)
            headers[draw(st.sampled_from([name.lower(), name.upper(), name + "x",
                                          name[:-1]]))] = value
        elif kind == "add":
            headers[draw(st.text(min_size=1, max_size=20))] = draw(header_text)
        else:
            value = headers[name]
            at = draw(st.integers(0, len(value)))
            headers[name] = value[:at] + draw(st.text(max_size=3)) + value[at + 1:]
    return headers


def refused_or_original(headers: Mapping[str, str], body: bytes) -> None:
    try:
        found = VERIFIER.verify(headers, body, NOW_MS)
    except NotificationRefused:
        return
    assert found == GOOD


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_body())
def test_every_body_mutation_is_refused_or_the_original(body: bytes) -> None:
    refused_or_original(GOOD_HEADERS, body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_headers())
def test_every_header_mutation_is_refused_or_the_original(headers: dict[str, str]) -> None:
    refused_or_original(headers, GOOD_BODY)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_headers(), mutated_body())
def test_every_mutation_of_both_is_refused_or_the_original(headers: dict[str, str],
                                                           body: bytes) -> None:
    refused_or_original(headers, body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def fuzzed(base: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """`base` with a few fields dropped or given any JSON value, nested ones included."""
    draw = data.draw
    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        target = value
        path = draw(st.sampled_from(["", "amount", "payer", "resource"]))
        if path and isinstance(target.get(path), dict):
            target = target[path]
        keys = sorted(target) or ["x"]
        key = draw(st.sampled_from(keys + ["extra"]))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(json_values)
    return value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_signed_resource_shape_is_refused_or_parsed_never_a_crash(data: st.DataObject
                                                                        ) -> None:
    # Signed and encrypted properly, so the parser itself meets every odd shape: it must
    # answer a Notification or a NotificationRefused, never another exception.
    kind = data.draw(st.sampled_from(["transaction", "refund"]))
    base = TRANSACTION if kind == "transaction" else REFUND
    resource = fuzzed(base, data)
    event = "TRANSACTION.SUCCESS" if kind == "transaction" else "REFUND.SUCCESS"
    body = envelope(resource, event=event, original=kind, aad=kind)
    try:
        found = VERIFIER.verify(signed(body), body, NOW_MS)
    except NotificationRefused:
        return
    assert isinstance(found, Notification) and found.amount >= 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_signed_envelope_shape_is_refused_or_parsed_never_a_crash(data: st.DataObject
                                                                        ) -> None:
    raw = fuzzed(json.loads(GOOD_BODY), data)
    body = json.dumps(raw).encode()
    try:
        found = VERIFIER.verify(signed(body), body, NOW_MS)
    except NotificationRefused:
        return
    assert found == GOOD


# --- the WeChat-Pay-v3-shaped gateway's requests -----------------------------------------


class FakeWechat:
    """A recorded-shape WeChat Pay: keeps each request and answers the next queued
    response, signed by the platform key (or not, when told)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.answers: list[tuple[int, Any, bool]] = []

    def answer(self, status: int, body: Any, *, sign: bool = True) -> None:
        self.answers.append((status, body, sign))

    async def __call__(self, method: str, url: str, headers: Mapping[str, str],
                       body: bytes) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((method, url, dict(headers), body))
        status, answer, sign = self.answers.pop(0)
        raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        headers_out = {"Request-ID": "e2762b10-b6b9-5108-a42c-16fe2422fc8a"}
        if sign:
            headers_out |= signed(raw, nonce="c5ac7061fccab6bf3e254dcf98995b8c")
        return status, headers_out, raw


def gateway(fake: FakeWechat, **config: Any) -> WechatPay:
    cfg = WechatPayConfig(
        mchid=MCHID, appid=APPID, merchant_serial=MERCHANT_SERIAL, merchant_key=MERCHANT,
        api_v3_key=API_V3_KEY, platform_keys={SERIAL: PLATFORM.public_key()},
        notify_url=NOTIFY_URL, **config)
    nonces = itertools.chain(["593BEC0C930BF1AFEB40B4A08C8FB242",
                              "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"],
                             (f"NONCE{n}" for n in itertools.count()))
    return WechatPay(cfg, fake, clock=lambda: NOW_MS, nonces=lambda: next(nonces))


def check_authorization(method: str, url: str, headers: Mapping[str, str],
                        body: bytes) -> dict[str, str]:
    """The Authorization header's fields, after verifying its signature with the
    merchant's public key over a message built here."""
    schema, _, rest = headers["Authorization"].partition(" ")
    assert schema == "WECHATPAY2-SHA256-RSA2048"
    fields = dict(part.split("=", 1) for part in rest.split(","))
    assert all(v.startswith('"') and v.endswith('"') for v in fields.values())
    fields = {k: v[1:-1] for k, v in fields.items()}
    assert set(fields) == {"mchid", "nonce_str", "signature", "timestamp", "serial_no"}
    path = url.removeprefix("https://api.mch.weixin.qq.com")
    wx_verify(MERCHANT.public_key(), fields["signature"], method.encode(), path.encode(),
              fields["timestamp"].encode(), fields["nonce_str"].encode(), body)
    assert paysign.parse_authorization(headers["Authorization"]) == fields
    return fields


REQUEST = PaymentRequest(payment_id="gb_20180608_000123", user="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
                         amount=100, description="拼团-电饭煲 3人团", expires_at=NOW_MS + 900_500)


async def test_create_signs_its_request_and_the_client_s_pay_sign() -> None:
    fake = FakeWechat()
    fake.answer(200, {"prepay_id": "wx201410272009395522657a690389285100"})
    params = await gateway(fake).create(REQUEST)

    [(method, url, headers, body)] = fake.requests
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/pay/transactions/jsapi")
    assert headers["Content-Type"] == "application/json"
    fields = check_authorization(method, url, headers, body)
    assert fields["mchid"] == MCHID and fields["serial_no"] == MERCHANT_SERIAL
    assert fields["timestamp"] == str(NOW_S)
    assert fields["nonce_str"] == "593BEC0C930BF1AFEB40B4A08C8FB242"
    assert json.loads(body) == {
        "appid": APPID, "mchid": MCHID, "description": "拼团-电饭煲 3人团",
        "out_trade_no": "gb_20180608_000123",
        # 15 minutes later, rounded down to the second, in China Standard Time.
        "time_expire": "2018-06-08T10:49:56+08:00",
        "notify_url": NOTIFY_URL, "amount": {"total": 100, "currency": "CNY"},
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    }

    assert params.wire() == {
        "appId": APPID, "timeStamp": str(NOW_S), "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "package": "prepay_id=wx201410272009395522657a690389285100", "signType": "RSA",
        "paySign": params.pay_sign}
    wx_verify(MERCHANT.public_key(), params.pay_sign, APPID.encode(), str(NOW_S).encode(),
              b"5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
              b"prepay_id=wx201410272009395522657a690389285100")


async def test_an_unsigned_or_forged_success_is_not_believed() -> None:
    fake = FakeWechat()
    fake.answer(200, {"prepay_id": "wx2014"}, sign=False)
    with pytest.raises(PaymentError) as caught:
        await gateway(fake).create(REQUEST)
    assert caught.value.code == "UNTRUSTED_RESPONSE"

    class Forged(FakeWechat):
        async def __call__(self, method: str, url: str, headers: Mapping[str, str],
                           body: bytes) -> tuple[int, dict[str, str], bytes]:
            status, out, raw = await super().__call__(method, url, headers, body)
            return status, out, raw.replace(b"wx2014", b"wx6666")

    forged = Forged()
    forged.answer(200, {"prepay_id": "wx2014"})
    with pytest.raises(PaymentError) as caught:
        await gateway(forged).create(REQUEST)
    assert caught.value.code == "UNTRUSTED_RESPONSE"


@pytest.mark.parametrize(("status", "answer", "code", "kind"), [
    (400, {"code": "PARAM_ERROR", "message": "参数错误"}, "PARAM_ERROR", PaymentError),
    (403, {"code": "NOAUTH", "message": "商户无权限"}, "NOAUTH", PaymentError),
    (500, b"<html>oops</html>", "HTTP_ERROR", PaymentError),
    (200, {"no": "prepay_id"}, "MALFORMED_RESPONSE", PaymentError),
    (200, b"not json", "MALFORMED_RESPONSE", PaymentError),
])
async def test_create_raises_what_wechat_refuses(status: int, answer: Any, code: str,
                                                 kind: type[PaymentError]) -> None:
    fake = FakeWechat()
    fake.answer(status, answer)
    with pytest.raises(kind) as caught:
        await gateway(fake).create(REQUEST)
    assert (caught.value.status, caught.value.code) == (status, code)


def refund_answer(refund: int, total: int, status: str = "SUCCESS") -> dict[str, Any]:
    """The refunds API's answer, in its documented shape."""
    answer: dict[str, Any] = {
        "refund_id": "50000000382019052709732678859",
        "out_refund_no": "rf_gb_20180608_000123_1",
        "transaction_id": "1217752501201407033233368018",
        "out_trade_no": "gb_20180608_000123", "channel": "ORIGINAL",
        "user_received_account": "招商银行信用卡0403",
        "success_time": "2018-06-08T10:34:56+08:00",
        "create_time": "2018-06-08T10:34:56+08:00", "status": status,
        "funds_account": "UNSETTLED",
        "amount": {"total": total, "refund": refund, "from": [], "payer_total": total,
                   "payer_refund": refund, "settlement_refund": refund,
                   "settlement_total": total, "discount_refund": 0, "currency": "CNY"},
        "promotion_detail": [],
    }
    if status != "SUCCESS":
        del answer["success_time"]
    return answer


@pytest.mark.parametrize(("amount", "full"), [(100, True), (30, False), (1, False)])
async def test_refund_request_shape_full_and_partial(amount: int, full: bool) -> None:
    fake = FakeWechat()
    fake.answer(200, refund_answer(amount, 100))
    request = RefundRequest(payment_id="gb_20180608_000123",
                            refund_id="rf_gb_20180608_000123_1", amount=amount, total=100,
                            reason="团未成")
    assert request.full is full
    result = await gateway(fake, refund_notify_url=NOTIFY_URL + "?refund").refund(request)

    [(method, url, headers, body)] = fake.requests
    assert (method, url) == ("POST", "https://api.mch.weixin.qq.com/v3/refund/domestic/refunds")
    check_authorization(method, url, headers, body)
    assert json.loads(body) == {
        "out_trade_no": "gb_20180608_000123", "out_refund_no": "rf_gb_20180608_000123_1",
        "reason": "团未成", "notify_url": NOTIFY_URL + "?refund",
        "amount": {"refund": amount, "total": 100, "currency": "CNY"}}
    assert (result.status, result.amount, result.total, result.refunded_at) == (
        RefundStatus.SUCCEEDED, amount, 100, NOW_MS)
    assert result.provider_refund_id == "50000000382019052709732678859"


async def test_a_processing_refund_and_one_without_a_reason() -> None:
    fake = FakeWechat()
    fake.answer(200, refund_answer(100, 100, "PROCESSING"))
    request = RefundRequest("gb_20180608_000123", "rf_gb_20180608_000123_1", 100, 100)
    result = await gateway(fake).refund(request)
    assert (result.status, result.refunded_at) == (RefundStatus.PROCESSING, None)
    body = json.loads(fake.requests[0][3])
    assert "reason" not in body and body["notify_url"] == NOTIFY_URL


async def test_a_refund_answer_for_another_refund_is_refused() -> None:
    fake = FakeWechat()
    fake.answer(200, refund_answer(50, 100))
    with pytest.raises(PaymentError) as caught:
        await gateway(fake).refund(RefundRequest("gb_20180608_000123",
                                                 "rf_gb_20180608_000123_1", 30, 100))
    assert caught.value.code == "MALFORMED_RESPONSE"


async def test_query_signs_a_get_and_reads_the_transaction() -> None:
    fake = FakeWechat()
    fake.answer(200, TRANSACTION)
    state = await gateway(fake).query("gb_20180608_000123")
    [(method, url, headers, body)] = fake.requests
    assert method == "GET" and body == b"" and "Content-Type" not in headers
    assert url == ("https://api.mch.weixin.qq.com/v3/pay/transactions/out-trade-no/"
                   "gb_20180608_000123?mchid=1230000109")
    check_authorization(method, url, headers, body)
    assert state == PaymentState(payment_id="gb_20180608_000123", status=PaymentStatus.PAID,
                                 amount=100, transaction_id="1217752501201407033233368018",
                                 payer="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", paid_at=NOW_MS)


async def test_query_of_an_unpaid_and_of_an_unknown_payment() -> None:
    fake = FakeWechat()
    unpaid = {"appid": APPID, "mchid": MCHID, "out_trade_no": "gb_20180608_000123",
              "trade_state": "NOTPAY", "trade_state_desc": "订单未支付",
              "amount": {"total": 100, "currency": "CNY"}}
    fake.answer(200, unpaid)
    fake.answer(404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
    fake.answer(200, {**TRANSACTION, "out_trade_no": "gb_other_0001"})
    pay = gateway(fake)
    assert await pay.query("gb_20180608_000123") == PaymentState(
        "gb_20180608_000123", PaymentStatus.PENDING, 100)
    with pytest.raises(PaymentNotFound):
        await pay.query("gb_20180608_000999")
    with pytest.raises(PaymentError) as caught:
        await pay.query("gb_20180608_000123")
    assert caught.value.code == "MALFORMED_RESPONSE"


async def test_the_gateway_verifies_notifications_for_its_merchant() -> None:
    pay = gateway(FakeWechat())
    assert pay.verify(GOOD_HEADERS, GOOD_BODY, NOW_MS) == GOOD
    headers, body = other_merchant()
    with pytest.raises(NotificationRefused):
        pay.verify(headers, body, NOW_MS)


def test_the_config_keeps_keys_out_of_its_repr() -> None:
    text = repr(gateway(FakeWechat()).config)
    assert MCHID in text and "RSAPrivateKey" not in text and API_V3_KEY.decode() not in text


# --- the sandbox -------------------------------------------------------------------------


def sandbox(clock: list[int] | None = None) -> SandboxGateway:
    at = clock if clock is not None else [NOW_MS]
    return SandboxGateway(key=STRANGER, clock=lambda: at[0])


def wechat_for(box: SandboxGateway) -> WechatPay:
    """The WeChat-shaped gateway, configured with the sandbox's keys as the platform's."""
    return WechatPay(WechatPayConfig(
        mchid=box.mchid, appid=box.appid, merchant_serial="SANDBOX", merchant_key=MERCHANT,
        api_v3_key=box.api_v3_key, platform_keys={box.serial: box.public_key},
        notify_url=NOTIFY_URL), FakeWechat())


async def test_sandbox_notifications_verify_through_the_wechat_shaped_verifier() -> None:
    box = sandbox()
    params = await box.create(REQUEST)
    wx_verify(box.public_key, params.pay_sign, params.app_id.encode(),
              params.time_stamp.encode(), params.nonce_str.encode(), params.package.encode())
    headers, body = box.pay(REQUEST.payment_id)
    paid = wechat_for(box).verify(headers, body, NOW_MS)
    assert paid == box.verify(headers, body, NOW_MS)
    assert (paid.payment_id, paid.status, paid.amount, paid.payer, paid.paid_at,
            paid.event_type) == (REQUEST.payment_id, PaymentStatus.PAID, 100, REQUEST.user,
                                 NOW_MS, "TRANSACTION.SUCCESS")

    refund = RefundRequest(REQUEST.payment_id, "rf_1", 40, 100)
    assert (await box.refund(refund)).status is RefundStatus.SUCCEEDED
    headers, body = box.notification(REQUEST.payment_id, PaymentStatus.REFUNDED, 100,
                                     refund_id="rf_1", refund_amount=40)
    back = wechat_for(box).verify(headers, body, NOW_MS)
    assert (back.status, back.refund_id, back.refund_amount, back.refund_status) == (
        PaymentStatus.REFUNDED, "rf_1", 40, RefundStatus.SUCCEEDED)


async def test_sandbox_redelivery_is_the_same_notification() -> None:
    clock = [NOW_MS]
    box = sandbox(clock)
    await box.create(REQUEST)
    first = box.verify(*box.pay(REQUEST.payment_id), NOW_MS)
    clock[0] += 30_000
    headers, body = box.pay(REQUEST.payment_id)
    assert box.verify(headers, body, clock[0]) == first
    # ...and it is signed afresh: the old delivery would be stale by now.
    assert headers["Wechatpay-Timestamp"] == str(clock[0] // 1000)


async def test_sandbox_notifications_are_refused_by_a_verifier_with_other_keys() -> None:
    box = sandbox()
    await box.create(REQUEST)
    headers, body = box.pay(REQUEST.payment_id)
    assert refused(headers, body) is Refusal.UNKNOWN_SERIAL
    other = SandboxGateway(key=STRANGER, clock=lambda: NOW_MS)  # same key, new API v3 key
    with pytest.raises(NotificationRefused) as caught:
        other.verify(headers, body, NOW_MS)
    assert caught.value.reason is Refusal.UNDECRYPTABLE


async def test_sandbox_query_follows_create_pay_expire_and_refund() -> None:
    clock = [NOW_MS]
    box = sandbox(clock)
    with pytest.raises(PaymentNotFound):
        await box.query(REQUEST.payment_id)
    with pytest.raises(PaymentNotFound):
        box.pay(REQUEST.payment_id)
    await box.create(REQUEST)
    assert (await box.query(REQUEST.payment_id)).status is PaymentStatus.PENDING
    box.pay(REQUEST.payment_id)
    paid = await box.query(REQUEST.payment_id)
    assert (paid.status, paid.paid_at, paid.payer) == (PaymentStatus.PAID, NOW_MS, REQUEST.user)
    clock[0] = REQUEST.expires_at + 1  # paid before it expired: stays paid
    assert (await box.query(REQUEST.payment_id)).status is PaymentStatus.PAID
    await box.refund(RefundRequest(REQUEST.payment_id, "rf_1", 100, 100))
    box.notification(REQUEST.payment_id, PaymentStatus.REFUNDED, 100, refund_id="rf_1")
    assert (await box.query(REQUEST.payment_id)).status is PaymentStatus.REFUNDED
    # The paid notification redelivered after the refund (out of order) is still the
    # same one, and changes nothing here.
    late = box.verify(*box.pay(REQUEST.payment_id, clock[0]), clock[0])
    assert (late.status, late.paid_at) == (PaymentStatus.PAID, NOW_MS)
    assert (await box.query(REQUEST.payment_id)).status is PaymentStatus.REFUNDED


async def test_sandbox_expires_an_unpaid_payment_and_then_refuses_to_pay_it() -> None:
    clock = [NOW_MS]
    box = sandbox(clock)
    await box.create(REQUEST)
    clock[0] = REQUEST.expires_at
    assert (await box.query(REQUEST.payment_id)).status is PaymentStatus.CLOSED
    with pytest.raises(PaymentError) as caught:
        box.pay(REQUEST.payment_id)
    assert caught.value.code == "ORDER_CLOSED"


async def test_sandbox_create_is_idempotent_and_refuses_a_reused_id() -> None:
    box = sandbox()
    first, again = await box.create(REQUEST), await box.create(REQUEST)
    assert first.package == again.package and first.package.startswith("prepay_id=")
    with pytest.raises(PaymentError) as caught:
        await box.create(PaymentRequest(REQUEST.payment_id, REQUEST.user, 200, "x",
                                        REQUEST.expires_at))
    assert caught.value.code == "OUT_TRADE_NO_USED"


async def test_sandbox_refunds_are_idempotent_and_bounded() -> None:
    box = sandbox()
    await box.create(REQUEST)
    with pytest.raises(PaymentError):  # not paid yet
        await box.refund(RefundRequest(REQUEST.payment_id, "rf_1", 60, 100))
    box.pay(REQUEST.payment_id)
    first = await box.refund(RefundRequest(REQUEST.payment_id, "rf_1", 60, 100))
    assert await box.refund(RefundRequest(REQUEST.payment_id, "rf_1", 60, 100)) == first
    with pytest.raises(PaymentError):
        await box.refund(RefundRequest(REQUEST.payment_id, "rf_2", 41, 100))
    assert (await box.refund(RefundRequest(REQUEST.payment_id, "rf_2", 40, 100))).amount == 40


def test_sandbox_builds_only_the_notifications_wechat_sends() -> None:
    box = sandbox()
    for status in (PaymentStatus.PENDING, PaymentStatus.CLOSED, PaymentStatus.FAILED):
        with pytest.raises(ValueError):
            box.notification(REQUEST.payment_id, status, 100)
    with pytest.raises(ValueError):
        box.notification(REQUEST.payment_id, PaymentStatus.REFUNDED, 100)  # no refund_id
    for state in (RefundStatus.CLOSED, RefundStatus.ABNORMAL):
        headers, body = box.notification(REQUEST.payment_id, PaymentStatus.REFUNDED, 100,
                                         refund_id="rf_9", refund_status=state)
        found = box.verify(headers, body, NOW_MS)
        assert (found.status, found.refund_status) == (PaymentStatus.PAID, state)


# --- values and key loading --------------------------------------------------------------


@pytest.mark.parametrize("change", [
    {"payment_id": "short"}, {"payment_id": "x" * 33}, {"payment_id": "has space"},
    {"payment_id": "中文订单号号号"}, {"user": ""}, {"amount": 0}, {"amount": -1},
    {"amount": True}, {"amount": 1.0}, {"description": ""}, {"description": "x" * 128},
    {"expires_at": 0},
])
def test_a_payment_request_refuses_what_wechat_would(change: dict[str, Any]) -> None:
    fields = {"payment_id": "gb_20180608_000123", "user": "o1", "amount": 1,
              "description": "d", "expires_at": NOW_MS, **change}
    with pytest.raises(ValueError):
        PaymentRequest(**fields)


@pytest.mark.parametrize("change", [
    {"amount": 101}, {"amount": 0}, {"total": 0}, {"refund_id": ""},
    {"refund_id": "x" * 65}, {"refund_id": "rf 1"}, {"reason": "x" * 81},
    {"payment_id": "bad id"},
])
def test_a_refund_request_refuses_what_wechat_would(change: dict[str, Any]) -> None:
    fields = {"payment_id": "gb_20180608_000123", "refund_id": "rf_1", "amount": 100,
              "total": 100, **change}
    with pytest.raises(ValueError):
        RefundRequest(**fields)


def certificate(key: rsa.RSAPrivateKey, serial: int) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(start).not_valid_after(start + timedelta(days=1825))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_platform_keys_load_from_a_certificate_or_a_public_key() -> None:
    serial, key = paysign.load_platform_key(certificate(PLATFORM, int(SERIAL, 16)))
    assert serial == SERIAL and key.public_numbers() == PLATFORM.public_key().public_numbers()
    with pytest.raises(ValueError):
        paysign.load_platform_key(certificate(PLATFORM, int(SERIAL, 16)), serial="OTHER")
    pem = PLATFORM.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    assert paysign.load_platform_key(pem, serial="PUB_KEY_ID_0114")[0] == "PUB_KEY_ID_0114"
    with pytest.raises(ValueError):
        paysign.load_platform_key(pem)  # a bare key needs its id
    assert paysign.certificate_serial(
        x509.load_pem_x509_certificate(certificate(PLATFORM, 0x0ABC))) == "0ABC"


def test_keys_under_2048_bits_and_keys_of_other_kinds_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    with pytest.raises(ValueError):
        paysign.load_private_key(pem)
    curve = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ValueError):
        paysign.load_private_key(curve)
    good = MERCHANT.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    assert paysign.load_private_key(good).private_numbers() == MERCHANT.private_numbers()


def test_the_api_v3_key_must_be_32_bytes() -> None:
    for bad in (b"", b"x" * 31, b"x" * 33):
        with pytest.raises(ValueError):
            NotifyVerifier({SERIAL: PLATFORM.public_key()}, bad)
    with pytest.raises(ValueError):
        NotifyVerifier({}, API_V3_KEY)


def test_resources_encrypted_here_decrypt_with_aesgcm_directly() -> None:
    # paysign.encrypt is what the sandbox uses: it must be WeChat's layout (ciphertext
    # then tag, base64), which AESGCM.decrypt reads as is.
    text = paysign.encrypt(API_V3_KEY, b'{"a":1}', "0123456789ab", "transaction")
    assert AESGCM(API_V3_KEY).decrypt(b"0123456789ab", base64.b64decode(text),
                                      b"transaction") == b'{"a":1}'


@pytest.mark.parametrize("length", [1, 12, 32, 64])
def test_nonces_are_alphanumeric_of_their_length(length: int) -> None:
    nonces = {paysign.random_nonce(length) for _ in range(200)}
    assert all(len(n) == length and n.isascii() and n.isalnum() for n in nonces)
    assert len(nonces) == 200 or length == 1


def test_every_nonce_character_is_equally_likely() -> None:
    """The 62 characters come from random bytes; a byte taken modulo 62 without dropping
    the 8 values above 4 × 62 would make the first eight a quarter likelier than the rest.
    (Each count's spread here is about 1% of its expectation: 15% is never noise.)"""
    counts = Counter("".join(paysign.random_nonce() for _ in range(20_000)))
    expected = 20_000 * 32 / 62
    assert len(counts) == 62
    assert all(abs(n - expected) < 0.15 * expected for n in counts.values())
