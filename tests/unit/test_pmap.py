"""PMap must behave like an immutable dict whose old versions never change."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from games.pmap import PMap

# Small ints spread over, and collide within, the 256 buckets (k and k + 256 share one;
# hash(-1) == hash(-2) in CPython); short strings add a second key type.
keys = st.one_of(st.integers(-600, 600), st.text(max_size=3))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, st.integers()),
        st.tuples(st.just("remove"), keys, st.none()),
    ),
    max_size=80,
)


def assert_same(pmap: PMap[object, int], expected: dict[object, int]) -> None:
    assert len(pmap) == len(expected)
    assert dict(pmap) == expected
    assert dict(pmap.items()) == expected
    assert sorted(map(repr, pmap)) == sorted(map(repr, expected))
    assert len(list(pmap)) == len(expected)  # iteration yields each key once
    assert pmap == expected
    for key, value in expected.items():
        assert key in pmap
        assert pmap[key] == value
        assert pmap.get(key) == value


@settings(max_examples=200, deadline=None)
@given(initial=st.dictionaries(keys, st.integers(), max_size=20), script=ops,
       probes=st.lists(keys, max_size=10))
def test_pmap_behaves_like_dict_and_keeps_old_versions(
    initial: dict[object, int], script: list[tuple[str, object, int | None]],
    probes: list[object],
) -> None:
    pmap: PMap[object, int] = PMap(initial)
    model = dict(initial)
    history: list[tuple[PMap[object, int], dict[object, int]]] = [(pmap, dict(model))]
    for op, key, value in script:
        if op == "set":
            assert value is not None
            new = pmap.set(key, value)
            model[key] = value
        else:
            new = pmap.remove(key)
            if key not in model:
                assert new is pmap  # removing an absent key returns the same map
            model.pop(key, None)
        assert_same(new, model)
        pmap = new
        history.append((pmap, dict(model)))
    # Persistence: every earlier version still reads exactly as it did when made.
    for version, snapshot in history:
        assert_same(version, snapshot)
        for key in probes:
            assert (key in version) == (key in snapshot)
            assert version.get(key, "absent") == snapshot.get(key, "absent")
            if key not in snapshot:
                with pytest.raises(KeyError):
                    version[key]


def test_empty_and_constructor() -> None:
    empty: PMap[str, int] = PMap()
    assert len(empty) == 0
    assert dict(empty) == {}
    assert "a" not in empty
    with pytest.raises(KeyError):
        empty["a"]
    assert PMap({"a": 1, "b": 2}) == {"a": 1, "b": 2}
    assert isinstance(empty, Mapping)
    assert repr(PMap({"a": 1})) == "PMap({'a': 1})"


def test_set_overwrite_keeps_length_and_old_value() -> None:
    one = PMap({"a": 1})
    two = one.set("a", 2)
    assert len(two) == 1
    assert two["a"] == 2
    assert one["a"] == 1


def test_colliding_keys_share_a_bucket_independently() -> None:
    base: PMap[int, str] = PMap()
    a = base.set(3, "x")
    b = a.set(3 + 256, "y")  # same bucket
    c = b.remove(3)
    assert dict(a) == {3: "x"}
    assert dict(b) == {3: "x", 259: "y"}
    assert dict(c) == {259: "y"}
    assert dict(base) == {}


def test_mutating_the_source_dict_does_not_leak() -> None:
    source = {"a": 1}
    pmap = PMap(source)
    source["a"] = 99
    source["b"] = 2
    assert dict(pmap) == {"a": 1}

