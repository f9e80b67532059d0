"""The reconciler's projection (schema ``recon``) and its discrepancies, in PostgreSQL.

:func:`apply_batch` records one batch of accepted envelopes in the caller's transaction:
tracking rows first (a redelivered event id is skipped), then the projection rows, then the
event-time findings of every certificate the batch touched (exchange.domain.discrepancy), stored
once under their dedup key, each new one announced as ``DiscrepancyRaised`` to every concerned
participant that runs a node, through the reconciler's outbox in the same transaction.

Errors: DatabaseUnavailable (transient) from the caller's transaction; NotFound from
:func:`resolve` for an unknown discrepancy id.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg2.extras

from exchange.adapters.postgres import Cursor
from exchange.domain.certificate import HsCode, from_symbol
from exchange.domain.discrepancy import (
    CertificateFacts,
    ConfirmationFacts,
    Discrepancy,
    Limits,
    certificate_findings,
)
from exchange.errors import NotFound
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.wire import topology
from exchange.wire.envelope import Envelope

NOTICE = "DiscrepancyRaised"


@dataclass(frozen=True, slots=True)
class Context:
    """What recording needs besides the cursor: the rules' limits and the region's codes."""

    limits: Limits
    region: str
    members: frozenset[str]
    node_codes: frozenset[str]
    writer: OutboxWriter


@dataclass(frozen=True, slots=True)
class Raised:
    """A discrepancy stored for the first time."""

    id: int
    kind: str


# ---------------------------------------------------------------- projection


def apply_batch(
    cur: Cursor, ctx: Context, envelopes: Sequence[Envelope], today: date
) -> list[Raised]:
    """Record a batch of accepted envelopes; return the discrepancies raised for the first time.

    Events already recorded (redeliveries, duplicates within the batch) are skipped.
    """
    fresh = _track(cur, envelopes)
    # Issues, most of a batch, in two statements for all of them; the rest one by one, in
    # order (a production revision replaces the one before it). No projection table refers
    # to another, so the issues may go first.
    issued = [e for e in fresh if e.event_type == "CertificateIssued"]
    touched = _certificates(cur, [(e.payload["certificate"], e.event_id) for e in issued])
    for env in fresh:
        if env.event_type != "CertificateIssued":
            touched |= _project(cur, env)
    findings = _findings(cur, ctx, sorted(touched))
    return raise_now(cur, ctx, findings, today)


def _track(cur: Cursor, envelopes: Sequence[Envelope]) -> list[Envelope]:
    rows = {e.event_id: (e.event_id, e.event_type, e.producer) for e in envelopes}
    if not rows:
        return []
    new = psycopg2.extras.execute_values(
        cur,
        "INSERT INTO recon.processed (event_id, event_type, producer) VALUES %s "
        "ON CONFLICT DO NOTHING RETURNING event_id::text",
        list(rows.values()),
        fetch=True,
    )
    ids = {r[0] for r in new}
    seen: set[str] = set()
    out = []
    for env in envelopes:
        if env.event_id in ids and env.event_id not in seen:
            seen.add(env.event_id)
            out.append(env)
    return out


def _project(cur: Cursor, env: Envelope) -> set[str]:
    """Write one event's projection rows; return the certificate ids it concerns."""
    p = env.payload
    if env.event_type == "CertificateIssued":
        return _certificates(cur, [(p["certificate"], env.event_id)])
    if env.event_type == "ImportConfirmed":
        cur.execute(
            "INSERT INTO recon.confirmations (event_id, certificate_id, issuing_participant,"
            " importing_participant, received_on, parcels, carats, value_usd, seal_intact)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (env.event_id, p["certificate_id"], p["issuing_participant"],
             p["importing_participant"], p["received_on"], p["parcels"], p["carats"],
             p["value_usd"], p["seal_intact"]),
        )  # fmt: skip
        return {p["certificate_id"]}
    if env.event_type == "CertificateVoided":
        cur.execute(
            "INSERT INTO recon.voids (certificate_id, voided_on, replaced_by, reason, event_id)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (p["certificate_id"], p["voided_on"], p.get("replaced_by"), p["reason"], env.event_id),
        )
        return {p["certificate_id"]}
    if env.event_type == "ProductionDeclared":
        # A second declaration for the member, producer and period is a revision (DESIGN
        # §9): it replaces the figure, never adds to it.
        cur.execute(
            "DELETE FROM recon.production WHERE participant = %s AND producer_id = %s"
            " AND period = %s AND event_id <> %s",
            (p["participant"], p["producer_id"], p["period"], env.event_id),
        )
        cur.execute(
            "INSERT INTO recon.production (event_id, participant, period, producer_id, carats,"
            " value_usd) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (env.event_id, p["participant"], p["period"], p["producer_id"], p["carats"],
             p["value_usd"]),
        )  # fmt: skip
    return set()


