"""``kpx region init``: databases and migrations, broker topology and users, authority keys.

Every step is idempotent, so init can run again after adding a member, rotating a key or
changing the topology: what exists is kept, what is missing is created.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import psycopg2

from exchange import postgres, topology
from exchange.admin import Admin
from exchange.errors import KeyFileError
from exchange.runtime import Runtime
from exchange.signing import Keyring, generate_key, latest_signer, save_key

log = logging.getLogger(__name__)

REGISTRY_PACKAGES = ("exchange", "exchange.registry", "exchange.reconciler")
NODE_PACKAGES = ("exchange", "nodes")


def producers(rt: Runtime) -> list[str]:
    """Every producer identity of the region: the registry, the reconciler, each node."""
    return [rt.region.code, rt.reconciler_producer, *rt.region.node_codes]


def init_region(rt: Runtime) -> None:
    """Create or complete everything the region needs; raises Broker*/Database* errors."""
    ensure_keys(rt)
    init_broker(rt)
    init_databases(rt)


def ensure_keys(rt: Runtime) -> None:
    """Generate an Ed25519 key for every producer that has none yet."""
    rt.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for producer in producers(rt):
        try:
            latest_signer(rt.keys_dir, producer)
        except KeyFileError:
            save_key(generate_key(producer), rt.keys_dir)
            log.info("generated a key for %s", producer)


def init_broker(rt: Runtime) -> None:
    """Apply the topology and create the service users with their generated passwords."""
    region, settings = rt.region, rt.settings
    definitions = topology.definitions(region.vhost, region.node_codes)
    admin = Admin(settings.amqp_url)
    try:
        for user in (u["name"] for u in definitions["users"]):
            admin.put_user(user, settings.broker_password(region.vhost, user, create=True))
        admin.apply(definitions, admin_user=_admin_user(settings.amqp_url))
    finally:
        admin.close()


def _admin_user(amqp_url: str) -> str:
    return urlsplit(amqp_url).username or "guest"


def init_databases(rt: Runtime) -> None:
    """Create the registry's and every node's database and apply their migrations."""
    settings, region = rt.settings, rt.region
    postgres.create_database(settings.database_url, region.registry_database)
    conn = postgres.connect(rt.registry_dsn)
    try:
        for package in REGISTRY_PACKAGES:
            postgres.migrate(conn, package)
        register_keys(conn, rt.keyring())
    finally:
        conn.close()
    for code in region.node_codes:
        postgres.create_database(settings.database_url, region.node(code).database)
        conn = postgres.connect(rt.node_dsn(code))
        try:
            for package in NODE_PACKAGES:
                postgres.migrate(conn, package)
        finally:
            conn.close()


def register_keys(conn: postgres.Connection, keyring: Keyring) -> int:
    """Register every public key of the keyring with the registry; return how many were new."""
    new = 0
    with postgres.transaction(conn) as cur:
        for key in keyring:
            cur.execute(
                "INSERT INTO authority_keys (key_id, producer, public_key) VALUES (%s, %s, %s) "
                "ON CONFLICT (key_id) DO NOTHING",
                (key.key_id, key.producer, psycopg2.Binary(key.public_key)),
            )
            new += cur.rowcount
    return new
