"""The registry's decisions as pure functions over an in-memory view of the state they touch.

The ingest loads a :class:`View` of every row a batch can touch (certificates, unmatched
import confirmations, producer sequences and gaps, held voids, participant statuses), then
for each authentic event calls :func:`decide` and :func:`apply`, which update the view — so a
later event of the same batch sees an earlier one — and collect the rows to write in
:class:`Changes`. Nothing here reads a clock, a database or the broker.

Decisions taken here (the contract leaves them open):

- **Early voids are held, not rejected.** A void of a certificate the registry does not know
  is UNKNOWN_CERTIFICATE only when every earlier event of its producer has arrived (no open
  sequence gap below the void): a node issues before it voids, so the certificate would be
  there. While a gap below remains, the void is recorded with decision ``HELD`` and decided
  when the gap closes. Redelivery in any order thus ends in the state one ordered delivery
  gives.
- **The same certificate again under a new event id** is accepted as a no-op: no state change,
  no ShipmentExpected, and it is not republished to ``kpx.accepted`` (nothing to reconcile).
- **Import confirmations** are facts reported by the importer: accepted (rules.check_import
  aside) even for an unknown, voided or already confirmed certificate; the reconciler raises
  those discrepancies. An unknown certificate's confirmation waits (``matched = false``) and is
  matched when the certificate arrives, which then becomes IMPORT_CONFIRMED.
- **Member isolation** (DESIGN §15, rules.is_destination): only a confirmation by the
  certificate's destination makes it IMPORT_CONFIRMED, whether it came before or after the
  certificate. Anyone else's is accepted as a recorded fact (the reconciler raises
  WRONG_DESTINATION) and changes no state: the issuer can still void, the destination can
  still confirm, ``verify`` answers as before.
- **A replayed (producer, sequence)** under another event id is NOT_ALLOWED; events a node may
  not produce (decisions, notices, status changes) are NOT_ALLOWED too.
- Signature and schema failures never reach this module: their sequence number is not
  trusted, so it is not recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exchange.domain import keyevents, rules
from exchange.domain import register as register_rules
from exchange.domain.certificate import Certificate, certificate_json_text
from exchange.domain.codes import CertificateState, Decision, Reason
from exchange.domain.events import (
    Cosignature,
    ImportConfirmation,
    Issuance,
    Payload,
    ProductionDeclaration,
    Voiding,
)
from exchange.domain.keyevents import KeyRotation
from exchange.domain.region import Policy
from exchange.domain.register import Register, RegisterEntry, Revocation
from exchange.errors import Refusal
from exchange.registry.changes import (
    Changes,
    Confirmed,
    Declared,
    Gap,
    HistoryEntry,
    KeyAnnounced,
    NewCertificate,
    SequenceUse,
    StateChange,
)

NODE_EVENTS = frozenset(
    {
        "CertificateIssued",
        "CertificateVoided",
        "ImportConfirmed",
        "ProductionDeclared",
        "RegisterEntryRecorded",
        "RegisterEntryRevoked",
        "KeyRotated",
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """An authentic (signature-verified) event with its decoded payload."""

    event_id: str
    event_type: str
    producer: str
    sequence: int
    produced_at: datetime
    payload: Payload
    raw: bytes
    record: Mapping[str, Any]  # the payload as decoded (to re-encode without rebuilding it)
    cert_text: str | None = None  # CertificateIssued: Certificate.to_json as canonical JSON
    cert_digest: bytes = b""
    encoded: bytes = b""  # the payload as received (single-object bytes), to splice from

    @property
    def certificate_id(self) -> str | None:
        """The certificate the event is about, if any."""
        return certificate_of(self.payload)


def certificate_of(payload: Payload) -> str | None:
    """The certificate id a payload names, if any."""
    if isinstance(payload, Issuance):
        return payload.certificate.certificate_id
    if isinstance(payload, Voiding | ImportConfirmation):
        return payload.certificate_id
    return None


@dataclass(frozen=True, slots=True)
class Context:
    """What the rules need of the region."""

    region_code: str
    members: frozenset[str]
    node_codes: frozenset[str]
    policy: Policy


@dataclass(slots=True)
class CertRecord:
    """A stored certificate as the policy sees it; its content is parsed only when compared."""

    certificate_id: str
    issuer: str  # issuing member, else issuing participant (as rules.issued_by reads it)
    state: str  # a CertificateState (as read from its table)
    event_id: str
    digest: bytes
    body: Mapping[str, Any] | None = None
    parsed: Certificate | None = None
    destination: str = ""  # only its confirmation changes the state (member isolation)

    def certificate(self) -> Certificate:
        """The stored certificate (parsed from its JSON body on first use)."""
        if self.parsed is None:
            assert self.body is not None
            self.parsed = Certificate.from_json(self.body)
        return self.parsed


@dataclass(slots=True)
class View:
    """The state one batch can touch, loaded before and updated while deciding."""

    book: dict[str, str]
    seen: set[str] = field(default_factory=set)
    certs: dict[str, CertRecord] = field(default_factory=dict)
    used: dict[tuple[str, int], str] = field(default_factory=dict)
    high_water: dict[str, int] = field(default_factory=dict)
    open_gaps: dict[str, set[int]] = field(default_factory=dict)
    # certificate id -> unmatched confirmations: (event id, importing participant)
    waiting: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    held: dict[str, list[Event]] = field(default_factory=dict)
    register: Register = field(default_factory=Register)  # of the batch's producers (§14)
    # certificate id -> what was confirmed for it (see confirmation_fact)
    confirmed: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The business answer about one event; ``changed`` is False for an accepted no-op."""

    outcome: Decision
    reason: str | None = None
    detail: str = ""
    changed: bool = True


