"""The Kimberley Process certificate as frozen dataclasses, and its three representations.

- **Operation JSON** (``kpx node submit``, parsed with ``parse_float=Decimal``):
  :meth:`CertificateDraft.from_json` reads it, naming the field path of anything missing or
  ill-typed in a ``Refusal("SCHEMA_INVALID", ...)``. ``certificate_id`` may be omitted — the
  node then allocates the next serial — so parsing yields a :class:`CertificateDraft`
  (``certificate_id: str | None``) and :meth:`CertificateDraft.with_id` turns it into a
  :class:`Certificate`. :meth:`Certificate.from_json` is the shortcut when the id is required.
  ``number_of_parcels``, ``total_carats`` and ``total_value_usd`` may be omitted and are then
  computed from the parcels; when given they are kept as stated, so that ``rules`` can
  refuse a mismatch (``TOTALS_MISMATCH``) instead of silently correcting it.
- **Avro records** (``kpx.Certificate``): :meth:`Certificate.to_record` /
  :meth:`Certificate.from_record` use the shape fastavro reads and writes.
- **Display JSON**: :meth:`Certificate.to_json` (decimals as ``"100.00"``, ISO dates,
  ``"7102.10"``); ``Certificate.from_json(cert.to_json()) == cert``.

An HS code that is a string but not one of the three headings is refused at parse time as
``INVALID_HS_CODE`` with its value; an Avro record from a newer schema may still carry
``HsCode.UNKNOWN``, which ``rules.check_hs_codes`` refuses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, NoReturn, Self, TypedDict, TypeVar, Unpack, cast

from exchange.errors import Refusal

SCHEMA_INVALID = "SCHEMA_INVALID"
CENT = Decimal("0.01")
# kpx.* decimals are precision 18, scale 2: at most 16 digits before the point.
_MAX_AMOUNT_DIGITS = 16
_INT32 = 2**31
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_E = TypeVar("_E", bound=Enum)


def _describe(value: object) -> str:
    """How a refusal shows a bad value: JSON spelling, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_amount(value: object, field: str) -> Decimal:
    """A carat weight or USD amount as a Decimal quantized to 0.01.

    Accepts Decimal (JSON parsed with ``parse_float=Decimal``), int, a numeric string, and a
    float only through its shortest repr. Raises Refusal(SCHEMA_INVALID) naming ``field`` for
    anything else: more than 2 decimal places, NaN, infinity, booleans, other types.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str | float):
        raise Refusal(SCHEMA_INVALID, f"{field} must be a number, got {_describe(value)}")
    if isinstance(value, str) and not _NUMBER.fullmatch(value):
        raise Refusal(SCHEMA_INVALID, f"{field} must be a decimal number, got {value!r}")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise Refusal(SCHEMA_INVALID, f"{field} must be a finite number, got {value}")
    if not number.is_zero() and number.adjusted() >= _MAX_AMOUNT_DIGITS:
        raise Refusal(
            SCHEMA_INVALID, f"{field} must have at most 16 digits before the point, got {value}"
        )
    quantized = number.quantize(CENT)
    if quantized != number:
        raise Refusal(SCHEMA_INVALID, f"{field} must have at most 2 decimal places, got {value}")
    return quantized.copy_abs() if quantized.is_zero() else quantized


def amount_text(amount: Decimal) -> str:
    """A 2-place decimal as JSON text, e.g. ``"1250.50"``."""
    return f"{amount:.2f}"


def sum_of(amounts: Iterable[Decimal]) -> Decimal:
    """Exact sum of 2-place decimals (adding 2-place values never rounds)."""
    return sum(amounts, Decimal("0.00"))


class JsonObject:
    """Typed reads of one operation-JSON object; every refusal names the field's path.

    A ``default`` of None means "required": the node passes None for what it does not know.
    """

    __slots__ = ("_obj", "_path")

    def __init__(self, obj: object, path: str) -> None:
        if not isinstance(obj, Mapping):
            raise Refusal(
                SCHEMA_INVALID, f"{path or 'the operation'} must be an object, got {_describe(obj)}"
            )
        self._obj: Mapping[str, Any] = obj
        self._path = path

    def __contains__(self, key: str) -> bool:
        return key in self._obj

    def path(self, key: str) -> str:
        """The dotted path of ``key`` for a sentence, e.g. ``parcels[2].carats``."""
        return f"{self._path}.{key}" if self._path else key

    def refuse(self, code: str, key: str, problem: str) -> NoReturn:
        """Raise Refusal(code) with ``<path> <problem>``."""
        raise Refusal(code, f"{self.path(key)} {problem}")

    def reject_unknown(self, known: Iterable[str]) -> None:
        """Refuse a key outside ``known``: a misspelt optional field must not pass silently."""
        unknown = sorted(set(self._obj) - set(known))
        if unknown:
            self.refuse(SCHEMA_INVALID, unknown[0], "is not a known field")

    def _required(self, key: str) -> Any:
        if key not in self._obj:
            self.refuse(SCHEMA_INVALID, key, "is missing")
        return self._obj[key]

    def text(self, key: str, default: str | None = None, *, allow_empty: bool = False) -> str:
        """A non-empty string (or any string with ``allow_empty``)."""
        if key not in self._obj and default is not None:
            return default
        value = self._required(key)
        if not isinstance(value, str) or not (allow_empty or value.strip()):
            kind = "a string" if allow_empty else "a non-empty string"
            self.refuse(SCHEMA_INVALID, key, f"must be {kind}, got {_describe(value)}")
        return value

    def optional_text(self, key: str, default: str | None = None) -> str | None:
        """A non-empty string or null; ``default`` when the key is absent."""
        if self._obj.get(key, default) is None:
            return None
        return self.text(key, default)

    def integer(self, key: str, default: int | None = None) -> int:
        """An Avro int (32-bit)."""
        if key not in self._obj and default is not None:
            return default
        value = self._required(key)
        if isinstance(value, bool) or not isinstance(value, int) or not -_INT32 <= value < _INT32:
            self.refuse(SCHEMA_INVALID, key, f"must be an integer, got {_describe(value)}")
        return value

    def amount(self, key: str, default: Decimal | None = None) -> Decimal:
        """A 2-place decimal (see to_amount)."""
        if key not in self._obj and default is not None:
            return default
        return to_amount(self._required(key), self.path(key))

    def boolean(self, key: str) -> bool:
        """true or false."""
        value = self._required(key)
        if not isinstance(value, bool):
            self.refuse(SCHEMA_INVALID, key, f"must be true or false, got {_describe(value)}")
        return value

    def day(self, key: str, default: date | None = None) -> date:
        """An ISO date ``YYYY-MM-DD``."""
        if key not in self._obj and default is not None:
            return default
        value = self._required(key)
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        try:
            if isinstance(value, str) and _ISO_DATE.fullmatch(value):
                return date.fromisoformat(value)
        except ValueError:
            pass
        self.refuse(SCHEMA_INVALID, key, f"must be an ISO date YYYY-MM-DD, got {_describe(value)}")

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        """One of ``options``."""
        value = self._required(key)
        if value not in options:
            self.refuse(
                SCHEMA_INVALID, key, f"must be one of {', '.join(options)}, got {_describe(value)}"
            )
        return str(value)

    def texts(self, key: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """A list of non-empty strings."""
        if key not in self._obj and default is not None:
            return default
        items = self._list(key)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                self.refuse(
                    SCHEMA_INVALID,
                    f"{key}[{i}]",
                    f"must be a non-empty string, got {_describe(item)}",
                )
        return tuple(items)

    def objects(self, key: str) -> list[JsonObject]:
        """A list of objects, each read with its own path ``key[i]``."""
        return [
            JsonObject(item, self.path(f"{key}[{i}]")) for i, item in enumerate(self._list(key))
        ]

    def object(self, key: str) -> JsonObject:
        """A nested object."""
        return JsonObject(self._required(key), self.path(key))

    def _list(self, key: str) -> list[Any]:
        value = self._required(key)
        if not isinstance(value, list | tuple):
            self.refuse(SCHEMA_INVALID, key, f"must be a list, got {_describe(value)}")
        return list(value)


class HsCode(Enum):
    """HS heading of a rough-diamond parcel; the member name is the Avro symbol."""

    UNKNOWN = "UNKNOWN"
    HS_7102_10 = "7102.10"  # unsorted
    HS_7102_21 = "7102.21"  # industrial: unworked or simply sawn, cleaved or bruted
    HS_7102_31 = "7102.31"  # non-industrial


class OriginType(Enum):
    """UNMIXED: one country of origin; MIXED: several (origin lost, e.g. at a hub)."""

    UNKNOWN = "UNKNOWN"
    UNMIXED = "UNMIXED"
    MIXED = "MIXED"


class Scope(Enum):
    """INTRA_REGIONAL: between two members; EXTERNAL: crosses the region's border."""

    UNKNOWN = "UNKNOWN"
    INTRA_REGIONAL = "INTRA_REGIONAL"
    EXTERNAL = "EXTERNAL"


