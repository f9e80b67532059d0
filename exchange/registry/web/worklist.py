"""The console's acts on the registry: the discrepancy worklist and participants' status.

Every act calls the code the command line runs — ``reconciler.store.list_discrepancies`` /
``resolve`` / ``reopen`` and ``registry.participant.change_status`` — and writes its audit row
(who, when, what) in the same transaction where it can, so an act and its record never part.

Errors: NotFound (no such discrepancy), Refusal (NOT_A_PARTICIPANT, NOT_ALLOWED, or a note
or reason left empty, as NOT_ALLOWED), DatabaseUnavailable.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import date
from typing import Any

from exchange.adapters.postgres import Connection, fetch_all, transaction
from exchange.domain.region import Region
from exchange.errors import NotFound, Refusal
from exchange.reconciler import store as recon
from exchange.registry import participant, queries
from exchange.registry.web.accounts import User, record
from exchange.wire.codec import SchemaStore
from exchange.wire.signing import Signer

MAX_NOTE = 2000


def discrepancies(conn: Connection, filters: dict[str, str | None]) -> list[dict[str, Any]]:
    """The worklist: discrepancies matching every filter given (kind, participant, period,
    status), oldest first."""
    with transaction(conn) as cur:
        return recon.list_discrepancies(
            cur,
            kind=filters.get("kind") or None,
            participant=filters.get("participant") or None,
            period=filters.get("period") or None,
            status=filters.get("status") or None,
        )


def detail(conn: Connection, discrepancy_id: int) -> dict[str, Any]:
    """One discrepancy, its note history and its certificate's record; raises NotFound."""
    rows = fetch_all(
        conn,
        "SELECT id, kind, certificate_id, participants, period, detail, status, note,"
        " raised_on, resolved_at FROM recon.discrepancies WHERE id = %s",
        (discrepancy_id,),
    )
    if not rows:
        raise NotFound(f"discrepancy {discrepancy_id} does not exist")
    item = rows[0]
    item["notes"] = fetch_all(
        conn,
        "SELECT status, note, author, at FROM discrepancy_notes WHERE discrepancy_id = %s"
        " ORDER BY id",
        (discrepancy_id,),
    )
    item["figures"] = _figures(conn, item["period"], item["participants"])
    item["certificate"] = None
    if item["certificate_id"]:
        # An import of a number the registry never accepted has no record: that is the finding.
        with suppress(NotFound):
            item["certificate"] = queries.show(conn, item["certificate_id"])
    return item


def _figures(conn: Connection, period: str | None, who: list[str]) -> list[dict[str, Any]]:
    """The participants' rows in the latest published statistics of the period, if any."""
    if not period:
        return []
    rows = fetch_all(
        conn,
        "SELECT figures FROM recon.statistics_versions WHERE period = %s"
        " ORDER BY version DESC LIMIT 1",
        (period,),
    )
    figures: list[dict[str, Any]] = rows[0]["figures"] if rows else []
    return [r for r in figures if r["participant"] in who and r["by"] in ("total", "partner")]


def annotate(conn: Connection, user: User, discrepancy_id: int, action: str, note: str) -> str:
    """Resolve or reopen a discrepancy with a note (a new history row); return its kind."""
    text = note.strip()
    if not text:
        raise Refusal("NOT_ALLOWED", "a note is required")
    if len(text) > MAX_NOTE:
        raise Refusal("NOT_ALLOWED", f"a note has at most {MAX_NOTE} characters")
    act = {"resolve": recon.resolve, "reopen": recon.reopen}[action]
    with transaction(conn) as cur:
        kind = act(cur, discrepancy_id, text, user.username)
        record(cur, user.username, action, f"discrepancy {discrepancy_id}", text)
    return kind


def participants(conn: Connection) -> list[dict[str, Any]]:
    """Every participant with its status, and its latest status change."""
    return fetch_all(
        conn,
        "SELECT code, role, status, effective_on, reason, updated_at FROM participants"
        " ORDER BY role, code",
    )


def change_status(
    conn: Connection,
    schemas: SchemaStore,
    signer: Signer,
    region: Region,
    user: User,
    action: str,
    code: str,
    reason: str,
    effective_on: date,
) -> str:
    """Suspend or reinstate exactly as ``kpx registry participant …`` does; admin only."""
    if not user.is_admin:
        raise Refusal("NOT_ALLOWED", "only an admin may suspend or reinstate")
    if action not in participant.TRANSITIONS:
        raise Refusal("NOT_ALLOWED", f"unknown action {action!r}")
    why = reason.strip()
    if not why:
        raise Refusal("NOT_ALLOWED", "a reason is required")
    status = participant.change_status(
        conn, schemas, signer, region, action, code, why, effective_on
    )
    with transaction(conn) as cur:
        record(cur, user.username, action, code, why)
    return status


def rejections(conn: Connection, limit: int = 500) -> list[dict[str, Any]]:
    """The newest rejected events with reason and sentence (what ``kpx registry rejections``
    lists, newest first and bounded: the console shows the latest, the command all)."""
    return fetch_all(
        conn,
        "SELECT COALESCE(claimed_event_id, event_id)::text AS event_id, producer, event_type,"
        " certificate_id, reason, detail, received_at FROM event_log"
        " WHERE decision = 'REJECTED' ORDER BY received_at DESC, event_id LIMIT %s",
        (limit,),
    )