def text_digest(text: str) -> bytes:
    """The digest of a certificate's canonical JSON text (see :func:`certificate_text`)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


# The canonical JSON text of a certificate's Avro record lives with the certificate model: the
# node stores it too.
certificate_text = certificate_json_text


def _rejected(refusal: Refusal) -> Verdict:
    return Verdict(Decision.REJECTED, refusal.code, refusal.sentence)


def decide(event: Event, view: View, ctx: Context) -> Verdict:
    """The verdict on an authentic event, given the view (which it does not change)."""
    used_by = view.used.get((event.producer, event.sequence))
    if used_by is not None and used_by != event.event_id:
        return Verdict(
            Decision.REJECTED,
            Reason.NOT_ALLOWED,
            f"sequence {event.sequence} of {event.producer} was already used by event "
            f"{used_by}; an event is never re-sent under a new id",
        )
    payload = event.payload
    if isinstance(payload, Issuance):
        return _decide_certificate(payload.certificate, event, view, ctx)
    if isinstance(payload, Voiding):
        return _decide_void(payload, event, view, ctx)
    if isinstance(payload, ImportConfirmation):
        refusal = rules.check_import(
            payload, event.producer, view.book, region_code=ctx.region_code
        )
        if refusal is not None:
            return _rejected(refusal)
        return _repeated_confirmation(payload, view) or _confirmation_verdict(payload, view)
    return _decide_declaration(event, view, ctx)


def _decide_declaration(event: Event, view: View, ctx: Context) -> Verdict:
    """Production, the register, cosignatures and key rotations; anything else is refused."""
    payload = event.payload
    if isinstance(payload, ProductionDeclaration):
        refusal = rules.check_production(
            payload, event.producer, members=ctx.members
        ) or register_rules.declaration_refusal(
            payload.participant, payload.producer_id, payload.period, view.register,
            ctx.policy.registers,
        )  # fmt: skip
        return Verdict(Decision.ACCEPTED) if refusal is None else _rejected(refusal)
    if isinstance(payload, RegisterEntry | Revocation):
        refusal = register_rules.event_refusal(payload, event.producer, view.register, ctx.members)
        return Verdict(Decision.ACCEPTED) if refusal is None else _rejected(refusal)
    if isinstance(payload, Cosignature):  # a witness's cosignature: the log writer checks it
        return Verdict(Decision.ACCEPTED)
    if isinstance(payload, KeyRotation):
        refusal = keyevents.check_rotation(payload, event.producer, node_codes=ctx.node_codes)
        return Verdict(Decision.ACCEPTED) if refusal is None else _rejected(refusal)
    return Verdict(
        Decision.REJECTED,
        Reason.NOT_ALLOWED,
        f"a node may not publish {event.event_type}; only the registry",
    )


def confirmation_fact(c: ImportConfirmation) -> tuple[Any, ...]:
    """What an importer confirmed about a certificate: the same fact under another event id
    is the duplicate it is, not a second import (which DUPLICATE_IMPORT is for)."""
    return (
        c.importing_participant,
        c.received_on,
        c.parcels,
        c.carats,
        c.value_usd,
        c.seal_intact,
        c.remarks,
    )


def _repeated_confirmation(c: ImportConfirmation, view: View) -> Verdict | None:
    if confirmation_fact(c) not in view.confirmed.get(c.certificate_id, ()):
        return None
    return Verdict(
        Decision.ACCEPTED,
        detail=f"{c.importing_participant} already confirmed certificate {c.certificate_id} "
        "with the same figures; nothing changed",
        changed=False,
    )


def _confirmation_verdict(confirmation: ImportConfirmation, view: View) -> Verdict:
    """Accepted; a third party's confirmation is said to change nothing (member isolation)."""
    record = view.certs.get(confirmation.certificate_id)
    importer = confirmation.importing_participant
    if record is None or rules.is_destination(record.destination, importer):
        return Verdict(Decision.ACCEPTED)
    return Verdict(
        Decision.ACCEPTED,
        detail=f"recorded: {importer} is not the destination ({record.destination}) of "
        f"{record.certificate_id}, so its state stays {record.state} (WRONG_DESTINATION)",
    )


