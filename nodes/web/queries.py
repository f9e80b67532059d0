"""Read-only queries of the node's pages and API: lists with search and paging."""

from __future__ import annotations

from typing import Any

from exchange.adapters.postgres import Cursor


def _rows(cur: Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


_CERTIFICATE_COLUMNS = (
    "c.certificate_id, c.destination, c.date_of_issue, c.date_of_expiry, c.total_carats, "
    "c.total_value_usd, c.state, c.replaced_by, e.registry_state, e.registry_reason"
)


def certificates(cur: Cursor, q: str, page: int, size: int) -> list[dict[str, Any]]:
    """One page (newest first) of certificates with the registry's answer; ``size + 1`` rows
    at most, so the caller knows whether a next page exists without counting them all."""
    q = q.strip()[:100]
    window = {"n": size + 1, "off": (page - 1) * size}
    if not q:
        # Unfiltered, the page is cut from the certificates' own index first (an index-only
        # scan) and only its rows are read and joined: a deep page skips index entries.
        cur.execute(
            f"SELECT {_CERTIFICATE_COLUMNS} FROM (SELECT certificate_id FROM certificates "
            "ORDER BY created_at DESC, certificate_id DESC LIMIT %(n)s OFFSET %(off)s) k "
            "JOIN certificates c USING (certificate_id) "
            "JOIN node_events e ON e.event_id = c.event_id "
            "ORDER BY c.created_at DESC, c.certificate_id DESC",
            window,
        )
        return _rows(cur)
    cur.execute(
        f"SELECT {_CERTIFICATE_COLUMNS} FROM certificates c "
        "JOIN node_events e ON e.event_id = c.event_id "
        "WHERE c.certificate_id ILIKE %(like)s OR c.destination = upper(%(q)s) "
        "OR e.registry_state = lower(%(q)s) "
        "ORDER BY c.created_at DESC, c.certificate_id DESC LIMIT %(n)s OFFSET %(off)s",
        {"q": q, "like": f"%{_escape_like(q)}%", **window},
    )
    return _rows(cur)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def certificate(cur: Cursor, certificate_id: str) -> dict[str, Any] | None:
    cur.execute(
        "SELECT c.certificate_id, c.destination, c.date_of_issue, c.date_of_expiry, "
        "c.total_carats, c.total_value_usd, c.state, c.replaced_by, c.body, c.created_at, "
        "e.event_id, e.registry_state, e.registry_reason, e.registry_detail, e.decided_at "
        "FROM certificates c JOIN node_events e ON e.event_id = c.event_id "
        "WHERE c.certificate_id = %s",
        (certificate_id,),
    )
    rows = _rows(cur)
    return rows[0] if rows else None


def authorisation(cur: Cursor, certificate_id: str) -> dict[str, Any] | None:
    """Who authorised the issue of a certificate (the Annex I validation), from the audit."""
    cur.execute(
        "SELECT a.actor, a.at, a.actor LIKE 'token:%%' AS national_system, "
        "coalesce(u.full_name, split_part(a.actor, ':', 2)) AS full_name "
        "FROM audit_log a LEFT JOIN web_users u ON 'user:' || u.username = a.actor "
        "WHERE a.subject = %s AND a.action IN ('issue', 'authorise') ORDER BY a.audit_id LIMIT 1",
        (certificate_id,),
    )
    rows = _rows(cur)
    return rows[0] if rows else None


def drafts(cur: Cursor, page: int, size: int, open_only: bool = True) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT draft_id, drafted_by, drafted_at, state, authorised_by, certificate_id, "
        "operation -> 'certificate' ->> 'destination' AS destination FROM drafts "
        "WHERE state = 'DRAFT' OR NOT %s ORDER BY draft_id DESC LIMIT %s OFFSET %s",
        (open_only, size + 1, (page - 1) * size),
    )
    return _rows(cur)


