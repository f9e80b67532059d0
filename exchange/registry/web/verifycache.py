"""The portal's cache of verification facts, never stale beyond the commit's notification.

A certificate's status is looked up far more often than it changes, so the portal keeps the
:class:`~exchange.registry.web.verdict.Facts` of the certificates it has found (at most
``size``, least recently used first out) and judges them at serve time: expiry depends on the
day, the facts do not. Only certificates the registry holds are cached; an UNKNOWN or
REJECTED answer always goes to the database, so a certificate accepted a moment ago is found
by the next lookup.

Invalidation comes from the database itself (sql/010_verify_notify.sql): every statement that
changes a certificate or an import confirmation announces its ids on channel ``kpx_verify``
when it commits. A listener connection, its socket watched by the event loop like the
lookups' (pgasync.py), evicts each id it is told about. A void is therefore seen as soon as
its commit's notification reaches the portal (milliseconds on one network), never later.

Three races are closed here:

- a round trip whose snapshot predates a commit, but whose rows arrive after that commit's
  notification, would cache the old facts for good. Each round trip takes a ticket (the
  count of announcements seen) when it is sent; its rows are cached only for the ids no
  announcement named since (:meth:`VerifyCache.admit`). An announcement that arrives after
  the rows evicts them as usual.
- while the listener is down or reconnecting, changes go unheard: nothing is served from the
  cache and nothing is cached (every lookup reads the database, as without a cache). When
  ``LISTEN`` succeeds again the cache starts empty, and round trips sent before it cache
  nothing (each change of the listener counts as an announcement of everything).
- at shutdown the listener is closed (:meth:`VerifyCache.close`, and the loop's end cancels
  its task, whose connection closes with it).

A listener that hears nothing for HEARTBEAT (1 s) pings the database (``SELECT 1``); no answer
within PING_TIMEOUT (2 s) and it counts as down. That finds, within about 3 seconds, what TCP
keepalives cannot: a backend that hangs while its host's kernel still answers the probes. A
silently dead network (no reset, no FIN) is found the same way, and by the keepalives on the
listener connection (5 s idle, then 3 probes 2 s apart) while a ping is not yet due.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import date

import psycopg2

from exchange.adapters.postgres import Connection
from exchange.registry.web.pgasync import readable, ready
from exchange.registry.web.verdict import Facts, judge
from exchange.web.lean import Answer

log = logging.getLogger(__name__)

CHANNEL = "kpx_verify"
FLUSH = "*"  # announced for a change the ids cannot name: forget everything
DEFAULT_SIZE = 100_000
_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0  # seconds between reconnections of the listener
HEARTBEAT = 1.0  # seconds of silence after which the listener pings the database
PING_TIMEOUT = 2.0  # seconds the ping may take before the listener counts as down


class Entry:
    """The facts of one certificate, and the API's answer on the last day it was asked."""

    __slots__ = ("_body", "_day", "facts", "number")

    def __init__(self, number: str, facts: Facts) -> None:
        self.number = number
        self.facts = facts
        self._day: date | None = None
        self._body = b""

    def body(self, on: date) -> bytes:
        """The JSON body of ``GET /api/v1/verify/{number}`` on ``on``, encoded once a day."""
        if self._day != on:
            verdict = judge(self.number, self.facts, on)
            self._body, self._day = Answer.json(verdict.to_json()).body, on
        return self._body


