"""Every service's /metrics and /healthz, `kpx check` and Prometheus, on a running region.

One private copy of the example region is provisioned for the module; the registry, the
reconciler and one node per member and partner run as real ``kpx`` subprocesses on free
ports (``support.services_up``), a few operations are traded through ``kpx node submit``,
and the region is drained. The tests then read what the services serve. They run in file
order: the `kpx check` ones and the last stop services (one node, then all), so they come after
every test that needs the whole region up. Last, the registry, the reconciler and a node are
started pointing at a broker port nobody serves, to see their /healthz and SIGTERM cut off.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.services_up import (
    Fleet,
    free_ports,
    http_get,
    kpx_argv,
    service_env,
    services_started,
    services_up,
)

from exchange.app.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# Members then partners of deploy/region.example.toml, in region-file order.
NODES = ["BW", "ZA", "NA", "LS", "AO", "CD", "ZW", "EU", "AE", "IN"]
SERVICES = ["registry", "reconciler", *(f"node-{code}" for code in NODES)]
STOPPED_NODE = "IN"  # the node `kpx check` must miss; nobody trades with it here
# The management API refreshes consumer counts every 5 s; give it a few refreshes.
CHECK_TIMEOUT = 25.0


# --------------------------------------------------------------------------- the region


@dataclass(frozen=True)
class Trade:
    """What was submitted: certificate ids by issuing member."""

    certificates: dict[str, list[str]]


@pytest.fixture(scope="module")
def fleet(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with services_up(rt, tmp_path_factory.mktemp("logs")) as running:
        assert sorted(running.services) == sorted(SERVICES)
        yield running


@pytest.fixture(scope="module")
def trade(rt: Runtime, fleet: Fleet) -> Trade:
    """Certificates BW->AE and ZA->EU, AE's confirmation of one, BW's production; drained."""
    today = datetime.now(UTC).date()
    bw = submit(fleet, rt, "BW", [issue("BW", "AE", today), issue("BW", "AE", today)])
    za = submit(fleet, rt, "ZA", [issue("ZA", "EU", today)])
    half = f"{today.year}-H{1 if today.month <= 6 else 2}"
    submit(fleet, rt, "AE", [confirm(bw[0], today)])
    submit(fleet, rt, "BW", [production(half)])
    done = kpx(rt, "region", "drain", "--timeout", "60", timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr + "\n" + fleet.tails()
    return Trade({"BW": bw, "ZA": za})


def issue(member: str, destination: str, today: date) -> str:
    """An ``issue`` line: one parcel of the member's own rough, numbered by the node."""
    certificate = {
        "destination": destination,
        "origin": {"type": "UNMIXED", "countries": [member]},
        "exporter": {"name": f"{member} Exporter", "address": "Capital", "country": member,
                     "licence_no": f"{member}-EX-1"},
        "importer": {"name": "Trader", "address": "Port", "country": destination,
                     "licence_no": "IM-9"},
        "date_of_issue": today.isoformat(),
        "date_of_expiry": (today + timedelta(days=30)).isoformat(),
        "parcels": [{"parcel_no": 1, "hs_code": "7102.31", "carats": "1000.50",
                     "value_usd": "192000.00", "origin_country": member}],
        "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
    }  # fmt: skip
    return json.dumps({"op": "issue", "certificate": certificate})


def confirm(certificate_id: str, today: date) -> str:
    return json.dumps({"op": "confirm_import", "certificate_id": certificate_id,
                       "issuing_participant": "XS", "received_on": today.isoformat(),
                       "parcels": 1, "carats": "1000.50", "value_usd": "192000.00",
                       "seal_intact": True, "remarks": ""})  # fmt: skip


def production(period: str) -> str:
    return json.dumps({"op": "declare_production", "period": period, "carats": "50000.00",
                       "value_usd": "9000000.00", "producer": "BW-MINE-JWANENG"})  # fmt: skip


def kpx(
    rt: Runtime, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        kpx_argv(rt, *args), input=stdin, capture_output=True, text=True,
        env=service_env(rt), timeout=timeout, check=False,
    )  # fmt: skip


