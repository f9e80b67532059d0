"""The ingest's fast paths give exactly what the plain paths they replace give.

COPY rows read back as execute_values rows do (on the real PostgreSQL); the certificate's
canonical JSON text is the dump of ``certificate_json``.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg2.extras
from support import reference
from support.registry import certificate
from support.services import Database

from exchange.adapters.pgcopy import copy_rows
from exchange.adapters.postgres import connect, transaction
from exchange.registry import policy

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