class VerifyCache:
    """At most ``size`` certificates' facts, served only while the listener listens."""

    def __init__(self, dsn: str, size: int = DEFAULT_SIZE) -> None:
        self._dsn = dsn
        self.size = size
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._live = False  # LISTEN holds: only then is anything served or cached
        self._seen = 0  # announcements seen, each change of the listener counting as one
        # Announcements a round trip still in flight may have missed: (count, ids or None
        # for everything), kept while a trip sent before them is out.
        self._recent: list[tuple[int, frozenset[str] | None]] = []
        self._tickets: dict[int, int] = {}  # trips in flight by the count they were sent at
        self._task: asyncio.Task[None] | None = None
        self._conn: Connection | None = None
        self.hits = self.misses = self.evicted = self.dropped = 0

    @property
    def live(self) -> bool:
        return self._live

    @property
    def seen(self) -> int:
        """Announcements (and changes of the listener) seen so far."""
        return self._seen

    def __len__(self) -> int:
        return len(self._entries)

    # ---------------------------------------------------------------- serving and filling

    def get(self, number: str) -> Entry | None:
        """The entry of ``number`` (normalised), or None: not cached, or not listening."""
        entry = self._entries.get(number) if self._live else None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(number)
        self.hits += 1
        return entry

    def ticket(self) -> int:
        """Taken when a round trip is sent; given back to :meth:`admit` with its rows."""
        self._start()
        seen = self._seen
        self._tickets[seen] = self._tickets.get(seen, 0) + 1
        return seen

    def admit(self, ticket: int, found: list[tuple[str, Facts]]) -> None:
        """Cache ``found`` (number, facts) read by the trip sent at ``ticket``, except what
        was announced since; and give the ticket back (also with nothing, on a failure)."""
        left = self._tickets[ticket] - 1
        if left:
            self._tickets[ticket] = left
        else:
            del self._tickets[ticket]
        try:
            if not self._live or not found or self.size <= 0:
                return
            if ticket != self._seen:
                named: set[str] = set()
                for count, ids in self._recent:
                    if count > ticket:
                        if ids is None:
                            return  # everything may have changed meanwhile
                        named |= ids
                found = [(n, f) for n, f in found if n not in named]
            for number, facts in found:
                self._entries[number] = Entry(number, facts)
                self._entries.move_to_end(number)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
                self.dropped += 1
        finally:
            self._trim()

    def _trim(self) -> None:
        """Forget the announcements no trip in flight was sent before."""
        if not self._tickets:
            self._recent.clear()
        elif self._recent:
            oldest = min(self._tickets)
            self._recent = [r for r in self._recent if r[0] > oldest]

    # ---------------------------------------------------------------- announcements

    def announced(self, payload: str) -> None:
        """Evict the ids of one notification (space-separated; ``*``: everything)."""
        ids = frozenset(payload.split())
        if FLUSH in ids:
            self._forget()
            return
        for number in ids:
            if self._entries.pop(number, None) is not None:
                self.evicted += 1
        self._seen += 1
        if self._tickets:
            self._recent.append((self._seen, ids))

    def _forget(self) -> None:
        """Clear everything, and cache nothing a trip in flight read before now."""
        self.evicted += len(self._entries)
        self._entries.clear()
        self._seen += 1
        if self._tickets:
            self._recent.append((self._seen, None))

    def _down(self) -> None:
        if self._live:
            log.warning("verification cache off: its listener is down; lookups read the database")
        self._live = False
        self._forget()

    def _up(self) -> None:
        self._forget()  # what changed while nobody listened is unknown
        self._live = True

    # ---------------------------------------------------------------- the listener

    def _start(self) -> None:
        """Start the listener on the running loop, once (the first lookup does)."""
        if self._task is None and self.size > 0:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        delay = _RETRY_FIRST
        while True:
            try:
                self._conn = conn = await self._connect()
                self._up()
                delay = _RETRY_FIRST
                while True:
                    await self._heard_or_pinged(conn)
                    for note in conn.notifies:
                        self.announced(note.payload)
                    conn.notifies.clear()
            except Exception as exc:  # never fatal: lookups go to the database meanwhile
                log.warning("verification cache listener: %s; again in %.1f s", exc, delay)
            finally:
                self._down()
                self._close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _heard_or_pinged(self, conn: Connection) -> None:
        """Until the listener's socket has something (read), or after a second of silence,
        until the server answered a ping; raises when the connection is gone or the ping
        goes unanswered for PING_TIMEOUT seconds."""
        try:
            await asyncio.wait_for(readable(conn), HEARTBEAT)
        except TimeoutError:
            # Keepalives are answered by the server's kernel: a backend that hangs (stopped,
            # or stuck behind a lock) would leave the cache trusted and deaf for good.
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                await asyncio.wait_for(ready(conn), PING_TIMEOUT)
            return
        conn.poll()  # raises when the connection is gone

    async def _connect(self) -> Connection:
        conn = psycopg2.connect(
            self._dsn, async_=True, application_name="kpx-registry-verify-listen",
            connect_timeout=10, keepalives=1, keepalives_idle=5, keepalives_interval=2,
            keepalives_count=3,
        )  # fmt: skip
        try:
            await ready(conn)
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
                await ready(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Stop listening and serve nothing more (at shutdown)."""
        task, self._task = self._task, None
        self._live = False  # by choice: not worth the warning _down gives
        self._forget()
        if task is not None and not task.done():
            try:
                task.cancel()  # its end closes the connection, off the loop's watch first
                return
            except RuntimeError:  # its loop is already closed: nothing runs it any more
                pass
        self._close()
