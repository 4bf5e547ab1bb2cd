import unittest

from lrukit import memoize
from lrukit.memoize import make_key


class TestMemoize(unittest.TestCase):
    def test_results_are_cached(self):
        calls = []

        @memoize(maxsize=4)
        def square(x):
            calls.append(x)
            return x * x

        self.assertEqual([square(2), square(2), square(3)], [4, 4, 9])
        self.assertEqual(calls, [2, 3])
        info = square.cache_info()
        self.assertEqual((info.hits, info.misses), (1, 2))

    def test_bare_decorator(self):
        @memoize
        def ident(x):
            return x

        self.assertEqual(ident(5), 5)
        self.assertEqual(ident.cache.maxsize, 128)
        self.assertEqual(ident.__name__, "ident")

    def test_keyword_order_does_not_matter(self):
        self.assertEqual(make_key((), {"a": 1, "b": 2}), make_key((), {"b": 2, "a": 1}))
        self.assertNotEqual(make_key((1,), {}), make_key((), {"x": 1}))

    def test_typed_keys(self):
        self.assertEqual(make_key((1,), {}), make_key((1.0,), {}))
        self.assertNotEqual(make_key((1,), {}, typed=True), make_key((1.0,), {}, typed=True))

    def test_ttl_with_clock(self):
        now = [0.0]
        calls = []

        @memoize(ttl=5, clock=lambda: now[0])
        def fetch(name):
            calls.append(name)
            return name.upper()

        fetch("x")
        now[0] = 4.0
        fetch("x")
        now[0] = 5.0
        fetch("x")
        self.assertEqual(calls, ["x", "x"])

    def test_cache_clear(self):
        @memoize(maxsize=2)
        def f(x):
            return object()

        first = f(1)
        f.cache_clear()
        self.assertIsNot(f(1), first)


if __name__ == "__main__":
    unittest.main()
