"""The pure transparency log (exchange/tlog): published vectors first, then properties.

Vectors: the Certificate Transparency reference tree (RFC 6962 test data: eight leaves, the
root of every prefix, audit paths, consistency proofs) and golang/mod's sumdb/note tests
(a key pair, a note and its exact signature).
"""

from __future__ import annotations

import pytest

from exchange.errors import BadProof, BadSignature, MalformedNote
from exchange.tlog import checkpoint, note, proof, tile, tree

CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}

# golang/mod sumdb/note/note_test.go
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
    "qdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTG"
    "wnWLox33WWd1RvMc+QQ=\n"
)


def _ct_tree(size: int) -> tree.MemoryHashes:
    hashes = tree.MemoryHashes()
    for data in CT_LEAVES[:size]:
        hashes.append(data)
    return hashes


def _hex(items: list[bytes]) -> list[str]:
    return [h.hex() for h in items]


@pytest.mark.parametrize("size", range(1, 9))
def test_the_incremental_root_of_every_ct_prefix_is_the_published_root(size: int) -> None:
    assert _ct_tree(size).root().hex() == CT_ROOTS[size - 1]


def test_the_empty_tree_hashes_to_sha256_of_nothing() -> None:
    assert tree.MemoryHashes().root().hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize(("index", "size"), sorted(CT_INCLUSION))
