"""The register of mines, artisanal cooperatives, dealers and exporters (DESIGN §14), pure.

KP Annex II recommends licensing and registers of miners, buyers, sellers and exporters; the
2013 workshop asked for a comprehensive database that brings artisanal miners into the legal
system. A member keeps its register at its node (``register`` and ``revoke`` operations);
each change is a signed event, and the registry keeps the region's register with its history.

Validity, the one rule every caller shares (node, registry, reconciler SQL):

- A registration (a version of an entry) covers ``valid_from`` to ``valid_until``, both days
  included; no ``valid_until`` is open-ended. Registering the same id again adds a version
  (a renewal, a new licence number): the entry is valid on a day one of its versions covers.
- A revocation with ``effective`` E ends every version recorded *before* it from E on: the day
  before E the licence is still valid, on E it is not. A version recorded after a revocation
  (the licence was granted again) stands on its own.
- Order of recording is the ``seq`` number each version and revocation gets when stored
  (the registry's acceptance order, the node's operation order).

The rules UNLICENSED_EXPORTER and UNREGISTERED_PRODUCER return a Refusal (or None) for the
*fact*; whether it refuses (``[policy] registers = "enforce"``) or is only recorded and raised
later by ``kpx reconcile`` (``record``) is the caller's choice through :func:`enforced`.
A partner's certificates are never checked against the region's register.

Errors: ``from_json`` raises Refusal(SCHEMA_INVALID) naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Any, ClassVar, Self

from exchange.domain.certificate import CertificateContent, JsonObject, from_symbol, record_of
from exchange.domain.kpstats import Period
from exchange.errors import Refusal

UNLICENSED_EXPORTER = "UNLICENSED_EXPORTER"
UNREGISTERED_PRODUCER = "UNREGISTERED_PRODUCER"
ENFORCE, RECORD = "enforce", "record"
REGISTER_MODES = (ENFORCE, RECORD)
# An id: the member's code, then letters, digits and - / . (e.g. BW-MINE-0001).
_ENTRY_ID = re.compile(r"[A-Z]{2}[A-Z0-9./-]{1,62}")


class EntryKind(Enum):
    """What a register entry is (kpx.RegisterKind)."""

    UNKNOWN = "UNKNOWN"
    MINE = "MINE"  # an industrial mine (a mining licence)
    ARTISANAL_COOPERATIVE = "ARTISANAL_COOPERATIVE"  # registered artisanal diggers
    DEALER = "DEALER"  # a licensed buyer and seller of rough
    EXPORTER = "EXPORTER"  # a licensed exporter named on certificates


PRODUCER_KINDS = frozenset({EntryKind.MINE, EntryKind.ARTISANAL_COOPERATIVE})
KIND_NAMES = tuple(k.value for k in EntryKind if k is not EntryKind.UNKNOWN)


@dataclass(frozen=True, slots=True)
class RegisterEntry:
    """RegisterEntryRecorded: a member registers (or renews) a licensed party."""

    EVENT_TYPE: ClassVar[str] = "RegisterEntryRecorded"
    member: str
    kind: EntryKind
    entry_id: str
    name: str
    licence_no: str
    valid_from: date
    valid_until: date | None = None
    zone: str | None = None
    members: int | None = None  # registered miners of a cooperative

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, member: str) -> Self:
        """Parse a ``register`` operation's ``entry`` object for ``member``."""
        o = JsonObject(obj, "entry")
        given = {k for k, v in obj.items() if v is not None} if isinstance(obj, Mapping) else set()
        o.reject_unknown(
            ("kind", "id", "name", "licence_no", "valid_from", "valid_until", "zone", "members")
        )
        kind = EntryKind(o.choice("kind", KIND_NAMES))
        entry = cls(
            member=member,
            kind=kind,
            entry_id=o.text("id"),
            name=o.text("name"),
            licence_no=o.text("licence_no"),
            valid_from=o.day("valid_from"),
            valid_until=o.day("valid_until") if "valid_until" in given else None,
            zone=o.optional_text("zone"),
            members=o.integer("members") if "members" in given else None,
        )
        return entry

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = record_of(self)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(
            member=record["member"],
            kind=from_symbol(EntryKind, record["kind"]),
            entry_id=record["entry_id"],
            name=record["name"],
            licence_no=record["licence_no"],
            valid_from=record["valid_from"],
            valid_until=record.get("valid_until"),
            zone=record.get("zone"),
            members=record.get("members"),
        )


@dataclass(frozen=True, slots=True)
class Revocation:
    """RegisterEntryRevoked: a licence ends on ``effective`` (that day it is no longer valid)."""

    EVENT_TYPE: ClassVar[str] = "RegisterEntryRevoked"
    member: str
    entry_id: str
    effective: date
    reason: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, member: str) -> Self:
        """Parse a ``revoke`` operation (``id``, ``effective``, ``reason``) for ``member``."""
        o = JsonObject(obj, "")
        o.reject_unknown(("op", "member", "request_id", "id", "effective", "reason"))
        return cls(member, o.text("id"), o.day("effective"), o.text("reason"))

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = record_of(self)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(record["member"], record["entry_id"], record["effective"], record["reason"])


