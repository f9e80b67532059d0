"""The outbox relay: throughput with confirms, and issue → broker-confirmed latency.

In a throw-away copy of the example region (real broker, real databases):

1. **throughput**: N signed CertificateIssued events are put in node BW's outbox (one issued
   through ``Node.submit``, then its record sealed again N-1 times: fresh event ids and
   sequence numbers); the relay starts and the clock runs until every row is marked sent,
   i.e. confirmed by the broker. Beside it, in the same vhost and run, the raw ceiling: pika
   async-confirm publishing (window 1000) of N messages of the same size to a quorum queue.
   Goal: relay ≥ 0.7 × ceiling.
2. **latency**: with the relay running, certificates are issued through ``Node.submit`` in
   chunks of ``chunk`` at ``rate`` per second; for each, latency = the time its row was
   marked sent (just after the broker's confirm; PostgreSQL's clock on this machine) − the
   time ``submit`` returned after its chunk committed. p50 and p99.

``python -m benchmarks.relay_bench [N]``.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import pika

from benchmarks import Row, issue_line, scratch_region
from benchmarks.ceilings import declare_quorum, publish_rate
from exchange.adapters import postgres
from exchange.app.runtime import Runtime
from exchange.messaging.outbox import OutboxRelay, OutboxWriter, Pending, backlog
from exchange.wire import topology
from exchange.wire.envelope import open_envelope
from nodes.operations import Node

CODE = "BW"
ROUNDS = 3


def prefill(rt: Runtime, n: int) -> tuple[int, float]:
    """Fill BW's outbox with ``n`` events; return (body size, events sealed per second)."""
    conn = postgres.connect(rt.node_dsn(CODE))
    try:
        node = Node(CODE, rt.region, OutboxWriter(rt.store, rt.signer(CODE)))
        assert all(r.ok for r in node.submit(conn, [issue_line()]))
        with postgres.transaction(conn) as cur:
            cur.execute("SELECT body FROM outbox WHERE relay = %s ORDER BY id LIMIT 1", (CODE,))
            body = bytes(cur.fetchone()[0])
        record = open_envelope(rt.store, rt.keyring(), body).payload
        writer = OutboxWriter(rt.store, rt.signer(CODE))
        item = Pending("CertificateIssued", record, topology.EVENTS, f"{CODE}.CertificateIssued")
        started, left = time.perf_counter(), n - 1
        while left:
            with postgres.transaction(conn) as cur:
                writer.append_many(cur, [item] * min(left, 5000))
            left -= min(left, 5000)
        return len(body), (n - 1) / (time.perf_counter() - started)
    finally:
        conn.close()


def purge(url: str, queue: str) -> None:
    """Empty ``queue`` (declared by region init)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_purge(queue)
    finally:
        conn.close()


def relay_rate(rt: Runtime, n: int) -> float:
    """Events per second from relay start until all ``n`` rows are confirmed and marked."""
    url = rt.amqp_url(topology.node_user(CODE, rt.region.vhost))
    relay = OutboxRelay(rt.node_dsn(CODE), url, CODE)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    conn = postgres.connect(rt.node_dsn(CODE))
    try:
        thread.start()
        # Like the ceiling, the clock starts once connected (database, lock, broker channel).
        if not relay.connected.wait(60):
            raise RuntimeError("relay: not connected after 60 s")
        started = time.perf_counter()
        deadline = time.monotonic() + 300
        while relay.published < n and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        if backlog(conn, CODE):
            raise RuntimeError(f"relay: {backlog(conn, CODE)} events left after 300 s")
    finally:
        stop.set()
        thread.join(timeout=60)
        conn.close()
    return n / elapsed


def latencies(rt: Runtime, seconds: float, rate: float, chunk: int) -> list[float]:
    """Issue at ``rate``/s in chunks while the relay runs; commit → confirm seconds per event."""
    url = rt.amqp_url(topology.node_user(CODE, rt.region.vhost))
    relay = OutboxRelay(rt.node_dsn(CODE), url, CODE)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    conn = postgres.connect(rt.node_dsn(CODE))
    node = Node(CODE, rt.region, OutboxWriter(rt.store, rt.signer(CODE)))
    committed: dict[str, float] = {}
    try:
        time.sleep(1.0)  # connected and idle, as a running node is
        interval, next_at = chunk / rate, time.monotonic()
        end = next_at + seconds
        while next_at < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            results = list(node.submit(conn, [issue_line() for _ in range(chunk)]))
            now = time.time()
            committed.update((r.subject, now) for r in results if r.ok)
            next_at += interval
        deadline = time.monotonic() + 60
        while backlog(conn, CODE) and time.monotonic() < deadline:
            time.sleep(0.05)
        with postgres.transaction(conn) as cur:
            cur.execute(
                "SELECT c.certificate_id, EXTRACT(EPOCH FROM o.sent_at) FROM certificates c "
                "JOIN outbox o ON o.event_id = c.event_id WHERE c.certificate_id = ANY(%s)",
                (list(committed),),
            )
            sent = {cid: float(at) for cid, at in cur.fetchall() if at is not None}
    finally:
        stop.set()
        thread.join(timeout=60)
        conn.close()
    if len(sent) != len(committed):
        raise RuntimeError(f"latency: {len(committed) - len(sent)} events never confirmed")
    return sorted(sent[cid] - committed[cid] for cid in committed)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of sorted ``values``."""
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))]


def run(n: int = 10_000, seconds: float = 15.0, rate: float = 200.0, chunk: int = 5) -> list[Row]:
    """Throughput on ``n`` events and latency for ``seconds`` at ``rate``/s; the rows."""
    with scratch_region() as rt:
        admin = rt.amqp_url(None)
        ceilings, relays = [], []
        # Alternate ceiling and relay rounds and take medians: on a shared 2-core machine the
        # load drifts, and one ceiling measured a minute before the relay says little.
        for _ in range(ROUNDS):
            body_size, seal_rate = prefill(rt, n)
            declare_quorum(admin, "bench.ceiling")
            purge(admin, topology.REGISTRY_QUEUE)  # the previous round's messages
            ceilings.append(publish_rate(admin, "bench.ceiling", b"x" * body_size, n))
            relays.append(relay_rate(rt, n))
        ceiling, relay = statistics.median(ceilings), statistics.median(relays)
        lat = latencies(rt, seconds, rate, chunk)
    p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
    return [
        Row("outbox relay, async confirms, signed certificates", relay, "events/s",
            ceiling=ceiling, ceiling_what="pika async-confirm publish, same run",
            goal="≥ 0.7 × ceiling", met=relay >= 0.7 * ceiling,
            note=f"{n:,} events of {body_size} B pre-filled; ceiling {n:,} messages, same size, "
                 f"quorum queue, same vhost; medians of {ROUNDS} alternating rounds "
                 f"(relay {', '.join(f'{r:,.0f}' for r in relays)}; "
                 f"ceiling {', '.join(f'{c:,.0f}' for c in ceilings)})"),
        Row("issue → broker-confirmed latency p50", p50, "ms",
            note=f"{len(lat):,} certificates via Node.submit, {rate:.0f}/s in chunks of {chunk}"),
        Row("issue → broker-confirmed latency p99", p99, "ms", goal="< 100 ms",
            met=p99 < 100, note="commit → row marked sent after the confirm"),
        Row("outbox append (seal + sign + insert)", seal_rate, "events/s",
            note="OutboxWriter.append_many, 5,000 per transaction"),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000):
        ratio = f" (ratio {row.ratio:.2f})" if row.ratio else ""
        print(f"{row.what}: {row.figure:,.1f} {row.unit}{ratio}")
