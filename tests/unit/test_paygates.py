"""The provider a deployment is configured with: `[wechatpay]` parsed and checked, its
key files loaded, and the standard-library transport the WeChat gateway is given."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from actors.paygates import open_gateway, urllib_transport, wechatpay_config
from actors.wechatpay import WechatPay
from games.settings import ConfigError
from storage.config import parse
from tests.support import configs

API_V3_KEY = "0123456789abcdef0123456789abcdef"


def _files(tmp: Path) -> tuple[str, str, int]:
    merchant = rsa.generate_private_key(65537, 2048)
    key_file = tmp / "apiclient_key.pem"
    key_file.write_bytes(merchant.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    platform = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    now = datetime.datetime.now(datetime.UTC)
    serial = 0x5157F09EFDC096DE15EBE81A47057A7232F1B8E1
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(platform.public_key()).serial_number(serial)
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(platform, hashes.SHA256()))
    cert_file = tmp / "wechatpay_platform.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(key_file), str(cert_file), serial


def _doc(tmp: Path, **changes: Any) -> dict[str, Any]:
    key_file, cert_file, _ = _files(tmp)
    doc = configs.document([configs.campaign("c1")])
    doc["pipeline"] = {"payment_adapter": "wechatpay"}
    doc["wechatpay"] = {
        "mchid": "1230000109", "appid": "wxd678efh567hg6787",
        "merchant_serial": "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C",
        "merchant_key_file": key_file, "platform_certificates": [cert_file],
        "notify_url": "https://shop.example.com/api/payments/wechatpay/notify", **changes}
    return doc


async def test_a_wechatpay_deployment_loads_its_keys_and_makes_the_gateway(
        tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    config = parse(doc, {"FISSION_WECHATPAY_API_V3_KEY": API_V3_KEY})
    assert config.wechatpay is not None and API_V3_KEY not in repr(config.wechatpay)
    loaded = wechatpay_config(config.wechatpay)
    assert list(loaded.platform_keys) == ["5157F09EFDC096DE15EBE81A47057A7232F1B8E1"]
    assert loaded.api_v3_key == API_V3_KEY.encode() and loaded.mchid == "1230000109"
    gateway = await open_gateway(config, None)
    assert isinstance(gateway, WechatPay) and gateway.name == "wechatpay"


@pytest.mark.parametrize(("change", "key"), [
    ({"mchid": "12a"}, "wechatpay.mchid"),
    ({"api_v3_key": "short"}, "wechatpay.api_v3_key"),
    ({"platform_certificates": []}, "wechatpay.platform_certificates"),
    ({"notify_url": "http://shop.example.com/notify"}, "wechatpay.notify_url"),
    ({"merchant_serial": "not hex"}, "wechatpay.merchant_serial"),
    ({"surprise": 1}, "wechatpay.surprise"),
])
def test_a_bad_wechatpay_table_names_its_key(tmp_path: Path, change: dict[str, Any],
                                             key: str) -> None:
    doc = _doc(tmp_path, **{"api_v3_key": API_V3_KEY, **change})
    with pytest.raises(ConfigError) as refused:
        parse(doc, {})
    assert key in str(refused.value)


def test_choosing_wechatpay_without_its_table_is_refused() -> None:
    doc = configs.document([configs.campaign("c1")])
    doc["pipeline"] = {"payment_adapter": "wechatpay"}
    with pytest.raises(ConfigError) as refused:
        parse(doc, {})
    assert "wechatpay.mchid" in str(refused.value)


async def test_the_transport_answers_status_headers_and_body_errors_included() -> None:
    async def ok(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"got": body.decode(), "auth": request.headers["X-A"]},
                                 headers={"Wechatpay-Nonce": "n1"})

    async def refused(request: web.Request) -> web.Response:
        return web.json_response({"code": "PARAM_ERROR", "message": "bad"}, status=400)

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_get("/refused", refused)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        status, headers, body = await urllib_transport(
            "POST", f"http://127.0.0.1:{port}/ok", {"X-A": "sig",
                                                     "Content-Type": "application/json"},
            b'{"a":1}')
        assert status == 200 and headers["Wechatpay-Nonce"] == "n1"
        assert body == b'{"got": "{\\"a\\":1}", "auth": "sig"}'
        status, _, body = await urllib_transport("GET", f"http://127.0.0.1:{port}/refused",
                                                 {}, b"")
        assert status == 400 and b"PARAM_ERROR" in body
    finally:
        await runner.cleanup()
