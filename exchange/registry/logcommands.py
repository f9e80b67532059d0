"""``kpx registry log key|checkpoint|proof|consistency|verify`` exactly as DESIGN §12 says.

The log's command-line face, attached under ``kpx registry`` by ``exchange.app.cli.COMMANDS``.
Commands take the runtime with ``@pass_runtime`` and let kpx errors go to the error boundary
(a missing event or checkpoint: ``NotFound``, exit 1); ``verify`` exits 1 itself when the log
does not verify, after naming every problem and the first bad leaf index.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from exchange.adapters.postgres import Connection, connect
from exchange.app.exits import ExitCode
from exchange.app.runtime import Runtime, pass_runtime
from exchange.registry import log as registry_log
from exchange.registry import logcheck
from exchange.tlog import checkpoint


@contextmanager
def _db(rt: Runtime) -> Iterator[Connection]:
    conn = connect(rt.registry_dsn, application_name="kpx-registry-log")
    try:
        yield conn
    finally:
        conn.close()


@click.group("log")
def log_group() -> None:
    """The registry's tamper-evident log: key, checkpoints, proofs, verification."""


@log_group.command("key")
@pass_runtime
def key(rt: Runtime) -> None:
    """Print the log's verifier key, <name>+<8 hex key id>+<base64(0x01 ‖ key)>."""
    click.echo(str(registry_log.load_key(rt.keys_dir).verifier))


@log_group.command("checkpoint")
@pass_runtime
def checkpoint_(rt: Runtime) -> None:
    """Print the latest checkpoint note, cosignatures included."""
    with _db(rt) as conn:
        click.echo(registry_log.latest_checkpoint_note(conn), nl=False)


@log_group.command("proof")
@click.argument("certificate_id", required=False)
@click.option("--event", "event_id", metavar="UUID", help="Any accepted event instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only format).")
@pass_runtime
def proof_(rt: Runtime, certificate_id: str | None, event_id: str | None, as_json: bool) -> None:
    """Inclusion proof of a certificate's CertificateIssued (or --event) in the latest tree."""
    del as_json
    if (certificate_id is None) == (event_id is None):
        raise click.UsageError("give CERTIFICATE_ID or --event UUID")
    with _db(rt) as conn:
        if event_id is None:
            assert certificate_id is not None
            event_id = registry_log.issuance_event(conn, certificate_id)
        click.echo(json.dumps(registry_log.inclusion_proof(conn, event_id), indent=2))


@log_group.command("consistency")
@click.argument("old", type=click.IntRange(min=0))
@click.argument("new", type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only format).")
@pass_runtime
def consistency(rt: Runtime, old: int, new: int, as_json: bool) -> None:
    """Consistency proof from tree size OLD to NEW (RFC 9162 §2.1.4)."""
    del as_json
    with _db(rt) as conn:
        click.echo(json.dumps(registry_log.consistency_proof(conn, old, new), indent=2))


@log_group.command("verify")
@pass_runtime
def verify(rt: Runtime) -> None:
    """Recompute the tree from storage; exit 1 unless it matches every signed checkpoint."""
    signer = registry_log.load_key(rt.keys_dir)
    with _db(rt) as conn:
        report = logcheck.verify(conn, signer.verifier, checkpoint.origin_for(rt.region.code))
    for problem in report.problems:
        click.echo(problem, err=True)
    if not report.ok:
        if report.first_bad_index is not None:
            click.echo(f"first bad leaf index: {report.first_bad_index}", err=True)
        click.echo(f"log does NOT verify: {len(report.problems)} problem(s)")
        sys.exit(ExitCode.FAILED)
    click.echo(f"log verifies: {report.leaves} leaves, {report.checkpoints} checkpoints")
