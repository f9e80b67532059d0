"""Helpers for the registry tests: a region, signed events, a running registry, node queues.

Imported by the test_registry_* modules and test_hostile_input (no tests here). Everything
runs on the real RabbitMQ and PostgreSQL: the topology is applied to a fresh vhost, node
users publish AS themselves (``user_id`` = connection user, enforced by the broker), and the
registry runs in a thread with its own connections.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika
from pika.spec import BasicProperties

from exchange.adapters.management import Admin
from exchange.adapters.postgres import connect, fetch_all, transaction
from exchange.domain.certificate import (
    Certificate,
    Container,
    HsCode,
    Origin,
    OriginType,
    Parcel,
    Party,
    Scope,
)
from exchange.domain.certnumber import regional_number
from exchange.domain.events import (
    Decision,
    ImportConfirmation,
    Issuance,
    Voiding,
    each_event,
)
from exchange.domain.region import Region, parse_region
from exchange.registry import service, store
from exchange.wire import topology
from exchange.wire.codec import SchemaStore, default_store
from exchange.wire.envelope import open_envelope, seal
from exchange.wire.signing import Keyring, Signer, generate_key

PASSWORD = "kpx-test-password"
NODES = ("BW", "ZA", "NA", "EU", "AE")
STRANGER = "SO"  # has a broker user and a queue, but is no node of the region

REGION_DATA: dict[str, Any] = {
    "region": {"code": "XS", "name": "Test region"},
    "members": {
        "BW": {"name": "Botswana", "authority": "BW authority"},
        "ZA": {"name": "South Africa", "authority": "ZA authority"},
        "NA": {"name": "Namibia", "authority": "NA authority"},
    },
    "partners": {
        "EU": {"name": "European Union", "authority": "EU authority"},
        "AE": {"name": "United Arab Emirates", "authority": "AE authority"},
    },
    "participants": {
        "RU": {"status": "ADMITTED"},
        "CF": {"status": "SUSPENDED"},
        "VE": {"status": "WITHDRAWN"},
        "GB": {"status": "ADMITTED"},
    },
}


def region_for(vhost: str) -> Region:
    data = dict(REGION_DATA, broker={"vhost": vhost})
    return parse_region(data)


def as_user(amqp_url: str, user: str) -> str:
    """``amqp_url`` with the credentials of ``user``."""
    parts = urlsplit(amqp_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(PASSWORD, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def certificate(
    member: str = "BW", serial: int = 1, *, destination: str = "ZA", **changes: Any
) -> Certificate:
    """A valid regional certificate of ``member``; ``changes`` replace fields."""
    cert = Certificate(
        certificate_id=regional_number("XS", member, 2026, serial),
        issuing_participant="XS",
        issuing_member=member,
        issuing_authority=f"{member} authority",
        destination=destination,
        origin=Origin(OriginType.UNMIXED, (member,)),
        exporter=Party("Exporter Ltd", "1 Mine Road", member, "EX-1"),
        importer=Party("Importer Ltd", "2 Bourse St", destination, "IM-1"),
        date_of_issue=date(2026, 3, 1),
        date_of_expiry=date(2026, 4, 15),
        parcels=(
            Parcel(1, HsCode.HS_7102_10, Decimal("100.00"), Decimal("15000.00"), member),
            Parcel(2, HsCode.HS_7102_31, Decimal("20.50"), Decimal("9000.25"), member),
        ),
        number_of_parcels=2,
        total_carats=Decimal("120.50"),
        total_value_usd=Decimal("24000.25"),
        container=Container("C-1", ("S-1", "S-2")),
        lawful_import_evidence=(),
        scope=Scope.INTRA_REGIONAL if destination in ("BW", "ZA", "NA") else Scope.EXTERNAL,
    )
    return dataclasses.replace(cert, **changes)


def confirmation(cert: Certificate, importer: str = "ZA", **changes: Any) -> ImportConfirmation:
    conf = ImportConfirmation(
        certificate_id=cert.certificate_id,
        issuing_participant=cert.issuing_participant,
        importing_participant=importer,
        received_on=date(2026, 3, 10),
        parcels=cert.number_of_parcels,
        carats=cert.total_carats,
        value_usd=cert.total_value_usd,
        seal_intact=True,
    )
    return dataclasses.replace(conf, **changes)


def voiding(cert: Certificate, **changes: Any) -> Voiding:
    v = Voiding(cert.certificate_id, cert.issuing_participant, date(2026, 3, 2), "cancelled")
    return dataclasses.replace(v, **changes)


@dataclass
class Sealed:
    """A sealed event ready to publish."""

    event_id: str
    event_type: str
    producer: str
    sequence: int
    body: bytes


@dataclass
class Producers:
    """Signing keys and gap-free sequence counters of the test nodes."""

    store: SchemaStore
    signers: dict[str, Signer]
    sequences: dict[str, int] = field(default_factory=dict)

    def seal(
        self,
        producer: str,
        payload: Any,
        *,
        signer: Signer | None = None,
        sequence: int | None = None,
    ) -> Sealed:
        if sequence is None:
            sequence = self.sequences.get(producer, 0) + 1
            self.sequences[producer] = sequence
        record = payload.to_record()
        event_type = type(payload).EVENT_TYPE
        event_id, body = seal(
            self.store,
            _Claiming(signer or self.signers[producer], producer),
            event_type,
            record,
            sequence,
        )
        return Sealed(event_id, event_type, producer, sequence, body)


@dataclass(frozen=True)
class _Claiming:
    """A signer that claims ``producer`` whatever key it signs with (for forgeries)."""

    signer: Signer
    claimed: str

    @property
    def key_id(self) -> str:
        return self.signer.key_id

    @property
    def producer(self) -> str:
        return self.claimed

    def sign(self, message: bytes) -> bytes:
        return self.signer.sign(message)


class Publisher:
    """Publishes to kpx.events AS a broker user (one connection per user, confirms on)."""

    def __init__(self, amqp_url: str, vhost: str) -> None:
        self.amqp_url, self.vhost = amqp_url, vhost
        self._channels: dict[str, Any] = {}
        self._conns: list[pika.BlockingConnection] = []

    def _channel(self, user: str, confirm: bool = True) -> Any:
        """One channel per (user, confirm mode); bulk tests publish without confirms."""
        key = f"{user}/{confirm}"
        if key not in self._channels:
            conn = pika.BlockingConnection(pika.URLParameters(as_user(self.amqp_url, user)))
            channel = conn.channel()
            if confirm:
                channel.confirm_delivery()
            self._conns.append(conn)
            self._channels[key] = channel
        return self._channels[key]

    def raw(
        self,
        user: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        event_type: str | None = None,
        confirm: bool = True,
    ) -> None:
        props = BasicProperties(
            message_id=message_id or str(uuid.uuid4()),
            type=event_type,
            user_id=user,
            content_type="application/vnd.apache.avro+binary",
            delivery_mode=2,
        )
        self._channel(user, confirm).basic_publish(topology.EVENTS, routing_key, body, props)

    def send(self, sealed: Sealed, *, as_node: str | None = None, confirm: bool = True) -> None:
        """Publish ``sealed`` as its producer's node user (or as node ``as_node``)."""
        code = sealed.producer if as_node is None else as_node
        self.raw(
            topology.node_user(code, self.vhost),
            f"{code}.{sealed.event_type}",
            sealed.body,
            message_id=sealed.event_id,
            event_type=sealed.event_type,
            confirm=confirm,
        )

    def close(self) -> None:
        for conn in self._conns:
            if conn.is_open:
                conn.close()


