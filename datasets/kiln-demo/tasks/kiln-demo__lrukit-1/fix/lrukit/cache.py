"""The LRU cache."""

import threading
import time

from .linked import Node, OrderList
from .stats import Counters

_MISSING = object()


class LRUCache:
    """A mapping that holds at most `maxsize` entries.

    When full, inserting a new key evicts the least recently used entry;
    reading or writing an entry makes it the most recently used. With `ttl`
    (seconds), entries also expire that long after they were last written.
    `clock` returns the current time in seconds and exists for tests.

    All public methods are safe to call from several threads.
    """

    def __init__(self, maxsize=128, ttl=None, clock=time.monotonic, on_evict=None):
        if maxsize is not None and maxsize < 1:
            raise ValueError("maxsize must be at least 1 (or None for no limit)")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive")
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._on_evict = on_evict
        self._nodes = {}
        self._order = OrderList()
        self._counters = Counters()
        self._lock = threading.RLock()

    # -- reading -------------------------------------------------------------

    def get(self, key, default=None):
        with self._lock:
            node = self._live_node(key)
            if node is None:
                self._counters.misses += 1
                return default
            self._counters.hits += 1
            self._order.move_to_end(node)
            return node.value

    def peek(self, key, default=None):
        """Like get, without touching recency or the statistics."""
        with self._lock:
            node = self._live_node(key)
            return default if node is None else node.value

    def __getitem__(self, key):
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key):
        with self._lock:
            return self._live_node(key) is not None

    def __len__(self):
        with self._lock:
            self._purge_expired()
            return len(self._nodes)

    def __iter__(self):
        """Keys from least to most recently used."""
        with self._lock:
            self._purge_expired()
            return iter([node.key for node in self._order])

    def items(self):
        with self._lock:
            self._purge_expired()
            return [(node.key, node.value) for node in self._order]

    # -- writing -------------------------------------------------------------

    def set(self, key, value):
        with self._lock:
            expires = None if self.ttl is None else self._clock() + self.ttl
            node = self._nodes.get(key)
            if node is not None:
                node.value = value
                node.expires = expires
                self._order.move_to_end(node)
                return
            node = Node(key, value, expires)
            self._nodes[key] = node
            self._order.append(node)
            self._shrink_to(self.maxsize)

    __setitem__ = set

    def setdefault(self, key, default=None):
        with self._lock:
            node = self._live_node(key)
            if node is not None:
                self._order.move_to_end(node)
                return node.value
            self.set(key, default)
            return default

    def pop(self, key, default=_MISSING):
        with self._lock:
            node = self._live_node(key)
            if node is None:
                if default is _MISSING:
                    raise KeyError(key)
                return default
            self._remove(node)
            return node.value

    def __delitem__(self, key):
        self.pop(key)

    def popitem(self):
        """Remove and return the least recently used (key, value)."""
        with self._lock:
            self._purge_expired()
            node = self._order.oldest()
            if node is None:
                raise KeyError("popitem(): cache is empty")
            self._remove(node)
            return node.key, node.value

    def clear(self):
        with self._lock:
            self._nodes.clear()
            self._order.clear()

    def resize(self, maxsize):
        """Change the capacity, evicting the oldest entries if it shrinks."""
        if maxsize is not None and maxsize < 1:
            raise ValueError("maxsize must be at least 1 (or None for no limit)")
        with self._lock:
            self.maxsize = maxsize
            self._shrink_to(maxsize)

    # -- statistics ----------------------------------------------------------

    def info(self):
        with self._lock:
            return self._counters.snapshot(self.maxsize, len(self._nodes))

    def reset_stats(self):
        with self._lock:
            self._counters.reset()

    # -- internals -----------------------------------------------------------

    def _expired(self, node, now=None):
        if node.expires is None:
            return False
        return (self._clock() if now is None else now) >= node.expires

    def _live_node(self, key):
        node = self._nodes.get(key)
        if node is None:
            return None
        if self._expired(node):
            self._remove(node)
            self._counters.expirations += 1
            return None
        return node

    def _remove(self, node):
        del self._nodes[node.key]
        self._order.unlink(node)

    def _purge_expired(self):
        if self.ttl is None:
            return
        now = self._clock()
        for node in list(self._order):
            if self._expired(node, now):
                self._remove(node)
                self._counters.expirations += 1

    def _shrink_to(self, maxsize):
        if maxsize is None:
            return
        self._purge_expired()
        while len(self._nodes) > maxsize:
            node = self._order.oldest()
            self._remove(node)
            self._counters.evictions += 1
            if self._on_evict is not None:
                self._on_evict(node.key, node.value)
