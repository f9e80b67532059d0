"""The event payloads other than the certificate itself, as frozen dataclasses.

Each class carries the fields of its ``schemas/kpx.<EventType>.avsc`` record, its event type
name (``EVENT_TYPE``), ``to_record`` / ``from_record`` in the shape fastavro writes and reads,
and — for the three node operations of DESIGN §9 — ``from_json``, which takes what the
operation line does not carry (the node's own code, today's date) as keyword arguments, since
this module reads no clock and no configuration. ``CertificateIssued`` wraps the certificate
in :class:`Issuance`, so every event type has one payload class (:data:`PAYLOAD_TYPES`).

Errors: ``from_json`` raises Refusal(SCHEMA_INVALID) naming the field;
:func:`payload_from_record` raises Refusal(SCHEMA_UNKNOWN) for an event type it does not know
and Refusal(SCHEMA_INVALID) for text holding a NUL character or an identifier longer than
:data:`MAX_IDENTIFIER_LENGTH` (that screen is :func:`check_text`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Self, TypeVar

from exchange.domain.certificate import Certificate, JsonObject, from_symbol, record_of, to_amount
from exchange.domain.codes import Decision as _Decision
from exchange.domain.codes import DiscrepancyKind as DiscrepancyKind
from exchange.domain.codes import Reason
from exchange.domain.keyevents import KeyRevocation, KeyRotation
from exchange.domain.register import RegisterEntry, Revocation
from exchange.errors import Refusal

EVENT_TYPES: tuple[str, ...] = (
    "CertificateIssued",
    "CertificateVoided",
    "ImportConfirmed",
    "ProductionDeclared",
    "ParticipantStatusChanged",
    "RegistryDecision",
    "ShipmentExpected",
    "DiscrepancyRaised",
    "RegisterEntryRecorded",
    "RegisterEntryRevoked",
    "LogCheckpoint",
    "LogCosigned",
    "KeyRotated",
    "KeyRevoked",
    "ShipmentCancelled",
    "RegistryDecisions",
    "ShipmentNotices",
    "AcceptedEvents",
)

# kpx.ReasonCode without its reader default UNKNOWN (DESIGN §7).
REASON_CODES: tuple[str, ...] = tuple(r.value for r in Reason if r is not Reason.UNKNOWN)

# A half-year, the period of a production declaration (KP Annex III).
HALF_YEAR = re.compile(r"\d{4}-H[12]")
# Keys an operation line carries besides the payload's own fields.
_OPERATION_KEYS = ("op", "member")
# Identifiers and codes are stored in indexed columns: a btree row above ~2.7 kB makes
# PostgreSQL fail the statement (and the whole batch with it). No KP identifier comes near
# this bound; free text (names, addresses, remarks) is not bounded here.
MAX_IDENTIFIER_LENGTH = 100
IDENTIFIER_FIELDS = frozenset(
    {
        "certificate_id",
        "replaced_by",
        "issuing_participant",
        "issuing_member",
        "importing_participant",
        "destination",
        "participant",
        "period",
        "producer_id",
    }
)
_T = TypeVar("_T")


class ParticipantStatus(Enum):
    """A KP participant's standing (kpx.ParticipantStatus)."""

    UNKNOWN = "UNKNOWN"
    ADMITTED = "ADMITTED"
    SUSPENDED = "SUSPENDED"
    REINSTATED = "REINSTATED"
    WITHDRAWN = "WITHDRAWN"


# The registry's answer (kpx.Decision) and the reconciler's kinds are defined once, in codes.
Outcome = _Decision


