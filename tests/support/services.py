"""Fresh RabbitMQ vhosts and PostgreSQL databases on the real services, for tests.

Every vhost and database made here is named ``kpxt_<pid>_<unix time>_<8 hex>``: unique per
test run, recognisable as a test's, and carrying enough to tell a crashed run's leftovers
(owner process gone, older than :data:`LEFTOVER_AGE`) from a run still going on in parallel.
The fixtures in ``tests/conftest.py`` wrap the factories below; tests import from here only
for the types and for the rare test that manages the lifetime itself:
``from support.services import Vhost`` (pytest puts ``tests/`` on ``sys.path``, so this works
however pytest is started).

Nothing here is ever mocked: a service that does not answer ends the test session with
:data:`START_HINT` (a missing service is an error, never a skip).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import quote, unquote, urlsplit

import httpx
import pika
import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MANAGEMENT_PORT = 15672
PREFIX = "kpxt_"
LEFTOVER_AGE = 3600.0  # seconds; younger names may belong to a run in another PID namespace
START_HINT = (
    "Start them with `make services` (runs scripts/ensure-services), or point "
    "KPX_AMQP_URL / KPX_DATABASE_URL (and KPX_AMQP_MANAGEMENT_URL) at servers that run."
)
_TIMEOUT = 10.0


def amqp_url_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """The broker admin URL: ``KPX_AMQP_URL`` or the local guest account."""
    return environ.get("KPX_AMQP_URL") or DEFAULT_AMQP_URL


def database_url_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """The database server URL: ``KPX_DATABASE_URL`` or the local ``postgres`` role."""
    return environ.get("KPX_DATABASE_URL") or DEFAULT_DATABASE_URL


def management_url_from_env(amqp_url: str, environ: Mapping[str, str] = os.environ) -> str:
    """The management HTTP API root: ``KPX_AMQP_MANAGEMENT_URL`` or the broker's host:15672."""
    explicit = environ.get("KPX_AMQP_MANAGEMENT_URL")
    if explicit:
        return explicit.rstrip("/")
    return f"http://{urlsplit(amqp_url).hostname or '127.0.0.1'}:{MANAGEMENT_PORT}"


def unique_name() -> str:
    """A fresh ``kpxt_<pid>_<unix time>_<8 hex>`` name (valid as vhost and database name)."""
    return f"{PREFIX}{os.getpid()}_{int(time.time())}_{secrets.token_hex(4)}"


def is_leftover(name: str, *, now: float | None = None) -> bool:
    """True for a ``kpxt_`` name whose process is gone and which is old enough to sweep."""
    fields = name.removeprefix(PREFIX).split("_")
    if not name.startswith(PREFIX) or len(fields) != 3 or not all(f.isdigit() for f in fields[:2]):
        return False
    pid, created = int(fields[0]), int(fields[1])
    age = (now if now is not None else time.time()) - created
    return age > LEFTOVER_AGE and not _process_alive(pid)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, just not ours
    return True


def with_path(url: str, path: str) -> str:
    """``url`` with its path replaced by ``/<path>`` (percent-encoded), query kept."""
    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}/{quote(path, safe='')}{query}"


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


