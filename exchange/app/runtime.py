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
        """Where the authority keys of this region live."""
        return self.settings.keys_dir(self.region.vhost)

    @property
    def reconciler_producer(self) -> str:
        """The reconciler's producer identity (its events' producer field)."""
        return topology.reconciler_producer(self.region.code)

    def keyring(self) -> Keyring:
        """Every public key in the keys directory."""
        ring = Keyring()
        ring.load_dir(self.keys_dir)
        return ring

    def signer(self, producer: str) -> Signer:
        """The newest private key of ``producer``; raises KeyFileError when there is none."""
        return latest_signer(self.keys_dir, producer)

    def amqp_url(self, user: str | None) -> str:
        """The broker URL of the region's vhost as ``user`` (None: the administrator)."""
        return self.settings.amqp_url_for(self.region.vhost, user)
