"""Helpers for the witnessing and audit tests: a registry and a witness node in threads, the
registry's portal serving its log over HTTP, private copies of databases.

Imported by test_witness_region and test_audit_http (no tests here). Everything is real: the
registry and the node on RabbitMQ and PostgreSQL, the portal's app (as ``kpx registry
serve`` builds it) under uvicorn on a free loopback port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from psycopg2 import sql

from exchange.adapters.postgres import connect, transaction
from exchange.messaging.outbox import OutboxWriter
from exchange.registry import log as registry_log
from exchange.registry import service
from exchange.registry.web.lookups import Lookups
from exchange.registry.web.portal import Portal
from exchange.registry.web.reads import PublicPool
from exchange.wire.signing import Keyring, generate_key
from nodes.operations import Node
from nodes.service import NodeService
from nodes.witness import Witness, load_log_key
from support.portal import served
from support.registry import Env, as_user
from support.services import unique_name, with_path

ISSUE = {
    "destination": "ZA",
    "origin": {"type": "UNMIXED", "countries": ["BW"]},
    "exporter": {"name": "Exporter", "address": "Gaborone", "country": "BW", "licence_no": "E-1"},
    "importer": {"name": "Importer", "address": "Pretoria", "country": "ZA", "licence_no": "I-1"},
    "date_of_issue": "2026-11-20",
    "date_of_expiry": "2026-12-20",
    "parcels": [{"parcel_no": 1, "hs_code": "7102.31", "carats": "10.50",
                 "value_usd": "1920.00", "origin_country": "BW"}],
    "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
}  # fmt: skip


def issue_at(env: Env, code: str, dsn: str, count: int) -> None:
    """Issue certificates through the node itself (its outbox, its relay)."""
    line = json.dumps({"op": "issue", "certificate": ISSUE})
    conn = connect(dsn)
    try:
        node = Node(
            code, env.region, OutboxWriter(env.producers.store, env.producers.signers[code])
        )
        results = list(node.submit(conn, [line] * count))
    finally:
        conn.close()
    assert all(r.ok for r in results), results


def start_registry(env: Env, keys: Path, stop: threading.Event) -> threading.Thread:
    """The registry (relay on, log on) in a thread until ``stop``."""
    args = (env.dsn, env.registry_url, env.region, env.producers.store, env.registry_signer)
    kwargs = {"log_signer": registry_log.load_key(keys), "batch_size": 10}
    thread = threading.Thread(
        target=service.run_registry, args=(*args, stop), kwargs=kwargs, daemon=True
    )
    thread.start()
    return thread


def start_node(
    env: Env, keys: Path, code: str, dsn: str, stop: threading.Event
) -> threading.Thread:
    """Node ``code`` (relay, inbox, witness with the log key in ``keys``) until ``stop``."""
    signer = env.producers.signers[code]
    witness = Witness(
        code, "XS", load_log_key(keys), signer, OutboxWriter(env.producers.store, signer)
    )
    node = NodeService(
        code=code,
        dsn=dsn,
        amqp_url=as_user(env.admin_url, env.user(code)),
        schemas=env.producers.store,
        keyring=Keyring([env.registry_signer.verify_key]),
        senders=frozenset({"XS", "XS-RECONCILER"}),
        witness=witness,
    )
    thread = threading.Thread(target=node.run, args=(stop,), daemon=True)
    thread.start()
    return thread


@contextmanager
def serve_portal(env: Env, dsn: str | None = None) -> Iterator[str]:
    """The registry's portal over ``dsn`` (default the registry's database); yields its URL."""
    dsn = dsn or env.dsn
    portal = Portal(
        region=env.region, schemas=env.producers.store, signer=lambda: generate_key("XS"),
        amqp_url=lambda: "", broker_user="", lookups=Lookups(dsn, 2, 2.0),
        public=PublicPool(dsn, 2, read_only=True), work=PublicPool(dsn, 1),
    )  # fmt: skip
    with served(portal) as url:
        yield url


@contextmanager
def cloned(dsn: str) -> Iterator[str]:
    """A private copy of the database at ``dsn`` (nobody may be connected to it): its DSN."""
    name = unique_name()
    source = dsn.rsplit("/", 1)[1].split("?")[0]
    admin = psycopg2.connect(with_path(dsn, "postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(source)
                )
            )
        yield with_path(dsn, name)
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


def tamper(dsn: str, *statements: str) -> None:
    """Run ``statements`` on ``dsn`` in one transaction of their own, as an attacker with
    the database would (the tamper tests of the log and of the audit)."""
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()