RegisterChange = tuple[RegisterEntry | Revocation, str]  # an accepted event and its id


def check_entry(entry: RegisterEntry, *, producer: str, members: Iterable[str]) -> Refusal | None:
    """The refusals of a registration itself: who registers, the id, dates and counts."""
    if producer not in members or entry.member != producer:
        return Refusal(
            "NOT_ALLOWED",
            f"{producer} is not a member of the region: only a member keeps a register",
        )
    if not _ENTRY_ID.fullmatch(entry.entry_id) or not entry.entry_id.startswith(producer):
        return Refusal(
            "SCHEMA_INVALID",
            f"entry.id {entry.entry_id!r} must start with the member's code {producer} and "
            "hold only capital letters, digits and - / .",
        )
    if entry.valid_until is not None and entry.valid_until < entry.valid_from:
        return Refusal(
            "INVALID_DATES",
            f"entry.valid_until {entry.valid_until.isoformat()} is before valid_from "
            f"{entry.valid_from.isoformat()}",
        )
    if entry.members is not None and entry.members <= 0:
        return Refusal("NON_POSITIVE_QUANTITY", f"entry.members is {entry.members}, must be > 0")
    if entry.kind is EntryKind.UNKNOWN:
        return Refusal("SCHEMA_INVALID", f"entry.kind must be one of {', '.join(KIND_NAMES)}")
    return None


# ---------------------------------------------------------------- the register and validity


@dataclass(frozen=True, slots=True)
class Version:
    """One stored registration of an entry, with its recording order."""

    seq: int
    entry: RegisterEntry


@dataclass(slots=True)
class Register:
    """A register (one member's, or several members'), with every version and revocation."""

    versions: dict[tuple[str, str], list[Version]] = field(default_factory=dict)
    revocations: dict[tuple[str, str], list[tuple[int, date]]] = field(default_factory=dict)
    next_seq: int = 1

    def add(self, entry: RegisterEntry, seq: int | None = None) -> None:
        """Record a version (``seq``: its stored order; the next one when None)."""
        seq = self._seq(seq)
        self.versions.setdefault((entry.member, entry.entry_id), []).append(Version(seq, entry))

    def revoke(self, revocation: Revocation, seq: int | None = None) -> None:
        """Record a revocation (it ends the versions recorded before it)."""
        seq = self._seq(seq)
        key = (revocation.member, revocation.entry_id)
        self.revocations.setdefault(key, []).append((seq, revocation.effective))

    def _seq(self, seq: int | None) -> int:
        seq = self.next_seq if seq is None else seq
        self.next_seq = max(self.next_seq, seq + 1)
        return seq

    def kind_of(self, member: str, entry_id: str) -> EntryKind | None:
        """The kind of an entry (its latest version), or None when it was never registered."""
        versions = self.versions.get((member, entry_id))
        return versions[-1].entry.kind if versions else None

    def valid_on(self, member: str, entry_id: str, day: date) -> bool:
        """Whether the entry holds a valid licence on ``day`` (see the module notes)."""
        return any(
            self._covers(member, v, day, day) for v in self.versions.get((member, entry_id), ())
        )

    def valid_during(self, member: str, entry_id: str, first: date, last: date) -> bool:
        """Whether the entry is valid on at least one day from ``first`` to ``last``."""
        return any(
            self._covers(member, v, first, last) for v in self.versions.get((member, entry_id), ())
        )

    def _covers(self, member: str, v: Version, first: date, last: date) -> bool:
        """A version is valid on some day of [first, last] (revocations cut its end)."""
        end = v.entry.valid_until
        for seq, effective in self.revocations.get((member, v.entry.entry_id), ()):
            if seq > v.seq:
                cut = date.fromordinal(effective.toordinal() - 1)
                end = cut if end is None else min(end, cut)
        start = max(v.entry.valid_from, first)
        return start <= last and (end is None or start <= end)

    def licensed_exporter(self, member: str, licence_no: str, day: date) -> bool:
        """Whether a version of an EXPORTER entry of ``member`` with ``licence_no`` covers ``day``.

        The licence is matched per version: a renewal under a new number does not make the
        old number valid again.
        """
        return any(
            v.entry.kind is EntryKind.EXPORTER
            and v.entry.licence_no == licence_no
            and self._covers(m, v, day, day)
            for (m, _), versions in self.versions.items()
            if m == member
            for v in versions
        )

    def entries(self) -> list[RegisterEntry]:
        """The latest version of every entry, by member and id."""
        return [vs[-1].entry for _, vs in sorted(self.versions.items())]