def parcel_origin(parcel_origin: str | None, countries: Sequence[str]) -> str | None:
    """A parcel's known origin: its own, else the certificate's only origin country."""
    if parcel_origin:
        return parcel_origin
    return countries[0] if len(countries) == 1 else None


def _certificates(cur: Cursor, issued: Sequence[tuple[dict[str, Any], str]]) -> set[str]:
    """Project issued certificates (record, event id) and their parcels; their ids."""
    if not issued:
        return set()
    certificates, parcels = [], []
    for c, event_id in issued:
        cid = c["certificate_id"]
        countries = list(c["origin"]["countries"])
        certificates.append(
            (cid, c["issuing_participant"], c.get("issuing_member") or c["issuing_participant"],
             c["destination"], c["origin"]["type"], countries, c["date_of_issue"],
             c["date_of_expiry"], c["number_of_parcels"], c["total_carats"],
             c["total_value_usd"], event_id)
        )  # fmt: skip
        parcels += [
            (cid, p["parcel_no"], _hs(p["hs_code"]), p["carats"], p["value_usd"],
             parcel_origin(p.get("origin_country"), countries))
            for p in c["parcels"]
        ]  # fmt: skip
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO recon.certificates (certificate_id, issuing_participant, exporter,"
        " destination, origin_type, origin_countries, date_of_issue, date_of_expiry,"
        " number_of_parcels, total_carats, total_value_usd, event_id)"
        " VALUES %s ON CONFLICT DO NOTHING",
        certificates,
        page_size=1000,
    )
    if parcels:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO recon.parcels (certificate_id, parcel_no, hs_code, carats, value_usd,"
            " origin) VALUES %s ON CONFLICT DO NOTHING",
            parcels,
            page_size=5000,
        )
    return {c["certificate_id"] for c, _ in issued}


def _hs(symbol: str) -> str:
    """Avro symbol HS_7102_10 -> 7102.10 (the statistics' spelling)."""
    return from_symbol(HsCode, symbol).value


def _findings(cur: Cursor, ctx: Context, cids: Sequence[str]) -> list[Discrepancy]:
    """The event-time findings of the certificates ``cids``, in their order (two queries for
    all of them, not two each)."""
    if not cids:
        return []
    cur.execute(
        "SELECT c.certificate_id, c.exporter, c.destination, c.date_of_expiry,"
        " c.number_of_parcels, c.total_carats, c.total_value_usd, v.voided_on, v.replaced_by"
        " FROM recon.certificates c LEFT JOIN recon.voids v USING (certificate_id)"
        " WHERE c.certificate_id = ANY(%s)",
        (list(cids),),
    )
    certs = {row[0]: CertificateFacts(*row) for row in cur.fetchall()}
    cur.execute(
        "SELECT event_id::text, certificate_id, issuing_participant, importing_participant,"
        " received_on, parcels, carats, value_usd, seal_intact FROM recon.confirmations"
        " WHERE certificate_id = ANY(%s) ORDER BY seq",
        (list(cids),),
    )
    confs: dict[str, list[ConfirmationFacts]] = {}
    for row in cur.fetchall():
        confs.setdefault(row[1], []).append(ConfirmationFacts(*row))
    return [
        d
        for cid in cids
        for d in certificate_findings(
            certs.get(cid), confs.get(cid, []), ctx.limits, ctx.region, ctx.members
        )
    ]


# ---------------------------------------------------------------- discrepancies


def raise_now(
    cur: Cursor, ctx: Context, found: Iterable[Discrepancy], raised_on: date
) -> list[Raised]:
    """Store findings not stored yet and queue their notices; return the new ones."""
    rows = [_row(d, raised_on, None) for d in found]
    if not rows:
        return []
    new = psycopg2.extras.execute_values(cur, _INSERT, rows, fetch=True)
    items = [p for r in new for p in notices_of(ctx.node_codes, *r)]
    ctx.writer.append_many(cur, items)
    return [Raised(r[0], r[1]) for r in new]


