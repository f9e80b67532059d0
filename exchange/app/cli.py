"""The ``kpx`` command line: the composition root, the one module that imports ``nodes``.

Settings and the region file are read once here, into a :class:`Runtime` handed to every
command as click's context object. Logging is configured here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from exchange.adapters import metrics, terminal
from exchange.app import provision
from exchange.app.runtime import Runtime
from exchange.app.settings import PUBLISHED_PASSWORDS, Settings
from exchange.errors import KpxError
from exchange.wire import topology
from exchange.wire.signing import generate_key, save_key
from nodes.commands import node, submit_all
from nodes.service import migrate as prepare_node_database

log = logging.getLogger("kpx")


@click.group()
@click.option(
    "--region",
    "region",
    envvar="KPX_REGION",
    default=None,
    metavar="FILE",
    help="The region file (TOML). Default: $KPX_REGION or deploy/region.example.toml.",
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, region: str | None, verbose: int) -> None:
    """kpx — the regional exchange for Kimberley Process certificates."""
    if ctx.invoked_subcommand != "demo":  # the demo's live display writes codes on purpose
        # Stored text reaches the terminal escaped, whatever the command (and its logs).
        ctx.call_on_close(terminal.install())
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if ctx.invoked_subcommand in ("schemas", "demo"):
        return  # they need no region (the demo writes its own)
    settings = Settings.from_env(region=region)
    metrics.listen_on(settings.metrics_host)  # loopback unless KPX_METRICS_HOST opens it
    ctx.obj = Runtime.load(settings)


@cli.group()
def region() -> None:
    """Set up and watch the whole region."""


@region.command("init")
@click.pass_obj
def region_init(rt: Runtime) -> None:
    """Create databases, migrations, broker vhost/users/permissions/topology and keys."""
    provision.init_region(rt, prepare_node_database)
    click.echo(
        f"region {rt.region.code} ready: vhost {rt.region.vhost!r}, "
        f"{len(rt.region.node_codes)} nodes, keys in {rt.keys_dir}"
    )


@region.command("drain")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds.")
@click.pass_obj
def region_drain(rt: Runtime, timeout: float) -> None:
    """Exit 0 once every outbox and queue is empty and the reconciler has caught up."""
    from exchange.app.quiescence import wait_drained

    if not wait_drained(rt, timeout):
        click.echo(f"not drained after {timeout:.0f} s", err=True)
        sys.exit(1)
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
    help="Administrator created at boot (a broker loading definitions makes no guest).",
)
@click.option(
    "--admin-password",
    envvar="KPX_BROKER_ADMIN_PASSWORD",
    default=None,
    help="Its password ($KPX_BROKER_ADMIN_PASSWORD), generated at deploy time; required "
    "unless --no-admin.",
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
@click.pass_obj
def topology_export(
    rt: Runtime,
    output: Path,
    admin_user: str,
    admin_password: str | None,
    no_admin: bool,
    mode: str,
) -> None:
    """Write the topology as RabbitMQ definitions (service users without passwords:
    `kpx region init` sets them). Refuses a missing, short or published admin password."""
    admin = None
    if not no_admin:
        admin = (admin_user, topology.password_hash(_admin_password(admin_password), os.urandom(4)))
    definitions = topology.definitions(rt.region.vhost, rt.region.node_codes, admin)
    output.write_text(json.dumps(definitions, indent=2) + "\n", encoding="utf-8")
    if admin is not None:
        output.chmod(int(mode, 8))  # it holds a salted password hash
    click.echo(f"wrote {output}")


def _admin_password(password: str | None) -> str:
    if not password:
        raise click.UsageError(
            "set KPX_BROKER_ADMIN_PASSWORD (e.g. `openssl rand -base64 24`) or pass --no-admin"
        )
    if password in PUBLISHED_PASSWORDS or len(password) < 16:
        raise click.UsageError(
            "the broker administrator's password is a published default or shorter than 16 "
            "characters; generate one at deploy time (`openssl rand -base64 24`)"
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
@click.pass_obj
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

    sys.exit(compat.main())


@cli.command("check")
@click.pass_obj
def check(rt: Runtime) -> None:
    """Probe: broker, databases and queue consumers; exit 0 when all are fine."""
    from exchange.app.quiescence import probe

    problems = probe(rt)
    for problem in problems:
        click.echo(problem, err=True)
    click.echo("ok" if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


cli.add_command(node)
cli.add_command(submit_all, "submit")


def _attach_parts() -> None:
    """Attach the registry, reconciler and demo commands (imported late: they are heavier)."""
    from exchange.demo.commands import demo
    from exchange.reconciler.commands import discrepancies, reconcile, reconciler, stats
    from exchange.registry.commands import registry
    from exchange.registry.keycommands import keys as registry_keys

    registry.add_command(discrepancies)
    registry.add_command(registry_keys)
    for command in (registry, reconciler, reconcile, stats, demo):
        cli.add_command(command)


def main() -> None:
    """Entry point of the ``kpx`` console script; KpxErrors become one clear line, exit 2."""
    _attach_parts()
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KpxError as exc:
        click.echo(f"kpx: {type(exc).__name__}: {exc}", err=True)
        sys.exit(2)
