"""A ShipmentNotices message built from certificates that are already Avro-encoded.

The registry tells a destination about every accepted certificate naming it, and each
notice carries the whole certificate (DESIGN §4). Re-encoding the decoded record with
fastavro cost ~40 µs an event, the largest single part of recording. The certificate's datum
is already in the event: a CertificateIssued is one field, its certificate, so when the
event's payload was written with the current schema, the payload after its 10-byte header
*is* the certificate's datum. A ShipmentExpected is that datum followed by ``accepted_at``
(a zig-zag varint long), and the ShipmentNotices around them is Avro's array framing: the
same bytes fastavro writes (the tests compare them), and always the same values once read.

:class:`NoticeSplicer` checks the schemas have that shape when it is made; with any other
shape it splices nothing (:meth:`NoticeSplicer.datum` is None) and the caller encodes the
record as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from exchange.wire.codec import HEADER_SIZE, SchemaStore

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The shapes splicing relies on: (field name, type) in field order.
_ISSUED = [("certificate", "kpx.Certificate")]
_EXPECTED = [("certificate", "kpx.Certificate"), ("accepted_at", "long:timestamp-micros")]
_NOTICES = [
    ("expected", "array<kpx.ShipmentExpected>"),
    ("cancelled", "array<kpx.ShipmentCancelled>"),
]


def zigzag_long(n: int) -> bytes:
    """Avro's encoding of a long: zig-zag, then a little-endian base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def timestamp_micros(at: datetime) -> int:
    """An aware datetime as Avro's timestamp-micros, computed exactly as fastavro does."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        if "name" in schema:
            return str(schema["name"])
        if schema.get("type") == "array":
            return f"array<{_type_name(schema['items'])}>"
        if "logicalType" in schema:
            return f"{schema['type']}:{schema['logicalType']}"
        return _type_name(schema["type"])
    return repr(schema)


def _shape(store: SchemaStore, name: str) -> list[tuple[str, str]]:
    return [(f["name"], _type_name(f["type"])) for f in store.schema(name)["fields"]]


class NoticeSplicer:
    """Builds ShipmentNotices payloads from the certificates' own bytes (see module doc)."""

    def __init__(self, store: SchemaStore) -> None:
        self.store = store
        self.enabled = (
            _shape(store, "CertificateIssued") == _ISSUED
            and _shape(store, "ShipmentExpected") == _EXPECTED
            and _shape(store, "ShipmentNotices") == _NOTICES
        )
        self._issued = store.fingerprint("CertificateIssued")
        self._header = store.encode("ShipmentNotices", {"expected": [], "cancelled": []})[
            :HEADER_SIZE
        ]

    def datum(self, payload: bytes) -> bytes | None:
        """The certificate's datum inside a CertificateIssued ``payload`` (single-object
        bytes), or None when it was written with another schema than the current one."""
        if not self.enabled or payload[2:HEADER_SIZE] != self._issued:
            return None
        return payload[HEADER_SIZE:]

    def expected(self, certificates: Sequence[tuple[bytes, datetime]]) -> bytes:
        """A ShipmentNotices of only expected shipments: (certificate datum, accepted_at)
        each, in order, and no cancellations."""
        if not certificates:
            return self._header + b"\x00\x00"  # two empty arrays
        items = b"".join(c + zigzag_long(timestamp_micros(at)) for c, at in certificates)
        # An array is one block (count, items) then the empty block; "cancelled" is empty.
        return self._header + zigzag_long(len(certificates)) + items + b"\x00\x00"
