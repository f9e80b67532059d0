"""``kpx registry keys add|revoke|list``: the members' public keys, as the registry holds them.

Attached to ``kpx registry`` by the composition root (``COMMANDS`` in exchange/app/cli.py). The
logic and the SQL are in exchange/registry/keys.py; this module only parses, calls and prints.
Errors go to the command line's error boundary (exchange/app/exits.py): a refused key exits 1,
a malformed key line 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click

from exchange.adapters.postgres import Connection, connect
from exchange.app.runtime import Runtime, pass_runtime
from exchange.registry import keys as registry_keys
from exchange.wire.signing import parse_key_line


@contextmanager
def _registry_db(rt: Runtime) -> Iterator[Connection]:
    conn = connect(rt.registry_dsn, application_name="kpx-registry-keys")
    try:
        yield conn
    finally:
        conn.close()


@click.group("keys")
def keys() -> None:
    """Members' public signing keys: register, revoke, list (DESIGN §15)."""


@keys.command("add")
@click.option("--member", required=True, metavar="XX", help="The node the key belongs to.")
@click.option("--key", "line", required=True, metavar="LINE", help="From `kpx node init`.")
@pass_runtime
def keys_add(rt: Runtime, member: str, line: str) -> None:
    """Register a member's public key (the line its `kpx node init` printed)."""
    key = parse_key_line(line)
    with _registry_db(rt) as conn:
        new = registry_keys.register_member_key(conn, rt.region, member.upper(), key)
    click.echo(f"{'registered' if new else 'already registered'} {key.key_id} for {member.upper()}")


@keys.command("revoke")
@click.option("--member", required=True, metavar="XX")
@click.option("--key-id", required=True, metavar="ID")
@click.option(
    "--from",
    "revoked_from",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="First day (UTC) whose events signed with the key are refused BAD_SIGNATURE.",
)
@click.option("--reason", required=True)
@pass_runtime
def keys_revoke(rt: Runtime, member: str, key_id: str, revoked_from: datetime, reason: str) -> None:
    """Revoke a compromised key from DATE; earlier events keep verifying."""
    day = revoked_from.date()
    with _registry_db(rt) as conn:
        revoked = registry_keys.revoke(
            conn,
            rt.store,
            rt.signer(rt.region.code),
            rt.region,
            member=member.upper(),
            key_id=key_id,
            revoked_from=day,
            reason=reason,
        )
    for revoked_id in revoked:
        click.echo(f"revoked {revoked_id} from {day.isoformat()}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON (what the public pages publish).")
@pass_runtime
def keys_list(rt: Runtime, as_json: bool) -> None:
    """Every key: id, member, public key, valid from, revoked from."""
    with _registry_db(rt) as conn:
        rows = registry_keys.list_keys(conn)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        revoked = f" revoked from {r['revoked_from']}" if r["revoked_from"] else ""
        click.echo(f"{r['member']:<4} {r['key_id']} valid from {r['valid_from']}{revoked}")