def test_audit_paths_are_the_published_ones_and_verify(index: int, size: int) -> None:
    hashes = _ct_tree(size)
    path = proof.prove_inclusion(index, size, hashes.read)
    assert _hex(path) == CT_INCLUSION[index, size]
    leaf = tree.leaf_hash(CT_LEAVES[index])
    proof.verify_inclusion(index, size, leaf, path, bytes.fromhex(CT_ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new"), sorted(CT_CONSISTENCY))
def test_consistency_proofs_are_the_published_ones_and_verify(old: int, new: int) -> None:
    hashes = _ct_tree(new)
    path = proof.prove_consistency(old, new, hashes.read)
    assert _hex(path) == CT_CONSISTENCY[old, new]
    old_root, new_root = bytes.fromhex(CT_ROOTS[old - 1]), bytes.fromhex(CT_ROOTS[new - 1])
    proof.verify_consistency(old, new, old_root, new_root, path)


def test_every_proof_of_every_small_tree_verifies_and_a_flipped_bit_does_not() -> None:
    data = [i.to_bytes(4, "big") for i in range(40)]
    hashes = tree.MemoryHashes()
    leaves = [tree.leaf_hash(d) for d in data]
    roots = [tree.EMPTY_HASH]
    for d in data:
        hashes.append(d)
        roots.append(hashes.root())
        assert roots[-1] == tree.merkle_root(leaves[: hashes.size])
    for size in range(1, 41):
        for index in range(size):
            path = proof.prove_inclusion(index, size, hashes.read)
            proof.verify_inclusion(index, size, leaves[index], path, roots[size])
            if path:
                bad = [path[0][:-1] + bytes([path[0][-1] ^ 1]), *path[1:]]
                with pytest.raises(BadProof):
                    proof.verify_inclusion(index, size, leaves[index], bad, roots[size])
        for old in range(0, size + 1):
            path = proof.prove_consistency(old, size, hashes.read)
            proof.verify_consistency(old, size, roots[old], roots[size], path)
            if 0 < old < size:
                with pytest.raises(BadProof):
                    proof.verify_consistency(old, size, roots[old - 1], roots[size], path)


def test_stored_hash_indexes_are_dense_and_split_back() -> None:
    seen = []
    for n in range(300):
        seen.append(tree.stored_hash_index(0, n))
        for level in range(1, tree._trailing_ones(n) + 1):
            seen.append(tree.stored_hash_index(level, n >> level))
    assert seen == list(range(len(seen)))
    assert tree.stored_hash_count(300) == len(seen)
    for index in seen:
        level, n = tree.split_stored_hash_index(index)
        assert tree.stored_hash_index(level, n) == index


def test_appending_reads_only_the_hashes_the_new_leaf_completes() -> None:
    assert tree.append_indexes(0) == []
    assert len(tree.append_indexes(1023)) == 10  # completes subtrees of 2, 4, …, 1024 leaves
    assert len(tree.append_indexes(1024)) == 0


def test_the_go_note_vector_signs_byte_for_byte() -> None:
    signer = note.parse_signer(PETER_SKEY)
    assert note.sign(TEXT, [signer]) == TEXT + "\n" + PETER_SIG
    assert str(signer.verifier) == PETER_VKEY
    assert str(signer) == PETER_SKEY


def test_the_go_note_with_two_signatures_opens_with_either_key() -> None:
    message = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    peter, enoch = note.parse_verifier(PETER_VKEY), note.parse_verifier(ENOCH_VKEY)
    parsed, good = note.open_note(message, [enoch])
    assert parsed.text == TEXT and good == [enoch]
    _, good = note.open_note(message, [peter, enoch])
    assert good == [peter, enoch]


def test_a_note_signed_by_another_key_is_refused() -> None:
    other = note.generate_signer("PeterNeumann")
    with pytest.raises(BadSignature):
        note.open_note(note.sign(TEXT, [other]), [note.parse_verifier(PETER_VKEY)])


def test_a_changed_text_fails_the_known_key() -> None:
    forged = TEXT.replace("answer", "answers") + "\n" + PETER_SIG
    with pytest.raises(BadSignature):
        note.open_note(forged, [note.parse_verifier(PETER_VKEY)])


@pytest.mark.parametrize(
    "vkey",
    [
        PETER_VKEY[:-1],
        PETER_VKEY.replace("c74f20a3", "c74f20a4"),
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_mangled_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(MalformedNote):
        note.parse_verifier(vkey)


def test_a_checkpoint_note_round_trips_and_checks_its_origin() -> None:
    signer = note.generate_signer("kpx/XS")
    cp = checkpoint.Checkpoint("kpx/XS", 8, bytes.fromhex(CT_ROOTS[7]))
    text = checkpoint.sign_checkpoint(cp, signer)
    assert text.startswith("kpx/XS\n8\nXcnaeacGWamtVZy3Ad7Zoqudgjqt")
    got, _ = checkpoint.open_checkpoint(text, signer.verifier, "kpx/XS")
    assert got == cp
    with pytest.raises(MalformedNote):
        checkpoint.open_checkpoint(text, signer.verifier, "kpx/XT")


def test_a_cosignature_signs_the_v1_message_under_a_type_4_key_id() -> None:
    witness = note.generate_signer("kpx/XS/witness/AA")
    body = checkpoint.Checkpoint("kpx/XS", 3, bytes(32)).body()
    sig = checkpoint.cosign(body, witness, 1679315147)
    verifier = checkpoint.cosigner_verifier(witness.name, witness.verifier.public_key)
    assert sig.key_id == note.key_id(witness.name, 0x04, witness.verifier.public_key)
    assert sig.key_id != witness.verifier.key_id  # 0x01 and 0x04 ids differ
    assert sig.signature[:8] == (1679315147).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\nkpx/XS\n3\n" + b"A" * 43 + b"=\n"
    assert witness.verifier.verify(message, sig.signature[8:])
    assert checkpoint.verify_cosignature(body, sig, verifier) == 1679315147
    with pytest.raises(MalformedNote):
        checkpoint.verify_cosignature(body.replace("3", "4", 1), sig, verifier)


def test_tile_paths_follow_the_spec_examples() -> None:
    assert tile.Tile(0, 1234067, 256).path() == "tile/0/x001/x234/067"
    assert tile.Tile(1, 5, 17).path() == "tile/1/005.p/17"
    assert tile.Tile(0, 0, 3).entries_path() == "tile/entries/000.p/3"
    assert tile.parse_path("tile/0/x001/x234/067") == (0, 1234067, 256)
    assert tile.parse_path("tile/entries/005.p/17") == (None, 5, 17)
    with pytest.raises(MalformedNote):
        tile.parse_path("tile/0/1234067")


def test_a_tree_of_70000_has_the_partial_tiles_the_spec_lists() -> None:
    assert tile.tile_for_size(0, 273, 70_000).width == 112
    assert tile.tile_for_size(1, 0, 70_000).width == 256
    assert tile.tile_for_size(1, 1, 70_000).width == 17
    assert tile.tile_for_size(2, 0, 70_000).width == 1


def test_a_level_one_tile_hash_is_the_root_of_256_leaves() -> None:
    hashes = tree.MemoryHashes()
    for i in range(300):
        hashes.append(i.to_bytes(2, "big"))
    leaves = [tree.leaf_hash(i.to_bytes(2, "big")) for i in range(300)]
    assert hashes.read(tile.Tile(0, 1, 44).hash_indexes()) == leaves[256:]
    [top] = hashes.read(tile.tile_for_size(1, 0, 300).hash_indexes())
    assert top == tree.merkle_root(leaves[:256])


def test_every_stored_hash_is_read_back_from_the_tiles_of_the_tree() -> None:
    """What a tile client reads: heights between tile levels come from the tile below."""
    hashes = tree.MemoryHashes()
    for i in range(70_000):
        hashes.append(i.to_bytes(3, "big"))
    size = hashes.size
    for index in [
        *range(600),
        *range(tree.stored_hash_count(size) - 600, tree.stored_hash_count(size)),
    ]:
        wanted, height, position = tile.tile_for_hash(index, size)
        levels = tile.tile_levels(b"".join(hashes.read(wanted.hash_indexes())))
        assert levels[height][position] == hashes.hashes[index], index
    # height 9 = tile level 1, one pair up: the 4th pair of level-1 tile 0
    assert tile.tile_for_hash(tree.stored_hash_index(9, 3), size) == (tile.Tile(1, 0, 256), 1, 3)
    with pytest.raises(MalformedNote):  # the subtree [69888, 70144) is not complete yet
        tile.tile_for_hash(tree.stored_hash_index(8, 273), size)


def test_an_entry_bundle_parses_back_to_exactly_its_entries() -> None:
    entries = [b"", b"a", b"x" * 300]
    bundle = tile.entry_bundle(entries)
    assert tile.parse_entry_bundle(bundle, 3) == entries
    for bad, width in ((bundle, 2), (bundle[:-1], 3), (bundle + b"\x00", 3)):
        with pytest.raises(MalformedNote):
            tile.parse_entry_bundle(bad, width)


def test_the_right_edge_stores_what_the_stored_hash_index_expects() -> None:
    hashes = tree.MemoryHashes()
    edge = tree.RightEdge(0, [])
    resumed_next: list[tuple[int, bytes]] | None = None
    for i in range(70):
        data = i.to_bytes(2, "big")
        stored = edge.append(tree.leaf_hash(data))
        start = len(hashes.hashes)
        hashes.append(data)
        assert stored == list(enumerate(hashes.hashes[start:], start))
        assert resumed_next is None or resumed_next == stored  # an edge resumed at size i
        assert edge.root() == hashes.root()
        resumed = tree.RightEdge(hashes.size, hashes.read(tree.range_indexes(0, hashes.size)))
        assert resumed.root() == hashes.root()
        resumed_next = resumed.append(tree.leaf_hash((i + 1).to_bytes(2, "big")))
