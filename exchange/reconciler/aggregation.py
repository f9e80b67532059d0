"""KP statistics figures: set-based SQL aggregates over the projection, and their versions.

The column meanings are in exchange/domain/kpstats.py. :func:`publish` computes the figures of a
period, compares them with the latest stored version, stores a new version when they differ,
and returns a :class:`~exchange.domain.kpstats.Report` saying which version this is and what
changed since the previous one.

Errors: DatabaseUnavailable (transient).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from exchange.adapters.postgres import Connection, Cursor, transaction
from exchange.domain.kpstats import Period, Report, Row, canonical, changes, row
from exchange.reconciler.deadline_checks import regional_pattern

_LIVE = "NOT EXISTS (SELECT 1 FROM recon.voids v WHERE v.certificate_id = c.certificate_id)"
_EXPORTS = f"c.date_of_issue BETWEEN %(first)s AND %(last)s AND {_LIVE}"
_IMPORTS = "f.received_on BETWEEN %(first)s AND %(last)s"
# The exporter an importer's confirmation refers to: the certificate's, or read from the number.
_PARTNER = (
    "COALESCE(c.exporter, CASE WHEN f.certificate_id ~ %(regional)s"
    " THEN substr(f.certificate_id, 4, 2) ELSE f.issuing_participant END)"
)

# (flow, by, SQL yielding participant, key, carats, value_usd, certificates)
TRADE: tuple[tuple[str, str, str], ...] = (
    ("export", "total", f"SELECT c.exporter, '', sum(c.total_carats), sum(c.total_value_usd),"
     f" count(*) FROM recon.certificates c WHERE {_EXPORTS} GROUP BY 1, 2"),
    ("export", "partner", f"SELECT c.exporter, c.destination, sum(c.total_carats),"
     f" sum(c.total_value_usd), count(*) FROM recon.certificates c WHERE {_EXPORTS}"
     " GROUP BY 1, 2"),
    ("export", "origin", "SELECT c.exporter, COALESCE(p.origin, '??'), sum(p.carats),"
     " sum(p.value_usd), count(DISTINCT c.certificate_id) FROM recon.certificates c"
     f" JOIN recon.parcels p USING (certificate_id) WHERE {_EXPORTS} GROUP BY 1, 2"),
    ("export", "hs_code", "SELECT c.exporter, p.hs_code, sum(p.carats), sum(p.value_usd),"
     " count(DISTINCT c.certificate_id) FROM recon.certificates c"
     f" JOIN recon.parcels p USING (certificate_id) WHERE {_EXPORTS} GROUP BY 1, 2"),
    ("import", "total", "SELECT f.importing_participant, '', sum(f.carats), sum(f.value_usd),"
     f" count(*) FROM recon.confirmations f WHERE {_IMPORTS} GROUP BY 1, 2"),
    ("import", "partner", f"SELECT f.importing_participant, {_PARTNER}, sum(f.carats),"
     " sum(f.value_usd), count(*) FROM recon.confirmations f"
     f" LEFT JOIN recon.certificates c USING (certificate_id) WHERE {_IMPORTS} GROUP BY 1, 2"),
    ("import", "origin", "SELECT f.importing_participant, COALESCE(p.origin, '??'),"
     " sum(p.carats), sum(p.value_usd), count(DISTINCT f.event_id) FROM recon.confirmations f"
     f" JOIN recon.parcels p USING (certificate_id) WHERE {_IMPORTS} GROUP BY 1, 2"),
    ("import", "hs_code", "SELECT f.importing_participant, p.hs_code, sum(p.carats),"
     " sum(p.value_usd), count(DISTINCT f.event_id) FROM recon.confirmations f"
     f" JOIN recon.parcels p USING (certificate_id) WHERE {_IMPORTS} GROUP BY 1, 2"),
)  # fmt: skip

PRODUCTION = (
    "SELECT participant, period, sum(carats), sum(value_usd), count(*) FROM recon.production"
    " WHERE period = ANY(%(halves)s) GROUP BY 1, 2 ORDER BY 1, 2"
)

# §14: production per producer kind (the latest registration of the declared producer), and
# the register's counts per member as of the period's last day.
PRODUCTION_BY_KIND = """
SELECT p.participant, p.period, COALESCE(k.kind, 'unregistered'), sum(p.carats),
       sum(p.value_usd), count(*)
FROM recon.production p
LEFT JOIN LATERAL (
    SELECT CASE v.kind WHEN 'MINE' THEN 'industrial' WHEN 'ARTISANAL_COOPERATIVE' THEN 'artisanal'
                ELSE 'unregistered' END AS kind
    FROM register_entries v WHERE v.member = p.participant AND v.entry_id = p.producer_id
    ORDER BY v.seq DESC LIMIT 1) k ON true
WHERE p.period = ANY(%(halves)s) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""

