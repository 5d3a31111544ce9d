"""Tokens: what `verify` accepts, and what the remembering `Verifier` still refuses."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest

from server.auth import Identity, Verifier, issue, verify
from server.errors import ApiError

SECRET = "s" * 64


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def refused(check: Callable[[str], Identity], token: str) -> str:
    with pytest.raises(ApiError) as caught:
        check(token)
    assert caught.value.code == "unauthorized"
    return caught.value.message


def test_a_token_proves_its_claims() -> None:
    token = issue(SECRET, "alice", role="marketer", region="YN", device="d1")
    assert verify(SECRET, token) == Identity("alice", "marketer", "YN", "d1")


# Tokens here are made when the tests are collected, which can be minutes before this test
# runs in a whole suite: they must not expire on the way (it would change the refusal).
LATER = int(time.time()) + 86_400


@pytest.mark.parametrize(("token", "message"), [
    (issue("o" * 64, "alice"), "the token is not valid"),  # another secret
    (issue(SECRET, "alice", ttl=-10), "the token has expired"),
    (jwt.encode({"sub": "alice", "exp": LATER}, SECRET, algorithm="HS512"),
     "the token is not valid"),
    (jwt.encode({"sub": "a b", "exp": LATER}, SECRET, algorithm="HS256"),
     "the token's subject is not a valid user id"),
    (jwt.encode({"sub": "alice", "exp": LATER, "role": "root"}, SECRET,
                algorithm="HS256"), "the token's role is not known"),
    (jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), "the token is not valid"),
    ("", "a valid token is required"),
])
def test_bad_tokens_are_refused_by_both(token: str, message: str) -> None:
    assert refused(lambda t: verify(SECRET, t), token) == message
    assert refused(Verifier(SECRET), token) == message


def test_a_remembered_token_still_expires() -> None:
    clock = Clock(time.time())
    check = Verifier(SECRET, clock=clock)
    token = issue(SECRET, "alice", ttl=60, now=clock.now)
    assert check(token).user == "alice"
    clock.now += 59
    assert check(token).user == "alice"  # remembered, still valid
    clock.now += 2
    assert refused(check, token) == "the token has expired"


def test_a_changed_token_is_checked_anew() -> None:
    check = Verifier(SECRET)
    token = issue(SECRET, "alice")
    check(token)
    head, _body, signature = token.split(".")
    forged_body = jwt.utils.base64url_encode(
        b'{"sub":"mallory","role":"marketer","exp":9999999999}').decode()
    assert refused(check, f"{head}.{forged_body}.{signature}") == "the token is not valid"
    assert refused(check, token[:-2] + ("AA" if not token.endswith("AA") else "BB")) \
        == "the token is not valid"


def test_memory_is_bounded_least_recently_used_first() -> None:
    check = Verifier(SECRET, capacity=2)
    a, b, c = (issue(SECRET, user, now=time.time()) for user in ("a", "b", "c"))
    check(a)
    check(b)
    check(a)  # a is now the most recently used
    check(c)  # evicts b
    assert list(check._known) == [a, c]
