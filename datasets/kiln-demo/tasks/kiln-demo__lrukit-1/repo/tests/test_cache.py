import threading
import unittest

from lrukit import LRUCache


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class TestLRUCache(unittest.TestCase):
    def test_basic_get_and_set(self):
        cache = LRUCache(maxsize=3)
        cache["a"] = 1
        self.assertEqual(cache["a"], 1)
        self.assertEqual(cache.get("missing", "dflt"), "dflt")
        with self.assertRaises(KeyError):
            cache["missing"]

    def test_evicts_least_recently_used(self):
        cache = LRUCache(maxsize=2)
        cache["a"] = 1
        cache["b"] = 2
        cache["c"] = 3
        self.assertNotIn("a", cache)
        self.assertEqual(list(cache), ["b", "c"])

    def test_get_refreshes_recency(self):
        cache = LRUCache(maxsize=2)
        cache["a"] = 1
        cache["b"] = 2
        cache.get("a")
        cache["c"] = 3
        self.assertEqual(list(cache), ["a", "c"])

    def test_peek_does_not_refresh(self):
        cache = LRUCache(maxsize=2)
        cache["a"] = 1
        cache["b"] = 2
        self.assertEqual(cache.peek("a"), 1)
        cache["c"] = 3
        self.assertEqual(list(cache), ["b", "c"])

    def test_overwrite_changes_value_without_growing(self):
        cache = LRUCache(maxsize=2)
        cache["a"] = 1
        cache["a"] = 2
        self.assertEqual(len(cache), 1)
        self.assertEqual(cache["a"], 2)

    def test_pop_popitem_and_delete(self):
        cache = LRUCache()
        cache.set("a", 1)
        cache.set("b", 2)
        cache.set("c", 3)
        self.assertEqual(cache.pop("b"), 2)
        self.assertEqual(cache.pop("b", None), None)
        self.assertEqual(cache.popitem(), ("a", 1))
        del cache["c"]
        self.assertEqual(len(cache), 0)
        with self.assertRaises(KeyError):
            cache.popitem()

    def test_setdefault(self):
        cache = LRUCache(maxsize=2)
        self.assertEqual(cache.setdefault("a", []), [])
        cache["a"].append(1)
        self.assertEqual(cache.setdefault("a", None), [1])

    def test_on_evict_callback(self):
        evicted = []
        cache = LRUCache(maxsize=1, on_evict=lambda k, v: evicted.append((k, v)))
        cache["a"] = 1
        cache["b"] = 2
        self.assertEqual(evicted, [("a", 1)])

    def test_resize_evicts_oldest(self):
        cache = LRUCache(maxsize=4)
        for i, key in enumerate("abcd"):
            cache[key] = i
        cache.resize(2)
        self.assertEqual(list(cache), ["c", "d"])
        self.assertEqual(cache.info().evictions, 2)

    def test_statistics(self):
        cache = LRUCache(maxsize=1)
        cache["a"] = 1
        cache.get("a")
        cache.get("b")
        cache["b"] = 2
        info = cache.info()
        self.assertEqual((info.hits, info.misses, info.evictions), (1, 1, 1))
        self.assertEqual((info.maxsize, info.currsize), (1, 1))
        cache.reset_stats()
        self.assertEqual(cache.info().hits, 0)

    def test_unbounded(self):
        cache = LRUCache(maxsize=None)
        for i in range(1000):
            cache[i] = i
        self.assertEqual(len(cache), 1000)

    def test_invalid_arguments(self):
        with self.assertRaises(ValueError):
            LRUCache(maxsize=0)
        with self.assertRaises(ValueError):
            LRUCache(ttl=0)

    def test_concurrent_writers_respect_maxsize(self):
        cache = LRUCache(maxsize=50)

        def writer(offset):
            for i in range(500):
                cache[offset + i] = i

        threads = [threading.Thread(target=writer, args=(n * 1000,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(cache), 50)


class TestExpiry(unittest.TestCase):
    def setUp(self):
        self.clock = FakeClock()
        self.cache = LRUCache(maxsize=3, ttl=10, clock=self.clock)

    def test_entry_expires(self):
        self.cache["a"] = 1
        self.clock.advance(9.9)
        self.assertEqual(self.cache.get("a"), 1)
        self.clock.advance(0.1)
        self.assertIsNone(self.cache.get("a"))
        self.assertEqual(self.cache.info().expirations, 1)

    def test_overwrite_restarts_the_clock(self):
        self.cache["a"] = 1
        self.clock.advance(8)
        self.cache["a"] = 2
        self.clock.advance(8)
        self.assertEqual(self.cache.get("a"), 2)

    def test_reads_do_not_extend_life(self):
        self.cache["a"] = 1
        self.clock.advance(6)
        self.cache.get("a")
        self.clock.advance(6)
        self.assertNotIn("a", self.cache)

    def test_expired_entries_make_room_before_eviction(self):
        evicted = []
        cache = LRUCache(maxsize=2, ttl=10, clock=self.clock, on_evict=lambda k, v: evicted.append(k))
        cache["old"] = 0
        self.clock.advance(5)
        cache["a"] = 1
        self.clock.advance(6)
        cache["b"] = 2
        self.assertEqual(evicted, [])
        self.assertEqual(list(cache), ["a", "b"])

    def test_len_and_items_skip_expired(self):
        self.cache["a"] = 1
        self.clock.advance(5)
        self.cache["b"] = 2
        self.clock.advance(5)
        self.assertEqual(len(self.cache), 1)
        self.assertEqual(self.cache.items(), [("b", 2)])


if __name__ == "__main__":
    unittest.main()
