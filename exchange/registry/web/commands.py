"""``kpx registry serve`` and ``kpx registry users add`` (DESIGN §13).

Attached to the ``registry`` group by the composition root. Each receives the runtime
(exchange/app/runtime.py) through ``@pass_runtime``; kpx errors go to the command line's error
boundary (exchange/app/exits.py).
"""

from __future__ import annotations

import os
import secrets
import sys
from contextlib import suppress

import click

from exchange.adapters.postgres import connect
from exchange.adapters.signals import stop_on_signals
from exchange.app.runtime import Runtime, pass_runtime
from exchange.reconciler import service as reconciler_service
from exchange.registry import service as registry_service
from exchange.registry.web import accounts
from exchange.registry.web.app import build
from exchange.registry.web.lookups import Lookups
from exchange.registry.web.portal import Limits, Portal
from exchange.registry.web.reads import PublicPool
from exchange.registry.web.verifycache import DEFAULT_SIZE
from exchange.wire import topology

DEFAULT_PORT = 8400


def prepare(rt: Runtime) -> None:
    """Migrations the portal reads (registry, console, reconciler's schema); idempotent."""
    conn = connect(rt.registry_dsn, application_name="kpx-registry-serve")
    try:
        registry_service.prepare_database(conn, rt.region)
    finally:
        conn.close()
    reconciler_service.prepare(rt.registry_dsn)


def portal_for(
    rt: Runtime,
    limits: Limits | None = None,
    public_connections: int = 4,
    cache_size: int = DEFAULT_SIZE,
) -> Portal:
    """The portal's shared state on the runtime's region and database."""
    user = topology.registry_user(rt.region.vhost)
    return Portal(
        region=rt.region,
        schemas=rt.store,
        signer=lambda: rt.signer(rt.region.code),
        amqp_url=lambda: rt.amqp_url(user),
        broker_user=user,
        lookups=Lookups(rt.registry_dsn, public_connections, cache_size=cache_size),
        public=PublicPool(rt.registry_dsn, 2, read_only=True),
        work=PublicPool(rt.registry_dsn, 2, wait_seconds=10, statement_timeout_ms=30_000),
        limits=limits or Limits(),
    )


def session_secret(rt: Runtime) -> bytes:
    """The key that signs console sessions: 32 random bytes in the state directory (0600),
    made on first use, so sessions survive a restart and no two regions share one."""
    path = rt.settings.vhost_dir(rt.region.vhost) / "secrets" / "portal-session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
    key: bytes = path.read_bytes()
    return key


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
@click.option("--verify-rate", type=float, default=10.0, show_default=True,
              help="Verification lookups per second per client (bursts of 3x).")  # fmt: skip
@click.option("--public-connections", type=int, default=4, show_default=True,
              help="Database connections for verification (ingest never waits).")  # fmt: skip
@click.option("--verify-cache", type=click.IntRange(min=0), default=DEFAULT_SIZE, show_default=True,
              help="Certificates whose facts the verification cache holds (0: none).")  # fmt: skip
@pass_runtime
def serve(
    rt: Runtime,
    host: str,
    port: int,
    verify_rate: float,
    public_connections: int,
    verify_cache: int,
) -> None:
    """Public verification, published statistics, the log, and the regional console."""
    import uvicorn

    # uvicorn re-raises SIGTERM after its graceful shutdown; with this handler in place the
    # re-raised signal only sets an event, so serve exits 0 like every kpx service.
    stop_on_signals()
    prepare(rt)
    limits = Limits(verify_rate=verify_rate, verify_burst=verify_rate * 3)
    portal = portal_for(rt, limits, public_connections, verify_cache)
    app = build(portal, session_secret(rt))
    click.echo(f"kpx registry serve: http://{host}:{port}/ (public URL {rt.region.public_url})")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    finally:
        portal.lookups.close()
        portal.public.close()
        portal.work.close()


@click.group("users")
def users() -> None:
    """Console users of the regional body."""


@users.command("add")
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice(["analyst", "admin"]))
@pass_runtime
def users_add(rt: Runtime, username: str, role: str) -> None:
    """Create (or reset) a console user; the password is read from stdin."""
    password = sys.stdin.readline().rstrip("\r\n")
    prepare(rt)
    conn = connect(rt.registry_dsn, application_name="kpx-registry-users")
    try:
        accounts.add_user(conn, username, role, password)
    finally:
        conn.close()
    click.echo(f"console user {username} ({role}) ready")
