"""Benchmark ``kpx reconcile --as-of`` over N bulk-loaded certificates (default 1,000,000).

Creates a scratch database on ``KPX_DATABASE_URL``, applies the registry's and the
reconciler's migrations, COPYs N certificates (one or two parcels each), confirmations for
about 95 % of them, a few voids, half-yearly production per member and some sequence gaps,
then times one as-of run (and a second, which must raise nothing) and reports the peak RSS of
this process: the checks run in the server, so it stays flat as N grows.

    python -m benchmarks.reconcile_bench [--certificates N] [--keep]

``run(n) -> dict`` returns the figures for the benchmark suite.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from exchange.adapters.postgres import (
    Connection,
    connect,
    create_database,
    drop_database,
    dsn_for,
    migrate,
)
from exchange.domain.region import load_region
from exchange.reconciler import deadline_checks, service
from exchange.wire.codec import default_store
from exchange.wire.signing import generate_key

SERVER = os.environ.get("KPX_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REGION_FILE = Path(__file__).resolve().parent.parent / "deploy" / "region.example.toml"
AS_OF = date(2026, 9, 30)
START = date(2024, 1, 1)
DAYS = 900  # issue dates from 2024-01-01 to mid-2026
MEMBERS = ("BW", "ZA", "NA", "LS", "AO", "CD", "ZW")
PARTNERS = ("EU", "AE", "IN")
HS = ("7102.10", "7102.21", "7102.31")
PRICE = {"BW": 150, "ZA": 120, "NA": 550, "LS": 350, "AO": 140, "CD": 8, "ZW": 50}
CHUNK = 50_000


def _copy(conn: Connection, table: str, rows: Iterator[str]) -> None:
    """COPY tab-separated lines in chunks, so the client never holds more than one chunk."""
    with conn.cursor() as cur:
        while True:
            buf = io.StringIO()
            n = 0
            for line in rows:
                buf.write(line)
                n += 1
                if n == CHUNK:
                    break
            if n == 0:
                break
            buf.seek(0)
            cur.copy_expert(f"COPY {table} FROM STDIN", buf)
    conn.commit()


def _certificates(n: int, rng: random.Random) -> Iterator[tuple[str, ...]]:
    for i in range(n):
        member = MEMBERS[i % len(MEMBERS)]
        issued = START + timedelta(days=rng.randrange(DAYS))
        carats = rng.randint(1_000, 1_000_000) / 100
        price = PRICE[member] * rng.lognormvariate(0, 0.25)
        if rng.random() < 0.0005:
            price *= 40  # a valuation outlier
        yield (f"XS-{member}-{issued.year}-{i:07d}-00", member, PARTNERS[i % 3],
               issued.isoformat(), f"{carats:.2f}", f"{carats * price:.2f}",
               HS[rng.randrange(3)])  # fmt: skip


def load(conn: Connection, n: int, seed: int = 7) -> None:
    """Bulk-load the projection and the registry's tables the checks read."""
    rng = random.Random(seed)

    def certs() -> Iterator[str]:
        for cid, member, dest, issued, carats, usd, _ in _certificates(n, rng):
            expiry = (date.fromisoformat(issued) + timedelta(days=59)).isoformat()
            yield (f"{cid}\tXS\t{member}\t{dest}\tUNMIXED\t{{{member}}}\t{issued}\t{expiry}"
                   f"\t1\t{carats}\t{usd}\t00000000-0000-0000-0000-000000000000\n")  # fmt: skip

    def parcels() -> Iterator[str]:
        for cid, member, _, _, carats, usd, hs in _certificates(n, random.Random(seed)):
            yield f"{cid}\t1\t{hs}\t{carats}\t{usd}\t{member}\n"

    def confirmations() -> Iterator[str]:
        pick = random.Random(seed + 1)
        for i, (cid, _, dest, issued, carats, usd, _) in enumerate(
            _certificates(n, random.Random(seed))
        ):
            if pick.random() < 0.95:
                on = (date.fromisoformat(issued) + timedelta(days=10)).isoformat()
                uid = f"00000000-0000-4000-8000-{i:012d}"
                yield f"{uid}\t{i}\t{cid}\tXS\t{dest}\t{on}\t1\t{carats}\t{usd}\tt\n"

    _copy(conn, "recon.certificates", certs())
    _copy(conn, "recon.parcels", parcels())
    _copy(conn, "recon.confirmations", confirmations())
    _extras(conn, n)


def _extras(conn: Connection, n: int) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO recon.production (event_id, participant, period, producer_id, carats,"
            " value_usd) SELECT gen_random_uuid(), m, y || '-H' || h, 'MINE', %s, 0"
            " FROM unnest(%s::text[]) m, generate_series(2024, 2026) y, generate_series(1, 2) h",
            (n * 400, list(MEMBERS)),
        )
        cur.execute(
            "INSERT INTO recon.voids (certificate_id, voided_on, event_id)"
            " SELECT certificate_id, date_of_issue, event_id FROM recon.certificates"
            " TABLESAMPLE SYSTEM (0.1) ON CONFLICT DO NOTHING"
        )
        cur.execute(
            "INSERT INTO sequence_gap_ranges (producer, first_sequence, last_sequence,"
            " detected_at) VALUES ('BW', 100, 120, '2026-09-01')"
        )
        cur.execute("SELECT setval('recon.confirmations_seq_seq', %s)", (n + 1,))
        cur.execute("ANALYZE")
    conn.commit()


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def run(n: int = 1_000_000, *, keep: bool = False) -> dict[str, Any]:
    """Load ``n`` certificates into a scratch database, reconcile twice; return the figures."""
    name = f"kpx_bench_recon_{os.getpid()}"
    create_database(SERVER, name)
    dsn = dsn_for(SERVER, name)
    try:
        conn = connect(dsn)
        migrate(conn, "exchange.registry")
        service.prepare(dsn)
        region = load_region(REGION_FILE)
        ctx = service.context(region, default_store(), generate_key("XS-RECONCILER"))
        load_seconds, _ = _timed(lambda: load(conn, n))
        first_seconds, first = _timed(lambda: deadline_checks.reconcile(conn, ctx, AS_OF))
        second_seconds, second = _timed(lambda: deadline_checks.reconcile(conn, ctx, AS_OF))
        conn.close()
    finally:
        if not keep:
            drop_database(SERVER, name)
    return {
        "certificates": n,
        "load_seconds": round(load_seconds, 1),
        "reconcile_seconds": round(first_seconds, 1),
        "rerun_seconds": round(second_seconds, 1),
        "raised": first.raised,
        "raised_on_rerun": second.total,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    print(json.dumps(run(args.certificates, keep=args.keep), indent=2))


if __name__ == "__main__":
    main()