def submit(fleet: Fleet, rt: Runtime, member: str, lines: list[str]) -> list[str]:
    """``kpx node submit --member XX -``; the subjects of its ``ok`` lines."""
    done = kpx(rt, "node", "submit", "--member", member, "-", stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    results = [line.split(" ") for line in done.stdout.splitlines()]
    assert [r[1] for r in results] == ["ok"] * len(lines), done.stdout
    return [r[2] for r in results]


# --------------------------------------------------------------------------- reading metrics


def scrape(fleet: Fleet, service: str) -> str:
    status, body = http_get(f"{fleet[service].url}/metrics")
    assert status == 200, f"{service} /metrics answered {status}"
    return body


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def documented_metrics() -> list[str]:
    """The metric names of the table in docs/architecture.md."""
    return re.findall(r"^\| `(kpx_[a-z0-9_]+)` \|", ARCHITECTURE.read_text("utf-8"), re.M)


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: run `make services` (Debian package prometheus)")
    return exe


# --------------------------------------------------------------------------- tests


def test_every_service_answers_healthz_with_200_while_it_runs(fleet: Fleet) -> None:
    answers = {name: http_get(f"{s.url}/healthz")[0] for name, s in fleet.services.items()}
    assert answers == dict.fromkeys(SERVICES, 200)


def test_the_traded_certificates_are_accepted_by_the_registry(rt: Runtime, trade: Trade) -> None:
    for member, ids in trade.certificates.items():
        done = kpx(rt, "node", "certificates", "--member", member, "--json")
        assert done.returncode == 0, done.stderr
        states = {row["certificate_id"]: row["registry_state"] for row in json.loads(done.stdout)}
        assert states == dict.fromkeys(ids, "accepted")


@pytest.mark.parametrize("service", SERVICES)
def test_promtool_check_metrics_passes_on_the_endpoint_of(
    fleet: Fleet, trade: Trade, service: str
) -> None:
    done = subprocess.run(
        [promtool(), "check", "metrics"], input=scrape(fleet, service), capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("service", ["registry", "reconciler", "node-BW"])
def test_every_documented_metric_is_exposed_by(fleet: Fleet, service: str) -> None:
    exposed = {family.name for family in text_string_to_metric_families(scrape(fleet, service))}
    # The parser names a counter family without its `_total`.
    missing = [m for m in documented_metrics() if m.removesuffix("_total") not in exposed]
    assert documented_metrics() and not missing


def test_a_node_counts_the_events_it_published_and_the_broker_confirmed(
    fleet: Fleet, trade: Trade
) -> None:
    text = scrape(fleet, "node-BW")
    # Two certificates and a production declaration.
    assert value(text, "kpx_outbox_published_total", producer="BW") >= 3
    assert value(text, "kpx_outbox_confirmed_total", producer="BW") >= 3
    assert value(text, "kpx_outbox_backlog_events", producer="BW") == 0
    assert value(text, "kpx_publish_confirm_seconds_count", producer="BW") > 0
    assert value(text, "kpx_broker_connected", service="inbox-BW") == 1


def test_a_partner_node_counts_the_shipments_announced_to_it(fleet: Fleet, trade: Trade) -> None:
    text = scrape(fleet, "node-AE")
    assert value(text, "kpx_inbox_received_total", member="AE", event_type="ShipmentExpected") == 2
    assert value(text, "kpx_outbox_confirmed_total", producer="AE") >= 1


def test_the_registry_counts_accepted_events_certificates_carats_and_confirmations(
    fleet: Fleet, trade: Trade
) -> None:
    text = scrape(fleet, "registry")
    accepted = {
        producer: value(text, "kpx_events_consumed_total", service="registry",
                        producer=producer, outcome="accepted")
        for producer in ("BW", "ZA", "AE")
    }  # fmt: skip
    assert accepted == {"BW": 3, "ZA": 1, "AE": 1}
    assert value(text, "kpx_certificates_accepted_total", participant="BW") == 2
    assert value(text, "kpx_certificates_accepted_total", participant="ZA") == 1
    assert value(text, "kpx_carats_accepted_total", participant="BW") == pytest.approx(2001.0)
    assert value(text, "kpx_usd_accepted_total", participant="ZA") == pytest.approx(192000.0)
    assert value(text, "kpx_import_confirmations_total", participant="AE") == 1
    assert value(text, "kpx_end_to_end_seconds_count") == 5
    assert value(text, "kpx_events_rejected_total") == 0


def test_the_reconciler_counts_the_accepted_events_it_reconciled(
    fleet: Fleet, trade: Trade
) -> None:
    text = scrape(fleet, "reconciler")
    assert value(text, "kpx_reconciler_events_total", event_type="CertificateIssued") == 3
    assert value(text, "kpx_reconciler_events_total", event_type="ImportConfirmed") == 1
    assert value(text, "kpx_reconciler_events_total", event_type="ProductionDeclared") == 1


def test_prometheus_scrapes_every_service_up_and_sums_the_accepted_certificates(
    fleet: Fleet, trade: Trade, tmp_path: Path
) -> None:
    with prometheus(fleet, tmp_path) as api:
        targets = wait_for(lambda: kpx_targets_up(api), timeout=30, what="every kpx target up")
        assert sorted(targets) == sorted(SERVICES)
        total = wait_for(
            lambda: query(api, "sum(kpx_certificates_accepted_total)"), timeout=30,
            what="a non-zero sum(kpx_certificates_accepted_total)",
        )  # fmt: skip
        assert total == 3


def test_kpx_check_exits_0_while_every_service_runs(rt: Runtime, fleet: Fleet) -> None:
    wait_for(lambda: kpx(rt, "check").returncode == 0, timeout=CHECK_TIMEOUT,
             what="`kpx check` to exit 0")  # fmt: skip


def test_kpx_check_exits_1_and_names_the_queue_once_a_node_is_stopped(
    rt: Runtime, fleet: Fleet
) -> None:
    assert fleet.terminate(f"node-{STOPPED_NODE}") == {f"node-{STOPPED_NODE}": 0}
    done = wait_for(
        lambda: (result := kpx(rt, "check")).returncode == 1 and result,
        timeout=CHECK_TIMEOUT, what="`kpx check` to exit 1",
    )  # fmt: skip
    assert done.stderr.splitlines() == [f"queue kpx.node.{STOPPED_NODE} has no consumer"]


def test_every_service_drains_and_exits_0_on_sigterm(fleet: Fleet) -> None:
    running = [s.name for s in fleet.running()]
    assert len(running) >= len(SERVICES) - 1
    assert fleet.terminate(*running) == dict.fromkeys(running, 0), fleet.tails()


# --------------------------------------------------------------------------- cut off


@pytest.fixture(scope="module")
def cut_off(
    rt: Runtime, fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Fleet, dict[str, int]]]:
    """The registry, the reconciler and BW's node pointed at a broker port nobody serves;
    started after the region's own services stopped, with their first /healthz answers."""
    assert not fleet.running(), "the region's own services must have stopped first"
    (port,) = free_ports(1)
    logs = tmp_path_factory.mktemp("cut-off")
    nowhere = f"amqp://guest:guest@127.0.0.1:{port}/"
    with services_started(rt, logs, ["BW"], amqp_url=nowhere) as services:
        yield services, services.wait_serving()


def test_healthz_answers_503_while_a_service_cannot_reach_the_broker(
    cut_off: tuple[Fleet, dict[str, int]],
) -> None:
    services, first = cut_off
    time.sleep(1.0)  # past the first connection attempt, which fails at once
    later = {name: http_get(f"{s.url}/healthz")[0] for name, s in services.services.items()}
    assert (first, later) == ({"registry": 503, "reconciler": 503, "node-BW": 503},) * 2


def test_a_service_cut_off_from_the_broker_still_exits_0_on_sigterm(
    cut_off: tuple[Fleet, dict[str, int]],
) -> None:
    services, _ = cut_off
    # The retry backoff (at most 15 s) may run out before the service looks at its stop flag.
    codes = services.terminate(timeout=40)
    assert codes == {"registry": 0, "reconciler": 0, "node-BW": 0}, services.tails()


# --------------------------------------------------------------------------- Prometheus


def wait_for(probe: Callable[[], Any], *, timeout: float, what: str, every: float = 0.5) -> Any:
    """The first truthy result of ``probe()`` within ``timeout`` seconds; else fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}; last: {result!r}")
        time.sleep(every)


def scrape_config(fleet: Fleet) -> dict[str, Any]:
    """Like deploy/prometheus/prometheus.yml (same job names), on this fleet's ports."""

    def target(name: str, **labels: str) -> dict[str, Any]:
        return {"targets": [f"127.0.0.1:{fleet[name].port}"], "labels": labels}

    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "kpx-registry", "static_configs": [target("registry")]},
            {"job_name": "kpx-reconciler", "static_configs": [target("reconciler")]},
            {"job_name": "kpx-nodes",
             "static_configs": [target(f"node-{code}", node=code) for code in NODES]},
        ],
    }  # fmt: skip


