"""A per-process, bounded, time-limited cache of routing and authorization answers."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

from silo_router.conf import conf

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LookupCache(Generic[K, V]):
    """Answers kept for ``RESOLVER_CACHE_SECONDS``, at most ``RESOLVER_CACHE_SIZE`` of them.

    The least recently used answer is evicted first, so lookups for any number of unknown
    keys cannot grow it. ``clear`` takes (and ignores) a signal's keyword arguments, so it
    can be connected to ``post_save`` and friends as it is.
    """

    def __init__(self) -> None:
        self._entries: collections.OrderedDict[K, tuple[float, V]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, *, now: float | None = None) -> V | None:
        """The answer for ``key`` if one is cached and still fresh."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
        at, value = hit
        return value if now - at <= conf.RESOLVER_CACHE_SECONDS else None

    def put(self, key: K, value: V, *, now: float | None = None) -> None:
        """Remember ``value`` for ``key`` (evicting the least recently used beyond the limit)."""
        now = time.monotonic() if now is None else now
        limit = conf.RESOLVER_CACHE_SIZE
        with self._lock:
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > limit:
                self._entries.popitem(last=False)

    def clear(self, **kwargs: object) -> None:
        """Forget every answer."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
