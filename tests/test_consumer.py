"""The one consumer (exchange.messaging.consumer) as the reconciler and a node's inbox use it.

On the real RabbitMQ and PostgreSQL. A failing transaction is made by the database itself: a
trigger raises a serialization failure (SQLSTATE 40001, which the adapter calls transient)
on the first N inserts into the service's tracking table, counted by a sequence (a sequence
is not rolled back with the transaction). Each test here failed on the code before the one
consumer (three hand-written consumers): named in the test's docstring.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pika
import pytest
from support.database import private_database
from support.services import Database, Vhost
from support.services_up import Fleet, Service, free_ports, http_get, kpx_argv, service_env

from exchange.adapters.management import Admin
from exchange.adapters.postgres import connect, dsn_for, migrate, transaction
from exchange.app.runtime import Runtime
from exchange.domain.region import Region, load_region
from exchange.messaging.consumer import (
    SWITCH_INTERVAL,
    Consumer,
    Health,
    Spec,
    run_consumer,
)
from exchange.messaging.consumer import Database as ServiceDatabase
from exchange.reconciler import service as reconciler_service
from exchange.wire import topology
from exchange.wire.codec import SchemaStore, default_store
from exchange.wire.envelope import open_envelope, seal
from exchange.wire.signing import Keyring, Signer, generate_key
from nodes.inbox import Inbox
from nodes.service import NodeService
from nodes.service import migrate as migrate_node

REGION_FILE = Path(__file__).resolve().parent.parent / "deploy" / "region.example.toml"
NODE = "BW"
WAIT = 20.0


# --------------------------------------------------------------------------- helpers


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def count(dsn: str, query: str) -> int:
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.execute(query)
            row = cur.fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def fail_inserts(dsn: str, table: str, times: int) -> None:
    """Make the first ``times`` INSERT statements on ``table`` fail as transient."""
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.execute("CREATE SEQUENCE kpxt_failures")
            cur.execute(
                "CREATE FUNCTION kpxt_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF nextval('kpxt_failures') <= {times} THEN"
                " RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END IF;"
                " RETURN NULL; END $$"
            )
            cur.execute(
                f"CREATE TRIGGER kpxt_fail BEFORE INSERT ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION kpxt_fail()"
            )
    finally:
        conn.close()


def attempts(dsn: str) -> int:
    """How many inserts the trigger has seen (failed or not)."""
    return count(dsn, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM kpxt_failures")


def publish(vhost: Vhost, exchange: str, routing_key: str, bodies: list[bytes]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(vhost.amqp_url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        for body in bodies:
            props = pika.BasicProperties(delivery_mode=2, message_id=f"m-{len(body)}")
            channel.basic_publish(exchange, routing_key, body, props)
    finally:
        conn.close()


def dead_letters(vhost: Vhost, queue: str = topology.DEAD_QUEUE) -> list[bytes]:
    """What the dead-letter queue holds: a node's consumer writes to kpx.dead.nodes (it may
    not publish into kpx.dead), read from ``topology.NODE_DEAD_QUEUE``."""
    conn = pika.BlockingConnection(pika.URLParameters(vhost.amqp_url))
    out: list[bytes] = []
    try:
        channel = conn.channel()
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append(body)
    finally:
        conn.close()


def dead_count(vhost: Vhost, queue: str = topology.DEAD_QUEUE) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(vhost.amqp_url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def topology_on(vhost: Vhost, region: Region) -> None:
    defs = topology.definitions(vhost.name, region.node_codes)
    defs["permissions"], defs["topic_permissions"] = [], []  # the test connects as the admin
    admin = Admin(vhost.amqp_url)
    try:
        admin.apply(defs, "guest")
    finally:
        admin.close()


def running(target: Callable[[threading.Event], None]) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def stopped(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the service did not stop"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def codec() -> SchemaStore:
    return default_store()


@pytest.fixture(scope="module")
def region() -> Region:
    return load_region(REGION_FILE)


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    return {p: generate_key(p) for p in ("XS", "BW", "XS-RECONCILER")}


@pytest.fixture
def keyring(signers: dict[str, Signer]) -> Keyring:
    return Keyring([s.verify_key for s in signers.values()])


def status_change(codec: SchemaStore, signer: Signer, sequence: int) -> bytes:
    record = {
        "participant": "ZA",
        "status": "SUSPENDED",
        "effective_on": date(2026, 3, 1),
        "reason": "test",
    }
    return seal(codec, signer, "ParticipantStatusChanged", record, sequence)[1]


def certificate_issued(codec: SchemaStore, signer: Signer) -> bytes:
    party = {"name": "Co", "address": "1 Road", "country": "BW", "licence_no": "L1"}
    cert: dict[str, Any] = {
        "certificate_id": "XS-BW-2026-000001", "issuing_participant": "XS",
        "issuing_member": "BW", "issuing_authority": "Authority", "destination": "EU",
        "origin": {"type": "UNMIXED", "countries": ["BW"]},
        "exporter": party, "importer": {**party, "country": "EU"},
        "date_of_issue": date(2026, 2, 1), "date_of_expiry": date(2026, 3, 31),
        "parcels": [{"parcel_no": 1, "hs_code": "HS_7102_10", "carats": Decimal("1.00"),
                     "value_usd": Decimal("10.00"), "origin_country": None}],
        "number_of_parcels": 1, "total_carats": Decimal("1.00"),
        "total_value_usd": Decimal("10.00"),
        "container": {"container_id": "C1", "seal_numbers": ["S1"]},
        "lawful_import_evidence": [], "scope": "EXTERNAL",
    }  # fmt: skip
    return seal(codec, signer, "CertificateIssued", {"certificate": cert}, 1)[1]


# --------------------------------------------------------------------------- dead-letter once


def test_the_reconciler_dead_letters_a_bad_message_once_however_often_its_batch_is_retried(
    vhost: Vhost,
    database: Database,
    region: Region,
    codec: SchemaStore,
    keyring: Keyring,
    signers: dict[str, Signer],
) -> None:
    """Before the one consumer the reconciler dead-lettered it again on every retry (3 here)."""
    topology_on(vhost, region)
    conn = connect(database.url)
    migrate(conn, "exchange.registry")
    conn.close()
    reconciler_service.prepare(database.url)
    fail_inserts(database.url, "recon.processed", times=2)
    good = certificate_issued(codec, signers["BW"])
    publish(vhost, topology.ACCEPTED, "BW.CertificateIssued", [b"not an envelope", good])
    ctx = reconciler_service.context(region, codec, signers["XS-RECONCILER"])
    reconciler = reconciler_service.Reconciler(database.url, vhost.amqp_url, ctx, codec, keyring)
    stop, thread = running(reconciler.run)
    try:
        wait_until(
            lambda: count(database.url, "SELECT count(*) FROM recon.processed") == 1,
            "the good event recorded after two failed attempts",
        )
    finally:
        stopped(stop, thread)
    assert attempts(database.url) == 3
    assert dead_letters(vhost) == [b"not an envelope"]


def test_a_node_dead_letters_a_bad_message_once_however_often_its_batch_is_retried(
    vhost: Vhost,
    database: Database,
    region: Region,
    codec: SchemaStore,
    keyring: Keyring,
    signers: dict[str, Signer],
) -> None:
    """Before the one consumer the inbox dead-lettered inside its transaction, so every retried
    transaction published the message to kpx.dead again (3 copies here)."""
    topology_on(vhost, region)
    migrate_node(database.url)
    fail_inserts(database.url, "inbox", times=2)
    good = status_change(codec, signers["XS"], 1)
    publish(vhost, "", topology.node_queue(NODE), [b"not an envelope", good])
    node = NodeService(NODE, database.url, vhost.amqp_url, codec, keyring, frozenset({"XS"}))
    stop, thread = running(node.run)
    try:
        wait_until(
            lambda: count(database.url, "SELECT count(*) FROM inbox") == 1,
            "the good message applied after two failed attempts",
        )
    finally:
        stopped(stop, thread)
    assert attempts(database.url) == 3
    assert dead_letters(vhost, topology.NODE_DEAD_QUEUE) == [b"not an envelope"]


def test_an_event_the_reconciler_cannot_record_is_dead_lettered_and_the_rest_recorded(
    vhost: Vhost,
    database: Database,
    region: Region,
    codec: SchemaStore,
    keyring: Keyring,
    signers: dict[str, Signer],
) -> None:
    """Before the one consumer the reconciler stopped on it (and met it again at restart)."""
    topology_on(vhost, region)
    conn = connect(database.url)
    migrate(conn, "exchange.registry")
    conn.close()
    reconciler_service.prepare(database.url)
    poison, good = certificate_issued(codec, signers["BW"]), status_change(codec, signers["XS"], 1)
    poison_id = str(open_envelope(codec, keyring, poison).event_id)
    conn = connect(database.url)
    try:  # a bug's stand-in: an error no retry cures, for this one event only
        with transaction(conn) as cur:
            cur.execute(
                "CREATE FUNCTION kpxt_bug() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.event_id = '{poison_id}' THEN RAISE EXCEPTION 'a bug'; END IF;"
                " RETURN NEW; END $$"
            )
            cur.execute(
                "CREATE TRIGGER kpxt_bug BEFORE INSERT ON recon.processed"
                " FOR EACH ROW EXECUTE FUNCTION kpxt_bug()"
            )
    finally:
        conn.close()
    publish(vhost, topology.ACCEPTED, "x.accepted", [poison, good])
    ctx = reconciler_service.context(region, codec, signers["XS-RECONCILER"])
    reconciler = reconciler_service.Reconciler(database.url, vhost.amqp_url, ctx, codec, keyring)
    stop, thread = running(reconciler.run)
    try:
        wait_until(
            lambda: count(database.url, "SELECT count(*) FROM recon.processed") == 1,
            "the other event recorded",
        )
        wait_until(lambda: dead_count(vhost) == 1, "the event that cannot be recorded set aside")
        assert thread.is_alive(), "the reconciler stopped"
    finally:
        stopped(stop, thread)
    assert dead_letters(vhost) == [poison]


# --------------------------------------------------------------------------- health


def test_health_is_ok_only_while_consuming_with_every_watched_thread_alive() -> None:
    health, release = Health(), threading.Event()
    relay = threading.Thread(target=release.wait, daemon=True)
    relay.start()
    health.watch("relay", relay)
    assert health.check() == (False, "consumer down, relay up\n")
    health.consuming.set()
    assert health.check() == (True, "consumer up, relay up\n")
    release.set()
    relay.join(timeout=5)
    assert health.check() == (False, "consumer up, relay down\n")


def healthz(port: int) -> int | None:
    try:
        return http_get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)[0]
    except OSError:
        return None


def test_the_reconcilers_healthz_answers_503_once_its_relay_has_died(
    rt: Runtime, tmp_path: Path
) -> None:
    """Before the one consumer the reconciler's /healthz looked at its consumer only: 200."""
    port = free_ports(1)[0]
    argv = kpx_argv(rt, "reconciler", "run", "--metrics-port", str(port))
    fleet = Fleet([Service("reconciler", argv, port, tmp_path / "reconciler.log")], service_env(rt))
    try:
        fleet.start()
        fleet.wait_healthy()
        conn = connect(rt.registry_dsn)
        try:  # the relay's next read fails with an error no retry cures: its thread ends
            with transaction(conn) as cur:
                cur.execute("ALTER TABLE outbox RENAME TO outbox_gone")
        finally:
            conn.close()
        wait_until(lambda: healthz(port) == 503, "/healthz to report the dead relay")
    finally:
        fleet.kill_all()


