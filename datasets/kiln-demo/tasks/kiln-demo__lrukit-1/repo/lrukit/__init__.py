"""lrukit: an LRU cache with optional expiry."""

from .cache import LRUCache
from .memoize import memoize
from .stats import CacheInfo

__all__ = ["CacheInfo", "LRUCache", "memoize"]
__version__ = "2.0.3"
