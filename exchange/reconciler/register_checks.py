"""The register and external-trade checks of ``kpx reconcile --as-of`` (DESIGN §8, §14).

Each check is one query over the registry's tables (the reconciler lives in the registry's
database). The two per-certificate ones (:data:`STATEMENTS`: UNLICENSED_EXPORTER and
UNREGISTERED_PRODUCER of a parcel) are ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` that
``deadline_checks.record`` runs with its own, so no certificate row reaches Python; the others
return few rows (declarations, producers x half-years, external trade lines) that the pure
rules turn into findings in :func:`findings`, inside the same transaction. How each SQL
predicate mirrors the pure rules (a property test runs both on the same random registers):

- "valid on day d" (``Register.valid_on`` / ``licensed_exporter``): a version v with
  ``valid_from <= d``, ``valid_until`` NULL or ``>= d``, and no revocation of the entry recorded
  after it (``r.seq > v.seq``) with ``effective <= d``. "Valid during [a, b]" (a declaration's
  half-year) is the same with ``greatest(valid_from, a) <= least(valid_until, b, first
  revocation after v - 1 day)`` (:data:`VALID`).
- UNLICENSED_EXPORTER = ``unlicensed_exporter``: a live member certificate issued on or before
  the as-of date whose exporter ``licence_no`` is on no EXPORTER version valid on its date of
  issue. UNREGISTERED_PRODUCER = ``unregistered_parcel`` (a parcel's ``producer_id``, the first
  one per certificate) and ``unregistered_declaration`` (the latest declaration of a member,
  producer and half-year). Both run in every mode: under ``enforce`` they find only what a
  revocation recorded later, effective earlier, made unlicensed. Onboarding scope: the exporter
  check covers the members that registered at least one EXPORTER, the declaration check those
  that registered at least one mine or cooperative (a parcel naming a producer is always
  checked), so a member that keeps no register yet is not flooded with findings.
- PRODUCER_EXPORTS_EXCEED_PRODUCTION = ``supply_balances`` + ``producer_exceeded``: per member,
  producer and half-year, the carats of live parcels naming it against its latest declaration,
  for half-years closed as of the date.
- NON_PARTICIPANT_TRADE = ``standing_during`` over the participant history, for each pair of
  the latest import of every source where one side is a member or partner.
- EXTERNAL_MIRROR_MISMATCH = ``mirror_differences`` (carats and USD) between the external
  figure and the KP figure for the same exporter, importer and dates: the accepted, live
  certificates where the exporter runs a node, else the importer's confirmations; for
  periods closed as of the date, and not for a pair already raised as NON_PARTICIPANT_TRADE
  (the KP has no figure for trade it does not allow).

Errors: DatabaseUnavailable (transient).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

from exchange.adapters.postgres import Cursor
from exchange.domain.discrepancy import (
    Discrepancy,
    Flow,
    mirror_differences,
    past_deadline,
    period_closed,
)
from exchange.domain.kpstats import Period
from exchange.domain.register import PRODUCER_KINDS
from exchange.domain.supply import (
    SupplyPeriod,
    producer_exceeded,
    producer_finding,
    supply_balances,
)
from exchange.domain.trade import (
    StatusChange,
    kp_code,
    non_participant_sentence,
    standing_during,
)
from exchange.reconciler.store import COLUMNS, Context

_LIVE = "c.state NOT IN ('VOIDED', 'REPLACED')"
_PRODUCERS = "ARRAY[" + ", ".join(f"'{k.value}'" for k in sorted(PRODUCER_KINDS, key=str)) + "]"
# A version v of an entry is valid on some day of [{a}, {b}] (see the module notes).
VALID = """
    greatest(v.valid_from, {a}) <= least(
        COALESCE(v.valid_until, 'infinity'::date), {b},
        COALESCE((SELECT min(r.effective) - 1 FROM register_revocations r
                  WHERE r.member = v.member AND r.entry_id = v.entry_id AND r.seq > v.seq),
                 'infinity'::date))
