"""What strings from clients may be: the edge's and the owner's one check, and JSON."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.errors import ApiError
from server.params import IDENT, SLUG, USER_ID, Param, check, parse_json
from storage.text import clean_token, storable


@given(st.text())
def test_storable_is_exactly_what_utf8_without_nul_encodes(value: str) -> None:
    try:
        value.encode("utf-8")
        encodes = True
    except UnicodeEncodeError:
        encodes = False
    assert storable(value) == (encodes and "\x00" not in value)


@pytest.mark.parametrize("value,ok", [
    ("k1", True), ("订单-1", True), ("x" * 128, True), ("x" * 129, False), ("", False),
    ("\udcff", False), ("a\ud800b", False), ("nul\x00", False), ("line\n", False),
    ("tab\t", False), ("del\x7f", False), (5, False), (None, False), (["k"], False),
])
def test_clean_tokens(value: object, ok: bool) -> None:
    assert clean_token(value, 128) is ok


@pytest.mark.parametrize("pattern", [SLUG, IDENT, USER_ID])
@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\x00"])
def test_patterns_match_whole_strings(pattern: re.Pattern[str], suffix: str) -> None:
    assert pattern.fullmatch("alice") is not None
    spec = {"v": Param(str, pattern=pattern)}
    with pytest.raises(ApiError) as refused:
        check({"v": "alice" + suffix}, spec)
    assert refused.value.code == "invalid_request"


@given(st.text())
def test_a_string_param_is_storable_or_refused(value: str) -> None:
    try:
        clean = check({"note": value}, {"note": Param(str)})
    except ApiError as exc:
        assert exc.code == "invalid_request" and not storable(value)
    else:
        assert storable(clean["note"])


@pytest.mark.parametrize("raw", ["[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000,
                                 "1" * 5000, "", "{", b"\xff\xfe", "NaN-ish"])
def test_json_that_cannot_be_read_is_invalid_request(raw: str | bytes) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json(raw, "the body")
    assert refused.value.code == "invalid_request"
