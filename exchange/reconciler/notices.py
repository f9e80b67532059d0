"""The ``DiscrepancyRaised`` notices of ``kpx reconcile --as-of`` runs, sealed after the run.

A run (exchange.reconciler.deadline_checks) marks every discrepancy it raised in
``recon.unsealed_notices`` (:func:`mark_run`) in the transaction that stores them, and seals
nothing there: Avro-encoding and Ed25519-signing tens of thousands of notices inside it kept
the run's transaction open for most of its time. :func:`seal_pending` then seals the marked
notices into the reconciler's outbox, ``chunk`` discrepancies at a time, each chunk ONE
transaction that deletes its markers and appends their outbox rows. So a crash anywhere
leaves each notice either still marked or sealed — never both, never neither — and memory
holds one chunk, whatever the run raised.

Who seals: ``kpx reconcile`` right after its commit, and the running reconciler service now
and then (service.seal_leftovers), so what a crashed command left is sealed by whichever runs
next. ``FOR UPDATE SKIP LOCKED`` lets both work at once: a marker taken by one is skipped by
the other, and deleted when the first commits.

Errors: DatabaseUnavailable (transient: what was not sealed stays marked for the next run);
SchemaViolation (a bug: the chunk rolls back, its markers stay).
"""

from __future__ import annotations

from exchange.adapters.postgres import Connection, Cursor, transaction
from exchange.reconciler.store import Context, notices_of

CHUNK = 500  # discrepancies a transaction: ~1,000 notices; 2,000 took 34 MiB more RSS

_MARK = (
    "INSERT INTO recon.unsealed_notices (discrepancy_id)"
    " SELECT id FROM recon.discrepancies WHERE run_id = %s"
)

# The markers are deleted in the statement that reads their discrepancies: the chunk's
# outbox rows and the deletion commit together. ``= ANY(ARRAY(...))`` makes both lookups
# index scans of the chunk's ids; a join let the planner hash the whole table for every
# chunk, which made sealing a million certificates' notices quadratic (37 ms a chunk at
# 15,000 discrepancies against 1.5 ms).
_TAKE = """
WITH taken AS (
    DELETE FROM recon.unsealed_notices
    WHERE discrepancy_id = ANY(ARRAY(
        SELECT discrepancy_id FROM recon.unsealed_notices
        ORDER BY discrepancy_id LIMIT %s FOR UPDATE SKIP LOCKED))
    RETURNING discrepancy_id
)
SELECT d.id, d.kind, d.certificate_id, d.participants, d.period, d.detail, d.raised_on
FROM recon.discrepancies d WHERE d.id = ANY(ARRAY(SELECT discrepancy_id FROM taken))
ORDER BY d.id
"""


def mark_run(cur: Cursor, run_id: int) -> None:
    """Mark every discrepancy run ``run_id`` stored, in the caller's (the run's) transaction."""
    cur.execute(_MARK, (run_id,))


def seal_chunk(conn: Connection, ctx: Context, chunk: int = CHUNK) -> int:
    """Seal the notices of up to ``chunk`` marked discrepancies in one transaction; return
    how many discrepancies it took (0: none left that another sealer does not hold)."""
    with transaction(conn) as cur:
        cur.execute(_TAKE, (chunk,))
        rows = cur.fetchall()
        ctx.writer.append_many(cur, [p for r in rows for p in notices_of(ctx.node_codes, *r)])
    return len(rows)


def seal_pending(conn: Connection, ctx: Context, chunk: int = CHUNK) -> int:
    """Seal every marked notice, a chunk a transaction; return how many discrepancies."""
    total = 0
    while taken := seal_chunk(conn, ctx, chunk):
        total += taken
    return total


def unsealed(conn: Connection) -> int:
    """How many discrepancies still wait for their notices."""
    with transaction(conn) as cur:
        cur.execute("SELECT count(*) FROM recon.unsealed_notices")
        row = cur.fetchone()
    assert row is not None
    return int(row[0])
