"""An outbox relay outlives a PostgreSQL crash at any point of its loop, and publishes after.

The pipeline fault suite once stalled after a PostgreSQL SIGKILL: every relay of the region
stopped publishing for good while the consumers recovered. The relay had lost its database
connection inside a COMMIT — marking a confirmed batch sent, with fsync on, is where it
spends its database time under load — and that COMMIT ran outside the driver-error
translation, so the raw ``psycopg2.OperationalError`` was not a TransientError: it ended the
relay's thread instead of reconnecting it, and the process (its consumer alive) ran on with
nothing relaying its outbox.

Here the relay runs in this process against a PRIVATE PostgreSQL server (``support.database``:
the shared one is never killed) and a fresh vhost of the shared broker. A deferred constraint
trigger on ``outbox`` makes the relay's mark-sent COMMIT wait for an advisory lock the test
holds, so the crash falls exactly inside that COMMIT — no timing luck. The server is then
SIGKILLed and restarted (crash recovery on the same data), and the test fails unless the relay
thread is still alive and every row ends up marked sent, with every event on the queue (a
republished duplicate is allowed: consumers drop a repeated event_id). An idle relay, whose
LISTEN connection dies with the server, must also publish what is written after the restart.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pika
import psycopg2
import pytest
from support.database import PrivateDatabase, private_database
from support.services import Vhost

from exchange.adapters import postgres
from exchange.messaging.outbox import OutboxRelay, insert_rows

pytestmark = pytest.mark.faults

RELAY = "XX"
EXCHANGE, QUEUE, KEY = "kpxt.relay", "kpxt.relay.q", "k"
EVENTS = 50
HOLD_KEY = 7_041_977  # the advisory lock the trigger waits for
TIMEOUT = 60.0

# Runs at COMMIT (deferred): the relay's mark-sent commit waits here while the test holds the
# lock. A shared lock per row, so many rows of one commit never wait on each other.
HOLD_COMMIT = f"""
CREATE FUNCTION kpxt_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock_shared({HOLD_KEY}); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER kpxt_hold_commit AFTER UPDATE ON outbox
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION kpxt_hold_commit();
"""


@dataclass(frozen=True)
class Setup:
    server: PrivateDatabase
    dsn: str
    amqp_url: str


@pytest.fixture
def setup(vhost: Vhost) -> Iterator[Setup]:
    with private_database() as server:
        postgres.create_database(server.url, "relay")
        dsn = postgres.dsn_for(server.url, "relay")
        conn = postgres.connect(dsn)
        try:
            postgres.migrate(conn, "exchange.messaging")
        finally:
            conn.close()
        broker = pika.BlockingConnection(pika.URLParameters(vhost.amqp_url))
        try:
            channel = broker.channel()
            channel.exchange_declare(EXCHANGE, "direct", durable=True)
            channel.queue_declare(QUEUE, durable=True)
            channel.queue_bind(QUEUE, EXCHANGE, KEY)
        finally:
            broker.close()
        yield Setup(server, dsn, vhost.amqp_url)


def add_events(dsn: str, count: int) -> set[str]:
    """Queue ``count`` events for the relay (raw bytes: the relay never opens them)."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    conn = postgres.connect(dsn)
    try:
        with postgres.transaction(conn) as cur:
            insert_rows(cur, [(RELAY, i, "Test", EXCHANGE, KEY, i.encode()) for i in ids])
    finally:
        conn.close()
    return set(ids)


def unsent(dsn: str) -> int:
    return one_value(dsn, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")


def one_value(dsn: str, sql: str) -> int:
    conn = postgres.connect(dsn, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (a database still recovering counts as not yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except psycopg2.Error:
            pass
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


def on_queue(amqp_url: str) -> list[str]:
    """Every message body on the queue (acked: the queue is read once, at the end)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = conn.channel()
        bodies: list[str] = []
        while True:
            method, _props, body = channel.basic_get(QUEUE, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(body.decode())
    finally:
        conn.close()


@contextmanager
def relay_running(dsn: str, amqp_url: str) -> Iterator[threading.Thread]:
    relay = OutboxRelay(dsn, amqp_url, RELAY, batch_size=10)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), name="relay-under-test", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=30)


def test_a_relay_whose_database_crashes_inside_its_mark_sent_commit_reconnects_and_publishes(
    setup: Setup,
) -> None:
    server, dsn = setup.server, setup.dsn
    events = add_events(dsn, EVENTS)
    holder = postgres.connect(dsn, autocommit=True, application_name="kpxt-holder")
    with holder.cursor() as cur:
        cur.execute(HOLD_COMMIT)
        cur.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
    with relay_running(dsn, setup.amqp_url) as thread:
        # The relay published a batch, the broker confirmed it, and its COMMIT now waits.
        wait_until(
            lambda: one_value(dsn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type"
                              f" = 'Lock' AND application_name = 'kpx-relay-{RELAY}'") > 0,
            "the relay's mark-sent commit waiting",
        )  # fmt: skip
        server.kill()  # the holder's session goes too: after recovery nothing waits
        time.sleep(1.0)
        server.start()
        wait_until(
            lambda: not thread.is_alive() or unsent(dsn) == 0,
            "every row marked sent after the restart",
        )
        assert thread.is_alive(), "the relay's thread died of the crash instead of reconnecting"
    assert set(on_queue(setup.amqp_url)) == events, "events missing from the queue"


def test_an_idle_relay_publishes_what_is_written_after_its_database_restarted(
    setup: Setup,
) -> None:
    """Its LISTEN connection died with the server: the relay must listen again (or poll)."""
    server, dsn = setup.server, setup.dsn
    first = add_events(dsn, 3)
    with relay_running(dsn, setup.amqp_url) as thread:
        wait_until(lambda: unsent(dsn) == 0, "the first events sent")
        server.kill()
        time.sleep(1.0)
        server.start()
        later = add_events(dsn, 3)  # its NOTIFY reaches only a relay listening again
        wait_until(lambda: unsent(dsn) == 0, "the events written after the restart sent")
        assert thread.is_alive()
    assert set(on_queue(setup.amqp_url)) == first | later
