"""The registry's policy as pure functions: no broker, no database, no clock.

``decide``, ``apply``, ``track_sequence`` and ``releasable`` over an in-memory
:class:`~exchange.registry.policy.View`, driven the way the ingest drives them: for each
delivery, track its sequence number, decide, apply; after the batch, decide the held voids
whose gaps have closed. Held voids, sequence gaps, out-of-order confirmations and replays.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from exchange.domain.certificate import (
    Certificate,
    Container,
    HsCode,
    Origin,
    OriginType,
    Parcel,
    Party,
    Scope,
)
from exchange.domain.certnumber import regional_number
from exchange.domain.codes import CertificateState, Decision, Reason
from exchange.domain.events import (
    ImportConfirmation,
    Issuance,
    ParticipantStatus,
    Payload,
    StatusChange,
    Voiding,
)
from exchange.domain.region import Policy
from exchange.registry import policy
from exchange.registry.changes import Changes, Confirmed, Gap, HistoryEntry, StateChange
from exchange.registry.policy import Context, Event, Verdict, View

CTX = Context("XS", frozenset({"BW", "ZA"}), frozenset({"BW", "ZA", "AE"}), Policy())
BOOK = {"XS": "ADMITTED", "BW": "ADMITTED", "ZA": "ADMITTED", "AE": "ADMITTED"}
ISSUED = date(2026, 1, 15)
AT = datetime(2026, 1, 15, 12, tzinfo=UTC)


def number(serial: int) -> str:
    return regional_number("XS", "BW", 2026, serial)


def certificate(serial: int, destination: str = "AE") -> Certificate:
    parcels = (Parcel(1, HsCode.HS_7102_31, Decimal("10.00"), Decimal("900.00"), "BW"),)
    return Certificate(
        certificate_id=number(serial),
        issuing_participant="XS",
        issuing_member="BW",
        issuing_authority="Ministry of Minerals",
        destination=destination,
        origin=Origin(OriginType.UNMIXED, ("BW",)),
        exporter=Party("Okavango", "Gaborone", "BW", "E1"),
        importer=Party("Importer", "Dubai", destination, "I9"),
        date_of_issue=ISSUED,
        date_of_expiry=ISSUED + timedelta(days=45),
        parcels=parcels,
        number_of_parcels=1,
        total_carats=Decimal("10.00"),
        total_value_usd=Decimal("900.00"),
        container=Container("C-1", ("S-1",)),
        lawful_import_evidence=(),
        scope=Scope.EXTERNAL,
    )


def voiding(serial: int) -> Voiding:
    return Voiding(number(serial), "XS", ISSUED + timedelta(days=1), "withdrawn")


def confirmation(serial: int, importer: str = "AE") -> ImportConfirmation:
    return ImportConfirmation(
        number(serial), "XS", importer, ISSUED + timedelta(days=5), 1, Decimal("10.00"),
        Decimal("900.00"), True,
    )  # fmt: skip


def event(producer: str, sequence: int, payload: Payload, event_id: str | None = None) -> Event:
    digest = b""
    if isinstance(payload, Issuance):  # the same content gives the same digest
        digest = repr(payload.certificate).encode()
    return Event(
        event_id or str(uuid.uuid4()), type(payload).EVENT_TYPE, producer, sequence, AT,
        payload, b"", {}, cert_digest=digest,
    )  # fmt: skip


def issued(sequence: int, serial: int, producer: str = "BW") -> Event:
    return event(producer, sequence, Issuance(certificate(serial)))


@dataclass
class Registry:
    """The pure policy driven as the ingest drives it, over one view that lives on."""

    view: View = field(default_factory=lambda: View(book=dict(BOOK)))
    changes: Changes = field(default_factory=Changes)
    decided: dict[str, Verdict] = field(default_factory=dict)

    def deliver(self, e: Event) -> Verdict:
        """One delivery (a batch of one): track, decide, apply, then release held voids."""
        policy.track_sequence(e.producer, e.sequence, e.event_id, self.view, self.changes)
        verdict = self._decide(e)
        self.release()
        return verdict

    def release(self) -> list[Event]:
        ready = policy.releasable(self.view)
        for e in ready:
            self._decide(e)
        return ready

    def _decide(self, e: Event) -> Verdict:
        verdict = policy.decide(e, self.view, CTX)
        policy.apply(e, verdict, self.view, self.changes)
        self.decided[e.event_id] = verdict
        return verdict

    def state(self, serial: int) -> str | None:
        record = self.view.certs.get(number(serial))
        return None if record is None else record.state


# --------------------------------------------------------------------------- sequences


def test_a_first_sequence_number_above_one_opens_a_gap_for_every_missing_number() -> None:
    reg = Registry()
    policy.track_sequence("BW", 4, "e4", reg.view, reg.changes)
    assert reg.view.open_gaps["BW"] == {1, 2, 3}
    assert reg.changes.gaps_opened == [Gap("BW", 1), Gap("BW", 2), Gap("BW", 3)]
    assert reg.view.high_water["BW"] == 4 and reg.changes.high_water == {"BW": 4}


def test_a_late_sequence_number_fills_its_gap_and_leaves_the_high_water_mark() -> None:
    reg = Registry()
    policy.track_sequence("BW", 3, "e3", reg.view, reg.changes)
    policy.track_sequence("BW", 2, "e2", reg.view, reg.changes)
    assert reg.view.open_gaps["BW"] == {1}
    assert reg.changes.gaps_filled == [Gap("BW", 2)]
    assert reg.view.high_water["BW"] == 3


def test_a_sequence_number_seen_before_changes_nothing() -> None:
    reg = Registry()
    policy.track_sequence("BW", 2, "e2", reg.view, reg.changes)
    before = copy.deepcopy(reg.changes)
    policy.track_sequence("BW", 2, "other", reg.view, reg.changes)
    assert reg.changes == before
    assert reg.view.used[("BW", 2)] == "e2"


def test_sequences_of_two_producers_do_not_meet() -> None:
    reg = Registry()
    policy.track_sequence("BW", 1, "a", reg.view, reg.changes)
    policy.track_sequence("ZA", 3, "b", reg.view, reg.changes)
    assert reg.view.open_gaps == {"BW": set(), "ZA": {1, 2}}


def test_a_sequence_number_replayed_under_another_event_id_is_not_allowed() -> None:
    reg = Registry()
    assert reg.deliver(issued(1, 1)).outcome is Decision.ACCEPTED
    replay = issued(1, 2)
    verdict = reg.deliver(replay)
    assert (verdict.outcome, verdict.reason) == (Decision.REJECTED, Reason.NOT_ALLOWED)
    assert "already used" in verdict.detail
    assert reg.state(2) is None


# --------------------------------------------------------------------------- decide and apply


def test_decide_does_not_change_the_view() -> None:
    reg = Registry()
    reg.deliver(issued(1, 1))
    before = copy.deepcopy(reg.view)
    for e in (issued(2, 2), event("BW", 3, voiding(1)), event("AE", 1, confirmation(1))):
        policy.decide(e, reg.view, CTX)
    assert reg.view == before


def test_an_accepted_issuance_records_the_certificate_issued_with_its_history() -> None:
    reg = Registry()
    e = issued(1, 1)
    assert reg.deliver(e) == Verdict(Decision.ACCEPTED)
    assert reg.state(1) == CertificateState.ISSUED
    assert [c.certificate.certificate_id for c in reg.changes.certificates] == [number(1)]
    assert reg.changes.history == [
        HistoryEntry(number(1), e.event_id, "CertificateIssued", CertificateState.ISSUED, "")
    ]


def test_the_same_certificate_again_under_a_new_id_is_an_accepted_no_op() -> None:
    reg = Registry()
    reg.deliver(issued(1, 1))
    written = len(reg.changes.certificates)
    verdict = reg.deliver(issued(2, 1))
    assert verdict.outcome is Decision.ACCEPTED and not verdict.changed
    assert "nothing changed" in verdict.detail
    assert len(reg.changes.certificates) == written


def test_other_content_under_a_known_certificate_number_is_a_duplicate() -> None:
    reg = Registry()
    reg.deliver(issued(1, 1))
    other = replace(certificate(1), exporter=Party("Another", "Maun", "BW", "E2"))
    verdict = reg.deliver(event("BW", 2, Issuance(other)))
    assert (verdict.outcome, verdict.reason) == (Decision.REJECTED, Reason.DUPLICATE_CERTIFICATE)


def test_a_rejected_event_changes_no_state() -> None:
    reg = Registry()
    verdict = reg.deliver(event("BW", 1, voiding(9)))  # no gap below: nothing is missing
    assert (verdict.outcome, verdict.reason) == (Decision.REJECTED, Reason.UNKNOWN_CERTIFICATE)
    assert reg.changes.state_changes == [] and reg.changes.history == []
    assert reg.view.held == {}


def test_an_event_only_the_registry_may_publish_is_not_allowed_from_a_node() -> None:
    reg = Registry()
    status = StatusChange("ZA", ParticipantStatus.SUSPENDED, ISSUED, "test")
    verdict = reg.deliver(event("BW", 1, status))
    assert (verdict.outcome, verdict.reason) == (Decision.REJECTED, Reason.NOT_ALLOWED)


def test_a_void_of_an_issued_certificate_voids_it_and_a_replacing_void_replaces_it() -> None:
    reg = Registry()
    reg.deliver(issued(1, 1))
    reg.deliver(issued(2, 2))
    assert reg.deliver(event("BW", 3, voiding(1))).outcome is Decision.ACCEPTED
    replacing = replace(voiding(2), replaced_by=number(3))
    assert reg.deliver(event("BW", 4, replacing)).outcome is Decision.ACCEPTED
    assert (reg.state(1), reg.state(2)) == (CertificateState.VOIDED, CertificateState.REPLACED)
    assert reg.changes.state_changes == [
        StateChange(number(1), None, CertificateState.VOIDED),
        StateChange(number(2), number(3), CertificateState.REPLACED),
    ]


# --------------------------------------------------------------------------- held voids


def test_a_void_of_an_unknown_certificate_with_a_gap_below_is_held() -> None:
    reg = Registry()
    void = event("BW", 2, voiding(1))
    verdict = reg.deliver(void)
    assert verdict.outcome is Decision.HELD and verdict.reason is None
    assert reg.view.held == {"BW": [void]}
    assert reg.changes.state_changes == []


def test_a_held_void_is_accepted_once_the_missing_issuance_arrives() -> None:
    reg = Registry()
    void = event("BW", 2, voiding(1))
    reg.deliver(void)
    reg.deliver(issued(1, 1))
    assert reg.decided[void.event_id].outcome is Decision.ACCEPTED
    assert reg.state(1) == CertificateState.VOIDED
    assert reg.view.held == {"BW": []}


def test_a_held_void_is_rejected_once_its_gap_closes_without_the_certificate() -> None:
    reg = Registry()
    void = event("BW", 2, voiding(1))
    reg.deliver(void)
    reg.deliver(issued(1, 5))  # the missing event was another certificate
    verdict = reg.decided[void.event_id]
    assert (verdict.outcome, verdict.reason) == (Decision.REJECTED, Reason.UNKNOWN_CERTIFICATE)


def test_a_held_void_waits_while_any_gap_below_it_remains() -> None:
    reg = Registry()
    void = event("BW", 3, voiding(1))
    reg.deliver(void)
    reg.deliver(issued(2, 2))  # 1 is still missing
    assert reg.view.held == {"BW": [void]}
    assert void.event_id in reg.decided and reg.decided[void.event_id].outcome is Decision.HELD


def test_a_gap_above_a_held_void_does_not_hold_it() -> None:
    view = View(book=dict(BOOK), open_gaps={"BW": {7}})
    void = event("BW", 3, voiding(1))
    view.held = {"BW": [void]}
    assert policy.releasable(view) == [void]
    assert view.held == {"BW": []}


def test_releasable_voids_come_in_producer_and_sequence_order() -> None:
    later, earlier, other = (
        event("BW", 5, voiding(1)),
        event("BW", 3, voiding(2)),
        event("ZA", 2, voiding(3)),
    )
    view = View(book=dict(BOOK), held={"ZA": [other], "BW": [later, earlier]})
    assert policy.releasable(view) == [earlier, later, other]


# --------------------------------------------------------------------------- confirmations


def test_a_confirmation_after_its_certificate_makes_it_import_confirmed() -> None:
    reg = Registry()
    reg.deliver(issued(1, 1))
    conf = event("AE", 1, confirmation(1))
    assert reg.deliver(conf).outcome is Decision.ACCEPTED
    assert reg.state(1) == CertificateState.IMPORT_CONFIRMED
    assert reg.changes.confirmations == [Confirmed(conf.payload, conf.event_id, True)]


def test_a_confirmation_before_its_certificate_waits_and_is_matched_when_it_arrives() -> None:
    reg = Registry()
    conf = event("AE", 1, confirmation(1))
    assert reg.deliver(conf).outcome is Decision.ACCEPTED  # a fact reported by the importer
    assert reg.view.waiting == {number(1): [(conf.event_id, "AE")]}  # kept with its importer
    assert reg.changes.confirmations == [Confirmed(conf.payload, conf.event_id, False)]
    reg.deliver(issued(1, 1))
    assert reg.state(1) == CertificateState.IMPORT_CONFIRMED
    assert reg.changes.matched == [conf.event_id]
    assert number(1) not in reg.view.waiting


def test_a_confirmation_by_someone_else_than_the_importer_is_rejected() -> None:
    reg = Registry()
    verdict = reg.deliver(event("ZA", 1, confirmation(1, importer="AE")))
    assert verdict.outcome is Decision.REJECTED
    assert reg.changes.confirmations == []


# --------------------------------------------------------------------------- any order


def _scenario() -> list[Event]:
    """BW issues 1 and 2 and voids 1; AE confirms 2 (each producer numbers its own events)."""
    return [issued(1, 1), issued(2, 2), event("BW", 3, voiding(1)), event("AE", 1, confirmation(2))]


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_delivery_in_any_order_ends_in_the_state_of_ordered_delivery(
    order: tuple[int, ...],
) -> None:
    events = _scenario()
    reg = Registry()
    for index in order:
        reg.deliver(events[index])
    assert (reg.state(1), reg.state(2)) == (
        CertificateState.VOIDED,
        CertificateState.IMPORT_CONFIRMED,
    )
    assert all(v.outcome is Decision.ACCEPTED for v in reg.decided.values())
    assert reg.view.open_gaps == {"BW": set(), "AE": set()}
