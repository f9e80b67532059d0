"""The node's PostgreSQL store: the SQL of certificates, events, confirmations and the inbox.

Every function takes a cursor inside the caller's transaction; none commits. The schema is
``nodes/sql``; the outbox tables come from ``exchange/sql``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

import psycopg2.extras

from exchange.adapters.postgres import Cursor
from exchange.domain.certificate import Certificate, certificate_json_text
from exchange.domain.codes import CertificateState
from exchange.domain.events import (
    Decision,
    ImportConfirmation,
    Outcome,
    ProductionDeclaration,
    ShipmentCancellation,
    Voiding,
)


def next_serials(cur: Cursor, year: int, count: int) -> range:
    """Allocate the next ``count`` serials of ``year`` (gap-free within committed transactions)."""
    cur.execute(
        "INSERT INTO serials (year, last_serial) VALUES (%s, %s) ON CONFLICT (year) "
        "DO UPDATE SET last_serial = serials.last_serial + EXCLUDED.last_serial "
        "RETURNING last_serial",
        (year, count),
    )
    row = cur.fetchone()
    assert row is not None
    return range(int(row[0]) - count + 1, int(row[0]) + 1)


def certificate_state(cur: Cursor, certificate_id: str) -> str | None:
    """The local state of a certificate (ISSUED, VOIDED, REPLACED), None when unknown."""
    cur.execute("SELECT state FROM certificates WHERE certificate_id = %s", (certificate_id,))
    row = cur.fetchone()
    return None if row is None else str(row[0])


def record_events(cur: Cursor, rows: list[tuple[str, int, str, str]]) -> None:
    """Remember events this node produced (event_id, sequence, type, subject), unanswered."""
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO node_events (event_id, sequence, event_type, subject) VALUES %s",
        rows,
        page_size=500,
    )


def insert_certificates(
    cur: Cursor, rows: list[tuple[Certificate, dict[str, Any], str]]
) -> set[str]:
    """Store issued certificates (certificate, its Avro record, event id) in one statement.

    Returns the ids stored; an id already present is skipped (ON CONFLICT), so the caller
    learns about duplicates without an error aborting its transaction.
    """
    if not rows:
        return set()
    stored = psycopg2.extras.execute_values(
        cur,
        "INSERT INTO certificates (certificate_id, destination, date_of_issue, date_of_expiry, "
        "total_carats, total_value_usd, body, event_id) VALUES %s "
        "ON CONFLICT (certificate_id) DO NOTHING RETURNING certificate_id",
        [
            (
                c.certificate_id,
                c.destination,
                c.date_of_issue,
                c.date_of_expiry,
                c.total_carats,
                c.total_value_usd,
                certificate_json_text(record["certificate"]),
                event_id,
            )
            for c, record, event_id in rows
        ],
        page_size=500,
        fetch=True,
    )
    return {str(row[0]) for row in stored}


def void_certificate(cur: Cursor, voiding: Voiding) -> None:
    """Mark a certificate voided, or replaced when the voiding names a replacement."""
    state = CertificateState.REPLACED if voiding.replaced_by else CertificateState.VOIDED
    cur.execute(
        "UPDATE certificates SET state = %s, replaced_by = %s WHERE certificate_id = %s",
        (state, voiding.replaced_by, voiding.certificate_id),
    )


def insert_confirmation(cur: Cursor, c: ImportConfirmation, event_id: str) -> None:
    """Store an import confirmation this node made, and close the expected shipment."""
    cur.execute(
        "INSERT INTO import_confirmations (event_id, certificate_id, issuing_participant, "
        "received_on, parcels, carats, value_usd, seal_intact, remarks) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            event_id,
            c.certificate_id,
            c.issuing_participant,
            c.received_on,
            c.parcels,
            c.carats,
            c.value_usd,
            c.seal_intact,
            c.remarks,
        ),
    )
    cur.execute(
        "UPDATE expected_shipments SET confirmed = true WHERE certificate_id = %s",
        (c.certificate_id,),
    )


def insert_production(cur: Cursor, p: ProductionDeclaration, event_id: str) -> None:
    """Store a production declaration; a second one for the period and producer replaces
    the first (a revision, DESIGN §9) and counts the revisions."""
    cur.execute(
        "INSERT INTO production (event_id, period, producer_id, carats, value_usd) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (period, producer_id) DO UPDATE SET "
        "event_id = EXCLUDED.event_id, carats = EXCLUDED.carats, "
        "value_usd = EXCLUDED.value_usd, revision = production.revision + 1",
        (event_id, p.period, p.producer_id, p.carats, p.value_usd),
    )


# ---------------------------------------------------------------- request ids

# A namespace for the advisory locks of request ids (two-key form), apart from other locks.
_REQUEST_LOCKS = 0x6B7078  # "kpx"


def lock_requests(cur: Cursor, request_ids: Iterable[str]) -> None:
    """Lock ``request_ids`` until commit, in one sorted order (waiters never deadlock)."""
    ids = sorted(set(request_ids))
    if ids:
        cur.execute(
            "SELECT count(pg_advisory_xact_lock(%s, h)) FROM "
            "(SELECT DISTINCT hashtext(x) AS h FROM unnest(%s::text[]) AS x ORDER BY h) AS t",
            (_REQUEST_LOCKS, ids),
        )


def applied_requests(cur: Cursor, request_ids: Iterable[str]) -> dict[str, str]:
    """The subject (certificate id, period/producer) of each of ``request_ids`` applied."""
    ids = list(set(request_ids))
    if not ids:
        return {}
    cur.execute(
        "SELECT request_id, subject FROM applied_requests WHERE request_id = ANY(%s)", (ids,)
    )
    return {str(rid): str(subject) for rid, subject in cur.fetchall()}


def remember_requests(cur: Cursor, rows: list[tuple[str, str, str]]) -> None:
    """Remember applied operations' (request_id, op, subject), in the same transaction."""
    if rows:
        psycopg2.extras.execute_values(
            cur,
            "INSERT INTO applied_requests (request_id, op, subject) VALUES %s",
            rows,
            page_size=500,
        )


