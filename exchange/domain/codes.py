"""The closed vocabularies of kpx, one definition each: ``StrEnum`` s equal to their strings.

A member equals the string it stands for (``Decision.HELD == "HELD"``), so a row read back
from PostgreSQL, an Avro symbol or a metric label compares with it directly, and code that
still spells the literal keeps working. ``UNKNOWN`` is the reader default of the Avro enums
(a symbol a newer writer added reads as UNKNOWN, see ``certificate.from_symbol``).
"""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    """The registry's answer about one event (the kpx.Decision enum, plus HELD).

    HELD never leaves the registry: a void waiting for earlier events is recorded HELD in the
    event log and decided ACCEPTED or REJECTED when its gap closes (DESIGN §7).
    """

    UNKNOWN = "UNKNOWN"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    HELD = "HELD"


class CertificateState(StrEnum):
    """Where a certificate stands at the registry (and, but IMPORT_CONFIRMED, at its node)."""

    ISSUED = "ISSUED"
    VOIDED = "VOIDED"
    REPLACED = "REPLACED"
    IMPORT_CONFIRMED = "IMPORT_CONFIRMED"


class Reason(StrEnum):
    """Why the registry refused an event (kpx.ReasonCode, DESIGN §7)."""

    UNKNOWN = "UNKNOWN"
    SCHEMA_UNKNOWN = "SCHEMA_UNKNOWN"
    SCHEMA_INVALID = "SCHEMA_INVALID"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNKNOWN_PRODUCER = "UNKNOWN_PRODUCER"
    ISSUER_MISMATCH = "ISSUER_MISMATCH"
    BAD_CERTIFICATE_NUMBER = "BAD_CERTIFICATE_NUMBER"
    DUPLICATE_CERTIFICATE = "DUPLICATE_CERTIFICATE"
    NOT_A_PARTICIPANT = "NOT_A_PARTICIPANT"
    PARTICIPANT_SUSPENDED = "PARTICIPANT_SUSPENDED"
    INVALID_HS_CODE = "INVALID_HS_CODE"
    TOTALS_MISMATCH = "TOTALS_MISMATCH"
    INVALID_DATES = "INVALID_DATES"
    NON_POSITIVE_QUANTITY = "NON_POSITIVE_QUANTITY"
    UNKNOWN_CERTIFICATE = "UNKNOWN_CERTIFICATE"
    NOT_ALLOWED = "NOT_ALLOWED"
    UNLICENSED_EXPORTER = "UNLICENSED_EXPORTER"  # §14, where the region enforces its registers
    UNREGISTERED_PRODUCER = "UNREGISTERED_PRODUCER"


class DiscrepancyKind(StrEnum):
    """A smuggling or fraud signal raised by the reconciler (DESIGN §8)."""

    UNKNOWN = "UNKNOWN"
    UNCONFIRMED_EXPIRED = "UNCONFIRMED_EXPIRED"
    UNKNOWN_CERTIFICATE = "UNKNOWN_CERTIFICATE"
    DUPLICATE_IMPORT = "DUPLICATE_IMPORT"
    WRONG_DESTINATION = "WRONG_DESTINATION"
    CARAT_MISMATCH = "CARAT_MISMATCH"
    VALUE_MISMATCH = "VALUE_MISMATCH"
    PARCEL_MISMATCH = "PARCEL_MISMATCH"
    SEAL_BROKEN = "SEAL_BROKEN"
    IMPORTED_AFTER_EXPIRY = "IMPORTED_AFTER_EXPIRY"
    VOIDED_BUT_IMPORTED = "VOIDED_BUT_IMPORTED"
    VALUATION_OUTLIER = "VALUATION_OUTLIER"
    EXPORTS_EXCEED_SUPPLY = "EXPORTS_EXCEED_SUPPLY"
    MIRROR_MISMATCH = "MIRROR_MISMATCH"
    SEQUENCE_GAP = "SEQUENCE_GAP"
    PRODUCER_EXPORTS_EXCEED_PRODUCTION = "PRODUCER_EXPORTS_EXCEED_PRODUCTION"  # §14
    UNREGISTERED_PRODUCER = "UNREGISTERED_PRODUCER"
    UNLICENSED_EXPORTER = "UNLICENSED_EXPORTER"
    NON_PARTICIPANT_TRADE = "NON_PARTICIPANT_TRADE"
    EXTERNAL_MIRROR_MISMATCH = "EXTERNAL_MIRROR_MISMATCH"


class PublishOutcome(StrEnum):
    """What the broker made of one published message (the outbox relay's metric labels)."""

    CONFIRMED = "confirmed"
    NACKED = "nacked"
    RETURNED = "returned"  # unroutable: the broker had no queue for it
    FAILED = "failed"  # connection lost before the broker answered