"""
_HALF_FIRST = (
    "make_date(substr({p}, 1, 4)::int, CASE WHEN right({p}, 1) = '1' THEN 1 ELSE 7 END, 1)"
)
_HALF_LAST = f"(({_HALF_FIRST}) + interval '6 months' - interval '1 day')::date"

_PAIR = (
    "CASE WHEN c.issuing_member = c.destination THEN ARRAY[c.issuing_member]"
    " ELSE ARRAY[c.issuing_member, c.destination] END"
)

# The two per-certificate checks insert their findings in the server, like the deadline
# checks: over a million certificates, no row reaches Python whatever number they find.
UNLICENSED = f"""
INSERT INTO recon.discrepancies ({COLUMNS})
SELECT 'UNLICENSED_EXPORTER:' || c.certificate_id, 'UNLICENSED_EXPORTER', c.certificate_id,
       {_PAIR}, NULL,
       format('%%s (issued by %%s on %%s) names exporter licence %%s, which is no exporter '
              'licence of %%s valid on that date in the region''s register', c.certificate_id,
              c.issuing_member, c.date_of_issue, c.body->'exporter'->>'licence_no',
              c.issuing_member),
       %(as_of)s, %(run)s
FROM certificates c
WHERE c.issuing_member IS NOT NULL AND c.date_of_issue <= %(as_of)s AND {_LIVE}
  AND c.issuing_member IN (SELECT member FROM register_entries WHERE kind = 'EXPORTER')
  AND NOT EXISTS (
    SELECT 1 FROM register_entries v
    WHERE v.member = c.issuing_member AND v.kind = 'EXPORTER'
      AND v.licence_no = c.body->'exporter'->>'licence_no'
      AND {VALID.format(a="c.date_of_issue", b="c.date_of_issue")})
ORDER BY c.certificate_id
ON CONFLICT (dedup_key) DO NOTHING
"""

UNREGISTERED_PARCELS = f"""
INSERT INTO recon.discrepancies ({COLUMNS})
SELECT DISTINCT ON (c.certificate_id)
       'UNREGISTERED_PRODUCER:' || c.certificate_id, 'UNREGISTERED_PRODUCER', c.certificate_id,
       {_PAIR}, NULL,
       format('parcel %%s of %%s (issued by %%s on %%s) names producer %%s, which is no mine '
              'or cooperative of %%s licensed on that date', p.parcel_no, c.certificate_id,
              c.issuing_member, c.date_of_issue, p.producer_id, c.issuing_member),
       %(as_of)s, %(run)s
FROM certificates c JOIN parcels p USING (certificate_id)
WHERE p.producer_id IS NOT NULL AND c.issuing_member IS NOT NULL
  AND c.date_of_issue <= %(as_of)s AND {_LIVE}
  AND NOT EXISTS (
    SELECT 1 FROM register_entries v
    WHERE v.member = c.issuing_member AND v.entry_id = p.producer_id
      AND v.kind = ANY({_PRODUCERS})
      AND {VALID.format(a="c.date_of_issue", b="c.date_of_issue")})
ORDER BY c.certificate_id, p.parcel_no
ON CONFLICT (dedup_key) DO NOTHING
"""

# The latest declaration of each member, producer and half-year: a second one is a revision.
DECLARED = """
SELECT DISTINCT ON (participant, producer_id, period) participant, producer_id, period, carats
FROM production ORDER BY participant, producer_id, period, accepted_at DESC, event_id DESC
"""

UNREGISTERED_DECLARATIONS = f"""
SELECT d.participant, d.producer_id, d.period FROM ({DECLARED}) d
WHERE d.participant IN (SELECT member FROM register_entries WHERE kind = ANY({_PRODUCERS}))
  AND NOT EXISTS (
    SELECT 1 FROM register_entries v
    WHERE v.member = d.participant AND v.entry_id = d.producer_id
      AND v.kind = ANY({_PRODUCERS})
      AND {VALID.format(a=_HALF_FIRST.format(p="d.period"), b=_HALF_LAST.format(p="d.period"))})
