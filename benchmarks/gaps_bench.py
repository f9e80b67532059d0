"""Benchmark what a registry batch reads of a producer that has N open sequence gaps.

Issue 11, item 7: a jump of 10^6 in one producer's sequence numbers left a million open gap
rows, and every later batch of that producer loaded all of them. The batch now reads only the
gaps it fills and the producer's lowest other one. Creates a scratch database on
``KPX_DATABASE_URL``, writes N open gaps for BW (N one-number ranges: the worst case since gaps
are stored as ranges), and times ``store.load_view`` for a batch of
100 events above them (best of five).

    python -m benchmarks.gaps_bench [--gaps N]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from exchange.adapters.postgres import (
    connect,
    create_database,
    drop_database,
    dsn_for,
    migrate,
    transaction,
)
from exchange.registry import limits, store

SERVER = os.environ.get("KPX_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def run(gaps: int) -> dict[str, float]:
    """Seconds (best of five) to load the view of a 100-event batch, and gaps it loaded."""
    name = f"kpxt_gapbench_{uuid.uuid4().hex[:8]}"
    create_database(SERVER, name)
    try:
        conn = connect(dsn_for(SERVER, name))
        migrate(conn, "exchange.registry")
        with transaction(conn) as cur:
            cur.execute(  # every other number missing: as many ranges as gaps, the worst case
                "INSERT INTO sequence_gap_ranges (producer, first_sequence, last_sequence) "
                "SELECT 'BW', g, g FROM generate_series(2, %s, 2) g",
                (2 * gaps,),
            )
            cur.execute("INSERT INTO producer_progress VALUES ('BW', %s)", (2 * gaps + 2,))
            cur.execute("ANALYZE sequence_gap_ranges")
        batch = [("BW", 2 * gaps + 3 + i) for i in range(100)]
        best, loaded = float("inf"), 0
        for _ in range(5):
            started = time.perf_counter()
            with transaction(conn) as cur:
                keys = [str(uuid.uuid4()) for _ in batch]
                view = store.load_view(cur, keys, ["BW"], [], batch, limits.gaps_filled(cur, batch))
            best = min(best, time.perf_counter() - started)
            loaded = sum(len(v) for v in view.open_gaps.values())
        conn.close()
        return {"seconds": best, "gaps_loaded": loaded}
    finally:
        drop_database(SERVER, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaps", type=int, default=1_000_000)
    figures = run(parser.parse_args().gaps)
    print(f"load_view of a 100-event batch: {figures['seconds'] * 1000:.1f} ms, "
          f"{figures['gaps_loaded']:,} open gaps loaded")  # fmt: skip


if __name__ == "__main__":
    main()
