"""Appending to the registry's log stays flat as it grows: 10k → 100k (→ 1M with ``--million``).

``python -m benchmarks.tlog_bench [--million] [--batches N] [--batch-size B]``

For each size S the log is first filled to S leaves at once (hashes computed with the
right edge, rows loaded by COPY: seeding is not what is measured), then ``N`` batches of ``B``
leaves are appended the way the registry appends them — :meth:`LogWriter.append` in its own
transaction: lock the head, read the right edge, insert leaves and stored hashes, sign and
insert a checkpoint, compute the consistency proof for the witnesses. Printed per size: the
median and p90 of a batch and the rate in leaves/s, for the database and for the pure
in-memory append (:class:`exchange.tlog.tree.RightEdge`). Flat means the 1M figure is within
noise of the 10k one: each append touches log2(S) rows, never the whole tree.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
import uuid
from dataclasses import dataclass

from benchmarks import scratch_database
from exchange.adapters import postgres
from exchange.registry import log as registry_log
from exchange.tlog import note, tree

WARM_UP = 10


@dataclass(frozen=True)
class Figure:
    """Append cost at one log size."""

    size: int
    batch_median_ms: float
    batch_p90_ms: float
    leaves_per_s: float
    memory_us_per_leaf: float


def _seed(dsn: str, size: int) -> None:
    """Fill a fresh log to ``size`` leaves in one COPY per table."""
    edge = tree.RightEdge(0, [])
    leaves, hashes = io.StringIO(), io.StringIO()
    for i in range(size):
        leaf = tree.leaf_hash(i.to_bytes(8, "big"))
        leaves.write(f"{i}\t{uuid.UUID(int=i + 1)}\t\\\\x{leaf.hex()}\n")
        for index, h in edge.append(leaf):
            hashes.write(f"{index}\t\\\\x{h.hex()}\n")
    conn = postgres.connect(dsn)
    try:
        with postgres.transaction(conn) as cur:
            leaves.seek(0)
            hashes.seek(0)
            cur.copy_expert("COPY log_leaves (leaf_index, event_id, leaf_hash) FROM STDIN", leaves)
            cur.copy_expert("COPY log_hashes (hash_index, hash) FROM STDIN", hashes)
            cur.execute("UPDATE log_head SET tree_size = %s", (size,))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE log_leaves, log_hashes")
    finally:
        conn.close()


def _measure_db(dsn: str, size: int, batches: int, batch_size: int) -> list[float]:
    writer = registry_log.LogWriter(note.generate_signer("kpx/XB"), "kpx/XB")
    conn = postgres.connect(dsn)
    times: list[float] = []
    try:
        for b in range(WARM_UP + batches):
            leaves = [
                (str(uuid.uuid4()), os.urandom(400)) for _ in range(batch_size)
            ]  # an envelope is a few hundred bytes
            start = time.perf_counter()
            with postgres.transaction(conn) as cur:
                writer.append(cur, leaves)
            if b >= WARM_UP:  # the first batches warm the connection, caches and plans
                times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return times


def _measure_memory(size: int, count: int = 20_000) -> float:
    """Microseconds per pure append at ``size`` (edge rebuilt from a tree of that size)."""
    edge = tree.RightEdge(0, [])
    h = tree.leaf_hash(b"x")
    for _ in range(size):
        edge.append(h)
    start = time.perf_counter()
    for _ in range(count):
        edge.append(h)
    return (time.perf_counter() - start) / count * 1e6


def measure(size: int, batches: int, batch_size: int) -> Figure:
    """One size, on a throw-away database."""
    with scratch_database() as dsn:
        conn = postgres.connect(dsn)
        try:
            postgres.migrate(conn, "exchange.registry")
        finally:
            conn.close()
        _seed(dsn, size)
        times = sorted(_measure_db(dsn, size, batches, batch_size))
    median = statistics.median(times)
    p90 = times[int(len(times) * 0.9) - 1]
    return Figure(
        size, median * 1e3, p90 * 1e3, batch_size / median, _measure_memory(min(size, 100_000))
    )


def run(sizes: list[int], batches: int = 40, batch_size: int = 250) -> list[Figure]:
    """Measure every size; prints one line each."""
    figures = []
    for size in sizes:
        fig = measure(size, batches, batch_size)
        figures.append(fig)
        print(
            f"log of {size:>9,} leaves: batch of {batch_size} median {fig.batch_median_ms:6.2f} ms"
            f" p90 {fig.batch_p90_ms:6.2f} ms = {fig.leaves_per_s:8,.0f} leaves/s;"
            f" pure append {fig.memory_us_per_leaf:5.2f} us/leaf",
            flush=True,
        )
    first, last = figures[0], figures[-1]
    print(f"ratio {last.size:,} / {first.size:,}: {last.leaves_per_s / first.leaves_per_s:.2f}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", action="store_true", help="Also 1,000,000 leaves.")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args()
    sizes = [10_000, 100_000] + ([1_000_000] if args.million else [])
    run(sizes, args.batches, args.batch_size)


if __name__ == "__main__":
    main()
