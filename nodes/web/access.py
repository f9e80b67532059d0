"""People and accountability: users, bearer tokens, who is asking, and the audit trail.

Clerks draft; officers authorise drafts and issue, void and confirm; auditors read (DESIGN
§13). Tokens are for national systems, as officer or auditor. Every act is written to
``audit_log`` with the actor, their role, the time and the address it came from.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg2.extras

from exchange.adapters.postgres import Cursor
from exchange.errors import ConfigError
from exchange.web.security import hash_password, new_token, token_digest

USER_ROLES = ("clerk", "officer", "auditor")
TOKEN_ROLES = ("officer", "auditor")
_USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MIN_PASSWORD = 10  # characters: a passphrase, not a PIN


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a signed-in user or a national system's token."""

    kind: str  # "user" | "token"
    name: str
    role: str
    full_name: str = ""
    address: str = ""

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def can_draft(self) -> bool:
        return self.role in ("clerk", "officer")

    @property
    def can_act(self) -> bool:
        """Authorise, issue, void, confirm and declare: an officer's acts."""
        return self.role == "officer"


def add_user(cur: Cursor, username: str, role: str, password: str, full_name: str = "") -> bool:
    """Create a user, or reset an existing one's role, name and password; True when new.

    Raises ConfigError naming what is wrong with the user name, role or password.
    """
    if not _USERNAME.fullmatch(username):
        raise ConfigError(f"username must be 1-64 letters, digits or ._@-, got {username!r}")
    if role not in USER_ROLES:
        raise ConfigError(f"role must be one of {', '.join(USER_ROLES)}, got {role!r}")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD} characters")
    cur.execute(
        "INSERT INTO web_users (username, role, full_name, password_hash) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (username) DO UPDATE SET role = EXCLUDED.role, full_name = "
        "EXCLUDED.full_name, password_hash = EXCLUDED.password_hash, active = true, "
        "sessions_after = now() "
        "RETURNING (xmax = 0)",
        (username, role, full_name or username, hash_password(password)),
    )
    row = cur.fetchone()
    return bool(row and row[0])


def user_for_login(cur: Cursor, username: str) -> tuple[str, str, str] | None:
    """(password hash, role, full name) of an active user, or None."""
    cur.execute(
        "SELECT password_hash, role, full_name FROM web_users WHERE username = %s AND active",
        (username,),
    )
    row = cur.fetchone()
    return None if row is None else (str(row[0]), str(row[1]), str(row[2]))


def session_valid(cur: Cursor, username: str, role: str, signed_at: float) -> bool:
    """Whether a session signed in at ``signed_at`` is still honoured for ``username``: the
    user is active, has that role still, and has not signed out or been reset since."""
    cur.execute(
        "SELECT 1 FROM web_users WHERE username = %s AND active AND role = %s "
        "AND sessions_after < to_timestamp(%s)",
        (username, role, signed_at),
    )
    return cur.fetchone() is not None


def end_sessions(cur: Cursor, username: str) -> None:
    """Honour no session of ``username`` signed in until now (signing out ends them all)."""
    cur.execute("UPDATE web_users SET sessions_after = now() WHERE username = %s", (username,))


def full_names(cur: Cursor) -> dict[str, str]:
    cur.execute("SELECT username, full_name FROM web_users")
    return {str(u): str(n) for u, n in cur.fetchall()}


def create_token(cur: Cursor, name: str, role: str) -> str:
    """A new bearer token for a national system (returned once; its digest is stored)."""
    if role not in TOKEN_ROLES:
        raise ConfigError(f"role must be one of {', '.join(TOKEN_ROLES)}, got {role!r}")
    if not name.strip() or len(name) > 100:
        raise ConfigError("name must be 1-100 characters")
    token = new_token()
    cur.execute(
        "INSERT INTO api_tokens (name, role, digest) VALUES (%s, %s, %s)",
        (name, role, token_digest(token)),
    )
    return token


def revoke_tokens(cur: Cursor, name: str) -> int:
    """Revoke every live token called ``name``; the number revoked."""
    cur.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL", (name,)
    )
    return int(cur.rowcount)


def token_principal(cur: Cursor, token: str, address: str) -> Principal | None:
    """The principal of a live token, or None (unknown or revoked)."""
    cur.execute(
        "SELECT name, role FROM api_tokens WHERE digest = %s AND revoked_at IS NULL",
        (token_digest(token),),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return Principal("token", str(row[0]), str(row[1]), str(row[0]), address)


def audit(
    cur: Cursor, who: Principal | None, action: str, subject: str = "", detail: str = ""
) -> None:
    """Record one act (``who`` None: an anonymous attempt, such as a failed sign-in)."""
    cur.execute(
        "INSERT INTO audit_log (actor, role, address, action, subject, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (
            who.actor if who else "anonymous",
            who.role if who else "",
            who.address if who else "",
            action,
            subject,
            detail[:2000],
        ),
    )


def audit_many(cur: Cursor, rows: list[tuple[Principal, str, str, str]]) -> None:
    """Record many acts of one request (principal, action, subject, detail) in one statement."""
    if not rows:
        return
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO audit_log (actor, role, address, action, subject, detail) VALUES %s",
        [(p.actor, p.role, p.address, a, s, d[:2000]) for p, a, s, d in rows],
        page_size=500,
    )


def audit_trail(cur: Cursor, subjects: list[str]) -> list[dict[str, Any]]:
    """Every recorded act about ``subjects``, oldest first."""
    cur.execute(
        "SELECT at, actor, role, address, action, subject, detail FROM audit_log "
        "WHERE subject = ANY(%s) ORDER BY audit_id",
        (subjects,),
    )
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def audit_export(cur: Cursor, limit: int = 100_000) -> list[tuple[Any, ...]]:
    cur.execute(
        "SELECT audit_id, at, actor, role, address, action, subject, detail FROM audit_log "
        "ORDER BY audit_id LIMIT %s",
        (limit,),
    )
    return list(cur.fetchall())


def session_secret(cur: Cursor) -> bytes:
    """The key that signs session cookies, made on first use and kept in the database."""
    cur.execute(
        "INSERT INTO web_secret (id, secret) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
        (secrets.token_bytes(32),),
    )
    cur.execute("SELECT secret FROM web_secret WHERE id = 1")
    row = cur.fetchone()
    assert row is not None
    return bytes(row[0])
