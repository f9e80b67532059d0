"""A node's events survive a stopped broker, a killed relay, a killed broker and a cut link.

Every test here runs against a PRIVATE RabbitMQ node (``support.broker``; the shared broker is
never stopped), one for the module, with a private copy of the example region provisioned on
it; each test works as a different member and starts from an empty ``kpx.registry`` queue.
After each fault the relay drains the outbox by itself (no operator action), then everything
``kpx.registry`` holds is read back and opened, and the test fails unless every event arrived
(no loss) and every duplicate is the same event_id with the same bytes (no duplicate in
effect: consumers drop a repeated event_id). A line per fault reports events, lost,
duplicates and time to recover.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
from support.broker import PrivateBroker, free_port, private_broker, read_back, region_on
from support.proxy import FaultProxy
from support.services import unique_name

from exchange.adapters import postgres
from exchange.app.runtime import Runtime
from exchange.messaging.outbox import OutboxRelay, OutboxWriter, Pending
from exchange.wire import topology
from nodes.operations import Node

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
KPX = Path(sys.executable).with_name("kpx")
DRAIN_TIMEOUT = 180.0

# A relay in a child process; with KILL_AT=n it SIGKILLs itself on its n-th batch after the
# broker confirmed the batch and before the rows are marked sent: the exact window where a
# crash leaves published events unmarked.
RELAY_RUNNER = """
import logging, os, signal, sys, threading
from exchange.messaging.outbox import OutboxRelay
dsn, url, relay, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
if kill_at:
    mark, calls = OutboxRelay._mark_sent, []
    def mark_or_die(self, ids):
        calls.append(len(ids))
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        mark(self, ids)
    OutboxRelay._mark_sent = mark_or_die
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
OutboxRelay(dsn, url, relay).run(stop)
"""


@dataclass(frozen=True)
class Region:
    broker: PrivateBroker
    rt: Runtime
    tmp: Path


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, database_server_url: str) -> Iterator[Region]:
    tmp = tmp_path_factory.mktemp("faults")
    with (
        private_broker() as broker,
        region_on(broker, tmp, unique_name(), database_server_url) as rt,
    ):
        yield Region(broker, rt, tmp)


@pytest.fixture
def region(private: Region) -> Region:
    """The module's region with its broker running and ``kpx.registry`` empty."""
    if not private.broker.running:
        private.broker.start()
    conn = pika.BlockingConnection(pika.URLParameters(private.rt.amqp_url(None)))
    try:
        conn.channel().queue_purge(topology.REGISTRY_QUEUE)
    finally:
        conn.close()
    return private


# --------------------------------------------------------------------------- helpers


def issue_line(destination: str = "AE") -> str:
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


def issue(rt: Runtime, code: str, count: int) -> None:
    """Issue ``count`` certificates through the node's operations (the real path)."""
    conn = postgres.connect(rt.node_dsn(code))
    try:
        node = Node(code, rt.region, OutboxWriter(rt.store, rt.signer(code)))
        results = list(node.submit(conn, (issue_line() for _ in range(count))))
    finally:
        conn.close()
    refused = [str(r) for r in results if not r.ok]
    assert not refused, refused[:3]


def prefill(rt: Runtime, code: str, count: int) -> None:
    """Append ``count`` signed CertificateIssued events to the outbox quickly.

    One certificate goes through the node's operations; its record is then sealed again
    ``count - 1`` times (fresh event ids, the next sequence numbers) in large transactions:
    the relay's work is the same, the node's validation is not what these faults test.
    """
    issue(rt, code, 1)
    conn = postgres.connect(rt.node_dsn(code))
    try:
        with postgres.transaction(conn) as cur:
            cur.execute("SELECT body FROM outbox WHERE relay = %s ORDER BY id LIMIT 1", (code,))
            body = bytes(cur.fetchone()[0])
        from exchange.wire.envelope import open_envelope

        record = open_envelope(rt.store, rt.keyring(), body).payload
        writer = OutboxWriter(rt.store, rt.signer(code))
        pending = Pending("CertificateIssued", record, topology.EVENTS, f"{code}.CertificateIssued")
        left = count - 1
        while left:
            with postgres.transaction(conn) as cur:
                writer.append_many(cur, [pending] * min(left, 5000))
            left -= min(left, 5000)
    finally:
        conn.close()


