"""``kpx registry register`` and ``kpx registry import-trade`` / ``trade-imports`` (DESIGN §14).

Attached to the ``registry`` group by the composition root (exchange/app/cli.py), beside the
commands of exchange/registry/commands.py, whose helpers they share.
"""

from __future__ import annotations

import click

from exchange.adapters.postgres import transaction
from exchange.domain.register import KIND_NAMES
from exchange.registry import register, trade
from exchange.registry.commands import _guarded, _print_json, _registry_db


@click.command("register")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the only format for now).")
@click.option("--member", default=None, help="Only this member's entries.")
@click.option("--kind", type=click.Choice(KIND_NAMES), default=None, help="Only this kind.")
def register_command(as_json: bool, member: str | None, kind: str | None) -> None:
    """The region's register: every entry's latest version, its revocation and history."""

    def listing() -> list[dict[str, object]]:
        with _registry_db() as conn, transaction(conn) as cur:
            return register.listing(cur, member, kind)

    _print_json(_guarded(listing))


@click.command("import-trade")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--source",
    default="external",
    show_default=True,
    help="Name of the data source (versions are per source).",
)
def import_trade_command(file: str, source: str) -> None:
    """Load external trade figures (plain CSV or UN Comtrade bulk CSV) as a new version.

    A malformed row is refused with its line and column, and nothing of the file is kept.
    """

    def load() -> trade.Imported:
        with _registry_db() as conn:
            return trade.import_trade(conn, file, source)

    done = _guarded(load)
    click.echo(
        f"imported {done.rows} rows ({done.file_format}; {done.skipped} skipped) as "
        f"{done.source} version {done.version}"
    )


@click.command("trade-imports")
def trade_imports_command() -> None:
    """Every import of external trade figures, latest version first within each source."""

    def listing() -> list[dict[str, object]]:
        with _registry_db() as conn, transaction(conn) as cur:
            return [i.to_json() for i in trade.imports(cur)]

    _print_json(_guarded(listing))


COMMANDS = (register_command, import_trade_command, trade_imports_command)
