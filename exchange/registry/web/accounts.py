"""Console users (argon2id, the foundation's hasher) and the audit of every console act.

Roles: ``analyst`` reads and resolves discrepancies; ``admin`` also suspends and reinstates
participants and re-injects dead letters. The session itself is the foundation's signed
cookie (exchange/web/sessions.py); every console request looks the user up again, so a
disabled user or a changed role takes effect at once, and a sign-out or a reset ends every
session signed before it (``sessions_after``, checked through the foundation's session_check).

Errors: ConfigError for a bad username, role or a too-short password (names the field).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from exchange.adapters.postgres import Connection, Cursor, fetch_all, transaction
from exchange.errors import ConfigError
from exchange.web.security import hash_password

MIN_PASSWORD = 12
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,39}")


class Role(StrEnum):
    ANALYST = "analyst"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class User:
    """A logged-in console user."""

    username: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def add_user(conn: Connection, username: str, role: str, password: str) -> None:
    """Create or replace (new role, new password) a console user; raises ConfigError."""
    if not _USERNAME.fullmatch(username):
        raise ConfigError(f"--username must be 2-40 of a-z 0-9 . _ -, got {username!r}")
    try:
        chosen = Role(role)
    except ValueError:
        raise ConfigError(f"--role must be analyst or admin, got {role!r}") from None
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"password must have at least {MIN_PASSWORD} characters")
    with transaction(conn) as cur:
        cur.execute(
            "INSERT INTO console_users (username, role, password_hash) VALUES (%s, %s, %s)"
            " ON CONFLICT (username) DO UPDATE SET role = EXCLUDED.role,"
            " password_hash = EXCLUDED.password_hash, disabled_at = NULL,"
            " sessions_after = now()",
            (username, chosen.value, hash_password(password)),
        )
        record(cur, "cli", "users add", username, f"role {chosen.value}")


def stored_hash(conn: Connection, username: str) -> str | None:
    """The password hash of an enabled user, or None."""
    rows = fetch_all(
        conn,
        "SELECT password_hash FROM console_users WHERE username = %s AND disabled_at IS NULL",
        (username,),
    )
    return str(rows[0]["password_hash"]) if rows else None


def user(conn: Connection, username: str) -> User | None:
    """The enabled user of that name with their current role, or None."""
    rows = fetch_all(
        conn,
        "SELECT username, role FROM console_users WHERE username = %s AND disabled_at IS NULL",
        (username,),
    )
    return User(rows[0]["username"], Role(rows[0]["role"])) if rows else None


def session_valid(conn: Connection, username: str, signed_at: float) -> bool:
    """Whether a session signed at ``signed_at`` (epoch seconds) is still honoured: the user
    is enabled and neither signed out nor was reset since."""
    rows = fetch_all(
        conn,
        "SELECT 1 FROM console_users WHERE username = %s AND disabled_at IS NULL"
        " AND (sessions_after IS NULL OR extract(epoch FROM sessions_after) < %s)",
        (username, signed_at),
    )
    return bool(rows)


def sign_out(conn: Connection, username: str) -> None:
    """End every session of ``username`` (audited)."""
    with transaction(conn) as cur:
        cur.execute(
            "UPDATE console_users SET sessions_after = now() WHERE username = %s", (username,)
        )
        record(cur, username, "logout", "", "every session ended")


def audited(conn: Connection, actor: str, action: str, target: str = "", detail: str = "") -> None:
    """Record one act in its own transaction (login, logout, a failed login)."""
    with transaction(conn) as cur:
        record(cur, actor, action, target, detail)


def record(cur: Cursor, actor: str, action: str, target: str, detail: str) -> None:
    """Write one audit row in the caller's transaction (with the act it records)."""
    cur.execute(
        "INSERT INTO console_audit (actor, action, target, detail) VALUES (%s, %s, %s, %s)",
        (actor, action, target, detail),
    )


def audit(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    """The latest console acts, newest first."""
    return fetch_all(
        conn,
        "SELECT id, at, actor, action, target, detail FROM console_audit ORDER BY id DESC LIMIT %s",
        (limit,),
    )
