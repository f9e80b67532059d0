"""A small pool of PostgreSQL connections for the web app's worker threads.

Handlers run their database work in Starlette's thread pool; each borrows a connection for
one unit of work. A connection that broke is closed rather than returned, so the next
borrower gets a fresh one after a database restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg2
from psycopg2.pool import ThreadedConnectionPool

from exchange.adapters import postgres
from exchange.adapters.postgres import Connection, Cursor
from exchange.errors import DatabaseUnavailable

T = TypeVar("T")


class Pool:
    """Borrow connections with :meth:`connection`, or run one transaction with :meth:`run`."""

    def __init__(self, dsn: str, size: int = 8, application_name: str = "kpx-web") -> None:
        with postgres.translated(f"connecting to {postgres.redact(dsn)}"):
            self._pool = ThreadedConnectionPool(
                1, size, dsn, application_name=application_name, connect_timeout=10
            )

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        conn: Connection = self._pool.getconn()
        broken = False
        try:
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError, DatabaseUnavailable):
            broken = True
            raise
        finally:
            if not conn.closed and conn.status != psycopg2.extensions.STATUS_READY:
                conn.rollback()
            self._pool.putconn(conn, close=broken or bool(conn.closed))

    def run(self, work: Callable[[Cursor], T]) -> T:
        """``work(cur)`` in one transaction (committed when it returns)."""
        with self.connection() as conn, postgres.transaction(conn) as cur:
            return work(cur)

    def close(self) -> None:
        self._pool.closeall()