REGISTER_COUNTS = """
WITH valid AS (
    SELECT DISTINCT ON (v.member, v.entry_id) v.member, v.kind, COALESCE(v.members, 0) AS miners
    FROM register_entries v
    WHERE v.valid_from <= %(last)s AND COALESCE(v.valid_until, 'infinity'::date) >= %(last)s
      AND NOT EXISTS (SELECT 1 FROM register_revocations r WHERE r.member = v.member
                      AND r.entry_id = v.entry_id AND r.seq > v.seq AND r.effective <= %(last)s)
    ORDER BY v.member, v.entry_id, v.seq DESC
)
SELECT member, count(*) FILTER (WHERE kind = 'MINE'),
       count(*) FILTER (WHERE kind = 'ARTISANAL_COOPERATIVE'),
       COALESCE(sum(miners) FILTER (WHERE kind = 'ARTISANAL_COOPERATIVE'), 0),
       count(*) FILTER (WHERE kind = 'DEALER'), count(*) FILTER (WHERE kind = 'EXPORTER')
FROM valid GROUP BY 1 ORDER BY 1
"""
REGISTER_MEASURES = (
    "licensed_mines", "licensed_cooperatives", "registered_miners", "licensed_dealers",
    "licensed_exporters",
)  # fmt: skip

MIRROR = f"""
WITH exported AS (
    SELECT c.exporter, c.destination AS importer, sum(c.total_carats) AS carats,
           sum(c.total_value_usd) AS usd, count(*) AS n
    FROM recon.certificates c WHERE {_EXPORTS} AND c.destination = ANY(%(nodes)s) GROUP BY 1, 2
), imported AS (
    SELECT {_PARTNER} AS exporter, f.importing_participant AS importer,
           sum(f.carats) AS carats, sum(f.value_usd) AS usd, count(*) AS n
    FROM recon.confirmations f LEFT JOIN recon.certificates c USING (certificate_id)
    WHERE {_IMPORTS} GROUP BY 1, 2
)
SELECT exporter, importer, COALESCE(e.carats, 0), COALESCE(e.usd, 0), COALESCE(e.n, 0),
       COALESCE(i.carats, 0), COALESCE(i.usd, 0), COALESCE(i.n, 0)
FROM exported e FULL JOIN imported i USING (exporter, importer)
WHERE exporter <> importer ORDER BY 1, 2
"""


def compute(cur: Cursor, period: Period, region: str, nodes: list[str]) -> list[Row]:
    """Every statistics row of ``period`` (see exchange.domain.kpstats for the columns)."""
    params = {
        "first": period.first,
        "last": period.last,
        "regional": regional_pattern(region),
        "halves": list(period.half_years()),
        "nodes": nodes,
    }
    return [
        *_trade(cur, period, params),
        *_production(cur, params),
        *_registers(cur, period, params),
    ]


def _trade(cur: Cursor, period: Period, params: dict[str, Any]) -> Iterator[Row]:
    for flow, by, query in TRADE:
        cur.execute(query, params)
        for who, key, carats, usd, n in cur.fetchall():
            yield row(section="trade", participant=who, period=period.name, flow=flow, by=by,
                      key=key, carats=carats, value_usd=usd, certificates=n)  # fmt: skip
    cur.execute(MIRROR, params)
    for exporter, importer, ec, eu, en, ic, iu, in_ in cur.fetchall():
        yield row(section="mirror", participant=exporter, period=period.name, flow="mirror",
                  by="partner", key=importer, carats=ec, value_usd=eu, certificates=en,
                  mirror_carats=ic, mirror_value_usd=iu, mirror_certificates=in_)  # fmt: skip


def _production(cur: Cursor, params: dict[str, Any]) -> Iterator[Row]:
    cur.execute(PRODUCTION, params)
    for who, half, carats, usd, n in cur.fetchall():
        yield row(section="production", participant=who, period=half, flow="production",
                  by="total", key="", carats=carats, value_usd=usd, certificates=n)  # fmt: skip


def _registers(cur: Cursor, period: Period, params: dict[str, Any]) -> Iterator[Row]:
    cur.execute(PRODUCTION_BY_KIND, params)
    for who, half, kind, carats, usd, n in cur.fetchall():
        yield row(section="production", participant=who, period=half, flow="production",
                  by="producer_kind", key=kind, carats=carats, value_usd=usd,
                  certificates=n)  # fmt: skip
    cur.execute(REGISTER_COUNTS, params)
    for who, *counts in cur.fetchall():
        for measure, n in zip(REGISTER_MEASURES, counts, strict=True):
            yield row(section="register", participant=who, period=period.name, flow="register",
                      by=measure, key="", certificates=n)  # fmt: skip


def publish(conn: Connection, period: Period, region: str, nodes: list[str]) -> Report:
    """Compute the figures; store a new version if they changed; report version and changes."""
    with transaction(conn) as cur:
        # One publisher per period at a time, so two runs never take the same version number.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("kpx-stats:" + period.name,))
        rows = canonical(compute(cur, period, region, nodes))
        cur.execute(
            "SELECT version, generated_at, figures FROM recon.statistics_versions"
            " WHERE period = %s ORDER BY version DESC LIMIT 2",
            (period.name,),
        )
        stored = cur.fetchall()
        if stored and stored[0][2] == rows:
            version, generated = stored[0][0], stored[0][1]
            previous = stored[1] if len(stored) > 1 else None
            new = False
        else:
            version = (stored[0][0] + 1) if stored else 1
            cur.execute(
                "INSERT INTO recon.statistics_versions (period, version, figures)"
                " VALUES (%s, %s, %s) RETURNING generated_at",
                (period.name, version, json.dumps(rows)),
            )
            fetched = cur.fetchone()
            assert fetched is not None
            generated, previous, new = fetched[0], (stored[0] if stored else None), True
    before = previous[2] if previous else []
    return Report(
        period=period.name,
        version=version,
        generated_at=generated.isoformat(),
        rows=rows,
        previous_version=previous[0] if previous else None,
        changes=changes(before, rows) if previous else [],
        new_version=new,
    )
