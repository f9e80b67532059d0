"""Appending to the registry's log stays flat as it grows: 10k → 100k (→ 1M with ``--million``).

``python -m benchmarks.tlog_bench [--million] [--batches N] [--batch-size B]``

For each size S the log is first filled to S leaves at once (hashes computed with the
right edge, rows loaded by COPY: seeding is not what is measured), then ``N`` batches of ``B``
leaves are appended the way the registry appends them, in rounds that alternate between
the sizes (the load of a shared machine falls on every size alike):
:meth:`LogWriter.append` in its own transaction: lock the head, read the right edge,
insert leaves and stored hashes, sign and insert a checkpoint, compute the consistency
proof for the witnesses. Printed per size: the
median and p90 of a batch and the rate in leaves/s, for the database and for the pure
in-memory append (:class:`exchange.tlog.tree.RightEdge`). Flat means the 1M figure is within
noise of the 10k one: each append touches log2(S) rows, never the whole tree.

Measured on the shared 2-core machine (2026-12-01, ``--million``, 60 batches of 250 per size,
alternating rounds, eight engineers' tests running beside it): median batch 21.0 ms at
10,000 leaves, 21.2 ms at 100,000 and 20.9 ms at 1,000,000 (≈ 11,900 leaves/s each; ratio
1M / 10k = 1.01); p90 39–55 ms, the machine's noise. The batch time is the transaction's
SQL (leaf and hash inserts, the checkpoint row), not the hashing: the pure append costs
2–9 µs a leaf depending on the load.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass

from benchmarks import scratch_database
from exchange.adapters import postgres
from exchange.registry import log as registry_log
from exchange.tlog import note, tree

WARM_UP = 10
ROUND = 5  # batches per size per round


@dataclass(frozen=True)
class _Leaf:
    event_id: str
    raw: bytes


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


def _batch(writer: registry_log.LogWriter, conn: postgres.Connection, size: int) -> float:
    # an envelope is a few hundred bytes
    leaves = [_Leaf(str(uuid.uuid4()), os.urandom(400)) for _ in range(size)]
    start = time.perf_counter()
    with postgres.transaction(conn) as cur:
        writer.append(cur, leaves)
    return time.perf_counter() - start


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


def run(sizes: list[int], batches: int = 40, batch_size: int = 250) -> list[Figure]:
    """Measure every size in alternating rounds (the machine's noise falls on all alike)."""
    writer = registry_log.LogWriter(note.generate_signer("kpx/XB"), "kpx/XB")
    with ExitStack() as stack:
        conns = []
        for size in sizes:
            dsn = stack.enter_context(scratch_database())
            conn = postgres.connect(dsn)
            stack.callback(conn.close)
            postgres.migrate(conn, "exchange.registry")
            _seed(dsn, size)
            for _ in range(WARM_UP):  # warm the connection, caches and plans
                _batch(writer, conn, batch_size)
            conns.append(conn)
        times: list[list[float]] = [[] for _ in sizes]
        for _ in range(batches // ROUND):
            for i, conn in enumerate(conns):
                times[i] += [_batch(writer, conn, batch_size) for _ in range(ROUND)]
    figures = [_figure(size, t, batch_size) for size, t in zip(sizes, times, strict=True)]
    for fig in figures:
        print(
            f"log of {fig.size:>9,} leaves: batch of {batch_size} median "
            f"{fig.batch_median_ms:6.2f} ms p90 {fig.batch_p90_ms:6.2f} ms = "
            f"{fig.leaves_per_s:8,.0f} leaves/s; pure append {fig.memory_us_per_leaf:5.2f} us/leaf",
            flush=True,
        )
    first, last = figures[0], figures[-1]
    print(f"ratio {last.size:,} / {first.size:,}: {last.leaves_per_s / first.leaves_per_s:.2f}")
    return figures


def _figure(size: int, times: list[float], batch_size: int) -> Figure:
    times = sorted(times)
    median = statistics.median(times)
    p90 = times[max(int(len(times) * 0.9) - 1, 0)]
    memory = _measure_memory(min(size, 100_000))
    return Figure(size, median * 1e3, p90 * 1e3, batch_size / median, memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", action="store_true", help="Also 1,000,000 leaves.")
    parser.add_argument("--batches", type=int, default=60, help="Per size.")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--sizes", type=int, nargs="*", help="Log sizes instead of the default.")
    args = parser.parse_args()
    sizes = args.sizes or [10_000, 100_000] + ([1_000_000] if args.million else [])
    run(sizes, args.batches, args.batch_size)


if __name__ == "__main__":
    main()
