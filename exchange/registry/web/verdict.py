"""What a border officer is told about one certificate: VALID or DO NOT ACCEPT, and why.

Pure: the facts come from :mod:`exchange.registry.web.reads`; this module only judges them.
A regional number is checked by its check digits (exchange/domain/certnumber.py) before any
lookup, so a mistyped number is called mistyped, not unknown. The verdict carries only what an
officer compares with the shipment (issuing member, destination, dates, parcels, carats) —
never the exporter, the importer or the value (DESIGN §13).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from exchange.domain.certnumber import parse_regional
from exchange.errors import Refusal

# The characters a certificate number may hold at all (DESIGN §3); anything else is mistyped.
_NUMBER = re.compile(r"[A-Z0-9/-]{1,40}")


class Status(StrEnum):
    """Why a certificate may or may not be honoured (the API's ``status``)."""

    VALID = "VALID"
    VOIDED = "VOIDED"
    REPLACED = "REPLACED"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    ALREADY_IMPORTED = "ALREADY_IMPORTED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"
    MISTYPED = "MISTYPED"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the registry holds about one accepted certificate (no parties, no value)."""

    state: str
    replaced_by: str | None
    issuing_member: str
    destination: str
    date_of_issue: date
    date_of_expiry: date
    number_of_parcels: int
    total_carats: Decimal
    imported_on: date | None = None
    imported_by: str | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """A reason in plain words: an English message id (translated by the page) and its values."""

    message: str
    values: tuple[tuple[str, str], ...] = ()

    def text(self, translate: Callable[[str], str] = str) -> str:
        return translate(self.message).format(**dict(self.values))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer of ``/verify/{id}``; ``why`` is None only when valid."""

    certificate_id: str
    status: Status
    why: Reason | None
    facts: Facts | None = None

    @property
    def valid(self) -> bool:
        return self.status is Status.VALID

    @property
    def reason(self) -> str | None:
        """The reason in English (the API's ``reason``)."""
        return self.why.text() if self.why else None

    def to_json(self) -> dict[str, Any]:
        """The exact fields of DESIGN §13 ``GET /api/v1/verify/{id}``."""
        f = self.facts
        return {
            "certificate_id": self.certificate_id,
            "valid": self.valid,
            "status": self.status.value,
            "reason": self.reason,
            "issuing_member": f.issuing_member if f else None,
            "destination": f.destination if f else None,
            "date_of_issue": f.date_of_issue.isoformat() if f else None,
            "date_of_expiry": f.date_of_expiry.isoformat() if f else None,
            "number_of_parcels": f.number_of_parcels if f else None,
            "total_carats": f"{f.total_carats:.2f}" if f else None,
        }


def normalise(text: str) -> str:
    """What an officer typed, as a number: trimmed, upper case, inner spaces dropped."""
    return "".join(text.split()).upper()


def precheck(number: str, region: str) -> Verdict | None:
    """A verdict without lookup when ``number`` cannot be a certificate number, else None."""
    if not _NUMBER.fullmatch(number):
        return Verdict(number[:40], Status.MISTYPED, Reason(_BAD_CHARACTERS))
    if number.startswith(f"{region}-"):
        try:
            parse_regional(number, region)
        except Refusal:
            return Verdict(number, Status.MISTYPED, Reason(_BAD_DIGITS))
    return None


_BAD_CHARACTERS = (
    "This number is mistyped: it holds characters no certificate number has. "
    "Check it against the paper certificate."
)
_BAD_DIGITS = (
    "This number is mistyped: its check digits do not match. "
    "Check it against the paper certificate."
)


def judge(number: str, facts: Facts | None, on: date, rejected: str | None = None) -> Verdict:
    """The verdict on ``on`` for a number that passed :func:`precheck`.

    ``facts`` is None when the registry never accepted the number; ``rejected`` then holds
    the registry's reason if it rejected a certificate under that number.
    """
    if facts is None:
        if rejected is not None:
            why = Reason("The registry refused this certificate ({code}); it was never valid.",
                         (("code", rejected),))  # fmt: skip
            return Verdict(number, Status.REJECTED, why)
        return Verdict(number, Status.UNKNOWN, Reason(_UNKNOWN))
    status, reason = _status(facts, on)
    return Verdict(number, status, reason, facts)


_UNKNOWN = (
    "The registry has no certificate with this number: it may be forged or not yet "
    "reported. Hold the shipment and contact the issuing authority."
)


def _status(f: Facts, on: date) -> tuple[Status, Reason | None]:
    if f.state == "VOIDED":
        return Status.VOIDED, Reason(
            "The issuing authority ({issuer}) cancelled it.", (("issuer", f.issuing_member),)
        )
    if f.state == "REPLACED":
        return Status.REPLACED, Reason(
            "It was replaced by certificate {other}; only the replacement is valid.",
            (("other", f.replaced_by or "?"),),
        )
    if f.state == "IMPORT_CONFIRMED":
        return Status.ALREADY_IMPORTED, Reason(
            "It was already imported on {day} by {who}; presented again, it is being re-used.",
            (("day", f"{f.imported_on or '?'}"), ("who", f.imported_by or "?")),
        )
    if on < f.date_of_issue:
        return Status.NOT_YET_VALID, Reason(
            "It is dated {day}, after today.", (("day", f"{f.date_of_issue:%Y-%m-%d}"),)
        )
    if on > f.date_of_expiry:
        return Status.EXPIRED, Reason(
            "It expired on {day}.", (("day", f"{f.date_of_expiry:%Y-%m-%d}"),)
        )
    return Status.VALID, None
