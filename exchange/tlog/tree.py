"""RFC 6962 Merkle tree hashing over stored hashes, after golang/mod ``sumdb/tlog/tlog.go``.

Every complete subtree — ``2**level`` leaves starting at a multiple of ``2**level`` — has one
hash, stored once when its last leaf arrives, at a dense *stored-hash index* that interleaves
the levels in the order the hashes appear. Appending leaf ``n`` therefore stores exactly
``1 + trailing_ones(n)`` hashes, reading as many, whatever the size of the tree: the cost
of an append is independent of the log's length. Any tree hash, proof or tile is then a
handful of stored hashes combined.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_HASH = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = SHA-256()

# Reads stored hashes by stored-hash index, in the order asked.
HashReader = Callable[[Sequence[int]], Sequence[bytes]]


def leaf_hash(data: bytes) -> bytes:
    """MTH of one entry: SHA-256(0x00 ‖ data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def stored_hash_index(level: int, n: int) -> int:
    """Where the hash of the ``n``-th complete subtree of height ``level`` is stored."""
    for _ in range(level):  # the last leaf of that subtree: its hashes are stored together
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of :func:`stored_hash_index`: ``(level, n)``."""
    # Leaf n is at a stored index of about 2n; walk up from an estimate.
    n = index // 2
    index_n = stored_hash_index(0, n)
    while index_n > index:
        n -= 1
        index_n = stored_hash_index(0, n)
    while True:
        x = index_n + 1 + _trailing_ones(n)  # where leaf n+1 starts
        if x > index:
            break
        n += 1
        index_n = x
    level = index - index_n
    return level, n >> level


def stored_hash_count(size: int) -> int:
    """How many hashes a tree of ``size`` leaves stores."""
    if size == 0:
        return 0
    return stored_hash_index(0, size - 1) + 1 + _trailing_ones(size - 1)


def _trailing_ones(n: int) -> int:
    return ((n ^ (n + 1)) >> 1).bit_length()


def append_indexes(n: int) -> list[int]:
    """The stored hashes appending leaf ``n`` needs: the left siblings it completes, lowest
    level first."""
    return [stored_hash_index(level, (n >> level) - 1) for level in range(_trailing_ones(n))]


def hashes_to_store(n: int, leaf: bytes, siblings: Sequence[bytes]) -> list[bytes]:
    """The hashes stored for leaf ``n``, at ``stored_hash_index(0, n)`` onwards.

    ``siblings`` are the stored hashes at :func:`append_indexes` ``(n)``, in that order.
    """
    out = [leaf]
    h = leaf
    for left in siblings:
        h = node_hash(left, h)
        out.append(h)
    return out


def _maxpow2(n: int) -> tuple[int, int]:
    """The largest power of two ``k < n`` (for n ≥ 2) or 1, and its log2."""
    level = 0
    while (1 << (level + 1)) < n:
        level += 1
    return 1 << level, level


def range_indexes(lo: int, hi: int) -> list[int]:
    """Stored hashes whose combination is MTH(D[lo:hi]), for a range RFC 9162's recursion
    produces: ``lo`` aligned to the largest complete subtree that fits."""
    need: list[int] = []
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        if lo & (k - 1):
            raise ValueError(f"range [{lo}, {hi}) is not one the tree recursion produces")
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes :func:`range_indexes` named, right to left."""
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def tree_hash(size: int, read: HashReader) -> bytes:
    """MTH of the first ``size`` leaves from stored hashes (at most log2(size) reads)."""
    if size == 0:
        return EMPTY_HASH
    return fold_range(read(range_indexes(0, size)))


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH straight from RFC 9162's definition: a reference for checks, O(n) memory."""
    if not leaf_hashes:
        return EMPTY_HASH
    if len(leaf_hashes) == 1:
        return leaf_hashes[0]
    k, _ = _maxpow2(len(leaf_hashes))
    return node_hash(merkle_root(leaf_hashes[:k]), merkle_root(leaf_hashes[k:]))


class RightEdge:
    """The complete subtrees on a tree's right edge: all appending and the root need.

    Built from the stored hashes at ``range_indexes(0, size)``; :meth:`append` returns the
    ``(stored-hash index, hash)`` pairs a new leaf adds, so a batch of appends reads
    log2(size) hashes once and computes the rest in memory.
    """

    def __init__(self, size: int, edge: Sequence[bytes]) -> None:
        self.size = size
        # (height, hash), largest subtree first: the binary digits of size, high to low
        heights = [level for level in range(size.bit_length() - 1, -1, -1) if size >> level & 1]
        if len(heights) != len(edge):
            raise ValueError(f"a tree of size {size} has {len(heights)} edge hashes")
        self.edge = list(zip(heights, edge, strict=True))
        # Leaf n's hashes are stored from stored_hash_index(0, n) on, one index a level, and
        # leaf n + 1's right after them: counted on instead of recomputed bit by bit.
        self._next_index = stored_hash_index(0, size)

    def append(self, leaf: bytes) -> list[tuple[int, bytes]]:
        """Add a leaf hash; returns what to store."""
        index = self._next_index
        out = [(index, leaf)]
        height, h = 0, leaf
        while self.edge and self.edge[-1][0] == height:
            _, left = self.edge.pop()
            h = node_hash(left, h)
            height += 1
            index += 1
            out.append((index, h))
        self.edge.append((height, h))
        self.size += 1
        self._next_index = index + 1
        return out

    def root(self) -> bytes:
        """The tree hash of the current size."""
        if not self.edge:
            return EMPTY_HASH
        return fold_range([h for _, h in self.edge])


class MemoryHashes:
    """Stored hashes in a list: the reference store for tests, verifiers and the benchmark."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.size = 0

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        """A :data:`HashReader`."""
        return [self.hashes[i] for i in indexes]

    def append(self, data: bytes) -> int:
        """Append one entry; returns its leaf index."""
        n = self.size
        self.hashes += hashes_to_store(n, leaf_hash(data), self.read(append_indexes(n)))
        self.size += 1
        return n

    def root(self) -> bytes:
        """The current tree hash."""
        return tree_hash(self.size, self.read)
