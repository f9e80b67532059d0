"""A node's single-instance lock outlives a restart of its database (adapters/instancelock.py).

The lock is a session advisory lock: terminating its backend (what a database restart does to
every session) releases it. Before, the node ran on without it and a second instance could
start beside it; now the lock is taken again, and if another instance got it first, the one
that lost it stops. Real PostgreSQL; the backend terminated with pg_terminate_backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from exchange.adapters.instancelock import InstanceLock
from exchange.adapters.postgres import Connection, connect, single_instance
from exchange.errors import AlreadyRunning

NAME = "node BW"


@pytest.fixture
def admin(database: Any) -> Iterator[Connection]:
    conn = connect(database.url, autocommit=True)
    yield conn
    conn.close()


def holders(admin: Connection) -> list[int]:
    """The backends holding an advisory lock on this database, by pid."""
    with admin.cursor() as cur:
        cur.execute(
            "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
        )
        return [pid for (pid,) in cur.fetchall()]


def held_again(admin: Connection, first: int) -> bool:
    now = holders(admin)
    return len(now) == 1 and now != [first]


def terminate(admin: Connection, pids: list[int]) -> None:
    with admin.cursor() as cur:
        for pid in pids:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))


def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def test_the_lock_is_taken_again_after_its_backend_is_terminated(
    database: Any, admin: Connection
) -> None:
    lock, stop = InstanceLock(database.url, NAME, every=0.05), threading.Event()
    keeper = lock.thread(stop)
    keeper.start()
    try:
        [first] = holders(admin)
        terminate(admin, [first])
        # One look per check: two could see the dying backend, then none, and pass.
        eventually(lambda: held_again(admin, first), "the lock held again on a new backend")
        with pytest.raises(AlreadyRunning):  # so a second instance is refused again
            single_instance(database.url, NAME)
        assert not stop.is_set() and lock.lost is None
    finally:
        stop.set()
        keeper.join(timeout=5)
        lock.close()
    eventually(lambda: holders(admin) == [], "the lock let go at close")


def test_the_instance_that_lost_its_lock_to_another_stops(database: Any, admin: Connection) -> None:
    # Checks 2 s apart: the other instance surely takes the free lock before the first looks.
    lock, stop = InstanceLock(database.url, NAME, every=2.0), threading.Event()
    keeper = lock.thread(stop)
    keeper.start()
    other = None
    try:
        terminate(admin, holders(admin))
        # The second instance starts while the first has not yet noticed.
        eventually(lambda: holders(admin) == [], "the lock released")
        other = single_instance(database.url, NAME)
        assert stop.wait(10), "the first instance did not stop"
        assert isinstance(lock.lost, AlreadyRunning)
        keeper.join(timeout=5)
        assert not keeper.is_alive()
    finally:
        stop.set()
        lock.close()
        if other is not None:
            other.close()


def test_close_lets_go_and_the_keeper_does_not_take_the_lock_again(
    database: Any, admin: Connection
) -> None:
    lock, stop = InstanceLock(database.url, NAME, every=0.05), threading.Event()
    keeper = lock.thread(stop)
    keeper.start()
    lock.close()
    time.sleep(0.3)  # several checks' worth: none may lock again after close
    assert holders(admin) == []
    keeper.join(timeout=5)
    assert not keeper.is_alive()
    single_instance(database.url, NAME).close()  # free for the next instance
