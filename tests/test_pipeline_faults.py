"""The whole pipeline under load survives each fault with nothing lost or duplicated in effect.

One PRIVATE RabbitMQ node and one PRIVATE PostgreSQL server (the shared ones are never
touched) hold a provisioned copy of the example region: the registry's database (with the
reconciler's schema) and the node databases of BW, ZA and AE. The registry, the reconciler
and the three nodes run as real ``kpx … run`` processes; ZA reaches the broker through a
fault-injecting TCP proxy. A load generator (``support.pipeline.Load``) keeps BW issuing for
AE and ZA for BW while AE and BW confirm the shipments announced to them (every tenth of AE's
confirmations with a broken seal: a discrepancy that must be raised once).

Each test injects ONE fault under that load — SIGKILL and restart of the broker, of
PostgreSQL (crash recovery), of the registry mid-batch, of a node relay between publish and
mark-sent, of the reconciler; cuts of a node's TCP connections — then waits until every event
in flight at the fault was decided, stops the load, lets the pipeline drain (bounded), and
runs the checker (``support.pipeline.check``) over every database and the broker's
management API. It fails on any lost event (0 allowed), any effect taken twice (0 allowed),
any invented or missing discrepancy, any non-empty queue. A line per fault reports events,
events in flight, lost, duplicates, time to recover and to drain; the last test prints the
table of every fault run (:data:`REPORTS`).

The services are shared by the module's tests, so each test first heals what an earlier
failed one left broken (a server still down, a service paused, exited or with a dead relay
thread: restarted), and one failure does not fail every test after it. A relay thread that
died fails the running test at once, with the logs: the process and its consumer live on, so
it would otherwise show only as a pipeline that never drains.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pika
import psycopg2
import pytest
from support.broker import PrivateBroker, free_port, region_on
from support.database import PrivateDatabase, private_database
from support.pipeline import (
    NODES,
    Load,
    Quiet,
    Service,
    check,
    decided_up_to,
    high_water,
    node_counts,
    query,
    unsent,
)
from support.proxy import FaultProxy
from support.services import unique_name

from exchange.adapters.postgres import connect
from exchange.app.runtime import Runtime
from exchange.errors import KpxError
from exchange.wire import topology

pytestmark = pytest.mark.faults

KPX = Path(sys.executable).with_name("kpx")
PROXIED = "ZA"  # this node reaches the broker through the fault proxy
WARMUP = 3.0  # seconds of load before the fault
AFTER = 2.0  # seconds of load after the recovery
READY_TIMEOUT = 90.0
RECOVER_TIMEOUT = 150.0
DRAIN_TIMEOUT = 150.0

REPORTS: list[dict[str, Any]] = []


@dataclass
class Pipeline:
    broker: PrivateBroker
    db: PrivateDatabase
    rt: Runtime
    proxy: FaultProxy
    services: dict[str, Service]
    load: Load
    snap: Snapshot | None = None

    def fault(self) -> None:
        """Call at the very moment of the fault: what is in flight then."""
        self.snap = Snapshot.take(self.rt)

    def ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until every service answers /healthz with 200."""
        deadline = time.monotonic() + timeout
        waiting = list(self.services.values())
        while waiting and time.monotonic() < deadline:
            waiting = [s for s in waiting if healthz(s)[0] != 200]
            time.sleep(0.3)
        assert not waiting, f"not healthy: {self.health(waiting)}\n{self.tails()}"

    def heal(self) -> None:
        """Restart what an earlier test left broken; then wait until every service is ready."""
        if not self.db.running:
            self.db.start()
        if not self.broker.running:
            self.broker.start()
        for service in self.services.values():
            service.signal(signal.SIGCONT)  # a test that failed while it had paused one
            if not service.alive or _relay_dead(service):
                service.stop()
                service.start()
        self.ready()

    def health(self, services: Iterable[Service] | None = None) -> dict[str, str]:
        """Each service's /healthz line (or why it did not answer)."""
        return {s.name: healthz(s)[1] for s in services or self.services.values()}

    def queues(self) -> list[dict[str, Any]]:
        vhost = quote(self.rt.region.vhost, safe="")
        url = f"{self.broker.management_url}/api/queues/{vhost}"
        response = httpx.get(url, auth=("guest", "guest"), timeout=10)
        response.raise_for_status()
        queues: list[dict[str, Any]] = response.json()
        return queues

    def depth(self, queue: str) -> int:
        """Ready messages of ``queue`` now (AMQP, not the management statistics)."""
        conn = pika.BlockingConnection(pika.URLParameters(self.rt.amqp_url(None)))
        try:
            return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
        finally:
            conn.close()

    def still_moving(self) -> list[str]:
        """What keeps the pipeline from being drained; empty when it is quiet."""
        try:
            busy = [f"{n} undecided" for n in [node_counts(self.rt)["undecided"]] if n]
            busy += [f"{n} unsent" for n in [unsent(self.rt)] if n]
            busy += [f"{q['name']}: {q.get('messages')}" for q in self.queues()
                     if q.get("messages", 1) != 0]  # fmt: skip
            behind = reconciler_behind(self.rt)
            return busy + ([f"reconciler {behind} behind"] if behind else [])
        except (KpxError, psycopg2.Error, httpx.HTTPError) as exc:
            return [f"unreachable: {exc}"]

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> float:
        """Wait until the pipeline stays quiet for QUIET_FOR; when it became quiet."""
        deadline = time.monotonic() + timeout
        quiet = Quiet()
        while time.monotonic() < deadline:
            self.assert_running()
            busy = self.still_moving()
            if (since := quiet.held(not busy)) is not None:
                return since
            time.sleep(0.5)
        pytest.fail(f"not drained in {timeout:.0f} s: {busy}\n{self.health()}\n{self.tails()}")

    def assert_running(self) -> None:
        """Fail at once, with the logs, when a service exited by itself or its relay died."""
        dead = {s.name: s.proc.returncode for s in self.services.values()
                if s.proc is not None and not s.alive}  # fmt: skip
        # The exited service's own log first, and longer: its last lines say why it stopped,
        # and a CI report that clips the message keeps its beginning.
        exited = "\n".join(self.services[name].tail(40) for name in dead)
        assert not dead, f"services exited: {dead}\n{exited}\n{self.tails()}"
        # A relay thread never comes back by itself (its retries are inside it); the consumer
        # beside it reconnecting is not a failure, so only "relay down" is.
        relayless = [s.name for s in self.services.values() if _relay_dead(s)]
        assert not relayless, f"relay thread dead: {relayless}\n{self.tails()}"

    def tails(self) -> str:
        """The end of every service's log, and of the private PostgreSQL server's."""
        server = f"== postgresql ({self.db.root / 'server.log'})\n{self.db.log_tail(10)}"
        return "\n".join([*(s.tail() for s in self.services.values()), server])


