"""Properties of the codec: generated records round trip; no bytes make decode misbehave.

Records are generated from the current schemas themselves, so a new field is covered without
touching this file. Damaged messages (random bytes, every truncation, bit flips) must either
raise a CodecError subclass or decode to a record; a flip inside a string may still decode,
which is the signature's business, not the codec's.
"""

from __future__ import annotations

import functools
from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
from fastavro.schema import load_schema
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import EVENT_TYPES, example_records

from exchange.errors import CodecError
from exchange.wire.codec import HEADER_SIZE, MAGIC, default_schemas_dir, default_store

RECORDS = [*EVENT_TYPES, "Envelope"]
QUICK = settings(max_examples=200, deadline=None)
STORE = default_store()


def strategy(schema: Any, named: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Values that fit a fastavro-parsed schema, in the codec's record shape."""
    if isinstance(schema, list):
        return st.one_of([strategy(branch, named) for branch in schema])
    if isinstance(schema, str):
        return named[schema] if schema in named else PRIMITIVES[schema]
    logical = schema.get("logicalType")
    if logical in LOGICAL:
        return LOGICAL[logical](schema)
    kind = schema["type"]
    if kind == "record":
        fields = {f["name"]: strategy(f["type"], named) for f in schema["fields"]}
        named[schema["name"]] = st.fixed_dictionaries(fields)
    elif kind == "enum":
        named[schema["name"]] = st.sampled_from(schema["symbols"])
    elif kind == "array":
        return st.lists(strategy(schema["items"], named), max_size=3)
    else:
        return strategy(kind, named)
    return named[schema["name"]]


PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "string": st.text(max_size=20),
    "bytes": st.binary(max_size=20),
}
LOGICAL = {
    "decimal": lambda s: st.integers(-(10 ** s["precision"]) + 1, 10 ** s["precision"] - 1).map(
        lambda n: Decimal(n).scaleb(-s["scale"])
    ),
    "date": lambda s: st.dates(),
    "timestamp-micros": lambda s: st.datetimes(timezones=st.just(UTC)),
    "uuid": lambda s: st.uuids().map(str),
}


@functools.cache
def records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    return strategy(load_schema(str(default_schemas_dir() / f"kpx.{name}.avsc")), {})


def outcome(data: bytes) -> dict[str, Any] | None:
    """The decoded record, or None for a CodecError; any other exception fails the test."""
    try:
        _, record = STORE.decode(data)
    except CodecError:
        return None
    assert isinstance(record, dict)
    return record


@pytest.mark.parametrize("name", RECORDS)
@QUICK
@given(data=st.data())
def test_every_generated_record_round_trips(name: str, data: st.DataObject) -> None:
    record = data.draw(records(name))
    assert STORE.decode(STORE.encode(name, record)) == (name, record)


@QUICK
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_a_codec_error(data: bytes) -> None:
    outcome(data)


@pytest.mark.parametrize("name", RECORDS)
@QUICK
@given(tail=st.binary(max_size=300))
def test_random_bytes_after_a_known_header_never_raise_anything_but_a_codec_error(
    name: str, tail: bytes
) -> None:
    outcome(MAGIC + STORE.fingerprint(name) + tail)


@pytest.mark.parametrize("name", RECORDS)
def test_every_truncation_of_a_message_is_a_codec_error(name: str) -> None:
    data = STORE.encode(name, example_records()[name])
    for end in range(len(data)):
        with pytest.raises(CodecError):
            STORE.decode(data[:end])


@pytest.mark.parametrize("name", RECORDS)
def test_every_single_bit_flip_in_the_datum_decodes_or_is_a_codec_error(name: str) -> None:
    data = bytearray(STORE.encode(name, example_records()[name]))
    for bit in range(HEADER_SIZE * 8, len(data) * 8):
        data[bit // 8] ^= 1 << (bit % 8)
        outcome(bytes(data))
        data[bit // 8] ^= 1 << (bit % 8)


@pytest.mark.parametrize("name", RECORDS)
@QUICK
@given(data=st.data())
def test_a_damaged_generated_message_never_escapes_the_codec_errors(
    name: str, data: st.DataObject
) -> None:
    message = bytearray(STORE.encode(name, data.draw(records(name))))
    end = data.draw(st.integers(0, len(message) - 1))
    with pytest.raises(CodecError):  # a proper prefix never decodes
        STORE.decode(bytes(message[:end]))
    for bit in data.draw(st.lists(st.integers(0, len(message) * 8 - 1), min_size=1, max_size=3)):
        message[bit // 8] ^= 1 << (bit % 8)
    outcome(bytes(message))


def test_a_flip_in_the_header_is_bad_magic_or_an_unknown_fingerprint() -> None:
    data = bytearray(STORE.encode("CertificateIssued", example_records()["CertificateIssued"]))
    for bit in range(HEADER_SIZE * 8):
        data[bit // 8] ^= 1 << (bit % 8)
        assert outcome(bytes(data)) is None
        data[bit // 8] ^= 1 << (bit % 8)
