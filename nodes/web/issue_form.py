"""The issue form as the node's operation, and a refusal back beside its field (pure).

Form fields are named by their JSON path (``exporter.name``, ``parcels[1].carats``), so the
path a rule's sentence starts with names the field to show it beside; no rule lives here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

PARTY_FIELDS = ("name", "address", "country", "licence_no")
PARCEL_FIELDS = ("hs_code", "carats", "value_usd", "origin_country")
HS_CODES = ("7102.10", "7102.21", "7102.31")
MAX_PARCELS = 200
_PATH = re.compile(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+)?)\b")
_LIST_SPLIT = re.compile(r"[,\s]+")


def blank(member: str, today: date) -> dict[str, str]:
    """The values of an empty form: today's dates, the member as origin and exporter country."""
    return {
        "parcels": "1",
        "origin.type": "UNMIXED",
        "origin.countries": member,
        "exporter.country": member,
        "date_of_issue": today.isoformat(),
        "date_of_expiry": (today + timedelta(days=30)).isoformat(),
        "parcels[0].hs_code": "7102.31",
        "parcels[0].origin_country": member,
    }


def values_from(cert: Mapping[str, Any], today: date) -> dict[str, str]:
    """The form's values from an existing certificate, to issue its replacement (new dates,
    no number: the replacement gets the next one)."""
    values = blank(str(cert.get("issuing_member") or ""), today)
    values.update(
        {
            "destination": str(cert["destination"]),
            "origin.type": str(cert["origin"]["type"]),
            "origin.countries": ", ".join(cert["origin"]["countries"]),
            "container.container_id": str(cert["container"]["container_id"]),
            "container.seal_numbers": ", ".join(cert["container"]["seal_numbers"]),
            "parcels": str(len(cert["parcels"])),
        }
    )
    for party in ("exporter", "importer"):
        values.update({f"{party}.{f}": str(cert[party][f]) for f in PARTY_FIELDS})
    for i, parcel in enumerate(cert["parcels"]):
        values.update({f"parcels[{i}].{f}": str(parcel.get(f) or "") for f in PARCEL_FIELDS})
    return values


def values_of(form: Mapping[str, Any]) -> dict[str, str]:
    """The posted text values (at most 100 kB each: a longer one is cut, then refused)."""
    return {k: str(v)[:100_000] for k, v in form.items() if isinstance(v, str)}


def parcel_count(values: Mapping[str, str]) -> int:
    try:
        return max(1, min(int(values.get("parcels", "1")), MAX_PARCELS))
    except ValueError:
        return 1


def remove_parcel(values: dict[str, str], index: int) -> dict[str, str]:
    """The values with parcel ``index`` taken out and the later ones moved up."""
    n = parcel_count(values)
    if n <= 1 or not 0 <= index < n:
        return values
    out = {k: v for k, v in values.items() if not k.startswith("parcels[")}
    for new, old in enumerate(i for i in range(n) if i != index):
        for field in PARCEL_FIELDS:
            out[f"parcels[{new}].{field}"] = values.get(f"parcels[{old}].{field}", "")
    out["parcels"] = str(n - 1)
    return out


def add_parcel(values: dict[str, str], member: str) -> dict[str, str]:
    n = parcel_count(values)
    if n >= MAX_PARCELS:
        return values
    out = dict(values, parcels=str(n + 1))
    out[f"parcels[{n}].hs_code"] = values.get(f"parcels[{n - 1}].hs_code", "7102.31")
    out[f"parcels[{n}].origin_country"] = member
    return out


def _amount(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip().replace(" ", "").replace(",", ""))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def totals(values: Mapping[str, str]) -> dict[str, Decimal | int | None]:
    """Number of parcels and the carats and USD they add up to (None while one is unreadable)."""
    n = parcel_count(values)
    sums: dict[str, Decimal | int | None] = {"number_of_parcels": n}
    for field, total in (("carats", "total_carats"), ("value_usd", "total_value_usd")):
        amounts = [_amount(values.get(f"parcels[{i}].{field}", "")) for i in range(n)]
        sums[total] = None if None in amounts else sum((a for a in amounts if a), Decimal(0))
    return sums


def _list(text: str) -> list[str]:
    return [item for item in _LIST_SPLIT.split(text.strip()) if item]


def _number(text: str) -> Any:
    """Digits as an int; anything else left as typed, for the rules to refuse in their words."""
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else stripped


def certificate_of(values: Mapping[str, str]) -> dict[str, Any]:
    """The ``certificate`` object of an ``issue`` operation from the form's values."""
    v = {k: val.strip() for k, val in values.items()}
    cert: dict[str, Any] = {
        "destination": v.get("destination", "").upper(),
        "origin": {"type": v.get("origin.type", ""),
                   "countries": [c.upper() for c in _list(v.get("origin.countries", ""))]},
        "exporter": {f: v.get(f"exporter.{f}", "") for f in PARTY_FIELDS},
        "importer": {f: v.get(f"importer.{f}", "") for f in PARTY_FIELDS},
        "date_of_issue": v.get("date_of_issue", ""),
        "date_of_expiry": v.get("date_of_expiry", ""),
        "parcels": [_parcel(v, i) for i in range(parcel_count(values))],
        "container": {"container_id": v.get("container.container_id", ""),
                      "seal_numbers": _list(v.get("container.seal_numbers", ""))},
    }  # fmt: skip
    if v.get("certificate_id"):
        cert["certificate_id"] = v["certificate_id"]
    return cert


def _parcel(v: Mapping[str, str], i: int) -> dict[str, Any]:
    parcel: dict[str, Any] = {
        "parcel_no": i + 1,
        "hs_code": v.get(f"parcels[{i}].hs_code", ""),
        "carats": v.get(f"parcels[{i}].carats", ""),
        "value_usd": v.get(f"parcels[{i}].value_usd", ""),
    }
    origin = v.get(f"parcels[{i}].origin_country", "").upper()
    if origin:
        parcel["origin_country"] = origin
    return parcel


def field_of(sentence: str, fields: set[str]) -> str | None:
    """The form field a rule's sentence is about (it starts with the field's path)."""
    match = _PATH.match(sentence)
    if not match:
        return None
    path = match.group(1)
    if path in fields:
        return path
    head = path.split(".")[0]
    if head in fields:
        return head
    # "parcels[0].parcel_no" and other paths the form does not show fall back to the group.
    return next((f for f in sorted(fields) if f.startswith(path + ".")), None)


def form_fields(values: Mapping[str, str]) -> set[str]:
    names = {"certificate_id", "destination", "origin.type", "origin.countries",
             "date_of_issue", "date_of_expiry", "container.container_id",
             "container.seal_numbers"}  # fmt: skip
    names.update(f"{party}.{f}" for party in ("exporter", "importer") for f in PARTY_FIELDS)
    names.update(f"parcels[{i}].{f}" for i in range(parcel_count(values)) for f in PARCEL_FIELDS)
    return names