@dataclass(frozen=True)
class Snapshot:
    """The pipeline at the moment of a fault."""

    at: float
    marks: dict[str, int]  # each node's last event
    in_flight: int  # node events the registry had not answered yet
    unsent: int  # outbox rows the broker had not confirmed yet
    accepted: int  # accepted node events, which the reconciler must catch up with

    @classmethod
    def take(cls, rt: Runtime) -> Snapshot:
        marks, counts, left = high_water(rt), node_counts(rt), unsent(rt)
        return cls(time.monotonic(), marks, counts["undecided"], left, _accepted(rt)[0])

    def recovered(self, rt: Runtime) -> bool:
        """Every event in flight at the fault decided at its node and reconciled."""
        return decided_up_to(rt, self.marks) and _accepted(rt)[1] >= self.accepted


def _accepted(rt: Runtime) -> tuple[int, int]:
    """Accepted node events, and how many of them the reconciler recorded."""
    row = query(rt.registry_dsn, "SELECT (SELECT count(*) FROM event_log WHERE decision = "
                "'ACCEPTED' AND producer = ANY(%s)) AS a, (SELECT count(*) FROM recon.processed "
                "WHERE producer = ANY(%s)) AS r", (list(NODES), list(NODES)))  # fmt: skip
    return int(row[0]["a"]), int(row[0]["r"])


