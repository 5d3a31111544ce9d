"""JWT (HS256) identities: the acting user is always the token's `sub`."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt

from server.errors import ApiError
from server.params import USER_ID
from storage.text import clean_token

ROLES = frozenset({"user", "marketer"})


@dataclass(frozen=True)
class Identity:
    user: str
    role: str
    region: str | None = None
    device: str | None = None
    # The token's `exp` (epoch seconds): when it stops proving who this is, not part of who.
    expires: float = field(default=math.inf, compare=False)


def issue(secret: str, user: str, *, role: str = "user", region: str | None = None,
          device: str | None = None, ttl: int = 86400, now: float | None = None) -> str:
    """A signed token for `user`."""
    if not USER_ID.fullmatch(user):
        raise ValueError("user ids are 1-64 characters of letters, digits and _.:@-")
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": user, "role": role, "iat": issued, "exp": issued + ttl}
    if region:
        claims["region"] = region
    if device:
        claims["device"] = device
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str) -> Identity:
    """The identity a token proves, or ApiError(unauthorized)."""
    return verify_claims(secret, token)[0]


def verify_claims(secret: str, token: str) -> tuple[Identity, float]:
    """The identity a token proves and when it expires (epoch seconds), or
    ApiError(unauthorized)."""
    # A JWT is ASCII (base64url and dots); anything else, such as the lone surrogates
    # aiohttp makes of a header's non-UTF-8 bytes, is refused before PyJWT encodes it.
    if not token or len(token) > 4096 or not token.isascii():
        raise ApiError("unauthorized", "a valid token is required")
    try:
        # algorithms pins HS256: `alg: none` and other algorithms are refused.
        claims = jwt.decode(token, secret, algorithms=["HS256"],
                            options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise ApiError("unauthorized", "the token has expired") from None
    except jwt.PyJWTError:
        raise ApiError("unauthorized", "the token is not valid") from None
    user, role = claims.get("sub"), claims.get("role", "user")
    if not isinstance(user, str) or not USER_ID.fullmatch(user):
        raise ApiError("unauthorized", "the token's subject is not a valid user id")
    if not isinstance(role, str) or role not in ROLES:  # a list is not hashable
        raise ApiError("unauthorized", "the token's role is not known")
    optional: dict[str, str | None] = {}
    for claim in ("region", "device"):
        value = claims.get(claim)
        if value is not None and not clean_token(value, 64):
            raise ApiError("unauthorized", f"the token's {claim} must be a short text")
        optional[claim] = value
    exp = claims["exp"]
    try:
        # An int of hundreds of digits passes PyJWT's comparison but no float holds it.
        expires = float(exp) if not isinstance(exp, bool) and isinstance(exp, int | float) \
            else math.nan
    except OverflowError:
        expires = math.nan
    if not math.isfinite(expires):
        raise ApiError("unauthorized", "the token's exp is not a time")
    identity = Identity(user=user, role=role, region=optional["region"],
                        device=optional["device"], expires=expires)
    return identity, expires


class Verifier:
    """`verify` for one secret, remembering recently verified tokens until they expire.

    A mini-program sends the same token with every HTTP request; checking its signature
    and claims each time cost ~33 µs of the gateway's loop per request. A remembered
    token is the exact string that was verified (signature included), so a changed or
    forged one is always checked anew; its expiry is checked on every use.
    """

    def __init__(self, secret: str, capacity: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.capacity = capacity
        self._clock = clock
        self._known: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    def __call__(self, token: str) -> Identity:
        """The identity `token` proves, or ApiError(unauthorized)."""
        known = self._known.get(token)
        if known is not None:
            identity, expires = known
            if self._clock() < expires:
                self._known.move_to_end(token)
                return identity
            del self._known[token]
            raise ApiError("unauthorized", "the token has expired")
        identity, expires = verify_claims(self.secret, token)
        self._known[token] = (identity, expires)
        if len(self._known) > self.capacity:
            self._known.popitem(last=False)  # the least recently used
        return identity
