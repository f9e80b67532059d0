"""The runtime context every command receives: settings, region, codec and key access.

Built by the composition root (``exchange/app/cli.py``) from the settings and the region
file when the first command asks for it, and kept as ``click``'s root context object. A
command takes it typed, with :func:`pass_runtime`::

    @node.command("certificates")
    @pass_runtime
    def certificates(rt: Runtime, member: str) -> None: ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar, cast

import click

from exchange.adapters import metrics, postgres
from exchange.app.settings import Settings
from exchange.domain.region import Region, load_region
from exchange.registry import keys as registry_keys
from exchange.wire import topology
from exchange.wire.codec import SchemaStore, default_store
from exchange.wire.keyring import RefreshingKeyring
from exchange.wire.signing import Keyring, Signer, latest_signer


class Runtime:
    """Everything a kpx command needs to reach the region's services."""

    def __init__(self, settings: Settings, region: Region) -> None:
        self.settings = settings
        self.region = region

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Load the region file named by the settings; raises ConfigError."""
        return cls(settings, load_region(settings.region_path))

    @cached_property
    def store(self) -> SchemaStore:
        """The schema store (current and every released schema)."""
        return default_store()

    @property
    def registry_dsn(self) -> str:
        """The registry's (and the reconciler's) database."""
        return self.settings.database(self.region.registry_database)

    def node_dsn(self, code: str) -> str:
        """A node's own database; raises ConfigError for a code that runs no node."""
        return self.settings.database(self.region.node(code).database)

    @property
    def keys_dir(self) -> Path:
        """The registry's and the reconciler's keys (never a member's: DESIGN §15)."""
        return self.settings.keys_dir(self.region.vhost)

    def node_keys_dir(self, code: str) -> Path:
        """A node's own key folder (at the member's site)."""
        return self.settings.node_keys_dir(self.region.vhost, code)

    def trusted_dir(self, code: str) -> Path:
        """The public keys a node was given: the registry's signing keys and the log's key."""
        return self.settings.node_dir(self.region.vhost, code) / "trusted"

    def key_folder(self, producer: str) -> Path:
        """Where ``producer``'s private keys live: its node folder, or the registry's."""
        if producer in self.region.node_codes:
            return self.node_keys_dir(producer)
        return self.keys_dir

    @property
    def reconciler_producer(self) -> str:
        """The reconciler's producer identity (its events' producer field)."""
        return topology.reconciler_producer(self.region.code)

    def keyring(self) -> Keyring:
        """Every public key in this machine's key folders (the registry's and each node's)."""
        ring = Keyring()
        for folder in (self.keys_dir, *map(self.node_keys_dir, self.region.node_codes)):
            if folder.is_dir():
                ring.load_dir(folder)
        return ring

    def registered_keys(self) -> RefreshingKeyring:
        """The registry's key table as a verifier downstream of the registry sees it.

        The reconciler's: every event it gets was accepted by the registry, whose key row
        committed before any event signed with the key existed, so a key id it does not hold
        is looked up in the table; still unknown means late (KeyNotYetKnown: the batch is
        retried), never a dead letter (issue 11: a rotation lost accepted events that way).
        """
        dsn = self.registry_dsn

        def load() -> Keyring:
            conn = postgres.connect(dsn, application_name="kpx-keyring")
            try:
                return registry_keys.load_keyring(conn)
            finally:
                conn.close()

        return RefreshingKeyring(load, transient_unknown=True, max_age=5.0)

    def signer(self, producer: str) -> Signer:
        """The newest private key of ``producer`` in its own folder; KeyFileError if none.

        A node's rotated key waits in ``pending/`` until the registry accepted it
        (nodes/keys.py), so it is not picked here before.
        """
        return latest_signer(self.key_folder(producer), producer)

    def amqp_url(self, user: str | None) -> str:
        """The broker URL of the region's vhost as ``user`` (None: the administrator)."""
        return self.settings.amqp_url_for(self.region.vhost, user)


_P = ParamSpec("_P")
_R = TypeVar("_R")
# The root context's meta key under which the composition root leaves the --region option.
REGION_OPTION = "kpx.region"


def current_runtime() -> Runtime:
    """The runtime of the running command, loaded on first use; raises ConfigError.

    Loading lazily keeps ``--help`` and the commands that need no region (``schemas``,
    ``demo``) free of the region file, and makes a bad setting fail inside the error boundary.
    """
    root = click.get_current_context().find_root()
    if root.obj is None:
        region = root.meta.get(REGION_OPTION)
        settings = Settings.from_env(region=region)
        metrics.listen_on(settings.metrics_host)  # loopback unless KPX_METRICS_HOST opens it
        root.obj = Runtime.load(settings)
    # Tests may hand the commands a stand-in with the same attributes (click's obj=...).
    return cast(Runtime, root.obj)


def pass_runtime(command: Callable[Concatenate[Runtime, _P], _R]) -> Callable[_P, _R]:
    """Decorate a click command so that it receives the runtime as its first argument."""

    @functools.wraps(command)
    def with_runtime(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return command(current_runtime(), *args, **kwargs)

    return with_runtime
