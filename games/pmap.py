"""A small persistent (immutable, structure-sharing) hash map.

Frozen game states hold every group and per-user tallies of a campaign. Copying a plain
dict on each command would cost O(entries); this map is a two-level trie of 64 x 64
small dicts, so an update copies one leaf (about entries / 4096 items) and two 64-slot
tuples, whatever the campaign's size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_WIDTH = 64
_EMPTY_LEAF: dict[object, object] = {}
_EMPTY_NODE: tuple[dict[object, object], ...] = (_EMPTY_LEAF,) * _WIDTH
_EMPTY_ROOT = (_EMPTY_NODE,) * _WIDTH


_MASK = _WIDTH - 1


def _slots(key: object) -> tuple[int, int]:
    h = hash(key)
    return (h >> 6) & _MASK, h & _MASK


class PMap(Mapping[K, V], Generic[K, V]):
    """Immutable mapping; `set` and `remove` return a new map sharing untouched parts."""

    __slots__ = ("_len", "_root")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        self._root: tuple[tuple[dict[K, V], ...], ...] = _EMPTY_ROOT  # type: ignore[assignment]
        self._len = 0
        if items:
            built = PMap[K, V]()
            for key, value in items.items():
                built = built.set(key, value)
            self._root, self._len = built._root, built._len

    @classmethod
    def _make(cls, root: tuple[tuple[dict[K, V], ...], ...], length: int) -> PMap[K, V]:
        new: PMap[K, V] = cls.__new__(cls)
        new._root = root
        new._len = length
        return new

    def _leaf(self, key: object) -> dict[K, V]:
        top, low = _slots(key)
        return self._root[top][low]

    def __getitem__(self, key: K) -> V:
        # Inlined `_leaf`: lookups run several times per command on the owner's hot path.
        h = hash(key)
        return self._root[(h >> 6) & _MASK][h & _MASK][key]

    @overload
    def get(self, key: K, /) -> V | None: ...

    @overload
    def get(self, key: K, /, default: V | T) -> V | T: ...

    def get(self, key: K, /, default: object = None) -> object:
        """The value of `key`, or `default` (without the Mapping mixin's try/except)."""
        h = hash(key)
        return self._root[(h >> 6) & _MASK][h & _MASK].get(key, default)

    def __iter__(self) -> Iterator[K]:
        for node in self._root:
            if node is not _EMPTY_NODE:
                for leaf in node:
                    yield from leaf

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        h = hash(key)
        return key in self._root[(h >> 6) & _MASK][h & _MASK]

    def _replace(self, key: object, leaf: dict[K, V], length: int) -> PMap[K, V]:
        top, low = _slots(key)
        node = list(self._root[top])
        node[low] = leaf
        root = list(self._root)
        root[top] = tuple(node)
        return PMap._make(tuple(root), length)

    def set(self, key: K, value: V) -> PMap[K, V]:
        """A new map with `key` bound to `value`."""
        old = self._leaf(key)
        leaf = dict(old)
        leaf[key] = value
        return self._replace(key, leaf, self._len + (0 if key in old else 1))

    def remove(self, key: K) -> PMap[K, V]:
        """A new map without `key` (the same map when it is absent)."""
        old = self._leaf(key)
        if key not in old:
            return self
        leaf = dict(old)
        del leaf[key]
        return self._replace(key, leaf, self._len - 1)

    def __repr__(self) -> str:
        return f"PMap({dict(self.items())!r})"
