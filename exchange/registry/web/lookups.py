"""Verification lookups on a few non-blocking connections driven by the server's event loop.

A verification is one prepared query. Run through psycopg2 in a worker thread, each lookup
paid a thread hop and a GIL hand-over both ways, several times what the query itself costs;
here the connections are psycopg2's asynchronous ones and the loop waits on their sockets, so
a lookup takes no thread at all. And lookups go to the database together, up to ``batch``
numbers in one statement: those whose requests arrived in the same iteration of the loop, and
those that arrived while every connection was busy. Under load a round trip, not a lookup, is
what the database and the loop pay for; at low load nothing waits to be batched.

The bound is the same as the public pool's (exchange/registry/web/reads.py): at most
``max_connections`` statements at once on the database, each under a statement timeout, on
read-only sessions. A lookup not answered within ``wait_seconds``, or arriving when
``backlog`` lookups already wait, gets :class:`~exchange.errors.DatabaseUnavailable` (the page
answers 503): a flood of lookups queues here, briefly, and never reaches ingest's connections.

Certificates already found are answered from the cache (verifycache.py) without a round trip:
:meth:`Lookups.cached_body` answers the JSON API synchronously, inside the handler, with the
body encoded once a day; :meth:`Lookups.verify` judges the cached facts for the page. A
cached certificate is evicted when the database announces its change at commit, so a void is
seen by the first lookup after its notification reaches the portal (milliseconds); while the
cache's listener is down every lookup reads the database. UNKNOWN and REJECTED numbers are
never cached. A lookup that misses reads the certificates as the registry last committed
them, after the lookup arrived. A connection that fails is closed and a fresh one opened for
the next round trip; a round trip that finds its idle connection dead (the server restarted,
the backend was terminated) is sent once more on a fresh one, since it only reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import date
from typing import Any

import psycopg2

from exchange.adapters.postgres import Connection, translated
from exchange.errors import DatabaseUnavailable
from exchange.registry.web.pgasync import ready
from exchange.registry.web.reads import session_options
from exchange.registry.web.verdict import Facts, Verdict, judge, normalise, precheck
from exchange.registry.web.verifycache import DEFAULT_SIZE, VerifyCache

log = logging.getLogger(__name__)

# For each number, in the order given, one row: the certificate, the destination's first
# confirmation, the last rejection (all NULL for a number the registry never saw).
_VERIFY = """
SELECT c.state, c.replaced_by, COALESCE(c.issuing_member, c.issuing_participant),
       c.destination, c.date_of_issue, c.date_of_expiry, c.number_of_parcels, c.total_carats,
       f.received_on, f.importing_participant, r.reason
FROM unnest($1::text[]) WITH ORDINALITY AS n(id, position)
LEFT JOIN certificates c ON c.certificate_id = n.id
LEFT JOIN LATERAL (
    SELECT received_on, importing_participant FROM import_confirmations i
    WHERE i.certificate_id = n.id ORDER BY (i.importing_participant = c.destination) DESC,
          received_on LIMIT 1) f ON true
LEFT JOIN LATERAL (
    SELECT e.reason FROM event_log e WHERE e.certificate_id = n.id AND e.decision = 'REJECTED'
    ORDER BY e.received_at DESC LIMIT 1) r ON true
