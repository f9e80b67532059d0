"""What ``kpx demo`` shows of the registry portal: a ready console user and the URLs to open.

The demo region is rebuilt at every run, so its console user gets a fresh random password,
set through ``kpx registry users add`` (the command an operator runs) and printed once.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Mapping

from exchange.adapters import postgres

USERNAME = "demo-admin"


def ready_user(kpx: list[str], env: Mapping[str, str]) -> tuple[str, str]:
    """Create (or reset) the demo's admin user; its name and password. Raises RuntimeError."""
    password = secrets.token_urlsafe(12)
    done = subprocess.run(
        [*kpx, "registry", "users", "add", "--username", USERNAME, "--role", "admin"],
        input=password + "\n", capture_output=True, text=True, env=dict(env), timeout=60,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"kpx registry users add failed: {done.stderr.strip()}")
    return USERNAME, password


def sample_certificate(registry_dsn: str) -> str | None:
    """One certificate the registry holds as ISSUED (valid to show), else any, else None."""
    conn = postgres.connect(registry_dsn, application_name="kpx-demo-portal")
    try:
        rows = postgres.fetch_all(
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
    hint = [
        "                  (the simulated trade is dated in the past, so most of it has expired:",
        "                  issue one at a node web app below to see VALID on its printed QR code)",
    ]
    return [
        f"portal            {base}/",
        f"  verification    {verify}",
        *(hint if certificate_id else []),
        f"  statistics      {base}/statistics",
        f"  the log         {base}/log  ({base}/log/checkpoint)",
        f"  console         {base}/console  (user {user[0]}, password {user[1]})",
    ]
