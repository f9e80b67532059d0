"""Benchmark ``kpx registry import-trade`` on a UN Comtrade bulk CSV of N rows (default 100,000).

Writes a synthetic Comtrade file (HS 7102 and its sub-headings, flows X/M with a few RX rows
and World aggregates that are skipped, alpha-3 codes), creates a scratch database on
``KPX_DATABASE_URL`` with the registry's migrations, and times one import. Memory is measured
as the growth of this process's peak RSS during the import, for N and for N/10: the file is
streamed and COPYed in chunks, so the growth stays flat as N grows. Goal: 100,000 rows in
under 30 s.

    python -m benchmarks.trade_import_bench [--rows N] [--keep]

``run(n) -> dict`` returns the figures for the benchmark suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from exchange.adapters.postgres import connect, create_database, drop_database, dsn_for, migrate
from exchange.domain.region import load_region
from exchange.reconciler import deadline_checks, service
from exchange.registry import trade
from exchange.wire.codec import default_store
from exchange.wire.signing import generate_key

REGION_FILE = Path(__file__).resolve().parent.parent / "deploy" / "region.example.toml"
SERVER = os.environ.get("KPX_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REPORTERS = ("BWA", "ZAF", "NAM", "LSO", "AGO", "COD", "ZWE", "BEL", "ARE", "IND", "ISR", "CHN")
PARTNERS = (*REPORTERS, "SOM", "CAF", "RUS", "CAN", "USA", "CHE", "GBR", "W00")
CODES = ("7102", "710210", "710221", "710231")
HEADER = "typeCode,freqCode,refPeriodId,reporterISO,partnerISO,flowCode,cmdCode,qty,primaryValue\n"


def write_file(path: Path, rows: int, seed: int = 7) -> None:
    """A Comtrade-shaped CSV of ``rows`` data rows, written as it goes."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        for _ in range(rows):
            year, month = rng.randint(2015, 2025), rng.randint(1, 12)
            flow = rng.choice(("X", "M", "X", "M", "RX"))
            qty = f"{rng.uniform(1, 500_000):.3f}"
            value = f"{rng.uniform(100, 90_000_000):.2f}"
            out.write(
                f"C,M,{year}{month:02d}01,{rng.choice(REPORTERS)},{rng.choice(PARTNERS)},"
                f"{flow},{rng.choice(CODES)},{qty},{value}\n"
            )


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _import(dsn: str, path: Path) -> tuple[trade.Imported, float, float]:
    conn = connect(dsn)
    try:
        before = _peak_mb()
        started = time.perf_counter()
        done = trade.import_trade(conn, path, "comtrade")
        return done, time.perf_counter() - started, _peak_mb() - before
    finally:
        conn.close()


def _reconcile(dsn: str) -> tuple[float, int]:
    """One ``reconcile --as-of`` over the imported figures (no certificates): seconds, findings."""
    region = load_region(REGION_FILE)
    ctx = service.context(region, default_store(), generate_key("XS-RECONCILER"))
    conn = connect(dsn)
    try:
        started = time.perf_counter()
        summary = deadline_checks.reconcile(conn, ctx, date(2026, 9, 30))
        return time.perf_counter() - started, summary.total
    finally:
        conn.close()


def run(n: int = 100_000, keep: bool = False) -> dict[str, Any]:
    """Import N/10 then N rows; return seconds, rows/s and the peak-RSS growth of each."""
    name = f"kpx_trade_bench_{os.getpid()}"
    create_database(SERVER, name)
    dsn = dsn_for(SERVER, name)
    try:
        conn = connect(dsn)
        try:
            migrate(conn, "exchange.messaging")
            migrate(conn, "exchange.registry")
            migrate(conn, "exchange.reconciler")
        finally:
            conn.close()
        with tempfile.TemporaryDirectory() as tmp:
            small, large = Path(tmp, "small.csv"), Path(tmp, "large.csv")
            write_file(small, max(1, n // 10))
            write_file(large, n)
            small_done, small_s, small_mb = _import(dsn, small)
            done, seconds, grown_mb = _import(dsn, large)
        reconcile_s, raised = _reconcile(dsn)
    finally:
        if not keep:
            drop_database(SERVER, name)
    return {
        "rows_in_file": n,
        "rows_kept": done.rows,
        "rows_skipped": done.skipped,
        "seconds": round(seconds, 2),
        "rows_per_second": round(n / seconds),
        "peak_rss_growth_mb": round(grown_mb, 1),
        "small_rows_in_file": max(1, n // 10),
        "small_seconds": round(small_s, 2),
        "small_peak_rss_growth_mb": round(small_mb, 1),
        "reconcile_seconds": round(reconcile_s, 2),
        "external_findings": raised,
        "goal": "100,000 rows < 30 s, memory flat",
        "met": seconds < 30 * n / 100_000 and small_done.rows > 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    print(json.dumps(run(args.rows, args.keep), indent=2))


if __name__ == "__main__":
    main()