ORDER BY n.position
"""
# Planned once per connection: planning costs more than running it.
_PREPARE = f"PREPARE kpx_verify (text[]) AS {_VERIFY}"
_EXECUTE = "EXECUTE kpx_verify (%s)"

Row = tuple[Any, ...]
Waiting = tuple[str, "asyncio.Future[Row]"]


class Lookups:
    """At most ``max_connections`` non-blocking, read-only connections for verification."""

    def __init__(
        self,
        dsn: str,
        max_connections: int = 4,
        wait_seconds: float = 2.0,
        statement_timeout_ms: int = 2000,
        batch: int = 32,
        backlog: int = 1000,
        cache_size: int = DEFAULT_SIZE,
    ) -> None:
        self._dsn = dsn
        self.cache = VerifyCache(dsn, cache_size)  # size 0: every lookup reads the database
        self._options = session_options(statement_timeout_ms, read_only=True)
        self._max = max_connections
        self._wait = wait_seconds
        self._batch = batch
        self._backlog = backlog
        self._idle: list[Connection] = []
        self._open = 0  # connections idle, in a round trip, or being opened
        self._waiting: deque[Waiting] = deque()
        self._trips: set[asyncio.Task[None]] = set()
        self._due = False  # a dispatch is scheduled for the end of this loop iteration

    async def verify(self, text: str, region: str, on: date, asked: bool = False) -> Verdict:
        """The verdict on ``on`` for the number typed as ``text``; checks digits before lookup.

        ``asked``: the caller has just missed the cache (:meth:`cached_body`); it is not
        asked again.
        """
        number = normalise(text)
        # Before the precheck: only numbers that passed it (for this portal's one region)
        # and were found are ever cached.
        entry = None if asked else self.cache.get(number)
        if entry is not None:
            return judge(number, entry.facts, on)
        early = precheck(number, region)
        if early is not None:
            return early
        row = await self._lookup(number)
        return judge(number, _facts(row), on, row[10])

    def cached_body(self, text: str, on: date) -> bytes | None:
        """The JSON API's body on ``on`` for a certificate in the cache, without waiting;
        None when it must be looked up (:meth:`verify`)."""
        entry = self.cache.get(normalise(text))
        return None if entry is None else entry.body(on)

    async def _lookup(self, number: str) -> Row:
        if len(self._waiting) >= self._backlog:
            raise DatabaseUnavailable(f"{len(self._waiting)} verification lookups waiting")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Row] = loop.create_future()
        self._waiting.append((number, answer))
        timer = loop.call_later(self._wait, _expire, answer)
        if not self._due:
            # Not at once: the lookups whose requests arrived in the same iteration of the
            # loop go in one round trip. No lookup waits longer for it than that iteration.
            self._due = True
            loop.call_soon(self._dispatch)
        try:
            return await answer
        finally:
            timer.cancel()

    def _dispatch(self) -> None:
        """Send the waiting lookups, ``batch`` at most a round trip, on every free connection."""
        self._due = False
        while self._waiting and (self._idle or self._open < self._max):
            batch: list[Waiting] = []
            while self._waiting and len(batch) < self._batch:
                number, answer = self._waiting.popleft()
                if not answer.done():  # not already given up (expired, cancelled)
                    batch.append((number, answer))
            if not batch:
                return
            conn = None
            if self._idle:
                conn = self._idle.pop()
            else:
                self._open += 1  # counted now, opened by the trip
            trip = asyncio.get_running_loop().create_task(self._trip(conn, batch))
            self._trips.add(trip)  # the loop keeps only a weak reference to a task
            trip.add_done_callback(self._trips.discard)

    async def _trip(self, conn: Connection | None, batch: list[Waiting]) -> None:
        """One round trip for ``batch`` on ``conn`` (None: on a connection opened for it)."""
        fresh = conn is None
        found: list[tuple[str, Facts]] = []
        ticket = self.cache.ticket()  # before the statement: its snapshot is later
        try:
            if conn is None:
                conn = await self._connect()
            rows = await self._query(conn, [number for number, _ in batch])
        except DatabaseUnavailable as exc:
            if conn is not None and not conn.closed:  # the statement timed out; conn is sound
                self._idle.append(conn)
            else:
                self._close(conn)
                if not fresh:
                    # An idle connection died unseen, its idle siblings most likely with it.
                    while self._idle:
                        self._close(self._idle.pop())
                    self._waiting.extendleft(reversed(batch))
                    batch = []
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
        except Exception as exc:  # a bug: each lookup answers 500 (and is logged there)
            self._close(conn)
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
        except BaseException:  # cancelled mid-trip (shutdown): conn's state is unknown
            self._close(conn)
            for _, answer in batch:
                answer.cancel()
            raise
        else:
            self._idle.append(conn)
            for (number, answer), row in zip(batch, rows, strict=True):
                if (facts := _facts(row)) is not None:
                    found.append((number, facts))
                if not answer.done():
                    answer.set_result(row)
        finally:
            self.cache.admit(ticket, found)
            self._dispatch()

    @staticmethod
    async def _query(conn: Connection, numbers: list[str]) -> list[Row]:
        with translated("verify"), conn.cursor() as cur:
            cur.execute(_EXECUTE, (numbers,))
            await ready(conn)
            return cur.fetchall()

    async def _connect(self) -> Connection:
        with translated("opening a verification connection"):
            conn = psycopg2.connect(
                self._dsn, async_=True, application_name="kpx-registry-verify",
                options=self._options, connect_timeout=10,
            )  # fmt: skip
            try:
                await ready(conn)
                with conn.cursor() as cur:
                    cur.execute(_PREPARE)
                    await ready(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _close(self, conn: Connection | None) -> None:
        """One connection fewer (``conn``, or one that failed to open)."""
        if conn is not None:
            conn.close()
        self._open -= 1

    def close(self) -> None:
        """Close the cache's listener and the idle connections (at shutdown, once no lookup
        runs)."""
        self.cache.close()
        while self._idle:
            self._close(self._idle.pop())


def _expire(answer: asyncio.Future[Row]) -> None:
    if not answer.done():
        answer.set_exception(DatabaseUnavailable("no verification connection was free in time"))


def _facts(row: Row) -> Facts | None:
    state, replaced_by, issuer, destination, issued, expires, parcels, carats = row[:8]
    if state is None:
        return None
    return Facts(
        state=state,
        replaced_by=replaced_by,
        issuing_member=issuer,
        destination=destination,
        date_of_issue=issued,
        date_of_expiry=expires,
        number_of_parcels=parcels,
        total_carats=carats,
        imported_on=row[8],
        imported_by=row[9],
    )
