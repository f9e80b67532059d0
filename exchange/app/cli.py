"""The ``kpx`` command line: the composition root (the demo has its own), which imports ``nodes``.

Three things happen here and nowhere else:

- **Settings and the region file** are read once, when the first command asks for the
  runtime (:func:`exchange.app.runtime.pass_runtime` / ``current_runtime``).
- **Logging** is configured.
- **The error boundary**: commands raise kpx errors and let them go; :func:`main` prints one
  line on stderr and exits with the code of the table in ``exchange/app/exits.py`` (0 ok,
  1 refused or failed check, 2 usage or configuration, 3 service unavailable).

Adding a command group: write it in its own module (a ``click.Group`` or ``click.Command``
whose commands take the runtime with ``@pass_runtime``), then add one line to
:data:`COMMANDS` below: ``("parent", "package.module:attribute")``, parent ``""`` for a
top-level command or the name of an existing group (e.g. ``"registry"``). The modules are
imported when ``kpx`` starts, not when this module is imported.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path

import click

from exchange.adapters import terminal
from exchange.app import provision
from exchange.app.exits import ExitCode, exit_code, message
from exchange.app.runtime import REGION_OPTION, Runtime, pass_runtime
from exchange.app.settings import PUBLISHED_PASSWORDS
from exchange.errors import ConfigError, KpxError
from exchange.wire import topology
from exchange.wire.signing import generate_key, save_key
from nodes.service import migrate as prepare_node_database

log = logging.getLogger("kpx")

# (parent group, "module:attribute" of a click command or group). One line per command group.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("", "nodes.commands:node"),  # kpx node run|submit|certificates|shipments|init|keys
    ("", "nodes.commands:submit_all"),  # kpx submit
    ("", "exchange.registry.commands:registry"),  # kpx registry …
    ("registry", "exchange.registry.logcommands:log_group"),  # kpx registry log … (DESIGN §12)
    ("node", "exchange.app.logaudit:audit"),  # kpx node audit (DESIGN §12)
    ("node", "nodes.web.commands:serve"),  # kpx node serve (DESIGN §13)
    ("node", "nodes.web.commands:users"),  # kpx node users add
    ("node", "nodes.web.commands:tokens"),  # kpx node tokens create|revoke
    ("registry", "exchange.reconciler.commands:discrepancies"),  # kpx registry discrepancies
    ("registry", "exchange.registry.web.commands:serve"),  # kpx registry serve (DESIGN §13)
    ("registry", "exchange.registry.web.commands:users"),  # kpx registry users add (§13)
    ("registry", "exchange.registry.keycommands:keys"),  # kpx registry keys add|revoke|list
    ("", "exchange.reconciler.commands:reconciler"),  # kpx reconciler run
    ("", "exchange.reconciler.commands:reconcile"),  # kpx reconcile --as-of
    ("", "exchange.reconciler.commands:stats"),  # kpx stats --period
    ("", "exchange.demo.commands:demo"),  # kpx demo
)


@click.group()
@click.option(
    "--region",
    "region",
    default=None,  # KPX_REGION is read by the settings, with every other variable
    metavar="FILE",
    help="The region file (TOML). Default: $KPX_REGION, else the example region XS "
    "shipped with kpx (deploy/region.example.toml).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, region: str | None, verbose: int) -> None:
    """kpx — the regional exchange for Kimberley Process certificates.

    Exit codes: 0 ok, 1 refused or failed check, 2 usage or configuration, 3 service
    unavailable (broker, database, or the registry's public log).
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.meta[REGION_OPTION] = region  # read by current_runtime() when a command needs it


@cli.group()
def region() -> None:
    """Set up and watch the whole region."""


@region.command("init")
@pass_runtime
def region_init(rt: Runtime) -> None:
    """Create databases, migrations, broker vhost/users/permissions/topology and keys."""
    provision.init_region(rt, prepare_node_database)
    click.echo(
        f"region {rt.region.code} ready: vhost {rt.region.vhost!r}, "
        f"{len(rt.region.node_codes)} nodes, keys in {rt.keys_dir}"
    )


@region.command("drain")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds.")
@pass_runtime
def region_drain(rt: Runtime, timeout: float) -> None:
    """Exit 0 once every outbox and queue is empty and the reconciler has caught up."""
    from exchange.app.quiescence import drain

    moving = drain(rt, timeout)
    if moving:
        click.echo(
            f"not drained after {timeout:.0f} s; still moving: {'; '.join(moving)}", err=True
        )
        sys.exit(ExitCode.FAILED)
    click.echo("drained")


@cli.group("topology")
def topology_() -> None:
    """The broker topology."""


@topology_.command("export")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("deploy/rabbitmq/definitions.json"),
    show_default=True,
)
@click.option(
    "--admin-user",
    default="kpx-admin",
    show_default=True,
    help="Administrator created at boot (a broker loading definitions makes no guest); "
    "its password comes from $KPX_BROKER_ADMIN_PASSWORD.",
)
@click.option(
    "--no-admin", is_flag=True, help="No administrator: the template committed to the repository."
)
@click.option(
    "--mode",
    default="0600",
    show_default=True,
    help="File mode with an administrator (0644 when the broker runs as another user).",
)
@pass_runtime
def topology_export(rt: Runtime, output: Path, admin_user: str, no_admin: bool, mode: str) -> None:
    """Write the topology as RabbitMQ definitions (service users without passwords:
    `kpx region init` sets them). Refuses a missing, short or published admin password."""
    admin = None
    if not no_admin:
        # The password is read from the settings, never from an option: an option's value is
        # visible to every user of the machine (ps) and a default would be printed by --help.
        password = _strong(rt.settings.admin_password())
        admin = (admin_user, topology.password_hash(password, os.urandom(4)))
    definitions = topology.definitions(rt.region.vhost, rt.region.node_codes, admin)
    try:
        output.write_text(json.dumps(definitions, indent=2) + "\n", encoding="utf-8")
        if admin is not None:
            output.chmod(int(mode, 8))  # it holds a salted password hash
    except OSError as exc:  # e.g. the default path outside a checkout: a usage error
        raise ConfigError(f"--output {str(output)!r} cannot be written: {exc.strerror}") from exc
    click.echo(f"wrote {output}")


