"""A circular doubly-linked list with a sentinel, ordered oldest to newest.

The cache keeps one node per entry so that touching, evicting and removing
an entry are all O(1).
"""


class Node:
    __slots__ = ("key", "value", "expires", "prev", "next")

    def __init__(self, key=None, value=None, expires=None):
        self.key = key
        self.value = value
        self.expires = expires
        self.prev = self
        self.next = self


class OrderList:
    def __init__(self):
        self._root = Node()
        self._size = 0

    def __len__(self):
        return self._size

    def append(self, node):
        """Insert `node` as the newest entry."""
        last = self._root.prev
        node.prev, node.next = last, self._root
        last.next = node
        self._root.prev = node
        self._size += 1

    def unlink(self, node):
        node.prev.next = node.next
        node.next.prev = node.prev
        node.prev = node.next = node
        self._size -= 1

    def move_to_end(self, node):
        """Mark `node` as the newest entry."""
        self.unlink(node)
        self.append(node)

    def oldest(self):
        node = self._root.next
        return None if node is self._root else node

    def clear(self):
        self._root.prev = self._root.next = self._root
        self._size = 0

    def __iter__(self):
        node = self._root.next
        while node is not self._root:
            following = node.next
            yield node
            node = following

    def __reversed__(self):
        node = self._root.prev
        while node is not self._root:
            preceding = node.prev
            yield node
            node = preceding
