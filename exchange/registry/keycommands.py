"""``kpx registry keys add|revoke|list``: the members' public keys, as the registry holds them.

Attached to ``kpx registry`` by the composition root. The logic and the SQL are in
exchange/registry/keys.py; this module only parses, calls and prints.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from typing import Any

import click

from exchange.adapters.postgres import connect
from exchange.errors import KpxError
from exchange.registry import keys as registry_keys
from exchange.wire.signing import parse_key_line


def _obj() -> Any:
    return click.get_current_context().obj


def _fail(exc: KpxError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.group("keys")
def keys() -> None:
    """Members' public signing keys: register, revoke, list (DESIGN §15)."""


@keys.command("add")
@click.option("--member", required=True, metavar="XX", help="The node the key belongs to.")
@click.option("--key", "line", required=True, metavar="LINE", help="From `kpx node init`.")
def keys_add(member: str, line: str) -> None:
    """Register a member's public key (the line its `kpx node init` printed)."""
    obj = _obj()
    conn = connect(obj.registry_dsn, application_name="kpx-registry-keys")
    try:
        key = parse_key_line(line)
        new = registry_keys.register_member_key(conn, obj.region, member.upper(), key)
    except KpxError as exc:
        _fail(exc)
    finally:
        conn.close()
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
def keys_revoke(member: str, key_id: str, revoked_from: Any, reason: str) -> None:
    """Revoke a compromised key from DATE; earlier events keep verifying."""
    obj = _obj()
    day: date = revoked_from.date()
    conn = connect(obj.registry_dsn, application_name="kpx-registry-keys")
    try:
        revoked = registry_keys.revoke(
            conn,
            obj.store,
            obj.signer(obj.region.code),
            obj.region,
            member=member.upper(),
            key_id=key_id,
            revoked_from=day,
            reason=reason,
        )
    except KpxError as exc:
        _fail(exc)
    finally:
        conn.close()
    for revoked_id in revoked:
        click.echo(f"revoked {revoked_id} from {day.isoformat()}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON (what the public pages publish).")
def keys_list(as_json: bool) -> None:
    """Every key: id, member, public key, valid from, revoked from."""
    conn = connect(_obj().registry_dsn, application_name="kpx-registry-keys")
    try:
        rows = registry_keys.list_keys(conn)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        revoked = f" revoked from {r['revoked_from']}" if r["revoked_from"] else ""
        click.echo(f"{r['member']:<4} {r['key_id']} valid from {r['valid_from']}{revoked}")
