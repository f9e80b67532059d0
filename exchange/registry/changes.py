"""The rows a batch's verdicts produce, collected by ``policy.apply`` for ``store.write_changes``.

Frozen values with named fields: they cross from the pure policy to the SQL of the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from exchange.domain.certificate import Certificate
from exchange.domain.codes import CertificateState
from exchange.domain.events import ImportConfirmation, ProductionDeclaration
from exchange.domain.keyevents import KeyRotation
from exchange.domain.register import RegisterChange

if TYPE_CHECKING:  # the policy's Event; the policy imports this module
    from exchange.registry.policy import Event


@dataclass(frozen=True, slots=True)
class NewCertificate:
    """An accepted certificate, its producer and the event that carried it."""

    certificate: Certificate
    producer: str
    event: Event


@dataclass(frozen=True, slots=True)
class StateChange:
    """A certificate's new state (and what replaced it, for REPLACED)."""

    certificate_id: str
    replaced_by: str | None
    state: CertificateState


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One certificate_history row: which event moved the certificate to which state."""

    certificate_id: str
    event_id: str
    event_type: str
    state: str
    detail: str


@dataclass(frozen=True, slots=True)
class Confirmed:
    """An accepted import confirmation; ``matched`` once its certificate is known."""

    confirmation: ImportConfirmation
    event_id: str
    matched: bool


@dataclass(frozen=True, slots=True)
class Declared:
    """An accepted production declaration."""

    declaration: ProductionDeclaration
    event_id: str


@dataclass(frozen=True, slots=True)
class SequenceUse:
    """A producer's sequence number and the event that used it."""

    producer: str
    sequence: int
    event_id: str


@dataclass(frozen=True, slots=True)
class Gap:
    """A producer's missing sequence number."""

    producer: str
    sequence: int


@dataclass(frozen=True, slots=True)
class KeyAnnounced:
    """An accepted KeyRotated: the member's next public key (DESIGN §15)."""

    rotation: KeyRotation
    event_id: str
    produced_at: datetime


@dataclass(slots=True)
class Changes:
    """Rows to write, collected while applying verdicts (see store.write_changes)."""

    certificates: list[NewCertificate] = field(default_factory=list)
    state_changes: list[StateChange] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    confirmations: list[Confirmed] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    production: list[Declared] = field(default_factory=list)
    sequences: list[SequenceUse] = field(default_factory=list)
    gaps_opened: list[Gap] = field(default_factory=list)
    gaps_filled: list[Gap] = field(default_factory=list)
    high_water: dict[str, int] = field(default_factory=dict)
    register: list[RegisterChange] = field(default_factory=list)  # §14, in acceptance order
    keys: list[KeyAnnounced] = field(default_factory=list)
