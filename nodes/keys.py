"""``kpx node init`` and ``kpx node keys …``: the member's own key, kept at the member's site.

Rotation (DESIGN §15): ``rotate`` makes the next key in the node folder's ``pending/`` and
commits a ``KeyRotated`` event — signed with the current key — to the node's outbox, like any
operation. The node keeps signing with the current key until the registry has *accepted* the
announcement (the inbox records that answer in ``node_events``); the next command that signs
(:func:`current_signer`) then moves the new key out of ``pending/`` and uses it. So the
registry holds the new public key, committed, before any event signed with it exists, and
every verifier that meets the new key id finds it when it refreshes from the registry's key
table: nothing is rejected, dead-lettered or lost by a rotation. The old key stays on disk and
in the registry: it keeps verifying history.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from exchange.adapters import postgres
from exchange.app import provision
from exchange.app.runtime import Runtime, current_runtime
from exchange.domain.keyevents import KeyRotation
from exchange.errors import KeyFileError
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.wire import topology
from exchange.wire.keyring import RefreshingKeyring
from exchange.wire.signing import (
    PRIVATE_SUFFIX,
    PUBLIC_SUFFIX,
    Keyring,
    Signer,
    generate_key,
    key_line,
    latest_signer,
    load_signer,
    private_dir,
    save_key,
)
from nodes import keystore, store
from nodes.service import migrate

log = logging.getLogger(__name__)

member_option = click.option(
    "--member", "member", required=True, metavar="XX", help="The node's participant code."
)


def _rt() -> Runtime:
    return current_runtime()


def pending_dir(rt: Runtime, code: str) -> Path:
    """Where a rotated key waits for the registry's acceptance."""
    return rt.node_keys_dir(code) / "pending"


def current_signer(rt: Runtime, code: str) -> Signer:
    """The key to sign with now: promote pending keys the registry accepted, then the newest.

    Raises KeyFileError when the node has no usable key (run ``kpx node init``).
    """
    folder = pending_dir(rt, code)
    if folder.is_dir() and any(folder.glob(f"*{PRIVATE_SUFFIX}")):
        for key_id in _accepted_rotations(rt, code):
            _promote(rt.node_keys_dir(code), folder, key_id)
    return latest_signer(rt.node_keys_dir(code), code)


def _accepted_rotations(rt: Runtime, code: str) -> list[str]:
    conn = postgres.connect(rt.node_dsn(code), application_name=f"kpx-keys-{code}")
    try:
        rows = postgres.fetch_all(
            conn,
            "SELECT subject FROM node_events WHERE event_type = 'KeyRotated' "
            "AND registry_state = 'accepted' ORDER BY sequence",
        )
    finally:
        conn.close()
    return [str(r["subject"]) for r in rows]


def _promote(keys: Path, pending: Path, key_id: str) -> None:
    for suffix in (PUBLIC_SUFFIX, PRIVATE_SUFFIX):  # private last: only a whole pair is used
        source = pending / f"{key_id}{suffix}"
        if source.exists():
            os.replace(source, keys / source.name)
            log.info("key %s accepted by the registry: signing with it from now on", key_id)


def rotate(rt: Runtime, code: str) -> tuple[Signer, str]:
    """Make the next key and commit its KeyRotated announcement; return (key, event id)."""
    current = current_signer(rt, code)
    new = generate_key(code)
    save_key(new, private_dir(pending_dir(rt, code)))
    announcement = KeyRotation(
        code, new.key_id, new.verify_key.public_key, current.key_id, new.created_at
    )
    writer = OutboxWriter(rt.store, current)
    migrate(rt.node_dsn(code))
    conn = postgres.connect(rt.node_dsn(code), application_name=f"kpx-keys-{code}")
    try:
        with postgres.transaction(conn) as cur:
            pending = Pending(
                "KeyRotated", announcement.to_record(), topology.EVENTS, f"{code}.KeyRotated"
            )
            appended = writer.append(cur, pending)
            store.record_events(
                cur, [(appended.event_id, appended.sequence, "KeyRotated", new.key_id)]
            )
    finally:
        conn.close()
    return new, appended.event_id


def node_keyring(rt: Runtime, code: str) -> RefreshingKeyring:
    """What a node verifies with: its own keys and the registry's it trusts (refreshed)."""
    folders = [rt.node_keys_dir(code), Path(provision.trusted_dir(rt, code))]

    def load() -> Keyring:
        ring = Keyring()
        for folder in folders:
            if folder.is_dir():
                ring.load_dir(folder)
        return ring

    return RefreshingKeyring(load)


@click.command("init")
@member_option
def node_init(member: str) -> None:
    """At the member's site: database, migrations and Ed25519 key in the node's own folder.

    Prints the public key line to give the regional body (`kpx registry keys add`).
    """
    rt, code = _rt(), member.upper()
    key = provision.init_node_site(rt, code, migrate)
    click.echo(f"node {code} ready: keys in {rt.node_keys_dir(code)}")
    click.echo(key_line(key))


@click.group("keys")
def node_keys() -> None:
    """The node's signing keys."""


@node_keys.command("rotate")
@member_option
def keys_rotate(member: str) -> None:
    """A new key, announced by a KeyRotated event signed with the current one."""
    rt, code = _rt(), member.upper()
    new, event_id = rotate(rt, code)
    click.echo(f"announced key {new.key_id} (event {event_id}); the node signs with it once")
    click.echo("the registry has accepted it (`kpx node run` delivers the announcement)")
    click.echo(key_line(new.verify_key))


@node_keys.command("show")
@member_option
def keys_show(member: str) -> None:
    """The key the node signs with now, and any announced key still pending."""
    rt, code = _rt(), member.upper()
    click.echo(f"current {key_line(current_signer(rt, code).verify_key)}")
    folder = pending_dir(rt, code)
    for path in sorted(folder.glob(f"*{PRIVATE_SUFFIX}")) if folder.is_dir() else []:
        try:
            click.echo(f"pending {key_line(load_signer(path).verify_key)}")
        except KeyFileError as exc:
            click.echo(f"pending (unreadable) {exc}", err=True)
    conn = postgres.connect(rt.node_dsn(code), application_name=f"kpx-keys-{code}")
    try:
        with postgres.transaction(conn) as cur:
            revoked = keystore.revocations(cur)
    finally:
        conn.close()
    for r in revoked:  # the registry's KeyRevoked notices
        click.echo(f"revoked {r['key_id']} from {r['revoked_from']}: {r['reason']}")