def enforced(mode: str) -> bool:
    """Whether the region refuses (``enforce``) instead of recording (``record``)."""
    return mode == ENFORCE


def unlicensed_exporter(cert: CertificateContent, register: Register) -> Refusal | None:
    """UNLICENSED_EXPORTER: a member's certificate whose exporter holds no valid licence.

    The exporter's ``licence_no`` must be the licence of an EXPORTER entry of the issuing
    member, valid on ``date_of_issue``. A partner's certificate (no issuing member) is not
    checked: the region's register is not the partner's.
    """
    member = cert.issuing_member
    if member is None:
        return None
    licence, day = cert.exporter.licence_no, cert.date_of_issue
    if register.licensed_exporter(member, licence, day):
        return None
    return Refusal(
        UNLICENSED_EXPORTER,
        f"exporter.licence_no {licence} is no exporter licence of {member} valid on "
        f"{day.isoformat()} (date_of_issue)",
    )


def unregistered_parcel(cert: CertificateContent, register: Register) -> Refusal | None:
    """UNREGISTERED_PRODUCER: a parcel names no licensed mine or cooperative of the member."""
    member = cert.issuing_member
    if member is None:
        return None
    for i, parcel in enumerate(cert.parcels):
        producer = parcel.producer_id
        if producer is None:
            continue
        refusal = _producer(register, member, producer, cert.date_of_issue, cert.date_of_issue)
        if refusal is not None:
            return Refusal(
                UNREGISTERED_PRODUCER,
                f"parcels[{i}].producer_id {producer} {refusal.sentence} on "
                f"{cert.date_of_issue.isoformat()} (date_of_issue)",
            )
    return None


def unregistered_declaration(
    member: str, producer_id: str, period: str, register: Register
) -> Refusal | None:
    """UNREGISTERED_PRODUCER: a declaration names no producer licensed during its half-year."""
    half = Period.parse(period)
    refusal = _producer(register, member, producer_id, half.first, half.last)
    if refusal is None:
        return None
    return Refusal(
        UNREGISTERED_PRODUCER, f"producer {producer_id} {refusal.sentence} during {period}"
    )


def _producer(
    register: Register, member: str, producer_id: str, first: date, last: date
) -> Refusal | None:
    kind = register.kind_of(member, producer_id)
    if kind is None:
        return Refusal(UNREGISTERED_PRODUCER, f"is not in the register of {member}")
    if kind not in PRODUCER_KINDS:
        return Refusal(UNREGISTERED_PRODUCER, f"is a {kind.value}, not a mine or cooperative")
    if not register.valid_during(member, producer_id, first, last):
        return Refusal(UNREGISTERED_PRODUCER, f"of {member} holds no valid licence")
    return None


def certificate_refusal(cert: CertificateContent, register: Register, mode: str) -> Refusal | None:
    """The register refusal of an issued certificate where the region enforces, else None."""
    if not enforced(mode):
        return None
    return unlicensed_exporter(cert, register) or unregistered_parcel(cert, register)


def declaration_refusal(
    member: str, producer_id: str, period: str, register: Register, mode: str
) -> Refusal | None:
    """The register refusal of a production declaration where the region enforces."""
    if not enforced(mode):
        return None
    return unregistered_declaration(member, producer_id, period, register)


def event_refusal(
    payload: RegisterEntry | Revocation, producer: str, register: Register, members: Collection[str]
) -> Refusal | None:
    """Why a register event is rejected, or None (the same checks as the node's)."""
    if isinstance(payload, RegisterEntry):
        return check_entry(payload, producer=producer, members=members) or renewal_refusal(
            payload, register
        )
    if payload.member != producer or producer not in members:
        return Refusal(
            "NOT_ALLOWED",
            f"member is {payload.member} but it comes from {producer}; "
            "only a member revokes its own register's licences",
        )
    return revocation_refusal(payload, register)


def revocation_refusal(revocation: Revocation, register: Register) -> Refusal | None:
    """NOT_ALLOWED for the revocation of an entry the member never registered."""
    if register.kind_of(revocation.member, revocation.entry_id) is None:
        return Refusal(
            "NOT_ALLOWED",
            f"id {revocation.entry_id} is not in the register of {revocation.member}",
        )
    return None


def renewal_refusal(entry: RegisterEntry, register: Register) -> Refusal | None:
    """NOT_ALLOWED when a registered id comes back as another kind of entry."""
    kind = register.kind_of(entry.member, entry.entry_id)
    if kind is not None and kind is not entry.kind:
        return Refusal(
            "NOT_ALLOWED",
            f"entry.id {entry.entry_id} is registered as {kind.value}; it cannot become "
            f"{entry.kind.value} (register a new id)",
        )
    return None


def apply_event(payload: RegisterEntry | Revocation, register: Register) -> None:
    """Add an accepted register event to an in-memory register."""
    if isinstance(payload, RegisterEntry):
        register.add(payload)
    else:
        register.revoke(payload)
