"""Public reads of the registry on their own small, bounded connection pool.

A flood of verification lookups must never slow ingest: the public pages take connections
only from this pool (``max_connections``, 4 by default), each opened with a statement timeout,
so at most that many public queries run at once on the database and a caller waits at most
``wait_seconds`` for one before getting :class:`~exchange.errors.DatabaseUnavailable` (the
page then answers 503). Ingest has its own connections and never waits on this pool.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import psycopg2
import psycopg2.extras
import psycopg2.pool

from exchange.adapters.postgres import Connection, translated
from exchange.errors import DatabaseUnavailable
from exchange.registry.web.verdict import Facts, Verdict, judge, normalise, precheck

# One round trip: the certificate, the destination's first confirmation, the last rejection.
_VERIFY = """
SELECT c.state, c.replaced_by, COALESCE(c.issuing_member, c.issuing_participant) AS issuer,
       c.destination, c.date_of_issue, c.date_of_expiry, c.number_of_parcels, c.total_carats,
       f.received_on, f.importing_participant,
       (SELECT e.reason FROM event_log e WHERE e.certificate_id = %(n)s
          AND e.decision = 'REJECTED' ORDER BY e.received_at DESC LIMIT 1) AS rejected
FROM (SELECT 1) one
LEFT JOIN certificates c ON c.certificate_id = %(n)s
LEFT JOIN LATERAL (
    SELECT received_on, importing_participant FROM import_confirmations i
    WHERE i.certificate_id = %(n)s ORDER BY (i.importing_participant = c.destination) DESC,
          received_on LIMIT 1) f ON true
"""


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
        options = f"-c statement_timeout={statement_timeout_ms}"
        if read_only:  # the public pool cannot write, whatever a page asks
            options += " -c default_transaction_read_only=on"
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
        """Once per connection: the verification query planned once (planning costs more
        than running it) and, for read-only pools, autocommit (no BEGIN/ROLLBACK trips)."""
        if conn in self._ready:
            return
        with conn.cursor() as cur:
            cur.execute(f"PREPARE kpx_verify (text) AS {_VERIFY.replace('%(n)s', '$1')}")
        conn.commit()
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


def verify(pool: PublicPool, text: str, region: str, on: date) -> Verdict:
    """The verdict on ``on`` for the number typed as ``text``; checks digits before lookup."""
    number = normalise(text)
    early = precheck(number, region)
    if early is not None:
        return early
    with (
        pool.connection() as conn,
        translated("verify"),
        conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
    ):
        cur.execute("EXECUTE kpx_verify (%s)", (number,))
        row = cur.fetchone()
    assert row is not None  # FROM (SELECT 1) always yields one row
    return judge(number, _facts(row), on, row["rejected"])


def _facts(row: dict[str, Any]) -> Facts | None:
    if row["state"] is None:
        return None
    return Facts(
        state=row["state"],
        replaced_by=row["replaced_by"],
        issuing_member=row["issuer"],
        destination=row["destination"],
        date_of_issue=row["date_of_issue"],
        date_of_expiry=row["date_of_expiry"],
        number_of_parcels=row["number_of_parcels"],
        total_carats=row["total_carats"],
        imported_on=row["received_on"],
        imported_by=row["importing_participant"],
    )