class Outbox:
    """Watches one node's outbox: how many rows exist and how many are marked sent."""

    def __init__(self, rt: Runtime, code: str) -> None:
        self.code = code
        self.conn = postgres.connect(rt.node_dsn(code), autocommit=True)

    def counts(self) -> tuple[int, int]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), count(sent_at) FROM outbox WHERE relay = %s", (self.code,)
            )
            total, sent = cur.fetchone()
        return int(total), int(sent)

    def sent(self) -> int:
        return self.counts()[1]

    def wait(self, condition: Callable[[int, int], bool], timeout: float, what: str) -> float:
        """Wait until ``condition(total, sent)``; return when (monotonic); fail after timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(*self.counts()):
                return time.monotonic()
            time.sleep(0.05)
        total, sent = self.counts()
        pytest.fail(f"{what}: not within {timeout:.0f} s ({sent} of {total} sent)")

    def drained(self, timeout: float = DRAIN_TIMEOUT) -> float:
        return self.wait(lambda total, sent: total == sent, timeout, "outbox drained")

    def close(self) -> None:
        self.conn.close()


@contextmanager
def outbox(rt: Runtime, code: str) -> Iterator[Outbox]:
    watcher = Outbox(rt, code)
    try:
        yield watcher
    finally:
        watcher.close()


@contextmanager
def relay_thread(rt: Runtime, code: str, url: str | None = None) -> Iterator[OutboxRelay]:
    """The node's relay in this process, stopped (bounded) when the block ends."""
    relay = OutboxRelay(rt.node_dsn(code), url or node_url(rt, code), code)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), name=f"relay-{code}", daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the relay did not stop within 60 s"


def node_url(rt: Runtime, code: str) -> str:
    return rt.amqp_url(topology.node_user(code, rt.region.vhost))


@contextmanager
def child(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (logging to ``log``), SIGTERMed then SIGKILLed when the block ends."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def node_run(region: Region, code: str) -> Any:
    """``kpx node run --member CODE`` as a child process."""
    args = [str(KPX), "node", "run", "--member", code, "--metrics-port", str(free_port())]
    return child(args, region.rt.settings.child_env(), region.tmp / f"node-{code}.log")


def verify_delivery(region: Region, code: str, events: int) -> tuple[int, int]:
    """Read ``kpx.registry`` back; assert no loss and identical duplicates; (lost, dups)."""
    rt = region.rt
    received = read_back(rt.amqp_url(None), topology.REGISTRY_QUEUE, rt.store, rt.keyring(),
                         expect=events, timeout=180)  # fmt: skip
    lost = events - len(received.event_ids)
    assert {e.producer for e in received.events} == {code}
    assert received.sequences(code) == list(range(1, events + 1)), f"{lost} events lost"
    assert len(received.event_ids) == events
    assert received.duplicates_identical(), "a repeated event_id carried different bytes"
    return lost, received.duplicates


def report(capsys: pytest.CaptureFixture[str], fault: str, **figures: Any) -> None:
    text = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in figures.items())  # fmt: skip
    with capsys.disabled():
        print(f"\n[fault] {fault}: {text}")


# --------------------------------------------------------------------------- faults


def test_ten_thousand_certificates_issued_while_the_broker_is_stopped_are_all_delivered_once(
    region: Region, capsys: pytest.CaptureFixture[str]
) -> None:
    rt, code, count = region.rt, "BW", 10_000
    with node_run(region, code) as service, outbox(rt, code) as watch:
        region.broker.stop()
        issue(rt, code, count)  # accepted and committed locally while the broker is down
        total, sent = watch.counts()
        assert (total, sent) == (count, 0)
        assert service.poll() is None, "kpx node run died while the broker was down"
        region.broker.start()
        back = time.monotonic()
        first = watch.wait(lambda _, s: s > 0, DRAIN_TIMEOUT, "first event confirmed")
        drained = watch.drained()
    lost, duplicates = verify_delivery(region, code, count)
    report(capsys, "broker stopped while 10,000 issued", events=count, lost=lost,
           duplicates=duplicates, reconnect_s=first - back, drain_s=drained - back)  # fmt: skip


