"""Read-only answers of the registry: show, verify, rejections.

``verify`` speaks to a border officer: one sentence saying whether the certificate may be
honoured and, if not, why. A regional number is checked by its check digits before any lookup,
so a mistyped number is caught as such, not reported as unknown.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from exchange.adapters.postgres import Connection, fetch_all
from exchange.domain.certnumber import parse_regional
from exchange.domain.codes import CertificateState
from exchange.errors import NotFound, Refusal


def show(conn: Connection, certificate_id: str) -> dict[str, Any]:
    """State, certificate, history, import confirmations and decisions of one certificate.

    Raises NotFound when the registry never heard of ``certificate_id``. Longer than 40 lines
    because it is four plain queries side by side: split, the one read would be scattered.
    """
    certs = fetch_all(
        conn,
        "SELECT state, replaced_by, producer, body, event_id::text, accepted_at "
        "FROM certificates WHERE certificate_id = %s",
        (certificate_id,),
    )
    decisions = fetch_all(
        conn,
        "SELECT COALESCE(claimed_event_id, event_id)::text AS event_id, event_type, producer, "
        "sequence, decision, reason, detail, received_at FROM event_log "
        "WHERE certificate_id = %s ORDER BY received_at, sequence",
        (certificate_id,),
    )
    confirmations = fetch_all(
        conn,
        "SELECT event_id::text, importing_participant, received_on, parcels, carats, value_usd, "
        "seal_intact, remarks, matched FROM import_confirmations WHERE certificate_id = %s "
        "ORDER BY received_on, event_id",
        (certificate_id,),
    )
    if not certs and not decisions and not confirmations:
        raise NotFound(f"certificate {certificate_id} is unknown to the registry")
    history = fetch_all(
        conn,
        "SELECT event_id::text, event_type, state, detail, recorded_at FROM certificate_history "
        "WHERE certificate_id = %s ORDER BY id",
        (certificate_id,),
    )
    cert = certs[0] if certs else None
    return {
        "certificate_id": certificate_id,
        "state": cert["state"] if cert else "UNKNOWN",
        "replaced_by": cert["replaced_by"] if cert else None,
        "accepted_at": cert["accepted_at"] if cert else None,
        "certificate": cert["body"] if cert else None,
        "history": history,
        "confirmations": confirmations,
        "decisions": decisions,
    }


def verify(conn: Connection, certificate_id: str, region_code: str, on: date) -> tuple[bool, str]:
    """Whether the certificate may be honoured on ``on``, and a sentence saying why."""
    number = certificate_id.strip().upper()
    if number.startswith(f"{region_code}-"):
        try:
            parse_regional(number, region_code)
        except Refusal as refusal:
            return False, f"Do not accept: {refusal.sentence}. Check the number on the paper."
    rows = fetch_all(
        conn,
        "SELECT state, replaced_by, destination, date_of_issue, date_of_expiry, "
        "issuing_participant, issuing_member FROM certificates WHERE certificate_id = %s",
        (number,),
    )
    if not rows:
        return False, _never_accepted(conn, number)
    return _judge(number, rows[0], on, _confirmations(conn, number, rows[0]["destination"]))


def _never_accepted(conn: Connection, number: str) -> str:
    rejected = fetch_all(
        conn,
        "SELECT reason, detail FROM event_log WHERE certificate_id = %s AND decision = 'REJECTED' "
        "ORDER BY received_at DESC LIMIT 1",
        (number,),
    )
    if rejected:
        r = rejected[0]
        return (
            f"Do not accept: certificate {number} was rejected by the registry "
            f"({r['reason']}: {r['detail']})."
        )
    return (
        f"Do not accept: certificate {number} was never accepted by the registry; "
        "it may be forged or not yet reported. Hold the shipment and contact the issuing authority."
    )


def _confirmations(conn: Connection, number: str, destination: str) -> list[dict[str, Any]]:
    # Only the destination's confirmations count (DESIGN §15): a third party's is no re-use.
    return fetch_all(
        conn,
        "SELECT importing_participant, received_on FROM import_confirmations "
        "WHERE certificate_id = %s AND importing_participant = %s ORDER BY received_on",
        (number, destination),
    )


def _judge(
    number: str, cert: dict[str, Any], on: date, confirmations: list[dict[str, Any]]
) -> tuple[bool, str]:
    issuer = cert["issuing_member"] or cert["issuing_participant"]
    state, expiry = cert["state"], cert["date_of_expiry"]
    if state == CertificateState.VOIDED:
        return False, f"Do not accept: certificate {number} was cancelled (voided) by {issuer}."
    if state == CertificateState.REPLACED:
        return False, (
            f"Do not accept: certificate {number} was replaced by {cert['replaced_by']}; "
            "only the replacement is valid."
        )
    if on < cert["date_of_issue"]:
        return False, (
            f"Do not accept: certificate {number} is dated {cert['date_of_issue']:%Y-%m-%d}, "
            f"after {on:%Y-%m-%d}."
        )
    if on > expiry:
        return False, f"Do not accept: certificate {number} expired on {expiry:%Y-%m-%d}."
    sentence = (
        f"Valid: certificate {number} issued by {issuer} for {cert['destination']}, "
        f"valid until {expiry:%Y-%m-%d}."
    )
    if confirmations:
        first = confirmations[0]
        sentence += (
            f" Warning: already confirmed at import by {first['importing_participant']} on "
            f"{first['received_on']:%Y-%m-%d}; presented again, it may be re-used."
        )
    return True, sentence


def rejections(conn: Connection, limit: int | None = None) -> list[dict[str, Any]]:
    """Every rejected event, newest last: event_id, producer, event_type, certificate_id,
    reason, detail, received_at."""
    query = (
        "SELECT COALESCE(claimed_event_id, event_id)::text AS event_id, producer, event_type, "
        "certificate_id, reason, detail, received_at FROM event_log "
        "WHERE decision = 'REJECTED' ORDER BY received_at, event_id"
    )
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    return fetch_all(conn, query)
