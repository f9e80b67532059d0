"""``kpx reconcile --as-of DATE``: the deadline and period checks, as set-based SQL.

Each check is one ``INSERT ... SELECT ... ON CONFLICT (dedup_key) DO NOTHING`` (per-certificate
kinds, over every certificate: no row reaches Python) or one aggregate query whose few rows
(members x half-years, pairs x quarters, gap ranges) the pure rules decide. The as-of date is a
parameter, never ``now()``. The checks are one transaction: its findings commit together
with a marker per new finding (``recon.unsealed_notices``), and the ``DiscrepancyRaised``
notices are sealed into the outbox after the commit, a bounded chunk a transaction that
clears its markers (exchange.reconciler.notices): nothing is signed while the run's
transaction is open, and no notice is lost or sealed twice.

How each SQL predicate mirrors exchange.domain.discrepancy (the same edges are integration-tested):

- UNCONFIRMED_EXPIRED = ``unconfirmed_expired``: ``as_of > date_of_expiry + grace``
  (``past_deadline``); ``voided`` = a ``recon.voids`` row; ``confirmed`` = a confirmation
  received on or before ``as_of`` whose importer is the destination (``destination_matches``:
  the destination itself, or any member when the destination is the region). A third party's
  confirmation is WRONG_DESTINATION and never silences this alarm (DESIGN §15).
- UNKNOWN_CERTIFICATE = ``unknown_certificate``: a confirmation (received on or before
  ``as_of``) of a number of the regional format; ``accepted`` = a ``recon.certificates`` row;
  ``rejected`` = a REJECTED CertificateIssued of that number in the registry's ``event_log``;
  else ``as_of > received_on + grace``.
- VALUATION_OUTLIER = ``spread`` / ``robust_z`` / ``is_outlier`` (domain/valuation.py):
  x = ln(value_usd::float8 / carats::float8) per parcel of known origin (certificates issued
  on or before ``as_of``);
  per (origin, HS code) the median is ``percentile_cont(0.5)`` (what ``statistics.median``
  computes), MAD the same over |x - median|; fires when n >= min sample, MAD > 0 and
  |0.6745 (x - median) / MAD| > k. One finding per certificate: its most extreme parcel.
- SEQUENCE_GAP = ``gap_overdue``: ``detected_at < (as_of + 1 day at 00:00 UTC) - timeout``,
  per open range of ``sequence_gap_ranges`` (consecutive missing numbers): one finding.
- EXPORTS_EXCEED_SUPPLY and MIRROR_MISMATCH: SQL sums, ``supply_balances`` (domain/supply.py)
  / ``mirror_finding`` decide, for periods closed as of the date (``period_closed``).

Errors: DatabaseUnavailable (transient: re-run; a re-run raises nothing twice).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from exchange.adapters.postgres import Connection, Cursor, transaction
from exchange.domain.discrepancy import (
    Discrepancy,
    Flow,
    gap_finding,
    mirror_finding,
    period_closed,
)
from exchange.domain.kpstats import Period
from exchange.domain.supply import SupplyPeriod, supply_balances, supply_finding
from exchange.errors import ConfigError
from exchange.reconciler import notices, register_checks
from exchange.reconciler.store import COLUMNS, Context, insert_for_run

log = logging.getLogger(__name__)

UNCONFIRMED_EXPIRED = f"""
INSERT INTO recon.discrepancies ({COLUMNS})
SELECT 'UNCONFIRMED_EXPIRED:' || c.certificate_id, 'UNCONFIRMED_EXPIRED', c.certificate_id,
       CASE WHEN c.exporter = c.destination THEN ARRAY[c.exporter]
            ELSE ARRAY[c.exporter, c.destination] END, NULL,
       format('%%s (issued by %%s on %%s for %%s: %%s ct, %%s USD) expired on %%s and no import '
              'confirmation was received by %%s (expiry + %%s grace days), as of %%s',
              c.certificate_id, c.exporter, c.date_of_issue, c.destination, c.total_carats,
              c.total_value_usd, c.date_of_expiry, c.date_of_expiry + %(grace)s, %(grace)s,
              %(as_of)s),
       %(as_of)s, %(run)s
FROM recon.certificates c
WHERE %(as_of)s::date > c.date_of_expiry + %(grace)s
  AND NOT EXISTS (SELECT 1 FROM recon.voids v WHERE v.certificate_id = c.certificate_id)
  AND NOT EXISTS (SELECT 1 FROM recon.confirmations f
                  WHERE f.certificate_id = c.certificate_id AND f.received_on <= %(as_of)s
                    AND (f.importing_participant = c.destination
                         OR (c.destination = %(region)s
                             AND f.importing_participant = ANY(%(members)s))))