def draft(cur: Cursor, draft_id: int) -> dict[str, Any] | None:
    cur.execute(
        "SELECT draft_id, operation, drafted_by, drafted_at, state, authorised_by, "
        "authorised_at, certificate_id FROM drafts WHERE draft_id = %s",
        (draft_id,),
    )
    rows = _rows(cur)
    return rows[0] if rows else None


def save_draft(cur: Cursor, operation: dict[str, Any], drafted_by: str) -> int:
    from psycopg2.extras import Json

    cur.execute(
        "INSERT INTO drafts (operation, drafted_by) VALUES (%s, %s) RETURNING draft_id",
        (Json(operation), drafted_by),
    )
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def mark_authorised(cur: Cursor, draft_id: int, officer: str, certificate_id: str) -> None:
    cur.execute(
        "UPDATE drafts SET state = 'AUTHORISED', authorised_by = %s, authorised_at = now(), "
        "certificate_id = %s WHERE draft_id = %s AND state = 'DRAFT'",
        (officer, certificate_id, draft_id),
    )


def discard_draft(cur: Cursor, draft_id: int) -> bool:
    cur.execute(
        "UPDATE drafts SET state = 'DISCARDED' WHERE draft_id = %s AND state = 'DRAFT'",
        (draft_id,),
    )
    return bool(cur.rowcount)


def shipments(cur: Cursor, q: str, page: int, size: int, open_only: bool) -> list[dict[str, Any]]:
    q = q.strip()[:100]
    cur.execute(
        "SELECT certificate_id, issuing_participant, body, accepted_at, confirmed "
        "FROM expected_shipments WHERE (confirmed = false OR NOT %(open)s) "
        "AND (%(q)s = '' OR certificate_id ILIKE %(like)s OR issuing_participant = upper(%(q)s)) "
        "ORDER BY accepted_at DESC, certificate_id LIMIT %(n)s OFFSET %(off)s",
        {"open": open_only, "q": q, "like": f"%{_escape_like(q)}%", "n": size + 1,
         "off": (page - 1) * size},
    )  # fmt: skip
    return _rows(cur)


def shipment(cur: Cursor, certificate_id: str) -> dict[str, Any] | None:
    cur.execute(
        "SELECT certificate_id, issuing_participant, body, accepted_at, confirmed "
        "FROM expected_shipments WHERE certificate_id = %s",
        (certificate_id,),
    )
    rows = _rows(cur)
    return rows[0] if rows else None


def discrepancies(cur: Cursor, q: str, page: int, size: int) -> list[dict[str, Any]]:
    q = q.strip()[:100]
    cur.execute(
        "SELECT discrepancy_id, kind, certificate_id, period, participants, detail, raised_on "
        "FROM discrepancies WHERE (%(q)s = '' OR kind = upper(%(q)s) OR certificate_id ILIKE "
        "%(like)s OR period = %(q)s) ORDER BY raised_on DESC, discrepancy_id DESC "
        "LIMIT %(n)s OFFSET %(off)s",
        {"q": q, "like": f"%{_escape_like(q)}%", "n": size + 1, "off": (page - 1) * size},
    )
    return _rows(cur)


def rejections(cur: Cursor, q: str, page: int, size: int) -> list[dict[str, Any]]:
    q = q.strip()[:100]
    cur.execute(
        "SELECT event_id, event_type, subject, registry_reason, registry_detail, decided_at "
        "FROM node_events WHERE registry_state = 'rejected' AND (%(q)s = '' OR subject ILIKE "
        "%(like)s OR registry_reason = upper(%(q)s)) ORDER BY decided_at DESC, sequence "
        "LIMIT %(n)s OFFSET %(off)s",
        {"q": q, "like": f"%{_escape_like(q)}%", "n": size + 1, "off": (page - 1) * size},
    )
    return _rows(cur)


def production(cur: Cursor) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT period, producer_id, carats, value_usd, revision FROM production "
        "ORDER BY period DESC, producer_id"
    )
    return _rows(cur)
