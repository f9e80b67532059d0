"""The registry's key table (DESIGN §15): add, learn from KeyRotated, revoke, list, load.

The table holds public keys only. A key gets in three ways: ``kpx registry keys add`` (the
regional body registers a member's first key from the line ``kpx node init`` printed), a
member's accepted ``KeyRotated`` event (written in the same transaction that accepts it, so a
verifier that refreshes from this table after it meets the new key id always finds it), or
``kpx region init`` doing the first for every node on a single machine.

Revocation: events a key signed on or after ``revoked_from`` (by their signed
``produced_at``) are refused BAD_SIGNATURE; earlier ones keep verifying. A thief holding the
key could date an event earlier, so a revocation also takes every key *announced* with the
revoked key on or after that day (a thief's rotation to a key of its own), and the member
is told in a ``KeyRevoked`` notice through the registry's outbox.

Errors: Refusal(UNKNOWN_PRODUCER) for a member that runs no node, Refusal(NOT_ALLOWED) for a
key id registered to someone else or with another key, NotFound for an unknown key id;
database errors are translated by the caller's ``transaction``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import psycopg2

from exchange.adapters.postgres import Connection, Cursor, fetch_all, transaction
from exchange.domain.keyevents import KeyRevocation
from exchange.domain.region import Region
from exchange.errors import NotFound, Refusal
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.registry.changes import KeyAnnounced
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.signing import Keyring, Signer, VerifyKey, key_line


def add_key(cur: Cursor, key: VerifyKey) -> bool:
    """Register ``key``; True when new. Refusal(NOT_ALLOWED) if its id means another key."""
    cur.execute(
        "INSERT INTO authority_keys (key_id, producer, public_key, valid_from) "
        "VALUES (%s, %s, %s, now()) ON CONFLICT (key_id) DO NOTHING",
        (key.key_id, key.producer, psycopg2.Binary(key.public_key)),
    )
    if cur.rowcount:
        return True
    cur.execute("SELECT producer, public_key FROM authority_keys WHERE key_id = %s", (key.key_id,))
    row = cur.fetchone()
    if row is None or (row[0], bytes(row[1])) != (key.producer, key.public_key):
        raise Refusal("NOT_ALLOWED", f"key id {key.key_id} is registered with another key")
    return False


def register_member_key(conn: Connection, region: Region, member: str, key: VerifyKey) -> bool:
    """``kpx registry keys add``: a node's public key; True when new (see add_key)."""
    if member not in region.node_codes or key.producer != member:
        raise Refusal(
            "UNKNOWN_PRODUCER",
            f"key {key.key_id} is for {key.producer}, and {member} must be a node of "
            f"{region.code} (one of {', '.join(region.node_codes)})",
        )
    with transaction(conn) as cur:
        return add_key(cur, key)


def write_rotations(cur: Cursor, announced: Sequence[KeyAnnounced]) -> None:
    """The keys of accepted KeyRotated events (see changes.KeyAnnounced)."""
    for a in announced:
        rotation = a.rotation
        cur.execute(
            "INSERT INTO authority_keys (key_id, producer, public_key, valid_from, "
            "announced_by, announced_with, announced_at) VALUES (%s, %s, %s, now(), %s, %s, %s) "
            "ON CONFLICT (key_id) DO NOTHING",
            (
                rotation.key_id,
                rotation.participant,
                psycopg2.Binary(rotation.public_key),
                a.event_id,
                rotation.previous_key_id,
                a.produced_at,
            ),
        )


def revoke(
    conn: Connection,
    schemas: SchemaStore,
    signer: Signer,
    region: Region,
    *,
    member: str,
    key_id: str,
    revoked_from: date,
    reason: str,
) -> list[str]:
    """Revoke ``key_id`` of ``member`` from ``revoked_from``; return every key id revoked.

    One transaction: the key, the keys announced with it from that day on, and a KeyRevoked
    notice per revoked key to the member's queue. Raises NotFound, Refusal(NOT_ALLOWED).
    """
    writer = OutboxWriter(schemas, signer, relay=region.code)
    with transaction(conn) as cur:
        cur.execute("SELECT producer FROM authority_keys WHERE key_id = %s", (key_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFound(f"no key {key_id!r} is registered")
        if row[0] != member:
            raise Refusal("NOT_ALLOWED", f"key {key_id} belongs to {row[0]}, not {member}")
        revoked = _revoke_chain(cur, key_id, revoked_from, reason)
        if member in region.node_codes:
            notices = [
                Pending(
                    "KeyRevoked",
                    KeyRevocation(member, k, revoked_from, reason).to_record(),
                    topology.NOTIFY,
                    f"{member}.KeyRevoked",
                )
                for k in revoked
            ]
            writer.append_many(cur, notices)
    return revoked


def _revoke_chain(cur: Cursor, key_id: str, revoked_from: date, reason: str) -> list[str]:
    """Revoke ``key_id`` and, transitively, keys it announced on or after ``revoked_from``."""
    revoked: list[str] = []
    todo = [key_id]
    while todo:
        current = todo.pop()
        cur.execute(
            "UPDATE authority_keys k SET revoked_from = LEAST(COALESCE(revoked_from, %s), %s), "
            "revoked_reason = %s, revoked_at = now(), revoked_above_sequence = COALESCE("
            "revoked_above_sequence, (SELECT high_water FROM producer_progress p "
            "WHERE p.producer = k.producer), 0) WHERE key_id = %s",
            (revoked_from, revoked_from, reason, current),
        )
        revoked.append(current)
        cur.execute(
            "SELECT key_id FROM authority_keys WHERE announced_with = %s "
            "AND (announced_at AT TIME ZONE 'UTC')::date >= %s",
            (current, revoked_from),
        )
        todo += [r[0] for r in cur.fetchall() if r[0] not in revoked]
    return revoked


def list_keys(conn: Connection) -> list[dict[str, Any]]:
    """Every key: id, member, public key line, valid from, revoked from (DESIGN §15)."""
    rows = fetch_all(
        conn,
        "SELECT key_id, producer, public_key, valid_from, registered_at, revoked_from, "
        "revoked_above_sequence, revoked_reason, announced_by::text FROM authority_keys "
        "ORDER BY producer, valid_from",
    )
    out = []
    for r in rows:
        key = _verify_key(r)
        out.append(
            {
                "key_id": key.key_id,
                "member": key.producer,
                "public_key": key_line(key).split(" ", 1)[1],
                "valid_from": (r["valid_from"] or r["registered_at"]).isoformat(),
                "revoked_from": r["revoked_from"].isoformat() if r["revoked_from"] else None,
                "revoked_reason": r["revoked_reason"],
                "announced_by_event": r["announced_by"],
            }
        )
    return out


def load_keyring(conn: Connection) -> Keyring:
    """Every registered key with its revocation (retired keys still verify history)."""
    rows = fetch_all(
        conn,
        "SELECT key_id, producer, public_key, valid_from, registered_at, revoked_from, "
        "revoked_above_sequence FROM authority_keys",
    )
    return Keyring([_verify_key(r) for r in rows])


def _verify_key(r: dict[str, Any]) -> VerifyKey:
    return VerifyKey(
        r["key_id"],
        r["producer"],
        bytes(r["public_key"]),
        r["valid_from"] or r["registered_at"],
        revoked_from=r["revoked_from"],
        revoked_above=r["revoked_above_sequence"],
    )