ON CONFLICT (dedup_key) DO NOTHING
"""

UNKNOWN_CERTIFICATE = f"""
INSERT INTO recon.discrepancies ({COLUMNS})
SELECT DISTINCT ON (f.certificate_id)
       'UNKNOWN_CERTIFICATE:' || f.certificate_id, 'UNKNOWN_CERTIFICATE', f.certificate_id,
       CASE WHEN substr(f.certificate_id, 4, 2) = f.importing_participant
            THEN ARRAY[f.importing_participant]
            ELSE ARRAY[substr(f.certificate_id, 4, 2), f.importing_participant] END, NULL,
       CASE WHEN r.reason IS NOT NULL THEN
         format('%%s confirmed the import of %%s on %%s, a number the registry rejected (%%s: %%s)',
                f.importing_participant, f.certificate_id, f.received_on, r.reason, r.detail)
       ELSE
         format('%%s confirmed the import of %%s on %%s, but the registry never received that '
                'certificate within %%s grace days (by %%s), as of %%s', f.importing_participant,
                f.certificate_id, f.received_on, %(grace)s, f.received_on + %(grace)s, %(as_of)s)
       END,
       %(as_of)s, %(run)s
FROM recon.confirmations f
LEFT JOIN LATERAL (
    SELECT e.reason, e.detail FROM event_log e
    WHERE e.certificate_id = f.certificate_id AND e.event_type = 'CertificateIssued'
      AND e.decision = 'REJECTED'
    ORDER BY e.received_at LIMIT 1) r ON true
WHERE f.certificate_id ~ %(regional)s AND f.received_on <= %(as_of)s
  AND NOT EXISTS (SELECT 1 FROM recon.certificates c WHERE c.certificate_id = f.certificate_id)
  AND (r.reason IS NOT NULL OR %(as_of)s::date > f.received_on + %(grace)s)
ORDER BY f.certificate_id, f.seq
ON CONFLICT (dedup_key) DO NOTHING
"""

# priced holds only what the medians need (a narrow row sorts fast); the few outliers' carats
# and value are read back by primary key. med and spread are materialised, so the planner
# joins their few rows (origins x HS codes) by hash instead of sorting a million parcels.
VALUATION_OUTLIER = f"""
WITH priced AS MATERIALIZED (
    SELECT p.certificate_id, p.parcel_no, p.origin, p.hs_code,
           ln(p.value_usd::float8 / p.carats::float8) AS x
    FROM recon.parcels p JOIN recon.certificates c USING (certificate_id)
    WHERE p.origin IS NOT NULL AND p.carats > 0 AND p.value_usd > 0
      AND c.date_of_issue <= %(as_of)s
), med AS MATERIALIZED (
    SELECT origin, hs_code, count(*) AS n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY x) AS median
    FROM priced GROUP BY origin, hs_code HAVING count(*) >= %(min_sample)s
), spread AS MATERIALIZED (
    SELECT m.origin, m.hs_code, max(m.n) AS n, max(m.median) AS median,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(p.x - m.median)) AS mad
    FROM priced p JOIN med m USING (origin, hs_code)
    GROUP BY m.origin, m.hs_code
), scored AS (
    SELECT p.*, s.n, s.median, s.mad, 0.6745 * (p.x - s.median) / s.mad AS z
    FROM priced p JOIN spread s USING (origin, hs_code)
    WHERE s.mad > 0 AND abs(0.6745 * (p.x - s.median) / s.mad) > %(k)s
)
INSERT INTO recon.discrepancies ({COLUMNS})
SELECT DISTINCT ON (z.certificate_id)
       'VALUATION_OUTLIER:' || z.certificate_id, 'VALUATION_OUTLIER', z.certificate_id,
       CASE WHEN c.exporter = c.destination THEN ARRAY[c.exporter]
            ELSE ARRAY[c.exporter, c.destination] END, NULL,
       format('parcel %%s of %%s (origin %%s, HS %%s): %%s ct for %%s USD = %%s USD/ct, '
              'ln = %%s; for origin %%s and HS %%s the registry''s %%s parcels have median '
              'ln(USD/ct) %%s (%%s USD/ct) and MAD %%s, so the robust z = 0.6745 (x - median) '
              '/ MAD = %%s, beyond the threshold of %%s',
              z.parcel_no, z.certificate_id, z.origin, z.hs_code, pa.carats, pa.value_usd,
              round(pa.value_usd / pa.carats, 2), round(z.x::numeric, 4), z.origin, z.hs_code,
              z.n, round(z.median::numeric, 4), round(exp(z.median)::numeric, 2),
              round(z.mad::numeric, 4), round(z.z::numeric, 2), %(k)s),
       %(as_of)s, %(run)s
