"""RabbitMQ adapter: connection parameters, an asynchronous-confirm publisher, a batch consumer.

pika's exceptions are translated here, and only here: a lost or refused connection, a closed
channel or a blocked connection that timed out become :class:`BrokerUnavailable` (transient);
an access or precondition refusal by the broker becomes :class:`BrokerRefused` (permanent).
A connection that ends during its handshake is an outage, whatever pika's "probable
authentication error" calls it (a broker killed between accept and login), unless the broker
closed it with a refusal: 403 (the login) or 530 (the vhost).

The publisher runs a ``SelectConnection`` on its own thread so that hundreds of messages can
be in flight with asynchronous publisher confirms — a confirm per message costs an order of
magnitude in throughput (DESIGN §11). The consumer is a ``BlockingConnection`` that hands
batches to a handler and acknowledges them with one ``multiple`` ack after the handler
committed.
"""

from __future__ import annotations

import collections
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from exchange.domain.codes import PublishOutcome
from exchange.errors import BrokerRefused, BrokerUnavailable, TransientError

log = logging.getLogger(__name__)
# pika logs every failed connection attempt at ERROR with a traceback (131 lines in 12 s of a
# broker outage); kpx says it once per attempt, naming host and port (retry.until_stopped).
logging.getLogger("pika").setLevel(logging.CRITICAL)

CONTENT_TYPE = "application/vnd.apache.avro+binary"
_REFUSAL_CODES = frozenset({403, 406})  # ACCESS_REFUSED, PRECONDITION_FAILED
_LOGIN_REFUSAL_CODES = frozenset({403, 530})  # ACCESS_REFUSED, NOT_ALLOWED (the vhost)
_CLOSED_BY_BROKER = re.compile(r"ConnectionClosedByBroker: \((\d+)\)")
# A transient failure (the database restarting) is retried this many times, backoff capped at
# 10 s with jitter (about five minutes), before the batch is given back to the broker.
_HANDLER_ATTEMPTS = 35


def parameters(
    url: str, *, name: str, heartbeat: int = 30, blocked_timeout: float = 60.0
) -> pika.URLParameters:
    """Connection parameters for ``url`` with kpx's heartbeat, blocked timeout and name."""
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    # A broker under a memory or disk alarm blocks publishers; give up after this long so the
    # relay reconnects and the operator sees it, instead of hanging forever.
    params.blocked_connection_timeout = blocked_timeout
    params.connection_attempts = 1
    params.socket_timeout = 10
    params.client_properties = {"connection_name": name}
    return params


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Translate pika's exceptions raised inside the block into the kpx tree."""
    try:
        yield
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code in _REFUSAL_CODES:
            raise BrokerRefused(f"{what}: {exc.reply_code} {exc.reply_text}") from exc
        raise BrokerUnavailable(f"{what}: {exc.reply_code} {exc.reply_text}") from exc
    except pika.exceptions.ProbableAccessDeniedError as exc:
        if not _refused_at_login(exc):
            raise BrokerUnavailable(f"{what}: connection ended while opening ({exc})") from exc
        raise BrokerRefused(f"{what}: access denied ({exc})") from exc
    except pika.exceptions.ProbableAuthenticationError as exc:
        if not _refused_at_login(exc):
            raise BrokerUnavailable(f"{what}: connection ended while logging in ({exc})") from exc
        raise BrokerRefused(f"{what}: authentication failed ({exc})") from exc
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"{what}: {type(exc).__name__} {exc}") from exc


def _refused_at_login(exc: pika.exceptions.AMQPConnectionError) -> bool:
    """Whether a "probable" login or vhost refusal is one: the broker closed with 403 or 530.

    pika names any connection that ends during the handshake a probable authentication (or
    vhost access) error and puts the cause's repr in its message. A refusal is the broker's
    ``ConnectionClosedByBroker: (403) 'ACCESS_REFUSED …'`` (the login) or ``(530)
    'NOT_ALLOWED …'`` (no such vhost, or no permission on it): permanent. Anything else is
    an outage that must not stop a service: a ``StreamLostError`` (the broker killed between
    accepting the connection and answering the login, or a proxy in front of it dropping the
    link), 320 CONNECTION_FORCED (a broker shutting down), 541 INTERNAL_ERROR (a vhost that
    is down while it restarts).
    """
    closed = _CLOSED_BY_BROKER.match(str(exc))
    return closed is not None and int(closed.group(1)) in _LOGIN_REFUSAL_CODES


