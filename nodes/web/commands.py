"""``kpx node serve``, ``kpx node users add``, ``kpx node tokens create|revoke`` (DESIGN §13)."""

from __future__ import annotations

import sys

import click

from exchange.adapters import postgres
from exchange.app.runtime import Runtime, current_runtime
from exchange.errors import ConfigError
from exchange.messaging.outbox import OutboxWriter
from nodes.keys import current_signer
from nodes.operations import Node
from nodes.service import migrate
from nodes.web import access
from nodes.web.context import NodeWeb
from nodes.web.db import Pool

DEFAULT_PORT = 8410  # + the node's position in the region file

member_option = click.option(
    "--member", required=True, metavar="XX", help="The member's or partner's participant code."
)


def _rt() -> Runtime:
    return current_runtime()


def _in_node(code: str, work: object) -> object:
    rt = _rt()
    dsn = rt.node_dsn(code)
    migrate(dsn)
    conn = postgres.connect(dsn)
    try:
        with postgres.transaction(conn) as cur:
            return work(cur)  # type: ignore[operator]
    finally:
        conn.close()


def node_web(rt: Runtime, code: str, *, allow_self_authorise: bool = False) -> NodeWeb:
    """The node's context for the web app (migrates its database first)."""
    dsn = rt.node_dsn(code)
    migrate(dsn)
    # The current key, a rotated one once the registry accepted it (nodes/keys.py).
    node = Node(code, rt.region, OutboxWriter(rt.store, current_signer(rt, code)))
    # The QR code's base URL is the registry's public one (`[registry] public_url`, DESIGN §13).
    return NodeWeb(code, rt.region, node, Pool(dsn), rt.region.public_url, allow_self_authorise)


@click.command("serve")
@member_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="Default: 8410 + the node's position.")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Serve HTTPS with this certificate (PEM) and --tls-key.",
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option(
    "--allow-self-authorise",
    is_flag=True,
    help="Let an officer authorise a draft they prepared (no four eyes).",
)
def serve(
    member: str,
    host: str,
    port: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    allow_self_authorise: bool,
) -> None:
    """Serve the node's web app and HTTP API until SIGTERM."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    from exchange.web.app import serve as serve_app  # the web stack loads only to serve
    from nodes.web.app import create_app

    rt = _rt()
    code = member.upper()
    port = DEFAULT_PORT + rt.region.member_index(code) if port is None else port
    nw = node_web(rt, code, allow_self_authorise=allow_self_authorise)
    scheme = "https" if tls_cert else "http"
    click.echo(f"kpx node {code}: {scheme}://{host}:{port}/", err=True)
    serve_app(create_app(nw), host, port, certfile=tls_cert, keyfile=tls_key)


@click.group("users")
def users() -> None:
    """The people who use the node's web app."""


@users.command("add")
@member_option
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice(access.USER_ROLES))
@click.option("--full-name", default="", help="As printed on certificates an officer authorises.")
def users_add(member: str, username: str, role: str, full_name: str) -> None:
    """Add a user (or reset one); the password is read from stdin."""
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        created = _in_node(
            member.upper(), lambda cur: access.add_user(cur, username, role, password, full_name)
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"{'added' if created else 'updated'} {role} {username} on node {member.upper()}")


@click.group("tokens")
def tokens() -> None:
    """Bearer tokens for national systems that use the node's API."""


@tokens.command("create")
@member_option
@click.option("--name", required=True, help="Which system holds it (kept with the token).")
@click.option("--role", required=True, type=click.Choice(access.TOKEN_ROLES))
def tokens_create(member: str, name: str, role: str) -> None:
    """Print a new bearer token, once (only its digest is stored)."""
    try:
        token = _in_node(member.upper(), lambda cur: access.create_token(cur, name, role))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(token)


@tokens.command("revoke")
@member_option
@click.option("--name", required=True)
def tokens_revoke(member: str, name: str) -> None:
    """Revoke every live token of that name."""
    count = _in_node(member.upper(), lambda cur: access.revoke_tokens(cur, name))
    click.echo(f"revoked {count} token(s) named {name}")
