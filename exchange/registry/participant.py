"""Suspending and reinstating a KP participant: status, history and the notice to every node.

One transaction writes the participant's new status, its history row and one
``ParticipantStatusChanged`` per node in the registry's outbox (producer = the region code), so
the nodes learn exactly what the registry now enforces. Certificates naming a suspended
participant as destination or origin are rejected from the next batch on (the ingest reads the
participants table per batch).
"""

from __future__ import annotations

import re
from datetime import date

from exchange.adapters.postgres import Connection, transaction
from exchange.domain.events import ParticipantStatus, StatusChange
from exchange.domain.region import Region
from exchange.errors import Refusal
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.registry import store
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.signing import Signer

_CODE = re.compile(r"[A-Z]{2}")
# What each command may change a status from, and to.
TRANSITIONS = {
    "suspend": (frozenset({"ADMITTED", "REINSTATED"}), ParticipantStatus.SUSPENDED),
    "reinstate": (frozenset({"SUSPENDED"}), ParticipantStatus.REINSTATED),
}


def change_status(
    conn: Connection,
    schemas: SchemaStore,
    signer: Signer,
    region: Region,
    action: str,
    code: str,
    reason: str,
    effective_on: date,
) -> str:
    """Suspend or reinstate ``code``; return the new status.

    Raises Refusal(NOT_A_PARTICIPANT) for a code that is no participant (or the region
    itself), Refusal(NOT_ALLOWED) when the current status does not allow the change.
    """
    allowed_from, new_status = TRANSITIONS[action]
    if not _CODE.fullmatch(code) or code == region.code:
        raise Refusal("NOT_A_PARTICIPANT", f"{code!r} is not a participant code that can change")
    writer = OutboxWriter(schemas, signer, relay=region.code)
    with transaction(conn) as cur:
        store.lock(cur, [f"participant:{code}"])
        current = store.load_book(cur).get(code)
        if current is None:
            raise Refusal("NOT_A_PARTICIPANT", f"{code} is no KP participant known to the region")
        if current not in allowed_from:
            raise Refusal("NOT_ALLOWED", f"{code} is {current}; cannot {action} it")
        record = StatusChange(code, new_status, effective_on, reason).to_record()
        notices = [
            Pending(
                "ParticipantStatusChanged",
                record,
                topology.NOTIFY,
                f"{node}.ParticipantStatusChanged",
            )
            for node in region.node_codes
        ]
        appended = writer.append_many(cur, notices)
        event_id = appended[0].event_id if appended else None
        store.set_status(cur, code, new_status.value, effective_on, reason, event_id)
    return new_status.value
