"""Public reads of the registry on their own small, bounded connection pool.

A flood of public requests must never slow ingest: the key list and the log's tiles take
connections only from this pool (``max_connections``), each opened with a statement timeout,
so at most that many such queries run at once on the database and a caller waits at most
``wait_seconds`` for one before getting :class:`~exchange.errors.DatabaseUnavailable` (the
page then answers 503). Ingest has its own connections and never waits on this pool.
Verification has its own, non-blocking connections under the same rules (lookups.py).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.pool

from exchange.adapters.postgres import Connection, translated
from exchange.errors import DatabaseUnavailable


def session_options(statement_timeout_ms: int, read_only: bool) -> str:
    """libpq's ``options`` for a public connection: a statement timeout and, with
    ``read_only``, sessions that cannot write whatever a page asks."""
    options = f"-c statement_timeout={statement_timeout_ms}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    return options


class PublicPool:
    """At most ``max_connections`` database connections for the public pages."""

    def __init__(
        self,
        dsn: str,
        max_connections: int = 4,
        wait_seconds: float = 2.0,
        statement_timeout_ms: int = 2000,
        read_only: bool = False,
    ) -> None:
        options = session_options(statement_timeout_ms, read_only)
        # minconn = maxconn: psycopg2 closes a returned connection beyond minconn, and a new
        # connection per lookup would cost more than the lookup itself.
        with translated("opening the public read pool"):
            self._pool = psycopg2.pool.ThreadedConnectionPool(
                max_connections, max_connections, dsn,
                application_name="kpx-registry-public", options=options,
            )  # fmt: skip
        # ThreadedConnectionPool fails at once when empty; the semaphore makes callers queue.
        self._slots = threading.BoundedSemaphore(max_connections)
        self._wait = wait_seconds
        self._read_only = read_only
        self._ready: weakref.WeakSet[Connection] = weakref.WeakSet()

    def _prepare(self, conn: Connection) -> None:
        """Once per connection: for read-only pools, autocommit (no BEGIN/ROLLBACK trips)."""
        if conn in self._ready:
            return
        conn.autocommit = self._read_only
        self._ready.add(conn)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection; raises DatabaseUnavailable when none frees up in time."""
        if not self._slots.acquire(timeout=self._wait):
            raise DatabaseUnavailable("all public read connections are busy")
        try:
            with translated("public read"):
                conn = self._pool.getconn()
                self._prepare(conn)
            broken = False
            try:
                yield conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
                raise
            finally:
                # Whatever happened, the next user gets a connection outside any transaction.
                if not broken and not conn.closed and not conn.autocommit:
                    try:
                        conn.rollback()
                    except psycopg2.Error:
                        broken = True
                self._pool.putconn(conn, close=broken or bool(conn.closed))
        finally:
            self._slots.release()

    def close(self) -> None:
        self._pool.closeall()
