"""A shard's answer text becomes a method's result (passed on as text) or an ApiError."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.answers import unavailable
from server.errors import ApiError
from server.gateway import Encoded, encode, result_of

GROUP = {"id": "g1", "campaign": "c", "status": "open", "members": ["阿明", "b\"q"],
         "price": 12900}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("answer", [
    # What the shard writes: compact, passed on without a decode.
    compact({"ok": True, "result": {"group": GROUP}}),
    # What Postgres renders for a remembered answer (jsonb text has spaces): decoded.
    json.dumps({"ok": True, "result": {"group": GROUP}}),
])
def test_accepted_answers_keep_their_result(answer: str) -> None:
    result = result_of(answer)
    assert json.loads(encode(result)) == {"group": GROUP}


def test_the_shards_own_encoding_is_not_decoded() -> None:
    text = compact({"ok": True, "result": {"group": GROUP}})
    assert result_of(text) == Encoded(compact({"group": GROUP}))


def test_an_empty_result_is_an_empty_object() -> None:
    assert json.loads(encode(result_of('{"ok":true,"result":{}}'))) == {}
    assert result_of('{"ok": true}') == {}


@pytest.mark.parametrize(("answer", "code", "message"), [
    (compact({"ok": False, "error": {"code": "group_full", "message": "the group is full"}}),
     "group_full", "the group is full"),
    (json.dumps({"ok": False, "error": {"code": "already_member", "message": "again"}}),
     "already_member", "again"),
    (unavailable(), "unavailable", "the game service is unavailable; try again"),
    ('{"ok": false}', "internal", "the command failed"),
    ("not json", "internal", "the game answered something unreadable"),
    ("[1, 2]", "internal", "the game answered something unreadable"),
    ('{"ok": "yes", "result": {}}', "internal", "the command failed"),
])
def test_refusals_become_api_errors(answer: str, code: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        result_of(answer)
    assert (caught.value.code, caught.value.message) == (code, message)
