"""Hit/miss accounting."""

from collections import namedtuple

CacheInfo = namedtuple("CacheInfo", "hits misses evictions expirations maxsize currsize")


class Counters:
    __slots__ = ("hits", "misses", "evictions", "expirations")

    def __init__(self):
        self.reset()

    def reset(self):
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expirations = 0

    def snapshot(self, maxsize, currsize):
        return CacheInfo(self.hits, self.misses, self.evictions, self.expirations, maxsize, currsize)