def _strong(password: str) -> str:
    """``password``, unless it is a published default or shorter than 12 characters."""
    if password in PUBLISHED_PASSWORDS or len(password) < 12:
        raise ConfigError(
            "KPX_BROKER_ADMIN_PASSWORD is a published default or shorter than 12 characters; "
            "generate one at deploy time (`openssl rand -base64 24`)"
        )
    return password


@cli.group()
def keys() -> None:
    """Authority signing keys."""


@keys.command("generate")
@click.option(
    "--member",
    required=True,
    metavar="XX",
    help="Producer: a node code, the region code, or <REGION>-RECONCILER.",
)
@pass_runtime
def keys_generate(rt: Runtime, member: str) -> None:
    """A new key of the registry or the reconciler (a node rotates with `kpx node keys rotate`)."""
    producer = member.upper()
    if producer in rt.region.node_codes:
        raise click.UsageError(
            f"{producer} is a node: its key is made and kept at its site; rotate it with "
            f"`kpx node keys rotate --member {producer}` (DESIGN §15)"
        )
    private, public = save_key(generate_key(producer), rt.keys_dir)
    click.echo(f"private key {private}\npublic key {public}")


@cli.group()
def schemas() -> None:
    """The Avro wire contract."""


@schemas.command("check")
def schemas_check() -> None:
    """Fail when a schema change breaks FULL_TRANSITIVE compatibility."""
    from exchange.wire import compat

    sys.exit(ExitCode.FAILED if compat.main() else ExitCode.OK)


@cli.command("check")
@click.option("--member", help="Check only this node's own site, with its own credentials.")
@pass_runtime
def check(rt: Runtime, member: str | None) -> None:
    """Probe: broker, databases and queue consumers; exit 0 when all are fine."""
    from exchange.app.quiescence import dead_letter_summary, probe, probe_member

    problems = probe(rt) if member is None else probe_member(rt, member.upper())
    for problem in problems:
        click.echo(problem, err=True)
    if member is None:
        click.echo(dead_letter_summary(rt))
    click.echo("ok" if not problems else f"{len(problems)} problem(s)")
    sys.exit(ExitCode.FAILED if problems else ExitCode.OK)


def attach_commands(root: click.Group = cli) -> None:
    """Attach every entry of :data:`COMMANDS` to ``root`` (imported now: they are heavier)."""
    for parent, target in COMMANDS:
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"COMMANDS entry {target!r} is not a click command")
        group = root if not parent else root.commands[parent]
        if not isinstance(group, click.Group):
            raise TypeError(f"COMMANDS parent {parent!r} is not a click group")
        if group.commands.get(command.name or "") is not command:  # run() may be called again
            group.add_command(command)


def run(args: list[str] | None = None) -> int:
    """Run ``kpx`` with ``args`` (default: sys.argv) inside the error boundary; the exit code.

    Stored text reaches the terminal escaped, whatever the command: its output, its logs and
    the boundary's own message (exchange/adapters/terminal.py) — except the demo's, whose
    live display writes terminal codes on purpose.
    """
    argv = sys.argv[1:] if args is None else args
    restore = None if _subcommand(argv) == "demo" else terminal.install()
    try:
        return _run(args)
    finally:
        if restore is not None:
            restore()


def _subcommand(argv: list[str]) -> str | None:
    """The first command name in ``argv`` (skipping the group's options)."""
    tokens = iter(argv)
    for token in tokens:
        if token == "--region":
            next(tokens, None)
        elif not token.startswith("-"):
            return token
    return None


def _run(args: list[str] | None) -> int:
    attach_commands()
    try:
        result = cli.main(args, prog_name="kpx", standalone_mode=False)
    except SystemExit as exc:  # a command that ends with a failed check exits by itself
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or ExitCode.OK
        raise
    except click.exceptions.Abort:
        return ExitCode.INTERRUPTED
    except click.UsageError as exc:  # includes BadParameter: always exit 2
        exc.show()
        return ExitCode.USAGE
    except click.ClickException as exc:  # click's own, e.g. a file argument that cannot open
        exc.show()
        return exc.exit_code
    except KpxError as exc:
        click.echo(message(exc), err=True)
        log.debug("kpx: %s", type(exc).__name__, exc_info=exc)
        return exit_code(exc)
    # standalone_mode=False returns an Exit's code (e.g. --help: 0) or the command's value.
    return result if isinstance(result, int) else ExitCode.OK


def main() -> None:
    """Entry point of the ``kpx`` console script."""
    sys.exit(run())
