"""Avro single-object encoding of kpx records, strict on write and total on read.

A message is ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's parsing canonical form, then the binary datum (Avro specification, "Single-object
encoding"). :class:`SchemaStore` holds the current schema of every record as the reader
schema, and every released version (``schemas/released/<version>/``) plus the current one as
writer schemas keyed by fingerprint, so data written by any released version is resolved to
the current shape.

Writing is strict: a record with a missing required field, an unknown field, an ill-typed
value or a decimal with more places than the schema's scale raises :class:`SchemaViolation`
naming the field path. Reading is total: any bytes either decode or raise a
:class:`CodecError` subclass, never another exception. Known limit: fastavro 1.13 reads a
negative enum or union index as a Python negative index (a valid symbol or branch) instead of
failing; only a broken or hostile producer can send such bytes, and it must sign them.
"""

from __future__ import annotations

import functools
import io
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import load_schema, parse_schema, to_parsing_canonical_form

from exchange.errors import (
    BadMagic,
    CodecError,
    ConfigError,
    SchemaViolation,
    TrailingBytes,
    TruncatedMessage,
    UndecodableDatum,
    UnknownFingerprint,
)

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
# Zero bytes read as 0 / "" / index 0 / end-of-array, so a datum that merely ran out of bytes
# decodes (or runs out again) once padded; one that is malformed fails the same way.
_TRUNCATION_PROBE = b"\x00" * 64
# No kpx message comes near RabbitMQ's 128 MiB message limit; a longer declared length is
# hostile, not a truncation.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
_DECLARED = re.compile(r"Expected (-?\d+) bytes")

Record = dict[str, Any]
Checker = Callable[[Any], None]


def default_schemas_dir() -> Path:
    """The schemas shipped with the package (``exchange/wire/schemas``); ConfigError if absent.

    In a checkout that folder is a symlink to the top-level ``schemas/`` (the contract, kept
    where any Avro implementation finds it); a wheel carries copies of the files as package
    data. fastavro resolves named types from sibling files, so the folder must be a real
    directory on disk: a zipped install is refused by name.
    """
    root = resources.files("exchange.wire").joinpath("schemas")
    if not isinstance(root, Path) or not root.joinpath("kpx.Envelope.avsc").is_file():
        raise ConfigError(
            f"the Avro schemas are missing from the installed package (looked in {root}); "
            "reinstall kpx from a wheel or a checkout"
        )
    return root