# --------------------------------------------------------------------------- database down


@pytest.mark.faults
def test_a_node_whose_database_restarts_sets_a_bad_message_aside_once_and_applies_the_rest(
    vhost: Vhost, region: Region, codec: SchemaStore, keyring: Keyring, signers: dict[str, Signer]
) -> None:
    """Before the one consumer the inbox dead-lettered inside its transaction: the batch that
    met the dead database set the bad message aside, and so did its retry once the database
    was back (2 copies)."""
    topology_on(vhost, region)
    queue = topology.node_queue(NODE)
    with private_database() as server:
        dsn = dsn_for(server.url, "postgres")
        migrate_node(dsn)
        node = NodeService(NODE, dsn, vhost.amqp_url, codec, keyring, frozenset({"XS"}))
        stop, thread = running(node.run)
        try:
            publish(vhost, "", queue, [status_change(codec, signers["XS"], 1)])
            wait_until(lambda: count(dsn, "SELECT count(*) FROM inbox") == 1, "first message")
            server.kill()
            publish(vhost, "", queue, [b"not an envelope", status_change(codec, signers["XS"], 2)])
            wait_until(
                lambda: dead_count(vhost, topology.NODE_DEAD_QUEUE) == 1,
                "the bad message set aside",
            )
            server.start()
            wait_until(
                lambda: count(dsn, "SELECT count(*) FROM inbox") == 2,
                "the next message applied once the database is back",
                timeout=60,
            )
        finally:
            stopped(stop, thread)
    assert dead_letters(vhost, topology.NODE_DEAD_QUEUE) == [b"not an envelope"]


# --------------------------------------------------------------------------- threads


def test_a_running_service_hands_the_gil_to_its_waiting_threads_every_millisecond(
    vhost: Vhost,
) -> None:
    """At the default 5 ms, a relay thread woken by a NOTIFY or a confirm waited up to 5 ms
    for the consumer thread's GIL, several times on a decision's way out."""
    conn = pika.BlockingConnection(pika.URLParameters(vhost.amqp_url))
    conn.channel().queue_declare("kpxt.idle", arguments={"x-queue-type": "quorum"}, durable=True)
    conn.close()
    inbox = Inbox(NODE, default_store(), Keyring(), frozenset())
    consumer = Consumer(
        vhost.amqp_url, Spec("kpxt.idle", "kpxt", "kpxt"), inbox, ServiceDatabase("", "")
    )
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    default = sys.getswitchinterval()
    try:
        run_consumer(consumer, stop)
        assert sys.getswitchinterval() == SWITCH_INTERVAL
    finally:
        sys.setswitchinterval(default)