def participant_overrides(cur: Cursor) -> dict[str, str]:
    """Participant statuses announced by the registry since the region file was written."""
    cur.execute("SELECT participant, status FROM participant_status")
    return {str(code): str(status) for code, status in cur.fetchall()}


# ---------------------------------------------------------------- inbox


def inbox_record(cur: Cursor, rows: Sequence[tuple[str, str, int, str, bytes]]) -> set[str]:
    """Insert the inbox tracking rows (event_id, producer, sequence, event_type, body) in one
    statement; return the ids that were new (a redelivered message's id is already there)."""
    if not rows:
        return set()
    new = psycopg2.extras.execute_values(
        cur,
        "INSERT INTO inbox (event_id, producer, sequence, event_type, body) VALUES %s "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id::text",
        [(e, p, s, t, psycopg2.Binary(b)) for e, p, s, t, b in rows],
        page_size=500,
        fetch=True,
    )
    return {str(row[0]) for row in new}


def apply_decisions(cur: Cursor, decisions: Sequence[Decision]) -> None:
    """Record the registry's answers about this node's events, in one statement.

    An acceptance is final: a forged copy of our event, rejected under the same event id,
    must not overwrite it, whichever of the two answers arrives first (in one batch too:
    the acceptance is kept, else the last answer).
    """
    final: dict[str, Decision] = {}
    for d in decisions:
        kept = final.get(d.subject_event_id)
        if kept is None or kept.decision is not Outcome.ACCEPTED:
            final[d.subject_event_id] = d
    if not final:
        return
    psycopg2.extras.execute_values(
        cur,
        "UPDATE node_events e SET registry_state = v.state, registry_reason = v.reason, "
        "registry_detail = v.detail, decided_at = v.decided_at, leaf_index = v.leaf_index "
        "FROM (VALUES %s) AS v (event_id, state, reason, detail, decided_at, leaf_index) "
        "WHERE e.event_id = v.event_id AND e.registry_state <> 'accepted'",
        [
            (
                d.subject_event_id,
                d.decision.value.lower(),
                d.reason,
                d.detail,
                d.decided_at,
                d.leaf_index,  # where the registry's log holds it (None: rejected, or unsaid)
            )
            for d in final.values()
        ],
        template="(%s::uuid, %s, %s, %s, %s::timestamptz, %s::bigint)",
        page_size=500,
    )


