"""Issue 11, item 12: clear errors instead of tracebacks (the parts done here).

- an IPv6 broker URL (``[::1]``) gives a valid management URL (it raised httpx.InvalidURL);
- "connection refused" on the management API says to enable ``rabbitmq_management``;
- ``kpx region drain`` says what is still moving when it times out; the management API URL
  is a setting (``KPX_AMQP_MANAGEMENT_URL``);
- a broker outage logs one line per reconnect attempt, naming host and port;
- item 11: a second node for the same member, or a taken metrics port, is one clear line and
  a non-zero exit.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from support.region import provisioned_region
from support.registry import wait_until
from support.services import unique_name

from exchange.adapters.management import Admin, management_url
from exchange.adapters.postgres import single_instance
from exchange.adapters.rabbitmq import AsyncPublisher, BatchConsumer
from exchange.adapters.retry import until_stopped
from exchange.app.quiescence import amqp_problems, drain
from exchange.app.runtime import Runtime
from exchange.app.settings import Settings
from exchange.errors import BrokerUnavailable, ConfigError
from exchange.wire import topology

KPX = Path(sys.executable).with_name("kpx")


def test_an_ipv6_broker_url_gives_a_bracketed_management_url() -> None:
    base, auth = management_url("amqp://kpx:secret@[::1]:5672/%2F")
    assert (base, auth) == ("http://[::1]:15672", ("kpx", "secret"))
    Admin("amqp://guest:guest@[::1]:5672/").close()  # a valid URL for httpx


def test_a_refused_management_connection_names_the_plugin() -> None:
    admin = Admin("amqp://guest:guest@127.0.0.1:5672/", override="http://127.0.0.1:9")
    try:
        with pytest.raises(BrokerUnavailable, match="rabbitmq_management"):
            admin.queues("/")
    finally:
        admin.close()


@pytest.fixture
def rt(tmp_path: Path, amqp_admin_url: str, database_server_url: str) -> Iterator[Runtime]:
    with provisioned_region(tmp_path, unique_name(), amqp_admin_url, database_server_url) as rt:
        yield rt


def test_drain_says_what_is_still_moving_when_it_times_out(rt: Runtime) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(rt.amqp_url(None)))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish("", topology.REGISTRY_QUEUE, b"waiting")  # no registry runs
    finally:
        conn.close()
    admin = rt.settings.admin()
    try:  # the management API refreshes its queue statistics every 5 s
        wait_until(
            lambda: any(
                q["name"] == topology.REGISTRY_QUEUE and q.get("messages", 0)
                for q in admin.queues(rt.region.vhost)
            ),
            timeout=30,
            what="the message in the queue statistics",
        )
    finally:
        admin.close()
    moving = drain(rt, timeout=2.0)
    assert f"{topology.REGISTRY_QUEUE}: 1 messages" in moving


def _kpx(rt: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    env = rt.settings.child_env({"PATH": ""})
    return subprocess.run(
        [str(KPX), "--region", str(rt.settings.region_path), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_second_node_for_the_same_member_is_refused_with_a_message(rt: Runtime) -> None:
    """Item 11: before, a silent second consumer with a healthy /healthz."""
    held = single_instance(rt.node_dsn("BW"), "node BW")  # the first instance
    try:
        second = _kpx(rt, "node", "run", "--member", "BW", "--metrics-port", "0")
    finally:
        held.close()
    assert second.returncode != 0
    assert "AlreadyRunning: node BW is already running" in second.stderr
    assert "Traceback" not in second.stderr


def test_a_taken_metrics_port_is_one_clear_line(rt: Runtime) -> None:
    """Item 11: before, a traceback and a hang."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _kpx(rt, "node", "run", "--member", "ZA", "--metrics-port", str(port))
    assert result.returncode != 0
    assert f"metrics port {port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broker_outage_logs_one_line_per_attempt_naming_host_and_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: 131 lines of pika tracebacks in 12 s, and "Retrying <unknown> ... ."."""
    log = logging.getLogger("kpx-test-outage")
    stop = threading.Event()
    threading.Timer(2.5, stop.set).start()
    consumer = BatchConsumer("amqp://guest:guest@127.0.0.1:9/", "kpx.registry", name="outage")
    with caplog.at_level(logging.DEBUG), pytest.raises(BrokerUnavailable):
        for attempt in until_stopped(stop, log):
            with attempt:
                consumer.connect()
    ours = [r for r in caplog.records if r.name == log.name]
    assert ours and all("127.0.0.1:9" in r.getMessage() for r in ours)
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.WARNING)
    assert not [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= 30]
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:9"):
        AsyncPublisher("amqp://guest:guest@127.0.0.1:9/", name="relay-outage").start(5)


def test_kpx_check_member_probes_the_nodes_own_site(rt: Runtime) -> None:
    """``kpx check --member XX``: the node's own login, inbox consumer and database."""
    result = _kpx(rt, "check", "--member", "bw")
    assert result.returncode == 1, result.stderr
    assert "queue kpx.node.BW has no consumer" in result.stderr  # no node runs here
    assert "broker login" not in result.stderr and "database" not in result.stderr
    wrong = rt.amqp_url(topology.node_user("BW", rt.region.vhost)).replace("@", "x@", 1)
    [refused] = amqp_problems(wrong, "kpx-bw")
    assert refused.startswith("broker login as kpx-bw:")


def test_the_management_api_url_is_a_setting(tmp_path: Path) -> None:
    region = tmp_path / "region.toml"
    region.write_text('[region]\ncode = "XS"\n', encoding="utf-8")
    env = {"KPX_AMQP_MANAGEMENT_URL": "http://127.0.0.1:9"}
    settings = Settings.from_env(env, region=str(region))
    admin = settings.admin()
    try:
        with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:9.*rabbitmq_management"):
            admin.queues("/")
    finally:
        admin.close()
    with pytest.raises(ConfigError, match="KPX_AMQP_MANAGEMENT_URL"):
        Settings.from_env({"KPX_AMQP_MANAGEMENT_URL": "ftp://x"}, region=str(region))
