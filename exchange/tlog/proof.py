"""Inclusion and consistency proofs, RFC 9162 §2.1.3 and §2.1.4.

A proof is built in two steps so that storage is read once: the pure recursion of the RFC
names the subtree *ranges* whose hashes the proof lists; :func:`proof_indexes` turns them into
stored-hash indexes; :func:`assemble` folds the stored hashes read back into the proof.
"""

from __future__ import annotations

from collections.abc import Sequence

from exchange.errors import BadProof
from exchange.tlog.tree import HashReader, fold_range, node_hash, range_indexes

Range = tuple[int, int]  # D[lo:hi]


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """PATH(index, D[0:size]) as ranges, leaf-most first."""
    if not 0 <= index < size:
        raise BadProof(f"leaf index {index} is outside a tree of size {size}")
    out: list[Range] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m = lo + k, m - k
    out.reverse()
    return out


def consistency_ranges(old: int, new: int) -> list[Range]:
    """PROOF(old, D[0:new]) as ranges (SUBPROOF with b = true), RFC 9162 §2.1.4.1."""
    if not 0 <= old <= new:
        raise BadProof(f"no consistency proof from size {old} to size {new}")
    if old in (0, new):
        return []
    out: list[Range] = []
    lo, hi, m, whole = 0, new, old, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        out.append((lo, hi))
    out.reverse()
    return out


def proof_indexes(ranges: Sequence[Range]) -> list[int]:
    """Every stored-hash index the ranges need, in order (with repeats)."""
    return [i for lo, hi in ranges for i in range_indexes(lo, hi)]


def assemble(ranges: Sequence[Range], hashes: Sequence[bytes]) -> list[bytes]:
    """Fold the stored hashes read for :func:`proof_indexes` into one hash per range."""
    out: list[bytes] = []
    at = 0
    for lo, hi in ranges:
        count = len(range_indexes(lo, hi))
        out.append(fold_range(hashes[at : at + count]))
        at += count
    return out


def prove_inclusion(index: int, size: int, read: HashReader) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves."""
    ranges = inclusion_ranges(index, size)
    return assemble(ranges, read(proof_indexes(ranges)))


def prove_consistency(old: int, new: int, read: HashReader) -> list[bytes]:
    """The consistency proof from the tree of ``old`` leaves to the tree of ``new``."""
    ranges = consistency_ranges(old, new)
    return assemble(ranges, read(proof_indexes(ranges)))


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root an audit path leads to, RFC 9162 §2.1.3.2; raises BadProof if malformed."""
    if not 0 <= index < size:
        raise BadProof(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise BadProof("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise BadProof("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """Raise BadProof unless ``path`` proves leaf hash ``leaf`` at ``index`` under ``root``."""
    if root_from_inclusion(index, size, leaf, path) != root:
        raise BadProof(f"leaf {index} is not included in the tree of size {size}")


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> None:
    """Raise BadProof unless ``path`` proves tree ``old`` a prefix of tree ``new``,
    RFC 9162 §2.1.4.2."""
    if not 0 <= old <= new:
        raise BadProof(f"a tree of size {old} cannot precede one of size {new}")
    if old == 0 or old == new:
        if path:
            raise BadProof(f"consistency from {old} to {new} takes an empty proof")
        if old == new and old_root != new_root:
            raise BadProof(f"two different roots for the tree of size {old}")
        return
    if not path:
        raise BadProof(f"empty consistency proof from {old} to {new}")
    items = list(path)
    if old & (old - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        items.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = items[0]
    for c in items[1:]:
        if sn == 0:
            raise BadProof("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise BadProof(f"tree {old} is not a prefix of tree {new} under these roots")