def _build(cls: type[_T], record: Mapping[str, Any], **converted: Any) -> _T:
    """``cls`` from the record's fields, with ``converted`` values replacing raw ones."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    values = {name: record[name] for name in names if name in record}
    values.update(converted)
    return cls(**values)


def _operation(obj: Mapping[str, Any], cls: type) -> JsonObject:
    o = JsonObject(obj, "")
    o.reject_unknown((*_OPERATION_KEYS, *(f.name for f in fields(cls))))
    return o


class _Payload:
    """Shared record writer: every field, enums as symbols (see certificate.record_of)."""

    __slots__ = ()
    EVENT_TYPE: ClassVar[str]

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = record_of(self)
        return record


@dataclass(frozen=True, slots=True)
class Issuance(_Payload):
    """CertificateIssued: a member or partner issued a validated certificate."""

    EVENT_TYPE: ClassVar[str] = "CertificateIssued"
    certificate: Certificate

    def to_record(self) -> dict[str, Any]:
        return {"certificate": self.certificate.to_record()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(Certificate.from_record(record["certificate"]))


@dataclass(frozen=True, slots=True)
class Voiding(_Payload):
    """CertificateVoided: cancelled before shipment, or replaced by ``replaced_by``."""

    EVENT_TYPE: ClassVar[str] = "CertificateVoided"
    certificate_id: str
    issuing_participant: str
    voided_on: date
    reason: str
    replaced_by: str | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, issuing_participant: str, today: date) -> Self:
        """Parse a ``void`` operation; ``voided_on`` defaults to ``today``."""
        o = _operation(obj, cls)
        return cls(
            certificate_id=o.text("certificate_id"),
            issuing_participant=o.text("issuing_participant", issuing_participant),
            voided_on=o.day("voided_on", today),
            reason=o.text("reason"),
            replaced_by=o.optional_text("replaced_by"),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return _build(cls, record)


@dataclass(frozen=True, slots=True)
class ImportConfirmation(_Payload):
    """ImportConfirmed: the importing authority confirms a shipment arrived."""

    EVENT_TYPE: ClassVar[str] = "ImportConfirmed"
    certificate_id: str
    issuing_participant: str
    importing_participant: str
    received_on: date
    parcels: int
    carats: Decimal
    value_usd: Decimal
    seal_intact: bool
    remarks: str = ""

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, importing_participant: str) -> Self:
        """Parse a ``confirm_import`` operation made by ``importing_participant``'s node."""
        o = _operation(obj, cls)
        return cls(
            certificate_id=o.text("certificate_id"),
            issuing_participant=o.text("issuing_participant"),
            importing_participant=o.text("importing_participant", importing_participant),
            received_on=o.day("received_on"),
            parcels=o.integer("parcels"),
            carats=o.amount("carats"),
            value_usd=o.amount("value_usd"),
            seal_intact=o.boolean("seal_intact"),
            remarks=o.text("remarks", "", allow_empty=True),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return _build(
            cls,
            record,
            carats=to_amount(record["carats"], "carats"),
            value_usd=to_amount(record["value_usd"], "value_usd"),
        )


@dataclass(frozen=True, slots=True)
class ProductionDeclaration(_Payload):
    """ProductionDeclared: carats and USD a mine or cooperative produced in a half-year."""

    EVENT_TYPE: ClassVar[str] = "ProductionDeclared"
    participant: str
    period: str
    producer_id: str
    carats: Decimal
    value_usd: Decimal

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, participant: str) -> Self:
        """Parse a ``declare_production`` operation (its ``producer`` is ``producer_id``)."""
        o = JsonObject(obj, "")
        o.reject_unknown((*_OPERATION_KEYS, "period", "carats", "value_usd", "producer"))
        period = o.text("period")
        if not HALF_YEAR.fullmatch(period):
            o.refuse(
                "SCHEMA_INVALID", "period", f"must be a half-year like 2026-H1, got {period!r}"
            )
        return cls(
            participant=participant,
            period=period,
            producer_id=o.text("producer"),
            carats=o.amount("carats"),
            value_usd=o.amount("value_usd"),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return _build(
            cls,
            record,
            carats=to_amount(record["carats"], "carats"),
            value_usd=to_amount(record["value_usd"], "value_usd"),
        )


@dataclass(frozen=True, slots=True)
class StatusChange(_Payload):
    """ParticipantStatusChanged: the registry changed a KP participant's status."""

    EVENT_TYPE: ClassVar[str] = "ParticipantStatusChanged"
    participant: str
    status: ParticipantStatus
    effective_on: date
    reason: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return _build(cls, record, status=from_symbol(ParticipantStatus, record["status"]))


@dataclass(frozen=True, slots=True)
class Decision(_Payload):
    """RegistryDecision: accepted, or rejected with a DESIGN §7 reason code and a sentence."""

    EVENT_TYPE: ClassVar[str] = "RegistryDecision"
    subject_event_id: str
    subject_event_type: str
    subject_sequence: int
    certificate_id: str | None
    decision: Outcome
    reason: str | None
    detail: str
    decided_at: datetime
    leaf_index: int | None = None  # in the registry's log (DESIGN §12), when accepted

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return _build(
            cls,
            record,
            # fastavro reads a uuid logical type as uuid.UUID; kpx passes uuids as str.
            subject_event_id=str(record["subject_event_id"]),
            decision=from_symbol(Outcome, record["decision"]),
        )


@dataclass(frozen=True, slots=True)
class DecisionBatch(_Payload):
    """RegistryDecisions: the answers of one registry batch to one producer, signed once.

    Each element is a whole :class:`Decision`, readable on its own (DESIGN §4).
    """

    EVENT_TYPE: ClassVar[str] = "RegistryDecisions"
    decisions: tuple[Decision, ...]

    def to_record(self) -> dict[str, Any]:
        return {"decisions": [d.to_record() for d in self.decisions]}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(tuple(Decision.from_record(d) for d in record["decisions"]))


@dataclass(frozen=True, slots=True)
class ShipmentNotice(_Payload):
    """ShipmentExpected: tells the destination that a certificate naming it was accepted."""

    EVENT_TYPE: ClassVar[str] = "ShipmentExpected"
    certificate: Certificate
    accepted_at: datetime

    def to_record(self) -> dict[str, Any]:
        return {"certificate": self.certificate.to_record(), "accepted_at": self.accepted_at}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(Certificate.from_record(record["certificate"]), record["accepted_at"])


@dataclass(frozen=True, slots=True)
class ShipmentCancellation(_Payload):
    """ShipmentCancelled: a certificate announced to the destination was voided or replaced."""

    EVENT_TYPE: ClassVar[str] = "ShipmentCancelled"
    certificate_id: str
    issuing_participant: str
    voided_on: date
    reason: str
    cancelled_at: datetime
    replaced_by: str | None = None

    @classmethod
    def of(cls, voiding: Voiding, cancelled_at: datetime) -> Self:
        """The notice of ``voiding`` for the certificate's destination."""
        return cls(
            voiding.certificate_id,
            voiding.issuing_participant,
            voiding.voided_on,
            voiding.reason,
            cancelled_at,
            voiding.replaced_by,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return _build(cls, record)


@dataclass(frozen=True, slots=True)
class NoticeBatch(_Payload):
    """ShipmentNotices: what one registry batch announced to, or withdrew from, one
    destination, signed once; each element is a whole ShipmentExpected or ShipmentCancelled."""

    EVENT_TYPE: ClassVar[str] = "ShipmentNotices"
    expected: tuple[ShipmentNotice, ...]
    cancelled: tuple[ShipmentCancellation, ...]

    def to_record(self) -> dict[str, Any]:
        return {
            "expected": [n.to_record() for n in self.expected],
            "cancelled": [c.to_record() for c in self.cancelled],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(
            tuple(ShipmentNotice.from_record(n) for n in record["expected"]),
            tuple(ShipmentCancellation.from_record(c) for c in record["cancelled"]),
        )


@dataclass(frozen=True, slots=True)
class AcceptedEntry:
    """One event of an AcceptedEvents message: the producer's envelope bytes as received."""

    leaf_index: int | None
    envelope: bytes


@dataclass(frozen=True, slots=True)
class AcceptedBatch(_Payload):
    """AcceptedEvents: the events one registry batch accepted, for the reconciler, signed
    once by the registry, which verified every producer's signature on them."""

    EVENT_TYPE: ClassVar[str] = "AcceptedEvents"
    events: tuple[AcceptedEntry, ...]

    def to_record(self) -> dict[str, Any]:
        return {
            "events": [{"leaf_index": e.leaf_index, "envelope": e.envelope} for e in self.events]
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(
            tuple(AcceptedEntry(e["leaf_index"], bytes(e["envelope"])) for e in record["events"])
        )


@dataclass(frozen=True, slots=True)
class DiscrepancyNotice(_Payload):
    """DiscrepancyRaised: a reconciliation finding for the participants concerned."""

    EVENT_TYPE: ClassVar[str] = "DiscrepancyRaised"
    discrepancy_id: int
    kind: DiscrepancyKind
    certificate_id: str | None
    participants: tuple[str, ...]
    period: str | None
    detail: str
    raised_on: date

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return _build(
            cls,
            record,
            kind=from_symbol(DiscrepancyKind, record["kind"]),
            participants=tuple(record["participants"]),
        )


@dataclass(frozen=True, slots=True)
class CheckpointNotice(_Payload):
    """LogCheckpoint: a new checkpoint of the registry's log, for the nodes to witness."""

    EVENT_TYPE: ClassVar[str] = "LogCheckpoint"
    checkpoint: str
    previous_size: int
    consistency: tuple[bytes, ...]

    def to_record(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "previous_size": self.previous_size,
            "consistency": list(self.consistency),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        proof = tuple(bytes(h) for h in record["consistency"])
        return cls(record["checkpoint"], int(record["previous_size"]), proof)


@dataclass(frozen=True, slots=True)
class Cosignature(_Payload):
    """LogCosigned: a node's cosignature of a checkpoint it verified and stored."""

    EVENT_TYPE: ClassVar[str] = "LogCosigned"
    tree_size: int
    root_hash: bytes
    cosignature: str

    def to_record(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "cosignature": self.cosignature,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(int(record["tree_size"]), bytes(record["root_hash"]), record["cosignature"])


Payload = (
    Issuance
    | Voiding
    | ImportConfirmation
    | ProductionDeclaration
    | StatusChange
    | Decision
    | ShipmentNotice
    | ShipmentCancellation
    | DiscrepancyNotice
    | RegisterEntry
    | Revocation
    | CheckpointNotice
    | Cosignature
    | KeyRotation
    | KeyRevocation
    | DecisionBatch
    | NoticeBatch
    | AcceptedBatch
)

PAYLOAD_TYPES: Mapping[str, type[Payload]] = {
    cls.EVENT_TYPE: cls
    for cls in (
        Issuance,
        Voiding,
        ImportConfirmation,
        ProductionDeclaration,
        StatusChange,
        Decision,
        ShipmentNotice,
        DiscrepancyNotice,
        RegisterEntry,
        Revocation,
        CheckpointNotice,
        Cosignature,
        KeyRotation,
        KeyRevocation,
        ShipmentCancellation,
        DecisionBatch,
        NoticeBatch,
        AcceptedBatch,
    )
}


def payload_from_record(event_type: str, record: Mapping[str, Any]) -> Payload:
    """The payload dataclass of a decoded event record.

    Raises Refusal(SCHEMA_UNKNOWN) for an event type this version does not know (the
    envelope's enum resolves a newer type to UNKNOWN), Refusal(SCHEMA_INVALID) for text that
    holds a NUL character.
    """
    cls = PAYLOAD_TYPES.get(event_type)
    if cls is None:
        raise Refusal("SCHEMA_UNKNOWN", f"event_type {event_type!r} is not one kpx knows")
    check_text(record)
    return cls.from_record(record)


def check_text(record: Mapping[str, Any]) -> None:
    """Refuse a NUL in any string, then an identifier field (at any depth) longer than
    :data:`MAX_IDENTIFIER_LENGTH`: Refusal(SCHEMA_INVALID) naming the field."""
    if _plainly_fits(record):
        return
    if _holds_nul(record):
        # Avro strings may hold U+0000, but no KP text does and PostgreSQL cannot store it
        # (text or jsonb): refused here, the event gets a decision instead of failing its batch.
        raise Refusal("SCHEMA_INVALID", f"{_nul_path(record)} holds a NUL character (U+0000)")
    too_long = _overlong_identifier(record)
    if too_long is not None:
        raise Refusal(
            "SCHEMA_INVALID",
            f"{too_long[0]} has {too_long[1]:,} characters; an identifier has at most "
            f"{MAX_IDENTIFIER_LENGTH}",
        )


# The leaf types fastavro decodes to besides str, dict and list: nothing to screen in them.
_PLAIN_LEAVES = frozenset({type(None), bool, int, float, bytes, Decimal, date, datetime})


def _plainly_fits(value: Mapping[Any, Any]) -> bool:
    """True only when no string holds a NUL and no identifier is overlong: the one pass the
    hot path takes over a decoded record (the two exact checks walked it twice and built a
    field path for every value, ~20 us a certificate). Anything else, or a type it does not
    know, is False: the exact checks of :func:`check_text` then decide and name the field."""
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            if "\x00" in item or (len(item) > MAX_IDENTIFIER_LENGTH and key in IDENTIFIER_FIELDS):
                return False
        elif kind is dict:
            if not _plainly_fits(item):
                return False
        elif kind is list or kind is tuple:
            # Screened as a map from index to item: an index is no identifier field.
            if not _plainly_fits(dict(enumerate(item))):
                return False
        elif kind not in _PLAIN_LEAVES:
            return False
    return True


def each_event(event_type: str, record: Mapping[str, Any]) -> list[tuple[str, Payload]]:
    """The single events a message carries, as (event type, payload): a batch's elements
    (RegistryDecisions -> RegistryDecision, ShipmentNotices -> ShipmentExpected and
    ShipmentCancelled), or the one event of any other message. Raises as
    :func:`payload_from_record`."""
    payload = payload_from_record(event_type, record)
    if isinstance(payload, DecisionBatch):
        return [(Decision.EVENT_TYPE, d) for d in payload.decisions]
    if isinstance(payload, NoticeBatch):
        return [(ShipmentNotice.EVENT_TYPE, n) for n in payload.expected] + [
            (ShipmentCancellation.EVENT_TYPE, c) for c in payload.cancelled
        ]
    return [(event_type, payload)]


def _overlong_identifier(value: Any, path: str = "") -> tuple[str, int] | None:
    """The first identifier field (at any depth) longer than the bound, with its length."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in IDENTIFIER_FIELDS and isinstance(item, str):
                if len(item) > MAX_IDENTIFIER_LENGTH:
                    return where, len(item)
            elif isinstance(item, Mapping | list | tuple):
                found = _overlong_identifier(item, where)
                if found is not None:
                    return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _overlong_identifier(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _holds_nul(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return "\x00" in value
    if kind is dict:
        return any(_holds_nul(v) for v in value.values())
    if kind is list or kind is tuple:
        return any(_holds_nul(v) for v in value)
    return False


def _nul_path(value: Any, path: str = "the payload") -> str:
    """Where the first NUL is, as ``exporter.name`` or ``parcels[0].origin_country``."""
    items: Any = ()
    if isinstance(value, Mapping):
        items = ((f"{path}.{k}" if path != "the payload" else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    for where, item in items:
        if _holds_nul(item):
            return _nul_path(item, where)
    return path
