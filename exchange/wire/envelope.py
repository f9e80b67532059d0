"""The signed envelope every event travels in.

On the wire an AMQP body is the Avro single-object encoding of a ``kpx.Envelope``. The
Ed25519 signature covers every other field: it is computed over the envelope's own encoding
with ``signature`` set to empty bytes. Because ``signature`` is the envelope's last field and
an Ed25519 signature is always 64 bytes, the signed bytes are recovered from the wire bytes
exactly — ``wire[:-66] + b"\\x00"`` — without re-encoding, so a verifier never depends on
re-encoding the same way as the producer did, even across schema versions. New envelope
fields must therefore be added *before* ``signature``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from exchange.errors import BadSignature, UndecodableDatum
from exchange.wire.codec import SchemaStore

# The largest event the exchange accepts. A certificate with a thousand parcels is about 60 kB;
# the limit keeps a signed but absurd event (megabytes of free text) from being stored, and a
# node refuses an operation line above it before anything is signed.
MAX_EVENT_BYTES = 1024 * 1024
_SIGNATURE_LEN = 64
# Avro zig-zag varint of 64 (the signature's length) followed by the signature itself.
_SIGNATURE_PREFIX = b"\x80\x01"
_EMPTY_BYTES = b"\x00"


class SignsEvents(Protocol):
    """What sealing needs of a signer (see exchange.wire.signing.Signer)."""

    @property
    def key_id(self) -> str: ...

    @property
    def producer(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


class VerifiesEvents(Protocol):
    """What opening needs of a keyring (see exchange.wire.signing.Keyring)."""

    def verify(self, key_id: str, producer: str, message: bytes, signature: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded, verified envelope with its payload record and the exact wire bytes."""

    event_id: str
    event_type: str
    producer: str
    sequence: int
    produced_at: datetime
    key_id: str
    payload: dict[str, Any]
    raw: bytes


def seal(
    store: SchemaStore,
    signer: SignsEvents,
    event_type: str,
    record: dict[str, Any],
    sequence: int,
    *,
    event_id: str | None = None,
    produced_at: datetime | None = None,
    payload: bytes | None = None,
) -> tuple[str, bytes]:
    """Encode ``record`` as ``event_type``, wrap it in a signed envelope; return (event_id, bytes).

    ``payload`` is the record's encoding when the caller has made it already (the registry
    splices its shipment notices, exchange/wire/spliced.py): it is sealed as given.
    Raises SchemaViolation when the record does not match its schema.
    """
    event_id = event_id or str(uuid.uuid4())
    unsigned = store.encode(
        "Envelope",
        {
            "event_id": event_id,
            "event_type": event_type,
            "producer": signer.producer,
            "sequence": sequence,
            "produced_at": produced_at or datetime.now(UTC),
            "key_id": signer.key_id,
            "payload": store.encode(event_type, record) if payload is None else payload,
            "signature": b"",
        },
    )
    signature = signer.sign(unsigned)
    return event_id, unsigned[:-1] + _SIGNATURE_PREFIX + signature


def open_envelope(
    store: SchemaStore,
    keyring: VerifiesEvents,
    data: bytes,
    *,
    decoded: Mapping[str, Any] | None = None,
) -> Envelope:
    """Decode and verify wire bytes; return the envelope with its decoded payload.

    ``decoded`` is the Envelope record the caller already decoded from ``data`` (the registry
    looks at the producer before verifying): passing it saves decoding the envelope twice.
    Raises a CodecError subclass for bytes that are not a kpx envelope, UnknownKey or
    BadSignature when the signature cannot be accepted.
    """
    env = store.decode(data, expected="Envelope")[1] if decoded is None else decoded
    signature = env["signature"]
    if len(signature) != _SIGNATURE_LEN or data[-66:-64] != _SIGNATURE_PREFIX:
        raise BadSignature(
            f"event {env['event_id']!r} from {env['producer']!r}: signature is "
            f"{len(signature)} bytes, an Ed25519 signature is {_SIGNATURE_LEN}"
        )
    keyring.verify(env["key_id"], env["producer"], data[:-66] + _EMPTY_BYTES, signature)
    return _with_payload(store, env, data)


def signed_parts(data: bytes) -> tuple[bytes, bytes] | None:
    """(the signed bytes, the signature) of wire bytes whose last field is a 64-byte
    signature, as :func:`open_envelope` verifies them; None when it is not."""
    if data[-66:-64] != _SIGNATURE_PREFIX:
        return None
    return data[:-66] + _EMPTY_BYTES, data[-64:]


def read_verified(store: SchemaStore, data: bytes) -> Envelope:
    """Decode wire bytes whose signature was verified already, by someone this reader trusts.

    The reconciler reads the node events inside the registry's signed ``AcceptedEvents``
    this way: the registry verified each producer's signature before accepting the event,
    and its own signature covers the bytes, so verifying again would only repeat its work.
    Raises a CodecError subclass for bytes that are not a kpx envelope.
    """
    return _with_payload(store, store.decode(data, expected="Envelope")[1], data)


def _with_payload(store: SchemaStore, env: Mapping[str, Any], data: bytes) -> Envelope:
    name, payload = store.decode(env["payload"])
    if name != env["event_type"]:
        raise UndecodableDatum(
            f"event {env['event_id']!r}: envelope says {env['event_type']!r} "
            f"but the payload is a {name!r}"
        )
    return Envelope(
        event_id=str(env["event_id"]),
        event_type=env["event_type"],
        producer=env["producer"],
        sequence=env["sequence"],
        produced_at=env["produced_at"],
        key_id=env["key_id"],
        payload=payload,
        raw=data,
    )