@dataclass
class Env:
    """A vhost with the topology, a registry database with keys, producers and a publisher."""

    vhost: str
    admin_url: str
    dsn: str
    region: Region
    registry_signer: Signer
    producers: Producers
    publisher: Publisher
    inbox: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)  # single events
    bodies: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)  # the messages

    @property
    def registry_url(self) -> str:
        return as_user(self.admin_url, topology.registry_user(self.vhost))

    def user(self, code: str) -> str:
        """The broker user of node ``code`` on this vhost."""
        return topology.node_user(code, self.vhost)

    def run_registry(self, **kwargs: Any) -> RunningRegistry:
        return RunningRegistry(self, **kwargs)

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        conn = connect(self.dsn)
        try:
            return fetch_all(conn, sql, params)
        finally:
            conn.close()

    def decision_for(self, node: str, event_id: str, timeout: float = 20.0) -> Decision:
        """Wait for the RegistryDecision about ``event_id`` in kpx.node.<node>; decoded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for kind, payload in self.inbox.get(node, []):
                if kind == "RegistryDecision" and payload.subject_event_id == event_id:
                    return payload  # type: ignore[no-any-return]
            self._drain_node(node)
            time.sleep(0.05)
        raise AssertionError(f"no decision about {event_id} in kpx.node.{node}")

    def messages(self, node: str) -> list[tuple[str, Any]]:
        self._drain_node(node)
        return self.inbox.get(node, [])

    def _drain_node(self, node: str) -> None:
        keyring = Keyring([self.registry_signer.verify_key])
        params = pika.URLParameters(as_user(self.admin_url, self.user(node)))
        conn = pika.BlockingConnection(params)
        try:
            channel = conn.channel()
            while True:
                method, _props, body = channel.basic_get(topology.node_queue(node))
                if method is None:
                    break
                env = open_envelope(self.producers.store, keyring, body)
                self.inbox.setdefault(node, []).extend(each_event(env.event_type, env.payload))
                self.bodies.setdefault(node, []).append((env.event_type, body))
                channel.basic_ack(method.delivery_tag)
        finally:
            conn.close()


class RunningRegistry:
    """The registry service in a thread; ``stop()`` drains it."""

    def __init__(self, env: Env, **kwargs: Any) -> None:
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

        def target() -> None:
            try:
                service.run_registry(
                    env.dsn,
                    env.registry_url,
                    env.region,
                    env.producers.store,
                    env.registry_signer,
                    self.stop_event,
                    **kwargs,
                )
            except BaseException as exc:
                self.error = exc
                raise

        self.thread = threading.Thread(target=target, name="registry-under-test", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the registry did not stop"
        assert self.error is None, f"the registry failed: {self.error!r}"


def make_signers() -> tuple[dict[str, Signer], Signer]:
    """Keys of every test node (and the stranger), and the registry's."""
    return {code: generate_key(code) for code in [*NODES, STRANGER]}, generate_key("XS")


