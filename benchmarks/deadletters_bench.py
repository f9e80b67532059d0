"""Benchmark listing the dead-letter queue and re-injecting one message of it.

Issue 11, item 10: listing 15,000 dead letters took 25 s and re-injecting one id scanned the
whole queue one basic_get at a time (2 minutes at 38,000). Creates a scratch vhost on
``KPX_AMQP_URL`` with the kpx topology, dead-letters N messages, times ``list_dead`` and a
``reinject`` of the last one, and deletes the vhost.

    python -m benchmarks.deadletters_bench [--messages N]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import pika
from pika.spec import BasicProperties

from exchange.adapters.management import Admin
from exchange.registry import deadletters
from exchange.wire import topology

AMQP = os.environ.get("KPX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def run(messages: int) -> dict[str, float]:
    """Seconds to list ``messages`` dead letters and to re-inject the last one."""
    vhost = f"kpxt_dlbench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(AMQP)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))
    user = parts.username or "guest"
    admin = Admin(AMQP)
    try:
        definitions = topology.definitions(vhost, ["BW"])
        definitions["permissions"], definitions["topic_permissions"] = [], []  # no users
        admin.apply(definitions, user)
        conn = pika.BlockingConnection(pika.URLParameters(url))
        channel = conn.channel()
        channel.confirm_delivery()  # every message is in the queue before the clock starts
        ids = [str(uuid.uuid4()) for _ in range(messages)]
        for message_id in ids:
            props = BasicProperties(message_id=message_id, headers={"x-kpx-reason": "bench"})
            channel.basic_publish(topology.DEAD, "BW.CertificateIssued", b"x" * 200, props)
        conn.close()
        started = time.perf_counter()
        listed = deadletters.list_dead(url)
        listing = time.perf_counter() - started
        started = time.perf_counter()
        moved = deadletters.reinject(url, user, [ids[-1]])
        reinjecting = time.perf_counter() - started
        assert len(listed) == messages and moved == 1, (len(listed), moved)
        return {"list_seconds": listing, "reinject_one_seconds": reinjecting}
    finally:
        admin.delete_vhost(vhost)
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=15_000)
    n = parser.parse_args().messages
    figures = run(n)
    print(f"{n:,} dead letters: listed in {figures['list_seconds']:.2f} s, the last one "
          f"re-injected in {figures['reinject_one_seconds']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
