"""Where a certificate's end-to-end latency goes, from timestamps the databases already keep.

For each certificate of the latency run (``e2e_bench.latencies``), five consecutive stages
whose sum is its latency:

1. ``node relay``: ``Node.submit`` returned after the commit → the node's relay marked its
   outbox row sent (``outbox.sent_at``: the broker's confirm came back; wake-up, read,
   publish and the quorum queue's confirm);
2. ``to registry``: → the registry's batch began its transaction (``event_log.received_at``:
   delivery, the consumer closing its batch, decoding and verifying the batch);
3. ``registry``: → the registry's relay had the batch's ``RegistryDecisions`` confirmed (its
   outbox row, written in the batch's transaction so ``created_at = received_at``, and its
   ``sent_at``: the batch's policy, writes and commit, then wake-up, publish, confirm);
4. ``to node``: → the node's inbox batch began its transaction (``inbox.received_at``);
5. ``node inbox``: → the acceptance was seen by the benchmark's 5 ms poller (the inbox's
   transaction and commit, and up to 5 ms of polling).

``now()`` in PostgreSQL is the transaction's start, on the same clock as this process. A
quorum queue confirms a message about when it delivers it, so the registry's answer can be
in the node's inbox before the registry marked it sent: ``to node`` is then negative and
``registry`` holds the confirm; their sum is what the answer took. The
services' own histograms (scraped before and after the run) split stages further: mean
publish → confirm per relay, and mean time and size of a consumed batch per service.
"""

from __future__ import annotations

import itertools
import time
import urllib.request
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.relay_bench import percentile
from exchange.adapters import postgres
from exchange.app.runtime import Runtime

STAGES = ("node relay", "to registry", "registry", "to node", "node inbox")


@dataclass
class Traced:
    """The latency run's certificates: where and when each was committed, when it was seen."""

    committed: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (node, time)
    seen: dict[str, float] = field(default_factory=dict)


def stages(rt: Runtime, traced: Traced) -> dict[str, list[float]]:
    """Each stage's durations in seconds, sorted, over the certificates traced end to end."""
    by_node: dict[str, list[str]] = {}
    for cid, (code, _) in traced.committed.items():
        by_node.setdefault(code, []).append(cid)
    sent: dict[str, tuple[str, float]] = {}  # certificate -> (event id, node relay confirmed)
    for code, ids in by_node.items():
        with _conn(rt.node_dsn(code)) as conn:
            for row in postgres.fetch_all(
                conn,
                "SELECT c.certificate_id, c.event_id::text AS event_id, "
                "extract(epoch FROM o.sent_at)::float8 AS sent FROM certificates c "
                "JOIN outbox o ON o.event_id = c.event_id WHERE c.certificate_id = ANY(%s)",
                (ids,),
            ):
                sent[row["certificate_id"]] = (row["event_id"], row["sent"])
    decided: dict[str, tuple[float, str, float]] = {}  # event -> (batch start, answer, sent)
    with _conn(rt.registry_dsn) as conn:
        for row in postgres.fetch_all(
            conn,
            "SELECT e.event_id::text AS event_id, extract(epoch FROM e.received_at)::float8 AS "
            "began, d.event_id::text AS answer, extract(epoch FROM d.sent_at)::float8 AS sent "
            "FROM event_log e JOIN outbox d ON d.created_at = e.received_at "
            "AND d.routing_key = e.producer || '.RegistryDecisions' "
            "WHERE e.event_id = ANY(%s::uuid[])",
            ([event_id for event_id, _ in sent.values()],),
        ):
            decided[row["event_id"]] = (row["began"], row["answer"], row["sent"])
    applied: dict[str, float] = {}  # answer message -> the node's inbox batch start
    for code in by_node:
        answers = [a for _, a, _ in decided.values()]
        with _conn(rt.node_dsn(code)) as conn:
            for row in postgres.fetch_all(
                conn,
                "SELECT event_id::text AS event_id, extract(epoch FROM received_at)::float8 "
                "AS began FROM inbox WHERE event_id = ANY(%s::uuid[])",
                (answers,),
            ):
                applied[row["event_id"]] = row["began"]
    out: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for cid, (_, at) in traced.committed.items():
        event_id, relayed = sent.get(cid, ("", None))
        began, answer, answered = decided.get(event_id, (None, "", None))
        inbox = applied.get(answer)
        seen = traced.seen.get(cid)
        marks = (at, relayed, began, answered, inbox, seen)
        if any(m is None for m in marks):
            continue  # a duplicate answer or a redelivery: not traceable through one path
        for stage, (a, b) in zip(STAGES, itertools.pairwise(marks), strict=True):
            assert a is not None and b is not None
            out[stage].append(b - a)
    return {stage: sorted(values) for stage, values in out.items()}