ORDER BY 1, 2, 3
"""

_HALF = "to_char({d}, 'YYYY') || '-H' || CASE WHEN extract(month FROM {d}) <= 6 THEN 1 ELSE 2 END"
PRODUCER_SUPPLY = f"""
WITH exported AS (
    SELECT c.issuing_member AS member, p.producer_id, {_HALF.format(d="c.date_of_issue")} AS period,
           sum(p.carats) AS carats
    FROM certificates c JOIN parcels p USING (certificate_id)
    WHERE p.producer_id IS NOT NULL AND c.issuing_member IS NOT NULL
      AND c.date_of_issue <= %(as_of)s AND {_LIVE}
    GROUP BY 1, 2, 3
), declared AS (
    SELECT participant AS member, producer_id, period, carats FROM ({DECLARED}) d
)
SELECT member, producer_id, period, COALESCE(d.carats, 0), COALESCE(e.carats, 0)
FROM exported e FULL JOIN declared d USING (member, producer_id, period)
ORDER BY 1, 2, 3
"""

# The latest import of each source; a 4-digit 7102 total where the file has one for the key,
# else the sum of its sub-headings (a file holding both must not count twice).
EXTERNAL = """
WITH latest AS (
    SELECT DISTINCT ON (source) import_id, source, version FROM trade_imports
    ORDER BY source, version DESC
), marked AS (
    SELECT t.*, l.source, l.version,
           bool_or(t.hs_code = '7102') OVER (
               PARTITION BY t.import_id, t.period, t.reporter, t.partner, t.flow) AS has_total
    FROM trade_rows t JOIN latest l USING (import_id)
)
SELECT source, version, period, first_day, last_day, reporter, partner, flow,
       sum(carats), sum(value_usd), min(line)
FROM marked WHERE hs_code = '7102' OR NOT has_total
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 3, 6, 7, 8
"""

# The KP side of EXTERNAL_MIRROR_MISMATCH, summed per pair and month once per run (every
# external period is whole months), so a long external file costs two queries, not one per row.
KP_EXPORT_MONTHS = f"""
SELECT COALESCE(c.issuing_member, c.issuing_participant), c.destination,
       date_trunc('month', c.date_of_issue)::date, sum(c.total_carats), sum(c.total_value_usd)
FROM certificates c WHERE c.date_of_issue <= %(as_of)s AND {_LIVE}
GROUP BY 1, 2, 3
"""
KP_IMPORT_MONTHS = """
SELECT f.issuing_participant, f.importing_participant, date_trunc('month', f.received_on)::date,
       sum(f.carats), sum(f.value_usd)