def schema_fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO of the parsing canonical form, in wire (little-endian) byte order."""
    # fastavro's hex is already the little-endian byte order the spec puts on the wire
    # (checked against the reference `avro` package and the spec's test vectors in tests).
    return bytes.fromhex(_fastavro_fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def short_name(full_name: str) -> str:
    """``kpx.CertificateIssued`` -> ``CertificateIssued``."""
    return full_name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class _Version:
    """One schema of one record, as a writer: what ``decode`` needs."""

    name: str
    fingerprint: bytes
    decoding: Any  # parsed, uuid logical type dropped so uuids decode as str


@dataclass(frozen=True)
class _Current:
    """The current schema of one record: what ``encode`` needs, and the reader for decode."""

    version: _Version
    writing: Any
    header: bytes
    check: Checker  # everything, to name the field when writing fails
    quick_check: Checker | None  # only what fastavro would write silently


class SchemaStore:
    """Current reader schemas and every released writer schema, by name and fingerprint."""

    def __init__(self, current: Mapping[str, _Current], writers: Mapping[bytes, _Version]):
        self._current = dict(current)
        self._writers = dict(writers)

    @classmethod
    def load(cls, schemas_dir: Path | None = None) -> SchemaStore:
        """Load ``kpx.*.avsc`` and ``released/*/kpx.*.avsc``; raises ConfigError if unreadable."""
        root = default_schemas_dir() if schemas_dir is None else Path(schemas_dir)
        current: dict[str, _Current] = {}
        writers: dict[bytes, _Version] = {}
        for schema in _load_dir(root):
            entry = _current_entry(schema)
            current[entry.version.name] = entry
            writers[entry.version.fingerprint] = entry.version
        if not current:
            raise ConfigError(f"schemas dir {root}: no kpx.*.avsc record schemas")
        released = root / "released"
        for version_dir in released_dirs(released):
            for schema in _load_dir(version_dir):
                version = _version(schema)
                writers.setdefault(version.fingerprint, version)
        return cls(current, writers)

    def names(self) -> tuple[str, ...]:
        """Short names of every current record schema, sorted."""
        return tuple(sorted(self._current))

    def fingerprint(self, name: str) -> bytes:
        """The 8-byte fingerprint of the current schema of ``name``; SchemaViolation if unknown."""
        return self._entry(name).version.fingerprint

    def schema(self, name: str) -> Any:
        """The current schema of ``name`` as fastavro parsed it; SchemaViolation if unknown."""
        return self._entry(name).writing

    def encode(self, name: str, record: Record) -> bytes:
        """Single-object encoding of ``record`` with the current schema; raises SchemaViolation."""
        entry = self._entry(name)
        out = io.BytesIO()
        out.write(entry.header)
        try:
            if entry.quick_check is not None:
                entry.quick_check(record)
            schemaless_writer(out, entry.writing, record, strict_allow_default=True)
        except _Bad as bad:
            raise SchemaViolation(f"{name}: {bad.path()}: {bad.message}") from None
        except Exception as exc:
            raise _violation(name, entry, record, exc) from exc
        return out.getvalue()

    def decode(self, data: bytes, expected: str | None = None) -> tuple[str, Record]:
        """Decode a message to (record name, record) in the current shape.

        Raises BadMagic, UnknownFingerprint, TruncatedMessage, TrailingBytes or
        UndecodableDatum (also when ``expected`` names another record); nothing else.
        """
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) < HEADER_SIZE:
            raise BadMagic(f"not a kpx message: {_length(data)} bytes, need a 10-byte header")
        data = bytes(data)
        if data[:2] != MAGIC:
            raise BadMagic(f"not a kpx message: starts {data[:2].hex()}, expected c301")
        version = self._writers.get(data[2:HEADER_SIZE])
        if version is None:
            raise UnknownFingerprint(f"unknown schema fingerprint {data[2:HEADER_SIZE].hex()}")
        if expected is not None and expected != version.name:
            raise UndecodableDatum(f"expected a {expected}, got a {version.name}")
        reader = self._current.get(version.name)
        reader_schema = None
        if reader is not None and reader.version is not version:
            reader_schema = reader.version.decoding
        return version.name, _read(data, version, reader_schema)

    def _entry(self, name: str) -> _Current:
        entry = self._current.get(name)
        if entry is None:
            raise SchemaViolation(f"unknown record type {name!r}; known: {', '.join(self.names())}")
        return entry


def _violation(name: str, entry: _Current, record: Any, exc: Exception) -> SchemaViolation:
    """Name the field fastavro refused, by running the full check."""
    try:
        entry.check(record)
    except _Bad as bad:
        return SchemaViolation(f"{name}: {bad.path()}: {bad.message}")
    return SchemaViolation(f"{name}: {type(exc).__name__}: {exc}")


@functools.cache
def default_store() -> SchemaStore:
    """The store loaded from the package's schemas (:func:`default_schemas_dir`), once."""
    return SchemaStore.load()


def _read(data: bytes, version: _Version, reader_schema: Any) -> Record:
    """Read the datum after the header; every failure becomes a CodecError subclass."""
    buf = io.BytesIO(data)
    buf.seek(HEADER_SIZE)
    try:
        record = schemaless_reader(buf, version.decoding, reader_schema)
    except Exception as exc:
        raise _read_error(data, version, reader_schema, exc) from None
    left = len(data) - buf.tell()
    if left:
        raise TrailingBytes(f"{version.name}: {left} bytes left after the datum")
    if not isinstance(record, dict):
        raise UndecodableDatum(f"{version.name}: decoded a {type(record).__name__}, not a record")
    return record


def _read_error(data: bytes, version: _Version, reader_schema: Any, exc: Exception) -> CodecError:
    """Classify a fastavro failure: a hostile length, bytes that ran out, or anything else."""
    name = version.name
    if isinstance(exc, EOFError):
        # fastavro never allocates a declared length (BytesIO.read returns what is there), so
        # a hostile length only surfaces here; tell it from a message that was merely cut.
        declared = _DECLARED.search(str(exc))
        length = int(declared.group(1)) if declared else 0
        if not 0 <= length <= MAX_MESSAGE_BYTES:
            return UndecodableDatum(f"{name}: a length of {length} bytes is impossible")
        return TruncatedMessage(f"{name}: the datum ends early ({exc})")
    if isinstance(exc, IndexError) and _ran_out(data, version, reader_schema):
        return TruncatedMessage(f"{name}: the datum ends inside a number")
    return UndecodableDatum(f"{name}: {type(exc).__name__}: {exc}")


def _ran_out(data: bytes, version: _Version, reader_schema: Any) -> bool:
    """Whether a failed datum only lacked bytes (fastavro reports a cut varint as IndexError)."""
    buf = io.BytesIO(data + _TRUNCATION_PROBE)
    buf.seek(HEADER_SIZE)
    try:
        schemaless_reader(buf, version.decoding, reader_schema)
    except EOFError:
        return True
    except Exception:
        return False
    return buf.tell() > len(data)


def released_dirs(released: Path) -> list[Path]:
    """``released/<version>/`` folders, oldest first (v2 before v10)."""
    if not released.is_dir():
        return []
    dirs = [d for d in released.iterdir() if d.is_dir()]
    return sorted(
        dirs, key=lambda d: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", d.name)]
    )


def _length(data: object) -> str:
    try:
        return str(len(data))  # type: ignore[arg-type]
    except TypeError:
        return "no"


def _load_dir(directory: Path) -> list[Any]:
    """Parsed schemas of every ``kpx.*.avsc`` in ``directory``; ConfigError names the file."""
    schemas = []
    for path in sorted(directory.glob("kpx.*.avsc")):
        try:
            schemas.append(load_schema(str(path)))
        except Exception as exc:  # fastavro raises several unrelated types for a bad file
            raise ConfigError(f"schema file {path}: {type(exc).__name__}: {exc}") from exc
    return [s for s in schemas if isinstance(s, dict) and s.get("type") == "record"]


def _version(schema: dict[str, Any]) -> _Version:
    decoding = parse_schema(_without_uuid(_plain(schema)))
    return _Version(short_name(schema["name"]), schema_fingerprint(schema), decoding)


def _current_entry(schema: dict[str, Any]) -> _Current:
    version = _version(schema)
    full = _CheckerBuilder()
    check = full.build(schema)
    quick = _CheckerBuilder(full).build(schema)
    assert check is not None  # a full builder always compiles a check
    return _Current(version, schema, MAGIC + version.fingerprint, check, quick)


def _plain(schema: Any) -> Any:
    """A copy without fastavro's private ``__`` keys, fit to parse again."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if not str(k).startswith("__")}
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    return schema


def _without_uuid(schema: Any) -> Any:
    """Drop ``logicalType: uuid`` so fastavro returns a uuid as ``str`` (our record shape)."""
    if isinstance(schema, dict):
        if schema.get("logicalType") == "uuid":
            return {k: v for k, v in schema.items() if k != "logicalType"}
        return {k: _without_uuid(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_without_uuid(s) for s in schema]
    return schema


class _Bad(Exception):
    """A strict-write failure; the path is collected while it unwinds (free when unused)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.trail: list[str] = []

    def path(self) -> str:
        return "".join(reversed(self.trail)).lstrip(".") or "(record)"


def _fail(message: str, value: Any) -> _Bad:
    return _Bad(f"{message}, got {type(value).__name__} {_short_repr(value)}")


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_INT_BOUNDS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


# What fastavro's writer lets through silently: an out-of-range int, a bool as an int, a date
# as an ISO string, a naive datetime, a malformed uuid, anything for a null. The hot path
# checks only these and leaves the rest (key sets, enums, decimal scale) to fastavro's strict
# writer; when that fails, the full check runs to name the field.
_SILENT = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "date", "uuid"}
    | {"timestamp-millis", "timestamp-micros"}
)


class _CheckerBuilder:
    """Compiles a parsed schema into closures that raise _Bad for a value that does not fit.

    With ``full=None`` it checks everything; given the full builder of the same schema it
    checks only the ``_SILENT`` types, and a subtree with nothing to check compiles to None.
    """

    def __init__(self, full: _CheckerBuilder | None = None) -> None:
        self._full = full
        self._named: dict[str, Checker | None] = {}

    def build(self, schema: Any) -> Checker | None:
        if isinstance(schema, list):
            return self._union(schema)
        if isinstance(schema, str):
            if schema in self._named:
                return self._named[schema]
            if schema not in _PRIMITIVES:
                raise ConfigError(f"schema references unknown type {schema!r}")
            return self._leaf(schema, _PRIMITIVES[schema])
        kind, logical = schema["type"], schema.get("logicalType")
        check: Checker | None
        if logical in _LOGICAL:
            check = self._leaf(logical, _LOGICAL[logical](schema))
        elif kind == "record":
            return self._record(schema)
        elif kind in ("array", "map"):
            inner = self.build(schema["items" if kind == "array" else "values"])
            check = None if inner is None else (_array if kind == "array" else _map)(inner)
        elif kind == "enum":
            check = self._leaf(kind, _enum(schema))
        elif kind == "fixed":
            check = self._leaf(kind, _fixed(schema["size"]))
        else:
            return self.build(kind)
        if "name" in schema:
            self._named[schema["name"]] = check
        return check

    def _leaf(self, kind: str, check: Checker) -> Checker | None:
        return check if self._full is None or kind in _SILENT else None

    def _record(self, schema: dict[str, Any]) -> Checker | None:
        fields: list[tuple[str, Checker]] = []  # filled after registering: allows recursion
        required = frozenset(f["name"] for f in schema["fields"] if "default" not in f)
        known = frozenset(f["name"] for f in schema["fields"])

        def check(value: Any) -> None:
            if type(value) is not dict:
                raise _fail("expected a record (dict)", value)
            if not required <= value.keys() or not value.keys() <= known:
                raise _key_error(value, required, known)
            for name, field_check in fields:
                if name in value:
                    try:
                        field_check(value[name])
                    except _Bad as bad:
                        bad.trail.append("." + name)
                        raise

        self._named[schema["name"]] = check
        for field in schema["fields"]:
            field_check = self.build(field["type"])
            if field_check is not None:
                fields.append((field["name"], field_check))
        if not fields and self._full is not None:
            self._named[schema["name"]] = None
            return None
        return check

    def _union(self, branches: list[Any]) -> Checker | None:
        built = [self.build(b) for b in branches if b != "null"]
        if self._full is not None:
            if all(b is None for b in built):
                return None
            if any(b is None for b in built):  # cannot tell branches apart: check them fully
                return self._full._union(branches)
        checks = [b for b in built if b is not None]
        nullable = "null" in branches
        if len(checks) == 1:  # the common [null, X]: delegate, so nested errors keep detail
            return _optional(checks[0], nullable)
        return _any_of(checks, nullable, branches)


def _optional(only: Checker, nullable: bool) -> Checker:
    def check(value: Any) -> None:
        if value is None and nullable:
            return
        only(value)

    return check


def _any_of(checks: list[Checker], nullable: bool, branches: list[Any]) -> Checker:
    def check(value: Any) -> None:
        if value is None and nullable:
            return
        for branch in checks:
            try:
                branch(value)
                return
            except _Bad:
                continue
        raise _fail(f"no branch of union {branches} matches", value)

    return check


def _key_error(value: dict[str, Any], required: frozenset[str], known: frozenset[str]) -> _Bad:
    missing = sorted(required - value.keys())
    if missing:
        bad = _Bad("missing required field")
        bad.trail.append("." + missing[0])
        return bad
    unknown = sorted(str(k) for k in value.keys() - known)
    bad = _Bad("unknown field (not in the schema)")
    bad.trail.append("." + unknown[0])
    return bad


def _array(item: Checker) -> Checker:
    def check(value: Any) -> None:
        if type(value) is not list and type(value) is not tuple:
            raise _fail("expected a list", value)
        for index, element in enumerate(value):
            try:
                item(element)
            except _Bad as bad:
                bad.trail.append(f"[{index}]")
                raise

    return check


def _map(values: Checker) -> Checker:
    def check(value: Any) -> None:
        if type(value) is not dict:
            raise _fail("expected a map (dict)", value)
        for key, element in value.items():
            if type(key) is not str:
                raise _fail("expected str map keys", key)
            try:
                values(element)
            except _Bad as bad:
                bad.trail.append(f"[{key!r}]")
                raise

    return check


def _enum(schema: dict[str, Any]) -> Checker:
    symbols = frozenset(schema["symbols"])

    def check(value: Any) -> None:
        if type(value) is not str or value not in symbols:
            raise _fail(f"expected one of {sorted(symbols)}", value)

    return check


def _fixed(size: int) -> Checker:
    def check(value: Any) -> None:
        if type(value) is not bytes or len(value) != size:
            raise _fail(f"expected {size} bytes", value)

    return check


def _typed(*types: type, what: str) -> Checker:
    def check(value: Any) -> None:
        if type(value) not in types:
            raise _fail(f"expected {what}", value)

    return check


def _integer(kind: str) -> Checker:
    low, high = _INT_BOUNDS[kind]

    def check(value: Any) -> None:
        # bool is an int subclass, and fastavro would silently write an out-of-range int
        if type(value) is not int or not low <= value <= high:
            raise _fail(f"expected an Avro {kind} ({low}..{high})", value)

    return check


def _null(value: Any) -> None:
    if value is not None:
        raise _fail("expected None", value)


_PRIMITIVES: dict[str, Checker] = {
    "null": _null,
    "boolean": _typed(bool, what="a bool"),
    "int": _integer("int"),
    "long": _integer("long"),
    "float": _typed(float, int, what="a float"),
    "double": _typed(float, int, what="a float"),
    "bytes": _typed(bytes, what="bytes"),
    "string": _typed(str, what="a str"),
}


def _decimal(schema: dict[str, Any]) -> Checker:
    scale = int(schema.get("scale", 0))
    limit = Decimal(10) ** int(schema["precision"])

    def check(value: Any) -> None:
        if type(value) is not Decimal or not value.is_finite():
            raise _fail("expected a finite Decimal", value)
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -scale:  # never round silently
            raise _fail(f"more than {scale} decimal places", value)
        if abs(value.scaleb(scale)) >= limit:
            raise _fail(f"more than {schema['precision']} significant digits", value)

    return check


def _date(schema: dict[str, Any]) -> Checker:
    def check(value: Any) -> None:
        if type(value) is not date:
            raise _fail("expected a datetime.date", value)

    return check


def _instant(schema: dict[str, Any]) -> Checker:
    def check(value: Any) -> None:
        if type(value) is not datetime or value.utcoffset() is None:
            raise _fail("expected a timezone-aware datetime", value)

    return check


# The one spelling ``str(uuid.UUID(x))`` gives back unchanged: 8-4-4-4-12 lower-case hex.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_canonical_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in canonical form (``str(uuid.UUID(text)) == text``).

    A regex: parsing each event's id as a UUID (twice when opening, once per uuid field when
    writing) cost more than the rest of the envelope checks.
    """
    return _CANONICAL_UUID.fullmatch(text) is not None


def _uuid(schema: dict[str, Any]) -> Checker:
    def check(value: Any) -> None:
        if type(value) is str and _CANONICAL_UUID.fullmatch(value):
            return  # the spelling kpx writes; any other is parsed to decide
        try:
            if type(value) is not str:
                raise TypeError(value)
            uuid.UUID(value)
        except (TypeError, ValueError):
            raise _fail("expected a uuid string", value) from None

    return check


_LOGICAL: dict[str, Callable[[dict[str, Any]], Checker]] = {
    "decimal": _decimal,
    "date": _date,
    "timestamp-millis": _instant,
    "timestamp-micros": _instant,
    "uuid": _uuid,
}
