"""The region's register at the registry: load, decide, write and list (DESIGN §14).

The ingest's policy asks ``exchange.domain.register.event_refusal`` about a register event
and keeps a
:class:`~exchange.domain.register.Register` of the batch's producers in its view (loaded by
:func:`load`), so the register rules of exchange.domain.register see registrations accepted
earlier in the same batch. :func:`write` stores accepted events in their order of acceptance
(one ``register_seq`` for both tables: a revocation ends the versions recorded before it).

Errors: DatabaseUnavailable (transient) from the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exchange.adapters.postgres import Cursor
from exchange.domain.register import EntryKind, Register, RegisterChange, RegisterEntry, Revocation

_VERSIONS = (
    "SELECT seq, member, entry_id, kind, name, licence_no, valid_from, valid_until, zone, members"
    " FROM register_entries WHERE member = ANY(%s) ORDER BY seq"
)
_REVOCATIONS = (
    "SELECT seq, member, entry_id, effective, reason FROM register_revocations"
    " WHERE member = ANY(%s) ORDER BY seq"
)


def load(cur: Cursor, members: Sequence[str]) -> Register:
    """The register (every version and revocation) of ``members``."""
    register = Register()
    cur.execute(_VERSIONS, (list(members),))
    for seq, member, entry_id, kind, name, licence, start, end, zone, miners in cur.fetchall():
        entry = RegisterEntry(
            member, EntryKind(kind), entry_id, name, licence, start, end, zone, miners
        )
        register.add(entry, seq)
    cur.execute(_REVOCATIONS, (list(members),))
    for seq, member, entry_id, effective, reason in cur.fetchall():
        register.revoke(Revocation(member, entry_id, effective, reason), seq)
    return register


def write(cur: Cursor, changes: Sequence[RegisterChange]) -> None:
    """Store accepted register events in acceptance order (their ``seq`` is that order)."""
    for payload, event_id in changes:
        if isinstance(payload, RegisterEntry):
            cur.execute(
                "INSERT INTO register_entries (member, entry_id, kind, name, licence_no,"
                " valid_from, valid_until, zone, members, event_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (payload.member, payload.entry_id, payload.kind.value, payload.name,
                 payload.licence_no, payload.valid_from, payload.valid_until, payload.zone,
                 payload.members, event_id),
            )  # fmt: skip
        else:
            cur.execute(
                "INSERT INTO register_revocations (member, entry_id, effective, reason, event_id)"
                " VALUES (%s, %s, %s, %s, %s)",
                (payload.member, payload.entry_id, payload.effective, payload.reason, event_id),
            )


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
