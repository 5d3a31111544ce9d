"""Tokens for fuzzing: correctly signed JWTs whose claims may have any type or size.

A signature only proves who wrote the claims, not that they make sense: `role` a list,
`exp` a number of 400 digits, `sub` an object. The server must refuse what it cannot use
(401, or an `unauthorized` reply over `/ws`), never fail on it.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from hypothesis import strategies as st

from tests.support.configs import SECRET

# The values most likely to break a claim's reader: numbers past a float, texts past any
# limit or not UTF-8, containers where a string is wanted.
EXTREMES = st.sampled_from([
    10**400, -(10**400), 2**63, 2**64, 1e308, -1e308, 0.5, 0, -1, True, None, "", "x" * 5000,
    "\udcff", "a\x00b", "user\n", ["user"], {"role": "marketer"}, [], {}])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=20))
JUNK = st.one_of(EXTREMES, st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6))
CLAIMS = ("sub", "role", "exp", "region", "device", "iat", "nbf")


@st.composite
def odd_claims(draw: st.DrawFn, user: str) -> dict[str, Any]:
    """Claims of `user`'s token (a marketer, unexpired) with one or more of them, or of
    the optional ones, replaced by a value of any type."""
    claims: dict[str, Any] = {"sub": user, "role": "marketer", "exp": int(time.time()) + 600}
    for name in draw(st.sets(st.sampled_from(CLAIMS), min_size=1)):
        claims[name] = draw(JUNK)
    return claims


def signed(claims: dict[str, Any]) -> str | None:
    """`claims` signed with the test secret (HS256), or None where PyJWT will not encode
    them (no client could send that token either)."""
    try:
        return jwt.encode(claims, SECRET, algorithm="HS256")
    except (TypeError, ValueError, UnicodeEncodeError, OverflowError):
        return None
