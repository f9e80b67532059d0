"""This member's register at its node (DESIGN §14): the rows ``nodes/sql/004_register.sql`` keeps.

The same two tables as the registry's (versions and revocations, one ``register_seq`` for both:
a revocation ends the versions recorded before it), read into the pure
:class:`~exchange.domain.register.Register` the node's rules check against.

Errors: DatabaseUnavailable (transient) from the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

from exchange.adapters.postgres import Cursor
from exchange.domain.register import EntryKind, Register, RegisterChange, RegisterEntry, Revocation


def load(cur: Cursor, member: str) -> Register:
    """The member's register: every version and revocation, in recording order."""
    register = Register()
    cur.execute(
        "SELECT seq, member, entry_id, kind, name, licence_no, valid_from, valid_until, zone,"
        " members FROM register_entries WHERE member = %s ORDER BY seq",
        (member,),
    )
    for seq, code, entry_id, kind, name, licence, start, end, zone, miners in cur.fetchall():
        entry = RegisterEntry(
            code, EntryKind(kind), entry_id, name, licence, start, end, zone, miners
        )
        register.add(entry, seq)
    cur.execute(
        "SELECT seq, entry_id, effective, reason FROM register_revocations WHERE member = %s"
        " ORDER BY seq",
        (member,),
    )
    for seq, entry_id, effective, reason in cur.fetchall():
        register.revoke(Revocation(member, entry_id, effective, reason), seq)
    return register


def write(cur: Cursor, changes: Sequence[RegisterChange]) -> None:
    """Store register operations in the order they were applied."""
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
