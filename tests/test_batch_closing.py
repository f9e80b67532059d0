"""When the BatchConsumer closes a batch (exchange/adapters/rabbitmq.py), on the real broker.

A batch closes as soon as nothing more is buffered: a lone message is handled at once, not
after the inactivity timeout or the batch's max age (both set to 5 s here, so the test fails
by seconds on the code that lingered). Under load the messages that arrive while a batch is
handled are buffered, so the next batches are full.
"""

from __future__ import annotations

import threading
import time

import pika
from support.services import Vhost

from exchange.adapters.rabbitmq import BatchConsumer, Delivery

QUEUE = "kpxt.batches"
LINGER = 5.0  # the inactivity timeout and max age: far longer than any test here waits


def _publish(url: str, n: int) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        channel.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        channel.confirm_delivery()
        for i in range(n):
            channel.basic_publish("", QUEUE, f"m{i}".encode())
    finally:
        conn.close()


class _Recorder:
    """Handles batches: notes their sizes and when each was handed over; ``stop`` at ``n``."""

    def __init__(self, n: int, first_takes: float = 0.0) -> None:
        self.n, self.first_takes = n, first_takes
        self.sizes: list[int] = []
        self.handed: list[float] = []
        self.bodies: list[bytes] = []
        self.stop = threading.Event()

    def __call__(self, batch: list[Delivery]) -> None:
        self.handed.append(time.monotonic())
        if not self.sizes:
            time.sleep(self.first_takes)  # meanwhile the rest of the burst is buffered
        self.sizes.append(len(batch))
        self.bodies += [d.body for d in batch]
        if len(self.bodies) >= self.n:
            self.stop.set()


def _consume(vhost: Vhost, recorder: _Recorder, *, batch_size: int, prefetch: int) -> None:
    consumer = BatchConsumer(
        vhost.amqp_url, QUEUE, name="kpxt-batches", prefetch=prefetch, batch_size=batch_size,
        max_wait=LINGER, max_age=LINGER,
    )  # fmt: skip
    thread = threading.Thread(target=consumer.run, args=(recorder, recorder.stop), daemon=True)
    thread.start()
    try:
        assert recorder.stop.wait(30), f"only {len(recorder.bodies)} of {recorder.n} handled"
    finally:
        recorder.stop.set()
        thread.join(timeout=2 * LINGER + 5)  # the loop looks at stop every inactivity timeout
        consumer.close()


def test_a_lone_message_is_handled_without_waiting_for_its_batch_to_fill(vhost: Vhost) -> None:
    _publish(vhost.amqp_url, 0)  # the queue exists before the consumer starts
    recorder = _Recorder(1)
    consumer = threading.Thread(
        target=_consume, args=(vhost, recorder), kwargs={"batch_size": 250, "prefetch": 500}
    )
    consumer.start()
    time.sleep(1.0)  # consuming
    sent = time.monotonic()
    _publish(vhost.amqp_url, 1)
    consumer.join(timeout=60)
    assert recorder.sizes == [1]
    assert recorder.handed[0] - sent < 1.0, "the lone message waited for its batch to fill"


def test_a_burst_still_forms_full_batches_and_every_message_is_handled_once(
    vhost: Vhost,
) -> None:
    _publish(vhost.amqp_url, 100)
    recorder = _Recorder(100, first_takes=0.5)
    _consume(vhost, recorder, batch_size=25, prefetch=100)
    assert sorted(recorder.bodies) == sorted(f"m{i}".encode() for i in range(100))
    # The first batch may close before the whole prefetch has arrived; while it is handled
    # the rest is buffered, so every later batch but the last is full.
    assert all(size == 25 for size in recorder.sizes[1:-1]), recorder.sizes
    assert len(recorder.sizes) <= 5, recorder.sizes


class _Crash(Exception):
    """The handler dying before its batch is durable."""


def test_a_batch_that_was_not_handled_comes_back_whole_and_nothing_is_lost(vhost: Vhost) -> None:
    """Small batches are acked one by one after their handler returned: a handler that dies
    leaves its batch (and everything after it) unacked, redelivered to the next consumer."""
    _publish(vhost.amqp_url, 30)
    handled: list[bytes] = []

    def dies_on_the_second_batch(batch: list[Delivery]) -> None:
        if handled:
            raise _Crash
        handled.extend(d.body for d in batch)

    first = BatchConsumer(vhost.amqp_url, QUEUE, name="kpxt-first", prefetch=30, batch_size=10)
    try:
        first.run(dies_on_the_second_batch, threading.Event())
    except _Crash:
        pass
    finally:
        first.close()
    assert len(handled) == 10
    recorder = _Recorder(20)
    redelivered: list[bool] = []
    original = recorder.__call__

    def noting(batch: list[Delivery]) -> None:
        redelivered.extend(d.redelivered for d in batch)
        original(batch)

    consumer = BatchConsumer(
        vhost.amqp_url, QUEUE, name="kpxt-second", prefetch=30, batch_size=10, max_wait=0.05
    )
    thread = threading.Thread(target=consumer.run, args=(noting, recorder.stop), daemon=True)
    thread.start()
    try:
        assert recorder.stop.wait(30), f"only {len(recorder.bodies)} of 20 redelivered"
    finally:
        thread.join(timeout=10)
        consumer.close()
    assert sorted(handled + recorder.bodies) == sorted(f"m{i}".encode() for i in range(30))
    assert redelivered[:10] == [True] * 10  # the batch the handler died on, whole
