"""A plain (not editable) install works outside the checkout: the wheel carries its data.

The module builds the wheel from a copy of the repository, installs it into a fresh virtual
environment and runs everything from a directory outside both, with no PYTHONPATH: the Avro
schemas and the example region must come from the installed package (importlib.resources).
Then that install runs a region on the real services: ``kpx region init``, the registry, a
node, and ``kpx node submit`` of a certificate the registry accepts.

Marked ``install`` (about a minute: the build and the dependencies' installation); it runs
with ``make test``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.region import region_text
from support.services_up import Fleet, Service, free_ports

from exchange.adapters import postgres
from exchange.adapters.management import Admin
from exchange.domain.region import load_region

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[1]
# What a checkout holds beyond the sources; a wheel is built from the rest.
LEFT_OUT = (".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
            ".hypothesis", "benchmarks")  # fmt: skip
TIMEOUT = 300  # seconds for a build or an installation on a loaded two-core machine
PREFIX = "kpxt_install"


@dataclass(frozen=True)
class Install:
    """The fresh venv's bin directory, a working directory outside everything, and an env."""

    bin: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]], cwd=self.cwd, env=self.env, input=stdin,
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip


def _step(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """kpx installed from its wheel into a fresh venv (built from a copy, not the checkout)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "src"
    # symlinks=True: the wheel build must follow the package's symlinks to schemas/ itself.
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*LEFT_OUT))
    _step([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"),
           str(source)], root)  # fmt: skip
    (wheel,) = (root / "dist").glob("kpx-*.whl")
    shutil.rmtree(source)  # nothing of the sources is left to fall back on
    _step([sys.executable, "-m", "venv", str(root / "venv")], root)
    _step([str(root / "venv" / "bin" / "pip"), "install", "-q", str(wheel)], root)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KPX_", "PYTHON"))}
    env["PATH"] = f"{root / 'venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return Install(root / "venv" / "bin", elsewhere, env)


def test_the_installed_package_is_not_the_checkout(installed: Install) -> None:
    done = installed.run("python", "-c", "import exchange, nodes; print(exchange.__file__)")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(installed.bin.parent)


def test_the_installed_wheel_checks_its_schemas(installed: Install) -> None:
    done = installed.run("kpx", "schemas", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FULL_TRANSITIVE compatible" in done.stdout
    assert str(installed.bin.parent) in done.stdout  # the schemas of the installed package


ROUND_TRIP = """
import datetime, json
from exchange.wire.codec import default_store
store = default_store()
record = {"participant": "CF", "status": "SUSPENDED",
          "effective_on": datetime.date(2026, 12, 1), "reason": "review"}
name, back = store.decode(store.encode("ParticipantStatusChanged", record))
print(json.dumps([name, back], default=str))
"""


def test_the_installed_wheel_encodes_and_decodes(installed: Install) -> None:
    done = installed.run("python", "-c", ROUND_TRIP)
    assert done.returncode == 0, done.stderr
    name, back = json.loads(done.stdout)
    assert name == "ParticipantStatusChanged"
    assert back == {"participant": "CF", "status": "SUSPENDED", "effective_on": "2026-12-01",
                    "reason": "review"}  # fmt: skip


def test_the_installed_wheel_defaults_to_its_own_example_region(installed: Install) -> None:
    done = installed.run("python", "-c",
                         "from exchange.app.settings import Settings; "
                         "print(Settings.from_env({}).region_path)")  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path.is_relative_to(installed.bin.parent)
    assert path.read_bytes() == (REPO / "deploy" / "region.example.toml").read_bytes()


DEMO_DATA = """
from exchange.demo import setup, traffic
print(len(traffic.load_profiles()), sorted(setup.example_region()["members"]))
"""


def test_the_installed_wheel_carries_the_demos_data(installed: Install) -> None:
    done = installed.run("python", "-c", DEMO_DATA)
    assert done.returncode == 0, done.stderr
    profiles, members = done.stdout.split(" ", 1)
    assert int(profiles) > 0
    assert members.strip() == str(["AO", "BW", "CD", "LS", "NA", "ZA", "ZW"])


@pytest.fixture
def region_env(
    installed: Install, tmp_path: Path, amqp_admin_url: str, database_server_url: str
) -> Iterator[Install]:
    """The install pointed at a private copy of the example region; removed afterwards."""
    path = tmp_path / "region.toml"
    path.write_text(region_text(PREFIX), encoding="utf-8")
    env = installed.env | {
        "KPX_REGION": str(path),
        "KPX_AMQP_URL": amqp_admin_url,
        "KPX_DATABASE_URL": database_server_url,
        "KPX_STATE_DIR": str(tmp_path / "state"),
    }
    try:
        yield Install(installed.bin, installed.cwd, env)
    finally:
        region = load_region(path)
        admin = Admin(amqp_admin_url)
        try:
            admin.delete_vhost(region.vhost)
        finally:
            admin.close()
        for name in (region.registry_database,
                     *(region.node(c).database for c in region.node_codes)):  # fmt: skip
            postgres.drop_database(database_server_url, name)


ISSUE = {"op": "issue", "certificate": {
    "destination": "AE",
    "origin": {"type": "UNMIXED", "countries": ["BW"]},
    "exporter": {"name": "Okavango Diamond Company", "address": "Gaborone", "country": "BW",
                 "licence_no": "BW-EX-1"},
    "importer": {"name": "DMCC Trader", "address": "Dubai", "country": "AE", "licence_no": "IM-9"},
    "date_of_issue": "2026-11-20", "date_of_expiry": "2026-12-20",
    "parcels": [{"parcel_no": 1, "hs_code": "7102.31", "carats": "1000.50",
                 "value_usd": "192000.00", "origin_country": "BW"}],
    "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
}}  # fmt: skip


def test_the_installed_wheel_runs_a_region_outside_the_checkout(
    region_env: Install, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = region_env.run("kpx", "region", "init")
    assert done.returncode == 0, done.stdout + done.stderr
    ports = free_ports(2)
    kpx = str(region_env.bin / "kpx")
    fleet = Fleet(
        [Service("registry", [kpx, "registry", "run", "--metrics-port", str(ports[0])],
                 ports[0], tmp_path / "logs" / "registry.log"),
         Service("node-BW", [kpx, "node", "run", "--member", "BW", "--metrics-port",
                             str(ports[1])], ports[1], tmp_path / "logs" / "node-BW.log")],
        region_env.env,
    )  # fmt: skip
    monkeypatch.chdir(region_env.cwd)  # the services start outside the checkout too
    try:
        fleet.start()
        fleet.wait_healthy()
        done = region_env.run("kpx", "node", "submit", "--member", "BW", "-",
                              stdin=json.dumps(ISSUE) + "\n")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.split(" ")[:2] == ["1", "ok"]
        assert _registry_state(region_env, fleet) == "accepted"
        assert fleet.terminate() == {"registry": 0, "node-BW": 0}
    finally:
        fleet.kill_all()


def _registry_state(install: Install, fleet: Fleet, timeout: float = 60.0) -> str | None:
    """The registry's answer to BW's certificate once it has one (bounded wait)."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline and not fleet.exited():
        done = install.run("kpx", "node", "certificates", "--member", "BW", "--json")
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)
        state = row["registry_state"]
        if state not in (None, "pending"):
            return str(state)
        time.sleep(0.3)
    raise AssertionError(f"registry state still {state!r}\n{fleet.tails()}")
