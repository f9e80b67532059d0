"""Deployment defaults (issue 12 item 5): no usable credential committed, nothing opened wide.

Static checks of deploy/ and the settings; the broker-side limits and the TLS listener are
tested against real brokers in tests/test_keys_custody.py and tests/test_keys_tls.py.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import yaml

from exchange.adapters import metrics
from exchange.app.settings import Settings
from exchange.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
REGION = str(DEPLOY / "region.example.toml")


def test_the_committed_definitions_carry_no_usable_credential() -> None:
    definitions = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    assert all(user["password_hash"] == "" for user in definitions["users"])
    assert not any("administrator" in user["tags"] for user in definitions["users"])


def test_compose_has_no_default_password_and_refuses_to_start_without_one() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert not re.search(r"PASSWORD:-", text), "a password with a default"
    assert "kpx-admin}" not in text
    for name in ("KPX_BROKER_ADMIN_PASSWORD", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{name}:?" in text


def test_compose_publishes_nothing_beyond_loopback() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_the_broker_loads_definitions_generated_at_deploy_time() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert services["rabbitmq"]["depends_on"]["definitions"]["condition"] == (
        "service_completed_successfully"
    )
    assert "export" in services["definitions"]["command"]
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text()
    assert "load_definitions = /etc/rabbitmq/generated/definitions.json" in conf


@pytest.mark.parametrize(
    "url",
    [
        "amqp://kpx-admin:kpx-admin@rabbitmq:5672/",
        "amqp://admin:admin@broker.example:5672/",
        "amqp://guest:guest@broker.example:5672/",
    ],
)
def test_a_service_refuses_to_start_with_a_default_credential(url: str) -> None:
    with pytest.raises(ConfigError, match="KPX_AMQP_URL"):
        Settings.from_env({"KPX_AMQP_URL": url}, region=REGION)


def test_guest_on_loopback_and_a_generated_password_are_fine() -> None:
    Settings.from_env({"KPX_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/"}, region=REGION)
    Settings.from_env({"KPX_AMQP_URL": "amqp://kpx-admin:Zq8v1r0KxN3l4tY9@rabbitmq/"},
                      region=REGION)  # fmt: skip


def test_metrics_and_health_listen_on_loopback_unless_a_setting_opens_them() -> None:
    assert Settings.from_env({}, region=REGION).metrics_host == "127.0.0.1"
    opened = Settings.from_env({"KPX_METRICS_HOST": "0.0.0.0"}, region=REGION)
    assert opened.metrics_host == "0.0.0.0"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = metrics.serve(port, lambda: (True, "ok\n"))
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
