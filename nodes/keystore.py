"""The node's record of its revoked keys (the registry's KeyRevoked notices, DESIGN §15).

Every function takes a cursor inside the caller's transaction; errors are psycopg2's,
translated by the caller's ``exchange.adapters.postgres.transaction``.
"""

from __future__ import annotations

from typing import Any

from exchange.adapters.postgres import Cursor
from exchange.domain.keyevents import KeyRevocation


def record_revocation(cur: Cursor, notice: KeyRevocation) -> None:
    """Remember that ``notice.key_id`` is revoked; the earliest day wins (a notice again is
    harmless)."""
    cur.execute(
        "INSERT INTO key_revocations (key_id, revoked_from, reason) VALUES (%s, %s, %s) "
        "ON CONFLICT (key_id) DO UPDATE SET revoked_from = LEAST(key_revocations.revoked_from, "
        "EXCLUDED.revoked_from), reason = EXCLUDED.reason",
        (notice.key_id, notice.revoked_from, notice.reason),
    )


def revocations(cur: Cursor) -> list[dict[str, Any]]:
    """Every revoked key of this node, oldest first."""
    cur.execute(
        "SELECT key_id, revoked_from, reason, received_at FROM key_revocations "
        "ORDER BY revoked_from, key_id"
    )
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
