"""The raw ceilings of this machine, measured in the same run as the figures they bound.

- publish: pika ``SelectConnection``, asynchronous publisher confirms with a window of 1000
  messages in flight, persistent messages, to a quorum queue;
- consume: pika ``BlockingConnection``, prefetch 500, one ``multiple`` ack per 250 messages;
- insert: PostgreSQL, 500-row ``execute_values`` with a commit per batch, and ``COPY``.

``python -m benchmarks.ceilings [N]`` prints them; :func:`run` returns them as rows.
"""

from __future__ import annotations

import io
import sys
import time
from typing import Any

import pika
import psycopg2
import psycopg2.extras
from pika.spec import Basic, BasicProperties

from benchmarks import Row, scratch_database, scratch_vhost

WINDOW = 1000
QUEUE = "bench.ceiling"


def declare_quorum(url: str, queue: str) -> None:
    """Declare a durable quorum queue (as kpx.registry is) and purge it."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_purge(queue)
    finally:
        conn.close()


class _Publisher:
    """Keeps WINDOW confirms outstanding on one SelectConnection until N are confirmed."""

    def __init__(self, url: str, exchange: str, key: str, body: bytes, n: int) -> None:
        self.exchange, self.key, self.body, self.n = exchange, key, body, n
        self.sent = self.confirmed = self.nacked = 0
        self.started = self.finished = 0.0
        self.channel: Any = None
        self.props = BasicProperties(delivery_mode=2, content_type="application/octet-stream")
        self.conn = pika.SelectConnection(
            pika.URLParameters(url),
            on_open_callback=lambda c: c.channel(on_open_callback=self._on_channel),
            on_open_error_callback=lambda c, e: c.ioloop.stop(),
        )

    def run(self) -> float:
        self.conn.ioloop.start()
        if self.confirmed + self.nacked < self.n:
            raise RuntimeError(f"publish ceiling: only {self.confirmed} of {self.n} confirmed")
        return self.n / (self.finished - self.started)

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.confirm_delivery(self._on_confirm, callback=lambda _f: self._start())

    def _start(self) -> None:
        self.started = time.perf_counter()
        self._fill()

    def _fill(self) -> None:
        while self.sent < self.n and self.sent - self.confirmed - self.nacked < WINDOW:
            self.channel.basic_publish(self.exchange, self.key, self.body, self.props)
            self.sent += 1

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        settled = method.delivery_tag - (self.confirmed + self.nacked) if method.multiple else 1
        if isinstance(method, Basic.Ack):
            self.confirmed += settled
        else:
            self.nacked += settled
        if self.confirmed + self.nacked >= self.n:
            self.finished = time.perf_counter()
            self.conn.close()
            self.conn.ioloop.stop()
        else:
            self._fill()


def publish_rate(url: str, queue: str, body: bytes, n: int) -> float:
    """Messages per second published to ``queue`` with async confirms (window 1000)."""
    return _Publisher(url, "", queue, body, n).run()


def consume_rate(url: str, queue: str, n: int) -> float:
    """Messages per second consumed from ``queue`` (prefetch 500, multiple acks)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=500)
        got, started = 0, time.perf_counter()
        for method, _props, _body in channel.consume(queue, inactivity_timeout=10):
            if method is None:
                break
            got += 1
            if got % 250 == 0 or got == n:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if got >= n:
                break
        elapsed = time.perf_counter() - started
        channel.cancel()
    finally:
        conn.close()
    if got < n:
        raise RuntimeError(f"consume ceiling: only {got} of {n} messages arrived")
    return n / elapsed


def insert_rates(dsn: str, body: bytes, n: int) -> tuple[float, float]:
    """Rows per second: 500-row execute_values batches (commit each), and COPY."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE bench (id bigint PRIMARY KEY, body bytea NOT NULL)")
        conn.commit()
        rows = [(i, psycopg2.Binary(body)) for i in range(n)]
        started = time.perf_counter()
        for start in range(0, n, 500):
            with conn.cursor() as cur:
                psycopg2.extras.execute_values(
                    cur, "INSERT INTO bench VALUES %s", rows[start : start + 500], page_size=500
                )
            conn.commit()
        batched = n / (time.perf_counter() - started)
        hex_body = "\\\\x" + body.hex()
        data = io.StringIO("".join(f"{n + i}\t{hex_body}\n" for i in range(n)))
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.copy_expert("COPY bench (id, body) FROM STDIN", data)
        conn.commit()
        copy = n / (time.perf_counter() - started)
    finally:
        conn.close()
    return batched, copy


def run(n: int = 20_000, body_size: int = 600) -> list[Row]:
    """Measure every ceiling with ``n`` messages / rows of ``body_size`` bytes."""
    body = bytes(range(256)) * (body_size // 256) + b"x" * (body_size % 256)
    with scratch_vhost() as (_vhost, url):
        declare_quorum(url, QUEUE)
        publish = publish_rate(url, QUEUE, body, n)
        consume = consume_rate(url, QUEUE, n)
    with scratch_database() as dsn:
        batched, copy = insert_rates(dsn, body, n)
    return [
        Row("pika publish, async confirms (window 1000), quorum queue", publish, "msg/s",
            note=f"{n:,} persistent messages of {body_size} B"),
        Row("pika consume, prefetch 500, multiple ack", consume, "msg/s", note=f"{n:,} messages"),
        Row("PostgreSQL insert, 500-row execute_values, commit per batch", batched, "rows/s",
            note=f"{n:,} rows of {body_size} B"),
        Row("PostgreSQL COPY", copy, "rows/s", note=f"{n:,} rows of {body_size} B"),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000):
        print(f"{row.what}: {row.figure:,.0f} {row.unit}")
