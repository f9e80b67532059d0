"""A broker that goes away in the middle of a connection's handshake is an outage, not a refusal.

pika calls any connection that ends after the broker's ``Connection.Start`` a *probable
authentication error*, and one that ends after ``Connection.Tune`` a *probable access denied
error*. A broker SIGKILLed (or restarting) between accepting a connection and answering the
login ends it exactly there; the fault suite saw it stop node ZA with exit 1 in CI, because
those two were translated as BrokerRefused (permanent) and the service's reconnect loop retries
only transient errors. Here a small server speaks the first frames of AMQP 0-9-1 (pika's own
marshalling) and ends the connection at the chosen step — dropped after Start or after Tune,
or closed with 320 CONNECTION_FORCED (a broker shutting down) or 541 INTERNAL_ERROR (its
vhost down while it restarts) in answer to Connection.Open; the real broker shows that a wrong
password and an unknown vhost are still refusals. A fault test connects in a loop, directly and
through a TCP proxy, while a private broker is SIGKILLed and restarted: every failure must be
BrokerUnavailable (pika also raises a ValueError when a proxy resets a connection as it opens).
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

import pika.exceptions
import pytest
from pika import frame, spec
from support.broker import private_broker
from support.proxy import FaultProxy
from support.services import with_path

from exchange.adapters.rabbitmq import AsyncPublisher, blocking_connection
from exchange.errors import BrokerRefused, BrokerUnavailable

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
REPLY_TEXTS = {  # as RabbitMQ words them
    320: "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
    541: "INTERNAL_ERROR - access to vhost '/' refused for user 'guest': vhost '/' is down",
}


def _frame(method: spec.amqp_object.Method) -> bytes:
    return frame.Method(0, method).marshal()


def _serve(listener: socket.socket, until: str | int, stop: threading.Event) -> None:
    """Answer each connection up to ``until`` — "start" or "tune": drop it after sending that;
    a reply code: close it with that code in answer to Connection.Open."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(5.0)
            if conn.recv(len(PROTOCOL_HEADER)) != PROTOCOL_HEADER:
                continue
            conn.sendall(_frame(spec.Connection.Start(server_properties={"product": "fake"})))
            if until == "start":
                continue  # closed without a Connection.Close: the broker is gone
            conn.recv(4096)  # the client's Connection.StartOk (its login)
            conn.sendall(_frame(spec.Connection.Tune(channel_max=2047, frame_max=131072)))
            conn.recv(4096)  # TuneOk and Connection.Open: the vhost it asks for
            if isinstance(until, int):
                conn.sendall(_frame(spec.Connection.Close(until, REPLY_TEXTS[until], 0, 0)))
                conn.recv(4096)  # the client's Connection.CloseOk


@contextmanager
def dropping_broker(until: str | int) -> Iterator[str]:
    """The URL of a server that ends every connection at ``until`` (see _serve)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, until, stop), daemon=True)
    thread.start()
    try:
        yield f"amqp://guest:guest@127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:{password}@{host}"))


UNTIL = ["start", "tune", 320, 541]


@pytest.mark.parametrize("until", UNTIL)
def test_a_connection_ended_mid_handshake_is_an_outage_for_the_consumer(until: str | int) -> None:
    with (
        dropping_broker(until) as url,
        pytest.raises(BrokerUnavailable, match="connection ended while"),
    ):
        blocking_connection(url, name="handshake-test")


@pytest.mark.parametrize("until", UNTIL)
def test_a_connection_ended_mid_handshake_is_an_outage_for_the_publisher(until: str | int) -> None:
    with dropping_broker(until) as url:
        publisher = AsyncPublisher(url, name="handshake-test")
        try:
            with pytest.raises(BrokerUnavailable, match="connection ended while"):
                publisher.start(timeout=10)
        finally:
            publisher.close()


def test_a_wrong_password_is_still_a_refusal(amqp_admin_url: str) -> None:
    with pytest.raises(BrokerRefused, match=r"authentication failed .*ACCESS_REFUSED"):
        blocking_connection(_with_password(amqp_admin_url, "not-the-password"), name="t")


def test_an_unknown_vhost_is_still_a_refusal(amqp_admin_url: str) -> None:
    with pytest.raises(BrokerRefused, match=r"access denied .*NOT_ALLOWED"):
        blocking_connection(with_path(amqp_admin_url, "kpx-no-such-vhost"), name="t")


def _connect_until(url: str, stop: threading.Event, outcomes: collections.Counter[str]) -> None:
    while not stop.is_set():
        try:
            conn = blocking_connection(url, name="handshake-test")
            outcomes["connected"] += 1
            with suppress(pika.exceptions.AMQPError):  # the broker may be killed right now
                conn.close()
        except BrokerUnavailable:
            outcomes["unavailable"] += 1
            time.sleep(0.005)
        except Exception as exc:  # what must never reach a service's reconnect loop
            outcomes[f"{type(exc).__name__}: {str(exc)[:100]}"] += 1


@pytest.mark.faults
def test_connecting_while_the_broker_is_sigkilled_and_restarted_only_ever_waits() -> None:
    with private_broker() as broker:
        proxy = FaultProxy(broker.amqp_port)
        urls = {"direct": broker.amqp_url, "proxied": broker.amqp_url.replace(
            f":{broker.amqp_port}/", f":{proxy.port}/")}  # fmt: skip
        outcomes = {way: collections.Counter[str]() for way in urls}
        for _ in range(3):
            stop = threading.Event()
            threads = [threading.Thread(target=_connect_until, args=(url, stop, outcomes[way]))
                       for way, url in urls.items()]  # fmt: skip
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            broker.kill()
            time.sleep(1.0)
            broker.start()
            time.sleep(1.0)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        for way, seen in outcomes.items():
            wrong = {k: n for k, n in seen.items() if k not in ("connected", "unavailable")}
            assert not wrong, f"{way}: {wrong}"
            assert seen["connected"] and seen["unavailable"], f"{way}: {dict(seen)}"