def from_symbol(enum: type[_E], symbol: str) -> _E:
    """Reader-side enum resolution: a symbol this reader does not know is the default UNKNOWN."""
    members = _SYMBOLS.get(enum)
    if members is None:  # ``__members__`` builds a mapping proxy on every access
        members = _SYMBOLS[enum] = dict(enum.__members__)
    found = members.get(symbol)
    return enum["UNKNOWN"] if found is None else cast(_E, found)


_SYMBOLS: dict[type[Enum], dict[str, Enum]] = {}


_HS_VALUES = {code.name: code.value for code in HsCode}


def certificate_json_text(record: Mapping[str, Any]) -> str:
    """A ``kpx.Certificate`` Avro record as canonical JSON text (sorted keys, no spaces).

    The same content as ``Certificate.to_json()``, made by one ``json.dumps`` whose
    ``default`` renders decimals and dates instead of a recursive copy first: a third of the
    cost, and both the node and the registry do it for every certificate. Only the parcels'
    ``hs_code`` symbols need mapping (the one enum whose JSON form differs).
    """
    parcels = [
        {**parcel, "hs_code": _HS_VALUES.get(parcel["hs_code"], parcel["hs_code"])}
        for parcel in record["parcels"]
    ]
    return _CANONICAL_JSON.encode({**record, "parcels": parcels})


