"""``kpx region init``: databases and migrations, broker topology and users, authority keys.

Every step is idempotent, so init can run again after adding a member, rotating a key or
changing the topology: what exists is kept, what is missing is created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from exchange.adapters import postgres
from exchange.app.runtime import Runtime
from exchange.errors import KeyFileError
from exchange.registry import log as registry_log
from exchange.registry import service as registry_service
from exchange.registry import store as registry_store
from exchange.wire import topology
from exchange.wire.signing import generate_key, latest_signer, save_key

log = logging.getLogger(__name__)


def producers(rt: Runtime) -> list[str]:
    """Every producer identity of the region: the registry, the reconciler, each node."""
    return [rt.region.code, rt.reconciler_producer, *rt.region.node_codes]


PrepareNode = Callable[[str], None]


def init_region(rt: Runtime, prepare_node: PrepareNode) -> None:
    """Create or complete everything the region needs; raises Broker*/Database* errors.

    ``prepare_node(dsn)`` applies a node database's migrations: it is passed in by the
    composition root, because the regional side never imports the node package.
    """
    ensure_keys(rt)
    init_broker(rt)
    init_databases(rt, prepare_node)


def ensure_keys(rt: Runtime) -> None:
    """Generate an Ed25519 key for every producer that has none yet."""
    rt.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for producer in producers(rt):
        try:
            latest_signer(rt.keys_dir, producer)
        except KeyFileError:
            save_key(generate_key(producer), rt.keys_dir)
            log.info("generated a key for %s", producer)
    if registry_log.ensure_key(rt.keys_dir, rt.region.code):  # the log's key (DESIGN §12)
        log.info("generated the log key of %s", rt.region.code)


def init_broker(rt: Runtime) -> None:
    """Apply the topology and create the service users with their generated passwords."""
    region, settings = rt.region, rt.settings
    definitions = topology.definitions(region.vhost, region.node_codes)
    admin = settings.admin()
    try:
        for user in (u["name"] for u in definitions["users"]):
            admin.put_user(user, settings.broker_password(region.vhost, user, create=True))
        admin.apply(definitions, admin_user=_admin_user(settings.amqp_url))
    finally:
        admin.close()


def _admin_user(amqp_url: str) -> str:
    return urlsplit(amqp_url).username or "guest"


def init_databases(rt: Runtime, prepare_node: PrepareNode) -> None:
    """Create the registry's and every node's database and apply their migrations."""
    settings, region = rt.settings, rt.region
    postgres.create_database(settings.database_url, region.registry_database)
    conn = postgres.connect(rt.registry_dsn)
    try:
        registry_service.prepare_database(conn, region)
        postgres.migrate(conn, "exchange.reconciler")
        with postgres.transaction(conn) as cur:
            new = sum(registry_store.register_key(cur, key) for key in rt.keyring())
        log.info("registered %d new authority key(s)", new)
    finally:
        conn.close()
    for code in region.node_codes:
        postgres.create_database(settings.database_url, region.node(code).database)
        prepare_node(rt.node_dsn(code))
