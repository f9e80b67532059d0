"""kpx's Merkle tree against an implementation that is not kpx's: ``pymerkle`` (RFC 9162 mode).

pymerkle (sha256, security on: the 0x00 / 0x01 prefixes of RFC 6962) builds the same tree
from the same entries with its own code. Its proof objects are its own format (sibling
hashes with direction bits, 1-based indexes), so the checks are:

- every tree hash kpx computes from stored hashes is pymerkle's root of the same entries;
- pymerkle's own verifier accepts kpx's roots and leaf hashes (inclusion and consistency);
- the audit path inside pymerkle's inclusion proof (its base dropped) is exactly kpx's RFC
  9162 audit path, and it verifies with kpx's verifier — proofs each side produce verify on
  the other.

The signed-note and checkpoint formats are checked against golang/mod's published vectors
in test_tlog.py; the Merkle vectors of RFC 6962's reference tree are there too.
"""

from __future__ import annotations

import random

import pymerkle
import pytest

from exchange.tlog import proof, tree

SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 33, 100, 257]


@pytest.fixture(scope="module")
def entries() -> list[bytes]:
    rng = random.Random(13)
    return [rng.randbytes(rng.randrange(0, 600)) for _ in range(max(SIZES))]


@pytest.fixture(scope="module")
def both(entries: list[bytes]) -> tuple[tree.MemoryHashes, pymerkle.InmemoryTree]:
    ours = tree.MemoryHashes()
    theirs = pymerkle.InmemoryTree(algorithm="sha256")
    for data in entries:
        ours.append(data)
        theirs.append_entry(data)
    return ours, theirs


@pytest.mark.parametrize("size", SIZES)
def test_tree_hashes_are_pymerkles_roots(
    size: int, both: tuple[tree.MemoryHashes, pymerkle.InmemoryTree]
) -> None:
    ours, theirs = both
    assert tree.tree_hash(size, ours.read) == theirs.get_root(size)


@pytest.mark.parametrize("size", SIZES)
def test_audit_paths_match_pymerkles_and_verify_both_ways(
    size: int, both: tuple[tree.MemoryHashes, pymerkle.InmemoryTree]
) -> None:
    ours, theirs = both
    root = tree.tree_hash(size, ours.read)
    for index in sorted({0, size // 3, size // 2, size - 1}):
        leaf = ours.hashes[tree.stored_hash_index(0, index)]
        theirs_proof = theirs.prove_inclusion(index + 1, size)  # pymerkle counts from 1
        pymerkle.verify_inclusion(leaf, root, theirs_proof)  # their verifier, our hashes
        their_path = [bytes.fromhex(h) for h in theirs_proof.serialize()["path"][1:]]
        our_path = proof.prove_inclusion(index, size, ours.read)
        assert our_path == their_path
        proof.verify_inclusion(index, size, leaf, their_path, root)  # ours, their proof


@pytest.mark.parametrize("size", SIZES[1:])
def test_pymerkle_finds_our_roots_consistent(
    size: int, both: tuple[tree.MemoryHashes, pymerkle.InmemoryTree]
) -> None:
    ours, theirs = both
    new_root = tree.tree_hash(size, ours.read)
    for old in sorted({1, size // 2, size - 1}):
        old_root = tree.tree_hash(old, ours.read)
        pymerkle.verify_consistency(old_root, new_root, theirs.prove_consistency(old, size))
        path = proof.prove_consistency(old, size, ours.read)
        proof.verify_consistency(old, size, old_root, new_root, path)
        with pytest.raises(pymerkle.InvalidProof):
            other = tree.tree_hash(old + 1, ours.read)
            pymerkle.verify_consistency(other, new_root, theirs.prove_consistency(old, size))
