"""A three-node RabbitMQ cluster loses no event when the node holding the stream is SIGKILLed.

Three private nodes (own names, ports, data and a shared private Erlang cookie) are joined
into one cluster; the region's topology is applied with quorum queues, which then have a
replica on each of the three nodes. A node's relay, given the three nodes' URLs with the
``kpx.registry`` leader first, publishes a stream; that node is SIGKILLed mid-stream and
stays dead. The relay reconnects to a surviving node by itself, the quorum queue elects a new
leader, new operations keep flowing, and everything is read back from a survivor: every
event present, every duplicate byte-identical.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from support.broker import BrokerCluster, PrivateBroker, broker_cluster, read_back, region_on
from support.services import unique_name
from test_node_faults import issue, outbox, prefill

from exchange.app.runtime import Runtime
from exchange.messaging.outbox import OutboxRelay
from exchange.wire import topology

pytestmark = pytest.mark.faults


@dataclass(frozen=True)
class ClusterRegion:
    cluster: BrokerCluster
    rt: Runtime
    tmp: Path


@pytest.fixture(scope="module")
def clustered(
    tmp_path_factory: pytest.TempPathFactory, database_server_url: str
) -> Iterator[ClusterRegion]:
    tmp = tmp_path_factory.mktemp("cluster")
    with (
        broker_cluster(3) as cluster,
        region_on(cluster.nodes[0], tmp, unique_name(), database_server_url) as rt,
    ):
        yield ClusterRegion(cluster, rt, tmp)


def queue_info(node: PrivateBroker, vhost: str, queue: str) -> dict:
    response = httpx.get(
        f"{node.management_url}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}",
        auth=("guest", "guest"),
        timeout=10,
    )
    response.raise_for_status()
    info: dict = response.json()
    return info


def url_on(url: str, first: PrivateBroker, node: PrivateBroker) -> str:
    return url.replace(f":{first.amqp_port}/", f":{node.amqp_port}/")


def test_the_cluster_has_three_running_nodes_and_three_replicas_of_every_quorum_queue(
    clustered: ClusterRegion,
) -> None:
    cluster, rt = clustered.cluster, clustered.rt
    assert cluster.members() == sorted(n.name for n in cluster.nodes)
    for queue in (topology.REGISTRY_QUEUE, topology.node_queue("BW")):
        info = queue_info(cluster.nodes[0], rt.region.vhost, queue)
        assert info["type"] == "quorum"
        assert sorted(info["members"]) == sorted(n.name for n in cluster.nodes), queue


def test_a_broker_node_sigkilled_under_load_loses_no_event_and_the_stream_continues(
    clustered: ClusterRegion, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, rt, code, count, after = clustered.cluster, clustered.rt, "BW", 30_000, 500
    first = cluster.nodes[0]
    leader_name = queue_info(first, rt.region.vhost, topology.REGISTRY_QUEUE)["leader"]
    victim = next(n for n in cluster.nodes if n.name == leader_name)
    survivors = [n for n in cluster.nodes if n is not victim]
    node_url = rt.amqp_url(topology.node_user(code, rt.region.vhost))
    # the victim first: the relay is connected to the very node that dies
    urls = ",".join(url_on(node_url, first, n) for n in [victim, *survivors])
    prefill(rt, code, count)
    relay = OutboxRelay(rt.node_dsn(code), urls, code)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with outbox(rt, code) as watch:
            watch.wait(lambda _, s: s >= 3_000, 180, "3,000 sent")
            victim.kill()
            killed = time.monotonic()
            at_kill = watch.sent()
            assert at_kill < count, "the relay finished before the node was killed"
            resumed = watch.wait(lambda _, s: s > at_kill + 1_000, 180, "resumed")
            issue(rt, code, after)  # new operations keep flowing with one node down
            drained = watch.drained(timeout=300)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the relay did not stop within 60 s"
    total = count + after
    admin_url = url_on(rt.amqp_url(None), first, survivors[0])
    received = read_back(admin_url, topology.REGISTRY_QUEUE, rt.store, rt.keyring(),
                         expect=total, timeout=240)  # fmt: skip
    lost = total - len(received.event_ids)
    assert received.sequences(code) == list(range(1, total + 1)), f"{lost} events lost"
    assert received.duplicates_identical(), "a repeated event_id carried different bytes"
    info = queue_info(survivors[0], rt.region.vhost, topology.REGISTRY_QUEUE)
    with capsys.disabled():
        print(
            f"\n[fault] cluster node SIGKILL (queue leader, relay's node): events={total}, "
            f"lost={lost}, duplicates={received.duplicates}, unsent_at_kill={count - at_kill}, "
            f"resumed_s={resumed - killed:.1f}, drain_s={drained - killed:.1f}, "
            f"new_leader={info.get('leader')}"
        )
