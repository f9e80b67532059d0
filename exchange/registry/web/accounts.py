"""Console users (argon2id), their server-side sessions, and the audit of every console act.

A session cookie carries a random token; the database keeps only its SHA-256, with the
session's CSRF token and expiry. Roles: ``analyst`` reads and resolves discrepancies;
``admin`` also suspends and reinstates participants and re-injects dead letters.

Errors: ConfigError for a bad username, role or a too-short password (names the field).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from exchange.adapters.postgres import Connection, Cursor, fetch_all, transaction
from exchange.errors import ConfigError

SESSION_LIFETIME = timedelta(hours=8)
MIN_PASSWORD = 12
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,39}")
_HASHER = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong
# password and timing does not tell which names exist.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    ANALYST = "analyst"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class User:
    """A logged-in console user, and the CSRF token of their session."""

    username: str
    role: Role
    csrf_token: str

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
            " password_hash = EXCLUDED.password_hash, disabled_at = NULL",
            (username, chosen.value, _HASHER.hash(password)),
        )
        record(cur, "cli", "users add", username, f"role {chosen.value}")


def login(conn: Connection, username: str, password: str) -> str | None:
    """A new session token for a correct username and password, else None (audited)."""
    rows = fetch_all(
        conn,
        "SELECT password_hash FROM console_users WHERE username = %s AND disabled_at IS NULL",
        (username,),
    )
    stored = rows[0]["password_hash"] if rows else _DUMMY_HASH
    try:
        _HASHER.verify(stored, password)
        ok = bool(rows)
    except (VerificationError, InvalidHashError):
        ok = False
    with transaction(conn) as cur:
        record(cur, username[:40] or "?", "login" if ok else "login failed", "", "")
        if not ok:
            return None
        token = secrets.token_urlsafe(32)
        cur.execute(
            "INSERT INTO console_sessions (token_hash, username, csrf_token, expires_at)"
            " VALUES (%s, %s, %s, now() + %s)",
            (_digest(token), username, secrets.token_urlsafe(32), SESSION_LIFETIME),
        )
        cur.execute("DELETE FROM console_sessions WHERE expires_at < now()")
    return token


def session_user(conn: Connection, token: str) -> User | None:
    """The user of a live session token, or None."""
    rows = fetch_all(
        conn,
        "SELECT u.username, u.role, s.csrf_token FROM console_sessions s"
        " JOIN console_users u USING (username)"
        " WHERE s.token_hash = %s AND s.expires_at > now() AND u.disabled_at IS NULL",
        (_digest(token),),
    )
    if not rows:
        return None
    return User(rows[0]["username"], Role(rows[0]["role"]), rows[0]["csrf_token"])


def logout(conn: Connection, token: str, username: str) -> None:
    """End a session (audited)."""
    with transaction(conn) as cur:
        cur.execute("DELETE FROM console_sessions WHERE token_hash = %s", (_digest(token),))
        record(cur, username, "logout", "", "")


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


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
