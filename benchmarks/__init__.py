"""Reproducible throughput and latency measurements (``python -m benchmarks``, ``make bench``).

Each module measures one thing on the real services named by ``KPX_AMQP_URL`` and
``KPX_DATABASE_URL`` (local defaults), in throw-away vhosts and databases it removes, and
takes a size argument:

- ``ceilings``: raw pika async-confirm publish, raw pika consume, PostgreSQL batched insert
  and COPY — what this machine can do at all, measured in the same run;
- ``relay_bench``: the outbox relay's throughput with confirms (a ratio of the raw publish
  ceiling) and the issue → broker-confirmed latency at a moderate rate;
- ``naive_baseline``: JSON, a confirm per message, a commit per event, end to end;
- ``fuzz``: random and mutated bytes through decode and open_envelope;
- ``registry_bench``, ``reconcile_bench`` (when present): the registry's and the
  reconciler's figures;
- ``node_web_bench``: the node's HTTP API against ``kpx node submit``, and a page of 50
  certificates among 100,000.

Every measuring module returns :class:`Row` objects (``registry_bench`` returns a dict that
``__main__`` turns into rows; ``reconcile_bench.rows`` returns rows, its ``run`` a dict);
``__main__`` writes them as the table of ``benchmarks/RESULTS.md`` with the machine and the date.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from exchange.adapters import postgres
from exchange.adapters.management import Admin
from exchange.app import provision
from exchange.app.runtime import Runtime
from exchange.app.settings import Settings
from nodes.service import migrate as prepare_node_database

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_REGION = ROOT / "deploy" / "region.example.toml"


@dataclass(frozen=True)
class Row:
    """One line of the results table: a figure, beside its ceiling and goal when it has them."""

    what: str
    figure: float
    unit: str
    ceiling: float | None = None
    ceiling_what: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """figure / ceiling, when there is a ceiling."""
        return None if not self.ceiling else self.figure / self.ceiling


def amqp_admin_url() -> str:
    """The broker administrator's URL."""
    return os.environ.get("KPX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def database_server_url() -> str:
    """The PostgreSQL server URL."""
    return os.environ.get("KPX_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin_user() -> str:
    return urlsplit(amqp_admin_url()).username or "guest"


def scratch_name() -> str:
    """A unique name for a throw-away vhost or database."""
    return f"kpxb_{os.getpid()}_{secrets.token_hex(4)}"


@contextmanager
def scratch_vhost() -> Iterator[tuple[str, str]]:
    """A throw-away vhost (admin has full rights); yields (name, admin URL on it)."""
    name = scratch_name()
    admin = Admin(amqp_admin_url())
    try:
        empty = {k: [] for k in ("permissions", "topic_permissions", "exchanges", "queues",
                                 "bindings")}  # fmt: skip
        # apply() creates the vhost and gives the administrator full rights on it
        admin.apply({"vhosts": [{"name": name}], **empty}, admin_user=_admin_user())
        yield name, amqp_admin_url().rstrip("/") + "/" + name
    finally:
        admin.delete_vhost(name)
        admin.close()


@contextmanager
def scratch_database() -> Iterator[str]:
    """A throw-away database; yields its DSN."""
    name = scratch_name()
    postgres.create_database(database_server_url(), name)
    try:
        yield postgres.dsn_for(database_server_url(), name)
    finally:
        postgres.drop_database(database_server_url(), name)


@contextmanager
def scratch_region() -> Iterator[Runtime]:
    """The example region under a unique vhost and databases, initialised, removed afterwards."""
    prefix = scratch_name()
    text = EXAMPLE_REGION.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^vhost = "kpx"', f'vhost = "{prefix}"', text)
    text = re.sub(r'(?m)^database = "kpx_registry"', f'database = "{prefix}_registry"', text)
    text = re.sub(
        r"(?m)^\[(members|partners)\.([A-Z]{2})\]$",
        lambda m: f'{m.group(0)}\ndatabase = "{prefix}_node_{m.group(2).lower()}"',
        text,
    )
    with tempfile.TemporaryDirectory(prefix="kpxb-") as tmp:
        path = Path(tmp) / "region.toml"
        path.write_text(text, encoding="utf-8")
        settings = Settings.from_env(
            {"KPX_AMQP_URL": amqp_admin_url(), "KPX_DATABASE_URL": database_server_url(),
             "KPX_STATE_DIR": str(Path(tmp) / "state")},
            region=str(path),
        )  # fmt: skip
        rt = Runtime.load(settings)
        try:
            provision.init_region(rt, prepare_node_database)
            yield rt
        finally:
            admin = Admin(amqp_admin_url())
            try:
                admin.delete_vhost(rt.region.vhost)
            finally:
                admin.close()
            for name in (
                rt.region.registry_database,
                *(rt.region.node(c).database for c in rt.region.node_codes),
            ):
                postgres.drop_database(database_server_url(), name)


def issue_line(destination: str = "AE") -> str:
    """A valid ``issue`` operation (the node allocates the number)."""
    return json.dumps({"op": "issue", "certificate": {
        "destination": destination,
        "origin": {"type": "UNMIXED", "countries": ["BW"]},
        "exporter": {"name": "Okavango Diamond Company", "address": "Gaborone",
                     "country": "BW", "licence_no": "BW-EX-1"},
        "importer": {"name": "DMCC Trader", "address": "Dubai", "country": destination,
                     "licence_no": "IM-9"},
        "date_of_issue": "2026-11-20", "date_of_expiry": "2026-12-20",
        "parcels": [{"parcel_no": 1, "hs_code": "7102.31", "carats": "1000.50",
                     "value_usd": "192000.00", "origin_country": "BW"}],
        "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
    }})  # fmt: skip
