"""End to end: nodes → registry → decisions back at the nodes → reconciler; latency; catch-up.

Everything runs as deployed, in a throw-away copy of the example region (real broker, real
databases, signatures, publisher confirms and witnessing on): the registry (``kpx registry
run``, its relay included), the nodes BW, ZA and NA (``kpx node run``: relay and inbox) and
the reconciler (``kpx reconciler run``) are subprocesses; this process issues certificates
through ``Node.submit`` into the three node databases, round robin, as an authority's
operator would.

1. **sustained throughput**: N certificates submitted as fast as the nodes take them
   (chunks of 100, one submitting process per node); the clock runs from the first submit
   until the whole pipeline is through: the registry has committed all N (``event_log``),
   each node has recorded the registry's acceptance of each of its certificates
   (``node_events.registry_state``) and the reconciler has recorded all N
   (``recon.processed``), polled every 50 ms. Beside the raw pika publish ceiling and the
   naive baseline of the same run.
2. **latency at half load**: certificates submitted in chunks of 5 at half the measured
   rate for ``seconds``; latency = when the registry's acceptance became visible in the
   issuing node's database (a poller looks up the pending certificates' ``registry_state``
   every 5 ms: up to ~5 ms late) − when ``submit`` returned after the node's commit. p50
   and p99, and where the time goes (:mod:`benchmarks.e2e_breakdown`): each certificate's
   five stages — node relay confirmed, registry batch began, registry's answer confirmed,
   node inbox batch began, seen — from timestamps the databases keep, as mean (p50/p99);
   with the services' own histograms over the run: publish → confirm per relay, and count,
   mean size and mean time of the consumed batches per service.
3. **catch-up**: with the registry stopped, N signed CertificateIssued events (default
   100,000) are published to ``kpx.registry`` as their nodes; then the registry starts and
   the clock runs until all N are committed. Peak RSS of the registry process (VmHWM) and
   the broker's memory with the backlog queued are reported. A one-million-event backlog:
   ``python -m benchmarks.e2e_bench --catch-up 1000000`` (about 6 minutes to fill and
   20 to drain on a 2-core machine, and ~2 GB of broker memory for the answers).

``python -m benchmarks.e2e_bench [N] [--seconds S] [--catch-up M]``; :func:`run` returns
the result rows for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
from pika.spec import BasicProperties

from benchmarks import Row, issue_line, scratch_region
from benchmarks import e2e_breakdown as breakdown
from benchmarks.e2e_breakdown import Traced
from benchmarks.registry_bench import _certificate
from benchmarks.relay_bench import percentile
from exchange.adapters import postgres
from exchange.adapters.management import Admin
from exchange.app.runtime import Runtime
from exchange.app.settings import Settings
from exchange.domain.events import Issuance
from exchange.messaging.outbox import OutboxWriter
from exchange.wire import topology
from exchange.wire.envelope import seal
from nodes.operations import Node

NODES = ("BW", "ZA", "NA")
KPX = str(Path(sys.executable).parent / "kpx")
_PREFILL_CHUNK = 5_000
_METRICS_PORTS: dict[int, int] = {}  # a service subprocess's pid -> its metrics port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(rt: Runtime) -> dict[str, str]:
    settings = rt.settings
    return {
        **os.environ,
        "KPX_REGION": str(settings.region_path),
        "KPX_AMQP_URL": settings.amqp_url,
        "KPX_DATABASE_URL": settings.database_url,
        "KPX_STATE_DIR": str(settings.state_dir),
    }


@contextmanager
def _service(rt: Runtime, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``kpx <args> --metrics-port <free>`` as a subprocess, stopped with SIGTERM at the end."""
    port = _free_port()
    command = [KPX, *args, "--metrics-port", str(port)]
    process = subprocess.Popen(command, env=_environment(rt), stderr=subprocess.PIPE)
    _METRICS_PORTS[process.pid] = port
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            tail = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
            print(f"e2e: {' '.join(args)} exited {process.returncode}: {tail}", file=sys.stderr)


