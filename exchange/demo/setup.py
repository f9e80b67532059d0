"""The demo's private region: its own region file, vhost and databases, rebuilt every run.

The region file is the example region (``deploy/region.example.toml``) with the vhost
``kpx_demo``, the databases ``kpx_demo_registry`` and ``kpx_demo_node_<code>``, and only the
members chosen with ``--members``; it lives in ``<state>/demo/region.toml``. Every run starts
from a clean slate — the vhost and every demo database are dropped and ``region init``
recreates them — so the report's counts are exactly the plan's. Real regions are never
touched: every name carries the ``kpx_demo`` prefix.

Errors: ConfigError (no example region file), Broker*/Database* errors from init.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exchange.adapters import postgres
from exchange.adapters.management import Admin
from exchange.app import provision
from exchange.app.runtime import Runtime
from exchange.app.settings import Settings, example_region_path
from exchange.errors import ConfigError
from nodes.service import migrate as prepare_node_database

PREFIX = "kpx_demo"
EXAMPLE = example_region_path()  # package data: the demo runs from an installed wheel too


def example_region() -> dict[str, Any]:
    """The example region file, parsed; ConfigError when this is not a source checkout."""
    try:
        with EXAMPLE.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"kpx demo needs {EXAMPLE} (reinstall kpx)") from exc


def demo_region(example: Mapping[str, Any], members: Sequence[str]) -> dict[str, Any]:
    """The example renamed to the demo's vhost and databases, keeping only ``members``."""
    doc: dict[str, Any] = json.loads(json.dumps(example))  # a deep copy of plain TOML data
    doc["broker"] = {"vhost": PREFIX}
    doc["registry"] = {"database": f"{PREFIX}_registry"}
    doc["members"] = {c: v for c, v in doc["members"].items() if c in members}
    for table in ("members", "partners"):
        for code, node in doc.get(table, {}).items():
            node["database"] = f"{PREFIX}_node_{code.lower()}"
    return doc


def toml_text(doc: Mapping[str, Any], prefix: str = "") -> str:
    """A TOML document of plain tables, strings, numbers and booleans (what region files use)."""
    lines = [f"{key} = {_value(v)}" for key, v in doc.items() if not isinstance(v, Mapping)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in doc.items():
        if isinstance(value, Mapping):
            name = f"{prefix}.{key}" if prefix else key
            text += f"\n[{name}]\n" + toml_text(value, name)
    return text


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    raise ConfigError(f"cannot write {v!r} to the demo region file")


def write_region(state_dir: Path, members: Sequence[str]) -> Path:
    """Write ``<state>/demo/region.toml``; return its path."""
    folder = demo_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "region.toml"
    header = "# Written by `kpx demo`: a private copy of deploy/region.example.toml.\n"
    path.write_text(header + toml_text(demo_region(example_region(), members)), "utf-8")
    return path


def demo_dir(state_dir: Path) -> Path:
    """Where the demo keeps its region file, logs and process ids."""
    return state_dir / "demo"


def clean_slate(settings: Settings, example: Mapping[str, Any]) -> None:
    """Drop the demo vhost and every demo database (of any member the example lists)."""
    admin = Admin(settings.amqp_url, settings.management_url)
    try:
        admin.delete_vhost(PREFIX)
    finally:
        admin.close()
    codes = [*example.get("members", {}), *example.get("partners", {})]
    for name in [f"{PREFIX}_registry", *(f"{PREFIX}_node_{c.lower()}" for c in codes)]:
        postgres.drop_database(settings.database_url, name)


def prepare(settings: Settings, members: Sequence[str]) -> Runtime:
    """Write the region file, wipe the previous demo and run ``region init``."""
    path = write_region(settings.state_dir, members)
    rt = Runtime.load(dataclasses.replace(settings, region_path=path))
    clean_slate(rt.settings, example_region())
    provision.init_region(rt, prepare_node_database)
    return rt
