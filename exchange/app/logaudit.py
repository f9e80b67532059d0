"""``kpx node audit --member XX`` wired to the registry's public log (composition: node ↔ log).

A member state reaches the regional body's portal, never its database: the auditor reads the
log's checkpoint, tiles and entry bundles over HTTP (:mod:`nodes.logclient`), from the region
file's ``[registry] public_url`` or a mirror given with ``--log-url``. The checks are the
node's (:mod:`nodes.audit`), with its own database, and trust nothing but the log key in the
node's ``trusted/`` folder.
"""

from __future__ import annotations

import sys
import time
from urllib.parse import urlsplit

import click

from exchange.adapters.postgres import connect, transaction
from exchange.app.exits import ExitCode
from exchange.app.runtime import Runtime, pass_runtime
from exchange.tlog import note
from nodes.audit import COVERED_WITHIN, AuditReport, read_records, record
from nodes.audit import audit as run_audit
from nodes.logclient import LogClient
from nodes.witness import load_log_key


def _log_key(rt: Runtime, code: str) -> note.Verifier:
    """The log key the node was given (its ``trusted/`` folder), never the registry's copy."""
    return load_log_key(rt.trusted_dir(code))


@click.command("audit")
@click.option("--member", required=True, metavar="XX", help="The node to audit.")
@click.option(
    "--log-url",
    metavar="URL",
    default=None,
    help="Where the log is served (its /log/checkpoint and /log/tile/… under URL), e.g. a "
    "mirror. Default: the region file's [registry] public_url, the registry's portal.",
)
@pass_runtime
def audit(rt: Runtime, member: str, log_url: str | None) -> None:
    """Exit 0 only if the registry's log includes every event this node had accepted and
    agrees with every checkpoint it witnessed; otherwise 1, naming what fails; 3 if the log
    cannot be reached."""
    code = member.upper()
    key = _log_key(rt, code)
    url = _base_url(log_url or rt.region.public_url)
    node = connect(rt.node_dsn(code))
    try:
        with transaction(node) as cur:
            records = read_records(cur)
        # No node transaction is open while the log is read: a scan of a large log over the
        # network must not hold a snapshot (and vacuum) of the node's database meanwhile.
        with LogClient(url) as log:
            # An event accepted within the last second may wait for the next checkpoint.
            deadline = time.monotonic() + COVERED_WITHIN
            waited = False
            while True:
                may_await = time.monotonic() < deadline
                report = run_audit(records, log, key, rt.region.code, may_await=may_await)
                if not report.awaiting:
                    break
                waited = True
                time.sleep(0.25)
            fetched = f"{log.tiles_fetched} tiles and {log.bundles_fetched} entry bundles"
        with transaction(node) as cur:
            record(cur, report)
    finally:
        node.close()
    for problem in report.problems:
        click.echo(problem, err=True)
    if waited and report.problems:
        click.echo(f"waited {COVERED_WITHIN:g} s for a checkpoint to cover the newest events")
    click.echo(f"read {url}/log: {fetched}; every proof computed here from them")
    for line in _notes(report):
        click.echo(line)
    size = report.latest.size if report.latest else "?"
    summary = f"{report.events} accepted events, {report.checkpoints} checkpoints, tree {size}"
    if report.problems:
        click.echo(f"audit of {code} FAILED: {len(report.problems)} problem(s); {summary}")
        sys.exit(ExitCode.FAILED)
    anchored = "; the witness now verifies from it" if report.anchored else ""
    click.echo(f"audit of {code} passed: {summary}{anchored}")


def _base_url(url: str) -> str:
    """The log's base URL; a typo is a usage error (exit 2), not an unreachable log (3)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--log-url")
    return url.rstrip("/")


def _notes(report: AuditReport) -> list[str]:
    out = []
    if report.unindexed:
        out.append(
            f"{report.unindexed} accepted event(s) had no stored leaf index: looked for among "
            f"the log's entries ({report.scanned} read, at most the tree's size); "
            f"{len(report.located)} found, proved and stored"
        )
    if report.later:
        out.append(
            f"{report.later} cosignature(s) logged after the latest checkpoint: "
            "the next audit checks them"
        )
    return out
