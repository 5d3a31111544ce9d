"""The payment provider a deployment talks to, made from its config, and the HTTP
transport WeChat Pay's gateway is given.

Both the gateway processes (creating payments, taking notifications) and the pipeline
(refunds, reconciliation queries) make theirs here, so they speak to the same provider
with the same keys: the sandbox's books in Postgres, or WeChat Pay v3 with the merchant's
credentials from `[wechatpay]`.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.paygate import PaymentGateway, Response
from actors.sandbox_books import SandboxBooks
from actors.wechatpay import WechatPay, WechatPayConfig
from storage.config import Config, WechatPaySettings

TIMEOUT_S = 10.0  # WeChat Pay answers in well under a second; a hung call is retried


async def urllib_transport(method: str, url: str, headers: Mapping[str, str], body: bytes
                           ) -> Response:
    """One HTTPS request with the standard library, off the event loop (a thread), so the
    actors need no HTTP client of their own. HTTP errors are answers, not exceptions:
    the gateway reads WeChat's error body."""
    def call() -> Response:
        request = urllib.request.Request(url, data=body or None, method=method,
                                         headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                return answer.status, dict(answer.headers.items()), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers.items()), error.read()
    return await asyncio.to_thread(call)


def wechatpay_config(settings: WechatPaySettings) -> WechatPayConfig:
    """The gateway's credentials: the merchant's key and the platform certificates' keys
    (by their serials), read from their PEM files."""
    key = serialization.load_pem_private_key(Path(settings.merchant_key_file).read_bytes(),
                                             None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{settings.merchant_key_file}: not an RSA private key")
    platform: dict[str, rsa.RSAPublicKey] = {}
    for path in settings.platform_certificates:
        certificate = x509.load_pem_x509_certificate(Path(path).read_bytes())
        public = certificate.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise ValueError(f"{path}: not an RSA certificate")
        platform[format(certificate.serial_number, "X")] = public
    return WechatPayConfig(
        mchid=settings.mchid, appid=settings.appid, merchant_serial=settings.merchant_serial,
        merchant_key=key, api_v3_key=settings.api_v3_key.encode(), platform_keys=platform,
        notify_url=settings.notify_url, base_url=settings.base_url.rstrip("/"))


async def open_gateway(config: Config, pool: asyncpg.Pool) -> PaymentGateway:
    """The configured provider (`[pipeline] payment_adapter`)."""
    if config.pipeline.payment_adapter == "wechatpay":
        assert config.wechatpay is not None  # the config refuses it otherwise
        return WechatPay(wechatpay_config(config.wechatpay), urllib_transport)
    return await SandboxBooks.open(pool)
