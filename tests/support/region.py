"""A private, fully provisioned copy of the example region for one test module.

``provisioned_region`` writes a region file whose vhost and databases carry a unique
``kpxt_`` name (so the session sweep can remove leftovers), runs ``kpx region init`` on the
real services, and removes the vhost and every database afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exchange.adapters import postgres
from exchange.adapters.management import Admin
from exchange.app import provision
from exchange.app.runtime import Runtime
from exchange.app.settings import Settings
from nodes.service import migrate as prepare_node_database

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "region.example.toml"


def region_text(prefix: str) -> str:
    """The example region with its vhost and databases renamed after ``prefix``."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^vhost = "kpx"', f'vhost = "{prefix}"', text)
    text = re.sub(r'(?m)^database = "kpx_registry"', f'database = "{prefix}_registry"', text)
    return re.sub(
        r"(?m)^\[(members|partners)\.([A-Z]{2})\]$",
        lambda m: f'{m.group(0)}\ndatabase = "{prefix}_node_{m.group(2).lower()}"',
        text,
    )


@contextmanager
def provisioned_region(
    tmp: Path, prefix: str, amqp_url: str, database_url: str
) -> Iterator[Runtime]:
    """Write, init and yield a private region; tear it down afterwards."""
    path = tmp / "region.toml"
    path.write_text(region_text(prefix), encoding="utf-8")
    settings = Settings.from_env(
        {
            "KPX_AMQP_URL": amqp_url,
            "KPX_DATABASE_URL": database_url,
            "KPX_STATE_DIR": str(tmp / "state"),
        },
        region=str(path),
    )
    rt = Runtime.load(settings)
    try:
        provision.init_region(rt, prepare_node_database)
        yield rt
    finally:
        admin = Admin(amqp_url)
        try:
            admin.delete_vhost(rt.region.vhost)
        finally:
            admin.close()
        for name in (
            rt.region.registry_database,
            *(rt.region.node(c).database for c in rt.region.node_codes),
        ):
            postgres.drop_database(database_url, name)