def make_env(
    vhost_name: str,
    admin_url: str,
    dsn: str,
    keys: tuple[dict[str, Signer], Signer] | None = None,
) -> Env:
    """Apply the topology, create users, migrate the database and register the keys."""
    region = region_for(vhost_name)
    admin = Admin(admin_url)
    try:
        codes = [*NODES, STRANGER]
        for user in [topology.registry_user(vhost_name), topology.reconciler_user(vhost_name)]:
            admin.put_user(user, PASSWORD)
        for code in codes:
            admin.put_user(topology.node_user(code, vhost_name), PASSWORD)
        admin.apply(
            topology.definitions(vhost_name, codes), urlsplit(admin_url).username or "guest"
        )
    finally:
        admin.close()
    signers, registry_signer = keys or make_signers()
    conn = connect(dsn)
    try:
        service.prepare_database(conn, region)
        with transaction(conn) as cur:
            for signer in [*signers.values(), registry_signer]:
                if signer.producer != STRANGER:
                    store.register_key(cur, signer.verify_key)
    finally:
        conn.close()
    producers = Producers(default_store(), signers)
    return Env(
        vhost_name,
        admin_url,
        dsn,
        region,
        registry_signer,
        producers,
        Publisher(admin_url, vhost_name),
    )


def depth(env: Env, queue: str) -> int:
    """Ready messages in ``queue`` (from the broker itself, not the management statistics)."""
    conn = pika.BlockingConnection(pika.URLParameters(env.admin_url))
    try:
        declared = conn.channel().queue_declare(queue, passive=True)
        return int(declared.method.message_count)
    finally:
        conn.close()


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def decided_count(env: Env) -> int:
    return int(env.query("SELECT count(*) AS n FROM event_log")[0]["n"])


def now() -> datetime:
    return datetime.now(UTC)


def issuance(cert: Certificate) -> Issuance:
    return Issuance(cert)


def snapshot(env: Env) -> dict[str, Any]:
    """The registry's state, without instants and ids that differ between runs."""
    q = env.query
    return {
        "certificates": q(
            "SELECT certificate_id, producer, state, replaced_by, event_id::text, body "
            "FROM certificates ORDER BY certificate_id"
        ),
        "parcels": q("SELECT * FROM parcels ORDER BY certificate_id, parcel_no"),
        "history": q(
            "SELECT certificate_id, event_id::text, event_type, state, detail "
            "FROM certificate_history ORDER BY 1, 2, 3, 4"
        ),
        "confirmations": q(
            "SELECT event_id::text, certificate_id, matched, carats FROM import_confirmations "
            "ORDER BY 1"
        ),
        "events": q(
            "SELECT event_id::text, producer, sequence, decision, reason FROM event_log ORDER BY 1"
        ),
        "sequences": q("SELECT * FROM producer_sequences ORDER BY 1, 2"),
        "progress": q("SELECT * FROM producer_progress ORDER BY 1"),
        "open_gaps": q(
            "SELECT producer, sequence FROM sequence_gaps WHERE filled_at IS NULL ORDER BY 1, 2"
        ),
    }


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def running_env(make_vhost: Any, make_database: Any) -> Iterator[Env]:
    """A fresh Env with its registry running, stopped afterwards (for a module fixture)."""
    vhost, database = make_vhost(), make_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    running = env.run_registry()
    try:
        yield env
    finally:
        running.stop()
        env.publisher.close()