@dataclass(frozen=True)
class Vhost:
    """A RabbitMQ vhost made for a test; ``amqp_url`` connects to it as the admin user."""

    name: str
    amqp_url: str


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database made for a test; ``url`` connects to it."""

    name: str
    url: str


class RabbitAdmin:
    """Just enough of the RabbitMQ management HTTP API for test vhosts."""

    def __init__(self, amqp_url: str, management_url: str) -> None:
        parts = urlsplit(amqp_url)
        self.user = unquote(parts.username or "guest")
        password = unquote(parts.password or "guest")
        self._http = httpx.Client(
            base_url=f"{management_url}/api", auth=(self.user, password), timeout=_TIMEOUT
        )

    def close(self) -> None:
        self._http.close()

    def check(self) -> None:
        """Raise httpx.HTTPError unless the API answers and accepts our credentials."""
        self._http.get("/overview").raise_for_status()

    def create_vhost(self, name: str) -> None:
        """Create ``name`` and give the admin user full permissions on it."""
        vhost = quote(name, safe="")
        self._http.put(f"/vhosts/{vhost}").raise_for_status()
        permissions = {"configure": ".*", "write": ".*", "read": ".*"}
        user = quote(self.user, safe="")
        self._http.put(f"/permissions/{vhost}/{user}", json=permissions).raise_for_status()

    def delete_vhost(self, name: str) -> None:
        """Delete ``name`` (its queues, exchanges and connections with it); absent is fine."""
        response = self._http.delete(f"/vhosts/{quote(name, safe='')}")
        if response.status_code != httpx.codes.NOT_FOUND:
            response.raise_for_status()

    def vhost_names(self) -> list[str]:
        response = self._http.get("/vhosts", params={"columns": "name"})
        response.raise_for_status()
        return [str(entry["name"]) for entry in response.json()]


class PostgresAdmin:
    """Creates and drops databases on the server at ``server_url``."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url

    def _connect(self) -> PgConnection:
        # CREATE/DROP DATABASE cannot run inside a transaction block.
        conn = psycopg2.connect(self.server_url, connect_timeout=int(_TIMEOUT))
        conn.autocommit = True
        return conn

    def _execute(self, statement: sql.Composable, *params: object) -> list[tuple[object, ...]]:
        conn = self._connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, params or None)
                return list(cursor.fetchall()) if cursor.description else []
        finally:
            conn.close()

    def check(self) -> None:
        """Raise psycopg2.Error unless the server answers."""
        self._execute(sql.SQL("SELECT 1"))

    def create_database(self, name: str) -> None:
        self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """Drop ``name`` even if a test left connections open; absent is fine."""
        self._execute(
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()"
            ),
            name,
        )
        self._execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def database_names(self) -> list[str]:
        rows = self._execute(sql.SQL("SELECT datname FROM pg_database ORDER BY datname"))
        return [str(row[0]) for row in rows]


class VhostFactory:
    """Makes fresh vhosts on call; :meth:`close` deletes every one it made."""

    def __init__(self, admin: RabbitAdmin, amqp_url: str) -> None:
        self._admin = admin
        self._amqp_url = amqp_url
        self._made: list[str] = []

    def __call__(self) -> Vhost:
        name = unique_name()
        self._made.append(name)  # before creating: a half-made vhost is still removed
        self._admin.create_vhost(name)
        return Vhost(name=name, amqp_url=with_path(self._amqp_url, name))

    def close(self) -> None:
        while self._made:
            self._admin.delete_vhost(self._made.pop())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class DatabaseFactory:
    """Makes fresh databases on call; :meth:`close` drops every one it made."""

    def __init__(self, admin: PostgresAdmin) -> None:
        self._admin = admin
        self._made: list[str] = []

    def __call__(self) -> Database:
        name = unique_name()
        self._made.append(name)
        self._admin.create_database(name)
        return Database(name=name, url=with_path(self._admin.server_url, name))

    def close(self) -> None:
        while self._made:
            self._admin.drop_database(self._made.pop())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def service_problems(amqp_url: str, rabbit: RabbitAdmin, postgres: PostgresAdmin) -> list[str]:
    """One sentence per service that does not answer; empty when all do."""
    problems = []
    try:
        _check_amqp(amqp_url)
    except Exception as exc:  # any failure to connect means the same thing here
        problems.append(f"RabbitMQ does not answer at {redact(amqp_url)}: {_describe(exc)}")
    try:
        rabbit.check()
    except httpx.HTTPError as exc:
        problems.append(f"the RabbitMQ management API does not answer: {_describe(exc)}")
    try:
        postgres.check()
    except psycopg2.Error as exc:
        problems.append(
            f"PostgreSQL does not answer at {redact(postgres.server_url)}: {_describe(exc)}"
        )
    return problems


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message``: enough to act on, one line in the summary."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else repr(exc)}"


def _check_amqp(amqp_url: str) -> None:
    parameters = pika.URLParameters(amqp_url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = _TIMEOUT
    pika.BlockingConnection(parameters).close()


def sweep_leftovers(rabbit: RabbitAdmin, postgres: PostgresAdmin) -> list[str]:
    """Remove ``kpxt_`` vhosts and databases that crashed runs left; returns their names."""
    vhosts = [name for name in rabbit.vhost_names() if is_leftover(name)]
    databases = [name for name in postgres.database_names() if is_leftover(name)]
    for name in vhosts:
        rabbit.delete_vhost(name)
    for name in databases:
        postgres.drop_database(name)
    return vhosts + databases
