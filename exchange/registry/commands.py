"""``kpx registry …``: run, show, verify, rejections, participant, dead-letters.

The composition root attaches :data:`registry` to ``kpx``; commands take the runtime with
``@pass_runtime`` (exchange/app/runtime.py) and let kpx errors go to the error boundary of
exchange/app/cli.py (exit codes in exchange/app/exits.py). SIGTERM handling is the same as
every service's: SIGTERM or SIGINT sets the ``stop`` event (exchange/adapters/signals.py).
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal

import click

from exchange.adapters.postgres import Connection, connect, transaction
from exchange.adapters.signals import stop_on_signals
from exchange.app.exits import ExitCode
from exchange.app.runtime import Runtime, current_runtime, pass_runtime
from exchange.domain.register import KIND_NAMES
from exchange.errors import BrokerRefused, BrokerUnavailable
from exchange.registry import (
    deadmover,
    deadstore,
    participant,
    queries,
    register,
    reinjection,
    service,
    trade,
)
from exchange.registry import log as registry_log
from exchange.registry.deadletters import Status
from exchange.wire import topology

DEFAULT_METRICS_PORT = 9401


@contextmanager
def _registry_db(rt: Runtime) -> Iterator[Connection]:
    conn = connect(rt.registry_dsn, application_name="kpx-registry-cli")
    try:
        yield conn
    finally:
        conn.close()


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, default=_json_default, indent=2, ensure_ascii=False))


@click.group("registry")
def registry() -> None:
    """The regional registry: ingest, queries, participants, dead letters."""


@registry.command("run")
@click.option("--metrics-port", type=int, default=DEFAULT_METRICS_PORT, show_default=True)
@click.option(
    "--verify-ahead/--no-verify-ahead",
    default=False,
    show_default=True,
    help="Verify each batch's signatures in a helper process while opening it (worth it "
    "on a host with a core to spare).",
)
@pass_runtime
def run(obj: Runtime, metrics_port: int, verify_ahead: bool) -> None:
    """Consume kpx.registry until SIGTERM; decide, record and answer every event."""
    region = obj.region
    stop = stop_on_signals()
    service.run_registry(
        obj.registry_dsn,
        obj.amqp_url(topology.registry_user(region.vhost)),
        region,
        obj.store,
        obj.signer(region.code),
        stop,
        metrics_port,
        log_signer=registry_log.load_key(obj.keys_dir),
        verify_ahead=verify_ahead,
    )


@registry.command("show")
@click.argument("certificate_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only format for now).")
@pass_runtime
def show(rt: Runtime, certificate_id: str, as_json: bool) -> None:
    """State, certificate, history, confirmations and decisions of one certificate."""
    with _registry_db(rt) as conn:
        found = queries.show(conn, certificate_id)
    _print_json(found)


@registry.command("verify")
@click.argument("certificate_id")
@click.option("--on", "on", type=click.DateTime(["%Y-%m-%d"]), help="Date to check (today).")
@pass_runtime
def verify(rt: Runtime, certificate_id: str, on: datetime | None) -> None:
    """Exit 0 only for an accepted, unexpired, not voided or replaced certificate."""
    day = on.date() if on is not None else datetime.now(UTC).date()
    with _registry_db(rt) as conn:
        ok, sentence = queries.verify(conn, certificate_id, rt.region.code, day)
    click.echo(sentence)
    sys.exit(ExitCode.OK if ok else ExitCode.FAILED)


@registry.command("rejections")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only format for now).")
@click.option("--limit", type=int, default=None)
@pass_runtime
def rejections(rt: Runtime, as_json: bool, limit: int | None) -> None:
    """Every rejected event with its reason code and sentence."""
    with _registry_db(rt) as conn:
        _print_json(queries.rejections(conn, limit))


@registry.group("participant")
def participant_group() -> None:
    """Suspend or reinstate a KP participant."""


def _status_command(action: str) -> Callable[..., None]:
    @click.argument("code")
    @click.option("--reason", required=True, help="Why (sent to every node).")
    @click.option("--effective", type=click.DateTime(["%Y-%m-%d"]), help="Date (today).")
    @pass_runtime
    def command(obj: Runtime, code: str, reason: str, effective: datetime | None) -> None:
        day = effective.date() if effective is not None else datetime.now(UTC).date()
        with _registry_db(obj) as conn:
            status = participant.change_status(
                conn,
                obj.store,
                obj.signer(obj.region.code),
                obj.region,
                action,
                code.upper(),
                reason,
                day,
            )
        click.echo(f"{code.upper()} {status} from {day:%Y-%m-%d}")

    command.__doc__ = f"{action.capitalize()} a participant and tell every node."
    return command


participant_group.command("suspend")(_status_command("suspend"))
participant_group.command("reinstate")(_status_command("reinstate"))


@registry.group("dead-letters", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, the text exactly as stored.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in Status] + ["all"]),
    default=Status.PENDING.value,
    show_default=True,
)
@click.option("--queue", help="Only those that failed in this queue (e.g. kpx.reconciler).")
@click.option("--reason", help="Only those whose reason starts with this (e.g. SCHEMA_INVALID).")
@click.option("--since", type=click.DateTime(), help="Only those last seen at or after this.")
@click.option("--after", type=int, default=0, help="The last id of the previous page.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.pass_context
def dead_letters(
    ctx: click.Context,
    as_json: bool,
    status: str,
    queue: str | None,
    reason: str | None,
    since: datetime | None,
    after: int,
    limit: int,
) -> None:
    """List stored dead letters, a page at a time (see `reinject`).

    What waits in kpx.registry.dead is moved into the store first (the registry service
    does so continuously); the listing itself is one indexed query.
    """
    if ctx.invoked_subcommand is not None:
        return
    obj = current_runtime()
    _move_waiting(obj)
    wanted = deadstore.Filter(
        status=None if status == "all" else Status(status),
        queue=queue,
        reason=reason,
        since=since.replace(tzinfo=since.tzinfo or UTC) if since is not None else None,
        after=after,
        limit=limit,
    )
    with _registry_db(obj) as conn, transaction(conn) as cur:
        found = deadstore.page(cur, wanted)
    if as_json:
        _print_json([d.to_json() for d in found])
        return
    for d in found:
        click.echo(
            f"{d.id}  {d.message_id}  {d.failed_queue}  {d.routing_key}  {d.size} B  "
            f"{d.status}  dead {d.times_dead}x  {d.reason}"
        )
    more = f"; next page: --after {found[-1].id}" if len(found) == limit else ""
    click.echo(f"{len(found)} dead letter(s){more}")


def _move_waiting(obj: Runtime) -> None:
    """Move what waits in the queue into the store; a broker that does not answer only
    makes the listing miss those (said on stderr), the store is listed all the same."""
    url = obj.amqp_url(topology.registry_user(obj.region.vhost))
    try:
        with _registry_db(obj) as conn:
            deadmover.move_waiting(conn, url)
    except (BrokerUnavailable, BrokerRefused) as exc:
        click.echo(f"{topology.DEAD_QUEUE} not read ({exc}): listing the store only", err=True)


@dead_letters.command("reinject")
@click.option("--all", "everything", is_flag=True, help="Re-inject every pending dead letter.")
@click.argument("message_ids", nargs=-1)
@pass_runtime
def reinject(obj: Runtime, everything: bool, message_ids: tuple[str, ...]) -> None:
    """Publish dead letters back where they failed, to be decided again after a fix.

    Exits 1 when a chosen id is unknown or the broker did not confirm one.
    """
    if everything == bool(message_ids):
        raise click.UsageError("name MESSAGE_ID… or --all (not both)")
    user = topology.registry_user(obj.region.vhost)
    _move_waiting(obj)
    with _registry_db(obj) as conn:
        done = reinjection.reinject(
            conn,
            obj.amqp_url(user),
            user,
            _operator(),
            None if everything else set(message_ids),
        )
    for d in done.already:
        click.echo(f"{d.message_id}: already re-injected at {d.reinjected_at:%Y-%m-%d %H:%M:%S} "
                   f"by {d.reinjected_by}", err=True)  # fmt: skip
    for message_id in done.unknown:
        click.echo(f"{message_id}: no such dead letter", err=True)
    for message_id in done.unconfirmed:
        click.echo(f"{message_id}: not confirmed by the broker, still pending", err=True)
    click.echo(f"re-injected {done.rows} message(s)")
    if done.unknown or done.unconfirmed:
        sys.exit(ExitCode.FAILED)


def _operator() -> str:
    """Who re-injects from the command line, as the store records it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no name for the uid (a bare container)
        return "cli"


