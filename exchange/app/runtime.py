"""The runtime context every command receives: settings, region, codec and key access.

Built once by the composition root (``exchange/app/cli.py``) from the settings and the region
file, and handed to commands as ``click``'s context object.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from exchange.app.settings import Settings
from exchange.domain.region import Region, load_region
from exchange.wire import topology
from exchange.wire.codec import SchemaStore, default_store
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

    def signer(self, producer: str) -> Signer:
        """The newest private key of ``producer`` in its own folder; KeyFileError if none.

        A node's rotated key waits in ``pending/`` until the registry accepted it
        (nodes/keys.py), so it is not picked here before.
        """
        return latest_signer(self.key_folder(producer), producer)

    def amqp_url(self, user: str | None) -> str:
        """The broker URL of the region's vhost as ``user`` (None: the administrator)."""
        return self.settings.amqp_url_for(self.region.vhost, user)