def _decide_certificate(cert: Certificate, event: Event, view: View, ctx: Context) -> Verdict:
    digest = event.cert_digest
    refusal = rules.check_certificate(
        cert,
        event.producer,
        view.book,
        ctx.policy,
        region_code=ctx.region_code,
        members=ctx.members,
        # the node's day when it applied the operation, as it signed it: a redelivery, or a
        # replay next year, is decided the same way
        applied_on=event.produced_at.date(),
    ) or register_rules.certificate_refusal(cert, view.register, ctx.policy.registers)
    if refusal is not None:
        return _rejected(refusal)
    existing = view.certs.get(cert.certificate_id)
    if existing is None:
        return Verdict(Decision.ACCEPTED)
    if existing.digest != digest:
        refusal = rules.check_duplicate(existing.certificate(), cert)
        if refusal is not None:
            return _rejected(refusal)
    return Verdict(
        Decision.ACCEPTED,
        detail=f"certificate {cert.certificate_id} was already accepted with the same content "
        f"(event {existing.event_id}); nothing changed",
        changed=False,
    )


def _decide_void(voiding: Voiding, event: Event, view: View, ctx: Context) -> Verdict:
    existing = view.certs.get(voiding.certificate_id)
    refusal = rules.check_void(
        voiding,
        event.producer,
        region_code=ctx.region_code,
        members=ctx.members,
        existing_state=None if existing is None else existing.state,
        issuer_matches=existing is not None and existing.issuer == event.producer,
    )
    if refusal is None:
        return Verdict(Decision.ACCEPTED)
    if existing is None and refusal.code == Reason.UNKNOWN_CERTIFICATE and _gap_below(event, view):
        return Verdict(
            Decision.HELD,
            detail=f"certificate {voiding.certificate_id} is not known yet and earlier events of "
            f"{event.producer} are missing; the void is decided when they arrive",
        )
    return _rejected(refusal)


def _gap_below(event: Event, view: View) -> bool:
    return any(s < event.sequence for s in view.open_gaps.get(event.producer, ()))


def track_sequence(producer: str, sequence: int, event_id: str, view: View, out: Changes) -> None:
    """Record that an authentic event's sequence number arrived: open gaps below it, or fill one.

    A number already used (a duplicate, or a replay under another id) changes nothing.
    """
    if (producer, sequence) in view.used:
        return
    view.used[(producer, sequence)] = event_id
    out.sequences.append(SequenceUse(producer, sequence, event_id))
    high = view.high_water.get(producer, 0)
    gaps = view.open_gaps.setdefault(producer, set())
    if sequence > high:
        for missing in range(high + 1, sequence):
            gaps.add(missing)
            out.gaps_opened.append(Gap(producer, missing))
        view.high_water[producer] = sequence
        out.high_water[producer] = sequence
    elif sequence in gaps:
        gaps.discard(sequence)
        out.gaps_filled.append(Gap(producer, sequence))


