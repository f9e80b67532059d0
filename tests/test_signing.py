"""Ed25519 signing, key files and the keyring (exchange/wire/signing.py); pure, no services."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import BadSignature, ConfigError, KeyFileError, UnknownKey
from exchange.wire.signing import (
    Keyring,
    Signer,
    VerifyKey,
    generate_key,
    latest_signer,
    load_public,
    load_signer,
    save_key,
)

MESSAGE = b"an Avro-encoded envelope with signature set to b''"

# Generating keys is cheap but not free; these two serve every test that does not need its own.
BW = generate_key("BW", now=date(2026, 11, 28))
ZA = generate_key("ZA", now=date(2026, 11, 28))


def keyring_of(*signers: Signer) -> Keyring:
    return Keyring([signer.verify_key for signer in signers])


def flip_bit(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_a_signature_verifies_with_the_producers_key() -> None:
    keyring_of(BW).verify(BW.key_id, "BW", MESSAGE, BW.sign(MESSAGE))


def test_a_signature_is_64_bytes_and_deterministic() -> None:
    assert len(BW.sign(MESSAGE)) == 64
    assert BW.sign(MESSAGE) == BW.sign(MESSAGE)


def test_key_id_names_producer_date_and_public_key_hash() -> None:
    signer = generate_key("XS-RECONCILER", now=date(2026, 1, 2))
    prefix, day, digest = signer.key_id.rsplit("-", 2)
    assert (prefix, day) == ("XS-RECONCILER", "20260102")
    # The hash is of this key's public half: another key of the same producer and day differs.
    assert digest == hashlib.sha256(signer.verify_key.public_key).hexdigest()[:8]
    other = generate_key("XS-RECONCILER", now=date(2026, 1, 2))
    assert other.key_id != signer.key_id


def test_a_producer_that_is_no_identity_is_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("bw/../x")):
        generate_key("bw/../x")


@given(data=st.binary(min_size=1, max_size=300), choice=st.data())
def test_a_bit_flip_anywhere_in_the_message_fails(data: bytes, choice: st.DataObject) -> None:
    signature = BW.sign(data)
    bit = choice.draw(st.integers(min_value=0, max_value=len(data) * 8 - 1))
    with pytest.raises(BadSignature, match=BW.key_id):
        keyring_of(BW).verify(BW.key_id, "BW", flip_bit(data, bit), signature)


def test_a_bit_flip_anywhere_in_the_signature_fails() -> None:
    signature = BW.sign(MESSAGE)
    keyring = keyring_of(BW)
    for bit in range(len(signature) * 8):
        with pytest.raises(BadSignature):
            keyring.verify(BW.key_id, "BW", MESSAGE, flip_bit(signature, bit))


@pytest.mark.parametrize("signature", [b"", b"\x00" * 63, b"\x00" * 65], ids=["0", "63", "65"])
def test_a_signature_of_the_wrong_length_is_a_bad_signature(signature: bytes) -> None:
    with pytest.raises(BadSignature, match=BW.key_id):
        keyring_of(BW).verify(BW.key_id, "BW", MESSAGE, signature)


def test_a_signature_by_another_key_fails() -> None:
    with pytest.raises(BadSignature):
        keyring_of(BW, ZA).verify(BW.key_id, "BW", MESSAGE, ZA.sign(MESSAGE))


def test_a_key_of_another_producer_is_an_unknown_key_naming_its_owner() -> None:
    with pytest.raises(UnknownKey, match=r"belongs to producer 'ZA', not 'BW'"):
        keyring_of(BW, ZA).verify(ZA.key_id, "BW", MESSAGE, ZA.sign(MESSAGE))


def test_an_unregistered_key_id_is_an_unknown_key() -> None:
    with pytest.raises(UnknownKey, match=ZA.key_id):
        keyring_of(BW).verify(ZA.key_id, "ZA", MESSAGE, ZA.sign(MESSAGE))


def test_adding_the_same_key_twice_is_harmless() -> None:
    keyring = keyring_of(BW)
    keyring.add(BW.verify_key)
    assert len(keyring) == 1


def test_the_keyring_refuses_a_different_key_under_a_known_key_id() -> None:
    keyring = keyring_of(BW)
    impostor = VerifyKey(BW.key_id, "BW", ZA.verify_key.public_key, BW.created_at)
    with pytest.raises(KeyFileError, match=f"{BW.key_id}.*already registered"):
        keyring.add(impostor)
    keyring.verify(BW.key_id, "BW", MESSAGE, BW.sign(MESSAGE))


def test_key_files_round_trip(tmp_path: Path) -> None:
    private_path, public_path = save_key(BW, tmp_path)
    assert private_path.name == f"{BW.key_id}.key.json"
    assert public_path.name == f"{BW.key_id}.pub.json"
    signer = load_signer(private_path)
    assert signer == BW
    assert load_public(public_path) == BW.verify_key
    keyring = Keyring()
    assert keyring.load_dir(tmp_path) == 1
    keyring.verify(BW.key_id, "BW", MESSAGE, signer.sign(MESSAGE))


def test_key_files_have_the_documented_fields(tmp_path: Path) -> None:
    private_path, public_path = save_key(BW, tmp_path)
    private = json.loads(private_path.read_text())
    public = json.loads(public_path.read_text())
    assert private.pop("private_key")
    assert private.pop("kind") == "private"
    assert public.pop("kind") == "public"
    assert private == public
    assert public["kpx_key"] == 1
    assert public["algorithm"] == "Ed25519"
    assert (public["key_id"], public["producer"]) == (BW.key_id, "BW")


def test_a_private_key_file_is_mode_0600(tmp_path: Path) -> None:
    private_path, _ = save_key(BW, tmp_path)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600


def test_saving_never_overwrites_a_key_file(tmp_path: Path) -> None:
    save_key(BW, tmp_path)
    with pytest.raises(KeyFileError, match="already exists"):
        save_key(BW, tmp_path)
    assert list(tmp_path.glob(".*")) == []


def test_latest_signer_picks_the_newest_key_of_that_producer(tmp_path: Path) -> None:
    old = generate_key("XS", now=date(2026, 1, 1))
    same_day_newer = generate_key("XS", now=date(2026, 1, 1))
    reconciler = generate_key("XS-RECONCILER", now=date(2027, 1, 1))
    for signer in (same_day_newer, old, reconciler, BW):
        save_key(signer, tmp_path)
    assert latest_signer(tmp_path, "XS") == same_day_newer
    assert latest_signer(tmp_path, "XS-RECONCILER") == reconciler


def test_latest_signer_names_the_directory_when_there_is_no_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=f"{tmp_path}.*'ZA'"):
        latest_signer(tmp_path, "ZA")


def test_repr_never_shows_the_private_key() -> None:
    private = BW.private_bytes()
    shown = repr(BW) + str(BW)
    assert BW.key_id in shown
    for encoding in (private.hex(), repr(private), str(list(private))):
        assert encoding not in shown


def _saved_document(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    private_path, _ = save_key(generate_key("NA"), tmp_path)
    return private_path, json.loads(private_path.read_text())


MALFORMED: dict[str, Any] = {
    "not json": "{",
    "not an object": [],
    "wrong version": {"kpx_key": 2},
    "public kind": {"kind": "public"},
    "other algorithm": {"algorithm": "RSA"},
    "no key id": {"key_id": None},
    "key id of another producer": {"key_id": "ZA-20260101-00000000"},
    "key id not matching the key": {"key_id": "NA-20260101-00000000"},
    "private key not base64url": {"private_key": "@@@@"},
    "private key too short": {"private_key": "AAAA"},
    "public key of another private key": {"public_key": "A" * 43},
    "created_at without zone": {"created_at": "2026-01-01T00:00:00"},
    "created_at garbage": {"created_at": "yesterday"},
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_private_key_file_is_a_key_file_error_naming_the_file(
    tmp_path: Path, change: Any
) -> None:
    path, doc = _saved_document(tmp_path)
    if isinstance(change, dict):
        path.write_text(json.dumps(doc | change))
    else:
        path.write_text(change if isinstance(change, str) else json.dumps(change))
    with pytest.raises(KeyFileError, match=str(path)):
        load_signer(path)


def test_a_missing_key_file_is_a_key_file_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.pub.json"
    with pytest.raises(KeyFileError, match=str(path)):
        load_public(path)


def test_a_private_key_file_is_not_accepted_as_a_public_one(tmp_path: Path) -> None:
    private_path, _ = save_key(BW, tmp_path)
    with pytest.raises(KeyFileError, match=rf"{private_path}: kind is 'private'"):
        load_public(private_path)


def test_a_malformed_file_in_a_key_directory_names_that_file(tmp_path: Path) -> None:
    save_key(BW, tmp_path)
    broken = tmp_path / "ZZ-20260101-00000000.pub.json"
    broken.write_text("not json")
    with pytest.raises(KeyFileError, match=str(broken)):
        Keyring().load_dir(tmp_path)