# The columns a finding is stored with: the as-of checks' INSERT ... SELECT name them too.
COLUMNS = "dedup_key, kind, certificate_id, participants, period, detail, raised_on, run_id"
_INSERT = (
    f"INSERT INTO recon.discrepancies ({COLUMNS}) VALUES %s ON CONFLICT (dedup_key) DO NOTHING"
    " RETURNING id, kind, certificate_id, participants, period, detail, raised_on"
)


def insert_for_run(cur: Cursor, found: Iterable[Discrepancy], raised_on: date, run_id: int) -> None:
    """Store findings of an as-of run; :func:`notify_run` announces the new ones."""
    rows = [_row(d, raised_on, run_id) for d in found]
    if rows:
        psycopg2.extras.execute_values(cur, _INSERT.split(" RETURNING")[0], rows)


def _row(d: Discrepancy, raised_on: date, run_id: int | None) -> tuple[Any, ...]:
    participants = list(d.participants)
    return (
        d.dedup_key,
        d.kind,
        d.certificate_id,
        participants,
        d.period,
        d.detail,
        raised_on,
        run_id,
    )


def notices_of(
    node_codes: Collection[str],
    id_: int,
    kind: str,
    certificate_id: str | None,
    participants: list[str],
    period: str | None,
    detail: str,
    raised_on: date,
) -> list[Pending]:
    """The DiscrepancyRaised notices of one stored discrepancy: one per concerned node."""
    record = {
        "discrepancy_id": id_,
        "kind": kind,
        "certificate_id": certificate_id,
        "participants": list(participants),
        "period": period,
        "detail": detail,
        "raised_on": raised_on,
    }
    return [
        Pending(NOTICE, record, topology.NOTIFY, f"{code}.{NOTICE}")
        for code in dict.fromkeys(participants)
        if code in node_codes
    ]


def open_counts(cur: Cursor) -> dict[str, int]:
    """Open discrepancies per kind."""
    cur.execute(
        "SELECT kind, count(*) FROM recon.discrepancies WHERE status = 'OPEN' GROUP BY kind"
    )
    return {k: int(n) for k, n in cur.fetchall()}


def list_discrepancies(
    cur: Cursor,
    *,
    kind: str | None = None,
    participant: str | None = None,
    period: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Discrepancies matching every filter given, oldest first, as JSON-ready dicts."""
    cur.execute(
        "SELECT id, kind, certificate_id, participants, period, detail, status, note,"
        " raised_on, resolved_at FROM recon.discrepancies"
        " WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)"
        " AND (%(who)s::text IS NULL OR %(who)s = ANY(participants))"
        " AND (%(period)s::text IS NULL OR period = %(period)s)"
        " AND (%(status)s::text IS NULL OR status = %(status)s) ORDER BY id",
        {"kind": kind, "who": participant, "period": period, "status": status},
    )
    names = [d[0] for d in cur.description or ()]
    out = []
    for r in cur.fetchall():
        item = dict(zip(names, r, strict=True))
        item["raised_on"] = item["raised_on"].isoformat()
        item["resolved_at"] = item["resolved_at"].isoformat() if item["resolved_at"] else None
        out.append(item)
    return out


def resolve(cur: Cursor, discrepancy_id: int, note: str, author: str = "cli") -> str:
    """Mark a discrepancy RESOLVED with a note; return its kind. Raises NotFound.

    The note is added to the discrepancy's history (``discrepancy_notes``, never overwritten);
    ``note`` on the discrepancy itself is the latest one, as ``discrepancies --json`` shows.
    """
    return _set_status(cur, discrepancy_id, "RESOLVED", note, author)


def reopen(cur: Cursor, discrepancy_id: int, note: str, author: str = "cli") -> str:
    """Set a discrepancy OPEN again with a note saying why; return its kind. Raises NotFound."""
    return _set_status(cur, discrepancy_id, "OPEN", note, author)


def _set_status(cur: Cursor, discrepancy_id: int, status: str, note: str, author: str) -> str:
    cur.execute(
        "UPDATE recon.discrepancies SET status = %s, note = %s,"
        " resolved_at = CASE WHEN %s = 'RESOLVED' THEN now() END"
        " WHERE id = %s RETURNING kind",
        (status, note, status, discrepancy_id),
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"discrepancy {discrepancy_id} does not exist")
    cur.execute(
        "INSERT INTO discrepancy_notes (discrepancy_id, status, note, author)"
        " VALUES (%s, %s, %s, %s)",
        (discrepancy_id, status, note, author),
    )
    return str(row[0])