FROM scored z JOIN recon.certificates c USING (certificate_id)
JOIN recon.parcels pa ON pa.certificate_id = z.certificate_id AND pa.parcel_no = z.parcel_no
ORDER BY z.certificate_id, abs(z.z) DESC, z.parcel_no
ON CONFLICT (dedup_key) DO NOTHING
"""

OPEN_GAPS = """
SELECT producer, first_sequence, last_sequence, detected_at
FROM sequence_gap_ranges
WHERE detected_at < ((%(as_of)s::date + 1)::timestamp AT TIME ZONE 'UTC')
                    - make_interval(hours => %(timeout)s)
ORDER BY producer, first_sequence
"""

_HALF = "to_char({d}, 'YYYY') || '-H' || CASE WHEN extract(month FROM {d}) <= 6 THEN 1 ELSE 2 END"
_QUARTER = "to_char({d}, 'YYYY') || '-Q' || extract(quarter FROM {d})::int"
_LIVE = "NOT EXISTS (SELECT 1 FROM recon.voids v WHERE v.certificate_id = c.certificate_id)"

SUPPLY = f"""
WITH exported AS (
    SELECT c.exporter AS member, {_HALF.format(d="c.date_of_issue")} AS period,
           sum(p.carats) AS carats
    FROM recon.certificates c JOIN recon.parcels p USING (certificate_id)
    WHERE c.exporter = ANY(%(members)s) AND p.origin = c.exporter
      AND c.date_of_issue <= %(as_of)s AND {_LIVE}
    GROUP BY 1, 2
), produced AS (
    SELECT participant AS member, period, sum(carats) AS carats FROM recon.production
    WHERE participant = ANY(%(members)s) GROUP BY 1, 2
)
SELECT member, period, COALESCE(pr.carats, 0), COALESCE(ex.carats, 0)
FROM exported ex FULL JOIN produced pr USING (member, period) ORDER BY member, period
"""

MIRROR = f"""
WITH exported AS (
    SELECT c.exporter, c.destination AS importer, {_QUARTER.format(d="c.date_of_issue")} AS period,
           sum(c.total_carats) AS carats, sum(c.total_value_usd) AS usd, count(*) AS n
    FROM recon.certificates c
    WHERE c.destination = ANY(%(nodes)s) AND c.date_of_issue <= %(as_of)s AND {_LIVE}
    GROUP BY 1, 2, 3
), imported AS (
    SELECT COALESCE(c.exporter, CASE WHEN f.certificate_id ~ %(regional)s
                    THEN substr(f.certificate_id, 4, 2) ELSE f.issuing_participant END) AS exporter,
           f.importing_participant AS importer, {_QUARTER.format(d="f.received_on")} AS period,
           sum(f.carats) AS carats, sum(f.value_usd) AS usd, count(*) AS n
    FROM recon.confirmations f LEFT JOIN recon.certificates c USING (certificate_id)
    WHERE f.received_on <= %(as_of)s GROUP BY 1, 2, 3
)
SELECT exporter, importer, period, COALESCE(e.carats, 0), COALESCE(e.usd, 0), COALESCE(e.n, 0),
       COALESCE(i.carats, 0), COALESCE(i.usd, 0), COALESCE(i.n, 0)
FROM exported e FULL JOIN imported i USING (exporter, importer, period)
WHERE exporter <> importer ORDER BY 1, 2, 3
"""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What one reconcile run raised, per kind."""

    run_id: int
    as_of: date
    raised: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.raised.values())


def regional_pattern(region: str) -> str:
    """The POSIX regex of a regional certificate number of ``region``."""
    return f"^{region}-[A-Z]{{2}}-[0-9]{{4}}-[0-9]{{7}}-[0-9]{{2}}$"


def reconcile(conn: Connection, ctx: Context, as_of: date) -> RunSummary:
    """Run every as-of check (:func:`record`), then seal the run's notices (and any a crashed
    run left) into the outbox, a chunk a transaction; return what was raised the first time."""
    summary = record(conn, ctx, as_of)
    notices.seal_pending(conn, ctx)
    return summary