@contextmanager
def _pipeline(rt: Runtime) -> Iterator[dict[str, int]]:
    """The registry, the three nodes and the reconciler running; yields their metrics ports
    by service ("registry", "BW", "ZA", "NA", "reconciler")."""
    with (
        _service(rt, "registry", "run") as registry,
        _service(rt, "node", "run", "--member", "BW") as bw,
        _service(rt, "node", "run", "--member", "ZA") as za,
        _service(rt, "node", "run", "--member", "NA") as na,
        _service(rt, "reconciler", "run") as reconciler,
    ):
        processes = {"registry": registry, "BW": bw, "ZA": za, "NA": na, "reconciler": reconciler}
        yield {name: _METRICS_PORTS[p.pid] for name, p in processes.items()}


def _line(code: str) -> str:
    """A valid issue operation for ``code``'s authority (goods of its own origin, to AE)."""
    return issue_line().replace('"BW"', f'"{code}"')


class _Submitter:
    """Node.submit into node databases, round robin."""

    def __init__(self, rt: Runtime, codes: tuple[str, ...] = NODES) -> None:
        self.codes = codes
        self.conns = {code: postgres.connect(rt.node_dsn(code)) for code in codes}
        self.nodes = {
            code: Node(code, rt.region, OutboxWriter(rt.store, rt.signer(code))) for code in codes
        }
        self.lines = {code: _line(code) for code in codes}
        self.turn = 0

    def next_code(self) -> str:
        """The node the next :meth:`submit` issues at."""
        return self.codes[self.turn % len(self.codes)]

    def submit(self, count: int) -> list[str]:
        """Issue ``count`` certificates at the next node; their ids, after the commit."""
        code = self.next_code()
        self.turn += 1
        results = list(self.nodes[code].submit(self.conns[code], [self.lines[code]] * count))
        refused = [r for r in results if not r.ok]
        if refused:
            raise RuntimeError(f"e2e: node {code} refused an issue: {refused[0]}")
        return [str(r.subject) for r in results]

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def _committed(conn: postgres.Connection) -> int:
    return int(postgres.fetch_all(conn, "SELECT count(*) AS n FROM event_log")[0]["n"])


def _wait_committed(conn: postgres.Connection, n: int, timeout: float) -> float:
    """Poll until ``n`` events are in the registry's log; the perf_counter when they were."""
    deadline = time.monotonic() + timeout
    while _committed(conn) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"e2e: only {_committed(conn)} of {n} committed after {timeout} s")
        time.sleep(0.05)
    return time.perf_counter()


_DECIDED = (
    "SELECT count(*) AS n FROM certificates c JOIN node_events e ON e.event_id = c.event_id "
    "WHERE e.registry_state = 'accepted'"
)


