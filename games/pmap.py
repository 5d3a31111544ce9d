"""A small persistent (immutable, structure-sharing) hash map.

Frozen game states hold per-user tallies for every player of a campaign. Copying a
plain dict on each command would cost O(players); this map splits keys over a fixed
number of buckets so an update copies one bucket plus the bucket tuple: about
O(players / 256 + 256) pointer copies, independent of the campaign's size in practice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_BUCKETS = 256
_EMPTY: dict[object, object] = {}


class PMap(Mapping[K, V], Generic[K, V]):
    """Immutable mapping; `set` and `remove` return a new map sharing untouched buckets."""

    __slots__ = ("_buckets", "_len")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        buckets: list[dict[K, V]] = [_EMPTY for _ in range(_BUCKETS)]  # type: ignore[misc]
        count = 0
        for key, value in (items or {}).items():
            index = hash(key) % _BUCKETS
            if buckets[index] is _EMPTY:
                buckets[index] = {}
            buckets[index][key] = value
            count += 1
        self._buckets: tuple[dict[K, V], ...] = tuple(buckets)
        self._len = count

    @classmethod
    def _make(cls, buckets: tuple[dict[K, V], ...], length: int) -> PMap[K, V]:
        new: PMap[K, V] = cls.__new__(cls)
        new._buckets = buckets
        new._len = length
        return new

    def __getitem__(self, key: K) -> V:
        return self._buckets[hash(key) % _BUCKETS][key]

    def __iter__(self) -> Iterator[K]:
        for bucket in self._buckets:
            yield from bucket

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        return key in self._buckets[hash(key) % _BUCKETS]

    def set(self, key: K, value: V) -> PMap[K, V]:
        """A new map with `key` bound to `value`."""
        index = hash(key) % _BUCKETS
        old = self._buckets[index]
        bucket = dict(old)
        bucket[key] = value
        buckets = self._buckets[:index] + (bucket,) + self._buckets[index + 1 :]
        return PMap._make(buckets, self._len + (0 if key in old else 1))

    def remove(self, key: K) -> PMap[K, V]:
        """A new map without `key` (the same map when it is absent)."""
        index = hash(key) % _BUCKETS
        old = self._buckets[index]
        if key not in old:
            return self
        bucket = dict(old)
        del bucket[key]
        buckets = self._buckets[:index] + (bucket,) + self._buckets[index + 1 :]
        return PMap._make(buckets, self._len - 1)

    def __repr__(self) -> str:
        return f"PMap({dict(self.items())!r})"