def _json_default(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form in a certificate")


# One encoder for every certificate: json.dumps with options builds a new one per call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_json_default)


def record_of(value: Any) -> Any:
    """The Avro record (fastavro shape) of a payload dataclass: enums as symbols, lists."""
    return _convert(value, lambda leaf: leaf.name if isinstance(leaf, Enum) else leaf)


def json_of(value: Any) -> Any:
    """The JSON-friendly form of a payload dataclass: 2-place strings, ISO dates, enum values."""

    def leaf(item: Any) -> Any:
        if isinstance(item, Enum):
            return item.value
        if isinstance(item, Decimal):
            return amount_text(item)
        return item.isoformat() if isinstance(item, date) else item

    return _convert(value, leaf)


def _convert(value: Any, leaf: Callable[[Any], Any]) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _convert(getattr(value, f.name), leaf) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_convert(item, leaf) for item in value]
    return leaf(value)


@dataclass(frozen=True, slots=True)
class Party:
    """An exporter or importer named on a certificate."""

    name: str
    address: str
    country: str
    licence_no: str

    @classmethod
    def from_json(cls, obj: JsonObject) -> Self:
        obj.reject_unknown(_names(cls))
        return cls(*(obj.text(name) for name in _names(cls)))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(*(record[name] for name in _names(cls)))


@dataclass(frozen=True, slots=True)
class Origin:
    """Country of origin of the goods: UNMIXED or MIXED, with the countries where known."""

    type: OriginType
    countries: tuple[str, ...]

    @classmethod
    def from_json(cls, obj: JsonObject) -> Self:
        obj.reject_unknown(_names(cls))
        return cls(OriginType(obj.choice("type", ("UNMIXED", "MIXED"))), obj.texts("countries"))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(from_symbol(OriginType, record["type"]), tuple(record["countries"]))