def record(conn: Connection, ctx: Context, as_of: date) -> RunSummary:
    """Run every as-of check in one transaction that stores the findings and marks their
    notices unsealed (exchange.reconciler.notices); return what was raised the first time."""
    limits = ctx.limits
    params: dict[str, Any] = {
        "as_of": as_of,
        "grace": limits.grace_days,
        "region": ctx.region,
        "regional": regional_pattern(ctx.region),
        "k": limits.outlier_k,
        "min_sample": limits.outlier_min_sample,
        "timeout": limits.gap_timeout_hours,
        "members": sorted(ctx.members),
        "nodes": sorted(ctx.node_codes),
    }
    with transaction(conn) as cur:
        # The medians sort every parcel and the anti-joins hash every certificate: in memory
        # they take seconds, spilled to disk minutes (measured in benchmarks/reconcile_bench).
        cur.execute("SET LOCAL work_mem = '256MB'")
        # Compiling these one-off scans took longer than it saved (VALUATION_OUTLIER over a
        # million parcels: 15-25 s with JIT, 9-10 s without, in benchmarks/reconcile_bench).
        cur.execute("SET LOCAL jit = off")
        cur.execute("SELECT nextval('recon.run_ids')")
        row = cur.fetchone()
        assert row is not None
        params["run"] = run_id = int(row[0])
        for statement in (UNCONFIRMED_EXPIRED, UNKNOWN_CERTIFICATE, VALUATION_OUTLIER,
                          *register_checks.STATEMENTS):  # fmt: skip
            cur.execute(statement, params)
        found = [*_gaps(cur, params, ctx), *_supply(cur, params, ctx), *_mirror(cur, params, ctx)]
        found += register_checks.findings(cur, ctx, as_of)  # registers and trade data (§14)
        insert_for_run(cur, found, as_of, run_id)
        notices.mark_run(cur, run_id)
        cur.execute(
            "SELECT kind, count(*) FROM recon.discrepancies WHERE run_id = %s GROUP BY kind",
            (run_id,),
        )
        raised = {str(kind): int(n) for kind, n in cur.fetchall()}
    return RunSummary(run_id, as_of, raised)


def _gaps(cur: Cursor, params: dict[str, Any], ctx: Context) -> Iterator[Discrepancy]:
    cur.execute(OPEN_GAPS, params)
    for producer, first, last, detected in cur.fetchall():
        yield gap_finding(producer, first, last, detected, ctx.limits.gap_timeout_hours)


def _period(text: str, row: object) -> Period | None:
    """The period of a row, or None (logged) when it cannot be read: one bad row stored
    before the rules bounded periods must not stop every later reconciliation."""
    try:
        return Period.parse(text)
    except (ValueError, ConfigError) as exc:
        log.warning("reconcile: skipped row %r: period %r: %s", row, text, exc)
        return None


def _supply(cur: Cursor, params: dict[str, Any], ctx: Context) -> Iterator[Discrepancy]:
    cur.execute(SUPPLY, params)
    by_member: dict[str, list[SupplyPeriod]] = {}
    for member, period, produced, exported in cur.fetchall():
        parsed = _period(period, (member, period))
        if parsed is not None and parsed.first <= params["as_of"]:
            by_member.setdefault(member, []).append(SupplyPeriod(period, produced, exported))
    for member, periods in sorted(by_member.items()):
        for b in supply_balances(periods, ctx.limits.carry_over):
            closed = period_closed(Period.parse(b.period), ctx.limits.grace_days, params["as_of"])
            if closed and b.exceeded:
                yield supply_finding(member, b)


def _mirror(cur: Cursor, params: dict[str, Any], ctx: Context) -> Iterator[Discrepancy]:
    cur.execute(MIRROR, params)
    for exporter, importer, period, ec, eu, en, ic, iu, in_ in cur.fetchall():
        parsed = _period(period, (exporter, importer, period))
        if parsed is None or not period_closed(parsed, ctx.limits.grace_days, params["as_of"]):
            continue
        exported = Flow(Decimal(ec), Decimal(eu), int(en))
        imported = Flow(Decimal(ic), Decimal(iu), int(in_))
        finding = mirror_finding(
            exporter, importer, period, exported, imported, ctx.limits.mirror_pct
        )
        if finding is not None:
            yield finding
