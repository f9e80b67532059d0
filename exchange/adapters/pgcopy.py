"""PostgreSQL ``COPY … FROM STDIN`` (text format) of Python rows, for the bulk inserts.

A batch of the registry writes about eight rows per event. ``execute_values`` quotes every
value through psycopg2's ``mogrify`` and the server parses one long ``INSERT … VALUES``;
``COPY`` sends tab-separated lines the server reads with far less work (on this machine
COPY inserts 2–3× the rows per second, DESIGN §11). Use it only for plain inserts: COPY has
no ``ON CONFLICT``, so a duplicate key fails the transaction (as a plain INSERT would).

Values are rendered as PostgreSQL's text input of the column type: None is ``\\N``; bytes
become ``\\x…`` hex (bytea); a list or tuple becomes an array literal; bool ``t``/``f``;
dates and datetimes ISO 8601 (an aware datetime keeps its offset); everything else ``str()``
(str, int, Decimal, JSON text). Errors are psycopg2's, translated by the caller's
``exchange.adapters.postgres.transaction``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from exchange.adapters.postgres import Cursor

# COPY text format: backslash, and the row and column delimiters, are backslash-escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# Inside an array literal an element is double-quoted; quotes and backslashes escaped.
_ARRAY_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})


def copy_rows(
    cur: Cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """COPY ``rows`` into ``table`` (``columns`` in row order); returns how many were sent."""
    lines = ["\t".join(map(_field, row)) for row in rows]
    if not lines:
        return 0
    query = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    text = "\n".join(lines) + "\n"
    # Read in one piece: psycopg2 reads the file 8 kB at a time by default, and a batch's
    # certificates are a few hundred kB (a read and an encode per piece).
    cur.copy_expert(query.as_string(cur), io.StringIO(text), size=max(8192, len(text)))
    return len(lines)


def _field(value: Any) -> str:
    # One dict lookup on the exact type: a chain of isinstance() per value cost as much as
    # the mogrify it replaces. Subclasses (an enum.StrEnum, say) take the slower path.
    render = _RENDER.get(type(value))
    return render(value) if render is not None else _other(value)


def _text(value: str) -> str:
    # Most values need no escape; translate() with a mapping table is slow on every string.
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _bytea(value: bytes) -> str:
    return "\\\\x" + value.hex()


def _other(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes | bytearray | memoryview):
        return _bytea(bytes(value))
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, list | tuple):
        return _text(_array(value))
    if isinstance(value, int):  # an IntEnum's str() is its name, not its number
        return str(int(value))
    return str(value)


def _null(_value: None) -> str:
    return "\\N"


def _array(values: Sequence[Any]) -> str:
    items = ("NULL" if v is None else '"' + str(v).translate(_ARRAY_ESCAPES) + '"' for v in values)
    return "{" + ",".join(items) + "}"


def _array_field(values: Sequence[Any]) -> str:
    return _text(_array(values))


def _boolean(value: bool) -> str:
    return "t" if value else "f"


_RENDER: dict[type, Callable[[Any], str]] = {
    type(None): _null,
    str: _text,
    int: str,
    Decimal: str,
    bytes: _bytea,
    date: date.isoformat,
    datetime: datetime.isoformat,
    bool: _boolean,
    list: _array_field,
    tuple: _array_field,
}
