"""The single-instance lock of a service, held for its whole life — across database restarts.

A session advisory lock (:func:`~exchange.adapters.postgres.single_instance`) lives as long as
its connection: when the database restarts, or its backend is terminated, the lock is gone
while the service, whose other connections reconnect by themselves, runs on. A second
instance started then would consume and relay beside it. :class:`InstanceLock` checks its
connection every few seconds and takes the lock again on a fresh one; if another instance got
it first, this one stops (``stop`` is set, :attr:`lost` says why): the one holding the lock
is the one that runs.

Errors: AlreadyRunning when the lock is held at start; DatabaseUnavailable when the database
cannot be reached at start (both from single_instance).
"""

from __future__ import annotations

import logging
import threading

import psycopg2

from exchange.adapters.postgres import Connection, single_instance
from exchange.errors import AlreadyRunning, DatabaseUnavailable

log = logging.getLogger(__name__)

CHECK_EVERY = 5.0  # seconds between checks: at most this long without the lock


class InstanceLock:
    """The lock ``instance:<name>`` on ``dsn``, taken now and kept by :meth:`keep`."""

    def __init__(self, dsn: str, name: str, every: float = CHECK_EVERY) -> None:
        self.dsn, self.name, self.every = dsn, name, every
        self.lost: AlreadyRunning | None = None  # set when another instance took the lock
        self._guard = threading.Lock()  # the keeper's checks against close()
        self._closed = False
        self._conn: Connection | None = single_instance(dsn, name)

    def keep(self, stop: threading.Event) -> None:
        """Check the lock every ``every`` seconds until ``stop`` is set or :meth:`close`."""
        while not stop.wait(self.every):
            with self._guard:
                if self._closed:
                    return
                if self._held():
                    continue
                try:
                    self._conn = single_instance(self.dsn, self.name)
                    log.warning("%s: the instance lock was lost (database restarted?) and "
                                "is held again", self.name)  # fmt: skip
                except DatabaseUnavailable as exc:
                    log.warning("%s: instance lock not held, retrying: %s", self.name, exc)
                except AlreadyRunning as exc:
                    log.error("%s: another instance took the lock while the database was "
                              "away; this one stops", self.name)  # fmt: skip
                    self.lost = exc
                    stop.set()
                    return

    def thread(self, stop: threading.Event) -> threading.Thread:
        """:meth:`keep` on a daemon thread (not started)."""
        return threading.Thread(target=self.keep, args=(stop,), name="instance-lock", daemon=True)

    def close(self) -> None:
        """Let go of the lock (its connection closed)."""
        with self._guard:
            self._closed = True
            self._drop()

    def _held(self) -> bool:
        """Whether the lock's connection still answers (closed and dropped when it does not)."""
        conn = self._conn
        if conn is None or conn.closed:
            self._conn = None
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except psycopg2.Error:  # the session, and with it the lock, is gone
            self._drop()
            return False

    def _drop(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