@contextmanager
def prometheus(fleet: Fleet, tmp: Path) -> Iterator[str]:
    """Debian's Prometheus scraping ``fleet`` every second; yields its API root URL."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed: run `make services` (Debian package)")
    config = tmp / "prometheus.yml"
    config.write_text(json.dumps(scrape_config(fleet), indent=2), "utf-8")  # JSON is YAML
    (port,) = free_ports(1)
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: proc.poll() is None and ready(url), timeout=30,
            what=f"Prometheus ready (exit {proc.poll()}): {log.read_text()[-800:]}",
        )  # fmt: skip
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def ready(url: str) -> bool:
    try:
        return http_get(f"{url}/-/ready", timeout=1.0)[0] == 200
    except (urllib.error.URLError, OSError):
        return False


def api(url: str, path: str, **params: str) -> Any:
    status, body = http_get(f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
    assert status == 200, body
    reply = json.loads(body)
    assert reply["status"] == "success", reply
    return reply["data"]


def kpx_targets_up(url: str) -> list[str]:
    """Service names of the kpx targets, once every one is up (empty until then)."""
    targets = api(url, "targets")["activeTargets"]
    if not targets or any(t["health"] != "up" for t in targets):
        return []
    names = []
    for t in targets:
        job, node = t["labels"]["job"], t["labels"].get("node")
        names.append(f"node-{node}" if job == "kpx-nodes" else job.removeprefix("kpx-"))
    return names


def query(url: str, expr: str) -> float:
    """The value of an instant query with one result (0 when it has none yet)."""
    result = api(url, "query", query=expr)["result"]
    return float(result[0]["value"][1]) if result else 0.0