def summary(durations: Mapping[str, list[float]]) -> str:
    """One line: each stage's mean, p50 and p99 in ms (the means add up to the total's)."""
    parts = []
    for stage, values in durations.items():
        if not values:
            continue
        mean = sum(values) / len(values) * 1000
        p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
        parts.append(f"{stage} {mean:.0f} ({p50:.0f}/{p99:.0f})")
    return "mean (p50/p99) ms: " + ", ".join(parts)


def witness_traffic(rt: Runtime, traced: Traced) -> str:
    """What witnessing added during the run: checkpoints sent, cosignatures recorded."""
    since = min(at for _, at in traced.committed.values())
    with _conn(rt.registry_dsn) as conn:
        [row] = postgres.fetch_all(
            conn,
            "SELECT (SELECT count(*) FROM outbox WHERE event_type = 'LogCheckpoint' "
            "AND created_at >= to_timestamp(%s)) AS checkpoints, "
            "(SELECT count(*) FROM event_log WHERE event_type = 'LogCosigned' "
            "AND received_at >= to_timestamp(%s)) AS cosigned, "
            "(SELECT count(*) FROM event_log WHERE received_at >= to_timestamp(%s)) AS events",
            (since, since, since),
        )
    return (
        f"witnessing: {row['checkpoints']:,} checkpoints to the nodes, {row['cosigned']:,} "
        f"cosignatures among the registry's {row['events']:,} events"
    )


Histograms = dict[tuple[str, str], tuple[float, float]]  # (metric, label) -> (sum, count)


def scrape(ports: Mapping[str, int]) -> Histograms:
    """The services' relay-confirm and consumer-batch histograms: (sum, count) each."""
    out: Histograms = {}
    wanted = {
        "kpx_publish_confirm_seconds": "producer",
        "kpx_consumer_batch_seconds": "service",
        "kpx_consumer_batch_messages": "service",
    }
    for port in ports.values():
        for family in text_string_to_metric_families(_metrics(port)):
            label = wanted.get(family.name)
            if label is None:
                continue
            for sample in family.samples:
                key = (family.name, sample.labels.get(label, ""))
                total, count = out.get(key, (0.0, 0.0))
                if sample.name.endswith("_sum"):
                    out[key] = (total + sample.value, count)
                elif sample.name.endswith("_count"):
                    out[key] = (total, count + sample.value)
    return out


def _metrics(port: int, timeout: float = 30.0) -> str:
    """The text of a service's /metrics; a service still starting is waited for."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as got:
                return str(got.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def histogram_summary(before: Histograms, after: Histograms) -> str:
    """Means over the run: publish → confirm per relay, batch time and size per consumer."""
    means: dict[tuple[str, str], tuple[float, float]] = {}
    for key, (total, count) in after.items():
        total0, count0 = before.get(key, (0.0, 0.0))
        if count > count0:
            means[key] = ((total - total0) / (count - count0), count - count0)
    confirms = [
        f"{label} {mean * 1000:.1f}"
        for (name, label), (mean, _) in sorted(means.items())
        if name == "kpx_publish_confirm_seconds"
    ]
    batches = []
    for (name, label), (mean, count) in sorted(means.items()):
        if name != "kpx_consumer_batch_seconds":
            continue
        size = means.get(("kpx_consumer_batch_messages", label), (0.0, 0.0))[0]
        batches.append(f"{label} {count:.0f} × {size:.1f} msgs in {mean * 1000:.1f} ms")
    return (
        "mean publish→confirm ms: " + ", ".join(confirms) + "; batches (count × mean size in "
        "mean time): " + ", ".join(batches)
    )


def _conn(dsn: str) -> closing[postgres.Connection]:
    return closing(postgres.connect(dsn))
