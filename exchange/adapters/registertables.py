"""The register's two tables, kept alike by the registry and by every node (DESIGN §14).

``register_entries`` (every version of an entry) and ``register_revocations`` share one
``register_seq``: a revocation ends the versions recorded before it, so reading both in
``seq`` order rebuilds the pure :class:`~exchange.domain.register.Register` exactly. The
registry's DDL (registry/sql/004) and the node's (nodes/sql/004) are the same tables; this
module is the one place that reads and writes them.

Errors: DatabaseUnavailable (transient) from the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """The register (every version and revocation, in recording order) of ``members``."""
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
    """Store register events in the order they were accepted (their ``seq`` is that order)."""
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