@pytest.mark.parametrize("how", ["between-publish-and-mark", "mid-stream-from-outside"])
def test_a_relay_sigkilled_after_publishing_then_restarted_delivers_every_event(
    region: Region, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    rt = region.rt
    code, count = ("ZA", 5_000) if how == "between-publish-and-mark" else ("NA", 20_000)
    prefill(rt, code, count)
    runner = [sys.executable, "-c", RELAY_RUNNER, rt.node_dsn(code), node_url(rt, code), code,
              "3" if how == "between-publish-and-mark" else "0"]  # fmt: skip
    with outbox(rt, code) as watch:
        with child(runner, dict(os.environ), region.tmp / f"relay-{code}.log") as relay:
            if how == "between-publish-and-mark":
                relay.wait(timeout=120)
                assert relay.returncode == -signal.SIGKILL, f"relay exited {relay.returncode}"
            else:
                watch.wait(lambda _, s: s >= count // 4, 120, "a quarter sent")
                os.killpg(relay.pid, signal.SIGKILL)
                relay.wait(timeout=30)
        killed = time.monotonic()
        total, sent = watch.counts()
        in_queue = registry_depth(rt)
        assert sent < total, "the relay finished before it was killed: nothing was tested"
        with node_run(region, code):
            drained = watch.drained()
    lost, duplicates = verify_delivery(region, code, count)
    if how == "between-publish-and-mark":
        assert duplicates > 0, "the killed batch was confirmed but is not republished"
    report(capsys, f"relay SIGKILL ({how})", events=count, lost=lost, duplicates=duplicates,
           published_unmarked_at_kill=in_queue - sent, recover_s=drained - killed)  # fmt: skip


def registry_depth(rt: Runtime) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(rt.amqp_url(None)))
    try:
        ok = conn.channel().queue_declare(topology.REGISTRY_QUEUE, passive=True)
        return int(ok.method.message_count)
    finally:
        conn.close()


def test_the_broker_sigkilled_mid_stream_and_restarted_loses_no_event(
    region: Region, capsys: pytest.CaptureFixture[str]
) -> None:
    rt, code, count = region.rt, "LS", 30_000
    prefill(rt, code, count)
    with outbox(rt, code) as watch, relay_thread(rt, code):
        watch.wait(lambda _, s: s >= 2_000, 120, "2,000 sent")
        region.broker.kill()
        killed = time.monotonic()
        at_kill = watch.sent()
        assert at_kill < count, "the relay finished before the broker was killed"
        region.broker.start()
        back = time.monotonic()
        drained = watch.drained()
    lost, duplicates = verify_delivery(region, code, count)
    report(capsys, "broker SIGKILL mid-stream", events=count, lost=lost, duplicates=duplicates,
           unsent_at_kill=count - at_kill, outage_s=back - killed,
           recover_s=drained - back)  # fmt: skip


def test_the_node_connection_cut_mid_stream_reconnects_by_itself_and_loses_no_event(
    region: Region, capsys: pytest.CaptureFixture[str]
) -> None:
    rt, code, count = region.rt, "AO", 30_000
    prefill(rt, code, count)
    with FaultProxy(region.broker.amqp_port) as proxy:
        url = node_url(rt, code).replace(f":{region.broker.amqp_port}/", f":{proxy.port}/")
        with outbox(rt, code) as watch, relay_thread(rt, code, url):
            cuts, recoveries = 0, []
            for threshold in (2_000, 8_000, 14_000):
                watch.wait(lambda _, s, t=threshold: s >= t, 120, f"{threshold} sent")
                at_cut = watch.sent()
                if at_cut >= count:
                    break
                cuts += proxy.cut()
                cut_at = time.monotonic()
                resumed = watch.wait(lambda _, s, a=at_cut: s > a + 1000, 120, "resumed")
                recoveries.append(resumed - cut_at)
            drained = watch.drained()
    assert cuts >= 2, f"only {cuts} connections were cut mid-stream"
    assert proxy.accepted > cuts, "the relay never reconnected through the proxy"
    lost, duplicates = verify_delivery(region, code, count)
    report(capsys, f"TCP connection cut (x{cuts})", events=count, lost=lost,
           duplicates=duplicates, recover_s=max(recoveries),
           drain_after_last_cut_s=drained - cut_at)  # fmt: skip
