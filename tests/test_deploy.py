"""The deployment files: Prometheus config and alert rules, Grafana dashboard, compose, image.

promtool is required (Debian's `prometheus` package, installed by `make services`): without it
these tests fail, never skip. `docker compose config` is checked only where the Compose plugin
exists, since the Docker client here may lack it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "kpx.json"
COMPOSE = DEPLOY / "compose.yaml"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Members then partners, in region-file order: node metrics port = 9410 + index.
NODES = ["BW", "ZA", "NA", "LS", "AO", "CD", "ZW", "EU", "AE", "IN"]

PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def _yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        pytest.fail("PyYAML is not installed: add `pyyaml` to the dev extras in pyproject.toml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: run `make services` (Debian package prometheus)")
    return subprocess.run(
        [exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@cache
def documented_metrics() -> frozenset[str]:
    """Metric names of the table in docs/architecture.md, histograms with their series."""
    names: set[str] = set()
    for match in re.finditer(r"^\| `(kpx_[a-z0-9_]+)` \| (\w+) \|", ARCHITECTURE.read_text(), re.M):
        name, kind = match.groups()
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords removed)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if word.lower() in PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def undocumented(names: set[str]) -> set[str]:
    return {
        n
        for n in names
        if n not in documented_metrics() and n != "up" and not n.startswith("rabbitmq_")
    }


def alert_rules() -> list[dict[str, Any]]:
    groups = _yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def compose_services() -> dict[str, Any]:
    return _yaml(COMPOSE)["services"]


def test_promtool_accepts_the_prometheus_config_and_its_rule_file() -> None:
    result = _promtool("check", "config", "deploy/prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    result = _promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = _promtool("test", "rules", "deploy/prometheus/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_summary_description_and_runbook() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        runbook = annotations.get("runbook", "")
        assert runbook.count(". ") >= 2, f"{rule['alert']}: runbook needs several sentences"
        assert "`kpx " in runbook or "`rabbitmq" in runbook, f"{rule['alert']}: names no command"


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    fires, quiet = set(), set()
    for case in _yaml(PROMETHEUS / "alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_the_alerts_the_runbooks_promise_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "OutboxBacklogOld",
        "DeadLettersArriving",
        "NoConsumerOnQueue",
        "UnconfirmedPublishes",
        "DiscrepanciesRising",
        "SequenceGapsOpen",
        "RejectionsSpiking",
        "NodeSilentWhilePeersTrade",
        "KpxTargetDown",
        "BrokerBlocked",
        "EndToEndLatencyHigh",
    } <= names


def test_every_alert_expression_names_only_documented_metrics() -> None:
    for rule in alert_rules():
        assert undocumented(metric_names(rule["expr"])) == set(), rule["alert"]


def test_the_metric_name_parser_finds_metrics_and_ignores_functions_and_labels() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, producer) (rate(kpx_end_to_end_seconds_bucket"
        '{producer=~"$participant"}[$__rate_interval]))) > 5 and on () up offset 1h'
    )
    assert metric_names(expr) == {"kpx_end_to_end_seconds_bucket", "up"}
    assert undocumented({"kpx_made_up_total"}) == {"kpx_made_up_total"}


def test_the_dashboard_is_the_kpx_overview_with_a_participant_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "kpx-overview"
    assert dashboard["schemaVersion"] >= 36
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["participant"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Flows by participant", "Pipeline health", "Latencies", "Discrepancies"]


def test_every_dashboard_query_names_only_documented_metrics() -> None:
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        assert undocumented(metric_names(expr)) == set(), expr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    grafana_variables = {"$__rate_interval": "1m", "$__range": "6h", "$participant": ".*"}
    rules = []
    for index, expr in enumerate(dashboard_exprs()):
        for variable, value in grafana_variables.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"kpx:dashboard_query_{index}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_every_documented_kpx_metric() -> None:
    shown = set().union(*(metric_names(e) for e in dashboard_exprs()))
    base = {n for n in documented_metrics() if not n.endswith(("_bucket", "_sum", "_count"))}
    histograms = {n for n in base if f"{n}_bucket" in documented_metrics()}
    missing = {n for n in base - histograms if n not in shown}
    missing |= {n for n in histograms if f"{n}_bucket" not in shown}
    assert missing == set()


def test_grafana_provisions_the_prometheus_datasource_the_panels_use() -> None:
    datasource = _yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    uids = {p["datasource"]["uid"] for p in panels if "datasource" in p}
    assert uids == {datasource["uid"]}
    provider = _yaml(DEPLOY / "grafana/provisioning/dashboards/kpx.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_runs_a_node_for_every_member_and_partner_on_its_metrics_port() -> None:
    services = compose_services()
    for index, code in enumerate(NODES):
        service = services[f"node-{code.lower()}"]
        command = [str(part) for part in service["command"]]
        assert command[:4] == ["node", "run", "--member", code]
        assert command[command.index("--metrics-port") + 1] == str(9410 + index)


def test_compose_starts_services_only_after_a_successful_region_init() -> None:
    services = compose_services()
    assert services["init"]["command"] == ["region", "init"]
    for name in ["registry", "reconciler", *(f"node-{c.lower()}" for c in NODES)]:
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
        environment = services[name]["environment"]
        for key in ("KPX_REGION", "KPX_AMQP_URL", "KPX_DATABASE_URL", "KPX_STATE_DIR"):
            assert key in environment, f"{name} lacks {key}"


def test_prometheus_scrapes_every_kpx_service_of_the_compose_file() -> None:
    config = _yaml(PROMETHEUS / "prometheus.yml")
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["kpx-registry"] == ["registry:9401"]
    assert targets["kpx-reconciler"] == ["reconciler:9402"]
    assert targets["kpx-nodes"] == [f"node-{c.lower()}:{9410 + i}" for i, c in enumerate(NODES)]
    hosts = {t.split(":")[0] for job in targets.values() for t in job} - {"localhost"}
    assert hosts <= set(compose_services())


def test_the_image_runs_kpx_as_a_non_root_user_without_the_virtualenv() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM python:3.11-slim" in dockerfile
    assert 'ENTRYPOINT ["kpx"]' in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", "var/"} <= set(ignored)


def test_docker_compose_accepts_the_compose_file() -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        != 0
    ):
        pytest.skip("this Docker client has no Compose plugin (`docker compose`)")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
