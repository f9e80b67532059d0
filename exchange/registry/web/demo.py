"""What ``kpx demo`` needs of the portal: a ready console user and the URLs to open.

The demo region is rebuilt at every run, so its console user gets a fresh random password
that is printed once with the URLs.
"""

from __future__ import annotations

import secrets
from typing import Any

from exchange.adapters.postgres import connect, fetch_all
from exchange.registry.web import accounts

USERNAME = "demo-admin"


def ready_user(registry_dsn: str) -> tuple[str, str]:
    """Create (or reset) the demo's admin user; return its name and password."""
    password = secrets.token_urlsafe(12)
    conn = connect(registry_dsn, application_name="kpx-demo-portal")
    try:
        accounts.add_user(conn, USERNAME, "admin", password)
    finally:
        conn.close()
    return USERNAME, password


def sample_certificate(registry_dsn: str) -> str | None:
    """One certificate the registry holds as ISSUED (valid to show), else any, else None."""
    conn = connect(registry_dsn, application_name="kpx-demo-portal")
    try:
        rows: list[dict[str, Any]] = fetch_all(
            conn,
            "SELECT certificate_id FROM certificates ORDER BY (state = 'ISSUED') DESC,"
            " date_of_expiry DESC LIMIT 1",
        )
    finally:
        conn.close()
    return str(rows[0]["certificate_id"]) if rows else None


def lines(base: str, user: tuple[str, str], certificate_id: str | None) -> list[str]:
    """The portal's URLs, one audience per line."""
    verify = f"{base}/verify/{certificate_id}" if certificate_id else f"{base}/verify"
    return [
        f"portal            {base}/",
        f"  verification    {verify}",
        f"  statistics      {base}/statistics",
        f"  the log         {base}/log  ({base}/log/checkpoint)",
        f"  console         {base}/console  (user {user[0]}, password {user[1]})",
    ]
