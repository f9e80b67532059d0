"""The ingest's fast paths give exactly what the plain paths they replace give.

COPY rows read back as execute_values rows do (on the real PostgreSQL); the certificate's
canonical JSON text is the dump of ``certificate_json``; the one-pass text screen of opening
refuses exactly what the two walks it replaced refused, with the same sentence; the regex
that checks an event id is canonical agrees with parsing it; the rules' text-field check
names the same field as before.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg2.extras
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import reference
from support.registry import certificate
from support.services import Database

from exchange.adapters.pgcopy import copy_rows
from exchange.adapters.postgres import connect, transaction
from exchange.domain import events, rules
from exchange.domain.events import Issuance
from exchange.errors import Refusal
from exchange.registry import policy
from exchange.wire.codec import is_canonical_uuid

TRICKY_TEXT = 'back\\slash\ttab\nnewline\rreturn "quoted" {brace} , comma ünï \\N'
ROWS: list[tuple[Any, ...]] = [
    (
        TRICKY_TEXT,
        7,
        Decimal("1234.50"),
        date(2026, 3, 1),
        datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
        b"\x00\\\t\n\xff",
        ["BW", 'Z"A', "back\\slash", "tab\there", None],
        True,
        '{"a": "b\\\\c", "t": "x\\ty"}',
    ),
    (None, None, None, None, None, None, None, None, None),
    ("", -1, Decimal("0.00"), date(1999, 12, 31), datetime(2026, 1, 1, tzinfo=UTC), b"", [],
     False, "[]"),
]  # fmt: skip
TABLE = (
    "CREATE TABLE t_{} (t text, i bigint, d numeric(18,2), day date, at timestamptz, "
    "b bytea, a text[], f boolean, j jsonb)"
)
COLUMNS = ("t", "i", "d", "day", "at", "b", "a", "f", "j")


def _read(cur: Any, table: str) -> list[tuple[Any, ...]]:
    cur.execute(f"SELECT t, i, d, day, at, b, a, f, j FROM {table} ORDER BY i NULLS FIRST, t")
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in cur]


def test_copy_rows_store_what_execute_values_stores(database: Database) -> None:
    conn = connect(database.url)
    try:
        with transaction(conn) as cur:
            cur.execute(TABLE.format("copy"))
            cur.execute(TABLE.format("values"))
            assert copy_rows(cur, "t_copy", COLUMNS, ROWS) == len(ROWS)
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO t_values VALUES %s",
                [(*r[:5], None if r[5] is None else psycopg2.Binary(r[5]), *r[6:]) for r in ROWS],
            )
            assert _read(cur, "t_copy") == _read(cur, "t_values")
    finally:
        conn.close()


def test_copy_rows_of_nothing_sends_nothing(database: Database) -> None:
    conn = connect(database.url)
    try:
        with transaction(conn) as cur:
            assert copy_rows(cur, "no_such_table", COLUMNS, []) == 0
    finally:
        conn.close()


def test_certificate_text_is_the_canonical_dump_of_certificate_json() -> None:
    plain = certificate("BW", 4242)
    exporter = dataclasses.replace(plain.exporter, name='Exporter "Ünïon" \\ Ltd\t')
    record = dataclasses.replace(plain, exporter=exporter).to_record()
    expected = json.dumps(reference.certificate_json(record), sort_keys=True, separators=(",", ":"))
    assert policy.certificate_text(record) == expected
    assert policy.text_digest(expected) == reference.content_digest(
        reference.certificate_json(record)
    )


# ------------------------------------------------------------- the text screen of opening


def _string_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path (keys and list indices) of every string in a decoded record."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _string_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _string_paths(v, (*path, i))]
    return []


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of ``value`` with the item at ``path`` replaced by ``new``."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: _replaced(v, rest, new) if k == head else v for k, v in value.items()}
    return [_replaced(v, rest, new) if i == head else v for i, v in enumerate(value)]


def _rich_record() -> dict[str, Any]:
    """A certificate record with a string in every optional text field too."""
    plain = certificate("BW", 77)
    parcel = dataclasses.replace(plain.parcels[0], producer_id="BW-MINE-1")
    cert = dataclasses.replace(plain, parcels=(parcel,), lawful_import_evidence=("EV-1",))
    return Issuance(cert).to_record()


def _refusal(record: dict[str, Any]) -> str | None:
    try:
        events.check_text(record)
    except Refusal as refusal:
        assert refusal.code == "SCHEMA_INVALID"
        return refusal.sentence
    return None


def test_a_nul_in_any_string_of_a_certificate_is_refused_as_the_two_walks_refused() -> None:
    record = _rich_record()
    paths = _string_paths(record)
    assert len(paths) >= 20
    for path in paths:
        for bad in ("\x00", "x\x00", "\x00" + "x" * 200):
            changed = _replaced(record, path, bad)
            expected = reference.text_refusal(changed)
            assert expected is not None and "NUL" in expected, path
            assert _refusal(changed) == expected, path
            with pytest.raises(Refusal, match="NUL"):
                events.payload_from_record("CertificateIssued", changed)


def test_an_overlong_identifier_is_refused_as_before_and_one_at_the_bound_is_not() -> None:
    record = _rich_record()
    identifiers = [p for p in _string_paths(record) if p[-1] in events.IDENTIFIER_FIELDS]
    assert len(identifiers) >= 5
    for path in identifiers:
        at_bound = _replaced(record, path, "I" * events.MAX_IDENTIFIER_LENGTH)
        assert _refusal(at_bound) is None, path
        events.payload_from_record("CertificateIssued", at_bound)
        over = _replaced(record, path, "I" * (events.MAX_IDENTIFIER_LENGTH + 1))
        expected = reference.text_refusal(over)
        assert expected is not None and "identifier" in expected, path
        assert _refusal(over) == expected, path
    # Free text may be long; a NUL still wins over a long identifier, as before.
    long_name = _replaced(record, ("certificate", "exporter", "name"), "N" * 5000)
    assert _refusal(long_name) is None
    both = _replaced(_replaced(record, identifiers[0], "I" * 500), ("certificate", "scope"), "\0")
    assert _refusal(both) == reference.text_refusal(both) and "NUL" in str(_refusal(both))


_KEYS = st.sampled_from([*sorted(events.IDENTIFIER_FIELDS), "name", "remarks", "parcels", "x"])
_TEXTS = (
    st.text(max_size=8)
    | st.builds(lambda n, c: c * n, st.integers(95, 105), st.sampled_from(["i", "\x00", "é"]))
    | st.builds(lambda a, b: a + "\x00" + b, st.text(max_size=3), st.text(max_size=3))
)
_LEAVES = (
    _TEXTS
    | st.none()
    | st.booleans()
    | st.integers()
    | st.decimals(places=2, allow_nan=False, allow_infinity=False)
    | st.dates()
    | st.binary(max_size=4)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(_KEYS, inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_the_one_pass_screen_refuses_exactly_what_the_two_walks_refused(
    record: dict[str, Any],
) -> None:
    assert _refusal(record) == reference.text_refusal(record)


@settings(max_examples=300, deadline=None)
@given(
    st.uuids().map(str)
    | st.uuids().map(lambda u: str(u).upper())
    | st.uuids().map(lambda u: u.hex)
    | st.uuids().map(lambda u: "{" + str(u) + "}")
    | st.uuids().map(lambda u: "urn:uuid:" + str(u))
    | st.uuids().map(lambda u: "+" + str(u)[1:])
    | st.uuids().map(lambda u: str(u) + "\n")
    | st.text(alphabet="0123456789abcdefABCDEF-_+ {}", min_size=30, max_size=40)
)
def test_the_canonical_uuid_regex_agrees_with_parsing(text: str) -> None:
    try:
        canonical = str(uuid.UUID(text)) == text
    except ValueError:
        canonical = False
    assert is_canonical_uuid(text) == canonical


def test_check_text_fields_names_the_first_blank_field_in_order() -> None:
    cert = certificate("BW", 5, lawful_import_evidence=("EV-1",))
    assert rules.check_text_fields(cert) is None
    r = dataclasses.replace
    blanked = {
        "issuing_authority": r(cert, issuing_authority=" "),
        "exporter.licence_no": r(cert, exporter=r(cert.exporter, licence_no="")),
        "importer.name": r(cert, importer=r(cert.importer, name="\t")),
        "container.container_id": r(cert, container=r(cert.container, container_id=" ")),
        "container.seal_numbers[1]": r(cert, container=r(cert.container, seal_numbers=("S", ""))),
        "lawful_import_evidence[0]": r(cert, lawful_import_evidence=(" ",)),
    }
    for name, bad in blanked.items():
        refusal = rules.check_text_fields(bad)
        assert refusal is not None and refusal.sentence == f"{name} must be a non-empty string"
    # An empty seal list is named before any blank field, as it always was.
    both = r(blanked["issuing_authority"], container=r(cert.container, seal_numbers=()))
    refusal = rules.check_text_fields(both)
    assert refusal is not None and "at least one seal" in refusal.sentence
