"""The region's register at the registry: load, decide, write and list (DESIGN §14).

The ingest's policy asks ``exchange.domain.register.event_refusal`` about a register event
and keeps a
:class:`~exchange.domain.register.Register` of the batch's producers in its view (loaded by
:func:`load`), so the register rules of exchange.domain.register see registrations accepted
earlier in the same batch. :func:`write` stores accepted events in their order of acceptance
(one ``register_seq`` for both tables: a revocation ends the versions recorded before it).
Both read and write the tables as the nodes do (exchange/adapters/registertables.py); what is
the registry's own is :func:`listing`.

Errors: DatabaseUnavailable (transient) from the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exchange.adapters.postgres import Cursor
from exchange.adapters.registertables import load, write

__all__ = ["listing", "load", "write"]


def listing(
    cur: Cursor, member: str | None = None, kind: str | None = None
) -> list[dict[str, Any]]:
    """Every entry (its latest version) with its history, for ``kpx registry register``."""
    cur.execute("SELECT DISTINCT member FROM register_entries ORDER BY 1")
    members = [r[0] for r in cur.fetchall() if member is None or r[0] == member]
    register = load(cur, members)
    cur.execute("SELECT seq, reason FROM register_revocations WHERE member = ANY(%s)", (members,))
    reasons = {seq: reason for seq, reason in cur.fetchall()}
    out = []
    for (m, entry_id), versions in sorted(register.versions.items()):
        latest = versions[-1].entry
        if kind is not None and latest.kind.value != kind:
            continue
        revoked = register.revocations.get((m, entry_id), [])
        out.append(
            {
                "member": m,
                "kind": latest.kind.value,
                "id": entry_id,
                "name": latest.name,
                "licence_no": latest.licence_no,
                "valid_from": latest.valid_from.isoformat(),
                "valid_until": latest.valid_until.isoformat() if latest.valid_until else None,
                "zone": latest.zone,
                "members": latest.members,
                "revoked_from": _last_revocation(versions[-1].seq, revoked),
                "history": _history(versions, revoked, reasons),
            }
        )
    return out


def _last_revocation(seq: int, revoked: list[tuple[int, Any]]) -> str | None:
    later = [effective for s, effective in revoked if s > seq]
    return min(later).isoformat() if later else None


def _history(
    versions: Sequence[Any], revoked: list[tuple[int, Any]], reasons: dict[int, str]
) -> list[dict[str, Any]]:
    """Registrations and revocations in the order they were recorded."""
    rows: list[tuple[int, dict[str, Any]]] = [
        (v.seq, {"event": "registered", "licence_no": v.entry.licence_no,
                 "valid_from": v.entry.valid_from.isoformat(),
                 "valid_until": v.entry.valid_until.isoformat() if v.entry.valid_until else None})
        for v in versions
    ]  # fmt: skip
    rows += [
        (s, {"event": "revoked", "effective": effective.isoformat(), "reason": reasons.get(s, "")})
        for s, effective in revoked
    ]
    return [row for _, row in sorted(rows, key=lambda r: r[0])]
