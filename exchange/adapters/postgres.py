"""PostgreSQL adapter: connections, transactions, migrations, and driver-error translation.

psycopg2's exceptions are translated here, and only here, into the kpx tree: anything that
means "the server or the connection is gone, or the transaction lost a race" becomes
:class:`DatabaseUnavailable` (transient: retry the whole unit of work); everything else — a
programming error, or data the server cannot take (psycopg2 files a program-limit error such
as "index row too large" under OperationalError too) — propagates unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.errorcodes
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from exchange.errors import AlreadyRunning, DatabaseUnavailable

log = logging.getLogger(__name__)

Connection = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor

# SQLSTATEs that a retry of the same transaction can cure: the connection or the server went
# away (08, 57), it ran short of resources for a moment (53), the transaction lost a race (40,
# 55P03). Anything else is about the statement or its data — a program limit (54, an index row
# too large), a bad value (22) — and fails the same way on every retry: not transient.
_RETRYABLE_CLASSES = frozenset({"08", "40", "53", "57"})
_RETRYABLE_CODES = frozenset({psycopg2.errorcodes.LOCK_NOT_AVAILABLE})


def is_transient(exc: psycopg2.Error) -> bool:
    """True when ``exc`` means the database is unavailable (retry), not that the work is bad."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    code = exc.pgcode
    if code is None:  # no answer from a server: the connection failed or was lost
        return isinstance(exc, psycopg2.OperationalError)
    return code[:2] in _RETRYABLE_CLASSES or code in _RETRYABLE_CODES


def refused_data(exc: BaseException) -> bool:
    """True when the server refused the statement's data (not a bug of ours, not an outage):
    the same data fails the same way again, so the unit of work that carries it is refused."""
    return isinstance(exc, psycopg2.Error) and not is_transient(exc)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Translate psycopg2's connection-level failures raised inside the block."""
    try:
        yield
    except psycopg2.Error as exc:
        if is_transient(exc):
            raise DatabaseUnavailable(f"{what}: {exc.pgerror or exc}".strip()) from exc
        raise


def dsn_for(server_url: str, database: str) -> str:
    """The server URL with its database name replaced by ``database``."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(dsn: str, *, autocommit: bool = False, application_name: str = "kpx") -> Connection:
    """Open a connection; raises DatabaseUnavailable when the server does not answer."""
    with translated(f"connecting to {redact(dsn)}"):
        conn = psycopg2.connect(dsn, application_name=application_name, connect_timeout=10)
    conn.autocommit = autocommit
    return conn


@contextmanager
def transaction(conn: Connection, what: str = "transaction") -> Iterator[Cursor]:
    """One transaction on ``conn``: commit on success, roll back on any error.

    The COMMIT is translated too: it is where a server that dies mid-transaction is most
    often noticed (it waits for the WAL flush), and a raw psycopg2 error from it would not
    be a TransientError, so a retry loop would end instead of reconnecting."""
    with translated(what):
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise


def create_database(server_url: str, database: str) -> bool:
    """Create ``database`` on the server unless it exists; return True when created."""
    conn = connect(server_url, autocommit=True)
    try:
        with translated(f"creating database {database!r}"), conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone():
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
                return False  # another process created it between our look and our create
            log.info("created database %r", database)
            return True
    finally:
        conn.close()


def drop_database(server_url: str, database: str) -> None:
    """Drop ``database`` if it exists, closing its sessions first."""
    conn = connect(server_url, autocommit=True)
    try:
        with translated(f"dropping database {database!r}"), conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    finally:
        conn.close()


# Migrations are recorded under the package that held them when they were first applied; the
# outbox's moved from ``exchange`` to ``exchange.messaging`` and keeps its recorded name, so
# databases migrated before the move do not run it again.
_RECORDED_AS = {"exchange.messaging": "exchange"}


def migrate(conn: Connection, package: str, *, lock_key: int = 7_202_310) -> list[str]:
    """Apply the ``NNN_*.sql`` files of ``package/sql`` not yet applied; return their names.

    Concurrent migrators (two services starting at once) serialise on an advisory lock.
    """
    files = sorted(
        (f for f in resources.files(package).joinpath("sql").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    applied: list[str] = []
    with transaction(conn) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        cur.execute(
            "CREATE TABLE IF NOT EXISTS kpx_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("SELECT name FROM kpx_migrations")
        done = {row[0] for row in cur.fetchall()}
        for f in files:
            name = f"{_RECORDED_AS.get(package, package)}/{f.name}"
            if name in done:
                continue
            cur.execute(f.read_text(encoding="utf-8"))
            cur.execute("INSERT INTO kpx_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
    if applied:
        log.info("applied migrations %s from %s", applied, package)
    return applied


def single_instance(dsn: str, name: str) -> Connection:
    """A connection holding the session lock ``instance:<name>``; AlreadyRunning when another
    process holds it. Close the connection to let go (its end, even a crash, releases it)."""
    conn = connect(dsn, autocommit=True, application_name=f"kpx-instance {name}"[:63])
    with translated(f"locking instance {name}"), conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"instance:{name}",))
        row = cur.fetchone()
    if row is None or not row[0]:
        conn.close()
        raise AlreadyRunning(
            f"{name} is already running against this database; stop it first "
            "(a second one would consume and relay beside it)"
        )
    return conn


def fetch_all(conn: Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    """Run a read-only query in its own transaction; rows as dicts."""
    with translated("query"):
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(query, params)
                rows = [dict(r) for r in cur.fetchall()]
            conn.commit()
            return rows
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
