"""The naive baseline: what the same pipeline costs done the obvious way.

JSON bodies; a ``BlockingConnection`` publisher that waits for the broker's confirm of each
message before sending the next; a consumer that parses each message, inserts it and commits
per event, then acks it. Same broker, same kind of queue (quorum), same database server.
The figure is end to end: N messages / (last commit − first publish).

``python -m benchmarks.naive_baseline [N]``.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import pika
import psycopg2

from benchmarks import Row, issue_line, scratch_database, scratch_vhost
from benchmarks.ceilings import declare_quorum

QUEUE = "bench.naive"


def _publish(url: str, bodies: list[bytes]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()  # basic_publish now waits for each confirm
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        for body in bodies:
            channel.basic_publish("", QUEUE, body, props, mandatory=True)
    finally:
        conn.close()


def _consume(url: str, dsn: str, n: int, done: list[float]) -> None:
    db = psycopg2.connect(dsn)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=1)
        for method, _props, body in channel.consume(QUEUE, inactivity_timeout=30):
            if method is None:  # idle: the publisher gave up
                break
            event = json.loads(body)
            with db.cursor() as cur:
                cur.execute(
                    "INSERT INTO certificates (event_id, body) VALUES (%s, %s)",
                    (event["event_id"], json.dumps(event["certificate"])),
                )
            db.commit()
            channel.basic_ack(method.delivery_tag)
            if method.delivery_tag >= n:  # tags count this channel's deliveries from 1
                break
        done.append(time.perf_counter())
        channel.cancel()
    finally:
        conn.close()
        db.close()


def run(n: int = 2_000) -> list[Row]:
    """End-to-end rate of ``n`` certificates the naive way."""
    certificate = json.loads(issue_line())["certificate"]
    bodies = [json.dumps({"event_id": i, "certificate": certificate}).encode() for i in range(n)]
    with scratch_vhost() as (_vhost, url), scratch_database() as dsn:
        declare_quorum(url, QUEUE)
        db = psycopg2.connect(dsn)
        with db.cursor() as cur:
            cur.execute("CREATE TABLE certificates (event_id bigint PRIMARY KEY, body jsonb)")
        db.commit()
        db.close()
        done: list[float] = []
        consumer = threading.Thread(target=_consume, args=(url, dsn, n, done), daemon=True)
        consumer.start()
        started = time.perf_counter()
        _publish(url, bodies)
        published = time.perf_counter()
        consumer.join(timeout=600)
        if not done:
            raise RuntimeError("naive baseline: the consumer did not finish")
    rate = n / (done[0] - started)
    return [
        Row("naive baseline end to end (JSON, confirm per message, commit per event)", rate,
            "events/s", note=f"{n:,} events; publishing alone {n / (published - started):,.0f}/s"),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000):
        print(f"{row.what}: {row.figure:,.0f} {row.unit} ({row.note})")
