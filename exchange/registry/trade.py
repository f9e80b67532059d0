"""``kpx registry import-trade``: external trade figures into the registry, versioned by source.

Each import of a source is a new version (``trade_imports``); its rows go to ``trade_rows`` by
COPY in chunks, streamed from the file, so memory stays flat however long the file is. The
whole import is one transaction: a malformed row (MalformedTradeFile, naming its line and
column) rolls it back and nothing of the file is kept. The reconciler reads the latest version
of each source (exchange/reconciler/register_checks.py).

Errors: MalformedTradeFile (permanent), ConfigError for a file that cannot be read,
DatabaseUnavailable (transient).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exchange.adapters.pgcopy import copy_rows
from exchange.adapters.postgres import Connection, Cursor, transaction
from exchange.domain.trade import Parsed, TradeRow, read_trade
from exchange.errors import ConfigError

_CHUNK = 10_000
_COLUMNS = (
    "import_id", "line", "period", "first_day", "last_day", "reporter", "partner", "flow",
    "hs_code", "carats", "value_usd",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Imported:
    """One stored import: its source, version, format and row counts."""

    import_id: int
    source: str
    version: int
    file_format: str
    rows: int
    skipped: int

    def to_json(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "source": self.source,
            "version": self.version,
            "format": self.file_format,
            "rows": self.rows,
            "skipped": self.skipped,
        }


def import_trade(conn: Connection, path: str | os.PathLike[str], source: str) -> Imported:
    """Read and store a trade file as the next version of ``source``; all or nothing."""
    parsed = Parsed()
    try:
        file = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ConfigError(f"trade file {os.fspath(path)} cannot be read: {exc.strerror}") from exc
    with file, transaction(conn) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("kpx-trade:" + source,))
        cur.execute(
            "INSERT INTO trade_imports (source, version, file_name, file_format, rows, skipped)"
            " SELECT %s, COALESCE(max(version), 0) + 1, %s, '', 0, 0 FROM trade_imports"
            " WHERE source = %s RETURNING import_id, version",
            (source, Path(path).name, source),
        )
        import_id, version = _one(cur)
        rows = read_trade(file, parsed)
        total = 0
        while chunk := list(itertools.islice(rows, _CHUNK)):
            total += copy_rows(cur, "trade_rows", _COLUMNS, [_row(import_id, r) for r in chunk])
        cur.execute(
            "UPDATE trade_imports SET file_format = %s, rows = %s, skipped = %s"
            " WHERE import_id = %s",
            (parsed.file_format, total, parsed.skipped, import_id),
        )
    return Imported(import_id, source, version, parsed.file_format, total, parsed.skipped)


def _row(import_id: int, r: TradeRow) -> tuple[Any, ...]:
    return (import_id, r.line, r.period, r.first, r.last, r.reporter, r.partner, r.flow,
            r.hs_code, r.carats, r.value_usd)  # fmt: skip


def _one(cur: Cursor) -> tuple[Any, ...]:
    row = cur.fetchone()
    assert row is not None
    return tuple(row)


def imports(cur: Cursor) -> list[Imported]:
    """Every import, latest first within each source."""
    cur.execute(
        "SELECT import_id, source, version, file_format, rows, skipped FROM trade_imports"
        " ORDER BY source, version DESC"
    )
    return [Imported(*row) for row in cur.fetchall()]