def blocking_connection(url: str, *, name: str) -> pika.BlockingConnection:
    """Open a BlockingConnection; raises BrokerUnavailable or BrokerRefused."""
    params = parameters(url, name=name)
    where = f"{name}: connecting to {params.host}:{params.port}"
    with translated(where):
        try:
            return pika.BlockingConnection(params)
        except ValueError as exc:
            # pika checks the socket it just connected with getpeername() and raises
            # ValueError when the peer reset it in between: a proxy in front of a broker
            # that is down accepts, then drops the connection. The parameters were checked
            # above (parameters()), so this is the link, not a bad argument.
            if "getpeername" not in str(exc):
                raise
            raise BrokerUnavailable(f"{where}: connection reset as it opened") from exc


# --------------------------------------------------------------------------- publishing


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: where to, and its id for tracking returns."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    event_type: str


@dataclass
class Confirms:
    """The broker's answers for one published batch, filled in by the IO thread."""

    messages: Sequence[Outgoing]
    outcomes: list[PublishOutcome | None]
    remaining: int
    publisher: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    def settle(self, index: int, outcome: PublishOutcome) -> None:
        """Record one message's outcome (a returned message keeps "returned")."""
        if self.outcomes[index] is None:
            self.outcomes[index] = outcome
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()

    def fail_all(self) -> None:
        """Nothing of the batch reached the broker."""
        for index in range(len(self.outcomes)):
            self.settle(index, PublishOutcome.FAILED)

    def wait(self, timeout: float) -> list[PublishOutcome]:
        """Block until every message is answered (or ``timeout``); unanswered count as FAILED."""
        if not self.done.wait(timeout):
            log.warning(
                "publisher %s: %d confirms late after %.0f s",
                self.publisher,
                self.remaining,
                timeout,
            )
        return [o if o is not None else PublishOutcome.FAILED for o in self.outcomes]