class _Through:
    """How far the whole pipeline is: registry commits, node decisions, reconciler records."""

    def __init__(self, rt: Runtime) -> None:
        self.registry = postgres.connect(rt.registry_dsn)
        self.nodes = [postgres.connect(rt.node_dsn(code)) for code in NODES]

    def counts(self) -> tuple[int, int, int]:
        """(committed at the registry, accepted as recorded at the nodes, reconciled)."""
        decided = sum(int(postgres.fetch_all(c, _DECIDED)[0]["n"]) for c in self.nodes)
        reconciled = postgres.fetch_all(self.registry, "SELECT count(*) AS n FROM recon.processed")
        return _committed(self.registry), decided, int(reconciled[0]["n"])

    def wait(self, target: tuple[int, int, int], timeout: float) -> float:
        """Poll until every count reaches ``target``; the perf_counter when they did."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.counts()
            if all(a >= b for a, b in zip(now, target, strict=True)):
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise RuntimeError(f"e2e: only {now} of {target} through after {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        for conn in (self.registry, *self.nodes):
            conn.close()


def _submit_worker(env: dict[str, str], code: str, n: int, chunk: int, go: Any, out: Any) -> None:
    """One authority's operator: ``n`` certificates into ``code``'s node once ``go`` is set."""
    rt = Runtime.load(Settings.from_env(env, region=env["KPX_REGION"]))
    submitter = _Submitter(rt, (code,))
    try:
        go.wait()
        for offset in range(0, n, chunk):
            submitter.submit(min(chunk, n - offset))
        out.put((code, time.time()))
    finally:
        submitter.close()


def throughput(rt: Runtime, n: int, chunk: int = 100) -> tuple[float, float]:
    """(certificates/s end to end, certificates/s submitted) for ``n`` certificates.

    Each node gets its own submitting process, as each authority has its own operators: one
    Python process submitting to all three is bound by its own CPU (~300/s), not the pipeline.
    """
    spawn = multiprocessing.get_context("spawn")
    go, out = spawn.Event(), spawn.Queue()
    share = [n // len(NODES) + (i < n % len(NODES)) for i in range(len(NODES))]
    workers = [
        spawn.Process(target=_submit_worker, args=(_environment(rt), code, k, chunk, go, out))
        for code, k in zip(NODES, share, strict=True)
    ]
    for worker in workers:
        worker.start()
    through = _Through(rt)
    try:
        already = through.counts()
        time.sleep(3.0)  # the workers have loaded and connected
        started, wall = time.perf_counter(), time.time()
        go.set()
        target = (already[0] + n, already[1] + n, already[2] + n)
        finished = through.wait(target, timeout=600)
        submitted = max(out.get(timeout=60)[1] for _ in workers) - wall
        accepted = postgres.fetch_all(
            through.registry, "SELECT count(*) AS n FROM event_log WHERE decision = 'ACCEPTED'"
        )[0]["n"]
        if accepted < already[0] + n:
            raise RuntimeError(f"e2e: {already[0] + n - accepted} events not accepted")
    finally:
        for worker in workers:
            worker.join(timeout=60)
        through.close()
    return n / (finished - started), n / submitted


class _Poller(threading.Thread):
    """Notes when each pending certificate's acceptance is recorded at its issuing node."""

    def __init__(self, rt: Runtime, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.conns = {code: postgres.connect(rt.node_dsn(code)) for code in NODES}
        self.interval = interval
        self.pending: dict[str, set[str]] = {code: set() for code in NODES}
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def add(self, code: str, ids: list[str]) -> None:
        with self.lock:
            self.pending[code].update(ids)

    def run(self) -> None:
        while not self.stop.is_set():
            for code, conn in self.conns.items():
                with self.lock:
                    pending = list(self.pending[code])
                if not pending:
                    continue
                rows = postgres.fetch_all(
                    conn,
                    "SELECT c.certificate_id FROM certificates c JOIN node_events e "
                    "ON e.event_id = c.event_id WHERE c.certificate_id = ANY(%s) "
                    "AND e.registry_state = 'accepted'",
                    (pending,),
                )
                now = time.time()
                with self.lock:
                    for row in rows:
                        self.seen.setdefault(row["certificate_id"], now)
                        self.pending[code].discard(row["certificate_id"])
            self.stop.wait(self.interval)
        for conn in self.conns.values():
            conn.close()


def latencies(rt: Runtime, rate: float, seconds: float, chunk: int = 5) -> Traced:
    """Each certificate's node and commit time, and when its acceptance was recorded there,
    at ``rate``/s."""
    submitter = _Submitter(rt)
    poller = _Poller(rt)
    poller.start()
    traced = Traced()
    committed = traced.committed
    try:
        interval, next_at = chunk / rate, time.monotonic()
        end = next_at + seconds
        while next_at < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            code = submitter.next_code()
            ids = submitter.submit(chunk)
            now = time.time()
            committed.update((cid, (code, now)) for cid in ids)
            poller.add(code, ids)
            next_at += interval
        deadline = time.monotonic() + 120
        while len(poller.seen) < len(committed) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        poller.stop.set()
        poller.join(timeout=10)
        submitter.close()
    missing = len(committed) - len(poller.seen)
    if missing:
        raise RuntimeError(f"e2e latency: {missing} certificates never decided at their node")
    traced.seen = poller.seen
    return traced


def _latency(traced: Traced) -> list[float]:
    """Node commit → acceptance recorded at the node, seconds, sorted."""
    return sorted(max(0.0, traced.seen[cid] - at) for cid, (_, at) in traced.committed.items())


def _prefill(rt: Runtime, n: int) -> None:
    """Publish ``n`` signed CertificateIssued events to kpx.registry, as their nodes."""
    vhost = rt.region.vhost
    conns, channels = [], {}
    for code in NODES:
        conn = pika.BlockingConnection(
            pika.URLParameters(rt.amqp_url(topology.node_user(code, vhost)))
        )
        conns.append(conn)
        channels[code] = conn.channel()
    signers = {code: rt.signer(code) for code in NODES}
    try:
        for start in range(0, n, _PREFILL_CHUNK):
            for i in range(start, min(n, start + _PREFILL_CHUNK)):
                code, sequence = NODES[i % len(NODES)], i // len(NODES) + 1
                record = Issuance(_certificate(code, sequence)).to_record()
                event_id, body = seal(
                    rt.store, signers[code], "CertificateIssued", record, sequence
                )
                props = BasicProperties(
                    message_id=event_id,
                    type="CertificateIssued",
                    user_id=topology.node_user(code, vhost),
                    content_type="application/vnd.apache.avro+binary",
                    delivery_mode=2,
                )
                channels[code].basic_publish(
                    topology.EVENTS, f"{code}.CertificateIssued", body, props
                )
        for channel in channels.values():
            channel.confirm_delivery()  # a round trip after everything published before it
    finally:
        for conn in conns:
            conn.close()


def _queued(rt: Runtime) -> int:
    admin = Admin(rt.settings.amqp_url)
    try:
        depth = {q["name"]: q.get("messages", 0) for q in admin.queues(rt.region.vhost)}
    finally:
        admin.close()
    return int(depth.get(topology.REGISTRY_QUEUE, 0))


def _broker_memory_mib(rt: Runtime) -> float:
    admin = Admin(rt.settings.amqp_url)
    try:
        nodes: list[dict[str, Any]] = admin._call("GET", "/nodes")
    finally:
        admin.close()
    return sum(float(node.get("mem_used", 0)) for node in nodes) / 2**20


def _peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def catch_up(rt: Runtime, n: int) -> dict[str, float]:
    """Fill a backlog of ``n`` with the registry stopped, then drain it; figures."""
    filled_at = time.perf_counter()
    _prefill(rt, n)
    deadline = time.monotonic() + max(300.0, n / 500)  # a million take ~6 min to queue
    while _queued(rt) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    fill_seconds = time.perf_counter() - filled_at
    broker_mib = _broker_memory_mib(rt)
    registry_db = postgres.connect(rt.registry_dsn)
    try:
        with _service(rt, "registry", "run") as registry:
            started = time.perf_counter()
            finished = _wait_committed(registry_db, n, timeout=max(600.0, n / 100))
            peak = _peak_rss_mib(registry.pid)
        accepted = postgres.fetch_all(
            registry_db, "SELECT count(*) AS n FROM event_log WHERE decision = 'ACCEPTED'"
        )[0]["n"]
    finally:
        registry_db.close()
    return {
        "n": float(n),
        "drain_seconds": finished - started,
        "fill_seconds": fill_seconds,
        "accepted": float(accepted),
        "registry_peak_rss_mib": peak,
        "broker_mib": broker_mib,
    }


def run(
    n: int = 10_000,
    *,
    seconds: float = 15.0,
    backlog: int = 100_000,
    publish_ceiling: float | None = None,
    naive: float | None = None,
) -> list[Row]:
    """Throughput on ``n``, latency for ``seconds`` at half of it, catch-up of ``backlog``."""
    if publish_ceiling is None:
        from benchmarks import ceilings

        publish_ceiling = ceilings.run(20_000)[0].figure
    if naive is None:
        from benchmarks import naive_baseline

        naive = naive_baseline.run(2_000)[0].figure
    with scratch_region() as rt, _pipeline(rt) as ports:
        time.sleep(2.0)  # connected and idle, as running services are
        rate, submit_rate = throughput(rt, n)
        before = breakdown.scrape(ports)
        traced = latencies(rt, rate / 2, seconds)
        time.sleep(1.0)  # the last batches' histograms observed
        histograms = breakdown.histogram_summary(before, breakdown.scrape(ports))
        lat, split = _latency(traced), breakdown.stages(rt, traced)
        witnessing = breakdown.witness_traffic(rt, traced)
    caught: dict[str, float] = {}
    if backlog:
        with scratch_region() as rt:
            caught = catch_up(rt, backlog)
    where = f"{breakdown.summary(split)}; {histograms}; {witnessing}"
    return rows(n, rate, submit_rate, lat, rate / 2, publish_ceiling, naive, caught, where)


def rows(
    n: int,
    rate: float,
    submit_rate: float,
    lat: list[float],
    half: float,
    publish_ceiling: float,
    naive: float,
    caught: dict[str, float],
    where: str = "",
) -> list[Row]:
    """The result rows; ``where`` is the latency's breakdown (:mod:`benchmarks.e2e_breakdown`)."""
    p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
    out = [
        Row("end to end: 3 nodes → registry → decisions at the nodes → reconciler", rate,
            "cert/s",
            ceiling=publish_ceiling, ceiling_what="pika async-confirm publish, same run",
            goal="≥ 0.15 × ceiling", met=rate >= 0.15 * publish_ceiling,
            note=f"{n:,} certificates via Node.submit (chunks of 100, one process per node "
                 f"BW/ZA/NA; submitting ran at {submit_rate:,.0f}/s), kpx node run × 3 and kpx "
                 "registry run and kpx reconciler run as subprocesses, signatures, confirms "
                 "and witnessing on; until every acceptance is recorded at its node and "
                 "reconciled"),
        Row("end to end vs naive baseline", rate / naive, "×", goal="≥ 10×",
            met=rate >= 10 * naive, note=f"naive {naive:,.0f} events/s, same run"),
        Row("end to end latency p50 at half load", p50, "ms",
            note=f"{len(lat):,} certificates at {half:,.0f}/s in chunks of 5: node commit → "
                 "acceptance recorded at the node (5 ms poll)"),
        Row("end to end latency p99 at half load", p99, "ms", goal="< 100 ms", met=p99 < 100),
    ]  # fmt: skip
    if where:
        stages = ", ".join(breakdown.STAGES)
        out.append(
            Row("end to end latency at half load: where it goes", p50, "ms",
                note=f"the p50 above, split into stages ({stages}) from the databases' "
                     f"timestamps, {where}")
        )  # fmt: skip
    if caught:
        backlog = int(caught["n"])
        out += [
            Row(f"catch-up: drain a {backlog:,}-event backlog", caught["drain_seconds"], "s",
                note=f"{backlog / caught['drain_seconds']:,.0f} events/s from registry start "
                     f"to the last commit; {int(caught['accepted']):,} accepted; the fill took "
                     f"{caught['fill_seconds']:.0f} s"),
            Row("registry peak RSS during catch-up", caught["registry_peak_rss_mib"], "MiB",
                note="VmHWM of the kpx registry run process (relay included)"),
            Row(f"broker memory with {backlog:,} events queued", caught["broker_mib"], "MiB",
                note="mem_used of the RabbitMQ node (shared with anything else on it)"),
        ]  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=10_000, help="certificates (10,000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="latency run (15 s)")
    parser.add_argument("--catch-up", type=int, default=100_000, help="backlog (100,000; 0: skip)")
    args = parser.parse_args(argv)
    for row in run(args.n, seconds=args.seconds, backlog=args.catch_up):
        ratio = f" (ratio {row.ratio:.2f})" if row.ratio else ""
        print(f"{row.what}: {row.figure:,.1f} {row.unit}{ratio}  {row.note}")


if __name__ == "__main__":
    main()
