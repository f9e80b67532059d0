"""Process settings, read once at start into one frozen object (never at import time).

Every setting kpx reads from the environment is here and nowhere else:

=============================  ==========================================================
``--region`` / ``KPX_REGION``  the region file; default: the example region shipped in the
                               package (``deploy/region.example.toml``, region XS)
``KPX_AMQP_URL``               the broker administrator's URL (``region init`` uses it;
                               services connect as their own users, whose generated
                               passwords live in the state directory)
``KPX_AMQP_MANAGEMENT_URL``    the management HTTP API; default ``http(s)://<broker host>:
                               15672`` (https for amqps)
``KPX_DATABASE_URL``           the PostgreSQL server (database names come from the region)
``KPX_STATE_DIR``              authority keys and broker passwords, per vhost; default var
``KPX_BROKER_ADMIN_PASSWORD``  the administrator ``kpx topology export`` writes into the
                               broker definitions; no default
``KPX_METRICS_HOST``           where /metrics and /healthz listen; default 127.0.0.1 (open
                               it only to a scrape network)
=============================  ==========================================================

Key custody (DESIGN §15): under ``<state>/<vhost>/`` the registry's folder ``registry/``
holds the registry's and the reconciler's keys only; each node has its own folder
``nodes/<CODE>/`` (its key, and the registry's public keys it trusts). At a member's site only
that member's folder exists; on one machine (demo, tests) they sit side by side, and no
member's private key is ever written into the registry's folder. Every folder is 0700.

A published or guessed broker password (``kpx-admin`` …) in ``KPX_AMQP_URL``, or ``guest``
beyond loopback, is refused at start: better one clear line than a broker opened by default.

Secrets never appear in a repr, a log line or ``--help``: URLs are shown without their
password and the administrator password as ``***``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from exchange.adapters.management import Admin
from exchange.adapters.postgres import dsn_for, redact
from exchange.errors import ConfigError
from exchange.wire.signing import private_dir

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_STATE_DIR = "var"
DEFAULT_METRICS_HOST = "127.0.0.1"
# Passwords that were ever shipped as examples or are guessed first: refused at start.
PUBLISHED_PASSWORDS = frozenset({"kpx-admin", "admin", "password", "changeme", "secret", "kpx"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_URLS = frozenset({"amqp_url", "database_url", "management_url"})
_PASSWORDS = frozenset({"broker_admin_password"})


def example_region_path() -> Path:
    """The example region file shipped in the package (a copy of deploy/region.example.toml)."""
    path = resources.files("exchange").joinpath("data", "region.example.toml")
    if not isinstance(path, Path) or not path.is_file():
        raise ConfigError(f"the example region file is missing from the installed package: {path}")
    return path


@dataclass(frozen=True)
class Settings:
    """Where the region file, the broker, the database server and the state directory are."""

    region_path: Path
    amqp_url: str = field(repr=False)
    database_url: str = field(repr=False)
    state_dir: Path
    management_url: str | None = field(default=None, repr=False)
    broker_admin_password: str | None = field(default=None, repr=False)
    metrics_host: str = DEFAULT_METRICS_HOST

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={self._shown(f.name)!r}" for f in fields(self))
        return f"Settings({shown})"

    def _shown(self, name: str) -> str | None:
        value = getattr(self, name)
        if value is None:
            return None
        if name in _PASSWORDS:
            return "***"
        return redact(value) if name in _URLS else str(value)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, region: str | None = None) -> Settings:
        """Read the settings from ``env`` (default: os.environ); raises ConfigError."""
        env = os.environ if env is None else env
        amqp_url = _url(env, "KPX_AMQP_URL", DEFAULT_AMQP_URL, ("amqp", "amqps"))
        database_url = _url(
            env, "KPX_DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql", "postgres")
        )
        management = env.get("KPX_AMQP_MANAGEMENT_URL") or None
        if management is not None:
            management = _url(env, "KPX_AMQP_MANAGEMENT_URL", "", ("http", "https"))
        _refuse_default_credentials(amqp_url)
        named = region or env.get("KPX_REGION")
        region_path = Path(named) if named else example_region_path()
        if not region_path.is_file():
            raise ConfigError(f"KPX_REGION / --region: no region file at {str(region_path)!r}")
        return cls(
            region_path,
            amqp_url,
            database_url,
            Path(env.get("KPX_STATE_DIR") or DEFAULT_STATE_DIR),
            management_url=management,
            broker_admin_password=env.get("KPX_BROKER_ADMIN_PASSWORD") or None,
            metrics_host=env.get("KPX_METRICS_HOST") or DEFAULT_METRICS_HOST,
        )

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment under which a child ``kpx`` reads back exactly these settings:
        ``base`` (default: os.environ) with every variable above set from them, and the
        ones these settings leave unset removed, so nothing of the parent's leaks in."""
        env = dict(os.environ if base is None else base)
        values = {
            "KPX_REGION": str(self.region_path),
            "KPX_AMQP_URL": self.amqp_url,
            "KPX_AMQP_MANAGEMENT_URL": self.management_url,
            "KPX_DATABASE_URL": self.database_url,
            "KPX_STATE_DIR": str(self.state_dir),
            "KPX_BROKER_ADMIN_PASSWORD": self.broker_admin_password,
            "KPX_METRICS_HOST": self.metrics_host,
        }
        for name, value in values.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def admin_password(self) -> str:
        """The broker administrator's password for the definitions; ConfigError when unset."""
        if not self.broker_admin_password:
            raise ConfigError("KPX_BROKER_ADMIN_PASSWORD must be set (no default: choose one)")
        return self.broker_admin_password

    def admin(self) -> Admin:
        """A management API client with the administrator's credentials of KPX_AMQP_URL."""
        return Admin(self.amqp_url, self.management_url)

    def database(self, name: str) -> str:
        """The DSN of database ``name`` on the configured server."""
        return dsn_for(self.database_url, name)

    def vhost_dir(self, vhost: str) -> Path:
        """The state directory of one vhost (keys and broker passwords)."""
        return self.state_dir / vhost

    def registry_dir(self, vhost: str) -> Path:
        """The regional body's own state folder (its and the reconciler's keys)."""
        return self.vhost_dir(vhost) / "registry"

    def keys_dir(self, vhost: str) -> Path:
        """The registry's and the reconciler's keys (never a member's)."""
        return self.registry_dir(vhost) / "keys"

    def node_dir(self, vhost: str, code: str) -> Path:
        """A node's own state folder, at the member's site."""
        return self.vhost_dir(vhost) / "nodes" / code

    def node_keys_dir(self, vhost: str, code: str) -> Path:
        """A node's signing keys (private 0600) and public halves."""
        return self.node_dir(vhost, code) / "keys"

    def broker_password(self, vhost: str, user: str, *, create: bool = False) -> str:
        """The generated password of a broker user; created (mode 0600) when ``create``."""
        path = self.vhost_dir(vhost) / "secrets" / f"{user}.password"
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        if not create:
            raise ConfigError(
                f"no broker password for {user!r} in {str(path.parent)!r}: "
                "run `kpx region init` first"
            )
        for folder in (self.state_dir, self.vhost_dir(vhost), path.parent):
            private_dir(folder)  # 0700 whatever the umask
        password = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(password + "\n")
        return password

    def amqp_url_for(self, vhost: str, user: str | None = None) -> str:
        """The broker URL for ``vhost``, as ``user`` (its generated password) or the admin."""
        parts = urlsplit(self.amqp_url)
        netloc = parts.netloc
        if user is not None:
            password = self.broker_password(vhost, user)
            host = netloc.rsplit("@", 1)[-1]
            netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        path = "/" + quote(vhost, safe="")
        return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def _url(env: Mapping[str, str], key: str, default: str, schemes: tuple[str, ...]) -> str:
    """The URL under ``key`` (or ``default``); ConfigError naming the key for a wrong scheme."""
    url = env.get(key) or default
    if urlsplit(url).scheme not in schemes:
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{key} must be a URL starting {wanted}, got {redact(url)!r}")
    return url


def _refuse_default_credentials(amqp_url: str) -> None:
    """ConfigError for a published password, or guest beyond loopback (the broker refuses
    guest there anyway: better one clear line at start than a retry loop)."""
    parts = urlsplit(amqp_url)
    if parts.password is not None and parts.password in PUBLISHED_PASSWORDS:
        raise ConfigError(
            f"KPX_AMQP_URL: the broker password of {parts.username!r} is a published default; "
            "generate one (e.g. `openssl rand -base64 24`) and set it at deploy time"
        )
    if parts.username in (None, "guest") and parts.hostname not in _LOOPBACK:
        raise ConfigError(
            f"KPX_AMQP_URL: guest may log in over loopback only, not on {parts.hostname!r}; "
            "name the broker administrator created at deploy time"
        )