class AsyncPublisher:
    """Publishes batches with asynchronous confirms over one channel on a private IO thread.

    ``publish_many`` is thread-safe and blocks until the broker has answered for every
    message of the batch (or the connection is lost, in which case unanswered messages are
    ``FAILED``). A batch is the confirm window: the broker sees all of it before the first
    confirm is awaited.
    """

    def __init__(self, url: str, *, name: str, user_id: str | None = None) -> None:
        # ``url`` may list the nodes of a cluster, comma-separated (a comma inside a URL is
        # percent-encoded): start() tries them in order, so a dead node is skipped.
        self._candidates = [parameters(u, name=name) for u in url.split(",") if u.strip()]
        self._params = self._candidates[0]
        self._name = name
        self.user_id = user_id if user_id is not None else self._params.credentials.username
        self._conn: pika.SelectConnection | None = None
        self._channel: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._next_tag = 1
        self._pending: collections.OrderedDict[int, tuple[Confirms, int]] = (
            collections.OrderedDict()
        )
        self._by_id: dict[str, tuple[Confirms, int]] = {}
        self.closed = threading.Event()
        self.blocked = False
        self.on_blocked: Callable[[bool], None] | None = None

    def _where(self) -> str:
        """The publisher's name and the broker it talks to, for errors and logs."""
        return f"{self._name} ({self._params.host}:{self._params.port})"

    # -- lifecycle (caller thread) --

    def start(self, timeout: float = 15.0) -> AsyncPublisher:
        """Connect and open a confirm-mode channel; raises BrokerUnavailable/BrokerRefused.

        With several URLs, each is tried in turn until one answers; the last one's
        BrokerUnavailable is raised when none does.
        """
        for params in self._candidates[:-1]:
            try:
                return self._start(params, timeout)
            except BrokerUnavailable as exc:
                log.warning("publisher %s: %s; trying the next node", self._name, exc)
        return self._start(self._candidates[-1], timeout)

    def _start(self, params: pika.URLParameters, timeout: float) -> AsyncPublisher:
        if self._thread is not None:  # a failed attempt's thread must not touch the new state
            self._thread.join(timeout=10)
        self._params, self._conn, self._error = params, None, None
        self._ready, self.closed = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"amqp-{self._name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.close()
            raise BrokerUnavailable(f"{self._where()}: no channel after {timeout:.0f} s")
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        """Close the connection and stop the IO thread."""
        conn = self._conn
        if conn is not None and not self.closed.is_set():
            try:
                conn.ioloop.add_callback_threadsafe(self._close_on_loop)
            except Exception:  # the loop is already gone
                log.debug("publisher %s: loop already stopped", self._name)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def publish_many(
        self, messages: Sequence[Outgoing], timeout: float = 30.0
    ) -> list[PublishOutcome]:
        """Publish ``messages`` in order; return one PublishOutcome per message, in order."""
        return self.publish_async(messages).wait(timeout)

    def publish_async(self, messages: Sequence[Outgoing]) -> Confirms:
        """Hand ``messages`` to the IO thread and return at once; ``wait`` for their outcomes.

        Several batches may be in flight: the caller reads its next batch while the broker
        confirms this one.
        """
        batch = Confirms(messages, [None] * len(messages), len(messages), self._name)
        if not messages:
            batch.done.set()
        elif self.closed.is_set() or self._conn is None:
            batch.fail_all()
        else:
            try:
                self._conn.ioloop.add_callback_threadsafe(lambda: self._publish_on_loop(batch))
            except Exception:  # the loop is gone: nothing was sent
                batch.fail_all()
        return batch

    # -- IO thread --

    def _run(self) -> None:
        try:
            self._conn = pika.SelectConnection(
                self._params,
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
            )
            self._conn.add_on_connection_blocked_callback(lambda *_: self._set_blocked(True))
            self._conn.add_on_connection_unblocked_callback(lambda *_: self._set_blocked(False))
            self._conn.ioloop.start()
        except Exception as exc:  # connection setup failed before the loop ran
            self._error = _translate(exc, self._where())
            self._ready.set()
        finally:
            self.closed.set()
            self._fail_pending()

    def _on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._ready.set())

    def _on_open_error(self, conn: Any, exc: BaseException) -> None:
        self._error = _translate(exc, self._where())
        self._ready.set()
        conn.ioloop.stop()

    def _on_closed(self, conn: Any, exc: BaseException) -> None:
        if not self._ready.is_set():
            self._error = _translate(exc, self._where())
            self._ready.set()
        log.info("publisher %s: connection closed (%s)", self._name, exc)
        self.closed.set()
        self._fail_pending()
        conn.ioloop.stop()

    def _on_channel_closed(self, channel: Any, exc: BaseException) -> None:
        log.warning("publisher %s: channel closed (%s)", self._name, exc)
        if not self._ready.is_set():
            self._error = _translate(exc, self._where())
            self._ready.set()
        self._fail_pending()
        if self._conn is not None and self._conn.is_open:
            self._conn.close()

    def _close_on_loop(self) -> None:
        if self._conn is not None and self._conn.is_open:
            self._conn.close()
        elif self._conn is not None:
            self._conn.ioloop.stop()

    def _set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        log.warning(
            "publisher %s: broker %s publishing", self._name, "blocked" if blocked else "unblocked"
        )
        if self.on_blocked is not None:
            self.on_blocked(blocked)

    def _publish_on_loop(self, batch: Confirms) -> None:
        channel = self._channel
        for index, msg in enumerate(batch.messages):
            if channel is None or not channel.is_open:
                batch.settle(index, PublishOutcome.FAILED)
                continue
            props = BasicProperties(
                message_id=msg.message_id,
                type=msg.event_type,
                user_id=self.user_id,
                content_type=CONTENT_TYPE,
                delivery_mode=2,
                timestamp=int(time.time()),
            )
            tag = self._next_tag
            self._next_tag += 1
            self._pending[tag] = (batch, index)
            self._by_id[msg.message_id] = (batch, index)
            channel.basic_publish(msg.exchange, msg.routing_key, msg.body, props, mandatory=True)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        outcome = (
            PublishOutcome.CONFIRMED if isinstance(method, Basic.Ack) else PublishOutcome.NACKED
        )
        if method.multiple:
            while self._pending and next(iter(self._pending)) <= method.delivery_tag:
                self._resolve(next(iter(self._pending)), outcome)
        elif method.delivery_tag in self._pending:
            self._resolve(method.delivery_tag, outcome)

    def _resolve(self, tag: int, outcome: PublishOutcome) -> None:
        batch, index = self._pending.pop(tag)
        self._by_id.pop(batch.messages[index].message_id, None)
        batch.settle(index, outcome)

    def _on_return(self, _channel: Any, method: Any, props: BasicProperties, _body: bytes) -> None:
        entry = self._by_id.get(props.message_id or "")
        log.warning(
            "publisher %s: message %r returned: %s %s",
            self._name,
            props.message_id,
            method.reply_code,
            method.reply_text,
        )
        if entry is not None:
            batch, index = entry
            batch.settle(index, PublishOutcome.RETURNED)

    def _fail_pending(self) -> None:
        for batch, index in list(self._pending.values()):
            batch.settle(index, PublishOutcome.FAILED)
        self._pending.clear()
        self._by_id.clear()