FROM import_confirmations f WHERE f.received_on <= %(as_of)s
GROUP BY 1, 2, 3
"""


class _KpMonths:
    """KP figures per (exporter, importer) and month: certificates, and confirmed imports."""

    def __init__(self, cur: Cursor, ctx: Context, as_of: date) -> None:
        self.ctx = ctx
        self.exports = self._load(cur, KP_EXPORT_MONTHS, as_of)
        self.imports = self._load(cur, KP_IMPORT_MONTHS, as_of)

    @staticmethod
    def _load(cur: Cursor, query: str, as_of: date) -> dict[tuple[str, str], list[Any]]:
        cur.execute(query, {"as_of": as_of})
        out: dict[tuple[str, str], list[Any]] = {}
        for exporter, importer, month, carats, usd in cur.fetchall():
            out.setdefault((exporter, importer), []).append((month, carats, usd))
        return out

    def figure(
        self, exporter: str, importer: str, first: date, last: date
    ) -> tuple[Flow, str] | None:
        """The KP figure of a pair over whole months, and what it is; None when the KP has none."""
        ctx = self.ctx
        if exporter in ctx.node_codes:
            pairs = [(exporter, importer)]
            if importer in ctx.members:  # a certificate may name the region as destination
                pairs.append((exporter, ctx.region))
            return self._sum(self.exports, pairs, first, last), "accepted certificates"
        if importer in ctx.node_codes:
            return self._sum(self.imports, [(exporter, importer)], first, last), "confirmed imports"
        return None

    @staticmethod
    def _sum(
        table: dict[tuple[str, str], list[Any]],
        pairs: list[tuple[str, str]],
        first: date,
        last: date,
    ) -> Flow:
        carats, usd = Decimal("0.00"), Decimal("0.00")
        for pair in pairs:
            for month, ct, value in table.get(pair, ()):
                if first <= month <= last:
                    carats, usd = carats + ct, usd + value
        return Flow(carats, usd, 0)


STATEMENTS = (UNLICENSED, UNREGISTERED_PARCELS)


def findings(cur: Cursor, ctx: Context, as_of: date) -> list[Discrepancy]:
    """The register and external-trade findings as of ``as_of`` that the rules decide in
    Python (the per-certificate ones are :data:`STATEMENTS`, run with the deadline checks)."""
    params = {"as_of": as_of}
    return [
        *_unregistered_declarations(cur, params),
        *_producer_supply(cur, params, ctx),
        *_external(cur, ctx, as_of),
    ]


def _unregistered_declarations(cur: Cursor, params: dict[str, Any]) -> Iterator[Discrepancy]:
    cur.execute(UNREGISTERED_DECLARATIONS, params)
    for member, producer, period in cur.fetchall():
        yield Discrepancy(
            "UNREGISTERED_PRODUCER",
            f"{member} declared production of {producer} for {period}, which is no mine or "
            f"cooperative of {member} licensed during that half-year",
            participants=(member,),
            period=period,
            subject=producer,
        )


def _producer_supply(cur: Cursor, params: dict[str, Any], ctx: Context) -> Iterator[Discrepancy]:
    cur.execute(PRODUCER_SUPPLY, params)
    by_producer: dict[tuple[str, str], list[SupplyPeriod]] = {}
    for member, producer, period, produced, exported in cur.fetchall():
        if Period.parse(period).first <= params["as_of"]:
            key = (member, producer)
            by_producer.setdefault(key, []).append(SupplyPeriod(period, produced, exported))
    limits = ctx.limits
    for (member, producer), periods in sorted(by_producer.items()):
        for b in supply_balances(periods, limits.carry_over):
            closed = period_closed(Period.parse(b.period), limits.grace_days, params["as_of"])
            if closed and producer_exceeded(b, limits.carats_pct):
                yield producer_finding(member, producer, b, limits.carats_pct)


# ---------------------------------------------------------------- external trade


def _history(cur: Cursor) -> dict[str, list[StatusChange]]:
    cur.execute("SELECT code, status, effective_on FROM participant_history ORDER BY id")
    history: dict[str, list[StatusChange]] = {}
    for code, status, effective in cur.fetchall():
        history.setdefault(code, []).append(StatusChange(effective, status))
    cur.execute("SELECT code, status, effective_on FROM participants")
    for code, status, effective in cur.fetchall():
        history.setdefault(code, [StatusChange(effective, status)])
    return history


def _external(cur: Cursor, ctx: Context, as_of: date) -> Iterator[Discrepancy]:
    history = _history(cur)
    nodes = set(ctx.node_codes) | {ctx.region}
    cur.execute(EXTERNAL)
    external = cur.fetchall()
    kp = _KpMonths(cur, ctx, as_of) if external else None
    for row in external:
        source, version, period, first, last, reporter, partner, flow, ct, usd, line = row
        if first > as_of:
            continue
        reporter, partner = kp_code(reporter, history), kp_code(partner, history)
        if reporter == partner or not ({reporter, partner} & nodes):
            continue
        where = f"{source} v{version} line {line}"
        traded = (
            f"{reporter} reports {'exports to' if flow == 'X' else 'imports from'} {partner} "
            f"in {period}: {ct} ct, {usd} USD ({where})"
        )
        other = partner if reporter in nodes else reporter
        bad = None if other in nodes else standing_during(history.get(other, []), first, last)
        if bad is not None:
            yield Discrepancy(
                "NON_PARTICIPANT_TRADE",
                f"{traded}; {non_participant_sentence(other, bad)}",
                participants=(reporter, partner),
                period=period,
                subject=f"{source}:{flow}",
            )
        # Trade with a non-participant has no KP figure to mirror: one finding says it.
        elif kp is not None and past_deadline(last, ctx.limits.grace_days, as_of):
            finding = _mirror(kp, ctx, row, reporter, partner, traded)
            if finding is not None:
                yield finding


def _mirror(
    kp_months: _KpMonths, ctx: Context, row: tuple[Any, ...], reporter: str, partner: str,
    traded: str,
) -> Discrepancy | None:  # fmt: skip
    source, _, period, first, last, _, _, flow, ct, usd, _ = row
    exporter, importer = (reporter, partner) if flow == "X" else (partner, reporter)
    found = kp_months.figure(exporter, importer, first, last)
    if found is None:
        return None
    kp, what = found
    pct = ctx.limits.mirror_pct
    differing = mirror_differences(Flow(Decimal(ct), Decimal(usd), 0), kp, pct)
    if not differing:
        return None
    return Discrepancy(
        "EXTERNAL_MIRROR_MISMATCH",
        f"{traded}; the KP figure ({what} {exporter} -> {importer}, {first} to {last}) is "
        f"{kp.carats} ct, {kp.value_usd} USD: {', '.join(differing)} differ by more than "
        f"{pct}% of the larger figure",
        participants=(reporter, partner),
        period=period,
        subject=f"{source}:{flow}",
    )
