"""kpx and the reference Apache ``avro`` package read each other's single-object messages.

The fingerprint is checked against a CRC-64-AVRO computed here from the specification (its
table-driven algorithm and its test vector for ``"null"``), over a parsing canonical form
taken from ``avro``. ``avro`` 1.12's own canonical form keeps ``{"type": "int"}`` where a
logical type was stripped, against the spec's [PRIMITIVES] rule (the same bug as
linkedin/goavro#174 and AVRO-4004 in Rust), so that wrapper is collapsed before hashing; for
schemas without logical types ``avro``'s own fingerprint is compared as is.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import avro.io
import avro.name
import avro.schema
import pytest
from test_codec import EVENT_TYPES, example_records

from exchange.wire.codec import HEADER_SIZE, MAGIC, SchemaStore, default_schemas_dir, default_store

RECORDS = [*EVENT_TYPES, "Envelope"]
_EMPTY = 0xC15D213AA4D7A795  # the spec's EMPTY: the CRC-64-AVRO of nothing


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _table()


def crc64_avro(data: bytes) -> bytes:
    """CRC-64-AVRO per the specification, in single-object (little-endian) byte order."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def _references(schema: Any, known: set[str]) -> set[str]:
    if isinstance(schema, str):
        return {schema} & known
    if isinstance(schema, list):
        return set().union(*(_references(s, known) for s in schema))
    if isinstance(schema, dict):
        return set().union(*(_references(v, known) for k, v in schema.items() if k != "name"))
    return set()


def parse_with_avro(schemas_dir: Path) -> dict[str, avro.schema.Schema]:
    """Every ``kpx.*.avsc`` parsed by ``avro`` with shared names, dependencies first."""
    raw = {
        p.name.removesuffix(".avsc"): json.loads(p.read_text())
        for p in schemas_dir.glob("kpx.*.avsc")
    }
    names = avro.name.Names()
    parsed: dict[str, avro.schema.Schema] = {}

    def visit(full_name: str) -> None:
        if full_name in parsed:
            return
        for dependency in sorted(_references(raw[full_name], set(raw)) - {full_name}):
            visit(dependency)
        parsed[full_name] = avro.schema.make_avsc_object(raw[full_name], names)

    for full_name in sorted(raw):
        visit(full_name)
    return {name.removeprefix("kpx."): schema for name, schema in parsed.items()}


def _collapse(canonical: Any) -> Any:
    """Apply [PRIMITIVES]: ``{"type": "int"}`` -> ``"int"`` (see the module docstring)."""
    if isinstance(canonical, list):
        return [_collapse(c) for c in canonical]
    if isinstance(canonical, dict):
        if set(canonical) == {"type"} and isinstance(canonical["type"], str):
            return canonical["type"]
        return {k: _collapse(v) for k, v in canonical.items()}
    return canonical


def canonical_form(schema: avro.schema.Schema) -> str:
    return json.dumps(_collapse(schema.to_canonical_json()), separators=(",", ":"))


@pytest.fixture(scope="module")
def avro_schemas() -> dict[str, avro.schema.Schema]:
    return parse_with_avro(default_schemas_dir())


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return default_store()


def test_the_independent_crc64_matches_the_spec_test_vector_for_null() -> None:
    # Avro's schema-tests.txt: the CRC-64-AVRO of "null" is the Java long 7195948357588979594
    assert crc64_avro(b'"null"') == (7195948357588979594).to_bytes(8, "little", signed=True)


def test_the_reference_package_agrees_with_the_spec_test_vector() -> None:
    assert avro.schema.parse('"null"').fingerprint() == crc64_avro(b'"null"')


@pytest.mark.parametrize("name", RECORDS)
def test_the_header_fingerprint_is_the_crc64_of_the_parsing_canonical_form(
    name: str, store: SchemaStore, avro_schemas: dict[str, avro.schema.Schema]
) -> None:
    expected = crc64_avro(canonical_form(avro_schemas[name]).encode())
    assert store.encode(name, example_records()[name])[2:HEADER_SIZE] == expected


@pytest.mark.parametrize("name", ["Party", "Container", "Origin"])
def test_the_reference_fingerprint_matches_for_schemas_without_logical_types(
    name: str, store: SchemaStore, avro_schemas: dict[str, avro.schema.Schema]
) -> None:
    assert avro_schemas[name].fingerprint() == store.fingerprint(name)


@pytest.mark.parametrize("name", RECORDS)
def test_a_kpx_message_decodes_with_the_reference_implementation(
    name: str, store: SchemaStore, avro_schemas: dict[str, avro.schema.Schema]
) -> None:
    record = example_records()[name]
    data = store.encode(name, record)
    assert data[:2] == MAGIC
    decoder = avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:]))
    assert avro.io.DatumReader(avro_schemas[name]).read(decoder) == record


@pytest.mark.parametrize("name", RECORDS)
def test_a_message_written_by_the_reference_implementation_decodes_with_kpx(
    name: str, store: SchemaStore, avro_schemas: dict[str, avro.schema.Schema]
) -> None:
    record = example_records()[name]
    schema = avro_schemas[name]
    datum = io.BytesIO()
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(datum))
    header = MAGIC + crc64_avro(canonical_form(schema).encode())
    assert store.decode(header + datum.getvalue()) == (name, record)
