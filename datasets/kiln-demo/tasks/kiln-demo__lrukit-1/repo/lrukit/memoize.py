"""@memoize: cache a function's results in an LRUCache."""

import functools

from .cache import LRUCache

_KWARGS_MARK = object()


def make_key(args, kwargs, typed=False):
    """A hashable key for a call. Keyword order does not matter; with
    `typed`, 1 and 1.0 are different keys."""
    key = tuple(args)
    if kwargs:
        key += (_KWARGS_MARK,) + tuple(sorted(kwargs.items()))
    if typed:
        key += tuple(type(a) for a in args)
        key += tuple(type(v) for _, v in sorted(kwargs.items()))
    return key


def memoize(maxsize=128, ttl=None, typed=False, clock=None):
    """Decorator factory. The wrapped function gains `cache` (the LRUCache),
    `cache_info()` and `cache_clear()`."""

    def decorate(func):
        options = {"maxsize": maxsize, "ttl": ttl}
        if clock is not None:
            options["clock"] = clock
        cache = LRUCache(**options)
        sentinel = object()

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            key = make_key(args, kwargs, typed)
            value = cache.get(key, sentinel)
            if value is sentinel:
                value = func(*args, **kwargs)
                cache.set(key, value)
            return value

        wrapper.cache = cache
        wrapper.cache_info = cache.info
        wrapper.cache_clear = cache.clear
        return wrapper

    if callable(maxsize) and ttl is None and not typed:
        # Used bare, as @memoize.
        func, maxsize = maxsize, 128
        return decorate(func)
    return decorate
