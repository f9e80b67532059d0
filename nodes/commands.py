"""The ``kpx node …`` commands and ``kpx submit``: what a national authority runs."""

from __future__ import annotations

import json
import logging
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from exchange.adapters import postgres
from exchange.adapters.signals import stop_on_signals
from exchange.app import provision
from exchange.app.exits import ExitCode
from exchange.app.runtime import Runtime, current_runtime
from exchange.errors import KeyFileError, TransientError
from exchange.messaging.outbox import OutboxWriter
from exchange.wire import topology
from nodes import keys as node_keys
from nodes import store
from nodes.operations import Node, Result
from nodes.service import NodeService, migrate
from nodes.witness import Witness, load_log_key

log = logging.getLogger(__name__)

member_option = click.option(
    "--member",
    "member",
    required=True,
    metavar="XX",
    help="The member's or partner's participant code.",
)


def _rt() -> Runtime:
    return current_runtime()


def _node(rt: Runtime, code: str) -> Node:
    return Node(code, rt.region, OutboxWriter(rt.store, node_keys.current_signer(rt, code)))


@click.group()
def node() -> None:
    """A national node: run it, submit operations, read its certificates and shipments."""


node.add_command(node_keys.node_init)
node.add_command(node_keys.node_keys)


@node.command("run")
@member_option
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics and /healthz here.")
def run(member: str, metrics_port: int | None) -> None:
    """Run the node's outbox relay and inbox until SIGTERM; exits 0 after draining."""
    rt = _rt()
    member = member.upper()
    if metrics_port is None:
        metrics_port = 9410 + rt.region.member_index(member)
    service = NodeService(
        code=member,
        dsn=rt.node_dsn(member),
        amqp_url=rt.amqp_url(topology.node_user(member, rt.region.vhost)),
        schemas=rt.store,
        keyring=node_keys.node_keyring(rt, member),
        senders=frozenset({rt.region.code, rt.reconciler_producer}),
        witness=_witness(rt, member),
    )
    stop = stop_on_signals()
    try:
        service.run(stop, metrics_port=metrics_port)
    except TransientError:
        if not stop.is_set():
            raise
        # Stopped while reconnecting: every unsent event stays in the outbox; a clean stop.


def _witness(rt: Runtime, code: str) -> Witness | None:
    """The node's witness of the registry's log (DESIGN §12); None without the log key."""
    try:
        # The registry's public keys a node trusts live in its own folder (DESIGN §15).
        log_key = load_log_key(Path(provision.trusted_dir(rt, code)))
    except KeyFileError as exc:  # a node set up before the log: it runs, but cannot witness
        log.warning("node %s: not witnessing the registry's log: %s", code, exc)
        return None
    signer = rt.signer(code)
    return Witness(code, rt.region.code, log_key, signer, OutboxWriter(rt.store, signer))


@node.command("submit")
@member_option
@click.argument("source", type=click.File("r"))
def submit(member: str, source: IO[str]) -> None:
    """Apply JSON Lines operations as MEMBER's authority ('-' reads stdin).

    Prints one line per input line: '<line> ok <id>' or '<line> refused <CODE> <sentence>';
    exits 1 if any line was refused. Works while the broker is down.
    """
    refused = _print_results(_submit(_rt(), member.upper(), source))
    sys.exit(ExitCode.FAILED if refused else ExitCode.OK)


def _submit(rt: Runtime, code: str, lines: Iterator[str] | IO[str]) -> Iterator[Result]:
    conn = postgres.connect(rt.node_dsn(code), application_name=f"kpx-submit-{code}")
    try:
        migrate(rt.node_dsn(code))
        yield from _node(rt, code).submit(conn, (line.rstrip("\n") for line in lines))
    finally:
        conn.close()


def _print_results(results: Iterator[Result]) -> int:
    refused = 0
    for result in results:
        refused += not result.ok
        click.echo(str(result))
    return refused


@click.command("submit")
@click.argument("source", type=click.File("r"))
def submit_all(source: IO[str]) -> None:
    """Apply JSON Lines operations, each line naming its node in "member" ('-' reads stdin).

    Output as `kpx node submit`, in input order; exits 1 if any line was refused.
    """
    rt = _rt()
    lines = list(source)
    by_member: dict[str, list[tuple[int, str]]] = defaultdict(list)
    results: dict[int, str] = {}
    for number, line in enumerate(lines, start=1):
        code = _member_of(line)
        if code is None or code not in rt.region.node_codes:
            results[number] = (
                f"{number} refused SCHEMA_INVALID member must name a node of "
                f"region {rt.region.code}, got {code!r}"
            )
        else:
            by_member[code].append((number, line.rstrip("\n")))
    for code, numbered in by_member.items():
        for result, (number, _) in zip(
            _submit(rt, code, iter([text for _, text in numbered])), numbered, strict=True
        ):
            text = str(result).split(" ", 1)[1]
            results[number] = f"{number} {text}"
    refused = 0
    for number in sorted(results):
        refused += " refused " in results[number]
        click.echo(results[number])
    sys.exit(ExitCode.FAILED if refused else ExitCode.OK)


def _member_of(line: str) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    member = obj.get("member") if isinstance(obj, dict) else None
    return member.upper() if isinstance(member, str) else None


@node.command("certificates")
@member_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def certificates(member: str, as_json: bool) -> None:
    """The node's certificates with the registry's last answer (accepted/rejected/pending)."""
    rows = _query(_rt(), member.upper(), store.certificates)
    _show(
        rows,
        as_json,
        (
            "certificate_id",
            "destination",
            "total_carats",
            "state",
            "registry_state",
            "registry_reason",
        ),
    )


@node.command("shipments")
@member_option
@click.option("--expected", is_flag=True, help="Only shipments not yet confirmed (default).")
@click.option("--all", "show_all", is_flag=True, help="Also shipments already confirmed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def shipments(member: str, expected: bool, show_all: bool, as_json: bool) -> None:
    """Shipments announced to this participant by the registry and not yet confirmed."""
    rows = _query(
        _rt(), member.upper(), lambda cur: store.expected_shipments(cur, only_open=not show_all)
    )
    for row in rows:
        body = row.pop("body")
        row.update(
            destination=body["destination"],
            total_carats=body["total_carats"],
            total_value_usd=body["total_value_usd"],
            date_of_expiry=body["date_of_expiry"],
        )
    _show(
        rows,
        as_json,
        ("certificate_id", "issuing_participant", "total_carats", "date_of_expiry", "confirmed"),
    )


def _query(rt: Runtime, code: str, fn: Any) -> list[dict[str, Any]]:
    conn = postgres.connect(rt.node_dsn(code))
    try:
        with postgres.transaction(conn) as cur:
            rows: list[dict[str, Any]] = fn(cur)
            return rows
    finally:
        conn.close()


def _show(rows: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    Console().print(table)