# ---------------------------------------------------------------- §14: register and trade data


@registry.command("register")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only format for now).")
@click.option("--member", default=None, help="Only this member's entries.")
@click.option("--kind", type=click.Choice(KIND_NAMES), default=None, help="Only this kind.")
@pass_runtime
def register_command(rt: Runtime, as_json: bool, member: str | None, kind: str | None) -> None:
    """The region's register: every entry's latest version, its revocation and history."""
    with _registry_db(rt) as conn, transaction(conn) as cur:
        _print_json(register.listing(cur, member, kind))


@registry.command("import-trade")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--source", default="external", show_default=True, help="Data source (versions are per source)."
)
@pass_runtime
def import_trade_command(rt: Runtime, file: str, source: str) -> None:
    """Load external trade figures (plain CSV or UN Comtrade bulk CSV) as a new version.

    A malformed row is refused with its line and column, and nothing of the file is kept.
    """
    with _registry_db(rt) as conn:
        done = trade.import_trade(conn, file, source)
    click.echo(
        f"imported {done.rows} rows ({done.file_format}; {done.skipped} skipped) as "
        f"{done.source} version {done.version}"
    )


@registry.command("trade-imports")
@pass_runtime
def trade_imports_command(rt: Runtime) -> None:
    """Every import of external trade figures, latest version first within each source."""
    with _registry_db(rt) as conn, transaction(conn) as cur:
        _print_json([i.to_json() for i in trade.imports(cur)])