@dataclass(frozen=True, slots=True)
class Parcel:
    """One parcel in the sealed container; carats and USD quantized to 0.01."""

    parcel_no: int
    hs_code: HsCode
    carats: Decimal
    value_usd: Decimal
    origin_country: str | None = None
    # The register id of the mine or artisanal cooperative it came from (DESIGN §14).
    producer_id: str | None = None

    @classmethod
    def from_json(cls, obj: JsonObject) -> Self:
        obj.reject_unknown(_names(cls))
        return cls(
            parcel_no=obj.integer("parcel_no"),
            hs_code=_hs_code_from_json(obj),
            carats=obj.amount("carats"),
            value_usd=obj.amount("value_usd"),
            origin_country=obj.optional_text("origin_country"),
            producer_id=obj.optional_text("producer_id"),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(
            parcel_no=record["parcel_no"],
            hs_code=from_symbol(HsCode, record["hs_code"]),
            carats=to_amount(record["carats"], "carats"),
            value_usd=to_amount(record["value_usd"], "value_usd"),
            origin_country=record.get("origin_country"),
            producer_id=record.get("producer_id"),
        )


def _hs_code_from_json(obj: JsonObject) -> HsCode:
    """Read ``"7102.10"``; a string that is no listed heading is INVALID_HS_CODE, not schema."""
    text = obj.text("hs_code")
    known = {code.value: code for code in HsCode if code is not HsCode.UNKNOWN}
    if text not in known:
        obj.refuse("INVALID_HS_CODE", "hs_code", f"must be one of {', '.join(known)}, got {text!r}")
    return known[text]


@dataclass(frozen=True, slots=True)
class Container:
    """The tamper-resistant container the parcels travel in, with its seals."""

    container_id: str
    seal_numbers: tuple[str, ...]

    @classmethod
    def from_json(cls, obj: JsonObject) -> Self:
        obj.reject_unknown(_names(cls))
        return cls(obj.text("container_id"), obj.texts("seal_numbers"))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(record["container_id"], tuple(record["seal_numbers"]))


class IssueDefaults(TypedDict, total=False):
    """What the issuing node knows and an ``issue`` operation may omit."""

    issuing_participant: str | None
    issuing_member: str | None
    issuing_authority: str | None
    members: Collection[str]  # the region's members, to derive an omitted scope


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateContent:
    """Everything a certificate states except its number (shared by draft and certificate)."""

    issuing_participant: str
    issuing_member: str | None
    issuing_authority: str
    destination: str
    origin: Origin
    exporter: Party
    importer: Party
    date_of_issue: date
    date_of_expiry: date
    parcels: tuple[Parcel, ...]
    number_of_parcels: int
    total_carats: Decimal
    total_value_usd: Decimal
    container: Container
    lawful_import_evidence: tuple[str, ...] = ()
    scope: Scope


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate(CertificateContent):
    """A KP certificate with exactly the fields of ``kpx.Certificate``."""

    certificate_id: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], **defaults: Unpack[IssueDefaults]) -> Certificate:
        """Parse an ``issue`` certificate that must carry its ``certificate_id``.

        Takes CertificateDraft.from_json's defaults. Raises Refusal(SCHEMA_INVALID) naming the
        field path, or Refusal(INVALID_HS_CODE).
        """
        draft = CertificateDraft.from_json(obj, **defaults)
        if draft.certificate_id is None:
            JsonObject(obj, "").refuse(SCHEMA_INVALID, "certificate_id", "is missing")
        return draft.with_id(draft.certificate_id)

    def to_record(self) -> dict[str, Any]:
        """The ``kpx.Certificate`` record as fastavro writes it, in schema field order."""
        record: dict[str, Any] = record_of(self)
        return {name: record[name] for name in _RECORD_ORDER}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Certificate:
        """Build from a ``kpx.Certificate`` record as fastavro reads it."""
        return cls(
            certificate_id=record["certificate_id"],
            issuing_participant=record["issuing_participant"],
            issuing_member=record.get("issuing_member"),
            issuing_authority=record["issuing_authority"],
            destination=record["destination"],
            origin=Origin.from_record(record["origin"]),
            exporter=Party.from_record(record["exporter"]),
            importer=Party.from_record(record["importer"]),
            date_of_issue=record["date_of_issue"],
            date_of_expiry=record["date_of_expiry"],
            parcels=tuple(Parcel.from_record(p) for p in record["parcels"]),
            number_of_parcels=record["number_of_parcels"],
            total_carats=to_amount(record["total_carats"], "total_carats"),
            total_value_usd=to_amount(record["total_value_usd"], "total_value_usd"),
            container=Container.from_record(record["container"]),
            lawful_import_evidence=tuple(record.get("lawful_import_evidence", ())),
            scope=from_symbol(Scope, record["scope"]),
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict: decimals as 2-place strings, ISO dates, HS codes as 7102.10."""
        out: dict[str, Any] = json_of(self)
        return {name: out[name] for name in _RECORD_ORDER}


_RECORD_ORDER = ("certificate_id", *(f.name for f in fields(CertificateContent)))


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateDraft(CertificateContent):
    """A parsed ``issue`` certificate whose ``certificate_id`` the node may still allocate."""

    certificate_id: str | None = None

    @classmethod
    def from_json(
        cls, obj: Mapping[str, Any], **defaults: Unpack[IssueDefaults]
    ) -> CertificateDraft:
        """Parse the ``certificate`` object of an ``issue`` operation.

        The keyword arguments are the issuing node's defaults, used only for fields the JSON
        omits (a value in the JSON wins, so ``rules`` can refuse a wrong one). ``scope`` may be
        omitted when ``members`` is given: :func:`derived_scope` (INTRA_REGIONAL only from a
        member to a member).
        Raises Refusal(SCHEMA_INVALID) naming the field path, or Refusal(INVALID_HS_CODE).
        """
        o = JsonObject(obj, "")
        o.reject_unknown(_RECORD_ORDER)
        parcels = tuple(Parcel.from_json(p) for p in o.objects("parcels"))
        destination = o.text("destination")
        member = o.optional_text("issuing_member", defaults.get("issuing_member"))
        return cls(
            certificate_id=o.optional_text("certificate_id"),
            issuing_participant=o.text("issuing_participant", defaults.get("issuing_participant")),
            issuing_member=member,
            issuing_authority=o.text("issuing_authority", defaults.get("issuing_authority")),
            destination=destination,
            origin=Origin.from_json(o.object("origin")),
            exporter=Party.from_json(o.object("exporter")),
            importer=Party.from_json(o.object("importer")),
            date_of_issue=o.day("date_of_issue"),
            date_of_expiry=o.day("date_of_expiry"),
            parcels=parcels,
            number_of_parcels=o.integer("number_of_parcels", len(parcels)),
            total_carats=o.amount("total_carats", sum_of(p.carats for p in parcels)),
            total_value_usd=o.amount("total_value_usd", sum_of(p.value_usd for p in parcels)),
            container=Container.from_json(o.object("container")),
            lawful_import_evidence=o.texts("lawful_import_evidence", ()),
            scope=_scope_from_json(o, member, destination, defaults.get("members", ())),
        )

    def with_id(self, certificate_id: str) -> Certificate:
        """The certificate under ``certificate_id`` (allocated by the node or stated)."""
        values = {f.name: getattr(self, f.name) for f in fields(CertificateContent)}
        return Certificate(certificate_id=certificate_id, **values)


def derived_scope(issuing_member: str | None, destination: str, members: Collection[str]) -> Scope:
    """The one derivation of a certificate's scope (the rules check against it too):
    INTRA_REGIONAL only from a member to a member; a partner's certificate, issued outside
    the region, is EXTERNAL whatever its destination."""
    return Scope.INTRA_REGIONAL if issuing_member and destination in members else Scope.EXTERNAL


def _scope_from_json(
    o: JsonObject, issuing_member: str | None, destination: str, members: Collection[str]
) -> Scope:
    """The stated scope, or the derived one when the caller knows the members."""
    if "scope" in o or not members:
        return Scope(o.choice("scope", ("INTRA_REGIONAL", "EXTERNAL")))
    return derived_scope(issuing_member, destination, members)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    # Cached: dataclasses.fields() rebuilds its tuple on every call, once per record read.
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names