def reconciler_behind(rt: Runtime) -> int:
    """Accepted node events the reconciler has not recorded yet."""
    accepted, recorded = _accepted(rt)
    return accepted - recorded


def healthz(service: Service) -> tuple[int | None, str]:
    """The status of the service's /healthz and its line ("consumer up, relay down"); None
    and the reason when it does not answer (starting, paused, gone)."""
    port = int(service.argv[service.argv.index("--metrics-port") + 1])
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except httpx.HTTPError as exc:
        return None, f"no answer ({type(exc).__name__})"
    return response.status_code, response.text.strip()


def _relay_dead(service: Service) -> bool:
    return service.alive and "relay down" in healthz(service)[1]


@contextmanager
def quick_statistics_broker() -> Iterator[PrivateBroker]:
    """A private broker whose management statistics refresh every second (not five)."""
    root = Path(tempfile.mkdtemp(prefix="kpxt-pipeline-"))
    home = root / "home"
    home.mkdir()
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16).upper())
    cookie.chmod(0o400)
    broker = PrivateBroker(root / "node", cookie_home=home, plugins=("rabbitmq_management",))
    with (broker.root / "rabbitmq.conf").open("a") as conf:
        conf.write("collect_statistics_interval = 1000\n")
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
        shutil.rmtree(root, ignore_errors=True)


def services(rt: Runtime, broker: PrivateBroker, proxy: FaultProxy, logs: Path) -> list[Service]:
    """The registry, the reconciler and the three nodes (ZA through the proxy)."""
    env = {"PATH": "/usr/bin:/bin", "KPX_DATABASE_URL": rt.settings.database_url,
           "KPX_STATE_DIR": str(rt.settings.state_dir),
           "KPX_AMQP_URL": broker.amqp_url}  # fmt: skip
    proxied = dict(env, KPX_AMQP_URL=broker.amqp_url.replace(
        f":{broker.amqp_port}/", f":{proxy.port}/"))  # fmt: skip
    region = ["--region", str(rt.settings.region_path)]
    commands = [("registry", ["registry", "run"], env),
                ("reconciler", ["reconciler", "run"], env)]  # fmt: skip
    commands += [(f"node-{c}", ["node", "run", "--member", c], proxied if c == PROXIED else env)
                 for c in NODES]  # fmt: skip
    return [
        Service(name, [str(KPX), *region, *args, "--metrics-port", str(free_port())], e,
                logs / f"{name}.log")
        for name, args, e in commands
    ]  # fmt: skip


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("pipeline")
    with ExitStack() as stack:
        broker = stack.enter_context(quick_statistics_broker())
        db = stack.enter_context(private_database())
        rt = stack.enter_context(region_on(broker, tmp, unique_name(), db.url))
        proxy = stack.enter_context(FaultProxy(broker.amqp_port))
        running = {s.name: s for s in services(rt, broker, proxy, tmp)}
        for service in running.values():
            stack.callback(service.stop)
            service.start()
        pipe = Pipeline(broker, db, rt, proxy, running, Load(rt))
        stack.callback(pipe.load.stop)
        pipe.ready()
        yield pipe


