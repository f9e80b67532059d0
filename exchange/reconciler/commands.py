"""Click commands of the reconciler, attached to ``kpx`` by the composition root.

- ``kpx reconciler run [--metrics-port 9402]``: the service; SIGTERM/SIGINT drain and exit 0.
- ``kpx reconcile --as-of DATE``: the deadline and period checks as of DATE, today or earlier
  (a future day is a ConfigError, exit 2); prints what it raised.
- ``kpx stats --period 2026-Q1|2026-H1|2026 --format csv|json|table``.
- ``kpx registry discrepancies [--json] [--kind K] [--participant XX] [--period P]
  [--status OPEN|RESOLVED]`` and ``... discrepancies resolve N --note TEXT``.

Commands take the runtime with ``@pass_runtime`` (exchange/app/runtime.py) and let kpx errors
go to the error boundary of exchange/app/cli.py (exit codes in exchange/app/exits.py).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, date, datetime
from typing import Any

import click

from exchange.adapters import metrics
from exchange.adapters.postgres import connect, transaction
from exchange.adapters.retry import stopped_quietly
from exchange.adapters.signals import stop_on_signals
from exchange.app.runtime import Runtime, current_runtime, pass_runtime
from exchange.domain.events import DiscrepancyKind
from exchange.domain.kpstats import FORMATS, Period, render, summary_line
from exchange.errors import ConfigError
from exchange.messaging.consumer import Health
from exchange.reconciler import aggregation, service, store
from exchange.wire import topology

log = logging.getLogger(__name__)
KINDS = tuple(k.value for k in DiscrepancyKind if k is not DiscrepancyKind.UNKNOWN)


@click.group("reconciler")
def reconciler() -> None:
    """The reconciler service."""


@reconciler.command("run")
@click.option("--metrics-port", type=int, default=9402, show_default=True)
@pass_runtime
def run(obj: Runtime, metrics_port: int) -> None:
    """Consume accepted events, raise discrepancies, relay notices; SIGTERM drains, exits 0."""
    stop = stop_on_signals()
    health = Health()
    metrics.serve(metrics_port, health.check)
    producer = topology.reconciler_producer(obj.region.code)
    with stopped_quietly(stop, log, "reconciler"):
        service.run_service(
            obj.registry_dsn,
            obj.amqp_url(topology.reconciler_user(obj.region.vhost)),
            obj.region,
            obj.store,
            obj.registered_keys(),  # the registry's key table, refreshed (DESIGN §15)
            obj.signer(producer),
            stop,
            health,
        )


@click.command("reconcile")
@click.option("--as-of", "as_of", required=True, type=click.DateTime(["%Y-%m-%d"]))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_runtime
def reconcile(obj: Runtime, as_of: Any, as_json: bool) -> None:
    """Run the deadline and period checks as of DATE (today or earlier); print what was raised."""
    day: date = as_of.date()
    refuse_a_future_day(day, datetime.now(UTC).date())
    started = time.monotonic()
    producer = topology.reconciler_producer(obj.region.code)
    summary = service.reconcile_as_of(
        obj.registry_dsn, obj.region, obj.store, obj.signer(producer), day
    )
    metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
    if as_json:
        click.echo(json.dumps({"as_of": day.isoformat(), "run": summary.run_id,
                               "raised": summary.raised, "total": summary.total}))  # fmt: skip
        return
    click.echo(f"reconciled as of {day}: {summary.total} new discrepancies (run {summary.run_id})")
    for kind, n in sorted(summary.raised.items()):
        click.echo(f"  {kind:<22} {n}")


def refuse_a_future_day(day: date, today: date) -> None:
    """ConfigError for an as-of day after ``today``: deadlines not yet passed would be raised
    as missed and stay raised (the demo's simulated future calls the service directly)."""
    if day > today:
        raise ConfigError(
            f"--as-of {day.isoformat()} is in the future (today is {today.isoformat()}, UTC): "
            "reconcile as of today or an earlier day"
        )


@click.command("stats")
@click.option("--period", required=True, help="2026-Q1, 2026-H1 or 2026.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@pass_runtime
def stats(obj: Runtime, period: str, fmt: str) -> None:
    """KP Annex III statistics of a period, versioned; says what changed since last version."""
    service.prepare(obj.registry_dsn)
    conn = connect(obj.registry_dsn, application_name="kpx-stats")
    try:
        report = aggregation.publish(
            conn, Period.parse(period), obj.region.code, list(obj.region.node_codes)
        )
    finally:
        conn.close()
    click.echo(render(report, fmt), nl=False)
    if fmt == "csv":
        click.echo(summary_line(report), err=True)


def discrepancy_filters(
    participant: str | None, period: str | None
) -> tuple[str | None, str | None]:
    """The filters as stored (upper case), or ConfigError: a filter spelt otherwise matched
    nothing and listed an empty result as if there were no findings."""
    if participant is not None:
        participant = participant.strip().upper()
        if not participant.isalpha() or len(participant) != 2:
            raise ConfigError(
                f"--participant must be a two-letter code such as BW, got {participant!r}"
            )
    if period is not None:
        period = Period.parse(period.strip().upper()).name  # refuses a bare Q4 with its reason
    return participant, period


@click.group("discrepancies", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="JSON list instead of a table.")
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--participant", help="Participant code, e.g. BW.")
@click.option("--period", help="Period, e.g. 2026-Q1 or 2026-H1.")
@click.option("--status", type=click.Choice(["OPEN", "RESOLVED"]))
@click.pass_context
def discrepancies(
    ctx: click.Context,
    as_json: bool,
    kind: str | None,
    participant: str | None,
    period: str | None,
    status: str | None,
) -> None:
    """List discrepancies (kind, certificate_id, participants, period, detail, status)."""
    if ctx.invoked_subcommand is not None:
        return
    participant, period = discrepancy_filters(participant, period)
    obj = current_runtime()
    service.prepare(obj.registry_dsn)
    conn = connect(obj.registry_dsn, application_name="kpx-discrepancies")
    try:
        with transaction(conn) as cur:
            items = store.list_discrepancies(
                cur, kind=kind, participant=participant, period=period, status=status
            )
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for d in items:
        what = d["certificate_id"] or d["period"] or ""
        who = ",".join(d["participants"])
        click.echo(f"{d['id']:>6}  {d['status']:<8} {d['kind']:<22} {who:<8} {what}")
        click.echo(f"        {d['detail']}")
    click.echo(f"{len(items)} discrepancies")


@discrepancies.command("resolve")
@click.argument("discrepancy_id", type=int)
@click.option("--note", required=True, help="How it was resolved.")
@pass_runtime
def resolve(obj: Runtime, discrepancy_id: int, note: str) -> None:
    """Mark discrepancy N resolved with a note."""
    conn = connect(obj.registry_dsn, application_name="kpx-discrepancies")
    try:
        with transaction(conn) as cur:
            kind = store.resolve(cur, discrepancy_id, note)
        service.refresh_open_gauge(conn)
    finally:
        conn.close()
    click.echo(f"discrepancy {discrepancy_id} ({kind}) resolved")
