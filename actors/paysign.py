"""WeChat Pay v3's signatures and encrypted resources, assembled around `cryptography`.

Every primitive (RSA PKCS#1 v1.5 with SHA-256, AES-256-GCM) is the `cryptography`
library's; this module only builds the messages v3 signs, base64-codes the results and
loads keys. The shapes:

- a request, response or notification is signed over lines each ended by "\\n":
  a request's "METHOD\\nURL\\ntimestamp\\nnonce\\nbody\\n" (URL is the path and query),
  a response's or notification's "timestamp\\nnonce\\nbody\\n";
- a request carries `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="...",
  nonce_str="...",signature="...",timestamp="...",serial_no="..."`;
- a client pays with paySign over "appId\\ntimeStamp\\nnonceStr\\npackage\\n";
- a notification's `resource` is AEAD_AES_256_GCM under the 32-byte API v3 key:
  base64 of ciphertext followed by the 16-byte tag, a 12-character nonce, and
  associated data that may be empty.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
ALGORITHM = "AEAD_AES_256_GCM"
API_V3_KEY_BYTES = 32
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16
MIN_RSA_BITS = 2048


def message(*lines: bytes) -> bytes:
    """`lines` as v3 signs them: each followed by "\\n", the last one included."""
    return b"".join(line + b"\n" for line in lines)


def request_message(method: str, url: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """What a request's signature covers; `url` is the path with its query, no host."""
    return message(method.encode(), url.encode(), timestamp.encode(), nonce.encode(), body)


def sign(key: rsa.RSAPrivateKey, data: bytes) -> str:
    """Base64 of RSA-SHA256 (PKCS#1 v1.5) over `data`."""
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(key: rsa.RSAPublicKey, data: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is `key`'s RSA-SHA256 over `data`."""
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
        key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return True


def authorization(mchid: str, serial_no: str, key: rsa.RSAPrivateKey, method: str, url: str,
                  body: bytes, timestamp: str, nonce: str) -> str:
    """The `Authorization` header of a request to the v3 API."""
    signature = sign(key, request_message(method, url, timestamp, nonce, body))
    return (f'{SCHEMA} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{serial_no}"')


def parse_authorization(header: str) -> dict[str, str]:
    """The fields of an `Authorization` header (for checking what we send, and the
    sandbox); raises ValueError if it is not the v3 schema."""
    schema, _, rest = header.partition(" ")
    if schema != SCHEMA:
        raise ValueError(f"not {SCHEMA}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.partition("=")
        if not eq or len(value) < 2 or value[0] != '"' or value[-1] != '"':
            raise ValueError(f"malformed field {part!r}")
        fields[name] = value[1:-1]
    return fields


def pay_sign(key: rsa.RSAPrivateKey, app_id: str, time_stamp: str, nonce_str: str,
             package: str) -> str:
    """The client's paySign (JSAPI / mini-program `requestPayment`)."""
    return sign(key, message(app_id.encode(), time_stamp.encode(), nonce_str.encode(),
                             package.encode()))


_ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Random bytes below this map evenly onto the 62 characters (4 × 62); the rest are dropped.
_EVEN = 4 * len(_ALPHANUMERIC)


def random_nonce(length: int = 32) -> str:
    """A random alphanumeric string (v3 nonces are at most 32 characters), every character
    uniform over the 62. One read of the OS's randomness for the whole string, rather
    than `secrets.choice` per character (a sandbox notification takes 44 characters)."""
    chars: list[str] = []
    while len(chars) < length:
        chars += [_ALPHANUMERIC[b % len(_ALPHANUMERIC)]
                  for b in secrets.token_bytes(length + 8) if b < _EVEN]
    return "".join(chars[:length])


def check_api_v3_key(key: bytes) -> bytes:
    """`key` if it is an API v3 key's 32 bytes (a ValueError names the length otherwise)."""
    if not isinstance(key, bytes) or len(key) != API_V3_KEY_BYTES:
        raise ValueError(f"the API v3 key must be {API_V3_KEY_BYTES} bytes")
    return key


def encrypt(api_v3_key: bytes, plaintext: bytes, nonce: str,
            associated_data: str) -> str:
    """Base64 of AES-256-GCM ciphertext and tag: what the provider puts in a resource
    (the sandbox and tests use it; the server only decrypts)."""
    aead = AESGCM(check_api_v3_key(api_v3_key))
    return base64.b64encode(aead.encrypt(nonce.encode(), plaintext,
                                         associated_data.encode())).decode()


class DecryptError(ValueError):
    """A resource that does not decrypt: `malformed` if its fields are not what GCM
    takes, otherwise the tag did not verify (wrong key, or tampered)."""

    def __init__(self, detail: str, *, malformed: bool) -> None:
        super().__init__(detail)
        self.malformed = malformed


def decrypt(api_v3_key: bytes, ciphertext: str, nonce: str, associated_data: str) -> bytes:
    """The plaintext of a resource; raises `DecryptError`."""
    try:
        raw = base64.b64decode(ciphertext.encode("ascii"), validate=True)
        nonce_bytes = nonce.encode("ascii")
        aad = associated_data.encode("utf-8")
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise DecryptError(f"resource fields are not GCM input: {exc}", malformed=True) from None
    if len(nonce_bytes) != GCM_NONCE_BYTES:
        raise DecryptError(f"resource nonce must be {GCM_NONCE_BYTES} bytes", malformed=True)
    if len(raw) <= GCM_TAG_BYTES:
        raise DecryptError("resource ciphertext shorter than its tag", malformed=True)
    try:
        return AESGCM(check_api_v3_key(api_v3_key)).decrypt(nonce_bytes, raw, aad)
    except InvalidTag:
        raise DecryptError("resource does not decrypt under the API v3 key",
                           malformed=False) from None


def _rsa_public(key: object, what: str) -> rsa.RSAPublicKey:
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{what} is not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"{what} has {key.key_size} bits; v3 uses {MIN_RSA_BITS}")
    return key


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """The merchant's API key (apiclient_key.pem, PKCS#8) from PEM."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the merchant key is not an RSA key")
    _rsa_public(key.public_key(), "the merchant key")
    return key


def certificate_serial(certificate: x509.Certificate) -> str:
    """A certificate's serial as v3 writes it (upper-case hex, `Wechatpay-Serial`)."""
    digits = f"{certificate.serial_number:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


def load_platform_key(pem: bytes, serial: str | None = None) -> tuple[str, rsa.RSAPublicKey]:
    """`(serial, key)` of a platform certificate, or of a WeChat Pay public key (which
    has no serial of its own: its PUB_KEY_ID is given as `serial`)."""
    if b"-----BEGIN CERTIFICATE-----" in pem:
        certificate = x509.load_pem_x509_certificate(pem)
        found = certificate_serial(certificate)
        if serial is not None and serial != found:
            raise ValueError(f"the certificate's serial is {found}, not {serial}")
        return found, _rsa_public(certificate.public_key(), "the platform certificate")
    if serial is None:
        raise ValueError("a platform public key needs its serial (PUB_KEY_ID) given")
    key = serialization.load_pem_public_key(pem)
    return serial, _rsa_public(key, "the platform public key")


def public_serial(key: rsa.RSAPublicKey) -> str:
    """A stable serial for a key with no certificate (the sandbox's): the first 40 hex
    digits of SHA-256 over its DER encoding."""
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex().upper()[:40]