def expect_shipments(cur: Cursor, records: Sequence[Mapping[str, Any]]) -> None:
    """Remember shipments announced to this participant (``kpx.ShipmentExpected`` records),
    in one statement; one already announced is kept as it is."""
    if not records:
        return
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO expected_shipments (certificate_id, issuing_participant, body, "
        "accepted_at, confirmed) SELECT v.id, v.issuer, v.body, v.at, EXISTS (SELECT 1 FROM "
        "import_confirmations i WHERE i.certificate_id = v.id) FROM (VALUES %s) AS v "
        "(id, issuer, body, at) ON CONFLICT (certificate_id) DO NOTHING",
        [
            (
                r["certificate"]["certificate_id"],
                r["certificate"]["issuing_participant"],
                certificate_json_text(r["certificate"]),
                r["accepted_at"],
            )
            for r in records
        ],
        template="(%s, %s, %s::jsonb, %s::timestamptz)",
        page_size=500,
    )


def record_discrepancy(cur: Cursor, record: dict[str, Any]) -> None:
    """Remember a discrepancy the reconciler sent to this participant."""
    cur.execute(
        "INSERT INTO discrepancies (discrepancy_id, kind, certificate_id, period, participants, "
        "detail, raised_on) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (discrepancy_id) DO NOTHING",
        (
            record["discrepancy_id"],
            record["kind"],
            record["certificate_id"],
            record["period"],
            list(record["participants"]),
            record["detail"],
            record["raised_on"],
        ),
    )


def record_status(
    cur: Cursor, participant: str, status: str, effective_on: date, reason: str
) -> None:
    """Remember a participant's status as the registry announced it."""
    cur.execute(
        "INSERT INTO participant_status (participant, status, effective_on, reason) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (participant) DO UPDATE SET status = "
        "EXCLUDED.status, effective_on = EXCLUDED.effective_on, reason = EXCLUDED.reason",
        (participant, status, effective_on, reason),
    )


# ---------------------------------------------------------------- queries


def certificates(cur: Cursor) -> list[dict[str, Any]]:
    """The node's certificates with the registry's last answer about each."""
    cur.execute(
        "SELECT c.certificate_id, c.destination, c.date_of_issue, c.date_of_expiry, "
        "c.total_carats, c.total_value_usd, c.state, c.replaced_by, e.registry_state, "
        "e.registry_reason, e.registry_detail, e.decided_at FROM certificates c "
        "JOIN node_events e ON e.event_id = c.event_id ORDER BY c.created_at, c.certificate_id"
    )
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def cancel_shipments(cur: Cursor, cancellations: Sequence[ShipmentCancellation]) -> None:
    """Withdraw shipments announced to this participant (their certificates were voided)."""
    if not cancellations:
        return
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO cancelled_shipments (certificate_id, issuing_participant, voided_on, "
        "reason, replaced_by, cancelled_at) VALUES %s ON CONFLICT (certificate_id) DO NOTHING",
        [
            (c.certificate_id, c.issuing_participant, c.voided_on, c.reason, c.replaced_by,
             c.cancelled_at)
            for c in cancellations
        ],
        page_size=500,
    )  # fmt: skip


def expected_shipments(cur: Cursor, *, only_open: bool = True) -> list[dict[str, Any]]:
    """Shipments announced to this participant and not withdrawn (by default, those not yet
    confirmed either)."""
    cur.execute(
        "SELECT certificate_id, issuing_participant, body, accepted_at, confirmed "
        "FROM expected_shipments e WHERE (NOT confirmed OR NOT %s) AND NOT EXISTS "
        "(SELECT 1 FROM cancelled_shipments c WHERE c.certificate_id = e.certificate_id) "
        "ORDER BY accepted_at",
        (only_open,),
    )
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def events_by_state(cur: Cursor) -> dict[str, int]:
    """How many of this node's events the registry accepted, rejected, or has not answered."""
    cur.execute("SELECT registry_state, count(*) FROM node_events GROUP BY registry_state")
    return {str(state): int(n) for state, n in cur.fetchall()}
