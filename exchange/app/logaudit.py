"""``kpx node audit --member XX`` wired to the registry's log (composition: node ↔ registry).

In a region run on one machine the auditor reads the registry's log from its database
through :mod:`exchange.registry.log`; the checks themselves are the node's
(:mod:`nodes.audit`) and trust nothing but the log key.
"""

from __future__ import annotations

import sys

import click

from exchange.adapters.postgres import Connection, connect, transaction
from exchange.app.exits import ExitCode
from exchange.app.runtime import Runtime, pass_runtime
from exchange.registry import log as registry_log
from exchange.tlog import note, proof
from nodes.audit import audit as run_audit
from nodes.witness import load_log_key


class RegistryDatabase:
    """A :class:`nodes.audit.LogSource` over the registry's database."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def latest_checkpoint_note(self) -> str:
        """The latest checkpoint, cosignatures attached."""
        return registry_log.latest_checkpoint_note(self.conn)

    def leaf(self, event_id: str) -> tuple[int, bytes]:
        """Leaf index and envelope bytes of an event."""
        return registry_log.leaf_of_event(self.conn, event_id)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """The audit path of a leaf in the tree of ``size``."""
        with transaction(self.conn) as cur:
            return proof.prove_inclusion(index, size, registry_log.reader(cur))

    def consistency(self, old: int, new: int) -> list[bytes]:
        """The consistency proof between two sizes."""
        with transaction(self.conn) as cur:
            return proof.prove_consistency(old, new, registry_log.reader(cur))


def _log_key(rt: Runtime, code: str) -> note.Verifier:
    """The log key the node was given (its ``trusted/`` folder), never the registry's copy."""
    return load_log_key(rt.trusted_dir(code))


@click.command("audit")
@click.option("--member", required=True, metavar="XX", help="The node to audit.")
@pass_runtime
def audit(rt: Runtime, member: str) -> None:
    """Exit 0 only if the registry's log includes every event this node had accepted and
    agrees with every checkpoint it witnessed; otherwise 1, naming what fails."""
    code = member.upper()
    registry, node = connect(rt.registry_dsn), connect(rt.node_dsn(code))
    try:
        with transaction(node) as cur:
            report = run_audit(cur, RegistryDatabase(registry), _log_key(rt, code), rt.region.code)
    finally:
        registry.close()
        node.close()
    for problem in report.problems:
        click.echo(problem, err=True)
    size = report.latest.size if report.latest else "?"
    summary = f"{report.events} accepted events, {report.checkpoints} checkpoints, tree {size}"
    if report.problems:
        click.echo(f"audit of {code} FAILED: {len(report.problems)} problem(s); {summary}")
        sys.exit(ExitCode.FAILED)
    anchored = "; the witness now verifies from it" if report.anchored else ""
    click.echo(f"audit of {code} passed: {summary}{anchored}")
