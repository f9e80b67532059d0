"""``kpx registry log key|checkpoint|proof|consistency|verify`` exactly as DESIGN §12 says.

Attached to the ``registry`` group by the composition root. Exit status: 0 done, 1 the log
does not verify or the thing asked for does not exist (one ``error:`` line on stderr).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from exchange.adapters.postgres import Connection, connect
from exchange.errors import BadProof, LogError, NotFound
from exchange.registry import log as registry_log
from exchange.registry import logcheck
from exchange.tlog import checkpoint


def _obj() -> Any:
    return click.get_current_context().obj


@contextmanager
def _db() -> Iterator[Connection]:
    conn = connect(_obj().registry_dsn, application_name="kpx-registry-log")
    try:
        yield conn
    finally:
        conn.close()


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.group("log")
def log_group() -> None:
    """The registry's tamper-evident log: key, checkpoints, proofs, verification."""


@log_group.command("key")
def key() -> None:
    """Print the log's verifier key, <name>+<8 hex key id>+<base64(0x01 ‖ key)>."""
    click.echo(str(registry_log.load_key(_obj().keys_dir).verifier))


@log_group.command("checkpoint")
def checkpoint_() -> None:
    """Print the latest checkpoint note, cosignatures included."""
    with _db() as conn:
        try:
            click.echo(registry_log.latest_checkpoint_note(conn), nl=False)
        except NotFound as exc:
            _fail(exc)


@log_group.command("proof")
@click.argument("certificate_id", required=False)
@click.option("--event", "event_id", metavar="UUID", help="Any accepted event instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only format).")
def proof_(certificate_id: str | None, event_id: str | None, as_json: bool) -> None:
    """Inclusion proof of a certificate's CertificateIssued (or --event) in the latest tree."""
    del as_json
    if (certificate_id is None) == (event_id is None):
        raise click.UsageError("give CERTIFICATE_ID or --event UUID")
    with _db() as conn:
        try:
            if event_id is None:
                assert certificate_id is not None
                event_id = registry_log.issuance_event(conn, certificate_id)
            click.echo(json.dumps(registry_log.inclusion_proof(conn, event_id), indent=2))
        except (NotFound, LogError) as exc:
            _fail(exc)


@log_group.command("consistency")
@click.argument("old", type=click.IntRange(min=0))
@click.argument("new", type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only format).")
def consistency(old: int, new: int, as_json: bool) -> None:
    """Consistency proof from tree size OLD to NEW (RFC 9162 §2.1.4)."""
    del as_json
    with _db() as conn:
        try:
            click.echo(json.dumps(registry_log.consistency_proof(conn, old, new), indent=2))
        except (NotFound, BadProof) as exc:
            _fail(exc)


@log_group.command("verify")
def verify() -> None:
    """Recompute the tree from storage; exit 1 unless it matches every signed checkpoint."""
    rt = _obj()
    signer = registry_log.load_key(rt.keys_dir)
    with _db() as conn:
        report = logcheck.verify(conn, signer.verifier, checkpoint.origin_for(rt.region.code))
    for problem in report.problems:
        click.echo(problem, err=True)
    if not report.ok:
        if report.first_bad_index is not None:
            click.echo(f"first bad leaf index: {report.first_bad_index}", err=True)
        click.echo(f"log does NOT verify: {len(report.problems)} problem(s)")
        sys.exit(1)
    click.echo(f"log verifies: {report.leaves} leaves, {report.checkpoints} checkpoints")