# --------------------------------------------------------------------------- one fault


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, pipe: Pipeline, *, all_up: bool = True
) -> float:
    """Poll ``condition`` (an unreachable database counts as not yet); when it held.

    With ``all_up``, a service that exited fails the wait at once, with the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all_up:
            pipe.assert_running()
        with suppress(KpxError, psycopg2.Error):
            if condition():
                return time.monotonic()
        time.sleep(0.3)
    pytest.fail(f"{what}: not within {timeout:.0f} s\n{pipe.tails()}")


def under_load(
    pipe: Pipeline,
    fault: str,
    inject: Callable[[Pipeline], dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Load, ONE fault, recovery, drain, check; report and assert (see the module docstring)."""
    rt = pipe.rt
    pipe.heal()
    before = node_counts(rt)["events"]
    pipe.snap = None
    pipe.load.start()
    try:
        time.sleep(WARMUP)
        figures = inject(pipe)
        snap = pipe.snap
        assert snap is not None, "the fault did not say when it struck"
        recovered = wait_for(lambda: snap.recovered(rt), RECOVER_TIMEOUT,
                             "every event in flight at the fault decided", pipe)  # fmt: skip
        time.sleep(AFTER)
    finally:
        pipe.load.stop()
    stopped = time.monotonic()
    drained = pipe.drain()
    verdict = check(rt, pipe.queues())
    report = {"fault": fault, "events": verdict.events - before, "in_flight": snap.in_flight,
              "unsent_at_fault": snap.unsent, "lost": verdict.lost,
              "duplicates": verdict.duplicates, "recover_s": round(recovered - snap.at, 1),
              "drain_s": round(max(drained - stopped, 0.0), 1), **figures}  # fmt: skip
    REPORTS.append(report)
    with capsys.disabled():
        print(
            f"\n[fault] {fault}: "
            + ", ".join(f"{k}={v}" for k, v in report.items() if k != "fault")
        )
    assert not pipe.load.refused, pipe.load.refused[:3]
    pipe.assert_running()
    assert verdict.lost == 0, f"{fault}: events lost: {verdict.problems}"
    assert verdict.duplicates == 0, f"{fault}: duplicates in effect: {verdict.problems}"
    assert not verdict.problems, f"{fault}: {verdict.problems}"


# --------------------------------------------------------------------------- faults


