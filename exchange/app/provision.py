"""``kpx region init`` and ``kpx node init``: databases and migrations, broker, keys.

Every step is idempotent, so init can run again after adding a member or changing the
topology: what exists is kept, what is missing is created.

Key custody (DESIGN §15): the regional body's folder holds the registry's and the
reconciler's keys only. A node's key is made by the node step (:func:`init_node_site`, what
``kpx node init --member XX`` runs at the member's site) in that node's own folder; the
registry learns its public half as a key line (``kpx registry keys add``). On one machine
``region init`` runs the node step for every node, each into its own folder, and registers
the printed lines itself — never writing a member's private key where the registry keeps its.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from urllib.parse import urlsplit

from exchange.adapters import postgres
from exchange.app.runtime import Runtime
from exchange.errors import KeyFileError
from exchange.registry import keys as registry_keys
from exchange.registry import log as registry_log
from exchange.registry import service as registry_service
from exchange.wire import topology
from exchange.wire.signing import (
    PUBLIC_SUFFIX,
    VerifyKey,
    generate_key,
    latest_signer,
    private_dir,
    save_key,
)

log = logging.getLogger(__name__)

# A node runs one relay and one inbox connection (plus short-lived commands): a few suffice,
# and the limit keeps one member's leaked password from exhausting the broker for everyone.
NODE_MAX_CONNECTIONS = 8
NODE_MAX_CHANNELS = 32


def producers(rt: Runtime) -> list[str]:
    """Every producer identity of the region: the registry, the reconciler, each node."""
    return [rt.region.code, rt.reconciler_producer, *rt.region.node_codes]


PrepareNode = Callable[[str], None]


def init_region(rt: Runtime, prepare_node: PrepareNode) -> None:
    """Create or complete everything the region needs; raises Broker*/Database* errors.

    ``prepare_node(dsn)`` applies a node database's migrations: it is passed in by the
    composition root, because the regional side never imports the node package.
    """
    ensure_registry_keys(rt)
    init_broker(rt)
    init_databases(rt, prepare_node)


def ensure_registry_keys(rt: Runtime) -> None:
    """Generate the registry's and the reconciler's keys in the registry's folder if missing."""
    for folder in (rt.settings.state_dir, rt.settings.vhost_dir(rt.region.vhost), rt.keys_dir):
        private_dir(folder)
    for producer in (rt.region.code, rt.reconciler_producer):
        _ensure_key(rt, producer)
    if registry_log.ensure_key(rt.keys_dir, rt.region.code):  # the log's key (DESIGN §12)
        log.info("generated the log key of %s", rt.region.code)


# The name tests/support/broker.py (and older callers) know it by.
ensure_keys = ensure_registry_keys


def _ensure_key(rt: Runtime, producer: str) -> VerifyKey:
    folder = private_dir(rt.key_folder(producer))
    try:
        return latest_signer(folder, producer).verify_key
    except KeyFileError as exc:
        if any(folder.glob(f"{producer}-*.key.json")):
            raise  # a key is there but unusable (e.g. others may read it): never replace it
        log.info("no key for %s yet (%s); generating one", producer, exc)
    signer = generate_key(producer)
    save_key(signer, folder)
    return signer.verify_key


def init_node_site(rt: Runtime, code: str, prepare_node: PrepareNode) -> VerifyKey:
    """``kpx node init``: the node's database, migrations and key in its own folder.

    Returns the node's current public key (to print as a key line). The registry's public
    keys are copied into the node's ``trusted/`` folder when this machine has them (one
    machine); at a member's site the regional body hands them over (deploy/README.md).
    """
    rt.region.node(code)  # ConfigError for a code that runs no node
    for folder in (rt.settings.state_dir, rt.settings.vhost_dir(rt.region.vhost)):
        private_dir(folder)
    private_dir(rt.settings.node_dir(rt.region.vhost, code))
    key = _ensure_key(rt, code)
    postgres.create_database(rt.settings.database_url, rt.region.node(code).database)
    prepare_node(rt.node_dsn(code))
    _trust_registry(rt, code)
    return key


def trusted_dir(rt: Runtime, code: str) -> str:
    """Where a node keeps the registry's and the reconciler's public keys."""
    return str(rt.trusted_dir(code))


def _trust_registry(rt: Runtime, code: str) -> None:
    """The registry's public keys (its signing keys and the log's verifier key)."""
    if not rt.keys_dir.is_dir():
        return
    target = private_dir(trusted_dir(rt, code))
    publics = [*rt.keys_dir.glob(f"*{PUBLIC_SUFFIX}"), rt.keys_dir / registry_log.PUB_FILE]
    for public in publics:
        if public.is_file() and not (target / public.name).exists():
            shutil.copyfile(public, target / public.name)


def init_broker(rt: Runtime) -> None:
    """Apply the topology and create the service users with their generated passwords."""
    region, settings = rt.region, rt.settings
    definitions = topology.definitions(region.vhost, region.node_codes)
    admin = settings.admin()
    try:
        for user in (u["name"] for u in definitions["users"]):
            admin.put_user(user, settings.broker_password(region.vhost, user, create=True))
        admin.apply(definitions, admin_user=_admin_user(settings.amqp_url))
        for code in region.node_codes:
            user = topology.node_user(code, region.vhost)
            admin.put_user_limit(user, "max-connections", NODE_MAX_CONNECTIONS)
            admin.put_user_limit(user, "max-channels", NODE_MAX_CHANNELS)
    finally:
        admin.close()


def _admin_user(amqp_url: str) -> str:
    return urlsplit(amqp_url).username or "guest"


def init_databases(rt: Runtime, prepare_node: PrepareNode) -> None:
    """The registry's database, then the node step per node, registering each node's key."""
    settings, region = rt.settings, rt.region
    postgres.create_database(settings.database_url, region.registry_database)
    conn = postgres.connect(rt.registry_dsn)
    try:
        registry_service.prepare_database(conn, region)
        postgres.migrate(conn, "exchange.reconciler")
        ring = [latest_signer(rt.keys_dir, p).verify_key for p in producers(rt)[:2]]
        ring += [init_node_site(rt, code, prepare_node) for code in region.node_codes]
        with postgres.transaction(conn) as cur:
            new = sum(registry_keys.add_key(cur, key) for key in ring)
        log.info("registered %d new authority key(s)", new)
    finally:
        conn.close()