def apply(event: Event, verdict: Verdict, view: View, out: Changes) -> None:
    """Update the view and collect the rows for an accepted event (others change no state)."""
    view.seen.add(event.event_id)
    if verdict.outcome == Decision.HELD:
        view.held.setdefault(event.producer, []).append(event)
    if verdict.outcome != Decision.ACCEPTED or not verdict.changed:
        return
    payload = event.payload
    if isinstance(payload, Issuance):
        _apply_certificate(payload.certificate, event, view, out)
    elif isinstance(payload, Voiding):
        state = (
            CertificateState.VOIDED if payload.replaced_by is None else CertificateState.REPLACED
        )
        view.certs[payload.certificate_id].state = state
        out.state_changes.append(StateChange(payload.certificate_id, payload.replaced_by, state))
        out.history.append(
            HistoryEntry(
                payload.certificate_id, event.event_id, event.event_type, state, payload.reason
            )
        )
    elif isinstance(payload, ImportConfirmation):
        _apply_confirmation(payload, event, view, out)
    elif isinstance(payload, ProductionDeclaration):
        out.production.append(Declared(payload, event.event_id))
    elif isinstance(payload, RegisterEntry | Revocation):
        register_rules.apply_event(payload, view.register)
        out.register.append((payload, event.event_id))
    elif isinstance(payload, KeyRotation):
        out.keys.append(KeyAnnounced(payload, event.event_id, event.produced_at))


def _apply_certificate(cert: Certificate, event: Event, view: View, out: Changes) -> None:
    issuer = cert.issuing_member or cert.issuing_participant
    record = CertRecord(
        cert.certificate_id,
        issuer,
        CertificateState.ISSUED,
        event.event_id,
        event.cert_digest,
        parsed=cert,
        destination=cert.destination,
    )
    view.certs[cert.certificate_id] = record
    waiting = view.waiting.pop(cert.certificate_id, [])
    out.certificates.append(NewCertificate(cert, event.producer, event))
    out.history.append(
        HistoryEntry(
            cert.certificate_id, event.event_id, event.event_type, CertificateState.ISSUED, ""
        )
    )
    for confirmation_id, importer in sorted(waiting):
        _confirm(record, confirmation_id, importer, out)
        out.matched.append(confirmation_id)


def _apply_confirmation(
    confirmation: ImportConfirmation, event: Event, view: View, out: Changes
) -> None:
    record = view.certs.get(confirmation.certificate_id)
    out.confirmations.append(Confirmed(confirmation, event.event_id, record is not None))
    view.confirmed.setdefault(confirmation.certificate_id, set()).add(
        confirmation_fact(confirmation)
    )
    importer = confirmation.importing_participant
    if record is None:
        waiting = view.waiting.setdefault(confirmation.certificate_id, [])
        waiting.append((event.event_id, importer))
        return
    _confirm(record, event.event_id, importer, out)


def _confirm(record: CertRecord, confirmation_id: str, importer: str, out: Changes) -> None:
    """A confirmation matched to its certificate: by its destination, ISSUED becomes
    IMPORT_CONFIRMED; by anyone else, the state stays (member isolation)."""
    cert_id = record.certificate_id
    if not rules.is_destination(record.destination, importer):
        detail = f"WRONG_DESTINATION: confirmed by {importer}, not {record.destination}"
        out.history.append(
            HistoryEntry(cert_id, confirmation_id, "ImportConfirmed", record.state, detail)
        )
        return
    if record.state == CertificateState.ISSUED:
        record.state = CertificateState.IMPORT_CONFIRMED
        out.state_changes.append(StateChange(cert_id, None, CertificateState.IMPORT_CONFIRMED))
    out.history.append(HistoryEntry(cert_id, confirmation_id, "ImportConfirmed", record.state, ""))


def releasable(view: View) -> list[Event]:
    """Held voids whose producer has no open gap below them any more, in sequence order."""
    ready: list[Event] = []
    for producer, events in view.held.items():
        gaps = view.open_gaps.get(producer, set())
        keep: list[Event] = []
        for event in events:
            (keep if any(s < event.sequence for s in gaps) else ready).append(event)
        view.held[producer] = keep
    return sorted(ready, key=lambda e: (e.producer, e.sequence))


def decision_recipient(producer: str, node_codes: Collection[str]) -> str | None:
    """Who gets the RegistryDecision: only a node has a queue to route it to."""
    return producer if producer in node_codes else None