def test_a_node_connection_cut_through_the_proxy_loses_nothing(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    def cut(pipe: Pipeline) -> dict[str, Any]:
        cuts = 0
        pipe.fault()
        for _ in range(3):
            cuts += pipe.proxy.cut()
            time.sleep(2.0)
        assert cuts >= 2, f"only {cuts} connections of {PROXIED} were cut"
        return {"connections_cut": cuts}

    under_load(pipeline, f"TCP connections of node {PROXIED} cut (x3)", cut, capsys)


def test_the_reconciler_sigkilled_and_restarted_loses_nothing(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    def kill(pipe: Pipeline) -> dict[str, Any]:
        reconciler = pipe.services["reconciler"]
        pipe.load.burst("ZA", "BW", 300)  # work in its queue when it dies
        pipe.fault()
        reconciler.kill()
        time.sleep(1.0)
        backlog = pipe.depth(topology.RECONCILER_QUEUE)
        reconciler.start()
        return {"reconciler_queue_at_kill": backlog}

    under_load(pipeline, "reconciler SIGKILL + restart", kill, capsys)


def test_a_node_relay_sigkilled_between_publish_and_mark_sent_loses_nothing(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    def kill(pipe: Pipeline) -> dict[str, Any]:
        node, rt = pipe.services["node-BW"], pipe.rt
        for attempt in range(1, 4):
            node.signal(signal.SIGSTOP)  # a backlog, so the relay is mid-stream when killed
            pipe.load.burst("BW", "AE", 3000)  # three relay batches
            pipe.fault()
            _kill_after_first_mark(rt, node, "BW")
            wait_for(lambda: pipe.depth(topology.REGISTRY_QUEUE) == 0, 60, "registry idle", pipe,
                     all_up=False)  # fmt: skip
            unmarked = _published_unmarked(rt, "BW")
            node.start()
            if unmarked:
                return {"published_unmarked_at_kill": unmarked, "attempts": attempt}
        pytest.fail("three kills of BW's relay never fell between publish and mark-sent")

    under_load(pipeline, "node relay (kpx node run BW) SIGKILL mid-stream + restart", kill, capsys)


def _kill_after_first_mark(rt: Runtime, node: Service, code: str, timeout: float = 60) -> None:
    """Resume ``node`` and SIGKILL it the moment its relay marks a batch sent: the next
    batch is then published (two are in flight) and not yet marked."""
    conn = connect(rt.node_dsn(code), autocommit=True, application_name="watch")
    try:
        with conn.cursor() as cur:
            count = "SELECT count(sent_at) FROM outbox"
            cur.execute(count)
            before = cur.fetchone()[0]
            node.signal(signal.SIGCONT)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                cur.execute(count)
                if cur.fetchone()[0] > before:
                    node.kill()
                    return
                time.sleep(0.005)
    finally:
        conn.close()
    pytest.fail(f"{code}'s relay marked nothing within {timeout:.0f} s")


def _published_unmarked(rt: Runtime, code: str) -> int:
    """Events the broker has (the registry decided them) that the relay never marked sent."""
    unmarked = [r["e"] for r in query(rt.node_dsn(code), "SELECT event_id::text AS e FROM "
                                      "outbox WHERE sent_at IS NULL")]  # fmt: skip
    found = query(rt.registry_dsn, "SELECT count(*) AS n FROM event_log WHERE event_id = "
                  "ANY(%s::uuid[])", (unmarked,))  # fmt: skip
    return int(found[0]["n"])


def test_the_registry_sigkilled_mid_batch_and_restarted_loses_nothing(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    def kill(pipe: Pipeline) -> dict[str, Any]:
        registry, rt = pipe.services["registry"], pipe.rt
        registry.signal(signal.SIGSTOP)  # a backlog, so it is busy with a batch when killed
        pipe.load.burst("BW", "AE", 1200)
        logged = _logged(rt)
        registry.signal(signal.SIGCONT)
        wait_for(lambda: _logged(rt) >= logged + 250, 60, "the registry working", pipe)
        pipe.fault()
        registry.kill()
        backlog = pipe.depth(topology.REGISTRY_QUEUE)
        assert backlog > 0, "the registry finished its backlog before it was killed"
        registry.start()
        return {"registry_queue_at_kill": backlog}

    under_load(pipeline, "registry (kpx registry run) SIGKILL mid-batch + restart", kill, capsys)


def _logged(rt: Runtime) -> int:
    return int(query(rt.registry_dsn, "SELECT count(*) AS n FROM event_log")[0]["n"])


def test_postgresql_sigkilled_and_recovered_loses_nothing(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    def kill(pipe: Pipeline) -> dict[str, Any]:
        pipe.fault()
        pipe.db.kill()
        down = time.monotonic()
        time.sleep(1.0)
        pipe.db.start()  # crash recovery on the same data
        return {"outage_s": round(time.monotonic() - down, 1)}

    under_load(pipeline, "PostgreSQL SIGKILL + crash-recovery restart", kill, capsys)


def test_the_broker_sigkilled_and_restarted_loses_nothing(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    def kill(pipe: Pipeline) -> dict[str, Any]:
        pipe.fault()
        pipe.broker.kill()
        down = time.monotonic()
        time.sleep(1.0)
        pipe.broker.start()
        return {"outage_s": round(time.monotonic() - down, 1)}

    under_load(pipeline, "RabbitMQ SIGKILL + restart", kill, capsys)


def test_every_fault_shows_nothing_lost_and_nothing_twice(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert REPORTS, "no fault ran"
    keys = ["events", "in_flight", "lost", "duplicates", "recover_s", "drain_s"]
    lines = [f"{'fault':<60} " + " ".join(f"{k:>10}" for k in keys)]
    lines += [f"{r['fault'][:60]:<60} " + " ".join(f"{r[k]:>10}" for k in keys) for r in REPORTS]
    with capsys.disabled():
        print("\n[faults] whole pipeline under load\n" + "\n".join(lines))
    assert all(r["lost"] == 0 and r["duplicates"] == 0 for r in REPORTS)