def _translate(exc: BaseException, name: str) -> Exception:
    try:
        with translated(name):
            raise exc
    except (BrokerUnavailable, BrokerRefused) as ours:
        return ours
    except BaseException:
        return BrokerUnavailable(f"{name}: {type(exc).__name__} {exc}")


# --------------------------------------------------------------------------- consuming


@dataclass(frozen=True, slots=True)
class Delivery:
    """One consumed message."""

    delivery_tag: int
    routing_key: str
    properties: BasicProperties
    body: bytes
    redelivered: bool


BatchHandler = Callable[[list[Delivery]], None]


class BatchConsumer:
    """Consumes a queue in batches; acks each batch with one ``multiple`` ack after it is handled.

    The handler must make the batch durable before it returns (commit). A TransientError from
    it is retried with bounded exponential backoff while the broker connection is kept alive
    (the messages stay unacked, so nothing is lost if the process dies meanwhile); any other
    exception propagates and the unacked messages return to the queue.
    """

    def __init__(
        self,
        url: str,
        queue: str,
        *,
        name: str,
        prefetch: int = 500,
        batch_size: int = 250,
        max_wait: float = 0.02,
        max_age: float = 0.1,
        linger: float = 0.0,
    ) -> None:
        self.url, self.queue, self.name = url, queue, name
        self.prefetch, self.batch_size, self.max_wait = prefetch, batch_size, max_wait
        self.max_age = max_age  # the longest a message waits for its batch to fill
        # linger: how long a batch stays open once nothing more is buffered, up to max_wait
        # of silence. 0 in service; a test that needs a queued backlog taken as one batch
        # sets it (the broker's deliveries of a backlog arrive in several socket reads).
        self.linger = linger
        # max_wait: how often an idle consumer wakes to look at its stop event; a batch no
        # longer waits for such a pause to close (see run).
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._dead_channel: BlockingChannel | None = None

    def connect(self) -> None:
        """Open the connection and channels; raises BrokerUnavailable/BrokerRefused."""
        self._conn = blocking_connection(self.url, name=self.name)
        with translated(f"{self.name}: opening channels"):
            self._channel = self._conn.channel()
            self._channel.basic_qos(prefetch_count=self.prefetch)
            self._dead_channel = self._conn.channel()
            self._dead_channel.confirm_delivery()

    def close(self) -> None:
        """Close the connection (unacked messages return to the queue)."""
        if self._conn is not None and self._conn.is_open:
            try:
                self._conn.close()
            except pika.exceptions.AMQPError:
                log.debug("consumer %s: close failed", self.name)
        self._conn = None

    def dead_letter(self, delivery: Delivery, exchange: str, reason: str) -> None:
        """Publish ``delivery`` to ``exchange`` with the reason in the ``x-kpx-reason`` header.

        Waits for the broker's confirm, so the caller may ack the original afterwards.
        """
        assert self._dead_channel is not None
        headers = dict(delivery.properties.headers or {})
        headers.update(
            {
                "x-kpx-reason": reason[:1000],
                "x-kpx-queue": self.queue,
                "x-kpx-routing-key": delivery.routing_key,
            }
        )
        props = BasicProperties(
            message_id=delivery.properties.message_id,
            type=delivery.properties.type,
            content_type=delivery.properties.content_type,
            delivery_mode=2,
            headers=headers,
        )
        with translated(f"{self.name}: dead-lettering"):
            self._dead_channel.basic_publish(exchange, delivery.routing_key, delivery.body, props)

    def run(self, handler: BatchHandler, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; raises BrokerUnavailable when the connection is lost."""
        if self._conn is None:
            self.connect()
        assert self._channel is not None
        batch: list[Delivery] = []
        opened = 0.0  # when the batch's first message arrived
        with translated(f"{self.name}: consuming {self.queue!r}"):
            for method, props, body in self._channel.consume(
                self.queue, inactivity_timeout=self.max_wait
            ):
                if method is not None:
                    assert props is not None and body is not None
                    if not batch:
                        opened = time.monotonic()
                    batch.append(
                        Delivery(
                            method.delivery_tag, method.routing_key, props, body, method.redelivered
                        )
                    )
                # Flush as soon as nothing more is buffered, when the batch is full, or when
                # its first message has waited max_age. Lingering for more (even the 20 ms
                # of an inactivity timeout) only helps throughput when messages arrive
                # faster than batches are handled, and then they are already buffered: the
                # prefetched messages pile up while a batch is handled, so batches grow by
                # themselves under load. Below it, a linger is pure latency (at half load it
                # made a certificate wait ~100 ms for its batch at the registry).
                if batch and (
                    method is None
                    or len(batch) >= self.batch_size
                    or time.monotonic() - opened >= self.max_age
                    or (time.monotonic() - opened >= self.linger and not self._buffered())
                ):
                    self._handle(handler, batch, stop)
                    batch = []
                if stop.is_set() and not batch:
                    break
            self._channel.cancel()

    def _buffered(self) -> bool:
        """Whether another delivery can be had without waiting: parsed by pika already, or
        in the socket (read without blocking, as the consume loop would on its next turn)."""
        assert self._conn is not None and self._channel is not None
        if int(self._channel.get_waiting_message_count()) > 0:
            return True
        self._conn.process_data_events(time_limit=0)
        return int(self._channel.get_waiting_message_count()) > 0

    def _handle(self, handler: BatchHandler, batch: list[Delivery], stop: threading.Event) -> None:
        assert self._conn is not None and self._channel is not None
        for attempt in range(1, _HANDLER_ATTEMPTS + 1):
            try:
                handler(batch)
                break
            except TransientError as exc:
                if stop.is_set() or attempt == _HANDLER_ATTEMPTS:
                    raise
                delay = min(0.1 * 2**attempt, 10.0) * random.uniform(0.5, 1.5)
                log.warning(
                    "consumer %s: %s; retrying batch of %d in %.1f s (attempt %d)",
                    self.name,
                    exc,
                    len(batch),
                    delay,
                    attempt,
                )
                # connection.sleep keeps heartbeats flowing, so the broker keeps our
                # deliveries instead of handing them to another consumer while we wait.
                self._conn.sleep(delay)
        self._channel.basic_ack(batch[-1].delivery_tag, multiple=True)
